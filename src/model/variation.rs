//! Variations and morphs of hooks with the melody VAE (`super::vae`): the API the plugin
//! and `melodist vary` / `melodist morph` call.
//!
//! A hook becomes one latent code per 2-bar segment ([`VaeModel::encode`], the posterior
//! mean). A **variation** moves each code towards a random point of the prior along the
//! great circle between them ([`vary`]: distance 0 is the hook, 1 an unrelated melody); a
//! **morph** walks the great circle from A's code to B's ([`morph`], spherical
//! interpolation: codes drawn from a Gaussian live near a sphere, and a straight line
//! between two of them passes through the improbable region near the origin).
//! [`VaeModel::decode`] writes notes back under the producer's masks (key, register) with
//! the sampler the LSTM uses (`super::sampler`), so what it plays is always something the
//! decoder considered, never a snapped note.
//!
//! Files, as for the LSTM: `config.json` (format tag, shape, FNV-1a of the weights) and
//! `model.safetensors`; anything missing or damaged is an error that says what is wrong
//! (the plugin then falls back to the LSTM).

use super::copyguard::{CopyGuard, melody_line};
use super::grid::{TPQ, duration_token, strong_beat_ticks};
use super::sampler::{PitchRules, chord_bonus, duration_bias, pitch_bias, sample};
use super::segment::{onsets, segment_ticks, segments};
use super::tokenizer::{
    BOS, NoteSeq, PAD, REST, Style, TokenSeq, VOCAB, cond_tokens, dur_token, encode,
    key_pitch_token, token_key_pitch, token_ticks,
};
use super::vae::{Vae, VaeConfig};
use super::vae_fast::FastVae;
use super::{CONFIG_FILE, WEIGHTS_FILE, checksum};
use crate::midi::{Melody, MelodyNote};
use crate::music::{Key, Meter, SeedRng};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT: &str = "melodist-vae/1";
/// The chord bonus of a decode, on the decoder's own logits (before the temperature), as a
/// multiple of the LSTM's (`sampler::chord_bonus`). The decoder is sure of itself (it
/// reconstructs a code), so at the LSTM's weight its notes barely move: on strong beats,
/// `stats --with-chords --source vae-prior` measured 74% chord tones at 1×, 93% at 2×, 97%
/// at 3× (the LSTM: 98%; without chords 43%).
const VAE_CHORD_WEIGHT: f32 = 3.0;
/// Most notes a decoded segment may have (2 bars of 4/4 in sixteenths is 32).
const MAX_SEGMENT_NOTES: usize = 64;

/// `config.json` of a VAE: everything needed to rebuild the network around the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeFile {
    pub format: String,
    pub model: VaeConfig,
    /// FNV-1a of `model.safetensors`, hex.
    pub weights_fnv1a: String,
}

/// Writes `config.json` + `model.safetensors` into `dir`.
pub fn save_vae(dir: &Path, config: &VaeConfig, varmap: &VarMap) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let weights = dir.join(WEIGHTS_FILE);
    varmap
        .save(&weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    let file = VaeFile {
        format: FORMAT.into(),
        model: config.clone(),
        weights_fnv1a: checksum(&std::fs::read(&weights)?),
    };
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string_pretty(&file)?)?;
    Ok(())
}

/// Where a phrase lives: what the decoder is conditioned on and how long a segment is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhraseContext {
    pub meter: Meter,
    pub key: Key,
    pub style: Style,
}

/// A phrase as the VAE holds it: one latent code per segment, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub codes: Vec<Vec<f32>>,
    pub context: PhraseContext,
}

/// The producer's masks and the sampling temperature for decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeRules<'a> {
    /// Register, MIDI notes (inclusive).
    pub low: u8,
    pub high: u8,
    /// Only pitches of the context's key.
    pub scale_lock: bool,
    /// 0 = the decoder's most likely note at every step.
    pub temperature: f32,
    pub top_p: f32,
    /// The chords the notes sit on (*Chord fit*), as the LSTM's sampler does.
    pub chords: ChordFit<'a>,
}

