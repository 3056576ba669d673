//! The neural generator: the LSTM of `crate::model` behind the `Generator` seam.
//!
//! Decoding is incremental: the conditioning (style, meter, key) is set once and, in
//! Continue mode, the producer's phrase is read note by note; then each new note costs one
//! model step (pitch logits) plus the small duration layer. All controls are applied on
//! logits by `model::sampler`.
//!
//! The plugin and the command line decode with [`FastLstm`]: plain Rust over the same
//! weights, on the caller's thread, with no system calls, locks or allocation per note.
//! candle's step ([`Lstm::step`]) stays as the reference: [`NeuralGenerator::generate_reference`]
//! runs the same loop on it, and the tests check both give the same notes for a seed.

use super::{Generator, Phrase, PhraseRequest};
use crate::model::batcher::step_in_batch;
use crate::model::copyguard::CopyGuard;
use crate::model::grid::{TPQ, bar_ticks, strong_beat_ticks, strong_tail_start};
use crate::model::lstm::{Lstm, LstmState};
use crate::model::lstm_fast::{FastLstm, FastState, Precision, StepInput};
use crate::model::sampler::{
    PitchRules, SamplerConfig, chord_bonus, duration_bias, pitch_bias, sample,
};
use crate::model::tokenizer::{
    BOS, Onset, PAD, STRAIN_BARS, Style, cond_tokens, key_pitch_token, relative_chord, ticks_token,
    token_key_pitch, token_ticks,
};
use crate::model::{CONFIG_FILE, GUARD_FILE, WEIGHTS_FILE, decode_precision, load_model};
use crate::music::{BeatNote, Key, Meter, SeedRng};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// How many notes of context (the producer's, or the melody's own) the model reads.
const MAX_CONTEXT_NOTES: usize = 64;

/// The weights are shared (read-only) between [`NeuralGenerator::replica`]s; the state,
/// sampler and buffers are each generator's own.
pub struct NeuralGenerator {
    /// The candle network: scoring (`melodist eval`) and the reference decoder.
    model: Arc<Lstm>,
    /// The same weights laid out for decoding, and its preallocated state.
    fast: Arc<FastLstm>,
    state: FastState,
    /// A one-thread pool for the reference decoder: candle's CPU ops would otherwise hop to
    /// rayon's global pool on every token (+50–190 µs of context switches each).
    pool: Arc<rayon::ThreadPool>,
    pub sampler: SamplerConfig,
    /// Originality guard (empty when the model folder has none).
    guard: Arc<CopyGuard>,
    buffers: Buffers,
    /// Steps are batched with other requests' when run by the server's scheduler (see
    /// `model::batcher`).
    batched: bool,
}

/// Sampling buffers and phrase memory, reused from note to note and phrase to phrase.
struct Buffers {
    bias: Vec<f32>,
    scratch: Vec<(f32, u32)>,
    /// Key-relative pitches played (context included), for the repetition penalty.
    recent: Vec<u8>,
    /// (onset tick, pitch or rest, duration token) of what we played, for motif reuse.
    played: Vec<(u32, Option<u8>, u32)>,
    /// (pitch, onset tick) of the notes played, for the originality guard.
    notes: Vec<(u8, u32)>,
}

impl Buffers {
    fn new(vocab: usize) -> Self {
        Self {
            bias: vec![0.0; vocab],
            scratch: Vec::with_capacity(vocab),
            recent: Vec::with_capacity(1024),
            played: Vec::with_capacity(1024),
            notes: Vec::with_capacity(1024),
        }
    }
}

/// One step of the network, as [`decode`] needs it: the fast path or the candle reference.
trait Decoder {
    fn start(&mut self, cond: [u32; 3]) -> candle_core::Result<()>;
    /// Pitch logits of the next note (see [`Lstm::step`]).
    fn step(&mut self, prev_pitch: u32, prev_dur: u32, at: Onset) -> candle_core::Result<&[f32]>;
    /// Duration logits once its pitch is chosen (see [`Lstm::duration_logits`]).
    fn duration(&mut self, pitch: u32) -> candle_core::Result<&[f32]>;
}

struct Fast<'a>(&'a FastLstm, &'a mut FastState);

impl Decoder for Fast<'_> {
    fn start(&mut self, cond: [u32; 3]) -> candle_core::Result<()> {
        self.0.start(cond, self.1);
        Ok(())
    }
    fn step(&mut self, prev_pitch: u32, prev_dur: u32, at: Onset) -> candle_core::Result<&[f32]> {
        Ok(self.0.step(prev_pitch, prev_dur, at, self.1))
    }
    fn duration(&mut self, pitch: u32) -> candle_core::Result<&[f32]> {
        Ok(self.0.duration_logits(pitch, self.1))
    }
}

