//! `melodist eval-recs`: offline evaluation of every recommender next to the baselines
//! (global, personal, recency-weighted personal and context-weighted popularity, random),
//! on the simulator, the local history and any exported log, with paired bootstrap
//! intervals for the hybrid against the best baseline. Each producer's last `--held-out`
//! working sessions are held out (3 by default: three times the cases of leave-one-out),
//! and the intervals resample producers, whose cases are not independent. Output to a
//! closed pipe (`| head`) ends the run quietly.

use super::ranged;
use crate::presets::{self, PresetLibrary};
use crate::recommend::eval::{self, Metrics};
use crate::recommend::sim::{self, SimConfig};
use crate::recommend::{
    Catalogue, HybridWeights, PERSONAL_GROWTH, STRONG_BASELINES, all_recommenders,
};
use crate::sessions::{self, SessionDb, SessionLog, jsonl};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Also evaluate a session log in the `melodist sessions export` format.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Simulated producers, 0-100000 (0 skips the simulator). The default is enough for
    /// the intervals to decide: 300 left 150 cold-start cases, whose HR@10 interval spans
    /// ±0.08, and about 550 for producers with >= 20 sessions.
    #[arg(long, default_value_t = 1000, value_parser = ranged(0..=100_000usize))]
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
    /// Let the simulator log signals the plugin never records (explicit "kept" events,
    /// exact use times) instead of only what the plugin logs.
    #[arg(long)]
    pub rich_signals: bool,
    /// Working sessions held out per producer (the last k), 1-100: more cases per
    /// producer narrow the intervals (which resample producers, not cases).
    #[arg(long, default_value_t = 3, value_parser = ranged(1..=100usize))]
    pub held_out: usize,
    /// Bootstrap resamples for the paired intervals, 100-100000.
    #[arg(long, default_value_t = 1000, value_parser = ranged(100..=100_000usize))]
    pub bootstrap: usize,
    /// Tune the hybrid's weights on each split's training data instead of using the fixed
    /// weights the plugin ships ([`HybridWeights::TUNED`]).
    #[arg(long)]
    pub tune: bool,
    /// Skip the local session database.
    #[arg(long)]
    pub no_local: bool,
}

/// `writeln!` to the output, returning its error (a closed pipe) from the function.
macro_rules! say {
    ($out:expr) => { writeln!($out)? };
    ($out:expr, $($t:tt)*) => { writeln!($out, $($t)*)? };
}

/// One evaluated group of held-out cases.
struct Group {
    name: String,
    rows: Vec<Metrics>,
    /// Each case's producer, for the bootstrap.
    groups: Vec<u32>,
}

fn row<'a>(rows: &'a [Metrics], name: &str) -> Option<&'a Metrics> {
    rows.iter().find(|m| m.name == name)
}

/// Hybrid against the best strong baseline on one metric: prints the paired interval and
/// returns (hybrid, best, low, high).
fn versus_best(
    out: &mut dyn Write,
    group: &Group,
    ndcg: bool,
    rounds: usize,
    seed: u64,
) -> Result<Option<(f64, f64, f64)>> {
    let value = |m: &Metrics| if ndcg { m.ndcg10 } else { m.hr10 };
    let Some(hybrid) = row(&group.rows, "hybrid") else {
        return Ok(None);
    };
    let Some(best) = STRONG_BASELINES
        .iter()
        .filter_map(|b| row(&group.rows, b))
        .max_by(|a, b| value(a).total_cmp(&value(b)))
    else {
        return Ok(None);
    };
    let (a, b) = (hybrid.per_case(ndcg), best.per_case(ndcg));
    let (mean, lo, hi) = eval::paired_bootstrap(&a, &b, &group.groups, rounds, seed);
    let metric = if ndcg { "NDCG@10" } else { "HR@10" };
    let verdict = if lo > 0.0 {
        "better"
    } else if hi < 0.0 {
        "WORSE"
    } else {
        "not distinguishable"
    };
    say!(
        out,
        "  hybrid - {} ({metric}): {mean:+.3} [95% CI {lo:+.3}, {hi:+.3}] -> {verdict}",
        best.name
    );
    Ok(Some((mean, lo, hi)))
}

