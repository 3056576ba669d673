//! `melodist recommend`: rank the style presets for a context from the local history, with
//! the reason for each. The history is read incrementally ([`crate::recommend::cache`]).

use super::ranged;
use crate::limits;
use crate::music::{Key, Meter, PitchClass, Scale};
use crate::presets::{self, PresetLibrary};
use crate::recommend::{Catalogue, Context, Hybrid, HybridWeights, Recommender, cache};
use crate::sessions::{LOCAL_PRODUCER, SessionDb};
use anyhow::{Context as _, Result};

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
    let (library, warnings) = PresetLibrary::load(&presets::user_dir()?);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let db = SessionDb::open_default()?;
    if let Some(note) = &db.recovered {
        eprintln!("warning: {note}");
    }
    // Reads only what changed since the last call (the compact history is kept in the
    // database), then fits; the ranking is the one a full read would give.
    let (data, _) = cache::load_dataset(&db, Catalogue::from_library(&library))?;
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
        println!(
            "{:>2}. {name} ({})  score {:.2}\n    {}",
            rank + 1,
            rec.preset_id,
            rec.score,
            rec.explanation
        );
    }
    Ok(())
}