/// The fast step, batched with other requests' steps by the server's scheduler.
struct Batched<'a>(&'a FastLstm, &'a mut FastState);

impl Decoder for Batched<'_> {
    fn start(&mut self, cond: [u32; 3]) -> candle_core::Result<()> {
        self.0.start(cond, self.1);
        Ok(())
    }
    fn step(&mut self, prev_pitch: u32, prev_dur: u32, at: Onset) -> candle_core::Result<&[f32]> {
        let input = StepInput {
            prev_pitch,
            prev_dur,
            at,
        };
        if !step_in_batch(input, self.1) {
            self.0.step(prev_pitch, prev_dur, at, self.1);
        }
        Ok(self.1.pitch_logits())
    }
    fn duration(&mut self, pitch: u32) -> candle_core::Result<&[f32]> {
        Ok(self.0.duration_logits(pitch, self.1))
    }
}

/// candle's step, holding the last logits so both decoders lend a slice.
struct Reference<'a> {
    model: &'a Lstm,
    state: Option<LstmState>,
    logits: Vec<f32>,
}

impl Decoder for Reference<'_> {
    fn start(&mut self, cond: [u32; 3]) -> candle_core::Result<()> {
        self.state = Some(self.model.start(cond)?);
        Ok(())
    }
    fn step(&mut self, prev_pitch: u32, prev_dur: u32, at: Onset) -> candle_core::Result<&[f32]> {
        let state = self.state.as_mut().expect("start before step");
        self.logits = self.model.step(prev_pitch, prev_dur, at, state)?;
        Ok(&self.logits)
    }
    fn duration(&mut self, pitch: u32) -> candle_core::Result<&[f32]> {
        let state = self.state.as_ref().expect("start before duration");
        self.logits = self.model.duration_logits(pitch, state)?;
        Ok(&self.logits)
    }
}

impl NeuralGenerator {
    /// Builds the generator from the contents of `config.json` and `model.safetensors`.
    pub fn from_bytes(config_json: &[u8], safetensors: &[u8]) -> Result<Self> {
        let model = load_model(config_json, safetensors)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "melodist-neural".into())
            .build()?;
        let buffers = Buffers::new(model.config.vocab);
        let fast = FastLstm::with_precision(&model, decode_precision(config_json)?)?;
        let state = fast.state();
        Ok(Self {
            model: Arc::new(model),
            fast: Arc::new(fast),
            state,
            pool: Arc::new(pool),
            sampler: SamplerConfig::default(),
            guard: Arc::default(),
            buffers,
            batched: false,
        })
    }

    /// Adds the originality guard from the contents of `copyguard.bin`.
    pub fn with_guard(mut self, guard_bytes: &[u8]) -> Result<Self> {
        self.guard = Arc::new(CopyGuard::from_bytes(guard_bytes)?);
        Ok(self)
    }

    /// Another generator on the same weights and guard (shared, not copied), with its own
    /// state, buffers and default sampler: one per server decode thread.
    pub fn replica(&self) -> Self {
        let vocab = self.model.config.vocab;
        Self {
            model: self.model.clone(),
            fast: self.fast.clone(),
            state: self.fast.state(),
            pool: self.pool.clone(),
            sampler: SamplerConfig::default(),
            guard: self.guard.clone(),
            buffers: Buffers::new(vocab),
            batched: false,
        }
    }

    /// Lets a [`crate::model::batcher::StepScheduler`] batch this generator's steps with
    /// other decodes' (it must run the same weights: [`NeuralGenerator::shared_fast_model`]).
    pub fn with_batching(mut self) -> Self {
        self.batched = true;
        self
    }

    /// How many training windows the originality guard knows (0: no guard).
    pub fn guard_windows(&self) -> usize {
        self.guard.windows()
    }

    /// Loads a model directory (`config.json` + `model.safetensors`, and `copyguard.bin`
    /// when there is one: a model trained before the guard existed runs without it).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        let g = Self::from_bytes(&read(CONFIG_FILE)?, &read(WEIGHTS_FILE)?)
            .with_context(|| format!("neural model in {} is unusable", dir.display()))?;
        if !dir.join(GUARD_FILE).exists() {
            return Ok(g);
        }
        g.with_guard(&read(GUARD_FILE)?)
            .with_context(|| format!("originality guard in {} is unusable", dir.display()))
    }

    pub fn model(&self) -> &Lstm {
        &self.model
    }

    /// The decoder the generator runs (for benchmarks and tests).
    pub fn fast_model(&self) -> &FastLstm {
        &self.fast
    }

    /// The decoder's weights, for a batcher to run.
    pub fn shared_fast_model(&self) -> Arc<FastLstm> {
        self.fast.clone()
    }

    /// Decodes with the weight matrices in `precision` from now on (see [`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        self.fast = Arc::new(FastLstm::with_precision(&self.model, precision)?);
        Ok(self)
    }

    /// Decoding state before the first note; exposed for benchmarks and tests.
    pub fn start_state(
        &self,
        style: Style,
        meter: Meter,
        key: Key,
    ) -> candle_core::Result<LstmState> {
        self.model.start(cond_tokens(style, meter, key))
    }

    /// [`Generator::generate`] on candle's step instead of the fast path: the reference
    /// the tests and the benchmark compare against.
    pub fn generate_reference(&mut self, request: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase {
        let Self {
            model,
            pool,
            sampler,
            guard,
            buffers,
            ..
        } = self;
        let mut reference = Reference {
            model,
            state: None,
            logits: vec![],
        };
        pool.install(|| decode(&mut reference, guard, *sampler, buffers, request, rng))
            .unwrap_or_else(|err| {
                eprintln!("melodist: neural generator failed ({err}); this phrase is silent");
                vec![Vec::new(); request.bars]
            })
    }
}

