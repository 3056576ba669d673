//! `melodist generate`: write a melody to a standard MIDI file, with the same generator
//! and settings path the plugin uses (same seed and settings, same notes).

use crate::generator::loader::{self, ModelChoice};
use crate::generator::{GenSettings, Mode, PHRASE_BARS, PhraseRequest, render_phrase};
use crate::midi::{MelodyNote, write_melody};
use crate::model::tokenizer::Style;
use crate::music::{Key, Meter, PitchClass, Scale};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Number of bars.
    #[arg(long, default_value_t = 16)]
    pub bars: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tonic: C, C#, Db, D, ... B.
    #[arg(long, default_value = "C")]
    pub key: String,
    /// major, minor, dorian, mixolydian, harmonic-minor, major-pentatonic,
    /// minor-pentatonic, blues, chromatic.
    #[arg(long, default_value = "major")]
    pub scale: String,
    #[arg(long, default_value_t = 120.0)]
    pub tempo: f64,
    /// Time signature, e.g. 4/4, 3/4, 6/8.
    #[arg(long, default_value = "4/4")]
    pub meter: String,
    /// 0 = sparse .. 1 = busy.
    #[arg(long, default_value_t = 0.5)]
    pub density: f32,
    /// 0 = predictable .. 1 = adventurous.
    #[arg(long, default_value_t = 0.5)]
    pub variation: f32,
    /// Lowest MIDI note.
    #[arg(long, default_value_t = 60)]
    pub low: u8,
    /// Highest MIDI note.
    #[arg(long, default_value_t = 84)]
    pub high: u8,
    /// Note length as a fraction of its slot.
    #[arg(long, default_value_t = 0.9)]
    pub gate: f32,
    #[arg(long, default_value_t = 96)]
    pub velocity: u8,
    #[arg(long, default_value_t = 0.2)]
    pub humanize: f32,
    /// MIDI channel 1-16 for the notes.
    #[arg(long, default_value_t = 1)]
    pub channel: u8,
    /// Style tag for the neural model: any, reel, jig, slip jig, hornpipe, march, air,
    /// waltz, polka, chorale, dance.
    #[arg(long, default_value = "any")]
    pub style: String,
    /// `default`, `markov`, or a path to a model.
    #[arg(long, default_value = "default")]
    pub model: String,
    #[arg(long, default_value = "melody.mid")]
    pub out: PathBuf,
}

impl Args {
    pub fn settings(&self) -> Result<(GenSettings, Meter)> {
        let tonic =
            PitchClass::parse(&self.key).with_context(|| format!("unknown key '{}'", self.key))?;
        let scale =
            Scale::parse(&self.scale).with_context(|| format!("unknown scale '{}'", self.scale))?;
        let meter = Meter::parse(&self.meter)
            .with_context(|| format!("bad meter '{}' (use e.g. 4/4, 6/8)", self.meter))?;
        if !(1..=16).contains(&self.channel) {
            bail!("channel must be 1-16");
        }
        let settings = GenSettings {
            key: Key::new(tonic, scale),
            low: self.low.min(127),
            high: self.high.min(127),
            density: self.density.clamp(0.0, 1.0),
            variation: self.variation.clamp(0.0, 1.0),
            gate: self.gate.clamp(0.05, 1.0),
            velocity: self.velocity.clamp(1, 127),
            humanize: self.humanize.clamp(0.0, 1.0),
            seed: self.seed,
            mode: Mode::Generate,
            follow_input: false,
            style: Style::parse(&self.style)
                .with_context(|| format!("unknown style '{}'", self.style))?,
        };
        Ok((settings, meter))
    }
}

/// Generates `bars` bars as absolute-time notes (quarter notes from the start).
pub fn generate_notes(
    choice: &ModelChoice,
    settings: GenSettings,
    meter: Meter,
    bars: usize,
) -> (Vec<MelodyNote>, String, Option<String>) {
    let (mut generator, fallback) = loader::load(choice);
    let bar_len = meter.beats_per_bar();
    let mut notes = Vec::new();
    for phrase_index in 0..bars.div_ceil(PHRASE_BARS) {
        let request = PhraseRequest {
            settings,
            meter,
            phrase_index: phrase_index as i64,
            bars: PHRASE_BARS,
            context: &[],
        };
        for (i, bar) in render_phrase(generator.as_mut(), &request)
            .into_iter()
            .enumerate()
        {
            let bar_index = phrase_index * PHRASE_BARS + i;
            if bar_index >= bars {
                break;
            }
            notes.extend(bar.into_iter().map(|n| MelodyNote {
                start: bar_index as f64 * bar_len + n.start,
                duration: n.duration,
                pitch: n.pitch,
                velocity: n.velocity,
            }));
        }
    }
    (notes, generator.name().to_string(), fallback)
}

pub fn run(args: Args) -> Result<()> {
    if args.bars == 0 || args.bars > 10_000 {
        bail!("--bars must be 1..=10000");
    }
    let (settings, meter) = args.settings()?;
    let (notes, model, fallback) =
        generate_notes(&ModelChoice::parse(&args.model), settings, meter, args.bars);
    if let Some(why) = fallback {
        eprintln!("warning: {why}");
    }
    let title = format!("Melodist seed {} ({})", args.seed, settings.key);
    write_melody(
        &args.out,
        &title,
        &notes,
        args.tempo,
        meter,
        Some(settings.key),
        args.channel - 1,
    )?;
    println!(
        "wrote {} notes, {} bars of {} at {} BPM in {} ({model} model) to {}",
        notes.len(),
        args.bars,
        meter,
        args.tempo,
        settings.key,
        args.out.display()
    );
    Ok(())
}
