//! Training the melody VAE (`super::vae`) on 2-bar segments, reusing the LSTM's data path
//! (`super::train`: corpus, split by tune, augmentation, AdamW, schedule, checkpoints).
//!
//! Loss per segment: reconstruction (nats, pitch + duration of every note, z sampled from
//! the posterior) + β · Σ_d max(KL_d, free bits). Two guards against a **collapsed
//! latent** (a decoder that ignores z and writes the average melody):
//! - β rises linearly from 0 over `kl_warmup_steps` (KL annealing), so the decoder learns
//!   to read z before the KL term pushes the posterior towards the prior;
//! - *free bits*: a dimension whose batch-mean KL is below `free_bits` nats pays no KL,
//!   so the optimiser has no reason to switch it off completely;
//! - the decoder's previous-note input is hidden now and then (`input_dropout`), so it
//!   must look at z rather than only at the note before.
//!
//! Every epoch reports, on held-out segments (split by tune), the KL per dimension, the
//! number of **active** dimensions (variance of μ over segments above 0.01, Burda et al.),
//! and reconstruction accuracy at the posterior mean, both teacher forced and decoded
//! freely (what `vary` with distance 0 plays).

use super::METRICS_FILE;
use super::adamw::AdamW;
use super::segment::{onsets, segment_batch, segment_ticks, segments};
use super::tokenizer::{NoteSeq, PAD, REST, TokenSeq, token_key, token_pitch, token_ticks};
use super::train::{
    CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, CorpusTune, clip_gradients,
    epoch_batches, lr_at, masked_loss, progress_bar, stop_reason,
};
use super::vae::{SegmentBatch, Vae, VaeConfig, kl_per_dim};
use super::vae_fast::FastVae;
use super::variation::{DecodeRules, decode_segment, save_vae};
use crate::music::SeedRng;
use anyhow::{Context as _, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// A segment needs this many notes to be worth learning (silence teaches nothing).
const MIN_SEGMENT_NOTES: usize = 2;
/// Variance of a dimension's posterior mean over segments above which it counts as used.
const ACTIVE_VARIANCE: f64 = 0.01;

/// Everything `melodist train-vae` can set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeTrainOptions {
    pub model: VaeConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub clip_norm: f32,
    /// Weight of the KL term once annealed.
    pub beta: f64,
    /// Steps over which β rises from 0.
    pub kl_warmup_steps: usize,
    /// Nats per latent dimension that cost nothing.
    pub free_bits: f64,
    /// Share of decoder steps whose previous note is hidden (read as `PAD`).
    pub input_dropout: f32,
    /// Held-out segments decoded freely each epoch (0 = skip that measure).
    pub decode_segments: usize,
    pub patience: usize,
    pub max_minutes: Option<f64>,
    pub seed: u64,
    pub resume: bool,
    pub progress: bool,
}

impl Default for VaeTrainOptions {
    fn default() -> Self {
        Self {
            model: VaeConfig::default(),
            epochs: 30,
            batch_size: 64,
            lr: 2e-3,
            weight_decay: 0.01,
            warmup_steps: 200,
            clip_norm: 1.0,
            beta: 0.2,
            kl_warmup_steps: 3000,
            free_bits: 0.1,
            input_dropout: 0.2,
            decode_segments: 1000,
            patience: 4,
            max_minutes: None,
            seed: 1,
            resume: false,
            progress: true,
        }
    }
}

/// Held-out measures of one model, at the posterior mean.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VaeScores {
    pub segments: usize,
    pub notes: usize,
    /// Reconstruction cost, nats per segment (pitch + duration of every note).
    pub recon_nats: f64,
    /// KL(q(z|x) ‖ p(z)), nats per segment.
    pub kl_nats: f64,
    pub kl_per_dim: Vec<f64>,
    pub active_dims: usize,
    /// Notes whose pitch and duration are both the decoder's most likely, teacher forced.
    pub note_accuracy: f64,
    /// Decoded freely (most likely notes, no masks): the share of notes and rests that
    /// start at the same tick with the same pitch, over the longer of the two segments.
    pub decoded_accuracy: f64,
    pub decoded_segments: usize,
}

