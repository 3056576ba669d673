//! Training and evaluating the LSTM, in the spirit of nanoGPT: one readable loop.
//!
//! - Data: every MIDI file under the given folders, reduced to one melody line, tokenised.
//!   Long tunes are cut into windows that each repeat the tune's header.
//! - Validation split **by tune** with a fixed salt; the voices of one Bach chorale
//!   (`bwvNNN_soprano/alto/tenor/bass`) share a group so they fall on the same side.
//! - Each epoch every window gets a random transposition (−5..=+6 semitones, kept inside
//!   the pitch vocabulary) and its style tag is dropped 15% of the time.
//! - AdamW, linear warmup then cosine decay to a tenth of the peak rate, gradient clipping.
//! - After every epoch: validation bits/note; the best weights are kept as the model, a
//!   checkpoint allows `--resume`, and training stops early after `patience` epochs
//!   without improvement (or when the time budget runs out).

use super::lstm::{Lstm, LstmConfig};
use super::tokenizer::{
    DUR0, END, METER0, PAD, PITCH0, REST, Style, TokenSeq, encode, token_pitch,
};
use super::{METRICS_FILE, save_model};
use crate::generator::markov::fnv1a;
use crate::midi::{Melody, collect_midi_files, read_melody};
use crate::music::SeedRng;
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Percentage of tunes (by group) held out for validation.
pub const VAL_PERCENT: u64 = 5;
const SPLIT_SALT: &str = "melodist-split-v1";
const CHECKPOINT_WEIGHTS: &str = "checkpoint.safetensors";
const CHECKPOINT_STATE: &str = "checkpoint.json";

/// One melody of the corpus, with what the split and the conditioning need.
pub struct CorpusTune {
    pub path: PathBuf,
    /// Split group: the file stem, without a chorale voice suffix.
    pub group: String,
    pub style: Style,
    pub melody: Melody,
}

impl CorpusTune {
    pub fn is_validation(&self) -> bool {
        let h = fnv1a(format!("{SPLIT_SALT}/{}", self.group).as_bytes());
        h % 100 < VAL_PERCENT
    }
}

/// Reads every MIDI file under `dirs`. Returns the tunes and how many files were skipped
/// (unreadable or without notes).
pub fn load_corpus(dirs: &[PathBuf]) -> Result<(Vec<CorpusTune>, usize)> {
    let files = collect_midi_files(dirs)?;
    if files.is_empty() {
        bail!("no .mid files found under {dirs:?}");
    }
    let mut tunes = Vec::new();
    let mut skipped = 0;
    for path in files {
        match read_melody(&path) {
            Ok(melody) if !melody.notes.is_empty() => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let group = ["_soprano", "_alto", "_tenor", "_bass"]
                    .iter()
                    .find_map(|v| stem.strip_suffix(v))
                    .unwrap_or(&stem)
                    .to_string();
                let style = Style::guess(&path, &melody.title);
                tunes.push(CorpusTune {
                    path,
                    group,
                    style,
                    melody,
                });
            }
            _ => skipped += 1,
        }
    }
    Ok((tunes, skipped))
}

/// Everything `melodist train` can set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub model: LstmConfig,
    pub epochs: usize,
    pub batch_size: usize,
    /// Maximum tokens per training window (header included).
    pub window: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub clip_norm: f32,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Stop (keeping the best weights) after this many minutes.
    pub max_minutes: Option<f64>,
    pub seed: u64,
    pub resume: bool,
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            model: LstmConfig::default(),
            epochs: 8,
            batch_size: 32,
            window: 128,
            lr: 3e-3,
            weight_decay: 0.01,
            warmup_steps: 100,
            clip_norm: 1.0,
            patience: 2,
            max_minutes: None,
            seed: 1,
            resume: false,
            progress: true,
        }
    }
}

/// Validation cross-entropy per note, split like `MarkovModel::note_bits`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct BitsPerNote {
    pub notes: usize,
    pub total: f64,
    pub pitch: f64,
    pub duration: f64,
}

impl BitsPerNote {
    /// Averages `(duration bits, pitch bits)` pairs.
    pub fn from_pairs(bits: &[(f32, f32)]) -> Self {
        let n = bits.len().max(1) as f64;
        let duration = bits.iter().map(|b| b.0 as f64).sum::<f64>() / n;
        let pitch = bits.iter().map(|b| b.1 as f64).sum::<f64>() / n;
        Self {
            notes: bits.len(),
            total: duration + pitch,
            pitch,
            duration,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub val: BitsPerNote,
    pub lr: f64,
    pub minutes: f64,
}

/// What `metrics.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    pub files: usize,
    pub skipped_files: usize,
    pub train_tunes: usize,
    pub val_tunes: usize,
    pub train_tokens_per_epoch: usize,
    pub parameters: usize,
    pub steps: usize,
    pub minutes: f64,
    pub tokens_per_second: f64,
    pub best_epoch: usize,
    pub best_val: BitsPerNote,
    pub stopped: String,
    pub history: Vec<EpochLog>,
    pub options: TrainOptions,
}

/// Resume point, written after every epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    next_epoch: usize,
    step: usize,
    best_bits: f64,
    best_epoch: usize,
    bad_epochs: usize,
    minutes: f64,
    history: Vec<EpochLog>,
}

