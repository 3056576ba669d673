//! `melodist critic`: a learned realism score for generators (see `model::realism`).
//!
//! - `critic train --model M --out DIR`: a critic for generator M (its samples against the
//!   corpus's training split), saved for reranking, with its held-out accuracy and AUC.
//! - `critic eval --model M…`: for each generator a **fresh** critic, trained and scored the
//!   same way, so generators are compared on equal terms; with `--rerank N --critic DIR`
//!   each piece is the best of N candidates by that (other) critic, and the table shows
//!   whether a fresh critic still finds the reranked pieces easy.
//!
//! Generated pieces go through the plugin's path (`generate::generate_with`: form,
//! continuity, cadences) with `stats`' default settings; each takes its key and meter from
//! a training tune (picked by the piece's number), so the critic cannot win on how often
//! a meter or mode occurs, only on the notes.

use super::form_measures::{Piece, measure, rows};
use super::generate::generate_with;
use super::ranged;
use super::stats::{CopyIndex, Line, piece_settings};
use crate::generator::Generator;
use crate::generator::loader::{self, ModelChoice};
use crate::midi::MelodyNote;
use crate::model::copyguard::melody_line;
use crate::model::critic::{Critic, Segment};
use crate::model::realism::{
    CriticFile, CriticTraining, Separation, TrainedCritic, first_full_bar, load_critic, rerank,
    save_critic, scores, segments_of, train_critic,
};
use crate::model::tokenizer::{Style, melody_key};
use crate::model::train::load_corpus;
use crate::music::{Key, Meter, Scale};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Train a critic on a generator's samples against the corpus's training split and save it.
    Train(TrainArgs),
    /// A fresh critic per generator: accuracy and AUC on held-out tunes vs fresh samples.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct Common {
    /// The corpus (split by tune as `melodist train` splits it).
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    /// Bars per generated piece, 4-64 (cut into 4-bar segments).
    #[arg(long, default_value_t = 16, value_parser = ranged(4..=64usize))]
    pub bars: usize,
    /// Pieces generated to train the critic, 10-100000; as many again, with other seeds,
    /// are generated to test it.
    #[arg(long, default_value_t = 1500, value_parser = ranged(10..=100_000usize))]
    pub pieces: usize,
    /// Critic training epochs, 1-1000.
    #[arg(long, default_value_t = 6, value_parser = ranged(1..=1000usize))]
    pub epochs: usize,
    /// Seed of the critic's weights and shuffling (any 64-bit number).
    #[arg(long, default_value_t = 1, value_parser = ranged(0..=u64::MAX))]
    pub seed: u64,
    /// Candidates per piece, 1-64: each generated piece is the one of N (other seeds) that
    /// `--critic` rates most real. 1 = plain decoding.
    #[arg(long, default_value_t = 1, value_parser = ranged(1..=64usize))]
    pub rerank: usize,
    /// The critic that reranks (a folder written by `critic train`).
    #[arg(long)]
    pub critic: Option<PathBuf>,
    /// No per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: Common,
    /// The generator: `default` (shipped neural), `markov`, or a model path.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Output folder: critic.json and critic.safetensors.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: Common,
    /// Generators to score, each with its own fresh critic.
    #[arg(long, num_args = 1.., default_values_t = ["default".to_string(), "markov".to_string()])]
    pub model: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Train(a) => train(a),
        Action::Eval(a) => eval(a),
    }
}

/// Piece numbers (seeds) of `critic eval`'s training pieces start here and its test
/// pieces at twice this; `critic train` (a critic to rerank with) uses the two ranges
/// after those, so a reranking critic has never seen a piece it is later judged on.
const PIECE_RANGE: usize = 1_000_000;
/// Candidate `i` of piece `k` is decoded with seed `k + i * CANDIDATE_SEEDS`.
const CANDIDATE_SEEDS: u64 = 1 << 32;

/// The corpus cut into segments, by side of the split, and the (key, meter) of every
/// training tune for the generated pieces to copy.
struct RealData {
    train: Vec<Segment>,
    test: Vec<Segment>,
    conditions: Vec<(Key, Meter)>,
    /// Every tune as a line, for the originality check (the copy guard covers them all).
    lines: Vec<Line>,
}

