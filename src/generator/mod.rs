//! The generator seam: anything that can write a phrase of melody in beat time.
//!
//! The engine's worker thread owns a `Box<dyn Generator>` and never cares which model is
//! behind it, so the neural model and the Markov baseline are interchangeable.

pub mod form;
pub mod hooks;
pub mod loader;
pub mod looping;
pub mod markov;
pub mod neural;
pub mod perform;
pub mod remote;

pub use crate::model::sampler::Cadence;
use crate::model::tokenizer::Style;
use crate::music::{BeatNote, Key, Meter, SeedRng};
use nice_plug::prelude::Enum;
use serde::{Deserialize, Serialize};

/// Bars per generated phrase. A phrase is a pure function of (settings, seed, phrase index,
/// input context), so playing bar 9 after a jump gives the same notes as playing through.
pub const PHRASE_BARS: usize = 4;

/// What the generator does with the producer's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Free melody in the current key and meter.
    #[name = "Generate"]
    Generate,
    /// Continue / answer the phrase the producer just played.
    #[name = "Continue"]
    Continue,
}

/// Generator settings. Plain `Copy` data so the audio thread can send it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenSettings {
    pub key: Key,
    /// Lowest and highest allowed MIDI pitch (inclusive).
    pub low: u8,
    pub high: u8,
    /// 0 = sparse, long notes; 1 = busy, short notes. 0.5 is the model's own taste.
    pub density: f32,
    /// 0 = predictable, 1 = adventurous (sampling temperature).
    pub variation: f32,
    /// Sounding fraction of each note's slot, 0.05..=1.
    pub gate: f32,
    /// Base MIDI velocity.
    pub velocity: u8,
    /// 0..=1: random velocity spread.
    pub humanize: f32,
    pub seed: u64,
    pub mode: Mode,
    /// Take the tonic (and major/minor flavour) from what the producer plays.
    pub follow_input: bool,
    /// Style tag the neural model is conditioned on (from the style preset; `Any` when the
    /// preset's style is not one the model knows). The Markov baseline ignores it.
    #[serde(default)]
    pub style: Style,
    /// Loop mode: a hook of this many bars repeats (0 = off). See [`looping`].
    #[serde(default)]
    pub loop_bars: u8,
    /// 0 = the loop repeats exactly; higher values change a few notes (then bars) per repeat.
    #[serde(default)]
    pub evolve: f32,
    /// How strongly notes sit on the chords (0 = ignore chords, 1 = chord tones on strong
    /// beats nearly always): a logit bonus next to the scale mask, never a snap.
    #[serde(default = "default_chord_fit")]
    pub chord_fit: f32,
    /// Section length of the form plan in bars (8, 16, 32; 0 = free, no repeats). See [`form`].
    #[serde(default = "default_form")]
    pub form: u8,
    /// Loop mode: 0 = hook A, 1 = hook B, between = the VAE's interpolation. See [`hooks`].
    #[serde(default)]
    pub morph: f32,
    /// Loop mode: how many times *Vary* was pressed (each press varies the hook again).
    #[serde(default)]
    pub vary_step: u16,
    /// Changes whenever a hook slot is captured or cleared (never saved: a marker only).
    #[serde(skip)]
    pub hooks_version: u32,
}

fn default_form() -> u8 {
    16
}

fn default_chord_fit() -> f32 {
    0.6
}

impl Default for GenSettings {
    fn default() -> Self {
        Self {
            key: Key::new(crate::music::PitchClass::C, crate::music::Scale::Major),
            low: 60,
            high: 84,
            density: 0.5,
            variation: 0.5,
            gate: 0.9,
            velocity: 96,
            humanize: 0.2,
            seed: 1,
            mode: Mode::Generate,
            follow_input: false,
            style: Style::Any,
            loop_bars: 0,
            evolve: 0.0,
            chord_fit: default_chord_fit(),
            form: default_form(),
            morph: 0.0,
            vary_step: 0,
            hooks_version: 0,
        }
    }
}

impl GenSettings {
    /// Sampling temperature for the variation knob: 0 → 0.35 (safe), 0.5 → 1.0, 1 → 1.65.
    pub fn temperature(&self) -> f32 {
        0.35 + 1.3 * self.variation.clamp(0.0, 1.0)
    }

    /// Register limits, repaired when the producer sets low above high.
    pub fn register(&self) -> (u8, u8) {
        let (a, b) = (self.low.min(127), self.high.min(127));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        // Keep at least an octave so every scale has a pitch in range.
        if hi - lo < 12 {
            (lo.min(115), lo.min(115) + 12)
        } else {
            (lo, hi)
        }
    }
}

/// A note the producer played (or the generator played before), used as context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextNote {
    pub pitch: u8,
    /// Inter-onset duration in quarter notes.
    pub duration: f64,
}

