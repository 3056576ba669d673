//! `melodist vary` and `melodist morph`: variations of a hook and morphs between two hooks
//! with the melody VAE (`model::variation`), written as MIDI files a producer can audition.

use super::{ranged, unit_interval, widen};
use crate::limits;
use crate::midi::{MelodyNote, read_melody, write_melody};
use crate::model::morph::{monotonicity, morph_phrases};
use crate::model::tokenizer::{Style, melody_key};
use crate::model::variation::{DecodeRules, Encoded, PhraseContext, VaeModel, vary};
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
    rules: DecodeRules<'static>,
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
    let phrases = morph_phrases(&setup.model, &a, &b, args.steps, &setup.rules, d.seed)?;
    for (i, notes) in phrases.iter().enumerate() {
        let path = args.out.join(format!("morph_{:02}.mid", i + 1));
        d.write(&path, notes, a.context)?;
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
            "edit distance to A by step: {:?}\nedit distance to B by step: {:?}\nsteps that move away from A and towards B (or stay): {}/{} ({:.0}%), of them held (same notes): {}",
            m.to_a,
            m.to_b,
            m.monotone_steps,
            m.steps,
            100.0 * m.share(),
            m.held_steps
        );
    }
    Ok(())
}