impl DecodeRules<'_> {
    /// No masks, most likely notes: what the model itself reconstructs (measurements).
    pub fn exact() -> Self {
        Self {
            low: 0,
            high: 127,
            scale_lock: false,
            temperature: 0.0,
            top_p: 1.0,
            chords: ChordFit::default(),
        }
    }

    /// The same rules for the part of the phrase from `tick` on (a segment's).
    pub fn from_tick(&self, tick: u32) -> Self {
        Self {
            chords: ChordFit {
                ticks: self.chords.ticks.get(tick as usize..).unwrap_or(&[]),
                ..self.chords
            },
            ..*self
        }
    }
}

impl Default for DecodeRules<'_> {
    fn default() -> Self {
        Self {
            low: 48,
            high: 96,
            scale_lock: true,
            temperature: 0.3,
            top_p: 0.95,
            chords: ChordFit::default(),
        }
    }
}

/// Chords under a decoded phrase: a logit bonus for their tones, larger on strong beats
/// ([`chord_bonus`]), next to the scale mask; never a snap.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChordFit<'a> {
    /// One pitch-class mask per tick from the phrase's first bar line (0 = no chord; see
    /// `generator::PhraseRequest::chords`); empty: no chords.
    pub ticks: &'a [u16],
    /// *Chord fit*, 0..=1.
    pub fit: f32,
    /// Ticks between strong beats ([`strong_beat_ticks`]).
    pub strong: u32,
}

impl<'a> ChordFit<'a> {
    pub fn new(ticks: &'a [u16], fit: f32, meter: Meter) -> Self {
        Self {
            ticks,
            fit,
            strong: strong_beat_ticks(meter),
        }
    }

    /// The chord sounding `pos` ticks into the phrase (or segment) and its tones' bonus.
    fn at(&self, pos: u32) -> (u16, f32) {
        match self.ticks.get(pos as usize) {
            Some(&chord) if chord != 0 => (chord, chord_bonus(self.fit, pos, self.strong)),
            _ => (0, 0.0),
        }
    }
}

/// A trained VAE, ready to encode and decode phrases.
pub struct VaeModel {
    pub vae: Vae,
    /// The same weights laid out for one segment at a time (what encode and decode run).
    pub fast: FastVae,
}

