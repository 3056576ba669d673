//! `melodist vary` and `melodist morph`: variations of a hook and morphs between two hooks
//! with the melody VAE (`model::variation`), written as MIDI files a producer can audition.

use super::{ranged, unit_interval, widen};
use crate::limits;
use crate::midi::{MelodyNote, read_melody, write_melody};
use crate::model::tokenizer::{Style, melody_key};
use crate::model::variation::{DecodeRules, Encoded, PhraseContext, VaeModel, morph, vary};
use crate::music::{Key, PitchClass, Scale};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The VAE and decoding options both commands share.
#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The VAE model folder (config.json, model.safetensors).
    #[arg(long, default_value = "models/vae")]
    pub model: PathBuf,
    /// Key tonic (C, C#, Db, ... B); default: the (first) file's key signature, else the
    /// key detected from its notes.
    #[arg(long)]
    pub key: Option<String>,
    /// Scale with --key: major, minor, dorian, ...
    #[arg(long, default_value = "major")]
    pub scale: String,
    /// Write any pitch, not only the key's.
    #[arg(long)]
    pub no_scale_lock: bool,
    /// Lowest MIDI note, 0-127.
    #[arg(long, default_value_t = 48, value_parser = ranged(limits::MIDI_NOTE))]
    pub low: u8,
    /// Highest MIDI note, 0-127.
    #[arg(long, default_value_t = 96, value_parser = ranged(limits::MIDI_NOTE))]
    pub high: u8,
    /// Decoding temperature, 0-1 (0 = the decoder's most likely notes).
    #[arg(long, default_value_t = 0.3, value_parser = unit_interval)]
    pub temperature: f32,
    /// Style tag: any, reel, jig, slip jig, hornpipe, march, air, chorale, dance.
    #[arg(long, default_value = "any")]
    pub style: String,
    /// 0-99999: the same seed and settings give the same notes.
    #[arg(long, default_value_t = 1, value_parser = ranged(limits::SEED))]
    pub seed: u64,
    /// Use only the first N bars of each file (from its first note's bar), 1-10000;
    /// default: the whole file.
    #[arg(long, value_parser = ranged(limits::BARS))]
    pub bars: Option<usize>,
    /// Tempo of the files written, BPM 20-300.
    #[arg(long, default_value_t = 120.0, value_parser = ranged(widen(limits::TEMPO)))]
    pub tempo: f64,
}

#[derive(clap::Args)]
pub struct VaryArgs {
    /// The hook: a MIDI file (its highest voice), starting at its first note's bar.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Variations to write, 1-999.
    #[arg(long, default_value_t = 8, value_parser = ranged(1..=999usize))]
    pub count: usize,
    /// How far from the hook, 0-1 (0 = the hook as the model hears it, 1 = a new melody).
    #[arg(long, default_value_t = 0.3, value_parser = unit_interval)]
    pub distance: f32,
    /// Output folder for variation_01.mid, variation_02.mid, ...
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

#[derive(clap::Args)]
pub struct MorphArgs {
    /// The hook the morph starts from (its meter and key are kept).
    #[arg(long)]
    pub a: PathBuf,
    /// The hook it ends on.
    #[arg(long)]
    pub b: PathBuf,
    /// Phrases written from A to B, both ends included, 2-999.
    #[arg(long, default_value_t = 8, value_parser = ranged(2..=999usize))]
    pub steps: usize,
    /// Output folder for morph_01.mid (A) ... morph_NN.mid (B).
    #[arg(long)]
    pub out: PathBuf,
    /// Also report whether each step moves away from A and towards B (note edit distance).
    #[arg(long)]
    pub measure: bool,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// A loaded model with the context and rules the options ask for.
struct Setup {
    model: VaeModel,
    rules: DecodeRules,
}

impl DecodeArgs {
    fn setup(&self) -> Result<Setup> {
        let model = VaeModel::load_dir(&self.model)?;
        let rules = DecodeRules {
            low: self.low,
            high: self.high,
            scale_lock: !self.no_scale_lock,
            temperature: self.temperature,
            ..DecodeRules::default()
        };
        Ok(Setup { model, rules })
    }

