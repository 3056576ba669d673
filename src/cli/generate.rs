//! `melodist generate`: write a melody to a standard MIDI file, with the same generator
//! and settings path the plugin uses (same seed and settings, same notes).

use super::vary::from_first_bar;
use super::{ranged, unit_interval, widen};
use crate::generator::form::{FORM_LENGTHS, FormPlayer, SongChords};
use crate::generator::hooks::{Hook, HookBank, Slot, Variations, morph_position};
use crate::generator::loader::{self, ModelChoice};
use crate::generator::looping::{LOOP_LENGTHS, LoopPlayer};
use crate::generator::{GenSettings, Generator, Mode};
use crate::limits;
use crate::midi::{
    MelodyNote, read_all_notes, read_melody, write_melody, write_melody_with_chords,
};
use crate::model::grid::{TPQ, bar_ticks};
use crate::model::tokenizer::Style;
use crate::music::chord::{DEFAULT_MIN_CHORD_BEATS, Progression};
use crate::music::{Key, Meter, PitchClass, Scale};
use crate::serve::api::{GenerateRequest, GenerateResponse};
use crate::serve::client::ServerClient;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Number of bars, 1-10000.
    #[arg(long, default_value_t = 16, value_parser = ranged(limits::BARS))]
    pub bars: usize,
    /// 0-99999, as the plugin's Seed: the same seed and settings give the same notes.
    #[arg(long, default_value_t = 1, value_parser = ranged(limits::SEED))]
    pub seed: u64,
    /// Tonic: C, C#, Db, D, ... B.
    #[arg(long, default_value = "C")]
    pub key: String,
    /// major, minor, dorian, mixolydian, harmonic-minor, major-pentatonic,
    /// minor-pentatonic, blues, chromatic.
    #[arg(long, default_value = "major")]
    pub scale: String,
    /// Tempo in BPM, 20-300.
    #[arg(long, default_value_t = 120.0, value_parser = ranged(widen(limits::TEMPO)))]
    pub tempo: f64,
    /// Time signature, e.g. 4/4, 3/4, 6/8.
    #[arg(long, default_value = "4/4")]
    pub meter: String,
    /// 0 = sparse .. 1 = busy.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    pub density: f32,
    /// 0 = predictable .. 1 = adventurous.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    pub variation: f32,
    /// Lowest MIDI note, 0-127 (a --low above --high is swapped).
    #[arg(long, default_value_t = 60, value_parser = ranged(limits::MIDI_NOTE))]
    pub low: u8,
    /// Highest MIDI note, 0-127.
    #[arg(long, default_value_t = 84, value_parser = ranged(limits::MIDI_NOTE))]
    pub high: u8,
    /// Note length as a fraction of its slot, 0.05-1.
    #[arg(long, default_value_t = 0.9, value_parser = ranged(limits::GATE))]
    pub gate: f32,
    /// Base MIDI velocity, 1-127.
    #[arg(long, default_value_t = 96, value_parser = ranged(limits::VELOCITY))]
    pub velocity: u8,
    /// Random velocity spread, 0-1.
    #[arg(long, default_value_t = 0.2, value_parser = unit_interval)]
    pub humanize: f32,
    /// MIDI channel 1-16 for the notes.
    #[arg(long, default_value_t = 1, value_parser = ranged(limits::CHANNEL))]
    pub channel: u8,
    /// Style tag for the neural model: any, reel, jig, slip jig, hornpipe, march, air,
    /// waltz, polka, chorale, dance.
    #[arg(long, default_value = "any")]
    pub style: String,
    /// Loop mode: repeat a hook of this many bars (0 = off, 1, 2, 4 or 8), as the plugin's
    /// Loop length.
    #[arg(long, default_value_t = 0, value_parser = loop_length)]
    pub loop_bars: u8,
    /// How much each loop repeat changes, 0-1 (0 = exact repeats).
    #[arg(long, default_value_t = 0.0, value_parser = unit_interval)]
    pub evolve: f32,
    /// Loop mode: where the hook sits between hook A (0) and hook B (1), as the plugin's
    /// Morph; between them the VAE's interpolation.
    #[arg(long, default_value_t = 0.0, value_parser = unit_interval)]
    pub morph: f32,
    /// Loop mode: times Vary is pressed, 0-999 (each a variation of the one before).
    #[arg(long, default_value_t = 0, value_parser = ranged(0..=999u16))]
    pub vary: u16,
    /// Loop mode: hook A from a MIDI file (its top line) instead of the seed's hook.
    #[arg(long)]
    pub hook_a: Option<PathBuf>,
    /// Loop mode: hook B from a MIDI file instead of a new idea's hook.
    #[arg(long)]
    pub hook_b: Option<PathBuf>,
    /// Form plan, as the plugin's Form: sections of 8, 16 or 32 bars whose phrases answer,
    /// repeat and vary each other (0 = free: new phrases that continue each other).
    #[arg(long, default_value_t = 16, value_parser = form_length)]
    pub form: u8,
    /// Chords under the melody, looped: one per bar ("Am F C G") or with beats
    /// ("Am:2 F:2 C G"); N.C. for no chord.
    #[arg(long)]
    pub chords: Option<String>,
    /// Chords under the melody read from a MIDI file (a chord track or a piano part; a
    /// chord at every change of the notes held), looped.
    #[arg(long, conflicts_with = "chords")]
    pub chords_midi: Option<PathBuf>,
    /// With --chords or --chords-midi: also write the chords, on a second track (and the
    /// next MIDI channel), so the file plays back as a sketch.
    #[arg(long)]
    pub write_chords: bool,
    /// How strongly notes sit on the chords, 0-1 (0 = ignore them).
    #[arg(long, default_value_t = 0.6, value_parser = unit_interval)]
    pub chord_fit: f32,
    /// `default` (the shipped neural model), `markov` (the shipped Markov model), or a
    /// path to a model: a neural model folder or a Markov `.bin` file. A model that cannot
    /// be loaded is an error.
    #[arg(long, default_value = "default")]
    pub model: String,
    #[arg(long, default_value = "melody.mid")]
    pub out: PathBuf,
    /// Ask a Melodist server for the melody (http://host:port; token from $MELODIST_TOKEN).
    /// If it cannot answer in time, the melody is written here instead, and you are told why.
    #[arg(long)]
    pub server: Option<String>,
    /// Seconds to wait for --server before writing the melody here, 0.1-600.
    #[arg(long, default_value_t = 10.0, value_parser = ranged(0.1..=600.0f64))]
    pub server_timeout: f64,
}

