//! The JSON bodies of the `/v1` endpoints and their validation.
//!
//! Every field has the command line's default, and every number is checked against the
//! range the plugin and the CLI allow ([`crate::limits`]), with a sentence that names the
//! field, the range and the value. Numbers arrive as JSON numbers of any size and are
//! range-checked here, so `"low": 300` reads "low must be between 0 and 127, not 300"
//! rather than a type error. Unknown fields are refused, so a typo is not silently ignored.

use super::error::ApiError;
use crate::generator::form::FORM_LENGTHS;
use crate::generator::hooks::morph_position;
use crate::generator::looping::LOOP_LENGTHS;
use crate::generator::{Cadence, ContextNote, GenSettings, Mode, PhraseRequest, PhraseShape};
use crate::limits;
use crate::midi::MelodyNote;
use crate::model::grid;
use crate::model::tokenizer::Style;
use crate::music::{BeatNote, Key, Meter, PitchClass, Scale};
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::ops::RangeInclusive;
use utoipa::ToSchema;

/// A note in beat time: quarter notes from the start of the phrase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Note {
    pub start: f64,
    pub duration: f64,
    pub pitch: i64,
    #[serde(default = "default_note_velocity")]
    pub velocity: i64,
}

fn default_note_velocity() -> i64 {
    80
}

impl From<&MelodyNote> for Note {
    fn from(n: &MelodyNote) -> Self {
        Self {
            start: n.start,
            duration: n.duration,
            pitch: i64::from(n.pitch),
            velocity: i64::from(n.velocity),
        }
    }
}

/// Notes of a phrase sent to the server: at most this many.
pub const MAX_INPUT_NOTES: usize = 4096;
/// A phrase sent to the server may not start later than this (quarter notes).
const MAX_INPUT_BEATS: f64 = 4096.0;

/// Notes sent by a client, checked: pitches and velocities in MIDI range, times finite,
/// starts from 0, positive durations.
pub fn melody_notes(field: &str, notes: &[Note]) -> Result<Vec<MelodyNote>, ApiError> {
    if notes.is_empty() {
        return Err(ApiError::invalid(format!("{field} has no notes")));
    }
    if notes.len() > MAX_INPUT_NOTES {
        return Err(ApiError::invalid(format!(
            "{field} has {} notes; at most {MAX_INPUT_NOTES} are accepted",
            notes.len()
        )));
    }
    notes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = |what: &str| format!("{field}[{i}].{what}");
            check(&name("pitch"), n.pitch, 0..=127)?;
            check(&name("velocity"), n.velocity, 1..=127)?;
            check(&name("start"), n.start, 0.0..=MAX_INPUT_BEATS)?;
            if !(n.duration > 0.0 && n.duration <= MAX_INPUT_BEATS) {
                return Err(ApiError::invalid(format!(
                    "{} must be above 0 and at most {MAX_INPUT_BEATS} beats, not {}",
                    name("duration"),
                    n.duration
                )));
            }
            Ok(MelodyNote {
                start: n.start,
                duration: n.duration,
                pitch: n.pitch as u8,
                velocity: n.velocity as u8,
            })
        })
        .collect()
}

/// `value` inside `range`, or a 422 that says so.
pub fn check<T: PartialOrd + Display>(
    field: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ApiError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        )))
    }
}

fn widen<T: Copy + Into<f64>>(r: RangeInclusive<T>) -> RangeInclusive<f64> {
    (*r.start()).into()..=(*r.end()).into()
}

fn widen_int<T: Copy + Into<i64>>(r: RangeInclusive<T>) -> RangeInclusive<i64> {
    (*r.start()).into()..=(*r.end()).into()
}

pub fn parse_key(tonic: &str, scale: &str) -> Result<Key, ApiError> {
    let tonic = PitchClass::parse(tonic).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown key {tonic:?} (use a note name: C, C#, Db, ... B)"
        ))
    })?;
    let scale = Scale::parse(scale).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown scale {scale:?} (major, minor, dorian, mixolydian, harmonic-minor, major-pentatonic, minor-pentatonic, blues, chromatic)"
        ))
    })?;
    Ok(Key::new(tonic, scale))
}

pub fn parse_meter(text: &str) -> Result<Meter, ApiError> {
    Meter::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "bad meter {text:?} (use a time signature like 4/4 or 6/8)"
        ))
    })
}

