//! Training and evaluating the LSTM, in the spirit of nanoGPT: one readable loop.
//!
//! - Data: every MIDI file under the given folders, reduced to one melody line, tokenised.
//!   Long tunes are cut into windows that each repeat the tune's header; the model reads
//!   each window one note per step (`NoteSeq`).
//! - Validation split **by tune** with a fixed salt; the voices of one Bach chorale
//!   (`bwvNNN_soprano/alto/tenor/bass`) share a group so they fall on the same side.
//! - Each epoch every window gets a random transposition (−5..=+6 semitones, kept inside
//!   the pitch vocabulary); its style tag is dropped 15% of the time and its chords (the
//!   other voices of a chorale) 25% of the time.
//! - AdamW, linear warmup then cosine decay to a tenth of the peak rate, gradient clipping.
//! - Before training: the originality guard (`copyguard.bin`) from every tune read.
//! - After every epoch: validation bits/note; the best weights are kept as the model, a
//!   checkpoint (weights and optimizer moments) allows `--resume`, and training stops
//!   early after `patience` epochs without improvement (or when the time budget runs out).

use super::adamw::AdamW;
use super::copyguard::{CopyGuard, melody_line};
use super::grid::TPQ;
use super::lstm::{Lstm, LstmConfig, NoteBatch, chord_row};
use super::lstm_fast::FastLstm;
use super::tokenizer::{
    CHORD_INPUTS, DUR0, END, METER0, NoteSeq, PAD, PITCH0, REST, Style, TokenSeq, encode,
    encode_with_chords, token_pitch,
};
use super::{GUARD_FILE, METRICS_FILE, save_model};
use crate::midi::{Melody, MelodyNote, collect_midi_files, read_melody};
use crate::music::{SeedRng, fnv1a};
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Share of training windows whose chords are hidden (read as "no chord").
const CHORD_DROPOUT: f32 = 0.25;
/// Percentage of tunes (by group) held out for validation.
pub const VAL_PERCENT: u64 = 5;
const SPLIT_SALT: &str = "melodist-split-v1";
pub(crate) const CHECKPOINT_WEIGHTS: &str = "checkpoint.safetensors";
pub(crate) const CHECKPOINT_STATE: &str = "checkpoint.json";
/// AdamW moments, so a resumed run continues exactly as an uninterrupted one would.
pub(crate) const CHECKPOINT_OPTIMIZER: &str = "checkpoint.optimizer.safetensors";

/// One melody of the corpus, with what the split and the conditioning need.
pub struct CorpusTune {
    pub path: PathBuf,
    /// Split group: the file stem, without a chorale voice suffix.
    pub group: String,
    pub style: Style,
    pub melody: Melody,
    /// The other voices of the same piece (the Bach chorales' alto, tenor and bass under a
    /// soprano, and so on): the chord under every note. Empty for single-line tunes.
    pub harmony: Vec<MelodyNote>,
}

impl CorpusTune {
    /// The tune as the model reads it, with the chord of the other voices under each note.
    pub fn encode(&self) -> Option<TokenSeq> {
        encode_with_chords(&self.melody, self.style, |tick| {
            let q = tick as f64 / TPQ as f64;
            let sounding = |n: &&MelodyNote| n.start <= q + 1e-6 && q + 1e-6 < n.start + n.duration;
            self.harmony
                .iter()
                .filter(sounding)
                .fold(0u16, |mask, n| mask | 1 << (n.pitch % 12))
        })
    }

    /// The same without its chords (what a producer without a chord track gives the model).
    pub fn encode_without_chords(&self) -> Option<TokenSeq> {
        encode(&self.melody, self.style)
    }

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
                    harmony: vec![],
                });
            }
            _ => skipped += 1,
        }
    }
    add_harmony(&mut tunes);
    Ok((tunes, skipped))
}