/// The *Loop length* parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum LoopLength {
    #[name = "Off"]
    Off,
    #[name = "1 bar"]
    One,
    #[name = "2 bars"]
    Two,
    #[name = "4 bars"]
    Four,
    #[name = "8 bars"]
    Eight,
}

impl LoopLength {
    pub fn bars(self) -> u8 {
        looping::LOOP_LENGTHS[self.to_index()]
    }
}

/// The *Form* parameter: how long a section of the form plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum FormLength {
    /// Phrases follow each other with no planned repeats.
    #[name = "Free"]
    Free,
    #[name = "8 bars"]
    Eight,
    #[name = "16 bars"]
    Sixteen,
    #[name = "32 bars"]
    ThirtyTwo,
}

impl FormLength {
    pub fn bars(self) -> u8 {
        form::FORM_LENGTHS[self.to_index()]
    }
}

/// One request for a phrase.
#[derive(Debug, Clone)]
pub struct PhraseRequest<'a> {
    pub settings: GenSettings,
    pub meter: Meter,
    pub phrase_index: i64,
    pub bars: usize,
    /// What comes just before the phrase, most recent notes last: the producer's phrase in
    /// Continue mode, or the melody's own previous phrase (see [`form`]). The model reads
    /// it first, so the phrase continues it.
    pub context: &'a [ContextNote],
    /// Where the phrase sits in its strain, and how it ends.
    pub shape: PhraseShape,
    /// The chords under the phrase, one entry per tick of the note grid (`grid::TPQ` per
    /// quarter) from its first bar line: pitch classes as a mask (bit `i` = pitch class
    /// `i`, 0 = no chord). Shorter or empty: no chords after its end.
    pub chords: &'a [u16],
}

impl PhraseRequest<'_> {
    /// The chord sounding `ticks` after the phrase's start (0 when none is known).
    pub fn chord_at(&self, ticks: u32) -> u16 {
        self.chords.get(ticks as usize).copied().unwrap_or(0)
    }
}

/// A phrase's place in the form: the model is told how many bars are left to the cadence
/// at every note, and the last bar ends with the cadence asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhraseShape {
    /// Bars left to the end of the 8-bar strain at the first bar (7 = a strain's first bar;
    /// 3 = the first bar of its closing half).
    pub strain_bar: u8,
    /// The ending: `None` leaves it to the model (a phrase cut short, a one-bar fill).
    pub cadence: Option<Cadence>,
}

impl Default for PhraseShape {
    /// A 4-bar closing phrase: the second half of a strain.
    fn default() -> Self {
        Self {
            strain_bar: 3,
            cadence: Some(Cadence::Close),
        }
    }
}

/// A phrase: one `Vec<BeatNote>` per bar, notes relative to their bar line.
pub type Phrase = Vec<Vec<BeatNote>>;

/// A melody model that the engine can drive.
pub trait Generator: Send {
    /// Short human name shown in the status line ("markov", "neural-lstm").
    fn name(&self) -> &str;

    /// Writes `request.bars` bars. Must be deterministic for a given request and RNG state,
    /// keep every pitch inside the key and register, and keep notes inside their bar.
    fn generate(&mut self, request: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase;

    /// The performed phrase ([`render_phrase`]). A generator that asks elsewhere for whole
    /// phrases (a model server, see [`remote`]) answers here instead.
    fn render(&mut self, request: &PhraseRequest<'_>) -> Phrase {
        write_and_perform(self, request)
    }

    /// Does `line` ((pitch, ticks to the next onset) per note, as
    /// [`crate::model::copyguard::melody_line`] writes it) hold a run copied from a tune
    /// this generator was trained on? The form planner asks before it joins a repeat, an
    /// answer or a variation to the phrase before: the generator's own guard only sees
    /// the notes it writes. `false` for a generator without an originality guard.
    fn copies_training(&self, _line: &[(u8, u32)]) -> bool {
        false
    }
}

/// Generates a performed phrase: the model's notes plus gate, velocity and humanise.
/// This is the one entry point the worker and the CLI use, so both produce the same notes.
pub fn render_phrase(generator: &mut dyn Generator, request: &PhraseRequest<'_>) -> Phrase {
    generator.render(request)
}

/// Asks the model for the notes, then performs them with the same per-phrase RNG.
fn write_and_perform<G: Generator + ?Sized>(
    generator: &mut G,
    request: &PhraseRequest<'_>,
) -> Phrase {
    let s = &request.settings;
    let mut rng = SeedRng::derive(&[
        s.seed,
        request.phrase_index as u64,
        request.meter.numerator as u64,
        request.meter.denominator as u64,
    ]);
    let mut phrase = generator.generate(request, &mut rng);
    phrase.resize(request.bars, Vec::new());
    perform::apply(&mut phrase, s, request.meter, &mut rng);
    phrase
}
