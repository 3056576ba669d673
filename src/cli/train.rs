//! `melodist train`: train (or fine-tune) the neural melody model on folders of MIDI files.

use crate::model::lstm::LstmConfig;
use crate::model::train::{TrainOptions, load_corpus, train};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Folders (searched recursively) or files of MIDI melodies.
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    /// Output folder: config.json, model.safetensors, metrics.json, checkpoints.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Continue from the checkpoint in `--out` (same data and options).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many minutes, keeping the best weights so far.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW, warmup then cosine decay).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// LSTM width and depth.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Dropout on embeddings, between layers and before the heads (training only).
    #[arg(long, default_value_t = 0.2)]
    pub dropout: f32,
    /// Longest training window in tokens (2 per note): most tunes fit whole at 512.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Epochs without validation improvement before stopping early.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hide the progress bar (logs stay).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (tunes, skipped) = load_corpus(&args.midi_dirs)?;
    let defaults = TrainOptions::default();
    let opts = TrainOptions {
        model: LstmConfig {
            hidden: args.hidden,
            layers: args.layers,
            dropout: args.dropout,
            ..LstmConfig::default()
        },
        window: args.window,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        patience: args.patience,
        max_minutes: args.max_minutes,
        seed: args.seed,
        resume: args.resume,
        progress: !args.quiet,
        ..defaults
    };
    eprintln!("read {} melodies ({skipped} files skipped)", tunes.len());
    let m = train(&tunes, skipped, &args.out, &opts)?;
    println!(
        "{}; best epoch {}: validation {:.3} bits/note (pitch {:.3}, duration {:.3}) over {} notes; {:.1} min, {:.0} notes/s -> {}",
        m.stopped,
        m.best_epoch,
        m.best_val.total,
        m.best_val.pitch,
        m.best_val.duration,
        m.best_val.notes,
        m.minutes,
        m.notes_per_second,
        args.out.display()
    );
    Ok(())
}
