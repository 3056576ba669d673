//! `melodist train`: train (or fine-tune) the neural melody model on folders of MIDI files.

use super::ranged;
use crate::model::lstm::LstmConfig;
use crate::model::train::{TrainOptions, load_corpus, train};
use anyhow::Result;
use std::path::PathBuf;

/// What every training command takes: the data, where to write, and how long to run.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Folders (searched recursively) or files of MIDI melodies.
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    /// Output folder: config.json, model.safetensors, metrics.json, checkpoints.
    #[arg(long)]
    pub out: PathBuf,
    /// Training epochs, 1-10000.
    #[arg(long, default_value_t = 30, value_parser = ranged(1..=10_000usize))]
    pub epochs: usize,
    /// Continue from the checkpoint in `--out` (same data and options).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many minutes (0-10080, a week), keeping the best weights so far.
    #[arg(long, value_parser = ranged(0.0f64..=10_080.0))]
    pub max_minutes: Option<f64>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Windows per batch, 1-1024.
    #[arg(long, default_value_t = 16, value_parser = ranged(1..=1024usize))]
    pub batch_size: usize,
    /// Peak learning rate (AdamW, warmup then cosine decay), 0.000001-1.
    #[arg(long, default_value_t = 3e-3, value_parser = ranged(1e-6f64..=1.0))]
    pub lr: f64,
    /// LSTM width (8-4096) and depth (1-8).
    #[arg(long, default_value_t = 256, value_parser = ranged(8..=4096usize))]
    pub hidden: usize,
    #[arg(long, default_value_t = 2, value_parser = ranged(1..=8usize))]
    pub layers: usize,
    /// Dropout on embeddings, between layers and before the heads (training only), 0-0.9.
    #[arg(long, default_value_t = 0.2, value_parser = ranged(0.0f32..=0.9))]
    pub dropout: f32,
    /// Longest training window in tokens (2 per note), 8-65536: most tunes fit whole at 512.
    #[arg(long, default_value_t = 512, value_parser = ranged(8..=65_536usize))]
    pub window: usize,
    /// Epochs without validation improvement before stopping early, 1-10000.
    #[arg(long, default_value_t = 3, value_parser = ranged(1..=10_000usize))]
    pub patience: usize,
    /// Seed for initialisation, shuffling and augmentation (any 64-bit number).
    #[arg(long, default_value_t = 1, value_parser = ranged(0..=u64::MAX))]
    pub seed: u64,
    /// Hide the progress bar (logs stay).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (tunes, skipped) = load_corpus(&args.run.midi_dirs)?;
    let defaults = TrainOptions::default();
    let opts = TrainOptions {
        model: LstmConfig {
            hidden: args.hidden,
            layers: args.layers,
            dropout: args.dropout,
            ..LstmConfig::default()
        },
        window: args.window,
        epochs: args.run.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        patience: args.patience,
        max_minutes: args.run.max_minutes,
        seed: args.seed,
        resume: args.run.resume,
        progress: !args.quiet,
        ..defaults
    };
    eprintln!("read {} melodies ({skipped} files skipped)", tunes.len());
    let m = train(&tunes, skipped, &args.run.out, &opts)?;
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
        args.run.out.display()
    );
    Ok(())
}
