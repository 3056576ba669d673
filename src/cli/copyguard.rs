//! `melodist copyguard`: (re)build a neural model's originality guard from MIDI folders,
//! e.g. to also keep it from copying tunes it was not trained on. `train` writes one itself.

use crate::model::train::{load_corpus, write_guard};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Folders (searched recursively) or files of MIDI melodies not to copy.
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    /// The neural model folder to write `copyguard.bin` into.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let (tunes, skipped) = load_corpus(&args.midi_dirs)?;
    let windows = write_guard(&args.out, &tunes)?;
    println!(
        "{} melodies ({skipped} files skipped): {windows} distinct 13-note runs guarded -> {}",
        tunes.len(),
        args.out.display()
    );
    Ok(())
}