impl VaeModel {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .with_context(|| format!("VAE model: cannot read {}", path.display()))
        };
        Self::load(&read(CONFIG_FILE)?, &read(WEIGHTS_FILE)?)
    }

    /// Rebuilds the network from the two files' bytes, with a clear error for anything wrong.
    pub fn load(config_json: &[u8], safetensors: &[u8]) -> Result<Self> {
        let file: VaeFile = serde_json::from_slice(config_json)
            .context("VAE config.json is not a valid VAE model config")?;
        if file.format != FORMAT {
            bail!(
                "VAE config.json has format {:?}, this Melodist reads {FORMAT:?}",
                file.format
            );
        }
        if file.model.vocab != VOCAB {
            bail!(
                "VAE was trained with a different tokenizer (vocab {}, this build {VOCAB})",
                file.model.vocab
            );
        }
        if checksum(safetensors) != file.weights_fnv1a {
            bail!(
                "VAE model.safetensors does not match config.json (damaged, truncated or from another model)"
            );
        }
        let vb = VarBuilder::from_slice_safetensors(safetensors, DType::F32, &Device::Cpu)
            .context("VAE model.safetensors is not readable")?;
        let vae = Vae::new(file.model, vb)
            .context("VAE model.safetensors does not fit the network in config.json")?;
        let fast = FastVae::from_vae(&vae)?;
        Ok(Self { vae, fast })
    }

    /// Ticks of one segment in `meter`.
    pub fn segment_ticks(&self, meter: Meter) -> u32 {
        segment_ticks(meter, self.vae.config.bars)
    }

    /// The posterior means of a phrase's segments. `notes` start at bar 1 (quarter notes
    /// from its downbeat); a last, partial segment is completed with silence.
    pub fn encode(&self, notes: &[MelodyNote], context: PhraseContext) -> Result<Encoded> {
        let melody = Melody {
            title: String::new(),
            meter: context.meter,
            key: Some(context.key),
            notes: notes.to_vec(),
        };
        let seq = encode(&melody, context.style)
            .context("the phrase has no notes, or a note outside MIDI 24..=107")?;
        let segs = segments(&seq, self.segment_ticks(context.meter), 0);
        Ok(Encoded {
            codes: self.posterior_means(&segs)?,
            context,
        })
    }

    /// μ of each segment (token sequences from [`segments`]).
    pub fn posterior_means(&self, segs: &[TokenSeq]) -> Result<Vec<Vec<f32>>> {
        let mut scratch = self.fast.scratch();
        let means = segs.iter().map(|seg| {
            let steps = NoteSeq::from_tokens(seg);
            let mut mu = vec![0.0; self.fast.config.latent];
            (self.fast).encode_mean(&steps, &onsets(&steps), &mut scratch, &mut mu);
            mu
        });
        Ok(means.collect())
    }

    /// The notes of a phrase, segment after segment (quarter notes from its downbeat).
    /// The same codes, rules and seed always give the same notes.
    pub fn decode(
        &self,
        phrase: &Encoded,
        rules: &DecodeRules,
        seed: u64,
    ) -> Result<Vec<MelodyNote>> {
        self.decode_leaning(phrase, rules, seed, &[])
    }

    /// [`VaeModel::decode`], segment `k` leaning towards `leans[k]` (none past its end).
    pub fn decode_leaning(
        &self,
        phrase: &Encoded,
        rules: &DecodeRules,
        seed: u64,
        leans: &[Lean],
    ) -> Result<Vec<MelodyNote>> {
        let ticks = self.segment_ticks(phrase.context.meter);
        let mut notes = Vec::new();
        for (k, z) in phrase.codes.iter().enumerate() {
            let rng = SeedRng::derive(&[seed, k as u64]);
            let rules = rules.from_tick(k as u32 * ticks);
            let lean = leans.get(k).map(std::slice::from_ref).unwrap_or(&[]);
            let one = self.decode_one(z, phrase.context, &rules, rng, lean);
            notes.extend(shifted(one, (k as u32 * ticks) as f64 / TPQ as f64));
        }
        Ok(notes)
    }

    /// A [`Lean`] of `weight` towards each segment of `notes` (quarter notes from the
    /// phrase's start), for [`VaeModel::decode_leaning`].
    pub fn leans(&self, notes: &[MelodyNote], ctx: PhraseContext, weight: f32) -> Vec<Lean> {
        let segment = self.segment_ticks(ctx.meter) as f64 / TPQ as f64;
        let count = notes
            .last()
            .map_or(0, |n| (n.start / segment + 1e-6) as usize + 1);
        (cut(notes, segment, count).iter())
            .map(|part| Lean::new(part, ctx.key, weight))
            .collect()
    }

    /// The notes of one segment decoded from `z` (quarter notes from its start), leaning
    /// towards `leans` (a morph's ends).
    pub fn decode_one(
        &self,
        z: &[f32],
        ctx: PhraseContext,
        rules: &DecodeRules,
        mut rng: SeedRng,
        leans: &[Lean],
    ) -> Vec<MelodyNote> {
        let ticks = self.segment_ticks(ctx.meter);
        let cond = cond_tokens(ctx.style, ctx.meter, ctx.key);
        let tokens = decode_segment(&self.fast, z, cond, ctx.key, ticks, rules, leans, &mut rng);
        let steps = NoteSeq::from_tokens(&tokens);
        let q = |t: u32| t as f64 / TPQ as f64;
        (steps.pitch.iter().zip(&steps.dur).zip(onsets(&steps)))
            .filter_map(|((&p, &d), at)| {
                Some(MelodyNote {
                    start: q(at),
                    duration: q(token_ticks(d).unwrap_or(TPQ)),
                    pitch: token_key_pitch(p, ctx.key)?,
                    velocity: 80,
                })
            })
            .collect()
    }
}

/// `notes` cut into `segments` segments of `segment` quarter notes, each from its start.
pub fn cut(notes: &[MelodyNote], segment: f64, segments: usize) -> Vec<Vec<MelodyNote>> {
    let mut cut = vec![Vec::new(); segments];
    for n in notes {
        let k = (n.start / segment + 1e-6).floor() as usize;
        if let Some(part) = cut.get_mut(k) {
            part.push(MelodyNote {
                start: n.start - k as f64 * segment,
                ..*n
            });
        }
    }
    cut
}