pub fn parse_style(text: &str) -> Result<Style, ApiError> {
    Style::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown style {text:?} (any, reel, jig, slip jig, hornpipe, march, air, waltz, polka, chorale, dance)"
        ))
    })
}

/// `POST /v1/generate`: the settings of `melodist generate` (and the plugin's knobs).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    /// `neural` (default) or `markov`.
    pub model: Option<String>,
    /// Pin a model version (its weights' checksum, from `GET /v1/models`).
    pub version: Option<String>,
    pub bars: i64,
    pub seed: i64,
    pub key: String,
    pub scale: String,
    pub tempo: f64,
    pub meter: String,
    pub density: f64,
    pub variation: f64,
    pub low: i64,
    pub high: i64,
    pub gate: f64,
    pub velocity: i64,
    pub humanize: f64,
    pub channel: i64,
    pub style: String,
    pub loop_bars: i64,
    pub evolve: f64,
    /// Loop mode: 0 = the seed's hook (A), 1 = a new idea's hook (B), between = the VAE's
    /// interpolation, as the plugin's Morph.
    pub morph: f64,
    /// Loop mode: times Vary is pressed, as the plugin's Vary.
    pub vary: i64,
    pub form: i64,
    pub chords: Option<String>,
    pub chord_fit: f64,
}

impl Default for GenerateRequest {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            model: None,
            version: None,
            bars: 16,
            seed: 1,
            key: "C".into(),
            scale: "major".into(),
            tempo: 120.0,
            meter: "4/4".into(),
            density: 0.5,
            variation: 0.5,
            low: 60,
            high: 84,
            gate: 0.9,
            velocity: 96,
            humanize: 0.2,
            channel: 1,
            style: "any".into(),
            loop_bars: 0,
            evolve: 0.0,
            morph: 0.0,
            vary: 0,
            form: 16,
            chords: None,
            chord_fit: 0.6,
        }
    }
}

/// A generate request, checked and turned into the generator's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generate {
    pub settings: GenSettings,
    pub meter: Meter,
    pub bars: usize,
    pub tempo: f64,
    /// 0-based MIDI channel.
    pub channel: u8,
}

impl GenerateRequest {
    /// Checks every field; `max_bars` is the server's cap (below the CLI's).
    pub fn validate(&self, max_bars: usize) -> Result<Generate, ApiError> {
        let unit = widen(limits::UNIT);
        let bars = check("bars", self.bars, 1..=max_bars as i64)? as usize;
        let seed = check("seed", self.seed, 0..=*limits::SEED.end() as i64)? as u64;
        let tempo = check("tempo", self.tempo, widen(limits::TEMPO))?;
        let density = check("density", self.density, unit.clone())? as f32;
        let variation = check("variation", self.variation, unit.clone())? as f32;
        let humanize = check("humanize", self.humanize, unit.clone())? as f32;
        let evolve = check("evolve", self.evolve, unit.clone())? as f32;
        let morph = check("morph", self.morph, unit.clone())? as f32;
        let vary_step = check("vary", self.vary, 0..=999)? as u16;
        let chord_fit = check("chord_fit", self.chord_fit, unit)? as f32;
        let gate = check("gate", self.gate, widen(limits::GATE))? as f32;
        let low = check("low", self.low, widen_int(limits::MIDI_NOTE))? as u8;
        let high = check("high", self.high, widen_int(limits::MIDI_NOTE))? as u8;
        let velocity = check("velocity", self.velocity, widen_int(limits::VELOCITY))? as u8;
        let channel = check("channel", self.channel, widen_int(limits::CHANNEL))? as u8;
        let form = u8::try_from(self.form)
            .ok()
            .filter(|f| FORM_LENGTHS.contains(f))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "form must be 0 (free), 8, 16 or 32 bars, not {}",
                    self.form
                ))
            })?;
        let loop_bars = u8::try_from(self.loop_bars)
            .ok()
            .filter(|n| LOOP_LENGTHS.contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "loop_bars must be 0 (off), 1, 2, 4 or 8, not {}",
                    self.loop_bars
                ))
            })?;
        let settings = GenSettings {
            key: parse_key(&self.key, &self.scale)?,
            low,
            high,
            density,
            variation,
            gate,
            velocity,
            humanize,
            seed,
            mode: Mode::Generate,
            follow_input: false,
            style: parse_style(&self.style)?,
            loop_bars,
            evolve,
            form,
            chord_fit,
            morph: morph_position(morph),
            vary_step,
            hooks_version: 0,
        };
        Ok(Generate {
            settings,
            meter: parse_meter(&self.meter)?,
            bars,
            tempo,
            channel: channel - 1,
        })
    }
}