/// Leave-last-out tables for a log: all producers, experienced ones, early sessions, no
/// history; each with paired intervals against the best baseline.
fn evaluate_log(
    out: &mut dyn Write,
    title: &str,
    log: &SessionLog,
    catalogue: &Catalogue,
    args: &Args,
) -> Result<Vec<Group>> {
    say!(
        out,
        "== {title}: {} producers, {} sessions, {} events",
        log.producers().len(),
        log.sessions.len(),
        log.event_count()
    );
    let mut groups = Vec::new();
    let k = args.held_out;
    let splits = [
        (
            format!("all producers (last {k} working sessions held out)"),
            eval::leave_last_out(log, 1, k),
            false,
        ),
        (
            format!(
                "producers with >= {} sessions (last {k} held out)",
                args.min_sessions
            ),
            eval::leave_last_out(log, args.min_sessions.saturating_sub(1), k),
            false,
        ),
        (
            "cold start (<= 2 prior sessions)".to_string(),
            eval::early_sessions(log, 2),
            false,
        ),
        ("no history at all".to_string(), eval::cold_start(log), true),
    ];
    for (name, split, cold) in splits {
        if split.cases.is_empty() {
            say!(out, "{name}: no held-out cases\n");
            continue;
        }
        let weights = if cold || !args.tune {
            HybridWeights::TUNED
        } else {
            eval::tune_hybrid(&split.train, catalogue)
        };
        let rows = eval::evaluate(&split, catalogue, &mut all_recommenders(weights, args.seed));
        let note = if cold {
            format!(
                "hybrid uses its cold-start blend: {}",
                HybridWeights::COLD_START
            )
        } else {
            let how = match args.tune {
                true => "tuned on this split's training data",
                false => "fixed, shipped",
            };
            format!(
                "hybrid weights ({how}): {weights}; personal x (1 + sessions / {PERSONAL_GROWTH})"
            )
        };
        say!(out, "{}  {note}", eval::table(&name, &rows));
        let group = Group {
            name,
            rows,
            groups: split.groups(),
        };
        versus_best(out, &group, false, args.bootstrap, args.seed)?;
        versus_best(out, &group, true, args.bootstrap, args.seed)?;
        say!(out);
        groups.push(group);
    }
    Ok(groups)
}

/// The targets, checked on the simulator's groups.
fn targets(out: &mut dyn Write, groups: &[Group], args: &Args) -> Result<()> {
    let find = |prefix: &str| groups.iter().find(|g| g.name.starts_with(prefix));
    if let Some(all) = find("all producers")
        && let (Some(h), Some(p)) = (row(&all.rows, "hybrid"), row(&all.rows, "popularity"))
    {
        let verdict = if h.hr10 >= 1.2 * p.hr10 {
            "met"
        } else {
            "NOT met"
        };
        say!(
            out,
            "target hybrid HR@10 >= 1.2 x popularity (all producers): {:.3} vs {:.3} ({:.2}x) -> {verdict}",
            h.hr10,
            p.hr10,
            h.hr10 / p.hr10.max(1e-9)
        );
    }
    for g in groups.iter().filter(|g| !g.name.starts_with("no history")) {
        let Some(h) = row(&g.rows, "hybrid") else {
            continue;
        };
        let best = |f: fn(&Metrics) -> f64| {
            STRONG_BASELINES
                .iter()
                .filter_map(|b| row(&g.rows, b))
                .map(f)
                .fold(0.0, f64::max)
        };
        let (bh, bn) = (best(|m| m.hr10), best(|m| m.ndcg10));
        let verdict = if h.hr10 >= bh && h.ndcg10 >= bn {
            "met"
        } else {
            "NOT met"
        };
        say!(
            out,
            "target hybrid >= best baseline, {}: HR@10 {:.3} vs {bh:.3}, NDCG@10 {:.3} vs {bn:.3} -> {verdict}",
            g.name,
            h.hr10,
            h.ndcg10
        );
    }
    if let Some(exp) = find("producers with") {
        let mut sink = Vec::new();
        if let Some((_, lo, _)) = versus_best(&mut sink, exp, true, args.bootstrap, args.seed)? {
            let verdict = if lo > 0.0 { "met" } else { "NOT met" };
            say!(
                out,
                "target paired NDCG@10 interval above zero (>= {} sessions): low end {lo:+.3} -> {verdict}",
                args.min_sessions
            );
        }
    }
    if let Some(cold) = find("cold start")
        && let (Some(h), Some(c)) = (row(&cold.rows, "hybrid"), row(&cold.rows, "context-pop"))
    {
        let verdict = if h.hr10 >= c.hr10 { "met" } else { "NOT met" };
        say!(
            out,
            "target cold start hybrid >= context-weighted popularity: HR@10 {:.3} vs {:.3} -> {verdict}\n",
            h.hr10,
            c.hr10
        );
    }
    Ok(())
}

fn evaluate_all(out: &mut dyn Write, args: &Args) -> Result<()> {
    if args.producers > 0 {
        let cfg = SimConfig {
            producers: args.producers,
            seed: args.seed,
            shared_presets: args.shared_presets,
            user_presets: args.user_presets,
            rich_signals: args.rich_signals,
            ..SimConfig::default()
        };
        let world = sim::simulate(&cfg);
        let catalogue = Catalogue::from_presets(&world.presets);
        let title = format!(
            "simulator (seed {}, {} presets, {} private per producer, {})",
            cfg.seed,
            world.presets.len(),
            cfg.user_presets,
            if cfg.rich_signals {
                "rich signals"
            } else {
                "plugin-faithful log"
            }
        );
        let groups = evaluate_log(out, &title, &world.log, &catalogue, args)?;
        targets(out, &groups, args)?;
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
            say!(out, "local history {}: empty, skipped", db_path.display());
        } else {
            let title = format!("local history {}", db_path.display());
            evaluate_log(out, &title, &log, &catalogue, args)?;
        }
    }
    if let Some(file) = &args.log {
        let log = jsonl::read_file(file)?;
        evaluate_log(
            out,
            &format!("log {}", file.display()),
            &log,
            &catalogue,
            args,
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Whether `err` is a write to a closed pipe (the reader, e.g. `head`, is done).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn run(args: Args) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match evaluate_all(&mut out, &args) {
        Err(err) if is_broken_pipe(&err) => Ok(()),
        other => other,
    }
}