impl Args {
    pub fn settings(&self) -> Result<(GenSettings, Meter)> {
        let tonic =
            PitchClass::parse(&self.key).with_context(|| format!("unknown key '{}'", self.key))?;
        let scale =
            Scale::parse(&self.scale).with_context(|| format!("unknown scale '{}'", self.scale))?;
        let meter = Meter::parse(&self.meter)
            .with_context(|| format!("bad meter '{}' (use e.g. 4/4, 6/8)", self.meter))?;
        // The ranges are checked when the arguments are parsed; a crossed --low / --high is
        // swapped by `GenSettings::register`, as in the plugin.
        let settings = GenSettings {
            key: Key::new(tonic, scale),
            low: self.low,
            high: self.high,
            density: self.density,
            variation: self.variation,
            gate: self.gate,
            velocity: self.velocity,
            humanize: self.humanize,
            seed: self.seed,
            mode: Mode::Generate,
            follow_input: false,
            style: Style::parse(&self.style)
                .with_context(|| format!("unknown style '{}'", self.style))?,
            loop_bars: self.loop_bars,
            evolve: self.evolve,
            form: self.form,
            chord_fit: self.chord_fit,
            morph: morph_position(self.morph),
            vary_step: self.vary,
            hooks_version: 0,
        };
        Ok((settings, meter))
    }
}

/// Generates `bars` bars as absolute-time notes (quarter notes from the start) with the
/// model the plugin would load for `choice` (falling back as it does). Also returns the
/// model's name and the reason for a fallback, if any.
pub fn generate_notes(
    choice: &ModelChoice,
    settings: GenSettings,
    meter: Meter,
    bars: usize,
) -> (Vec<MelodyNote>, String, Option<String>) {
    let (mut generator, fallback) = loader::load(choice);
    let notes = generate_with(generator.as_mut(), settings, meter, bars, &[]);
    (notes, generator.name().to_string(), fallback)
}

/// Generates `bars` bars as absolute-time notes (quarter notes from the start).
pub fn generate_with(
    generator: &mut dyn Generator,
    settings: GenSettings,
    meter: Meter,
    bars: usize,
    chords: &[u16],
) -> Vec<MelodyNote> {
    let mut looper = LoopPlayer::default();
    if settings.morph > 0.0 || settings.vary_step > 0 {
        looper = LoopPlayer::new(Variations::load(), HookBank::default());
    }
    generate_looped(generator, settings, meter, bars, chords, &mut looper)
}

