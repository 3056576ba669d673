//! Variable-order Markov baseline: n-grams with Witten–Bell backoff over
//! (interval, duration) events, conditioned on meter, position in bar and scale degree.
//!
//! Each note is one event: first its duration is drawn from the rhythm model (context:
//! meter, position in the bar, previous durations), then its pitch from the pitch model
//! (context: major/minor flavour, scale degree of the previous note, metric strength,
//! previous intervals). Pitches are modelled relative to the tonic, so no transposition
//! augmentation is needed and any key works.

use super::{ContextNote, Generator, Phrase, PhraseRequest};
use crate::midi::Melody;
use crate::model::grid::{DURATIONS, TPQ, bar_ticks, duration_token, events_of, histogram};
use crate::music::{BeatNote, Key, Meter, SeedRng, detect_key, fnv1a};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::Path;

/// Interval tokens -12..=12 are 0..=24; token 25 is a rest.
const N_PITCH_TOKENS: usize = 26;
const REST: u8 = 25;
const MAX_ORDER: usize = 3;
const FILE_MAGIC: &[u8; 8] = b"MLDMKV01";

/// Sparse next-token counts for one context.
#[derive(Debug, Clone, Default)]
struct Counts {
    /// (token, count), sorted by token.
    entries: Vec<(u8, u32)>,
    total: u32,
}

impl Counts {
    fn add(&mut self, token: u8) {
        match self.entries.binary_search_by_key(&token, |e| e.0) {
            Ok(i) => self.entries[i].1 += 1,
            Err(i) => self.entries.insert(i, (token, 1)),
        }
        self.total += 1;
    }
}

/// The trained model: two families of count tables keyed by packed contexts.
#[derive(Debug, Clone, Default)]
pub struct MarkovModel {
    rhythm: HashMap<u64, Counts>,
    pitch: HashMap<u64, Counts>,
    /// Melodies and notes seen in training, for the model card and CLI output.
    pub trained_melodies: u32,
    pub trained_notes: u32,
}

fn interval_token(from: u8, to: u8) -> u8 {
    ((to as i32 - from as i32).clamp(-12, 12) + 12) as u8
}

/// Metric strength of a position: 0 downbeat, 1 on a pulse, 2 on an eighth grid, 3 else.
fn strength(pos: u32, meter: Meter) -> u8 {
    let pulse = (meter.pulse() * TPQ as f64).round() as u32;
    if pos == 0 {
        0
    } else if pulse > 0 && pos.is_multiple_of(pulse) {
        1
    } else if pos.is_multiple_of(TPQ / 2) {
        2
    } else {
        3
    }
}

fn meter_code(m: Meter) -> u64 {
    ((m.numerator as u64) << 6) | m.denominator as u64
}

/// Packs a context into a u64 key: `tag` (table+order) in the top byte, then fields.
fn pack(tag: u8, fields: &[u64]) -> u64 {
    let mut k = tag as u64;
    for &f in fields {
        k = k.wrapping_mul(0x0100_0000_01B3).wrapping_add(f + 1);
    }
    k ^ ((tag as u64) << 56)
}

/// Rhythm contexts from most to least specific.
fn rhythm_keys(meter: Meter, pos: u32, prev: &[u8]) -> [u64; MAX_ORDER + 1] {
    let m = meter_code(meter);
    let p = |i: usize| prev.len().checked_sub(i + 1).map_or(99, |j| prev[j] as u64);
    [
        pack(13, &[m, pos as u64, p(0), p(1), p(2)]),
        pack(12, &[m, pos as u64, p(0), p(1)]),
        pack(11, &[m, pos as u64, p(0)]),
        pack(10, &[m, pos as u64]),
    ]
}

/// Pitch contexts from most to least specific.
fn pitch_keys(minor: bool, degree: u8, strength: u8, prev: &[u8]) -> [u64; MAX_ORDER + 1] {
    let base = [minor as u64, degree as u64, strength as u64];
    let p = |i: usize| prev.len().checked_sub(i + 1).map_or(99, |j| prev[j] as u64);
    [
        pack(23, &[base[0], base[1], base[2], p(0), p(1), p(2)]),
        pack(22, &[base[0], base[1], base[2], p(0), p(1)]),
        pack(21, &[base[0], base[1], base[2], p(0)]),
        pack(20, &base),
    ]
}

