//! `melodist sessions`: the producer's own history, out of (or back into) the database.

use crate::serve::client::{CallError, ServerClient};
use crate::serve::history::RecordSession;
use crate::sessions::{SessionDb, jsonl};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write the whole local history as JSON lines (format: `melodist::sessions::jsonl`).
    Export {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add the sessions of a JSON-lines file to the local history.
    Import {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete all local history.
    Forget {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show where the history lives and how much there is.
    Info,
}

/// Your history on a model server instead of this machine's.
#[derive(clap::Args)]
pub struct Remote {
    /// Act on your history on this `melodist serve` (http://host:port; the token comes
    /// from MELODIST_TOKEN): export it, add to it, or forget it there. Only yours.
    #[arg(long)]
    server: Option<String>,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 30.0, value_parser = crate::cli::ranged(0.1..=600.0f64))]
    server_timeout: f64,
}

impl Remote {
    fn client(&self) -> Result<Option<ServerClient>> {
        let Some(url) = &self.server else {
            return Ok(None);
        };
        let limit = Duration::from_secs_f64(self.server_timeout);
        Ok(Some(ServerClient::new(url, limit).context("--server")?))
    }
}

/// A failed call to the server, as a sentence naming it.
fn refused(client: &ServerClient, e: CallError) -> anyhow::Error {
    anyhow::anyhow!("the server at {}: {e}", client.url())
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
        Command::Export { file, remote } if remote.server.is_some() => {
            let client = remote.client()?.expect("--server given");
            let lines =
                (client.get_bytes("/v1/sessions?format=jsonl")).map_err(|e| refused(&client, e))?;
            std::fs::write(&file, &lines)
                .with_context(|| format!("cannot write {}", file.display()))?;
            let log = jsonl::read_file(&file)?;
            println!(
                "exported your {} sessions ({} events) on {} to {}",
                log.sessions.len(),
                log.event_count(),
                client.url(),
                file.display()
            );
        }
        Command::Import { file, remote } if remote.server.is_some() => {
            let client = remote.client()?.expect("--server given");
            let log = jsonl::read_file(&file)?;
            for session in &log.sessions {
                (client
                    .post::<_, serde_json::Value>("/v1/sessions", &RecordSession::from(session)))
                .map_err(|e| refused(&client, e))?;
            }
            println!(
                "added {} sessions from {} to your history on {}",
                log.sessions.len(),
                file.display(),
                client.url()
            );
        }
        Command::Forget { yes, remote } if remote.server.is_some() => {
            let client = remote.client()?.expect("--server given");
            let question = format!(
                "Delete all your session history on {}? [y/N] ",
                client.url()
            );
            if !yes && !confirm(&question)? {
                bail!("nothing deleted (pass --yes to skip this question)");
            }
            let answer: serde_json::Value =
                (client.delete("/v1/sessions")).map_err(|e| refused(&client, e))?;
            println!(
                "deleted your {} sessions on {}",
                answer["deleted"],
                client.url()
            );
        }
        Command::Export { file, .. } => {
            let log = open()?.load_log()?;
            jsonl::write_file(&log, &file)?;
            println!(
                "exported {} sessions ({} events) to {}",
                log.sessions.len(),
                log.event_count(),
                file.display()
            );
        }
        Command::Import { file, .. } => {
            let log = jsonl::read_file(&file)?;
            let n = open()?.import_log(&log)?;
            println!("imported {n} sessions from {}", file.display());
        }
        Command::Forget { yes, .. } => {
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
