//! `melodist stats`: generate many phrases and compare them with a corpus: pitch-class
//! KL divergence, range / interval / inter-onset histograms, share of notes in the
//! conditioned scale, and the longest run copied verbatim from any corpus tune.

use super::form_measures::{Piece, measure, rows};
use super::generate::{chord_ticks, generate_with};
use super::ranged;
use crate::generator::hooks::{EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS};
use crate::generator::loader::EMBEDDED_NEURAL_GUARD;
use crate::generator::loader::{self, LoadedModel, ModelChoice};
use crate::generator::{GenSettings, Generator};
use crate::limits;
use crate::midi::MelodyNote;
use crate::model::copyguard::CopyGuard;
use crate::model::copyguard::{COPY_NOTES, melody_line};
use crate::model::grid::duration_token;
use crate::model::grid::strong_beat_ticks;
use crate::model::grid::{TPQ, bar_ticks};
use crate::model::morph::MorphPath;
use crate::model::tokenizer::{Style, melody_key};
use crate::model::train::load_corpus;
use crate::model::variation::{
    ChordFit, DecodeRules, Encoded, PhraseContext, VaeModel, prior_sample,
};
use crate::music::SeedRng;
use crate::music::chord::{Progression, transpose_mask};
use crate::music::{Key, Meter, PitchClass, Scale};
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// `default` (the shipped neural model), `markov` (the shipped Markov model, or the
    /// file given by --markov-file), or a neural model folder or Markov `.bin` file. A
    /// model that cannot be loaded is an error.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Bars per generated phrase, 1-10000.
    #[arg(long, default_value_t = 16, value_parser = ranged(limits::BARS))]
    pub bars: usize,
    /// Phrases to generate, 1-100000.
    #[arg(long, default_value_t = 100, value_parser = ranged(1..=100_000usize))]
    pub samples: usize,
    /// The corpus to compare with (and to search for copies).
    #[arg(long = "midi-dir", required = true, num_args = 1..)]
    pub midi_dirs: Vec<PathBuf>,
    /// Enforce the key by masking (neural only; the Markov baseline always does).
    #[arg(long)]
    pub scale_lock: bool,
    /// With `--model markov`: use this Markov file instead of the shipped model.
    #[arg(long)]
    pub markov_file: Option<PathBuf>,
    /// Style tag to condition the neural model on (`any`, `reel`, `jig`, `chorale`, ...);
    /// the corpus side of the form table keeps the tunes of that style.
    #[arg(long, default_value = "any")]
    pub style: String,
    /// Form setting, as the plugin's: 0 (free), 8, 16 or 32 bars per section.
    #[arg(long, default_value_t = 16)]
    pub form: u8,
    /// Also write each piece over a chord progression of its key (I–vi–IV–V and others
    /// in major, i–VI–III–VII and others in minor) and report how often notes on strong
    /// and weak beats are chord tones, with and without the chords.
    #[arg(long)]
    pub with_chords: bool,
    /// Chord fit for `--with-chords`, 0-1.
    #[arg(long, default_value_t = 0.6, value_parser = super::unit_interval)]
    pub chord_fit: f32,
    /// Where the measured pieces come from: `lstm` (the generator, as the plugin plays it),
    /// `vae-prior` (the melody VAE decoding codes drawn from its prior, 2 bars per code) or
    /// `vae-morph` (the VAE's morph between two generated pieces, at 1/8 .. 7/8 of the
    /// way, as the plugin's Morph plays it).
    #[arg(long, value_enum, default_value = "lstm")]
    pub source: Source,
    /// The VAE folder for the `vae-*` sources (default: the shipped one).
    #[arg(long)]
    pub vae: Option<PathBuf>,
}

/// The `--source` of the pieces `stats` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Lstm,
    VaePrior,
    VaeMorph,
}