/// Witten–Bell interpolated distribution over `n` tokens, bottoming out at uniform.
fn distribution(table: &HashMap<u64, Counts>, keys: &[u64], n: usize, out: &mut [f32]) {
    out[..n].fill(1.0 / n as f32);
    for key in keys.iter().rev() {
        if let Some(c) = table.get(key) {
            let types = c.entries.len() as f32;
            let denom = c.total as f32 + types;
            let lambda = types / denom;
            for v in out[..n].iter_mut() {
                *v *= lambda;
            }
            for &(tok, cnt) in &c.entries {
                out[tok as usize] += cnt as f32 / denom;
            }
        }
    }
}

impl MarkovModel {
    /// Learns from melodies. Melodies without a key signature get a detected key.
    pub fn train(melodies: &[Melody]) -> Self {
        let mut model = Self::default();
        for m in melodies {
            model.add_melody(m);
        }
        model
    }

    fn add_melody(&mut self, m: &Melody) {
        let Some(key) = m.key.or_else(|| detect_key(&histogram(m))) else {
            return;
        };
        let events = events_of(m);
        if events.is_empty() {
            return;
        }
        self.trained_melodies += 1;
        let bar = bar_ticks(m.meter);
        let minor = key.scale.is_minor();
        let (mut durs, mut ints) = (Vec::new(), Vec::new());
        let mut prev_pitch: Option<u8> = None;
        for ev in &events {
            let pos = ev.start_tick % bar;
            for k in rhythm_keys(m.meter, pos, &durs) {
                self.rhythm.entry(k).or_default().add(ev.duration);
            }
            if let Some(prev) = prev_pitch {
                let token = ev.pitch.map_or(REST, |p| interval_token(prev, p));
                for k in pitch_keys(minor, key.relative_pc(prev), strength(pos, m.meter), &ints) {
                    self.pitch.entry(k).or_default().add(token);
                }
                ints.push(token);
            }
            if let Some(p) = ev.pitch {
                prev_pitch = Some(p);
                self.trained_notes += 1;
            }
            durs.push(ev.duration);
        }
    }

