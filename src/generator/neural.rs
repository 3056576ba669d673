//! The neural generator: the LSTM of `crate::model` behind the `Generator` seam.
//!
//! Decoding is incremental: the header (style, meter, key) and, in Continue mode, the
//! producer's phrase are read once, then each note costs two model steps (pitch, duration).
//! All controls are applied on logits by `model::sampler`.

use super::markov::{TPQ, bar_ticks};
use super::{Generator, Mode, Phrase, PhraseRequest};
use crate::model::lstm::{Lstm, LstmState};
use crate::model::sampler::{PitchRules, SamplerConfig, duration_bias, pitch_bias, sample};
use crate::model::tokenizer::{
    Style, header, key_pitch_token, ticks_token, token_key_pitch, token_ticks,
};
use crate::model::{CONFIG_FILE, WEIGHTS_FILE, load_model};
use crate::music::{BeatNote, Key, SeedRng};
use anyhow::{Context, Result};
use std::path::Path;

/// How many of the producer's most recent notes Continue mode reads.
const MAX_CONTEXT_NOTES: usize = 64;

pub struct NeuralGenerator {
    model: Lstm,
    /// A one-thread pool: candle's CPU ops would otherwise hop to rayon's global pool on
    /// every token (+50–190 µs of context switches each).
    pool: rayon::ThreadPool,
    /// Style tag the model is conditioned on (`Any` by default).
    pub style: Style,
    pub sampler: SamplerConfig,
    buffers: Buffers,
}

/// Sampling buffers reused from token to token.
struct Buffers {
    bias: Vec<f32>,
    scratch: Vec<(f32, u32)>,
}

impl NeuralGenerator {
    /// Builds the generator from the contents of `config.json` and `model.safetensors`.
    pub fn from_bytes(config_json: &[u8], safetensors: &[u8]) -> Result<Self> {
        let model = load_model(config_json, safetensors)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "melodist-neural".into())
            .build()?;
        let vocab = model.config.vocab;
        let buffers = Buffers {
            bias: vec![0.0; vocab],
            scratch: Vec::with_capacity(vocab),
        };
        Ok(Self {
            model,
            pool,
            style: Style::Any,
            sampler: SamplerConfig::default(),
            buffers,
        })
    }

    /// Loads a model directory (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        Self::from_bytes(&read(CONFIG_FILE)?, &read(WEIGHTS_FILE)?)
            .with_context(|| format!("neural model in {} is unusable", dir.display()))
    }

    pub fn model(&self) -> &Lstm {
        &self.model
    }

    /// Decoding state after reading only the header; exposed for benchmarks and tests.
    pub fn zero_state(&self) -> candle_core::Result<LstmState> {
        self.model.zero_state()
    }
}

/// Writes one phrase, token by token.
fn decode(
    model: &Lstm,
    style: Style,
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

    // The producer's phrase, aligned so that it ends on the bar line where we start.
    let context: Vec<(u32, u32)> = match req.settings.mode {
        Mode::Continue => req.context[req.context.len().saturating_sub(MAX_CONTEXT_NOTES)..]
            .iter()
            .map(|n| {
                (
                    fold_into_vocab(n.pitch, s.key),
                    ticks_token((n.duration * TPQ as f64).round().max(1.0) as u32),
                )
            })
            .collect(),
        Mode::Generate => vec![],
    };
    let context_ticks: u32 = context.iter().filter_map(|c| token_ticks(c.1)).sum();
    let mut t_ctx = (bar - context_ticks % bar) % bar;
    let mut state = model.zero_state()?;
    let mut logits = Vec::new();
    let head = header(style, req.meter, s.key, t_ctx);
    for (&tok, &pos) in head.tokens.iter().zip(&head.pos) {
        logits = model.step(tok, pos, &mut state)?;
    }
    let mut recent: Vec<u8> = Vec::new();
    for &(p, d) in &context {
        model.step(p, (t_ctx % bar) as u16, &mut state)?;
        t_ctx += token_ticks(d).unwrap_or(TPQ);
        logits = model.step(d, (t_ctx % bar) as u16, &mut state)?;
        recent.extend(token_key_pitch(p, s.key));
    }

    let total = bar * req.bars as u32;
    let mut phrase: Phrase = vec![Vec::new(); req.bars];
    // (onset tick, pitch or rest, duration token) of what we played, for motif reuse.
    let mut played: Vec<(u32, Option<u8>, u32)> = Vec::new();
    let mut t = 0;
    while t < total {
        let pos = t % bar;
        let motif = t
            .checked_sub(bar)
            .and_then(|prev| played.iter().find(|e| e.0 == prev));
        let n = recent.len();
        let rules = PitchRules {
            key: &s.key,
            scale_lock: cfg.scale_lock,
            low,
            high,
            allow_rest: t > 0 && total - t > pulse,
            cadence: total - t <= pulse,
            beta,
            motif: motif.map(|e| e.1),
            motif_weight: cfg.motif,
            repeated: (n >= 2 && recent[n - 1] == recent[n - 2]).then(|| recent[n - 1]),
            repeat_penalty: cfg.repeat_penalty,
        };
        pitch_bias(&mut buf.bias, &rules);
        let (p_tok, pitch) =
            match sample(&logits, &buf.bias, temp, cfg.top_p, rng, &mut buf.scratch) {
                Some(tok) => (tok, token_key_pitch(tok, s.key)),
                None => fallback_pitch(&rules),
            };
        logits = model.step(p_tok, pos as u16, &mut state)?;

        duration_bias(
            &mut buf.bias,
            bar - pos,
            beta,
            motif.map(|e| e.2),
            cfg.motif,
        );
        let d_tok = sample(&logits, &buf.bias, temp, cfg.top_p, rng, &mut buf.scratch)
            .unwrap_or(ticks_token(TPQ));
        let ticks = token_ticks(d_tok).unwrap_or(TPQ).min(bar - pos);
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
        }
        played.push((t, pitch, fed));
        t += ticks;
        if t < total {
            logits = model.step(fed, (t % bar) as u16, &mut state)?;
        }
    }
    Ok(phrase)
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

    fn generate(&mut self, request: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase {
        let Self {
            model,
            pool,
            style,
            sampler,
            buffers,
        } = self;
        pool.install(|| decode(model, *style, *sampler, buffers, request, rng))
            .unwrap_or_else(|err| {
                eprintln!("melodist: neural generator failed ({err}); this phrase is silent");
                vec![Vec::new(); request.bars]
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::markov::DURATIONS;

    #[test]
    fn fold_and_durations() {
        let d = Key::new(crate::music::PitchClass::D, crate::music::Scale::Major);
        assert_eq!(token_key_pitch(fold_into_vocab(10, d), d), Some(34));
        assert_eq!(token_key_pitch(fold_into_vocab(62, d), d), Some(62));
        assert_eq!(token_key_pitch(fold_into_vocab(120, d), d), Some(108));
        assert_eq!(token_ticks(ticks_token(DURATIONS[3])), Some(DURATIONS[3]));
    }
}