/// `played` replaced by what the VAE writes for `source` (the LSTM's own piece for `Lstm`),
/// over `chords` (per tick; empty: none) at the settings' *Chord fit*. `other` writes a
/// second piece for the morph's far end.
#[allow(clippy::too_many_arguments)]
fn from_source(
    source: Source,
    vae: Option<(&VaeModel, &CopyGuard)>,
    scale_lock: bool,
    settings: GenSettings,
    meter: Meter,
    played: Vec<MelodyNote>,
    chords: &[u16],
    k: usize,
    other: impl FnOnce() -> Vec<MelodyNote>,
) -> Result<Vec<MelodyNote>> {
    let Some((vae, guard)) = vae.filter(|_| source != Source::Lstm) else {
        return Ok(played);
    };
    let context = PhraseContext {
        meter,
        key: settings.key,
        style: settings.style,
    };
    let (low, high) = settings.register();
    let rules = DecodeRules {
        low,
        high,
        scale_lock,
        chords: ChordFit::new(chords, settings.chord_fit, meter),
        ..DecodeRules::default()
    };
    if source == Source::VaePrior {
        let segments = vae.encode(&played, context)?.codes.len();
        let mut rng = SeedRng::derive(&[settings.seed, 0xfa, k as u64]);
        let codes = (0..segments)
            .map(|_| prior_sample(vae.fast.config.latent, &mut rng))
            .collect();
        // As the plugin decodes hooks: never 13 notes of a training tune.
        return vae.decode_original(
            &Encoded { codes, context },
            &rules,
            settings.seed,
            &[],
            guard,
        );
    }
    // Point 1..=7 of an 8-step morph path, as the plugin's Morph plays it.
    let other = other();
    let (a, b) = (vae.encode(&played, context)?, vae.encode(&other, context)?);
    let mut path = MorphPath::new(vae, a, b, played, other, 8, settings.seed);
    Ok(path.point(1 + k % 7, vae, &rules, guard)?.to_vec())
}

/// Progressions `--with-chords` uses, written in C major / A minor, one chord per bar.
const MAJOR_PROGRESSIONS: [&str; 3] = ["C Am F G", "C F G C", "C G Am F"];
const MINOR_PROGRESSIONS: [&str; 3] = ["Am F C G", "Am Dm E Am", "Am G F E"];

/// Progression number `k % 3` of `key`'s mode, moved to its tonic, per tick.
fn key_progression(key: Key, k: usize, meter: Meter, bars: usize) -> Vec<u16> {
    let (text, home) = if key.scale.is_minor() {
        (MINOR_PROGRESSIONS[k % 3], 9)
    } else {
        (MAJOR_PROGRESSIONS[k % 3], 0)
    };
    let progression = Progression::parse(text, meter.beats_per_bar()).expect("valid progression");
    let shift = key.tonic.semitone() + 12 - home;
    chord_ticks(&progression, meter, bars)
        .into_iter()
        .map(|m| transpose_mask(m, shift))
        .collect()
}

/// Piece `k`'s settings: keys round the circle of fifths, major and minor alternating, each
/// mode in 4/4, 6/8, 3/4 and 2/4, register 55–84, seed `k`, the other settings at their
/// defaults (also the "default settings" `melodist critic` samples a generator with).
pub(crate) fn piece_settings(k: usize, style: Style, form: u8) -> (GenSettings, Meter) {
    const METERS: [(u8, u8); 4] = [(4, 4), (6, 8), (3, 4), (2, 4)];
    let scale = if k.is_multiple_of(2) {
        Scale::Major
    } else {
        Scale::Minor
    };
    let settings = GenSettings {
        key: Key::new(PitchClass::from_index((k * 7 % 12) as u8), scale),
        low: 55,
        high: 84,
        seed: k as u64,
        style,
        form,
        ..Default::default()
    };
    // Every meter in both modes (k % 2 picks the mode).
    let (n, d) = METERS[(k / 2) % METERS.len()];
    (settings, Meter::new(n, d))
}

/// Chord-tone counts of notes on strong and on weak beats.
#[derive(Default)]
struct ChordTones {
    strong: (usize, usize),
    weak: (usize, usize),
}

impl ChordTones {
    fn add(&mut self, notes: &[MelodyNote], chords: &[u16], meter: Meter) {
        let strong_every = strong_beat_ticks(meter);
        for n in notes {
            let tick = (n.start * TPQ as f64).round() as u32;
            let tone = chords
                .get(tick as usize)
                .is_some_and(|c| c >> (n.pitch % 12) & 1 == 1) as usize;
            let bucket = if (tick % bar_ticks(meter)).is_multiple_of(strong_every) {
                &mut self.strong
            } else {
                &mut self.weak
            };
            *bucket = (bucket.0 + tone, bucket.1 + 1);
        }
    }

    fn strong(&self) -> f64 {
        self.strong.0 as f64 / self.strong.1.max(1) as f64
    }