/// [`generate_with`] with the loop's hooks and VAE given (`--hook-a`, `--hook-b`).
pub fn generate_looped(
    generator: &mut dyn Generator,
    settings: GenSettings,
    meter: Meter,
    bars: usize,
    chords: &[u16],
    looper: &mut LoopPlayer,
) -> Vec<MelodyNote> {
    let bar_len = meter.beats_per_bar();
    let mut notes = Vec::new();
    let mut push = |bar_index: usize, bar: Vec<crate::music::BeatNote>| {
        notes.extend(bar.into_iter().map(|n| MelodyNote {
            start: bar_index as f64 * bar_len + n.start,
            duration: n.duration,
            pitch: n.pitch,
            velocity: n.velocity,
        }))
    };
    let mut form = FormPlayer::default();
    for bar_index in 0..bars {
        let b = bar_index as i64;
        let bar = if settings.loop_bars > 0 {
            looper.bar(generator, settings, meter, b, &SongChords(chords))
        } else {
            form.bar(generator, settings, meter, b, &[], &SongChords(chords), 0)
        };
        push(bar_index, bar);
    }
    notes
}

/// `--form`: one of the plugin's form lengths.
fn form_length(text: &str) -> Result<u8, String> {
    text.parse::<u8>()
        .ok()
        .filter(|n| FORM_LENGTHS.contains(n))
        .ok_or_else(|| format!("form must be 0 (free), 8, 16 or 32 bars, not '{text}'"))
}

/// `--loop-bars`: one of the plugin's loop lengths.
fn loop_length(text: &str) -> Result<u8, String> {
    text.parse::<u8>()
        .ok()
        .filter(|n| LOOP_LENGTHS.contains(n))
        .ok_or_else(|| "must be 0 (off), 1, 2, 4 or 8".to_string())
}

pub fn run(args: Args) -> Result<()> {
    let (settings, meter) = args.settings()?;
    let progression = match (&args.chords, &args.chords_midi) {
        (Some(text), _) => Some(
            Progression::parse(text, meter.beats_per_bar())
                .with_context(|| format!("bad --chords {text:?}"))?,
        ),
        (None, Some(path)) => {
            let notes: Vec<(f64, f64, u8)> = (read_all_notes(path)?.iter())
                .map(|n| (n.start, n.duration, n.pitch))
                .collect();
            let progression = Progression::from_midi_notes(&notes, DEFAULT_MIN_CHORD_BEATS);
            if progression.is_empty() {
                bail!(
                    "{} holds no chords (no two or more notes sound together)",
                    path.display()
                );
            }
            Some(progression)
        }
        (None, None) => None,
    };
    let chords = progression.map_or(Vec::new(), |p| chord_ticks(&p, meter, args.bars));
    let (notes, model) = match args.server.as_deref() {
        Some(url) => match from_server(&args, url)? {
            Some(found) => found,
            None => local_notes(&args, settings, meter, &chords)?,
        },
        None => local_notes(&args, settings, meter, &chords)?,
    };
    let title = format!("Melodist seed {} ({})", args.seed, settings.key);
    let channel = args.channel.saturating_sub(1);
    if args.write_chords && !chords.is_empty() {
        let chord_notes = chord_notes(&chords);
        write_melody_with_chords(
            &args.out,
            &title,
            &notes,
            &chord_notes,
            args.tempo,
            meter,
            Some(settings.key),
            channel,
        )?;
    } else {
        write_melody(
            &args.out,
            &title,
            &notes,
            args.tempo,
            meter,
            Some(settings.key),
            channel,
        )?;
    }
    println!(
        "wrote {} notes, {} bars of {} at {} BPM in {} ({model}) to {}",
        notes.len(),
        args.bars,
        meter,
        args.tempo,
        settings.key,
        args.out.display()
    );
    Ok(())
}

/// The melody from `--server`, with the model that wrote it; `None` (having said why)
/// when the server cannot give it, so that the caller writes it here.
fn from_server(args: &Args, url: &str) -> Result<Option<(Vec<MelodyNote>, String)>> {
    let client =
        ServerClient::new(url, Duration::from_secs_f64(args.server_timeout)).context("--server")?;
    let request = match server_request(args) {
        Ok(request) => request,
        Err(local_only) => {
            eprintln!("melodist: {local_only} only here, so the melody is written here");
            return Ok(None);
        }
    };
    match client.post::<_, GenerateResponse>("/v1/generate", &request) {
        Ok(answer) => {
            let notes = (answer.notes.iter())
                .map(|n| MelodyNote {
                    start: n.start,
                    duration: n.duration,
                    pitch: n.pitch.clamp(0, 127) as u8,
                    velocity: n.velocity.clamp(1, 127) as u8,
                })
                .collect();
            let model = format!("{} model {} on {}", answer.model, answer.version, url);
            Ok(Some((notes, model)))
        }
        Err(why) => {
            eprintln!(
                "melodist: the server at {} gave no melody: {why}; writing it here instead",
                client.url()
            );
            Ok(None)
        }
    }
}