/// Gives every voice of a multi-voice piece (files `NAME_soprano.mid`, `NAME_alto.mid`, …
/// in one folder) the notes of its other voices.
fn add_harmony(tunes: &mut [CorpusTune]) {
    let mut by_piece: std::collections::HashMap<(PathBuf, String), Vec<usize>> = Default::default();
    for (i, t) in tunes.iter().enumerate() {
        let folder = t.path.parent().map(Path::to_path_buf).unwrap_or_default();
        by_piece
            .entry((folder, t.group.clone()))
            .or_default()
            .push(i);
    }
    for voices in by_piece.values().filter(|v| v.len() > 1) {
        for &i in voices {
            let others: Vec<MelodyNote> = voices
                .iter()
                .filter(|&&j| j != i)
                .flat_map(|&j| tunes[j].melody.notes.clone())
                .collect();
            tunes[i].harmony = others;
        }
    }
}

/// Writes the originality guard for a model trained on `tunes` into `out` (see
/// `model::copyguard`); returns how many windows it indexes.
pub fn write_guard(out: &Path, tunes: &[CorpusTune]) -> Result<usize> {
    let lines: Vec<Vec<(u8, u32)>> = tunes.iter().map(|t| melody_line(&t.melody.notes)).collect();
    let guard = CopyGuard::build(lines.iter().map(Vec::as_slice));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join(GUARD_FILE);
    std::fs::write(&path, guard.to_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(guard.windows())
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
            epochs: 30,
            batch_size: 16,
            window: 512,
            lr: 3e-3,
            weight_decay: 0.01,
            warmup_steps: 200,
            clip_norm: 1.0,
            patience: 3,
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
    pub train_notes_per_epoch: usize,
    pub parameters: usize,
    pub steps: usize,
    pub minutes: f64,
    pub notes_per_second: f64,
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
    let encode_tune = CorpusTune::encode;
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
    let notes_per_epoch: usize = windows.iter().map(|w| (w.len() - 3) / 2).sum();
    // Every tune read (validation ones too): the model must not copy any of them.
    write_guard(out, tunes)?;

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
    let mut opt = AdamW::new(&varmap, params)?;
    if opts.resume {
        opt.load(&out.join(CHECKPOINT_OPTIMIZER), ck.step)
            .context("--resume: cannot load checkpoint.optimizer.safetensors")?;
    }
    let vars = varmap.all_vars();
    let batches_per_epoch = windows.len().div_ceil(opts.batch_size);
    let total_steps = batches_per_epoch * opts.epochs;
    eprintln!(
        "{} train tunes ({} windows, {} notes/epoch), {} validation tunes, {} parameters",
        train_seqs.len(),
        windows.len(),
        notes_per_epoch,
        val_seqs.len(),
        model.parameter_count()
    );

    let start = Instant::now();
    let minutes = |ck: &Checkpoint| ck.minutes + start.elapsed().as_secs_f64() / 60.0;
    let mut notes_seen = 0usize;
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
            opt.params.lr = lr;
            let (input, target) = note_batch(batch)?;
            let loss = note_loss(&model.forward(&input, true)?, &target)?;
            let mut grads = loss.backward()?;
            clip_gradients(&mut grads, &vars, opts.clip_norm)?;
            opt.step(&grads)?;
            ck.step += 1;
            let l = loss.to_scalar::<f32>()? as f64;
            loss_sum += l;
            loss_n += 1;
            notes_seen += batch.iter().map(NoteSeq::len).sum::<usize>();
            let nps = notes_seen as f64 / start.elapsed().as_secs_f64();
            let msg = format!("loss {l:.3}  lr {lr:.1e}  {nps:.0} notes/s");
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
            lr: opt.params.lr,
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
        opt.save(&out.join(CHECKPOINT_OPTIMIZER))?;
        let mut saved = ck.clone();
        saved.minutes = minutes(&ck);
        std::fs::write(
            out.join(CHECKPOINT_STATE),
            serde_json::to_string_pretty(&saved)?,
        )?;
        if let Some(reason) =
            stop_reason(out_of_time, opts.max_minutes, ck.bad_epochs, opts.patience)
        {
            stopped = reason;
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
        train_notes_per_epoch: notes_per_epoch,
        parameters: model.parameter_count(),
        steps: ck.step,
        minutes: minutes(&ck),
        notes_per_second: notes_seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
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

/// Why a training run stops after this epoch, if it does: out of time, or `patience`
/// epochs without a better validation score.
pub(crate) fn stop_reason(
    out_of_time: bool,
    max_minutes: Option<f64>,
    bad_epochs: usize,
    patience: usize,
) -> Option<String> {
    if out_of_time {
        let budget = max_minutes.unwrap_or_default();
        return Some(format!("time budget of {budget:.0} min reached"));
    }
    (bad_epochs >= patience).then(|| format!("early stop: no improvement for {bad_epochs} epochs"))
}

/// Linear warmup, then cosine decay from `peak` to `peak / 10`.
pub(crate) fn lr_at(step: usize, warmup: usize, total: usize, peak: f64) -> f64 {
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
            w.push(t, seq.at[start - 1]);
        }
        w.tokens.extend_from_slice(&seq.tokens[start..end]);
        w.at.extend_from_slice(&seq.at[start..end]);
        out.push(w);
    }
    out
}

/// Shuffled, augmented batches of similar length (less padding).
pub(crate) fn epoch_batches(
    windows: &[TokenSeq],
    batch: usize,
    mut rng: SeedRng,
) -> Vec<Vec<NoteSeq>> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    shuffle(&mut order, &mut rng);
    for chunk in order.chunks_mut(batch * 16) {
        chunk.sort_by_key(|&i| windows[i].len());
    }
    let mut batches: Vec<Vec<NoteSeq>> = order
        .chunks(batch)
        .map(|idx| {
            idx.iter()
                .map(|&i| {
                    let mut w = windows[i].clone();
                    if rng.next_f32() < 0.15 {
                        w.tokens[1] = Style::Any.token();
                    }
                    // Chords are dropped now and then too, so a chorale line also
                    // trains the model a producer without a chord track gets.
                    if rng.next_f32() < CHORD_DROPOUT {
                        w.at.iter_mut().for_each(|a| a.chord = 0);
                    }
                    let shift = (rng.next_u64() % 12) as i32 - 5;
                    NoteSeq::from_tokens(&w.transposed(shift).unwrap_or(w))
                })
                .collect()
        })
        .collect();
    shuffle(&mut batches, &mut rng);
    batches
}

pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut SeedRng) {
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// What the model should predict at each step of a [`NoteBatch`], with masks
/// (0 on padding; the duration mask is also 0 on `END` steps, which have no duration).
struct Targets {
    pitch: Tensor,
    dur: Tensor,
    pitch_mask: Tensor,
    dur_mask: Tensor,
}

/// Pads note sequences into `[B, T]` tensors.
fn note_batch(seqs: &[NoteSeq]) -> Result<(NoteBatch, Targets)> {
    let t = seqs.iter().map(NoteSeq::len).max().unwrap_or(1).max(1);
    let n = seqs.len() * t;
    let (mut pp, mut pd, mut pos, mut pitch, mut dur) = (
        vec![PAD; n],
        vec![PAD; n],
        vec![0u32; n],
        vec![PAD; n],
        vec![PAD; n],
    );
    let mut cadence = vec![0u32; n];
    let mut chord = vec![0f32; n * CHORD_INPUTS];
    let (mut pmask, mut dmask) = (vec![0f32; n], vec![0f32; n]);
    let mut cond = Vec::with_capacity(seqs.len() * 3);
    for (row, s) in seqs.iter().enumerate() {
        cond.extend_from_slice(&s.cond);
        let o = row * t;
        pp[o..o + s.len()].copy_from_slice(&s.prev_pitch);
        pd[o..o + s.len()].copy_from_slice(&s.prev_dur);
        for (i, at) in s.at.iter().enumerate() {
            pos[o + i] = at.pos as u32;
            cadence[o + i] = at.cadence as u32;
            chord[(o + i) * CHORD_INPUTS..(o + i + 1) * CHORD_INPUTS]
                .copy_from_slice(&chord_row(at.chord));
        }
        pitch[o..o + s.len()].copy_from_slice(&s.pitch);
        dur[o..o + s.len()].copy_from_slice(&s.dur);
        for i in 0..s.len() {
            pmask[o + i] = 1.0;
            dmask[o + i] = (s.dur[i] != PAD) as u8 as f32;
        }
    }
    let shape = (seqs.len(), t);
    let dev = &Device::Cpu;
    let u = |v: Vec<u32>| Tensor::from_vec(v, shape, dev);
    let f = |v: Vec<f32>| Tensor::from_vec(v, shape, dev);
    let pitch = u(pitch)?;
    Ok((
        NoteBatch {
            cond: Tensor::from_vec(cond, (seqs.len(), 3), dev)?,
            prev_pitch: u(pp)?,
            prev_dur: u(pd)?,
            pos: u(pos)?,
            cadence: u(cadence)?,
            chord: Tensor::from_vec(chord, (seqs.len(), t, CHORD_INPUTS), dev)?,
            pitch: pitch.clone(),
        },
        Targets {
            pitch,
            dur: u(dur)?,
            pitch_mask: f(pmask)?,
            dur_mask: f(dmask)?,
        },
    ))
}

/// Training loss: nats per note, pitch part + duration part.
fn note_loss((pitch_logits, dur_logits): &(Tensor, Tensor), t: &Targets) -> Result<Tensor> {
    Ok((masked_loss(pitch_logits, &t.pitch, &t.pitch_mask)?
        + masked_loss(dur_logits, &t.dur, &t.dur_mask)?)?)
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

pub(crate) fn clip_gradients(
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
        let batch: Vec<NoteSeq> = chunk
            .iter()
            .map(|&i| NoteSeq::from_tokens(&seqs[i]))
            .collect();
        let (input, _) = note_batch(&batch)?;
        let (pitch_logits, dur_logits) = model.forward(&input, false)?;
        let pitch_logits: Vec<Vec<Vec<f32>>> = pitch_logits.to_vec3()?;
        let dur_logits: Vec<Vec<Vec<f32>>> = dur_logits.to_vec3()?;
        for (i, seq) in batch.iter().enumerate() {
            out.extend(seq_note_bits(seq, &pitch_logits[i], &dur_logits[i]));
        }
    }
    Ok(out)
}

/// [`note_bits`] through the decoder the plugin runs ([`FastLstm`], in its precision), one
/// note at a time as it decodes: what rounding the weights costs, in bits per note.
pub fn fast_note_bits(model: &FastLstm, seqs: &[TokenSeq]) -> Vec<(f32, f32)> {
    let mut state = model.state();
    let mut out = Vec::new();
    for seq in seqs {
        let seq = NoteSeq::from_tokens(seq);
        model.start(seq.cond, &mut state);
        let (mut pitch_logits, mut dur_logits) = (Vec::new(), Vec::new());
        for i in 0..seq.len() {
            let step = model.step(seq.prev_pitch[i], seq.prev_dur[i], seq.at[i], &mut state);
            pitch_logits.push(step.to_vec());
            dur_logits.push(model.duration_logits(seq.pitch[i], &mut state).to_vec());
        }
        out.extend(seq_note_bits(&seq, &pitch_logits, &dur_logits));
    }
    out
}

fn seq_note_bits(
    seq: &NoteSeq,
    pitch_logits: &[Vec<f32>],
    dur_logits: &[Vec<f32>],
) -> Vec<(f32, f32)> {
    let is_pitch_kind = |t: u32| t == REST || t == END || (PITCH0..DUR0).contains(&t);
    let is_dur = |t: u32| (DUR0..METER0).contains(&t);
    let mut out = Vec::new();
    let mut seen_pitch = false;
    for i in 0..seq.len() {
        if token_pitch(seq.pitch[i]).is_none() || seq.dur[i] == PAD {
            continue;
        }
        if seen_pitch {
            let pitch = class_bits(&pitch_logits[i], seq.pitch[i], is_pitch_kind);
            let dur = class_bits(&dur_logits[i], seq.dur[i], is_dur);
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

pub(crate) fn progress_bar(
    show: bool,
    len: usize,
    epoch: usize,
    epochs: usize,
) -> indicatif::ProgressBar {
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
    use crate::model::tokenizer::Onset;

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
            seq.push(t, Onset::at(6));
        }
        for i in 0..20 {
            seq.push(100 + i, Onset::at(i));
        }
        let w = windows(&seq, 12);
        assert_eq!(w.len(), 3);
        assert!(
            w.iter()
                .all(|w| w.tokens[..4] == [1, 2, 3, 4] && w.len() <= 12)
        );
        assert_eq!(w[1].at[0].pos, 7); // position after the token before the window
        assert_eq!(w[1].tokens[4], 108);
    }
}