    fn weak(&self) -> f64 {
        self.weak.0 as f64 / self.weak.1.max(1) as f64
    }
}

/// A melody as (pitch, inter-onset ticks) plus its key.
pub(crate) struct Line {
    pub(crate) key: Key,
    pub(crate) notes: Vec<(u8, u32)>,
}

/// Copy search unit: consecutive notes as (interval, duration token); transposition-proof.
const SEED_LEN: usize = 4;

pub fn run(args: Args) -> Result<()> {
    let choice = match (args.model.as_str(), &args.markov_file) {
        ("markov", Some(file)) => ModelChoice::Path(file.clone()),
        (_, Some(_)) => bail!("--markov-file goes with --model markov"),
        (name, None) => ModelChoice::parse(name),
    };
    // Loaded before the corpus is read, so a bad path fails at once.
    let model = loader::load_model(&choice)?;
    let neural = matches!(model, LoadedModel::Neural(_));
    let style = Style::parse(&args.style)
        .ok_or_else(|| anyhow::anyhow!("unknown style {:?}", args.style))?;
    let guard = CopyGuard::from_bytes(EMBEDDED_NEURAL_GUARD)?;
    let vae = match (args.source, &args.vae) {
        (Source::Lstm, _) => None,
        (_, Some(dir)) => Some(VaeModel::load_dir(dir)?),
        (_, None) => Some(VaeModel::load(EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS)?),
    };
    let (tunes, _) = load_corpus(&args.midi_dirs)?;
    let mut corpus_paths = Vec::new();
    let corpus: Vec<Line> = tunes
        .iter()
        .filter_map(|t| {
            let key = melody_key(&t.melody)?;
            let notes = melody_line(&t.melody.notes);
            corpus_paths.push(t.path.clone());
            Some(Line { key, notes })
        })
        .collect();

    let mut generator: Box<dyn Generator> = match model {
        LoadedModel::Neural(mut g) => {
            g.sampler.scale_lock = args.scale_lock;
            g
        }
        markov => markov.into_generator(),
    };
    let mut generated = Vec::new();
    let mut pieces = Vec::new();
    let (mut tones_with, mut tones_without) = (ChordTones::default(), ChordTones::default());
    for k in 0..args.samples {
        let (settings, meter) = piece_settings(k, style, args.form);
        let key = settings.key;
        // The same path as the plugin and `melodist generate`: form, continuity, cadences.
        let lstm = generate_with(generator.as_mut(), settings, meter, args.bars, &[]);
        let other = |g: &mut dyn Generator| {
            let seed = settings.seed + 50_000;
            generate_with(g, GenSettings { seed, ..settings }, meter, args.bars, &[])
        };
        let (source, vae) = (args.source, vae.as_ref().map(|v| (v, &guard)));
        let (g, lock) = (generator.as_mut(), args.scale_lock);
        let played = from_source(
            source,
            vae,
            lock,
            settings,
            meter,
            lstm.clone(),
            &[],
            k,
            || other(g),
        )?;
        pieces.push(Piece::new(key, meter, &played, 0.0, args.bars));
        generated.push(Line {
            key,
            notes: melody_line(&played),
        });
        if args.with_chords {
            // The same piece over a progression of its key, and the chord-tone shares of
            // both: with chords, and without (the chance level).
            let chords = key_progression(key, k, meter, args.bars);
            let with = GenSettings {
                chord_fit: args.chord_fit,
                ..settings
            };
            let over = match vae {
                // The same codes decoded over the chords.
                Some(_) => {
                    let g = generator.as_mut();
                    let (lstm, chords) = (lstm.clone(), &chords);
                    from_source(source, vae, lock, with, meter, lstm, chords, k, || other(g))?
                }
                None => generate_with(generator.as_mut(), with, meter, args.bars, &chords),
            };
            tones_with.add(&over, &chords, meter);
            tones_without.add(&played, &chords, meter);
        }
    }
    if args.with_chords {
        println!(
            "chord tones (progressions of each piece's key, chord fit {}): strong beats {:.0}% / weak beats {:.0}% with chords; {:.0}% / {:.0}% of the same notes written without them",
            args.chord_fit,
            100.0 * tones_with.strong(),
            100.0 * tones_with.weak(),
            100.0 * tones_without.strong(),
            100.0 * tones_without.weak()
        );
    }
    let corpus_pieces: Vec<Piece> = tunes
        .iter()
        .filter(|t| t.style == style || style == Style::Any)
        .filter_map(|t| {
            let key = melody_key(&t.melody)?;
            let first = t.melody.notes.first()?.start;
            let bar = t.melody.meter.beats_per_bar();
            let from = (first / bar - 1e-6).ceil().max(0.0) * bar;
            let last = t.melody.notes.last()?.start;
            (last >= from + (args.bars as f64 - 1.0) * bar)
                .then(|| Piece::new(key, t.melody.meter, &t.melody.notes, from, args.bars))
        })
        .collect();
    let (g, c) = (measure(&pieces), measure(&corpus_pieces));
    println!(
        "form, {} bars per piece: generated ({} pieces, style {}, form {}) | corpus ({} tunes, first {} full bars)",
        args.bars,
        g.pieces,
        style.name(),
        args.form,
        c.pieces,
        args.bars
    );
    for ((name, gv), (_, cv)) in rows(&g).into_iter().zip(rows(&c)) {
        println!("  {name:<48} {gv:>6} | {cv:>6}");
    }

    let total: usize = generated.iter().map(|l| l.notes.len()).sum();
    let share = |lines: &[Line], minor: bool| {
        let notes: Vec<bool> = lines
            .iter()
            .filter(|l| l.key.scale.is_minor() == minor)
            .flat_map(|l| l.notes.iter().map(|n| l.key.contains(n.0)))
            .collect();
        100.0 * notes.iter().filter(|&&x| x).count() as f64 / notes.len().max(1) as f64
    };
    println!(
        "in-scale share, major / minor keys: generated {:.1}% / {:.1}%, corpus (its own key signatures) {:.1}% / {:.1}%",
        share(&generated, false),
        share(&generated, true),
        share(&corpus, false),
        share(&corpus, true)
    );
    let in_scale = generated
        .iter()
        .flat_map(|l| l.notes.iter().map(move |n| l.key.contains(n.0)))
        .filter(|&x| x)
        .count();
    let name = match args.source {
        Source::Lstm => args.model.clone(),
        source => format!("{source:?} (decoding temperature 0.3)"),
    };
    println!(
        "{}: {} pieces of {} bars, {} notes ({:.1} per bar)",
        name,
        args.samples,
        args.bars,
        total,
        total as f64 / (args.samples * args.bars) as f64
    );
    println!(
        "in conditioned scale: {:.2}% (scale lock {})",
        100.0 * in_scale as f64 / total.max(1) as f64,
        if !neural {
            "always on for Markov"
        } else if args.scale_lock {
            "on"
        } else {
            "off"
        }
    );
    let (pc_c, pc_g) = (
        histogram(&corpus, 12, pitch_class),
        histogram(&generated, 12, pitch_class),
    );
    println!(
        "pitch-class KL(corpus || generated): {:.3} bits",
        kl_bits(&pc_c, &pc_g)
    );
    for (name, bins, f) in [
        (
            "interval (-12..12)",
            25,
            interval as fn(&Line, usize) -> Option<usize>,
        ),
        ("inter-onset interval", 11, ioi),
        ("8-bar range (3-semitone bins)", 12, range),
    ] {
        let (c, g) = (histogram(&corpus, bins, f), histogram(&generated, bins, f));
        let overlap: f64 = c.iter().zip(&g).map(|(a, b)| a.min(*b)).sum();
        println!("{name} histogram overlap: {:.1}%", overlap * 100.0);
        println!("  corpus    {}", show(&c));
        println!("  generated {}", show(&g));
    }
    let index = CopyIndex::new(&corpus);
    let copies: Vec<(usize, Option<usize>)> =
        generated.iter().map(|g| index.longest_copy(g)).collect();
    let lengths: Vec<usize> = copies.iter().map(|c| c.0).collect();
    println!(
        "longest verbatim copy over whole pieces (notes, intervals+rhythm): max {}, median {}, pieces with >= {COPY_NOTES}: {}",
        lengths.iter().max().unwrap_or(&0),
        median(lengths.clone()),
        lengths.iter().filter(|&&c| c >= COPY_NOTES).count()
    );
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "  distribution: p10 {}, p25 {}, p50 {}, p75 {}, p90 {}, max {}",
        at(0.1),
        at(0.25),
        at(0.5),
        at(0.75),
        at(0.9),
        at(1.0)
    );
    for (k, (len, source)) in copies.iter().enumerate() {
        if let (true, Some(t)) = (*len >= COPY_NOTES, source) {
            println!(
                "  piece {k} shares {len} notes with {}",
                corpus_paths[*t].display()
            );
        }
    }
    Ok(())
}