/// `POST /v1/phrase`: one phrase exactly as a plugin's worker would write it locally
/// (its settings, its place in the form, what came before it, the chords under it). The
/// plugin's *Model server* setting sends these; the answer is the performed phrase, the
/// same bars the worker's own model gives for the same models and request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhraseCall {
    /// `neural` (default) or `markov`.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// The generator settings as the plugin holds them (`GenSettings`).
    #[schema(value_type = Object)]
    pub settings: GenSettings,
    /// A time signature, e.g. `4/4`.
    pub meter: String,
    /// Which phrase of the piece (its RNG stream).
    pub phrase_index: i64,
    pub bars: i64,
    /// The notes just before the phrase, oldest first.
    #[serde(default)]
    pub context: Vec<ContextPitch>,
    /// Bars left to the end of the 8-bar strain at the phrase's first bar.
    pub strain_bar: i64,
    /// `open`, `close`, or none (left to the model).
    #[serde(default)]
    pub cadence: Option<String>,
    /// The chord under each grid tick from the phrase's start (pitch-class masks).
    #[serde(default)]
    pub chords: Vec<u16>,
}

/// One note of a [`PhraseCall`]'s context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextPitch {
    pub pitch: i64,
    /// Quarter notes to the next note.
    pub duration: f64,
}

/// Bars one [`PhraseCall`] may ask for (the worker asks for 4, or 2 for an answer).
pub const MAX_PHRASE_BARS: i64 = 8;
/// Context notes one [`PhraseCall`] may carry (the worker keeps 32 of the producer's).
const MAX_CONTEXT_NOTES: usize = 256;

/// A phrase call, checked: what [`crate::generator::render_phrase`] takes.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedPhrase {
    pub settings: GenSettings,
    pub meter: Meter,
    pub phrase_index: i64,
    pub bars: usize,
    pub context: Vec<ContextNote>,
    pub shape: PhraseShape,
    pub chords: Vec<u16>,
}

impl PhraseCall {
    /// What the plugin's worker sends for `request`.
    pub fn new(model: &str, request: &PhraseRequest<'_>) -> Self {
        Self {
            model: Some(model.to_string()),
            version: None,
            settings: request.settings,
            meter: request.meter.to_string(),
            phrase_index: request.phrase_index,
            bars: request.bars as i64,
            context: (request.context.iter())
                .map(|c| ContextPitch {
                    pitch: i64::from(c.pitch),
                    duration: c.duration,
                })
                .collect(),
            strain_bar: i64::from(request.shape.strain_bar),
            cadence: request.shape.cadence.map(|c| match c {
                Cadence::Open => "open".into(),
                Cadence::Close => "close".into(),
            }),
            chords: request.chords.to_vec(),
        }
    }