    /// −log2 probability of each note of a melody (duration part, pitch part), for
    /// bits-per-note evaluation. The first note's pitch has no context and is skipped.
    pub fn note_bits(&self, m: &Melody) -> Vec<(f32, f32)> {
        let Some(key) = m.key.or_else(|| detect_key(&histogram(m))) else {
            return vec![];
        };
        let bar = bar_ticks(m.meter);
        let (mut durs, mut ints) = (Vec::new(), Vec::new());
        let mut prev_pitch = None;
        let mut dist = [0f32; N_PITCH_TOKENS];
        let mut out = Vec::new();
        for ev in events_of(m) {
            let pos = ev.start_tick % bar;
            distribution(
                &self.rhythm,
                &rhythm_keys(m.meter, pos, &durs),
                DURATIONS.len(),
                &mut dist,
            );
            let dur_bits = -dist[ev.duration as usize].log2();
            if let Some(prev) = prev_pitch {
                let token = ev.pitch.map_or(REST, |p| interval_token(prev, p));
                let keys = pitch_keys(
                    key.scale.is_minor(),
                    key.relative_pc(prev),
                    strength(pos, m.meter),
                    &ints,
                );
                distribution(&self.pitch, &keys, N_PITCH_TOKENS, &mut dist);
                if ev.pitch.is_some() {
                    out.push((dur_bits, -dist[token as usize].log2()));
                }
                ints.push(token);
            }
            if ev.pitch.is_some() {
                prev_pitch = ev.pitch;
            }
            durs.push(ev.duration);
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::new();
        buf.extend_from_slice(FILE_MAGIC);
        buf.extend_from_slice(&self.trained_melodies.to_le_bytes());
        buf.extend_from_slice(&self.trained_notes.to_le_bytes());
        for table in [&self.rhythm, &self.pitch] {
            let mut keys: Vec<&u64> = table.keys().collect();
            keys.sort();
            buf.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for k in keys {
                let c = &table[k];
                buf.extend_from_slice(&k.to_le_bytes());
                buf.push(c.entries.len() as u8);
                for &(tok, cnt) in &c.entries {
                    buf.push(tok);
                    buf.extend_from_slice(&cnt.to_le_bytes());
                }
            }
        }
        let sum = fnv1a(&buf);
        buf.extend_from_slice(&sum.to_le_bytes());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, buf).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read Markov model {}", path.display()))?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("Markov model {} is corrupt", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < FILE_MAGIC.len() + 16 || &bytes[..8] != FILE_MAGIC {
            bail!("not a Melodist Markov model (bad header)");
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body).to_le_bytes() != sum {
            bail!("checksum mismatch (truncated or damaged file)");
        }
        let mut r = Reader {
            bytes: body,
            pos: 8,
        };
        let mut model = Self {
            trained_melodies: r.u32()?,
            trained_notes: r.u32()?,
            ..Self::default()
        };
        for (table, n_tokens) in [
            (&mut model.rhythm, DURATIONS.len()),
            (&mut model.pitch, N_PITCH_TOKENS),
        ] {
            let n = r.u32()? as usize;
            table.reserve(n);
            for _ in 0..n {
                let key = r.u64()?;
                let m = r.u8()? as usize;
                let mut c = Counts::default();
                for _ in 0..m {
                    let tok = r.u8()?;
                    let cnt = r.u32()?;
                    if tok as usize >= n_tokens {
                        bail!("token {tok} out of range");
                    }
                    c.entries.push((tok, cnt));
                    c.total += cnt;
                }
                table.insert(key, c);
            }
        }
        Ok(model)
    }

    pub fn context_count(&self) -> usize {
        self.rhythm.len() + self.pitch.len()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self
            .bytes
            .get(self.pos..self.pos + N)
            .context("unexpected end of file")?;
        self.pos += N;
        Ok(s.try_into().expect("slice length"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

/// The Markov model behind the `Generator` seam.
pub struct MarkovGenerator {
    /// Shared between [`MarkovGenerator::replica`]s (the server's decode threads).
    model: std::sync::Arc<MarkovModel>,
    dist: Vec<f32>,
}

impl MarkovGenerator {
    pub fn new(model: MarkovModel) -> Self {
        Self {
            model: std::sync::Arc::new(model),
            dist: vec![0.0; N_PITCH_TOKENS],
        }
    }

    /// Another generator on the same (shared) model, with its own scratch.
    pub fn replica(&self) -> Self {
        Self {
            model: self.model.clone(),
            dist: vec![0.0; N_PITCH_TOKENS],
        }
    }

    pub fn model(&self) -> &MarkovModel {
        &self.model
    }
}

/// Picks a starting pitch: a tonic-triad tone near the middle of the register.
fn start_pitch(key: &Key, low: u8, high: u8, rng: &mut SeedRng) -> u8 {
    let mid = (low as i32 + high as i32) / 2;
    let mut cands: Vec<(u8, f32)> = (low..=high)
        .filter(|&p| key.contains(p))
        .map(|p| {
            let tone = match key.relative_pc(p) {
                0 => 3.0,
                7 => 2.0,
                3 | 4 => 1.5,
                _ => 0.3,
            };
            (p, tone / (1.0 + ((p as i32 - mid).abs() as f32 / 4.0)))
        })
        .collect();
    if cands.is_empty() {
        cands.push((mid as u8, 1.0));
    }
    let w: Vec<f32> = cands.iter().map(|c| c.1).collect();
    cands[rng.weighted(&w).unwrap_or(0)].0
}

impl Generator for MarkovGenerator {
    fn name(&self) -> &str {
        "markov"
    }

    fn generate(&mut self, req: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase {
        let s = req.settings;
        let key = s.key;
        let (low, high) = s.register();
        let minor = key.scale.is_minor();
        let meter = req.meter;
        let bar = bar_ticks(meter);
        let temp = s.temperature();
        // Density bias in log-duration space: busy favours short notes and fewer rests.
        let beta = (s.density.clamp(0.0, 1.0) - 0.5) * 4.0;

        let (mut durs, mut ints): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        let mut prev_pitch: Option<u8> = None;
        seed_from_context(
            req.context,
            &mut durs,
            &mut ints,
            &mut prev_pitch,
            low,
            high,
        );
        let mut phrase: Phrase = vec![Vec::new(); req.bars];
        let total = bar * req.bars as u32;
        let mut t = 0u32;
        let mut rhythm = [0f32; DURATIONS.len()];
        while t < total {
            let pos = t % bar;
            distribution(
                &self.model.rhythm,
                &rhythm_keys(meter, pos, &durs),
                DURATIONS.len(),
                &mut rhythm,
            );
            for (i, w) in rhythm.iter_mut().enumerate() {
                let d = DURATIONS[i] as f32 / TPQ as f32;
                *w = (*w).powf(1.0 / temp) * (-beta * d.log2()).exp();
                if DURATIONS[i] > bar - pos && i > 0 && DURATIONS[i - 1] >= bar - pos {
                    *w = 0.0; // never much longer than what is left of the bar
                }
            }
            let d_tok = rng.weighted(&rhythm).unwrap_or(6) as u8;
            let ticks = DURATIONS[d_tok as usize].min(bar - pos);
            let phrase_end = t + ticks >= total;

            let pitch = match prev_pitch {
                None => Some(start_pitch(&key, low, high, rng)),
                Some(prev) => {
                    let keys =
                        pitch_keys(minor, key.relative_pc(prev), strength(pos, meter), &ints);
                    distribution(&self.model.pitch, &keys, N_PITCH_TOKENS, &mut self.dist);
                    for (tok, w) in self.dist.iter_mut().enumerate() {
                        *w = w.powf(1.0 / temp);
                        if tok as u8 == REST {
                            // No rest on the final slot (end on a note) nor on a downbeat at phrase start.
                            *w *= if phrase_end || t == 0 {
                                0.0
                            } else {
                                (-beta * 1.5).exp()
                            };
                            continue;
                        }
                        let p = prev as i32 + tok as i32 - 12;
                        // Hard constraints: scale and register are masks, never snapping.
                        if p < low as i32 || p > high as i32 || !key.contains(p as u8) {
                            *w = 0.0;
                        } else if phrase_end {
                            *w *= match key.relative_pc(p as u8) {
                                0 => 6.0,
                                7 => 2.0,
                                3 | 4 => 1.5,
                                _ => 0.5,
                            };
                        }
                    }
                    let tok = rng.weighted(&self.dist).map(|t| t as u8).unwrap_or(REST);
                    if tok == REST {
                        if phrase_end {
                            Some(start_pitch(&key, low, high, rng))
                        } else {
                            None
                        }
                    } else {
                        Some((prev as i32 + tok as i32 - 12) as u8)
                    }
                }
            };
            if let (Some(p), Some(prev)) = (pitch, prev_pitch) {
                ints.push(interval_token(prev, p));
            } else if prev_pitch.is_some() {
                ints.push(REST);
            }
            if let Some(p) = pitch {
                let b = (t / bar) as usize;
                phrase[b].push(BeatNote {
                    start: pos as f64 / TPQ as f64,
                    duration: ticks as f64 / TPQ as f64,
                    pitch: p,
                    velocity: s.velocity,
                });
                prev_pitch = Some(p);
            }
            durs.push(duration_token(ticks));
            t += ticks;
        }
        phrase
    }
}

/// Primes the n-gram history with the producer's last notes (Continue mode).
fn seed_from_context(
    ctx: &[ContextNote],
    durs: &mut Vec<u8>,
    ints: &mut Vec<u8>,
    prev: &mut Option<u8>,
    low: u8,
    high: u8,
) {
    for n in ctx.iter().rev().take(MAX_ORDER + 1).rev() {
        if let Some(p) = *prev {
            ints.push(interval_token(p, n.pitch));
        }
        durs.push(duration_token((n.duration * TPQ as f64).round() as u32));
        *prev = Some(n.pitch);
    }
    // Continue from the producer's last pitch, moved by octaves into the register.
    if let Some(p) = prev.as_mut() {
        while *p < low && *p <= 115 {
            *p += 12;
        }
        while *p > high && *p >= 12 {
            *p -= 12;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GenSettings, render_phrase};
    use crate::midi::MelodyNote;
    use crate::music::{PitchClass, Scale};

    /// A small corpus: scalar runs in C major, 4/4, eighths and quarters.
    pub fn toy_corpus() -> Vec<Melody> {
        (0..6)
            .map(|k| {
                let mut notes = Vec::new();
                let mut t = 0.0;
                for i in 0..32 {
                    let deg = [0, 2, 4, 5, 7, 5, 4, 2][(i + k) % 8];
                    let d = if i % 4 == 3 { 1.0 } else { 0.5 };
                    notes.push(MelodyNote {
                        start: t,
                        duration: d,
                        pitch: 60 + deg,
                        velocity: 80,
                    });
                    t += d;
                }
                Melody {
                    title: format!("t{k}"),
                    meter: Meter::new(4, 4),
                    key: Some(Key::new(PitchClass::C, Scale::Major)),
                    notes,
                }
            })
            .collect()
    }

    fn request(settings: GenSettings) -> PhraseRequest<'static> {
        PhraseRequest {
            settings,
            meter: Meter::new(4, 4),
            phrase_index: 0,
            bars: 4,
            context: &[],
            shape: Default::default(),
            chords: &[],
        }
    }

    #[test]
    fn respects_scale_register_and_bar_lines() {
        let mut g = MarkovGenerator::new(MarkovModel::train(&toy_corpus()));
        for seed in 0..20 {
            for scale in Scale::ALL {
                let s = GenSettings {
                    key: Key::new(PitchClass::Fs, scale),
                    low: 50,
                    high: 70,
                    seed,
                    ..Default::default()
                };
                let phrase = render_phrase(&mut g, &request(s));
                assert_eq!(phrase.len(), 4);
                let mut total = 0;
                for bar in &phrase {
                    for n in bar {
                        assert!(s.key.contains(n.pitch), "{scale:?} {n:?}");
                        assert!((50..=70).contains(&n.pitch));
                        assert!(n.start >= 0.0 && n.start + n.duration <= 4.0 + 1e-9);
                        total += 1;
                    }
                }
                assert!(total >= 4, "a phrase with {total} notes");
            }
        }
    }

    #[test]
    fn same_seed_same_notes_other_seed_other_notes() {
        let mut g = MarkovGenerator::new(MarkovModel::train(&toy_corpus()));
        let s = GenSettings {
            seed: 7,
            ..Default::default()
        };
        let a = render_phrase(&mut g, &request(s));
        let b = render_phrase(&mut g, &request(s));
        assert_eq!(a, b);
        let c = render_phrase(&mut g, &request(GenSettings { seed: 8, ..s }));
        assert_ne!(a, c);
    }

    #[test]
    fn density_changes_note_count() {
        let shipped = MarkovModel::from_bytes(crate::generator::loader::EMBEDDED_MARKOV).unwrap();
        let mut g = MarkovGenerator::new(shipped);
        let count = |g: &mut MarkovGenerator, density| {
            (0..20u64)
                .map(|seed| {
                    let s = GenSettings {
                        density,
                        seed,
                        ..Default::default()
                    };
                    render_phrase(g, &request(s))
                        .iter()
                        .map(Vec::len)
                        .sum::<usize>()
                })
                .sum::<usize>()
        };
        let sparse = count(&mut g, 0.0);
        let busy = count(&mut g, 1.0);
        assert!(busy > sparse + sparse / 4, "busy {busy} vs sparse {sparse}");
    }

    #[test]
    fn learns_the_corpus_better_than_uniform() {
        let corpus = toy_corpus();
        let model = MarkovModel::train(&corpus);
        let bits: Vec<(f32, f32)> = corpus.iter().flat_map(|m| model.note_bits(m)).collect();
        let pitch = bits.iter().map(|b| b.1).sum::<f32>() / bits.len() as f32;
        assert!(
            pitch < (N_PITCH_TOKENS as f32).log2() / 2.0,
            "pitch bits {pitch}"
        );
    }

    #[test]
    fn save_load_round_trip_and_corruption() {
        let model = MarkovModel::train(&toy_corpus());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        model.save(&path).unwrap();
        let loaded = MarkovModel::load(&path).unwrap();
        assert_eq!(loaded.context_count(), model.context_count());
        let s = GenSettings {
            seed: 3,
            ..Default::default()
        };
        assert_eq!(
            render_phrase(&mut MarkovGenerator::new(model), &request(s)),
            render_phrase(&mut MarkovGenerator::new(loaded), &request(s))
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        let err = MarkovModel::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        assert!(MarkovModel::from_bytes(b"hello").is_err());
        assert!(MarkovModel::load(&dir.path().join("missing.bin")).is_err());
    }
}