fn pitch_class(l: &Line, i: usize) -> Option<usize> {
    Some(l.key.relative_pc(l.notes[i].0) as usize)
}

fn interval(l: &Line, i: usize) -> Option<usize> {
    let prev = l.notes.get(i.checked_sub(1)?)?.0 as i32;
    Some(((l.notes[i].0 as i32 - prev).clamp(-12, 12) + 12) as usize)
}

fn ioi(l: &Line, i: usize) -> Option<usize> {
    Some(duration_token(l.notes[i].1) as usize)
}

/// Pitch range of each 8-bar-sized chunk (counted once per chunk, at its first note).
fn range(l: &Line, i: usize) -> Option<usize> {
    const CHUNK: usize = 32;
    if !i.is_multiple_of(CHUNK) || l.notes.len() < i + 4 {
        return None;
    }
    let chunk = &l.notes[i..(i + CHUNK).min(l.notes.len())];
    let (lo, hi) = chunk
        .iter()
        .fold((127, 0), |(lo, hi), n| (n.0.min(lo), n.0.max(hi)));
    Some(((hi - lo) as usize / 3).min(11))
}

/// Normalised histogram of `f` over every note of every line.
fn histogram(lines: &[Line], bins: usize, f: fn(&Line, usize) -> Option<usize>) -> Vec<f64> {
    let mut h = vec![0.0; bins];
    for l in lines {
        for i in 0..l.notes.len() {
            if let Some(b) = f(l, i) {
                h[b.min(bins - 1)] += 1.0;
            }
        }
    }
    let total: f64 = h.iter().sum::<f64>().max(1.0);
    h.iter().map(|x| x / total).collect()
}

