//! Turning next-token logits into a token, with the producer's controls applied on logits.
//!
//! Every control is an additive term on the logits, computed into a `bias` buffer of the
//! vocabulary's size: `-inf` is a **hard mask** (out of key, out of register, a token of the
//! wrong kind), finite values are soft preferences (density, cadence, motif reuse,
//! repetition). Notes are never snapped after sampling, so what the model plays is always
//! something it considered. All randomness comes from the caller's `SeedRng`.

use super::grid::{DURATIONS, TPQ};
use super::tokenizer::{DUR0, METER0, REST, dur_token, key_pitch_token};
use crate::music::{Key, SeedRng};
use serde::{Deserialize, Serialize};

/// Sampling knobs beyond the plugin's `GenSettings` (which give temperature and density).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    pub top_p: f32,
    /// Logit bonus for repeating what the melody did one bar earlier at the same position.
    pub motif: f32,
    /// Logit penalty for striking the same pitch a third time in a row.
    pub repeat_penalty: f32,
    /// When false, the key only conditions the model and is not enforced (for evaluation).
    pub scale_lock: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            top_p: 0.95,
            motif: 0.7,
            repeat_penalty: 1.0,
            scale_lock: true,
        }
    }
}

/// How a phrase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// A half cadence: the phrase ends open, on scale degree 2 or 5, asking for an answer.
    Open,
    /// A full cadence: the phrase closes on the tonic.
    Close,
}

impl Cadence {
    /// Semitones above the tonic a cadence note may land on.
    fn degrees(self) -> &'static [u8] {
        match self {
            Cadence::Open => &[2, 7],
            Cadence::Close => &[0],
        }
    }
}

/// Logit bonus of chord tones at *Chord fit* 1, on strong beats and elsewhere: strong
/// beats land on the chord; passing and neighbour tones stay between them.
const STRONG_BEAT_FIT: f32 = 6.0;
const WEAK_BEAT_FIT: f32 = 1.0;

/// The chord-tone bonus ([`PitchRules::chord_bonus`]) at `pos` ticks into a bar whose strong
/// beats are `strong` ticks apart ([`super::grid::strong_beat_ticks`]), at *Chord fit* `fit`.
pub fn chord_bonus(fit: f32, pos: u32, strong: u32) -> f32 {
    let per_fit = if pos.is_multiple_of(strong.max(1)) {
        STRONG_BEAT_FIT
    } else {
        WEAK_BEAT_FIT
    };
    per_fit * fit.clamp(0.0, 1.0)
}

/// Degrees (semitones above the tonic) a cadence may rest on under a chord without them.
const STABLE: [u8; 5] = [0, 2, 3, 4, 7];

/// Logit penalty for moving on in the direction of a leap (a fourth or more) just made.
const LEAP_PENALTY: f32 = 1.2;
/// Smallest interval (semitones) that counts as a leap.
pub const LEAP: i32 = 5;

/// What the pitch step may and should do.
pub struct PitchRules<'a> {
    pub key: &'a Key,
    pub scale_lock: bool,
    pub low: u8,
    pub high: u8,
    pub allow_rest: bool,
    /// The phrase's final note: only the cadence's degrees (when the register has one).
    pub cadence: Option<Cadence>,
    /// The last two pitches played (older first): after a leap, the melody turns back.
    pub last_two: Option<(u8, u8)>,
    /// The chord sounding under the note (bit `i` = pitch class `i`; 0 = none) and the
    /// logit bonus of its tones (*Chord fit*, larger on strong beats).
    pub chord: u16,
    pub chord_bonus: f32,
    /// Density bias: positive = busier (fewer rests).
    pub beta: f32,
    /// What was played one bar earlier at this position (`Some(None)` = a rest).
    pub motif: Option<Option<u8>>,
    pub motif_weight: f32,
    /// The same pitch was struck twice in a row just before.
    pub repeated: Option<u8>,
    pub repeat_penalty: f32,
}

impl<'a> PitchRules<'a> {
    /// Only the scale lock and the register: no cadence, chord, density, motif or
    /// repetition shaping (set those fields with struct update syntax).
    pub fn plain(key: &'a Key, scale_lock: bool, low: u8, high: u8) -> Self {
        Self {
            key,
            scale_lock,
            low: low.min(high),
            high: high.max(low),
            allow_rest: true,
            cadence: None,
            last_two: None,
            chord: 0,
            chord_bonus: 0.0,
            beta: 0.0,
            motif: None,
            motif_weight: 0.0,
            repeated: None,
            repeat_penalty: 0.0,
        }
    }
}