/// `notes` moved `beats` later (a segment's notes into its phrase).
pub fn shifted(notes: Vec<MelodyNote>, beats: f64) -> Vec<MelodyNote> {
    (notes.into_iter())
        .map(|n| MelodyNote {
            start: n.start + beats,
            ..n
        })
        .collect()
}

/// Notes a decode leans towards: at each of their onsets, `weight` is added to the
/// logit of their pitch (rests included) and of the duration that reaches their next
/// event, after the temperature (so it means the same at any temperature).
#[derive(Debug, Clone, Default)]
pub struct Lean {
    /// (onset tick, pitch token, ticks to the next event), in order.
    events: Vec<(u32, u32, u32)>,
    pub weight: f32,
}

impl Lean {
    /// A segment's notes (quarter notes from its start) in `key`, and the weight.
    pub fn new(notes: &[MelodyNote], key: Key, weight: f32) -> Self {
        let tick = |q: f64| (q * TPQ as f64).round().max(0.0) as u32;
        let mut events = Vec::new();
        let mut pos = 0;
        for (i, n) in notes.iter().enumerate() {
            let start = tick(n.start);
            if start < pos {
                continue; // overlapping notes: the first one is the line
            }
            if start > pos {
                events.push((pos, REST, start - pos));
            }
            let next = notes.get(i + 1).map_or(u32::MAX, |m| tick(m.start));
            let end = tick(n.start + n.duration).min(next).max(start + 1);
            if let Some(token) = key_pitch_token(n.pitch, key) {
                events.push((start, token, end - start));
            }
            pos = end;
        }
        Self { events, weight }
    }

    /// The same notes with another weight.
    pub fn weighted(&self, weight: f32) -> Self {
        Self {
            weight,
            ..self.clone()
        }
    }

    fn at(&self, pos: u32) -> Option<(u32, u32)> {
        (self.events.iter())
            .find(|e| e.0 == pos)
            .map(|&(_, pitch, ticks)| (pitch, ticks))
    }
}

/// Decodings [`VaeModel::decode_original`] tries before it keeps the last one.
pub(super) const ORIGINAL_TRIES: u64 = 4;

impl VaeModel {
    /// [`VaeModel::decode_leaning`], drawn again with the next seeds (up to
    /// [`ORIGINAL_TRIES`] decodings) while the notes repeat
    /// [`COPY_NOTES`](super::copyguard::COPY_NOTES) notes of a training tune verbatim, as
    /// the LSTM's originality guard forbids.
    pub fn decode_original(
        &self,
        phrase: &Encoded,
        rules: &DecodeRules,
        seed: u64,
        leans: &[Lean],
        guard: &CopyGuard,
    ) -> Result<Vec<MelodyNote>> {
        let mut notes = self.decode_leaning(phrase, rules, seed, leans)?;
        for retry in 1..ORIGINAL_TRIES {
            if !guard.copies(&melody_line(&notes)) {
                break;
            }
            notes = self.decode_leaning(phrase, rules, seed.wrapping_add(retry), leans)?;
        }
        Ok(notes)
    }
}