/// `args` as a server request, or the option that only works here.
fn server_request(args: &Args) -> Result<GenerateRequest, &'static str> {
    if args.hook_a.is_some() || args.hook_b.is_some() {
        return Err("--hook-a and --hook-b files are read");
    }
    if args.chords_midi.is_some() {
        return Err("a --chords-midi file is read");
    }
    let model = match ModelChoice::parse(&args.model) {
        ModelChoice::Default => None,
        ModelChoice::Markov => Some("markov".to_string()),
        ModelChoice::Path(_) => return Err("a --model folder is loaded"),
    };
    Ok(GenerateRequest {
        model,
        version: None,
        bars: args.bars as i64,
        seed: args.seed as i64,
        key: args.key.clone(),
        scale: args.scale.clone(),
        tempo: args.tempo,
        meter: args.meter.clone(),
        density: args.density.into(),
        variation: args.variation.into(),
        low: args.low.into(),
        high: args.high.into(),
        gate: args.gate.into(),
        velocity: args.velocity.into(),
        humanize: args.humanize.into(),
        channel: args.channel.into(),
        style: args.style.clone(),
        loop_bars: args.loop_bars.into(),
        evolve: args.evolve.into(),
        morph: args.morph.into(),
        vary: args.vary.into(),
        form: args.form.into(),
        chords: args.chords.clone(),
        chord_fit: args.chord_fit.into(),
    })
}

/// Writes the melody here, as the plugin would.
fn local_notes(
    args: &Args,
    settings: GenSettings,
    meter: Meter,
    chords: &[u16],
) -> Result<(Vec<MelodyNote>, String)> {
    // Exactly the model asked for: a path that does not load is an error, not a fallback.
    let mut generator = loader::load_strict(&ModelChoice::parse(&args.model))?;
    let notes = if args.hook_a.is_some() || args.hook_b.is_some() {
        let bank = HookBank::default();
        for (slot, path) in [(Slot::A, &args.hook_a), (Slot::B, &args.hook_b)] {
            if let Some(path) = path {
                bank.set(slot, Some(read_hook(path, settings.loop_bars.max(1))?));
            }
        }
        let mut looper = LoopPlayer::new(Variations::load(), bank);
        if let Some(why) = looper.variations().fallback_reason() {
            eprintln!("warning: {why}");
        }
        let (g, s) = (generator.as_mut(), settings);
        generate_looped(g, s, meter, args.bars, chords, &mut looper)
    } else {
        generate_with(generator.as_mut(), settings, meter, args.bars, chords)
    };
    Ok((notes, format!("{} model", generator.name())))
}

/// A hook slot from a MIDI file: its top line, from its first note's bar, `bars` long.
fn read_hook(path: &std::path::Path, bars: u8) -> Result<Hook> {
    let melody = read_melody(path)?;
    if melody.notes.is_empty() {
        bail!("{} has no notes", path.display());
    }
    let notes = from_first_bar(&melody.notes, melody.meter.beats_per_bar());
    Ok(Hook::from_notes(&notes, melody.meter, bars as usize))
}

/// The chords of a progression looped over `bars` bars, one mask per tick of the note grid
/// (what `PhraseRequest::chords` reads).
pub fn chord_ticks(progression: &Progression, meter: Meter, bars: usize) -> Vec<u16> {
    let ticks = bars * bar_ticks(meter) as usize;
    let length = progression.length_beats();
    if progression.is_empty() || length <= 0.0 {
        return Vec::new();
    }
    (0..ticks)
        .map(|t| {
            let beat = (t as f64 / TPQ as f64).rem_euclid(length);
            progression.chord_at(beat).map_or(0, |c| c.pitch_classes())
        })
        .collect()
}

/// The chords as notes to hear them by: each run of one chord becomes its pitch classes
/// held in the octave above C3.
pub fn chord_notes(chords: &[u16]) -> Vec<MelodyNote> {
    let q = |tick: usize| tick as f64 / TPQ as f64;
    let mut notes = Vec::new();
    let mut start = 0;
    for end in 1..=chords.len() {
        if end < chords.len() && chords[end] == chords[start] {
            continue;
        }
        notes.extend(
            (0..12u8)
                .filter(|pc| chords[start] >> pc & 1 == 1)
                .map(|pc| MelodyNote {
                    start: q(start),
                    duration: q(end - start),
                    pitch: 48 + pc,
                    velocity: 70,
                }),
        );
        start = end;
    }
    notes
}