impl RealData {
    fn load(dirs: &[PathBuf]) -> Result<Self> {
        let (tunes, skipped) = load_corpus(dirs)?;
        let mut data = RealData {
            train: vec![],
            test: vec![],
            conditions: vec![],
            lines: vec![],
        };
        for t in &tunes {
            let Some(key) = melody_key(&t.melody) else {
                continue;
            };
            let meter = t.melody.meter;
            let first = first_full_bar(&t.melody.notes, meter);
            let segments = segments_of(&t.melody.notes, key, meter, first);
            // The held-out side, exactly as `melodist train` splits.
            data.lines.push(Line {
                key,
                notes: melody_line(&t.melody.notes),
            });
            if t.is_validation() {
                data.test.extend(segments);
            } else {
                data.train.extend(segments);
                data.conditions.push((key, meter));
            }
        }
        eprintln!(
            "read {} melodies ({skipped} skipped): {} training and {} held-out 4-bar segments",
            tunes.len(),
            data.train.len(),
            data.test.len()
        );
        if data.train.is_empty() || data.test.is_empty() {
            bail!("need tunes on both sides of the split; add more MIDI files");
        }
        Ok(data)
    }
}

/// Pieces of one generator, with how long they took.
struct Sampled {
    pieces: Vec<(Key, Meter, Vec<MelodyNote>)>,
    seconds: f64,
}

impl Sampled {
    fn segments(&self) -> Vec<Segment> {
        self.numbered_segments().into_iter().map(|s| s.1).collect()
    }

    /// Every segment with its place in its piece (0: bars 1-4, 1: bars 5-8, ...).
    fn numbered_segments(&self) -> Vec<(usize, Segment)> {
        (self.pieces.iter())
            .flat_map(|(key, meter, notes)| (0..).zip(segments_of(notes, *key, *meter, 0)))
            .collect()
    }
}