impl VaeScores {
    /// What the best epoch is chosen by: the training objective at full β.
    fn objective(&self, beta: f64) -> f64 {
        self.recon_nats + beta * self.kl_nats
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeEpochLog {
    pub epoch: usize,
    /// Training objective and KL (nats per segment, at the epoch's β).
    pub train_loss: f64,
    pub train_kl: f64,
    pub beta: f64,
    pub val: VaeScores,
    pub lr: f64,
    pub minutes: f64,
}

/// What `metrics.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeMetrics {
    pub train_segments: usize,
    pub val_segments: usize,
    pub parameters: usize,
    pub steps: usize,
    pub minutes: f64,
    pub segments_per_second: f64,
    pub best_epoch: usize,
    pub best: VaeScores,
    pub stopped: String,
    pub history: Vec<VaeEpochLog>,
    pub options: VaeTrainOptions,
}

/// Resume point, written after every epoch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    next_epoch: usize,
    step: usize,
    best_objective: Option<f64>,
    best_epoch: usize,
    bad_epochs: usize,
    minutes: f64,
    history: Vec<VaeEpochLog>,
}

impl Checkpoint {
    /// Weights, optimizer moments and this state from `out` (`--resume`).
    fn resume(out: &Path, varmap: &mut VarMap, opt: &mut AdamW) -> Result<Self> {
        let state = std::fs::read(out.join(CHECKPOINT_STATE))
            .context("--resume: no checkpoint.json in the output folder")?;
        let ck: Checkpoint =
            serde_json::from_slice(&state).context("checkpoint.json is damaged")?;
        varmap
            .load(out.join(CHECKPOINT_WEIGHTS))
            .context("--resume: cannot load checkpoint.safetensors")?;
        opt.load(&out.join(CHECKPOINT_OPTIMIZER), ck.step)
            .context("--resume: cannot load checkpoint.optimizer.safetensors")?;
        eprintln!("resuming at epoch {}", ck.next_epoch + 1);
        Ok(ck)
    }

    fn save(&self, out: &Path, varmap: &VarMap, opt: &AdamW, minutes: f64) -> Result<()> {
        varmap.save(out.join(CHECKPOINT_WEIGHTS))?;
        opt.save(&out.join(CHECKPOINT_OPTIMIZER))?;
        let saved = Checkpoint {
            minutes,
            ..self.clone()
        };
        std::fs::write(
            out.join(CHECKPOINT_STATE),
            serde_json::to_string_pretty(&saved)?,
        )?;
        Ok(())
    }
}

/// The segments of the tunes on one side of the split.
pub fn corpus_segments(tunes: &[CorpusTune], bars: usize, validation: bool) -> Vec<TokenSeq> {
    tunes
        .iter()
        .filter(|t| t.is_validation() == validation)
        .filter_map(|t| {
            let seq = t.encode_without_chords()?;
            Some(segments(
                &seq,
                segment_ticks(t.melody.meter, bars),
                MIN_SEGMENT_NOTES,
            ))
        })
        .flatten()
        .collect()
}