/// Where a cadence note may land, by rule, tried in order: 0, a chord tone on the
/// cadence's degrees; 1, a stable chord tone (a tonic ending over a G chord in A minor
/// would clash, so it rests on B or D); 2, the cadence's degrees (no chord).
fn lands(r: &PitchRules, c: Cadence, rule: usize, p: u8) -> bool {
    let degree = r.key.relative_pc(p);
    let in_chord = r.chord >> (p % 12) & 1 == 1;
    match rule {
        0 => in_chord && c.degrees().contains(&degree),
        1 => in_chord && STABLE.contains(&degree),
        _ => c.degrees().contains(&degree),
    }
}

/// Fills `bias` for a pitch step: only REST and pitches in register (and key) survive.
pub fn pitch_bias(bias: &mut [f32], r: &PitchRules) {
    bias.fill(f32::NEG_INFINITY);
    if r.allow_rest && r.cadence.is_none() {
        bias[REST as usize] = -r.beta * 1.5;
    }
    let allowed = |p: u8| !r.scale_lock || r.key.contains(p);
    // The first landing rule some pitch of the register satisfies (see `lands`).
    let cadence = r.cadence.and_then(|c| {
        let rule =
            (0..3).find(|&rule| (r.low..=r.high).any(|p| allowed(p) && lands(r, c, rule, p)))?;
        Some((c, rule))
    });
    for p in r.low..=r.high {
        let Some(tok) = key_pitch_token(p, *r.key) else {
            continue;
        };
        if !allowed(p) || cadence.is_some_and(|(c, rule)| !lands(r, c, rule, p)) {
            continue;
        }
        let mut b = 0.0;
        if let Some((a, z)) = r.last_two {
            let leap = z as i32 - a as i32;
            let next = p as i32 - z as i32;
            if leap.abs() >= LEAP && next.signum() == leap.signum() {
                b -= LEAP_PENALTY;
            }
        }
        if r.repeated == Some(p) {
            b -= r.repeat_penalty;
        }
        if r.chord >> (p % 12) & 1 == 1 {
            b += r.chord_bonus;
        }
        bias[tok as usize] = b;
    }
    if let Some(m) = r.motif {
        let tok = m.map_or(Some(REST), |p| key_pitch_token(p, *r.key));
        if let Some(t) = tok.filter(|&t| bias[t as usize].is_finite()) {
            bias[t as usize] += r.motif_weight;
        }
    }
}

/// Fills `bias` for a duration step. Durations much longer than what is left of the bar are
/// masked (the first one that reaches the bar line stays: the caller cuts it there).
/// `beta > 0` favours short notes. `motif` is the duration token played a bar earlier here.
pub fn duration_bias(
    bias: &mut [f32],
    left_in_bar: u32,
    beta: f32,
    motif: Option<u32>,
    motif_weight: f32,
) {
    bias.fill(f32::NEG_INFINITY);
    for (i, &d) in DURATIONS.iter().enumerate() {
        if i > 0 && d > left_in_bar && DURATIONS[i - 1] >= left_in_bar {
            break;
        }
        bias[dur_token(i as u8) as usize] = -beta * (d as f32 / TPQ as f32).log2();
    }
    if let Some(t) = motif.filter(|&t| (DUR0..METER0).contains(&t) && bias[t as usize].is_finite())
    {
        bias[t as usize] += motif_weight;
    }
}