    /// Checks every field against what the plugin itself can send.
    pub fn validate(&self) -> Result<CheckedPhrase, ApiError> {
        let s = &self.settings;
        let unit = limits::UNIT;
        for (field, value) in [
            ("density", s.density),
            ("variation", s.variation),
            ("humanize", s.humanize),
            ("evolve", s.evolve),
            ("morph", s.morph),
            ("chord_fit", s.chord_fit),
        ] {
            check(&format!("settings.{field}"), value, unit.clone())?;
        }
        check("settings.gate", s.gate, limits::GATE)?;
        check("settings.low", s.low, limits::MIDI_NOTE)?;
        check("settings.high", s.high, limits::MIDI_NOTE)?;
        check("settings.velocity", s.velocity, limits::VELOCITY)?;
        if !FORM_LENGTHS.contains(&s.form) || !LOOP_LENGTHS.contains(&s.loop_bars) {
            return Err(ApiError::invalid(format!(
                "settings.form must be 0, 8, 16 or 32 and settings.loop_bars 0, 1, 2, 4 or 8, not {} and {}",
                s.form, s.loop_bars
            )));
        }
        let meter = parse_meter(&self.meter)?;
        let bars = check("bars", self.bars, 1..=MAX_PHRASE_BARS)? as usize;
        let phrase_index = check("phrase_index", self.phrase_index, -(1 << 40)..=1 << 40)?;
        let strain_bar = check("strain_bar", self.strain_bar, 0..=7)? as u8;
        let cadence = match self.cadence.as_deref() {
            None => None,
            Some("open") => Some(Cadence::Open),
            Some("close") => Some(Cadence::Close),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "cadence must be \"open\", \"close\" or absent, not {other:?}"
                )));
            }
        };
        if self.context.len() > MAX_CONTEXT_NOTES {
            return Err(ApiError::invalid(format!(
                "context has {} notes; at most {MAX_CONTEXT_NOTES} are accepted",
                self.context.len()
            )));
        }
        let context = (self.context.iter().enumerate())
            .map(|(i, c)| {
                Ok(ContextNote {
                    pitch: check(&format!("context[{i}].pitch"), c.pitch, 0..=127)? as u8,
                    duration: check(&format!("context[{i}].duration"), c.duration, 0.0..=64.0)?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        let max_ticks = bars * grid::bar_ticks(meter) as usize;
        if self.chords.len() > max_ticks {
            return Err(ApiError::invalid(format!(
                "chords has {} ticks; a {bars}-bar phrase in {meter} has {max_ticks}",
                self.chords.len()
            )));
        }
        Ok(CheckedPhrase {
            settings: GenSettings {
                morph: morph_position(s.morph),
                ..*s
            },
            meter,
            phrase_index,
            bars,
            context,
            shape: PhraseShape {
                strain_bar,
                cadence,
            },
            chords: self.chords.clone(),
        })
    }
}

impl CheckedPhrase {
    /// The generator's request for this phrase.
    pub fn request(&self) -> PhraseRequest<'_> {
        PhraseRequest {
            settings: self.settings,
            meter: self.meter,
            phrase_index: self.phrase_index,
            bars: self.bars,
            context: &self.context,
            shape: self.shape,
            chords: &self.chords,
        }
    }
}

/// The answer to a [`PhraseCall`]: one list of notes per bar, each relative to its bar line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhraseAnswer {
    pub model: String,
    pub version: String,
    #[schema(value_type = Vec<Vec<Object>>)]
    pub bars: Vec<Vec<BeatNote>>,
}

/// The answer to a generate request (as JSON; `Accept: audio/midi` gets a MIDI file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerateResponse {
    pub model: String,
    pub version: String,
    pub key: String,
    pub meter: String,
    pub tempo: f64,
    pub bars: usize,
    pub seed: u64,
    pub notes: Vec<Note>,
}

/// Options shared by `POST /v1/vary` and `/v1/morph`: the phrase's context and how to
/// decode it (the options of `melodist vary` / `morph`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeDecode {
    pub key: Option<Key>,
    pub meter: Meter,
    pub style: Style,
    pub low: u8,
    pub high: u8,
    pub temperature: f32,
    pub scale_lock: bool,
    pub seed: u64,
}

/// The shared fields, as they arrive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaeOptions {
    /// Tonic (with `scale`); default: the key detected from the notes.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "default_scale")]
    pub scale: String,
    #[serde(default = "default_meter")]
    pub meter: String,
    #[serde(default = "default_style")]
    pub style: String,
    #[serde(default = "default_vae_low")]
    pub low: i64,
    #[serde(default = "default_vae_high")]
    pub high: i64,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_true")]
    pub scale_lock: bool,
    #[serde(default = "default_seed")]
    pub seed: i64,
    /// Pin the VAE's version.
    #[serde(default)]
    pub version: Option<String>,
}

fn default_scale() -> String {
    "major".into()
}
fn default_meter() -> String {
    "4/4".into()
}
fn default_style() -> String {
    "any".into()
}
fn default_vae_low() -> i64 {
    48
}
fn default_vae_high() -> i64 {
    96
}
fn default_temperature() -> f64 {
    0.3
}
fn default_true() -> bool {
    true
}
fn default_seed() -> i64 {
    1
}

