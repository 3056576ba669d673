//! `melodist eval`: cross-entropy in bits per note of a model over folders of MIDI files,
//! so the neural model and the Markov baseline are compared on exactly the same notes.

use crate::generator::markov::MarkovModel;
use crate::generator::neural::NeuralGenerator;
use crate::model::tokenizer::encode;
use crate::model::train::{BitsPerNote, CorpusTune, load_corpus, note_bits};
use anyhow::Result;
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
    /// A neural model folder, `markov` (the file given by --markov-file), or `markov-fit`
    /// (a Markov model fitted here on the training split: the fair baseline for `--split val`).
    #[arg(long)]
    pub model: String,
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Split::All)]
    pub split: Split,
    #[arg(long, default_value = "models/markov.bin")]
    pub markov_file: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
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
        .collect();
    let bits: Vec<(f32, f32)> = match args.model.as_str() {
        "markov" | "markov-fit" => {
            let model = if args.model == "markov" {
                MarkovModel::load(&args.markov_file)?
            } else {
                let train: Vec<_> = tunes
                    .iter()
                    .filter(|t| !t.is_validation())
                    .map(|t| t.melody.clone())
                    .collect();
                MarkovModel::train(&train)
            };
            chosen
                .iter()
                .flat_map(|t| model.note_bits(&t.melody))
                .collect()
        }
        dir => {
            let generator = NeuralGenerator::load(&PathBuf::from(dir))?;
            let seqs: Vec<_> = chosen
                .iter()
                .filter_map(|t| encode(&t.melody, t.style))
                .collect();
            note_bits(generator.model(), &seqs)?
        }
    };
    let b = BitsPerNote::from_pairs(&bits);
    println!(
        "{}: {} tunes, {} notes ({skipped} files skipped): {:.3} bits/note (pitch {:.3}, duration {:.3})",
        args.model,
        chosen.len(),
        b.notes,
        b.total,
        b.pitch,
        b.duration
    );
    Ok(())
}