/// Trains on `tunes` (split internally) and writes the model into `out`.
pub fn train_vae(tunes: &[CorpusTune], out: &Path, opts: &VaeTrainOptions) -> Result<VaeMetrics> {
    let train_segs = corpus_segments(tunes, opts.model.bars, false);
    let val_segs = corpus_segments(tunes, opts.model.bars, true);
    if train_segs.is_empty() || val_segs.is_empty() {
        bail!(
            "need segments on both sides of the split ({} train, {} validation); add more MIDI files",
            train_segs.len(),
            val_segs.len()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut varmap = VarMap::new();
    let vae = Vae::new(
        opts.model.clone(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let params = ParamsAdamW {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(&varmap, params)?;
    let mut ck = if opts.resume {
        Checkpoint::resume(out, &mut varmap, &mut opt)?
    } else {
        Checkpoint::default()
    };
    let vars = varmap.all_vars();
    let total_steps = train_segs.len().div_ceil(opts.batch_size) * opts.epochs;
    eprintln!(
        "{} train segments, {} validation segments ({} bars each), {} parameters",
        train_segs.len(),
        val_segs.len(),
        opts.model.bars,
        vae.parameter_count()
    );

    let start = Instant::now();
    let minutes = |ck: &Checkpoint| ck.minutes + start.elapsed().as_secs_f64() / 60.0;
    let mut segments_seen = 0usize;
    let mut stopped = "all epochs done".to_string();
    while ck.next_epoch < opts.epochs {
        let epoch = ck.next_epoch;
        let mut rng = SeedRng::derive(&[opts.seed, epoch as u64, 0xfa]);
        let batches = epoch_batches(&train_segs, opts.batch_size, rng.clone());
        let bar = progress_bar(opts.progress, batches.len(), epoch, opts.epochs);
        let (mut loss_sum, mut kl_sum, mut beta) = (0.0, 0.0, 0.0);
        let mut out_of_time = false;
        // Forward, backward, update, one batch at a time.
        for batch in &batches {
            let lr = lr_at(ck.step, opts.warmup_steps, total_steps, opts.lr);
            opt.params.lr = lr;
            beta = opts.beta * (ck.step as f64 / opts.kl_warmup_steps.max(1) as f64).min(1.0);
            let input = segment_batch(&hide_previous_notes(batch, opts.input_dropout, &mut rng))?;
            let (loss, kl) = segment_loss(&vae, &input, beta, opts.free_bits)?;
            let mut grads = loss.backward()?;
            clip_gradients(&mut grads, &vars, opts.clip_norm)?;
            opt.step(&grads)?;
            ck.step += 1;
            segments_seen += batch.len();
            loss_sum += loss.to_scalar::<f32>()? as f64;
            kl_sum += kl;
            let rate = segments_seen as f64 / start.elapsed().as_secs_f64();
            log_step(
                &bar,
                epoch,
                ck.step,
                loss_sum,
                kl,
                beta,
                lr,
                rate,
                opts.progress,
            );
            if opts.max_minutes.is_some_and(|m| minutes(&ck) >= m) {
                out_of_time = true;
                break;
            }
        }
        bar.finish();
        // Evaluate, keep the best weights, checkpoint.
        let steps_done = bar.position().max(1) as f64;
        let val = evaluate(&vae, &val_segs, opts.decode_segments)?;
        let log = VaeEpochLog {
            epoch: epoch + 1,
            train_loss: loss_sum / steps_done,
            train_kl: kl_sum / steps_done,
            beta,
            lr: opt.params.lr,
            minutes: minutes(&ck),
            val,
        };
        print_epoch(&log);
        let objective = log.val.objective(opts.beta);
        ck.history.push(log);
        ck.next_epoch += 1;
        if ck.best_objective.is_none_or(|best| objective < best) {
            (ck.best_objective, ck.best_epoch, ck.bad_epochs) = (Some(objective), epoch + 1, 0);
            save_vae(out, &opts.model, &varmap)?;
        } else {
            ck.bad_epochs += 1;
        }
        ck.save(out, &varmap, &opt, minutes(&ck))?;
        // Stop on time or patience.
        if let Some(reason) =
            stop_reason(out_of_time, opts.max_minutes, ck.bad_epochs, opts.patience)
        {
            stopped = reason;
            break;
        }
    }
    let metrics = VaeMetrics {
        train_segments: train_segs.len(),
        val_segments: val_segs.len(),
        parameters: vae.parameter_count(),
        steps: ck.step,
        minutes: minutes(&ck),
        segments_per_second: segments_seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
        best_epoch: ck.best_epoch,
        best: (ck.history.iter())
            .find(|h| h.epoch == ck.best_epoch)
            .map(|h| h.val.clone())
            .unwrap_or_default(),
        stopped,
        history: ck.history.clone(),
        options: opts.clone(),
    };
    std::fs::write(
        out.join(METRICS_FILE),
        serde_json::to_string_pretty(&metrics)?,
    )?;
    Ok(metrics)
}

/// Hides the previous note from the decoder at a share `rate` of steps (both its pitch and
/// duration read as `PAD`; the position still says where the next note starts).
fn hide_previous_notes(batch: &[NoteSeq], rate: f32, rng: &mut SeedRng) -> Vec<NoteSeq> {
    let mut out = batch.to_vec();
    for seq in &mut out {
        for i in 1..seq.len() {
            if rng.next_f32() < rate {
                (seq.prev_pitch[i], seq.prev_dur[i]) = (PAD, PAD);
            }
        }
    }
    out
}

/// The training objective per note (for a learning rate that does not depend on segment
/// length) and the batch's mean KL per segment (nats).
fn segment_loss(
    vae: &Vae,
    batch: &SegmentBatch,
    beta: f64,
    free_bits: f64,
) -> Result<(Tensor, f64)> {
    let (pitch_logits, dur_logits, mu, logvar) = vae.forward(batch)?;
    let segs = batch.pitch.dim(0)? as f64;
    let notes_per_segment = batch.mask.sum_all()?.to_scalar::<f32>()? as f64 / segs;
    let recon = (masked_loss(&pitch_logits, &batch.pitch, &batch.mask)?
        + masked_loss(&dur_logits, &batch.dur, &batch.mask)?)?;
    let kl_dims = kl_per_dim(&mu, &logvar)?.mean(0)?;
    let kl = kl_dims.sum_all()?.to_scalar::<f32>()? as f64;
    // max(KL_d, free bits) = relu(KL_d − free bits) + free bits: no gradient below.
    let kl_paid = (kl_dims - free_bits)?.relu()?.sum_all()?;
    let loss = (recon + (kl_paid * (beta / notes_per_segment))?)?;
    Ok((loss, kl))
}

#[allow(clippy::too_many_arguments)]
fn log_step(
    bar: &indicatif::ProgressBar,
    epoch: usize,
    step: usize,
    loss_sum: f64,
    kl: f64,
    beta: f64,
    lr: f64,
    rate: f64,
    progress: bool,
) {
    let mean = loss_sum / (bar.position() + 1) as f64;
    let msg = format!("loss {mean:.3}/note  KL {kl:.1}  β {beta:.3}  lr {lr:.1e}  {rate:.0} seg/s");
    if progress && bar.is_hidden() && step.is_multiple_of(50) {
        // No terminal (a log file): a line now and then instead of a bar.
        eprintln!("epoch {} step {step}: {msg}", epoch + 1);
    }
    bar.set_message(msg);
    bar.inc(1);
}

fn print_epoch(log: &VaeEpochLog) {
    let v = &log.val;
    let dims: Vec<String> = v.kl_per_dim.iter().map(|k| format!("{k:.2}")).collect();
    eprintln!(
        "epoch {}: train {:.3}/note (KL {:.1}, β {:.3}); validation: recon {:.2} nats/seg, KL {:.2} nats/seg, {} active dims, note accuracy {:.1}% (teacher forced), decoded {:.1}%, {:.1} min\n  KL per dim: {}",
        log.epoch,
        log.train_loss,
        log.train_kl,
        log.beta,
        v.recon_nats,
        v.kl_nats,
        v.active_dims,
        100.0 * v.note_accuracy,
        100.0 * v.decoded_accuracy,
        log.minutes,
        dims.join(" ")
    );
}

/// Held-out measures at the posterior mean (see [`VaeScores`]).
pub fn evaluate(vae: &Vae, segs: &[TokenSeq], decode_segments: usize) -> Result<VaeScores> {
    let latent = vae.config.latent;
    let (mut recon, mut correct, mut notes) = (0.0, 0.0, 0usize);
    let mut kl_dims = vec![0.0; latent];
    let mut mus: Vec<Vec<f32>> = Vec::with_capacity(segs.len());
    for chunk in segs.chunks(128) {
        let steps: Vec<NoteSeq> = chunk.iter().map(NoteSeq::from_tokens).collect();
        let batch = segment_batch(&steps)?;
        let (mu, logvar) = vae.encode(&batch)?;
        let (pitch_logits, dur_logits) = vae.decode(&mu, &batch)?;
        let n = batch.mask.sum_all()?.to_scalar::<f32>()? as f64;
        recon += n
            * (masked_loss(&pitch_logits, &batch.pitch, &batch.mask)?
                + masked_loss(&dur_logits, &batch.dur, &batch.mask)?)?
            .to_scalar::<f32>()? as f64;
        let hit = |logits: &Tensor, target: &Tensor| logits.argmax(D::Minus1)?.eq(target);
        let both = (hit(&pitch_logits, &batch.pitch)?.to_dtype(DType::F32)?
            * hit(&dur_logits, &batch.dur)?.to_dtype(DType::F32)?)?;
        correct += (both * &batch.mask)?.sum_all()?.to_scalar::<f32>()? as f64;
        notes += n as usize;
        let kl: Vec<f32> = kl_per_dim(&mu, &logvar)?.sum(0)?.to_vec1()?;
        kl_dims.iter_mut().zip(kl).for_each(|(a, k)| *a += k as f64);
        mus.extend(mu.to_vec2::<f32>()?);
    }
    let n = segs.len() as f64;
    kl_dims.iter_mut().for_each(|k| *k /= n);
    let active_dims = (0..latent)
        .filter(|&d| variance(mus.iter().map(|m| m[d] as f64)) > ACTIVE_VARIANCE)
        .count();
    let decoded = decode_segments.min(segs.len());
    let fast = FastVae::from_vae(vae)?;
    let decoded_accuracy = (0..decoded)
        .map(|i| decoded_match(&fast, &segs[i], &mus[i]))
        .sum::<Result<f64>>()?
        / decoded.max(1) as f64;
    Ok(VaeScores {
        segments: segs.len(),
        notes,
        recon_nats: recon / n,
        kl_nats: kl_dims.iter().sum(),
        kl_per_dim: kl_dims,
        active_dims,
        note_accuracy: correct / notes.max(1) as f64,
        decoded_accuracy,
        decoded_segments: decoded,
    })
}

fn variance(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = xs.clone().count().max(1) as f64;
    let mean = xs.clone().sum::<f64>() / n;
    xs.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n
}

/// A segment decoded from `z` with the most likely notes and no masks, against the
/// original: events (notes and rests) that start at the same tick with the same pitch,
/// over the larger count of the two.
pub fn decoded_match(vae: &FastVae, seg: &TokenSeq, z: &[f32]) -> Result<f64> {
    let key = token_key(seg.tokens[3]).context("a segment starts with its header")?;
    let cond = [seg.tokens[1], seg.tokens[2], seg.tokens[3]];
    let steps = NoteSeq::from_tokens(seg);
    let ticks = steps.dur.iter().filter_map(|&d| token_ticks(d)).sum();
    let rules = DecodeRules::exact();
    let decoded = decode_segment(vae, z, cond, key, ticks, &rules, &[], &mut SeedRng::new(0));
    let events = |s: &TokenSeq| -> Vec<(u32, u32)> {
        let steps = NoteSeq::from_tokens(s);
        let kind = |p: u32| if token_pitch(p).is_some() { p } else { REST };
        onsets(&steps)
            .into_iter()
            .zip(steps.pitch.iter().map(|&p| kind(p)))
            .collect()
    };
    let (want, got) = (events(seg), events(&decoded));
    let hits = want.iter().filter(|e| got.contains(e)).count();
    Ok(hits as f64 / want.len().max(got.len()).max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midi::{Melody, MelodyNote};
    use crate::model::tokenizer::{Style, encode};
    use crate::music::{Key, Meter, PitchClass, Scale};

    /// Segments of two short tunes: a scale up and an arpeggio down, in 2 bars of 4/4.
    fn segs() -> Vec<TokenSeq> {
        let tune = |pitches: &[u8]| {
            let notes = (pitches.iter().enumerate())
                .map(|(i, &pitch)| MelodyNote {
                    start: i as f64 * 0.5,
                    duration: 0.5,
                    pitch,
                    velocity: 80,
                })
                .collect();
            let m = Melody {
                title: "t".into(),
                meter: Meter::new(4, 4),
                key: Some(Key::new(PitchClass::C, Scale::Major)),
                notes,
            };
            let seq = encode(&m, Style::Jig).unwrap();
            segments(&seq, segment_ticks(m.meter, 2), MIN_SEGMENT_NOTES)
        };
        let mut out = tune(&[
            60, 62, 64, 65, 67, 69, 71, 72, 74, 72, 71, 69, 67, 65, 64, 62,
        ]);
        out.extend(tune(&[
            84, 79, 76, 72, 67, 64, 60, 55, 60, 64, 67, 72, 76, 79, 84, 79,
        ]));
        out
    }

    #[test]
    fn training_steps_lower_the_loss_and_evaluation_reports_every_dimension() -> Result<()> {
        let config = VaeConfig {
            embed: 16,
            enc_hidden: 16,
            dec_hidden: 24,
            latent: 4,
            dur_hidden: 8,
            ..VaeConfig::default()
        };
        let varmap = VarMap::new();
        let vae = Vae::new(
            config,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        let segs = segs();
        assert_eq!(segs.len(), 2);
        let steps: Vec<NoteSeq> = segs.iter().map(NoteSeq::from_tokens).collect();
        let batch = segment_batch(&steps)?;
        let params = ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        };
        let mut opt = AdamW::new(&varmap, params)?;
        let first = segment_loss(&vae, &batch, 0.1, 0.1)?.0.to_scalar::<f32>()?;
        for _ in 0..40 {
            let (loss, kl) = segment_loss(&vae, &batch, 0.1, 0.1)?;
            assert!(kl.is_finite() && kl >= 0.0);
            opt.step(&loss.backward()?)?;
        }
        let last = segment_loss(&vae, &batch, 0.1, 0.1)?.0.to_scalar::<f32>()?;
        assert!(last < 0.7 * first, "loss {first} -> {last}");
        let scores = evaluate(&vae, &segs, 2)?;
        assert_eq!(scores.kl_per_dim.len(), 4);
        assert_eq!((scores.segments, scores.decoded_segments), (2, 2));
        assert!((0.0..=1.0).contains(&scores.note_accuracy));
        assert!((0.0..=1.0).contains(&scores.decoded_accuracy));
        // Input dropout hides every previous note but the first (BOS).
        let hidden: Vec<NoteSeq> = hide_previous_notes(&steps, 1.0, &mut SeedRng::new(1));
        assert!(
            hidden
                .iter()
                .all(|s| s.prev_pitch[1..].iter().all(|&p| p == PAD))
        );
        assert_eq!(hidden[0].prev_pitch[0], steps[0].prev_pitch[0]);
        Ok(())
    }
}