/// Trains on `tunes` (split internally) and writes the model into `out`.
pub fn train(
    tunes: &[CorpusTune],
    skipped: usize,
    out: &Path,
    opts: &TrainOptions,
) -> Result<Metrics> {
    let encode_tune = |t: &CorpusTune| encode(&t.melody, t.style);
    let train_seqs: Vec<TokenSeq> = tunes
        .iter()
        .filter(|t| !t.is_validation())
        .filter_map(encode_tune)
        .collect();
    let val_seqs: Vec<TokenSeq> = tunes
        .iter()
        .filter(|t| t.is_validation())
        .filter_map(encode_tune)
        .collect();
    if train_seqs.is_empty() || val_seqs.is_empty() {
        bail!(
            "need tunes on both sides of the split ({} train, {} validation); add more MIDI files",
            train_seqs.len(),
            val_seqs.len()
        );
    }
    let windows: Vec<TokenSeq> = train_seqs
        .iter()
        .flat_map(|s| windows(s, opts.window))
        .collect();
    let tokens_per_epoch: usize = windows.iter().map(TokenSeq::len).sum();

    let mut varmap = VarMap::new();
    let model = Lstm::new(
        opts.model.clone(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    varmap.set(model.forget_bias_init().into_iter())?;
    let mut ck = Checkpoint {
        next_epoch: 0,
        step: 0,
        best_bits: f64::INFINITY,
        best_epoch: 0,
        bad_epochs: 0,
        minutes: 0.0,
        history: vec![],
    };
    if opts.resume {
        let state = std::fs::read(out.join(CHECKPOINT_STATE))
            .context("--resume: no checkpoint.json in the output folder")?;
        ck = serde_json::from_slice(&state).context("checkpoint.json is damaged")?;
        varmap
            .load(out.join(CHECKPOINT_WEIGHTS))
            .context("--resume: cannot load checkpoint.safetensors")?;
        eprintln!(
            "resuming at epoch {} (best validation {:.3} bits/note)",
            ck.next_epoch + 1,
            ck.best_bits
        );
    }
    let params = ParamsAdamW {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    let vars = varmap.all_vars();
    let batches_per_epoch = windows.len().div_ceil(opts.batch_size);
    let total_steps = batches_per_epoch * opts.epochs;
    eprintln!(
        "{} train tunes ({} windows, {} tokens/epoch), {} validation tunes, {} parameters",
        train_seqs.len(),
        windows.len(),
        tokens_per_epoch,
        val_seqs.len(),
        model.parameter_count()
    );

    let start = Instant::now();
    let minutes = |ck: &Checkpoint| ck.minutes + start.elapsed().as_secs_f64() / 60.0;
    let mut tokens_seen = 0usize;
    let mut stopped = "all epochs done".to_string();
    while ck.next_epoch < opts.epochs {
        let epoch = ck.next_epoch;
        let batches = epoch_batches(
            &windows,
            opts.batch_size,
            SeedRng::derive(&[opts.seed, epoch as u64]),
        );
        let bar = progress_bar(opts.progress, batches.len(), epoch, opts.epochs);
        let (mut loss_sum, mut loss_n) = (0.0, 0);
        let mut out_of_time = false;
        for batch in &batches {
            let lr = lr_at(ck.step, opts.warmup_steps, total_steps, opts.lr);
            opt.set_learning_rate(lr);
            let (input, pos, target, mask) = batch_tensors(batch, true)?;
            let loss = masked_loss(&model.forward(&input, &pos, true)?, &target, &mask)?;
            let mut grads = loss.backward()?;
            clip_gradients(&mut grads, &vars, opts.clip_norm)?;
            opt.step(&grads)?;
            ck.step += 1;
            let l = loss.to_scalar::<f32>()? as f64;
            loss_sum += l;
            loss_n += 1;
            tokens_seen += batch.iter().map(|s| s.len() - 1).sum::<usize>();
            let tps = tokens_seen as f64 / start.elapsed().as_secs_f64();
            let msg = format!("loss {l:.3}  lr {lr:.1e}  {tps:.0} tok/s");
            if opts.progress && bar.is_hidden() && ck.step.is_multiple_of(20) {
                // No terminal (a log file): print a line now and then instead of a bar.
                eprintln!(
                    "epoch {} step {}/{}: {msg}",
                    epoch + 1,
                    bar.position() + 1,
                    batches.len()
                );
            }
            bar.set_message(msg);
            bar.inc(1);
            if opts.max_minutes.is_some_and(|m| minutes(&ck) >= m) {
                out_of_time = true;
                break;
            }
        }
        bar.finish();
        let val = BitsPerNote::from_pairs(&note_bits(&model, &val_seqs)?);
        let log = EpochLog {
            epoch: epoch + 1,
            train_loss: loss_sum / loss_n.max(1) as f64,
            val,
            lr: opt.learning_rate(),
            minutes: minutes(&ck),
        };
        eprintln!(
            "epoch {}: train loss {:.3}, validation {:.3} bits/note (pitch {:.3}, duration {:.3}), {:.1} min",
            log.epoch, log.train_loss, val.total, val.pitch, val.duration, log.minutes
        );
        ck.history.push(log);
        ck.next_epoch += 1;
        if val.total < ck.best_bits {
            (ck.best_bits, ck.best_epoch, ck.bad_epochs) = (val.total, epoch + 1, 0);
            save_model(out, &opts.model, &varmap)?;
        } else {
            ck.bad_epochs += 1;
        }
        varmap.save(out.join(CHECKPOINT_WEIGHTS))?;
        let mut saved = ck.clone();
        saved.minutes = minutes(&ck);
        std::fs::write(
            out.join(CHECKPOINT_STATE),
            serde_json::to_string_pretty(&saved)?,
        )?;
        if out_of_time {
            stopped = format!(
                "time budget of {:.0} min reached",
                opts.max_minutes.unwrap_or_default()
            );
            break;
        }
        if ck.bad_epochs >= opts.patience {
            stopped = format!("early stop: no improvement for {} epochs", ck.bad_epochs);
            break;
        }
    }
    let best_val = ck
        .history
        .iter()
        .find(|h| h.epoch == ck.best_epoch)
        .map(|h| h.val)
        .unwrap_or_default();
    let metrics = Metrics {
        files: tunes.len() + skipped,
        skipped_files: skipped,
        train_tunes: train_seqs.len(),
        val_tunes: val_seqs.len(),
        train_tokens_per_epoch: tokens_per_epoch,
        parameters: model.parameter_count(),
        steps: ck.step,
        minutes: minutes(&ck),
        tokens_per_second: tokens_seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
        best_epoch: ck.best_epoch,
        best_val,
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

/// Linear warmup, then cosine decay from `peak` to `peak / 10`.
fn lr_at(step: usize, warmup: usize, total: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = ((step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64).min(1.0);
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// Cuts a tune into windows of at most `max_len` tokens, each starting on a note and
/// repeating the tune's header (with the window's starting bar position).
pub fn windows(seq: &TokenSeq, max_len: usize) -> Vec<TokenSeq> {
    let body = ((max_len.max(8) - 4) / 2) * 2;
    let mut out = Vec::new();
    for start in (4..seq.len()).step_by(body) {
        let end = (start + body).min(seq.len());
        if end - start < 2 {
            continue;
        }
        let mut w = TokenSeq::default();
        for &t in &seq.tokens[..4] {
            w.push(t, seq.pos[start - 1] as u32);
        }
        w.tokens.extend_from_slice(&seq.tokens[start..end]);
        w.pos.extend_from_slice(&seq.pos[start..end]);
        out.push(w);
    }
    out
}

/// Shuffled, augmented batches of similar length (less padding).
fn epoch_batches(windows: &[TokenSeq], batch: usize, mut rng: SeedRng) -> Vec<Vec<TokenSeq>> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    shuffle(&mut order, &mut rng);
    for chunk in order.chunks_mut(batch * 16) {
        chunk.sort_by_key(|&i| windows[i].len());
    }
    let mut batches: Vec<Vec<TokenSeq>> = order
        .chunks(batch)
        .map(|idx| {
            idx.iter()
                .map(|&i| {
                    let mut w = windows[i].clone();
                    if rng.next_f32() < 0.15 {
                        w.tokens[1] = Style::Any.token();
                    }
                    let shift = (rng.next_u64() % 12) as i32 - 5;
                    w.transposed(shift).unwrap_or(w)
                })
                .collect()
        })
        .collect();
    shuffle(&mut batches, &mut rng);
    batches
}

fn shuffle<T>(v: &mut [T], rng: &mut SeedRng) {
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// Padded `[B, T]` tensors: inputs, positions, targets (next tokens), target mask.
/// With `shift` false the inputs are the whole sequences (for scoring every token).
fn batch_tensors(seqs: &[TokenSeq], shift: bool) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let k = shift as usize;
    let t = seqs.iter().map(|s| s.len() - k).max().unwrap_or(1);
    let (mut inp, mut pos, mut tgt, mut mask) = (vec![], vec![], vec![], vec![]);
    for s in seqs {
        let n = s.len() - k;
        for i in 0..t {
            let real = i < n;
            inp.push(if real { s.tokens[i] } else { PAD });
            pos.push(if real { s.pos[i] as u32 } else { 0 });
            tgt.push(if real && shift { s.tokens[i + 1] } else { PAD });
            mask.push(if real { 1f32 } else { 0.0 });
        }
    }
    let dev = &Device::Cpu;
    let shape = (seqs.len(), t);
    Ok((
        Tensor::from_vec(inp, shape, dev)?,
        Tensor::from_vec(pos, shape, dev)?,
        Tensor::from_vec(tgt, shape, dev)?,
        Tensor::from_vec(mask, shape, dev)?,
    ))
}

/// Mean next-token cross-entropy (nats) over unmasked positions. Built from differentiable
/// primitives only (`log_softmax` is max/exp/sum/log here), so every weight gets a gradient.
pub fn masked_loss(logits: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp
        .gather(&target.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?
        .neg()?;
    Ok(((nll * mask)?.sum_all()? / mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64)?)
}

fn clip_gradients(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[candle_core::Var],
    max_norm: f32,
) -> Result<()> {
    let mut sq = 0f32;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm && norm.is_finite() {
        let scale = (max_norm / norm) as f64;
        for v in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * scale)?);
            }
        }
    }
    Ok(())
}

/// `(duration bits, pitch bits)` of each note the Markov baseline also scores: every pitched
/// event except the first, probabilities renormalised over tokens of the right kind.
pub fn note_bits(model: &Lstm, seqs: &[TokenSeq]) -> Result<Vec<(f32, f32)>> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let mut out = Vec::new();
    for chunk in order.chunks(16) {
        let batch: Vec<TokenSeq> = chunk.iter().map(|&i| seqs[i].clone()).collect();
        let (input, pos, _, _) = batch_tensors(&batch, false)?;
        let logits: Vec<Vec<Vec<f32>>> = model.forward(&input, &pos, false)?.to_vec3()?;
        for (seq, logits) in batch.iter().zip(&logits) {
            out.extend(seq_note_bits(&seq.tokens, logits));
        }
    }
    Ok(out)
}

fn seq_note_bits(tokens: &[u32], logits: &[Vec<f32>]) -> Vec<(f32, f32)> {
    let is_pitch_kind = |t: u32| t == REST || t == END || (PITCH0..DUR0).contains(&t);
    let is_dur = |t: u32| (DUR0..METER0).contains(&t);
    let mut out = Vec::new();
    let mut seen_pitch = false;
    for i in (4..tokens.len().saturating_sub(1)).step_by(2) {
        if token_pitch(tokens[i]).is_none() {
            continue;
        }
        if seen_pitch {
            let pitch = class_bits(&logits[i - 1], tokens[i], is_pitch_kind);
            let dur = class_bits(&logits[i], tokens[i + 1], is_dur);
            out.push((dur, pitch));
        }
        seen_pitch = true;
    }
    out
}

/// −log2 p(target) with the softmax taken over the tokens `in_class` accepts.
fn class_bits(logits: &[f32], target: u32, in_class: impl Fn(u32) -> bool) -> f32 {
    let max = logits
        .iter()
        .enumerate()
        .filter(|(i, _)| in_class(*i as u32))
        .map(|(_, &l)| l)
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits
        .iter()
        .enumerate()
        .filter(|(i, _)| in_class(*i as u32))
        .map(|(_, &l)| (l - max).exp())
        .sum();
    ((sum.ln() - (logits[target as usize] - max)) / std::f32::consts::LN_2).max(0.0)
}

fn progress_bar(show: bool, len: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!(lr_at(0, 10, 100, 1.0) < 0.2);
        assert!((lr_at(10, 10, 100, 1.0) - 1.0).abs() < 1e-9);
        assert!((lr_at(100, 10, 100, 1.0) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn windows_keep_header_and_positions() {
        let mut seq = TokenSeq::default();
        for t in [1, 2, 3, 4] {
            seq.push(t, 6);
        }
        for i in 0..20 {
            seq.push(100 + i, i);
        }
        let w = windows(&seq, 12);
        assert_eq!(w.len(), 3);
        assert!(
            w.iter()
                .all(|w| w.tokens[..4] == [1, 2, 3, 4] && w.len() <= 12)
        );
        assert_eq!(w[1].pos[0], 7); // position after the token before the window
        assert_eq!(w[1].tokens[4], 108);
    }
}