/// Samples a token from `logits / temperature + bias` with nucleus (top-p) truncation.
/// Returns `None` when the bias masks everything. `scratch` avoids per-call allocation.
pub fn sample(
    logits: &[f32],
    bias: &[f32],
    temperature: f32,
    top_p: f32,
    rng: &mut SeedRng,
    scratch: &mut Vec<(f32, u32)>,
) -> Option<u32> {
    scratch.clear();
    let t = temperature.max(1e-3);
    for (i, (&l, &b)) in logits.iter().zip(bias).enumerate() {
        if b.is_finite() && l.is_finite() {
            scratch.push((l / t + b, i as u32));
        }
    }
    let max = scratch
        .iter()
        .map(|e| e.0)
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let mut total = 0.0;
    for e in scratch.iter_mut() {
        e.0 = (e.0 - max).exp();
        total += e.0;
    }
    // Highest probability first; ties by token id so the order never depends on the sort.
    scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut kept = 0.0;
    let mut n = 0;
    for e in scratch.iter() {
        kept += e.0;
        n += 1;
        if kept >= top_p.clamp(0.0, 1.0) * total {
            break;
        }
    }
    let mut x = rng.next_f32() * kept;
    for e in &scratch[..n] {
        if x < e.0 {
            return Some(e.1);
        }
        x -= e.0;
    }
    Some(scratch[n - 1].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::{VOCAB, token_key_pitch, token_ticks};
    use crate::music::{PitchClass, Scale};
    use proptest::prelude::*;

    proptest! {
        /// Whatever the model's logits, a masked pitch never comes out.
        #[test]
        fn masks_hold_for_any_logits(
            logits in proptest::collection::vec(-30f32..30.0, VOCAB),
            tonic in 0u8..12, scale in 0usize..9, low in 30u8..90, span in 12u8..30,
            temp in 0.1f32..3.0, seed in any::<u64>(), rest in any::<bool>(), cadence in 0usize..3,
        ) {
            let cadence = [None, Some(Cadence::Open), Some(Cadence::Close)][cadence];
            let key = Key::new(PitchClass::from_index(tonic), Scale::ALL[scale]);
            let high = low + span;
            let mut bias = vec![0.0; VOCAB];
            let rules = PitchRules {
                key: &key, scale_lock: true, low, high, allow_rest: rest, cadence, beta: 0.5,
                last_two: Some((low, low + 7)), chord: 0, chord_bonus: 2.0,
                motif: Some(Some(low.saturating_sub(1))), motif_weight: 5.0, repeated: None, repeat_penalty: 1.0,
            };
            pitch_bias(&mut bias, &rules);
            let mut rng = SeedRng::new(seed);
            let mut scratch = Vec::new();
            for _ in 0..20 {
                let tok = sample(&logits, &bias, temp, 0.9, &mut rng, &mut scratch).unwrap();
                match token_key_pitch(tok, key) {
                    Some(p) => {
                        prop_assert!(key.contains(p) && (low..=high).contains(&p), "pitch {}", p);
                        let lands = |c: Cadence, p: u8| c.degrees().contains(&key.relative_pc(p));
                        if let Some(c) = cadence.filter(|&c| (low..=high).any(|q| key.contains(q) && lands(c, q))) {
                            prop_assert!(lands(c, p), "cadence {:?} on {}", c, p);
                        }
                    }
                    None => prop_assert!(rest && cadence.is_none() && tok == REST, "token {}", tok),
                }
            }
            duration_bias(&mut bias, 9, 0.0, None, 0.0);
            let tok = sample(&logits, &bias, temp, 0.9, &mut rng, &mut scratch).unwrap();
            prop_assert!(token_ticks(tok).unwrap() <= 12);
        }
    }

    #[test]
    fn cadences_land_on_their_degrees_and_leaps_turn_back() {
        let key = Key::new(PitchClass::D, Scale::Minor);
        let rules = |cadence, last_two| PitchRules {
            cadence,
            last_two,
            ..PitchRules::plain(&key, true, 60, 84)
        };
        let open = |bias: &[f32]| -> Vec<u8> {
            (60..=84)
                .filter(|&p| bias[key_pitch_token(p, key).unwrap() as usize].is_finite())
                .collect()
        };
        let mut bias = vec![0.0; VOCAB];
        pitch_bias(&mut bias, &rules(Some(Cadence::Close), None));
        assert_eq!(open(&bias), vec![62, 74]);
        assert!(
            bias[REST as usize].is_infinite(),
            "a cadence is a note, not a rest"
        );
        pitch_bias(&mut bias, &rules(Some(Cadence::Open), None));
        assert_eq!(open(&bias), vec![64, 69, 76, 81]);
        // A closing cadence under a C chord (C-E-G, no D) rests on its stable tone E.
        let under_c = PitchRules {
            chord: 0b1001_0001,
            ..rules(Some(Cadence::Close), None)
        };
        pitch_bias(&mut bias, &under_c);
        assert_eq!(open(&bias), vec![64, 76]);
        // After a leap up a sixth (62 → 70), going further up costs; turning back does not.
        pitch_bias(&mut bias, &rules(None, Some((62, 70))));
        let b = |p: u8| bias[key_pitch_token(p, key).unwrap() as usize];
        assert!(b(72) < b(69));
        assert_eq!(b(69), 0.0);
    }

    #[test]
    fn same_seed_same_token_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..VOCAB).map(|i| -(i as f32)).collect();
        let bias = vec![0.0; VOCAB];
        let mut scratch = Vec::new();
        let draw = |seed, top_p, scratch: &mut Vec<_>| {
            let mut rng = SeedRng::new(seed);
            (0..50)
                .map(|_| sample(&logits, &bias, 1.0, top_p, &mut rng, scratch).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3, 0.95, &mut scratch), draw(3, 0.95, &mut scratch));
        assert!(draw(4, 0.5, &mut scratch).iter().all(|&t| t == 0));
        assert!(
            sample(
                &logits,
                &vec![f32::NEG_INFINITY; VOCAB],
                1.0,
                1.0,
                &mut SeedRng::new(1),
                &mut scratch
            )
            .is_none()
        );
    }
}