/// One segment of `ticks` ticks decoded from `z` with header tokens `cond` (style, meter,
/// key) under `rules`, leaning towards `leans`: the header, then pitch/duration pairs that
/// fill it exactly.
#[allow(clippy::too_many_arguments)] // the decoder's inputs, each used once
pub fn decode_segment(
    vae: &FastVae,
    z: &[f32],
    cond: [u32; 3],
    key: Key,
    ticks: u32,
    rules: &DecodeRules,
    leans: &[Lean],
    rng: &mut SeedRng,
) -> TokenSeq {
    let mut out = TokenSeq::default();
    for tok in [BOS, cond[0], cond[1], cond[2]] {
        out.push(tok, Default::default());
    }
    let mut pitch_rules = PitchRules::plain(&key, rules.scale_lock, rules.low, rules.high);
    let mut state = vae.scratch();
    vae.start(z, cond, &mut state);
    let (mut bias, mut scratch) = (vec![0.0; VOCAB], Vec::new());
    let (mut prev, mut pos) = ((BOS, PAD), 0);
    while pos < ticks && out.len() < 4 + 2 * MAX_SEGMENT_NOTES {
        let logits = vae.step(prev.0, prev.1, pos as usize, &mut state);
        let (chord, bonus) = rules.chords.at(pos);
        let bonus = VAE_CHORD_WEIGHT * bonus / rules.temperature.max(1e-3);
        (pitch_rules.chord, pitch_rules.chord_bonus) = (chord, bonus);
        pitch_bias(&mut bias, &pitch_rules);
        for (lean, (pitch, _)) in leans.iter().filter_map(|l| Some((l, l.at(pos)?))) {
            bias[pitch as usize] += lean.weight;
        }
        let pitch = sample(
            logits,
            &bias,
            rules.temperature,
            rules.top_p,
            rng,
            &mut scratch,
        )
        .unwrap_or(REST);
        let logits = vae.duration_logits(pitch, &mut state);
        duration_bias(&mut bias, ticks - pos, 0.0, None, 0.0);
        for (lean, (_, dur)) in leans.iter().filter_map(|l| Some((l, l.at(pos)?))) {
            bias[dur_token(duration_token(dur)) as usize] += lean.weight;
        }
        let dur = sample(
            logits,
            &bias,
            rules.temperature,
            rules.top_p,
            rng,
            &mut scratch,
        )
        .expect("the shortest duration is never masked");
        // The one duration allowed to reach past the segment's end is cut there.
        let dur = ticks_token_within(dur, ticks - pos);
        out.push(pitch, Default::default());
        out.push(dur, Default::default());
        pos += token_ticks(dur).unwrap_or(ticks);
        prev = (pitch, dur);
    }
    out
}

/// `dur` if it fits in `left` ticks, else the longest duration token that does.
fn ticks_token_within(dur: u32, left: u32) -> u32 {
    use super::grid::DURATIONS;
    use super::tokenizer::dur_token;
    if token_ticks(dur).is_some_and(|t| t <= left) {
        return dur;
    }
    dur_token(DURATIONS.iter().rposition(|&d| d <= left).unwrap_or(0) as u8)
}

/// Spherical interpolation from `a` (t = 0) to `b` (t = 1); linear when they are parallel.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let cos = (dot / (norm(a) * norm(b)).max(1e-12)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let (wa, wb) = if omega.sin().abs() < 1e-4 {
        (1.0 - t, t)
    } else {
        let s = omega.sin();
        (((1.0 - t) * omega).sin() / s, (t * omega).sin() / s)
    };
    a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect()
}