    /// Reads a hook and encodes it in its own context (or the one the options give).
    fn read_hook(&self, setup: &Setup, path: &Path) -> Result<Encoded> {
        let melody = read_melody(path)?;
        if melody.notes.is_empty() {
            bail!("{} has no notes", path.display());
        }
        let key = match &self.key {
            Some(tonic) => Key::new(
                PitchClass::parse(tonic).with_context(|| format!("unknown key '{tonic}'"))?,
                Scale::parse(&self.scale)
                    .with_context(|| format!("unknown scale '{}'", self.scale))?,
            ),
            None => melody_key(&melody).context("cannot tell the hook's key; give --key")?,
        };
        let style =
            Style::parse(&self.style).with_context(|| format!("unknown style '{}'", self.style))?;
        let context = PhraseContext {
            meter: melody.meter,
            key,
            style,
        };
        let bar = melody.meter.beats_per_bar();
        let bars = self.bars.map_or(f64::INFINITY, |n| n as f64 * bar);
        let notes: Vec<MelodyNote> = (from_first_bar(&melody.notes, bar).into_iter())
            .filter(|n| n.start < bars - 1e-6)
            .collect();
        setup.model.encode(&notes, context)
    }

    fn write(&self, path: &Path, notes: &[MelodyNote], ctx: PhraseContext) -> Result<()> {
        let title = path
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into());
        write_melody(path, &title, notes, self.tempo, ctx.meter, Some(ctx.key), 0)
    }
}

/// The notes moved so that the bar of the first one starts at 0.
pub fn from_first_bar(notes: &[MelodyNote], bar: f64) -> Vec<MelodyNote> {
    let first = notes.iter().map(|n| n.start).fold(f64::INFINITY, f64::min);
    let shift = (first / bar + 1e-6).floor() * bar;
    notes
        .iter()
        .map(|n| MelodyNote {
            start: n.start - shift,
            ..*n
        })
        .collect()
}

pub fn run_vary(args: VaryArgs) -> Result<()> {
    let d = &args.decode;
    let setup = d.setup()?;
    let started = Instant::now();
    let hook = d.read_hook(&setup, &args.input)?;
    let encode_ms = started.elapsed().as_secs_f64() * 1e3 / hook.codes.len().max(1) as f64;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut times = Vec::new();
    for i in 0..args.count {
        let seed = d.seed.wrapping_mul(1000).wrapping_add(i as u64);
        let started = Instant::now();
        let notes = setup
            .model
            .decode(&vary(&hook, args.distance, seed), &setup.rules, seed)?;
        times.push(started.elapsed().as_secs_f64() * 1e3 / hook.codes.len().max(1) as f64);
        let path = args.out.join(format!("variation_{:02}.mid", i + 1));
        d.write(&path, &notes, hook.context)?;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "wrote {} variations of {} ({} segments of {} bars, distance {}, {}) to {}; per segment: encoding (with reading the file) {:.2} ms, decoding {:.2} ms (median)",
        args.count,
        args.input.display(),
        hook.codes.len(),
        setup.model.vae.config.bars,
        args.distance,
        hook.context.key,
        args.out.display(),
        encode_ms,
        times[times.len() / 2]
    );
    Ok(())
}

pub fn run_morph(args: MorphArgs) -> Result<()> {
    let d = &args.decode;
    let setup = d.setup()?;
    let a = d.read_hook(&setup, &args.a)?;
    let b = d.read_hook(&setup, &args.b)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut phrases = Vec::new();
    for i in 0..args.steps {
        let t = i as f32 / (args.steps - 1) as f32;
        let notes = setup
            .model
            .decode(&morph(&a, &b, t), &setup.rules, d.seed)?;
        let path = args.out.join(format!("morph_{:02}.mid", i + 1));
        d.write(&path, &notes, a.context)?;
        phrases.push(notes);
    }
    println!(
        "wrote {} phrases from {} to {} to {}",
        args.steps,
        args.a.display(),
        args.b.display(),
        args.out.display()
    );
    if args.measure {
        let m = monotonicity(&phrases);
        println!(
            "edit distance to A by step: {:?}\nedit distance to B by step: {:?}\nsteps that move away from A and towards B (or stay): {}/{} ({:.0}%)",
            m.to_a,
            m.to_b,
            m.monotone_steps,
            m.steps,
            100.0 * m.share()
        );
    }
    Ok(())
}

/// How a morph's phrases move between its two ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Monotonicity {
    /// Note edit distance of each phrase to the first (A) and to the last (B).
    pub to_a: Vec<usize>,
    pub to_b: Vec<usize>,
    /// Consecutive pairs where the distance to A does not fall and to B does not rise.
    pub monotone_steps: usize,
    pub steps: usize,
}

