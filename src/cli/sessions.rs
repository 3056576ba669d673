//! `melodist sessions`: the producer's own history, out of (or back into) the database.

use crate::sessions::{SessionDb, jsonl};
use anyhow::{Result, bail};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write the whole local history as JSON lines (format: `melodist::sessions::jsonl`).
    Export { file: PathBuf },
    /// Add the sessions of a JSON-lines file to the local history.
    Import { file: PathBuf },
    /// Delete all local history.
    Forget {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Show where the history lives and how much there is.
    Info,
}

fn open() -> Result<SessionDb> {
    let db = SessionDb::open_default()?;
    if let Some(note) = &db.recovered {
        eprintln!("warning: {note}");
    }
    Ok(db)
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Export { file } => {
            let log = open()?.load_log()?;
            jsonl::write_file(&log, &file)?;
            println!(
                "exported {} sessions ({} events) to {}",
                log.sessions.len(),
                log.event_count(),
                file.display()
            );
        }
        Command::Import { file } => {
            let log = jsonl::read_file(&file)?;
            let n = open()?.import_log(&log)?;
            println!("imported {n} sessions from {}", file.display());
        }
        Command::Forget { yes } => {
            let mut db = open()?;
            if !yes
                && !confirm(&format!(
                    "Delete all session history in {}? [y/N] ",
                    db.path().display()
                ))?
            {
                bail!("nothing deleted (pass --yes to skip this question)");
            }
            let n = db.forget()?;
            println!("deleted {n} sessions from {}", db.path().display());
        }
        Command::Info => {
            let db = open()?;
            let (sessions, events) = db.counts()?;
            println!(
                "{}: {sessions} sessions, {events} events (schema v{})",
                db.path().display(),
                db.schema_version()?
            );
        }
    }
    Ok(())
}

/// Asks on the terminal; without one (a script) the answer is no.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    print!("{question}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