/// Writes one phrase, note by note.
fn decode(
    model: &mut impl Decoder,
    guard: &CopyGuard,
    cfg: SamplerConfig,
    buf: &mut Buffers,
    req: &PhraseRequest<'_>,
    rng: &mut SeedRng,
) -> candle_core::Result<Phrase> {
    let s = req.settings;
    let (low, high) = s.register();
    let bar = bar_ticks(req.meter);
    let pulse = ((req.meter.pulse() * TPQ as f64).round() as u32).max(1);
    let temp = s.temperature();
    // Density bias, as in the Markov baseline: busy favours short notes and fewer rests.
    let beta = (s.density.clamp(0.0, 1.0) - 0.5) * 3.0;
    let total = bar * req.bars as u32;
    // Bars-to-cadence of the strain at tick `t` of the phrase (negative: the context).
    let strain = |t: i64| -> u8 {
        let bars_in = t.div_euclid(bar as i64);
        (req.shape.strain_bar as i64 - bars_in).rem_euclid(STRAIN_BARS as i64) as u8
    };
    // The chord under an onset, relative to the key, as the model reads it.
    let chord_at = |t: i64| u32::try_from(t).map_or(0, |t| req.chord_at(t));
    let onset = |t: i64| {
        Onset::at(t.rem_euclid(bar as i64) as u32)
            .with_strain_left(strain(t))
            .with_chord(relative_chord(chord_at(t), s.key))
    };
    let strong = strong_beat_ticks(req.meter);
    let fit = s.chord_fit.clamp(0.0, 1.0);
    // The cadence: the last note starts on the last strong beat of the final bar and is
    // held to the bar line.
    let cadence_at = req
        .shape
        .cadence
        .map(|c| (c, total - bar + strong_tail_start(req.meter)));

    // What comes before (the melody's previous phrase or the producer's), aligned so that
    // it ends on the bar line where we start; onsets count from the start of the context.
    let context: Vec<(u32, u32)> = req.context
        [req.context.len().saturating_sub(MAX_CONTEXT_NOTES)..]
        .iter()
        .map(|n| {
            (
                fold_into_vocab(n.pitch, s.key),
                ticks_token((n.duration * TPQ as f64).round().max(1.0) as u32),
            )
        })
        .collect();
    let context_ticks: u32 = context.iter().filter_map(|c| token_ticks(c.1)).sum();
    let lead = context_ticks.div_ceil(bar) * bar;
    model.start(cond_tokens(s.style, s.style.model_meter(req.meter), s.key))?;
    // The note read at the next step: (pitch-kind token, duration token).
    let mut prev = (BOS, PAD);
    let Buffers {
        bias,
        scratch,
        recent,
        played,
        notes,
    } = buf;
    recent.clear();
    played.clear();
    notes.clear();
    let mut t_ctx = lead - context_ticks;
    for &(p, d) in &context {
        model.step(prev.0, prev.1, onset(t_ctx as i64 - lead as i64))?;
        prev = (p, d);
        if let Some(pitch) = token_key_pitch(p, s.key) {
            recent.push(pitch);
            notes.push((pitch, t_ctx));
        }
        t_ctx += token_ticks(d).unwrap_or(TPQ);
    }

    let mut phrase: Phrase = vec![Vec::new(); req.bars];
    let mut t = 0;
    while t < total {
        let pos = t % bar;
        let motif = t
            .checked_sub(bar)
            .and_then(|prev| played.iter().find(|e| e.0 == prev));
        let n = recent.len();
        let cadence = cadence_at.filter(|&(_, at)| t >= at).map(|(c, _)| c);
        // Before the cadence, notes end by its beat so that it lands there.
        let room = match cadence_at {
            Some((_, at)) if t < at && at - t < bar - pos => at - t,
            _ => bar - pos,
        };
        let rules = PitchRules {
            key: &s.key,
            scale_lock: cfg.scale_lock,
            low,
            high,
            allow_rest: t > 0 && total - t > pulse,
            cadence,
            last_two: (n >= 2).then(|| (recent[n - 2], recent[n - 1])),
            chord: chord_at(t as i64),
            chord_bonus: chord_bonus(fit, pos, strong),
            beta,
            motif: motif.map(|e| e.1),
            motif_weight: cfg.motif,
            repeated: (n >= 2 && recent[n - 1] == recent[n - 2]).then(|| recent[n - 1]),
            repeat_penalty: cfg.repeat_penalty,
        };
        let logits = model.step(prev.0, prev.1, onset(t as i64))?;
        pitch_bias(bias, &rules);
        guard_copies(guard, notes, lead + t, s.key, bias);
        let (p_tok, pitch) = match sample(logits, bias, temp, cfg.top_p, rng, scratch) {
            Some(tok) => (tok, token_key_pitch(tok, s.key)),
            None => fallback_pitch(&rules),
        };
        let logits = model.duration(p_tok)?;
        let ticks = if cadence.is_some() {
            // The cadence note is held to the end of the phrase.
            total - t
        } else {
            duration_bias(bias, room, beta, motif.map(|e| e.2), cfg.motif);
            let d_tok =
                sample(logits, bias, temp, cfg.top_p, rng, scratch).unwrap_or(ticks_token(TPQ));
            token_ticks(d_tok).unwrap_or(TPQ).min(room)
        };
        let fed = ticks_token(ticks);
        if let Some(p) = pitch {
            let b = (t / bar) as usize;
            let q = |x: u32| x as f64 / TPQ as f64;
            phrase[b].push(BeatNote {
                start: q(pos),
                duration: q(ticks),
                pitch: p,
                velocity: s.velocity,
            });
            recent.push(p);
            notes.push((p, lead + t));
        }
        played.push((t, pitch, fed));
        prev = (p_tok, fed);
        t += ticks;
    }
    Ok(phrase)
}