impl Monotonicity {
    pub fn share(&self) -> f64 {
        self.monotone_steps as f64 / self.steps.max(1) as f64
    }
}

/// Measures a morph's phrases (the decoded A first, the decoded B last).
pub fn monotonicity(phrases: &[Vec<MelodyNote>]) -> Monotonicity {
    let (first, last) = (&phrases[0], &phrases[phrases.len() - 1]);
    let to_a: Vec<usize> = phrases
        .iter()
        .map(|p| note_edit_distance(p, first))
        .collect();
    let to_b: Vec<usize> = phrases
        .iter()
        .map(|p| note_edit_distance(p, last))
        .collect();
    let monotone_steps = (1..phrases.len())
        .filter(|&i| to_a[i] >= to_a[i - 1] && to_b[i] <= to_b[i - 1])
        .count();
    Monotonicity {
        to_a,
        to_b,
        monotone_steps,
        steps: phrases.len().saturating_sub(1),
    }
}

/// Levenshtein distance between two melodies as sequences of notes (onset on the grid and
/// pitch must both match for two notes to be the same).
pub fn note_edit_distance(a: &[MelodyNote], b: &[MelodyNote]) -> usize {
    let key = |n: &MelodyNote| ((n.start * 12.0).round() as i64, n.pitch);
    let (a, b): (Vec<_>, Vec<_>) = (a.iter().map(key).collect(), b.iter().map(key).collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diagonal + (x != y) as usize)
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(notes: &[(f64, u8)]) -> Vec<MelodyNote> {
        (notes.iter())
            .map(|&(start, pitch)| MelodyNote {
                start,
                duration: 0.5,
                pitch,
                velocity: 80,
            })
            .collect()
    }

    #[test]
    fn note_edit_distance_counts_changed_inserted_and_removed_notes() {
        let a = line(&[(0.0, 60), (0.5, 62), (1.0, 64)]);
        assert_eq!(note_edit_distance(&a, &a), 0);
        assert_eq!(
            note_edit_distance(&a, &line(&[(0.0, 60), (0.5, 63), (1.0, 64)])),
            1
        );
        assert_eq!(note_edit_distance(&a, &line(&[(0.0, 60), (1.0, 64)])), 1);
        // The same pitch a sixteenth later is another note.
        assert_eq!(
            note_edit_distance(&a, &line(&[(0.0, 60), (0.75, 62), (1.0, 64)])),
            1
        );
        assert_eq!(note_edit_distance(&a, &[]), 3);
    }

    #[test]
    fn monotonicity_counts_steps_that_leave_a_and_approach_b() {
        let a = line(&[(0.0, 60), (0.5, 62), (1.0, 64)]);
        let mid = line(&[(0.0, 60), (0.5, 65), (1.0, 64)]);
        let b = line(&[(0.0, 67), (0.5, 65), (1.0, 64)]);
        let m = monotonicity(&[a.clone(), mid.clone(), b.clone()]);
        assert_eq!(
            (m.to_a.clone(), m.to_b.clone()),
            (vec![0, 1, 2], vec![2, 1, 0])
        );
        assert_eq!((m.monotone_steps, m.steps), (2, 2));
        // Going back to A halfway breaks one step.
        let m = monotonicity(&[a.clone(), mid, a.clone(), b]);
        assert_eq!((m.monotone_steps, m.steps), (2, 3));
        assert!((m.share() - 2.0 / 3.0).abs() < 1e-9);
    }
}
