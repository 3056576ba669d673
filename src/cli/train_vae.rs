//! `melodist train-vae`: train the melody VAE (variations and morphs) on folders of MIDI
//! files, with the same corpus, split and checkpoints as `melodist train`.

use super::ranged;
use super::train::RunArgs;
use crate::model::train::load_corpus;
use crate::model::train_vae::{VaeTrainOptions, train_vae};
use crate::model::vae::VaeConfig;
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// Segments per batch, 1-4096.
    #[arg(long, default_value_t = 64, value_parser = ranged(1..=4096usize))]
    pub batch_size: usize,
    /// Peak learning rate (AdamW, warmup then cosine decay), 0.000001-1.
    #[arg(long, default_value_t = 2e-3, value_parser = ranged(1e-6f64..=1.0))]
    pub lr: f64,
    /// Bars per segment, 1-4.
    #[arg(long, default_value_t = 2, value_parser = ranged(1..=4usize))]
    pub bars: usize,
    /// Latent dimensions, 2-512.
    #[arg(long, default_value_t = 48, value_parser = ranged(2..=512usize))]
    pub latent: usize,
    /// Decoder GRU width, 8-4096 (the encoder's two directions are half as wide).
    #[arg(long, default_value_t = 256, value_parser = ranged(8..=4096usize))]
    pub hidden: usize,
    /// Weight of the KL term once annealed, 0-10.
    #[arg(long, default_value_t = 0.2, value_parser = ranged(0.0f64..=10.0))]
    pub beta: f64,
    /// Steps over which the KL weight rises from 0 to --beta, 0-10000000.
    #[arg(long, default_value_t = 3000, value_parser = ranged(0..=10_000_000usize))]
    pub kl_warmup: usize,
    /// Free bits: nats per latent dimension that cost nothing, 0-10.
    #[arg(long, default_value_t = 0.1, value_parser = ranged(0.0f64..=10.0))]
    pub free_bits: f64,
    /// Share of decoder steps that do not see the previous note, 0-0.9.
    #[arg(long, default_value_t = 0.2, value_parser = ranged(0.0f32..=0.9))]
    pub input_dropout: f32,
    /// Epochs without validation improvement before stopping early, 1-10000.
    #[arg(long, default_value_t = 4, value_parser = ranged(1..=10_000usize))]
    pub patience: usize,
    /// Seed for shuffling and augmentation (any 64-bit number).
    #[arg(long, default_value_t = 1, value_parser = ranged(0..=u64::MAX))]
    pub seed: u64,
    /// Hide the progress bar (logs stay).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (tunes, skipped) = load_corpus(&args.run.midi_dirs)?;
    eprintln!("read {} melodies ({skipped} files skipped)", tunes.len());
    let opts = VaeTrainOptions {
        model: VaeConfig {
            bars: args.bars,
            latent: args.latent,
            dec_hidden: args.hidden,
            enc_hidden: (args.hidden / 2).max(4),
            ..VaeConfig::default()
        },
        epochs: args.run.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        beta: args.beta,
        kl_warmup_steps: args.kl_warmup,
        free_bits: args.free_bits,
        input_dropout: args.input_dropout,
        patience: args.patience,
        max_minutes: args.run.max_minutes,
        seed: args.seed,
        resume: args.run.resume,
        progress: !args.quiet,
        ..VaeTrainOptions::default()
    };
    let m = train_vae(&tunes, &args.run.out, &opts)?;
    let b = &m.best;
    println!(
        "{}; best epoch {}: validation recon {:.2} nats/segment, KL {:.2} nats/segment, {} active dims, note accuracy {:.1}% (teacher forced), decoded {:.1}%; {:.1} min, {:.0} segments/s -> {}",
        m.stopped,
        m.best_epoch,
        b.recon_nats,
        b.kl_nats,
        b.active_dims,
        100.0 * b.note_accuracy,
        100.0 * b.decoded_accuracy,
        m.minutes,
        m.segments_per_second,
        args.run.out.display()
    );
    Ok(())
}