fn kl_bits(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b.max(1e-4)).log2())
        .sum()
}

fn show(h: &[f64]) -> String {
    h.iter()
        .map(|x| format!("{:>3.0}", x * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// (interval, duration token) steps of a line: equal runs mean a verbatim (transposed) copy.
fn steps(l: &Line) -> Vec<(i32, u8)> {
    l.notes
        .windows(2)
        .map(|w| (w[1].0 as i32 - w[0].0 as i32, duration_token(w[0].1)))
        .collect()
}

type Steps = Vec<(i32, u8)>;

/// Every corpus tune's steps, indexed by their `SEED_LEN`-step windows.
pub(crate) struct CopyIndex {
    tunes: Vec<Steps>,
    seeds: HashMap<Steps, Vec<(usize, usize)>>,
}

impl CopyIndex {
    pub(crate) fn new(corpus: &[Line]) -> Self {
        let tunes: Vec<Steps> = corpus.iter().map(steps).collect();
        let mut seeds: HashMap<Steps, Vec<(usize, usize)>> = HashMap::new();
        for (t, s) in tunes.iter().enumerate() {
            for (i, w) in s.windows(SEED_LEN).enumerate() {
                seeds.entry(w.to_vec()).or_default().push((t, i));
            }
        }
        Self { tunes, seeds }
    }

    /// Longest run of consecutive notes of `g` that also occurs in one corpus tune, and
    /// that tune's index.
    pub(crate) fn longest_copy(&self, g: &Line) -> (usize, Option<usize>) {
        let s = steps(g);
        let (mut best, mut source) = (0, None);
        for i in 0..s.len().saturating_sub(SEED_LEN - 1) {
            for &(t, j) in self
                .seeds
                .get(&s[i..i + SEED_LEN])
                .map_or(&[][..], Vec::as_slice)
            {
                let run = s[i..]
                    .iter()
                    .zip(&self.tunes[t][j..])
                    .take_while(|(a, b)| a == b)
                    .count();
                if run > best {
                    (best, source) = (run, Some(t));
                }
            }
        }
        // `run` steps join `run + 1` notes; with no shared seed, report at most SEED_LEN.
        if best == 0 {
            (SEED_LEN.min(g.notes.len()), None)
        } else {
            (best + 1, source)
        }
    }
}