/// Masks the pitches that would complete a run copied from a training tune (see
/// `model::copyguard`), unless nothing else would be left to play. `notes` are the
/// (pitch, onset) of the notes so far; the next one starts at tick `now`.
fn guard_copies(guard: &CopyGuard, notes: &[(u8, u32)], now: u32, key: Key, bias: &mut [f32]) {
    const STEPS: usize = crate::model::copyguard::COPY_NOTES - 1;
    if notes.len() < STEPS || guard.windows() == 0 {
        return;
    }
    let last = &notes[notes.len() - STEPS..];
    let mut recent = [(0u8, 0u32); STEPS];
    for (i, r) in recent.iter_mut().enumerate() {
        let next_onset = last.get(i + 1).map_or(now, |n| n.1);
        *r = (last[i].0, next_onset - last[i].1);
    }
    // Counted first, masked second: no allocation per note.
    let copies = |bias: &[f32], tok: usize| {
        bias[tok].is_finite()
            && token_key_pitch(tok as u32, key).is_some_and(|p| guard.would_copy(&recent, p))
    };
    let n_copies = (0..bias.len()).filter(|&tok| copies(bias, tok)).count();
    let allowed = bias.iter().filter(|b| b.is_finite()).count();
    if n_copies > 0 && n_copies < allowed {
        for tok in 0..bias.len() {
            if copies(bias, tok) {
                bias[tok] = f32::NEG_INFINITY;
            }
        }
    }
}

