//! `melodist train-markov`: learn the Markov baseline from folders of MIDI files.

use crate::generator::markov::MarkovModel;
use crate::midi::{collect_midi_files, read_melody};
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Folders (searched recursively) or files of MIDI melodies.
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    /// Where to write the model.
    #[arg(long, default_value = "models/markov.bin")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let files = collect_midi_files(&args.midi_dirs)?;
    let mut melodies = Vec::with_capacity(files.len());
    let mut skipped = 0;
    for f in &files {
        match read_melody(f) {
            Ok(m) if !m.notes.is_empty() => melodies.push(m),
            Ok(_) => skipped += 1,
            Err(err) => {
                eprintln!("skipping: {err:#}");
                skipped += 1;
            }
        }
    }
    if melodies.is_empty() {
        bail!("no usable MIDI melodies found in {} files", files.len());
    }
    let started = std::time::Instant::now();
    let model = MarkovModel::train(&melodies);
    model.save(&args.out)?;
    println!(
        "trained on {} melodies ({} notes; {skipped} files skipped) in {:.1} s: {} contexts -> {}",
        model.trained_melodies,
        model.trained_notes,
        started.elapsed().as_secs_f32(),
        model.context_count(),
        args.out.display()
    );
    Ok(())
}
