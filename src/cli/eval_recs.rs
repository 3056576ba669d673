//! `melodist eval-recs`: offline evaluation of every recommender next to the popularity and
//! random baselines, on the simulator, the local history and any exported log.

use super::ranged;
use crate::presets::{self, PresetLibrary};
use crate::recommend::eval::{self, Metrics, Split};
use crate::recommend::sim::{self, SimConfig};
use crate::recommend::{Catalogue, HybridWeights, all_recommenders};
use crate::sessions::{self, SessionDb, SessionLog, jsonl};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Also evaluate a session log in the `melodist sessions export` format.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Simulated producers, 0-100000 (0 skips the simulator).
    #[arg(long, default_value_t = 300, value_parser = ranged(0..=100_000usize))]
    pub producers: usize,
    /// Simulator seed (any 64-bit number).
    #[arg(long, default_value_t = 7, value_parser = ranged(0..=u64::MAX))]
    pub seed: u64,
    /// Presets every simulated producer can use, 1-10000.
    #[arg(long, default_value_t = 60, value_parser = ranged(1..=10_000usize))]
    pub shared_presets: usize,
    /// Private presets per simulated producer, 0-1000.
    #[arg(long, default_value_t = 2, value_parser = ranged(0..=1000usize))]
    pub user_presets: usize,
    /// "Experienced producer" threshold for the second simulator table, 1-100000 sessions.
    #[arg(long, default_value_t = 20, value_parser = ranged(1..=100_000usize))]
    pub min_sessions: usize,
    /// Skip the local session database.
    #[arg(long)]
    pub no_local: bool,
}

/// Leave-last-out tables for a log: all producers, experienced ones, cold start. Returns
/// (experienced, cold start) metrics for the target checks.
fn evaluate_log(
    title: &str,
    log: &SessionLog,
    catalogue: &Catalogue,
    min_sessions: usize,
    seed: u64,
) -> (Vec<Metrics>, Vec<Metrics>) {
    println!(
        "== {title}: {} producers, {} sessions, {} events",
        log.producers().len(),
        log.sessions.len(),
        log.event_count()
    );
    let run = |name: &str, split: &Split, cold: bool| {
        if split.cases.is_empty() {
            println!("{name}: no held-out cases\n");
            return Vec::new();
        }
        let weights = if cold {
            HybridWeights::TUNED
        } else {
            eval::tune_hybrid(&split.train, catalogue)
        };
        let rows = eval::evaluate(split, catalogue, &mut all_recommenders(weights, seed));
        let note = if cold {
            format!(
                "hybrid uses its cold-start blend: {}",
                HybridWeights::COLD_START
            )
        } else {
            format!("hybrid weights (tuned on the training data): {weights}")
        };
        println!("{}  {note}\n", eval::table(name, &rows));
        rows
    };
    run(
        "leave-last-out, all producers",
        &eval::leave_last_out(log, 1),
        false,
    );
    let experienced = run(
        &format!("leave-last-out, producers with >= {min_sessions} sessions"),
        &eval::leave_last_out(log, min_sessions.saturating_sub(1)),
        false,
    );
    let cold = run("cold start (no history)", &eval::cold_start(log), true);
    (experienced, cold)
}

fn hr10(rows: &[Metrics], name: &str) -> Option<f64> {
    rows.iter().find(|m| m.name == name).map(|m| m.hr10)
}

pub fn run(args: Args) -> Result<()> {
    if args.producers > 0 {
        let cfg = SimConfig {
            producers: args.producers,
            seed: args.seed,
            shared_presets: args.shared_presets,
            user_presets: args.user_presets,
            ..SimConfig::default()
        };
        let world = sim::simulate(&cfg);
        let catalogue = Catalogue::from_presets(&world.presets);
        let title = format!(
            "simulator (seed {}, {} presets, {} private per producer)",
            cfg.seed,
            world.presets.len(),
            cfg.user_presets
        );
        let (experienced, cold) =
            evaluate_log(&title, &world.log, &catalogue, args.min_sessions, args.seed);
        if let (Some(h), Some(p)) = (
            hr10(&experienced, "hybrid"),
            hr10(&experienced, "popularity"),
        ) {
            let verdict = if h >= 1.2 * p { "met" } else { "NOT met" };
            println!(
                "target hybrid HR@10 >= 1.2 x popularity: {h:.3} vs {p:.3} ({:.2}x) -> {verdict}",
                h / p.max(1e-9)
            );
        }
        if let (Some(c), Some(r)) = (hr10(&cold, "content"), hr10(&cold, "random")) {
            let verdict = if c > r { "met" } else { "NOT met" };
            println!(
                "target content beats random at cold start: HR@10 {c:.3} vs {r:.3} -> {verdict}\n"
            );
        }
    }
    let (library, warnings) = PresetLibrary::load(&presets::user_dir()?);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let catalogue = Catalogue::from_library(&library);
    let db_path = sessions::default_db_path()?;
    if !args.no_local && db_path.exists() {
        let db = SessionDb::open(&db_path)?;
        if let Some(note) = &db.recovered {
            eprintln!("warning: {note}");
        }
        let log = db.load_log()?;
        if log.sessions.is_empty() {
            println!("local history {}: empty, skipped", db_path.display());
        } else {
            evaluate_log(
                &format!("local history {}", db_path.display()),
                &log,
                &catalogue,
                args.min_sessions,
                args.seed,
            );
        }
    }
    if let Some(file) = &args.log {
        let log = jsonl::read_file(file)?;
        evaluate_log(
            &format!("log {}", file.display()),
            &log,
            &catalogue,
            args.min_sessions,
            args.seed,
        );
    }
    Ok(())
}