/// Pieces `seeds` of `generator`: piece `k` takes the key and meter of training tune
/// `k mod n` (mode kept, as major or minor) and `stats`' default settings with seed `k`;
/// with a reranking critic, the best of `candidates` decodes.
fn sample(
    generator: &mut dyn Generator,
    conditions: &[(Key, Meter)],
    seeds: std::ops::Range<usize>,
    bars: usize,
    reranker: Option<(&Critic, usize)>,
) -> Result<Sampled> {
    let start = Instant::now();
    let mut pieces = Vec::with_capacity(seeds.len());
    for k in seeds {
        let (tune_key, meter) = conditions[k % conditions.len()];
        let scale = if tune_key.scale.is_minor() {
            Scale::Minor
        } else {
            Scale::Major
        };
        let (mut settings, _) = piece_settings(k, Style::Any, 16);
        settings.key = Key::new(tune_key.tonic, scale);
        let mut decode = |i: usize| {
            let seed = settings.seed + i as u64 * CANDIDATE_SEEDS;
            let candidate = crate::generator::GenSettings { seed, ..settings };
            generate_with(generator, candidate, meter, bars, &[])
        };
        let notes = match reranker {
            Some((critic, n)) => rerank(critic, settings.key, meter, n, decode)?.0,
            None => decode(0),
        };
        pieces.push((settings.key, meter, notes));
    }
    Ok(Sampled {
        pieces,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One generator's result: its critic and how well that critic separates held-out data.
struct Scored {
    model: String,
    critic: TrainedCritic,
    separation: Separation,
    /// Generated test segments the critic calls generated, and all of them, per place in
    /// the piece (bars 1-4, 5-8, ...).
    spotted_by_place: Vec<(usize, usize)>,
    test_samples: Sampled,
}

/// Trains a fresh critic on pieces `first_piece..` of `model` and tests it on as many
/// pieces from `first_piece + PIECE_RANGE` on.
fn score_generator(
    model: &str,
    real: &RealData,
    common: &Common,
    first_piece: usize,
    reranker: Option<(&Critic, usize)>,
) -> Result<Scored> {
    let mut generator = loader::load_strict(&ModelChoice::parse(model))?;
    let train_samples = sample(
        generator.as_mut(),
        &real.conditions,
        first_piece..first_piece + common.pieces,
        common.bars,
        reranker,
    )?;
    let fake_train = train_samples.segments();
    eprintln!(
        "{model}: {} pieces ({} segments) in {:.1} s",
        common.pieces,
        fake_train.len(),
        train_samples.seconds
    );
    let opts = CriticTraining {
        epochs: common.epochs,
        seed: common.seed,
        progress: !common.quiet,
        ..CriticTraining::default()
    };
    let critic = train_critic(&real.train, &fake_train, &opts)?;
    let test_samples = sample(
        generator.as_mut(),
        &real.conditions,
        first_piece + PIECE_RANGE..first_piece + PIECE_RANGE + common.pieces,
        common.bars,
        reranker,
    )?;
    let (places, generated): (Vec<usize>, Vec<Segment>) =
        test_samples.numbered_segments().into_iter().unzip();
    let generated_scores = scores(&critic.critic, &generated)?;
    let separation = Separation::of(&scores(&critic.critic, &real.test)?, &generated_scores);
    // Where in a piece the critic finds the generator out: a place it spots far more
    // often than the others points at what to fix (an opening, a cadence).
    let mut spotted_by_place = vec![(0usize, 0usize); common.bars / 4];
    for (place, score) in places.into_iter().zip(&generated_scores) {
        if let Some(slot) = spotted_by_place.get_mut(place) {
            *slot = (slot.0 + (*score <= 0.0) as usize, slot.1 + 1);
        }
    }
    Ok(Scored {
        model: model.to_string(),
        critic,
        separation,
        spotted_by_place,
        test_samples,
    })
}

fn reranker(common: &Common) -> Result<Option<(Critic, String)>> {
    match (&common.critic, common.rerank) {
        (Some(dir), _) => {
            let (critic, file) = load_critic(dir)?;
            Ok(Some((critic, file.generator)))
        }
        (None, 1) => Ok(None),
        (None, _) => bail!("--rerank needs --critic (a folder written by `critic train`)"),
    }
}

fn report(s: &Scored, common: &Common) {
    let sep = s.separation;
    let per_piece = 1000.0 * s.test_samples.seconds / s.test_samples.pieces.len().max(1) as f64;
    println!(
        "{}: critic accuracy {:.1}% ({:+.1} points from indistinguishable), AUC {:.3}, on {} held-out real and {} fresh generated segments",
        s.model,
        100.0 * sep.accuracy,
        100.0 * (sep.accuracy - 0.5),
        sep.auc,
        sep.real,
        sep.generated
    );
    println!(
        "  critic: {} parameters, trained in {:.1} s on {} real and {} generated segments ({} epochs, final loss {:.3}); generation {:.1} ms per {}-bar piece{}",
        s.critic.critic.parameter_count(),
        s.critic.seconds,
        s.critic.per_class,
        s.critic.per_class,
        common.epochs,
        s.critic.losses.last().copied().unwrap_or(f64::NAN),
        per_piece,
        common.bars,
        if common.rerank > 1 {
            format!(" (best of {} candidates)", common.rerank)
        } else {
            String::new()
        }
    );
    let places: Vec<String> = (s.spotted_by_place.iter().enumerate())
        .map(|(i, (spotted, all))| {
            let share = 100.0 * *spotted as f64 / (*all).max(1) as f64;
            format!("bars {}-{} {share:.0}%", 4 * i + 1, 4 * i + 4)
        })
        .collect();
    println!(
        "  generated segments spotted, by place in the piece: {}",
        places.join(", ")
    );
}

/// The form, cadence, diversity and originality measures of `stats` over `pieces`, so a
/// reranked decode can be checked for being no worse than the plain one.
fn report_form(pieces: &[(Key, Meter, Vec<MelodyNote>)], bars: usize, copies: &CopyIndex) {
    let measured: Vec<Piece> = (pieces.iter())
        .map(|(key, meter, notes)| Piece::new(*key, *meter, notes, 0.0, bars))
        .collect();
    for (name, value) in rows(&measure(&measured)) {
        println!("  {name:<48} {value:>6}");
    }
    let mut lengths: Vec<usize> = (pieces.iter())
        .map(|(key, _, notes)| {
            copies
                .longest_copy(&Line {
                    key: *key,
                    notes: melody_line(notes),
                })
                .0
        })
        .collect();
    lengths.sort_unstable();
    println!(
        "  {:<48} {:>6}",
        "longest verbatim copy (notes), median / max",
        format!(
            "{} / {}",
            lengths[lengths.len() / 2],
            lengths.last().unwrap_or(&0)
        )
    );
}

fn train(args: TrainArgs) -> Result<()> {
    let real = RealData::load(&args.common.midi_dirs)?;
    let reranking = reranker(&args.common)?;
    let by = reranking.as_ref().map(|(c, _)| (c, args.common.rerank));
    let scored = score_generator(&args.model, &real, &args.common, 3 * PIECE_RANGE, by)?;
    report(&scored, &args.common);
    let file = CriticFile {
        format: String::new(),
        config: scored.critic.critic.config.clone(),
        generator: args.model.clone(),
        training: CriticTraining {
            epochs: args.common.epochs,
            seed: args.common.seed,
            ..CriticTraining::default()
        },
        separation: Some(scored.separation),
        weights_fnv1a: String::new(),
    };
    save_critic(&args.out, &scored.critic.varmap, &file)?;
    println!("critic -> {}", args.out.display());
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let real = RealData::load(&args.common.midi_dirs)?;
    let reranking = reranker(&args.common)?;
    if let Some((_, generator)) = &reranking {
        println!(
            "reranking: best of {} candidates by a critic trained on {generator}",
            args.common.rerank
        );
    }
    let copies = CopyIndex::new(&real.lines);
    for model in &args.model {
        let by = reranking.as_ref().map(|(c, _)| (c, args.common.rerank));
        let scored = score_generator(model, &real, &args.common, PIECE_RANGE, by)?;
        report(&scored, &args.common);
        report_form(&scored.test_samples.pieces, args.common.bars, &copies);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::GenSettings;
    use crate::model::critic::CriticConfig;
    use crate::model::realism::{realism, seeded_init};
    use crate::music::PitchClass;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// Reranking can only pick one of the generator's own decodes, so whatever the critic
    /// prefers, the scale and register masks (and the form and copy guard) still hold.
    #[test]
    fn reranking_picks_the_best_of_the_generators_own_candidates() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let critic = Critic::new(CriticConfig::default(), vb)?;
        seeded_init(&varmap, 7)?;
        let meter = Meter::new(3, 4);
        let (plain, _) = piece_settings(5, Style::Any, 16);
        let settings = GenSettings {
            key: Key::new(PitchClass::from_index(2), Scale::Dorian),
            low: 62,
            high: 74,
            ..plain
        };
        for choice in [ModelChoice::Default, ModelChoice::Markov] {
            let mut generator = loader::load_strict(&choice)?;
            let mut candidates = Vec::new();
            let (best, score) = rerank(&critic, settings.key, meter, 5, |i| {
                let seed = settings.seed + i as u64 * CANDIDATE_SEEDS;
                let notes = generate_with(
                    generator.as_mut(),
                    GenSettings { seed, ..settings },
                    meter,
                    8,
                    &[],
                );
                candidates.push(notes.clone());
                notes
            })?;
            assert_eq!(candidates.len(), 5);
            assert!(candidates.contains(&best), "{choice:?}: not a candidate");
            assert_ne!(
                candidates[0], candidates[1],
                "{choice:?}: candidates differ"
            );
            for c in &candidates {
                assert!(realism(&critic, c, settings.key, meter)? <= score);
            }
            for n in &best {
                assert!(
                    settings.key.contains(n.pitch),
                    "{choice:?}: {} out of the scale",
                    n.pitch
                );
                assert!(
                    (62..=74).contains(&n.pitch),
                    "{choice:?}: {} out of the register",
                    n.pitch
                );
            }
        }
        Ok(())
    }
}