/// A point of the prior N(0, I), from `rng` (Box–Muller, so seeded and versionless).
pub fn prior_sample(dims: usize, rng: &mut SeedRng) -> Vec<f32> {
    (0..dims)
        .map(|_| {
            let u = rng.next_f32().max(1e-7);
            let v = rng.next_f32();
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

/// A variation of `hook` at `distance` (0 = the hook, 1 = a fresh melody from the prior):
/// each segment's code moves that far along the great circle towards a random prior point.
pub fn vary(hook: &Encoded, distance: f32, seed: u64) -> Encoded {
    let codes = (hook.codes.iter().enumerate())
        .map(|(k, z)| {
            let target = prior_sample(z.len(), &mut SeedRng::derive(&[seed, k as u64, 0x7a]));
            slerp(z, &target, distance.clamp(0.0, 1.0))
        })
        .collect();
    Encoded {
        codes,
        context: hook.context,
    }
}

/// The phrase `t` of the way from `a` (t = 0) to `b` (t = 1), in `a`'s context (meter, key,
/// style). Segment `k` of one is paired with segment `k` of the other; the shorter phrase
/// is repeated to the longer one's length.
pub fn morph(a: &Encoded, b: &Encoded, t: f32) -> Encoded {
    if a.codes.is_empty() || b.codes.is_empty() {
        return a.clone();
    }
    let n = a.codes.len().max(b.codes.len());
    let codes = (0..n)
        .map(|k| {
            let za = &a.codes[k % a.codes.len()];
            let zb = &b.codes[k % b.codes.len()];
            slerp(za, zb, t.clamp(0.0, 1.0))
        })
        .collect();
    Encoded {
        codes,
        context: a.context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grid::bar_ticks;
    use crate::music::{PitchClass, Scale};

    /// A tiny untrained VAE, saved and loaded back as the plugin would load a shipped one.
    fn tiny(dir: &Path) -> Result<VaeModel> {
        let config = VaeConfig {
            embed: 8,
            enc_hidden: 6,
            dec_hidden: 12,
            latent: 6,
            dur_hidden: 5,
            ..VaeConfig::default()
        };
        let varmap = VarMap::new();
        Vae::new(
            config.clone(),
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        save_vae(dir, &config, &varmap)?;
        VaeModel::load_dir(dir)
    }

    fn context() -> PhraseContext {
        PhraseContext {
            meter: Meter::new(4, 4),
            key: Key::new(PitchClass::D, Scale::Minor),
            style: Style::Reel,
        }
    }

    /// Four bars of eighths and quarters, D minor, some out of the register used below.
    fn hook() -> Vec<MelodyNote> {
        let pitches = [
            62, 65, 69, 74, 72, 70, 69, 67, 65, 64, 62, 57, 50, 53, 57, 62,
        ];
        let mut t = 0.0;
        pitches
            .iter()
            .enumerate()
            .map(|(i, &pitch)| {
                let duration = if i % 3 == 2 { 1.0 } else { 0.5 };
                let n = MelodyNote {
                    start: t,
                    duration,
                    pitch,
                    velocity: 90,
                };
                t += duration;
                n
            })
            .collect()
    }

    #[test]
    fn same_code_and_seed_decode_the_same_notes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let model = tiny(dir.path())?;
        let phrase = model.encode(&hook(), context())?;
        assert_eq!(phrase.codes.len(), 2, "a 4-bar hook is two 2-bar segments");
        let rules = DecodeRules {
            temperature: 1.0,
            ..DecodeRules::default()
        };
        let a = model.decode(&phrase, &rules, 7)?;
        assert_eq!(a, model.decode(&phrase, &rules, 7)?);
        assert!(!a.is_empty());
        // The segments tile the phrase: nothing starts past its 16 beats.
        assert!(a.iter().all(|n| n.start < 16.0));
        Ok(())
    }

    #[test]
    fn slerp_ends_are_the_two_codes_and_morph_ends_decode_as_a_and_b() -> Result<()> {
        let (a, b) = ([0.3, -1.2, 2.0, 0.0], [-0.5, 0.4, 1.0, 2.5]);
        assert_eq!(slerp(&a, &b, 0.0), a);
        assert_eq!(slerp(&a, &b, 1.0), b);
        let mid = slerp(&a, &b, 0.5);
        assert!(mid.iter().zip(&a).any(|(x, y)| x != y));

        let dir = tempfile::tempdir()?;
        let model = tiny(dir.path())?;
        let hook_a = model.encode(&hook(), context())?;
        let reversed: Vec<MelodyNote> = (hook().iter().rev().enumerate())
            .map(|(i, n)| MelodyNote {
                start: i as f64,
                ..*n
            })
            .collect();
        let hook_b = model.encode(&reversed, context())?;
        assert_ne!(hook_a.codes, hook_b.codes);
        assert_eq!(morph(&hook_a, &hook_b, 0.0).codes, hook_a.codes);
        assert_eq!(morph(&hook_a, &hook_b, 1.0).codes, hook_b.codes);
        let rules = DecodeRules::default();
        let decode = |p: &Encoded| model.decode(p, &rules, 3);
        assert_eq!(decode(&morph(&hook_a, &hook_b, 0.0))?, decode(&hook_a)?);
        assert_eq!(decode(&morph(&hook_a, &hook_b, 1.0))?, decode(&hook_b)?);
        // Distance 0 is the hook itself; a larger one moves away.
        assert_eq!(vary(&hook_a, 0.0, 5).codes, hook_a.codes);
        assert_ne!(vary(&hook_a, 0.5, 5).codes, hook_a.codes);
        Ok(())
    }

    #[test]
    fn chord_fit_puts_strong_beats_on_the_chord() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let model = tiny(dir.path())?;
        let ctx = context();
        let code = model.encode(&hook(), ctx)?;
        // F major (F A C) for two bars, then G minor (G B♭ D): one mask per tick.
        let bar = bar_ticks(ctx.meter) as usize;
        let (f, g) = (1 << 5 | 1 << 9 | 1, 1 << 7 | 1 << 10 | 1 << 2);
        let chords: Vec<u16> = (0..4 * bar)
            .map(|t| if t < 2 * bar { f } else { g })
            .collect();
        let strong = strong_beat_ticks(ctx.meter) as f64 / TPQ as f64;
        // Notes on strong beats that are tones of the chord under them, as a share.
        let on_chord = |fit: f32| -> Result<f64> {
            let rules = DecodeRules {
                temperature: 1.0,
                chords: ChordFit::new(&chords, fit, ctx.meter),
                ..DecodeRules::default()
            };
            let (mut hits, mut total) = (0, 0);
            for seed in 0..16 {
                for n in model.decode(&vary(&code, 0.3, seed), &rules, seed)? {
                    let tick = (n.start * TPQ as f64).round() as usize;
                    if (n.start / strong).fract().abs() < 1e-9 {
                        total += 1;
                        hits += usize::from(chords[tick] >> (n.pitch % 12) & 1 == 1);
                    }
                }
            }
            Ok(hits as f64 / total.max(1) as f64)
        };
        let (with, without) = (on_chord(1.0)?, on_chord(0.0)?);
        assert!(with > 0.9 && with > without + 0.2, "{with} vs {without}");
        Ok(())
    }

    #[test]
    fn vary_and_morph_stay_in_the_scale_and_register() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let model = tiny(dir.path())?;
        let ctx = context();
        let hook_a = model.encode(&hook(), ctx)?;
        // An untrained decoder at full temperature proposes anything: the masks must hold.
        let rules = DecodeRules {
            low: 60,
            high: 72,
            scale_lock: true,
            temperature: 1.0,
            top_p: 1.0,
            chords: ChordFit::default(),
        };
        let far = vary(&hook_a, 1.0, 9);
        let mut notes = Vec::new();
        for seed in 0..8 {
            notes.extend(model.decode(&vary(&hook_a, 0.4, seed), &rules, seed)?);
            notes.extend(model.decode(&morph(&hook_a, &far, seed as f32 / 7.0), &rules, seed)?);
        }
        assert!(notes.len() > 20, "{} notes", notes.len());
        for n in &notes {
            assert!((60..=72).contains(&n.pitch), "{n:?} out of register");
            assert!(ctx.key.contains(n.pitch), "{n:?} out of D minor");
        }
        Ok(())
    }

    #[test]
    fn missing_or_damaged_weights_are_clear_errors() -> Result<()> {
        let dir = tempfile::tempdir()?;
        tiny(dir.path())?;
        let message = |r: Result<VaeModel>| format!("{:#}", r.err().expect("an error"));
        let config = std::fs::read(dir.path().join(CONFIG_FILE))?;
        let mut weights = std::fs::read(dir.path().join(WEIGHTS_FILE))?;
        let last = weights.len() - 1;
        weights[last] ^= 0x55;
        assert!(message(VaeModel::load(&config, &weights)).contains("does not match config.json"));
        weights.truncate(100);
        assert!(message(VaeModel::load(&config, &weights)).contains("does not match"));
        assert!(message(VaeModel::load(b"{}", &weights)).contains("not a valid VAE model config"));
        let lstm_like = String::from_utf8(config)?.replace(FORMAT, "melodist-neural-lstm/3");
        let wrong_format = VaeModel::load(lstm_like.as_bytes(), &weights);
        assert!(message(wrong_format).contains("format"));
        std::fs::remove_file(dir.path().join(WEIGHTS_FILE))?;
        let missing = message(VaeModel::load_dir(dir.path()));
        assert!(
            missing.contains("cannot read") && missing.contains(WEIGHTS_FILE),
            "{missing}"
        );
        Ok(())
    }
}