/// The token of a pitch moved by octaves into the vocabulary's range.
fn fold_into_vocab(pitch: u8, key: Key) -> u32 {
    let mut p = pitch as i32;
    loop {
        match u8::try_from(p).ok().and_then(|p| key_pitch_token(p, key)) {
            Some(tok) => return tok,
            None => p += if p < 60 { 12 } else { -12 },
        }
    }
}

/// When the masks leave nothing (a register outside the vocabulary), the in-key pitch
/// nearest the register's middle is played (keeping the constraints) and the model reads
/// it moved by octaves into its vocabulary.
fn fallback_pitch(r: &PitchRules) -> (u32, Option<u8>) {
    let mid = (r.low as i32 + r.high as i32) / 2;
    let p = (r.low..=r.high)
        .filter(|&p| !r.scale_lock || r.key.contains(p))
        .min_by_key(|&p| (p as i32 - mid).abs())
        .unwrap_or(r.low);
    (fold_into_vocab(p, *r.key), Some(p))
}

impl Generator for NeuralGenerator {
    fn name(&self) -> &str {
        "neural-lstm"
    }

    fn copies_training(&self, line: &[(u8, u32)]) -> bool {
        self.guard.copies(line)
    }

    fn generate(&mut self, request: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase {
        let Self {
            fast,
            state,
            sampler,
            guard,
            buffers,
            batched,
            ..
        } = self;
        // The fast decoders cannot fail: the error arm is the reference decoder's.
        let phrase = if *batched {
            decode(
                &mut Batched(fast, state),
                guard,
                *sampler,
                buffers,
                request,
                rng,
            )
        } else {
            decode(
                &mut Fast(fast, state),
                guard,
                *sampler,
                buffers,
                request,
                rng,
            )
        };
        phrase.unwrap_or_else(|err| {
            eprintln!("melodist: neural generator failed ({err}); this phrase is silent");
            vec![Vec::new(); request.bars]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grid::DURATIONS;

    #[test]
    fn the_guard_masks_only_the_copying_pitch_and_never_everything() {
        let c = Key::new(crate::music::PitchClass::C, crate::music::Scale::Major);
        // A training tune: 14 eighth notes (6 ticks) of a C-major scale.
        let tune: Vec<(u8, u32)> = (60u8..90)
            .filter(|&p| c.contains(p))
            .take(14)
            .map(|p| (p, 6))
            .collect();
        let guard = CopyGuard::build([tune.as_slice()]);
        // We played its first 12 notes; the 13th (tune[12]) would complete a copy.
        let notes: Vec<(u8, u32)> = tune[..12]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.0, 6 * i as u32))
            .collect();
        let now = 6 * 12;
        let tok = |p: u8| key_pitch_token(p, c).unwrap() as usize;
        let mut bias = vec![f32::NEG_INFINITY; 146];
        for p in [tune[12].0, tune[12].0 + 2, tune[12].0 - 1] {
            bias[tok(p)] = 0.0;
        }
        guard_copies(&guard, &notes, now, c, &mut bias);
        assert_eq!(bias[tok(tune[12].0)], f32::NEG_INFINITY);
        assert_eq!(bias[tok(tune[12].0 + 2)], 0.0);
        assert_eq!(bias[tok(tune[12].0 - 1)], 0.0);
        // If the copying pitch is all that is allowed, it stays (the phrase goes on).
        let mut only = vec![f32::NEG_INFINITY; 146];
        only[tok(tune[12].0)] = 0.0;
        guard_copies(&guard, &notes, now, c, &mut only);
        assert_eq!(only[tok(tune[12].0)], 0.0);
        // A different rhythm before it is not a copy.
        let mut later = vec![f32::NEG_INFINITY; 146];
        later[tok(tune[12].0)] = 0.0;
        later[tok(tune[12].0 + 2)] = 0.0;
        guard_copies(&guard, &notes, now + 6, c, &mut later);
        assert_eq!(later[tok(tune[12].0)], 0.0);
    }

    #[test]
    fn fold_and_durations() {
        let d = Key::new(crate::music::PitchClass::D, crate::music::Scale::Major);
        assert_eq!(token_key_pitch(fold_into_vocab(10, d), d), Some(34));
        assert_eq!(token_key_pitch(fold_into_vocab(62, d), d), Some(62));
        assert_eq!(token_key_pitch(fold_into_vocab(120, d), d), Some(108));
        assert_eq!(token_ticks(ticks_token(DURATIONS[3])), Some(DURATIONS[3]));
    }
}
