//! `melodist recommend`: rank the style presets for a context from the local history, with
//! the reason for each. The history is read incrementally ([`crate::recommend::cache`]).

use super::ranged;
use crate::limits;
use crate::music::{Key, Meter, PitchClass, Scale};
use crate::presets::{self, PresetLibrary};
use crate::recommend::{Catalogue, Context, Hybrid, HybridWeights, Recommender, cache};
use crate::serve::api::{RecommendRequest, RecommendResponse};
use crate::serve::client::ServerClient;
use crate::sessions::{LOCAL_PRODUCER, SessionDb};
use anyhow::{Context as _, Result};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Host tempo in BPM, 20-300.
    #[arg(long, value_parser = ranged(limits::TEMPO))]
    pub tempo: Option<f32>,
    /// Time signature, e.g. 4/4, 6/8.
    #[arg(long)]
    pub meter: Option<String>,
    /// Tonic of the track: C, C#, Db, ... B.
    #[arg(long)]
    pub key: Option<String>,
    /// Scale of the track (with --key): major, minor, dorian, ...
    #[arg(long, default_value = "major")]
    pub scale: String,
    /// Notes per beat you are playing, 0-16.
    #[arg(long, value_parser = ranged(0.0f32..=16.0))]
    pub density: Option<f32>,
    /// Average MIDI pitch you are playing (60 = middle C), 0-127.
    #[arg(long, value_parser = ranged(0.0f32..=127.0))]
    pub register: Option<f32>,
    /// How many presets to list, 1-1000.
    #[arg(long, short = 'k', default_value_t = 5, value_parser = ranged(1..=1000usize))]
    pub count: usize,
    /// Whose history to use (imported logs may hold several producers).
    #[arg(long, default_value = LOCAL_PRODUCER)]
    pub producer: String,
    /// Rank from your history on a Melodist server (http://host:port; token from
    /// $MELODIST_TOKEN) instead of this machine's; if it cannot answer in time, this
    /// machine's history is used, and you are told why.
    #[arg(long)]
    pub server: Option<String>,
    /// Seconds to wait for --server, 0.1-600.
    #[arg(long, default_value_t = 10.0, value_parser = ranged(0.1..=600.0f64))]
    pub server_timeout: f64,
}

/// The most presets `POST /v1/recommend` returns.
const SERVER_MAX_COUNT: usize = 50;

/// Prints the server's ranking; false (having said why) when it gave none.
fn from_server(args: &Args, url: &str) -> Result<bool> {
    let client =
        ServerClient::new(url, Duration::from_secs_f64(args.server_timeout)).context("--server")?;
    let request = RecommendRequest {
        tempo: args.tempo.map(f64::from),
        meter: args.meter.clone(),
        key: args.key.clone(),
        scale: args.key.is_some().then(|| args.scale.clone()),
        density: args.density.map(f64::from),
        register: args.register.map(f64::from),
        count: Some(args.count.min(SERVER_MAX_COUNT) as i64),
    };
    match client.post::<_, RecommendResponse>("/v1/recommend", &request) {
        Ok(answer) => {
            println!(
                "Ranked on {} from {:?}'s {} session{} there:\n",
                client.url(),
                answer.user,
                answer.sessions,
                if answer.sessions == 1 { "" } else { "s" }
            );
            for (rank, p) in answer.presets.iter().enumerate() {
                print_ranked(rank, &p.name, &p.preset_id, p.score, &p.reason);
            }
            Ok(true)
        }
        Err(why) => {
            eprintln!(
                "melodist: the server at {} gave no ranking: {why}; ranking from this machine's history instead",
                client.url()
            );
            Ok(false)
        }
    }
}

/// One line of the ranking, and its reason below it.
fn print_ranked(rank: usize, name: &str, id: &str, score: f32, reason: &str) {
    println!(
        "{:>2}. {name} ({id})  score {score:.2}\n    {reason}",
        rank + 1
    );
}

/// The recommendation context described by the arguments.
fn context(args: &Args) -> Result<Context> {
    let meter = match &args.meter {
        Some(m) => Some(
            Meter::parse(m)
                .with_context(|| format!("--meter {m:?} is not a time signature like 6/8"))?,
        ),
        None => None,
    };
    let key = match &args.key {
        Some(k) => {
            let tonic = PitchClass::parse(k)
                .with_context(|| format!("--key {k:?} is not a note name like A or F#"))?;
            let scale = Scale::parse(&args.scale)
                .with_context(|| format!("--scale {:?} is not a known scale", args.scale))?;
            Some(Key::new(tonic, scale))
        }
        None => None,
    };
    Ok(Context {
        producer: args.producer.clone(),
        tempo: args.tempo,
        meter,
        key,
        input_density: args.density,
        input_register: args.register,
        session: Vec::new(),
    })
}

pub fn run(args: Args) -> Result<()> {
    let ctx = context(&args)?;
    if let Some(url) = args.server.as_deref()
        && from_server(&args, url)?
    {
        return Ok(());
    }
    let (library, warnings) = PresetLibrary::load(&presets::user_dir()?);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    // Reads only what changed since the last call (the compact history is kept in the
    // database), then fits; the ranking is the one a full read would give. The quick open
    // skips the whole-file check; if the read fails, the checked open moves a damaged file
    // aside (and says so) and the read is tried once more.
    let path = crate::sessions::default_db_path()?;
    let catalogue = Catalogue::from_library(&library);
    let quick = SessionDb::open_unverified(&path)
        .and_then(|db| cache::load_dataset(&db, catalogue.clone()));
    let (data, _) = match quick {
        Ok(loaded) => loaded,
        Err(_) => {
            let db = SessionDb::open(&path)?;
            if let Some(note) = &db.recovered {
                eprintln!("warning: {note}");
            }
            cache::load_dataset(&db, catalogue)?
        }
    };
    let mut hybrid = Hybrid::new(HybridWeights::TUNED);
    hybrid.fit(&data);
    if hybrid.weights_for(&ctx) == HybridWeights::COLD_START {
        let (all, _) = hybrid.session_counts(&ctx);
        if all == 0 {
            println!(
                "No history for {:?} yet: ranking by how presets fit this context and overall popularity.\n",
                ctx.producer
            );
        } else {
            println!(
                "No preset has worked yet in {:?}'s {all} session{}: ranking by how presets fit this context and overall popularity.\n",
                ctx.producer,
                if all == 1 { "" } else { "s" }
            );
        }
    }
    for (rank, rec) in hybrid.recommend(&ctx, args.count).iter().enumerate() {
        let name = library
            .get(&rec.preset_id)
            .map_or(rec.preset_id.as_str(), |p| p.name.as_str());
        print_ranked(rank, name, &rec.preset_id, rec.score, &rec.explanation);
    }
    Ok(())
}
