//! `melodist eval`: cross-entropy in bits per note of a model over folders of MIDI files,
//! so the neural model and the Markov baseline are compared on exactly the same notes.

use crate::generator::loader::{self, LoadedModel, ModelChoice};
use crate::generator::markov::MarkovModel;
use crate::model::lstm_fast::{FastLstm, Precision};
use crate::model::tokenizer::encode;
use crate::model::train::{BitsPerNote, CorpusTune, fast_note_bits, load_corpus, note_bits};
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Every tune.
    All,
    /// The tunes `melodist train` holds out (same fixed split).
    Val,
    /// The tunes `melodist train` learns from.
    Train,
}

#[derive(clap::Args)]
pub struct Args {
    /// `default` (the shipped neural model), `markov` (the shipped Markov model, or the
    /// file given by --markov-file), a neural model folder or Markov `.bin` file, or
    /// `markov-fit` (a Markov model fitted here on the training split: the fair baseline
    /// for `--split val`). A model that cannot be loaded is an error.
    #[arg(long, default_value = "default")]
    pub model: String,
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Split::All)]
    pub split: Split,
    /// With `--model markov`: score this Markov file instead of the shipped model.
    #[arg(long)]
    pub markov_file: Option<PathBuf>,
    /// Only files of this voice (`soprano` keeps `*_soprano.mid`): e.g. the chorales'
    /// melody lines.
    #[arg(long)]
    pub voice: Option<String>,
    /// Hide the other voices' chords from a neural model (what it scores without a
    /// chord track); compare with and without to see what harmony is worth.
    #[arg(long)]
    pub no_chords: bool,
    /// Score a neural model through the decoder the plugin runs, with its weight matrices
    /// in this precision, instead of candle's forward: what bf16 or int8 weights cost in bits.
    #[arg(long, value_enum)]
    pub fast_path: Option<FastPath>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FastPath {
    F32,
    Bf16,
    Int8,
}

/// The model `--model` (and `--markov-file`) name, loaded before the corpus is read so a
/// bad path fails at once. `None` is `markov-fit`, which needs the corpus.
fn model(args: &Args) -> Result<Option<LoadedModel>> {
    let choice = match (args.model.as_str(), &args.markov_file) {
        ("markov-fit", None) => return Ok(None),
        ("markov", Some(file)) => ModelChoice::Path(file.clone()),
        (_, Some(_)) => bail!("--markov-file goes with --model markov"),
        (name, None) => ModelChoice::parse(name),
    };
    Ok(Some(loader::load_model(&choice)?))
}

pub fn run(args: Args) -> Result<()> {
    let model = model(&args)?;
    if args.fast_path.is_some() && !matches!(model, Some(LoadedModel::Neural(_))) {
        bail!(
            "--fast-path scores a neural model's decoder; {} is not one",
            args.model
        );
    }
    let (tunes, skipped) = load_corpus(&args.midi_dirs)?;
    // Only tunes both models can read, so both are scored on the same notes.
    let usable = |t: &&CorpusTune| encode(&t.melody, t.style).is_some();
    let chosen: Vec<&CorpusTune> = tunes
        .iter()
        .filter(usable)
        .filter(|t| match args.split {
            Split::All => true,
            Split::Val => t.is_validation(),
            Split::Train => !t.is_validation(),
        })
        .filter(|t| args.voice.as_ref().is_none_or(|v| is_voice(t, v)))
        .collect();
    let markov_bits = |model: &MarkovModel| -> Vec<(f32, f32)> {
        chosen
            .iter()
            .flat_map(|t| model.note_bits(&t.melody))
            .collect()
    };
    let bits: Vec<(f32, f32)> = match model {
        None => {
            let train: Vec<_> = tunes
                .iter()
                .filter(|t| !t.is_validation())
                .map(|t| t.melody.clone())
                .collect();
            markov_bits(&MarkovModel::train(&train))
        }
        Some(LoadedModel::Markov(model)) => markov_bits(&model),
        Some(LoadedModel::Neural(generator)) => {
            let seqs: Vec<_> = chosen
                .iter()
                .filter_map(|t| {
                    if args.no_chords {
                        t.encode_without_chords()
                    } else {
                        t.encode()
                    }
                })
                .collect();
            let precision = match args.fast_path {
                None => {
                    return report(
                        &args,
                        chosen.len(),
                        skipped,
                        &note_bits(generator.model(), &seqs)?,
                    );
                }
                Some(FastPath::F32) => Precision::F32,
                Some(FastPath::Bf16) => Precision::Bf16,
                Some(FastPath::Int8) => Precision::Int8,
            };
            fast_note_bits(
                &FastLstm::with_precision(generator.model(), precision)?,
                &seqs,
            )
        }
    };
    report(&args, chosen.len(), skipped, &bits)
}

fn report(args: &Args, tunes: usize, skipped: usize, bits: &[(f32, f32)]) -> Result<()> {
    let b = BitsPerNote::from_pairs(bits);
    println!(
        "{}: {} tunes, {} notes ({skipped} files skipped): {:.3} bits/note (pitch {:.3}, duration {:.3})",
        args.model, tunes, b.notes, b.total, b.pitch, b.duration
    );
    Ok(())
}

fn is_voice(tune: &CorpusTune, voice: &str) -> bool {
    tune.path
        .file_stem()
        .is_some_and(|s| s.to_string_lossy().ends_with(&format!("_{voice}")))
}