impl Default for VaeOptions {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl VaeOptions {
    pub fn validate(&self) -> Result<VaeDecode, ApiError> {
        let key = match &self.key {
            Some(tonic) => Some(parse_key(tonic, &self.scale)?),
            None => None,
        };
        Ok(VaeDecode {
            key,
            meter: parse_meter(&self.meter)?,
            style: parse_style(&self.style)?,
            low: check("low", self.low, widen_int(limits::MIDI_NOTE))? as u8,
            high: check("high", self.high, widen_int(limits::MIDI_NOTE))? as u8,
            temperature: check("temperature", self.temperature, widen(limits::UNIT))? as f32,
            scale_lock: self.scale_lock,
            seed: check("seed", self.seed, 0..=*limits::SEED.end() as i64)? as u64,
        })
    }
}

/// `POST /v1/vary`: variations of one hook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaryRequest {
    pub notes: Vec<Note>,
    /// Variations to return, 1-16.
    #[serde(default = "default_count")]
    pub count: i64,
    /// How far from the hook, 0-1.
    #[serde(default = "default_distance")]
    pub distance: f64,
    #[serde(default)]
    pub options: VaeOptions,
}

fn default_count() -> i64 {
    4
}
fn default_distance() -> f64 {
    0.3
}

/// `POST /v1/morph`: the phrases from hook `a` to hook `b`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MorphRequest {
    pub a: Vec<Note>,
    pub b: Vec<Note>,
    /// Phrases from A to B, both ends included, 2-16.
    #[serde(default = "default_steps")]
    pub steps: i64,
    #[serde(default)]
    pub options: VaeOptions,
}

fn default_steps() -> i64 {
    8
}

/// Most variations or morph steps one request may ask for.
pub const MAX_PHRASES: i64 = 16;

/// The answer to vary and morph: phrases in order, in beat time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhrasesResponse {
    pub version: String,
    pub key: String,
    pub meter: String,
    pub phrases: Vec<Vec<Note>>,
}

/// `POST /v1/recommend`: the context to rank presets for (all optional, as in
/// `melodist recommend`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RecommendRequest {
    pub tempo: Option<f64>,
    pub meter: Option<String>,
    pub key: Option<String>,
    pub scale: Option<String>,
    /// Notes per beat the producer is playing, 0-16.
    pub density: Option<f64>,
    /// Mean MIDI pitch the producer is playing.
    pub register: Option<f64>,
    /// Presets to return, 1-50 (default 5).
    pub count: Option<i64>,
}

/// One ranked preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RankedPreset {
    pub preset_id: String,
    pub name: String,
    pub score: f32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendResponse {
    pub user: String,
    /// Sessions of the caller's history the ranking was fitted on.
    pub sessions: usize,
    pub presets: Vec<RankedPreset>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_command_lines_and_validate() {
        let g = GenerateRequest::default().validate(64).unwrap();
        assert_eq!(g.settings, GenSettings::default());
        assert_eq!((g.bars, g.tempo, g.channel), (16, 120.0, 0));
    }

    #[test]
    fn each_out_of_range_value_is_named_with_its_range() {
        let bad = |edit: fn(&mut GenerateRequest)| {
            let mut r = GenerateRequest::default();
            edit(&mut r);
            r.validate(64).unwrap_err().message
        };
        assert_eq!(
            bad(|r| r.density = 5.0),
            "density must be between 0 and 1, not 5"
        );
        assert_eq!(
            bad(|r| r.low = 300),
            "low must be between 0 and 127, not 300"
        );
        assert_eq!(
            bad(|r| r.bars = 65),
            "bars must be between 1 and 64, not 65"
        );
        assert_eq!(
            bad(|r| r.tempo = 5.0),
            "tempo must be between 20 and 300, not 5"
        );
        assert_eq!(
            bad(|r| r.seed = -1),
            "seed must be between 0 and 99999, not -1"
        );
        assert_eq!(
            bad(|r| r.form = 12),
            "form must be 0 (free), 8, 16 or 32 bars, not 12"
        );
        assert!(bad(|r| r.key = "H".into()).starts_with("unknown key \"H\""));
        assert!(bad(|r| r.meter = "4-4".into()).starts_with("bad meter"));
    }

    #[test]
    fn input_notes_are_checked_one_by_one() {
        let note = |pitch, duration| Note {
            start: 0.0,
            duration,
            pitch,
            velocity: 80,
        };
        assert!(melody_notes("notes", &[note(60, 1.0)]).is_ok());
        assert_eq!(
            melody_notes("notes", &[note(60, 1.0), note(200, 1.0)])
                .unwrap_err()
                .message,
            "notes[1].pitch must be between 0 and 127, not 200"
        );
        assert!(
            melody_notes("a", &[note(60, 0.0)])
                .unwrap_err()
                .message
                .starts_with("a[0].duration")
        );
        assert_eq!(
            melody_notes("b", &[]).unwrap_err().message,
            "b has no notes"
        );
    }
}
