//! Chords: names, recognition from held notes, progressions, and a memory that predicts the
//! chord to come. The harmony the melody follows (issue 12) is built from these pieces.
//!
//! **Where it runs.** [`HeldNotes`], [`Chord::recognize`] and [`ChordMemory`] run on the audio
//! thread, so they never allocate: pitch-class sets are 12-bit `u16` masks (bit `i` = pitch
//! class `i`, C = 0), held notes are a `u128`, and the memory is fixed arrays. All three are
//! `Copy`, which the compiler only allows for types that own no heap memory. Parsing
//! ([`Chord::parse`], [`Progression`]) is for the UI, the CLI and MIDI files, and may allocate.
//!
//! **Recognition rule.** Every [`Quality`] has a template (its tones) and essential tones
//! (root plus what makes it that quality: the third, the sus tone, the seventh or sixth, the
//! altered fifth; a plain perfect fifth may be left out). For each pitch class present taken
//! as root, a template is a candidate when all its essential tones sound; it scores
//! `4 × matched − 4 × extra − missing` (extra: notes the template does not explain, missing:
//! optional template tones not played). The best score wins, so an exact match beats any
//! subset or superset match; ties go to the chord whose root is the bass (C E G A is Am7
//! over A and C6 over C), then to the more common quality ([`Quality::ALL`]'s order), then to
//! the lower root. Consequences: one note is no chord; two notes make a chord only as a
//! third (C+E → C, A+C → Am, C+E♭ → Cm: the lower note of the third is the root) or a fifth
//! (C+G → C5, also as a fourth: G below C is still C5/G); seconds and tritones are no chord.
//! A bass outside the chord gives a slash chord, or a richer chord when one fits exactly
//! (C E G with B♭ below is C7/B♭).
//!
//! **Prediction rule.** [`ChordMemory`] keeps one chord per quarter-note slot for the last
//! [`MEMORY_BARS`] bars. The period is the smallest of 1, 2, 4 or 8 bars for which every slot
//! heard in the last [`WINDOW_BARS`] bars equals the slot heard one period earlier (at least
//! one such pair, same pitch classes counting as equal, so C and C/E match). The chord
//! predicted for a beat is the one heard at the same slot a whole number of periods earlier;
//! with no consistent period (or nothing heard at that slot) the last chord heard continues.

use super::PitchClass;
use serde::{Deserialize, Serialize};
use std::fmt;

/// All twelve pitch classes.
const ALL_PITCH_CLASSES: u16 = 0xFFF;

/// What kind of chord it is, independent of root and bass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Major,
    Minor,
    Diminished,
    Augmented,
    Sus2,
    Sus4,
    /// Root and fifth only ("C5").
    Power,
    Dominant7,
    Major7,
    Minor7,
    /// m7♭5, ø.
    HalfDiminished7,
    Diminished7,
    Major6,
    Minor6,
    Add9,
}

/// A mask from a list of semitones above the root.
const fn tones(semitones: &[u8]) -> u16 {
    let mut mask = 0;
    let mut i = 0;
    while i < semitones.len() {
        mask |= 1 << semitones[i];
        i += 1;
    }
    mask
}

impl Quality {
    /// Every quality, most common first: the order breaks ties in recognition (C E G A with
    /// neither C nor A in the bass reads as Am7 rather than C6).
    pub const ALL: [Quality; 15] = [
        Quality::Major,
        Quality::Minor,
        Quality::Dominant7,
        Quality::Minor7,
        Quality::Major7,
        Quality::Sus4,
        Quality::Sus2,
        Quality::Power,
        Quality::HalfDiminished7,
        Quality::Major6,
        Quality::Minor6,
        Quality::Diminished,
        Quality::Augmented,
        Quality::Diminished7,
        Quality::Add9,
    ];

    /// The chord's tones as a mask relative to the root (bit 0 = root).
    pub const fn intervals(self) -> u16 {
        match self {
            Quality::Major => tones(&[0, 4, 7]),
            Quality::Minor => tones(&[0, 3, 7]),
            Quality::Diminished => tones(&[0, 3, 6]),
            Quality::Augmented => tones(&[0, 4, 8]),
            Quality::Sus2 => tones(&[0, 2, 7]),
            Quality::Sus4 => tones(&[0, 5, 7]),
            Quality::Power => tones(&[0, 7]),
            Quality::Dominant7 => tones(&[0, 4, 7, 10]),
            Quality::Major7 => tones(&[0, 4, 7, 11]),
            Quality::Minor7 => tones(&[0, 3, 7, 10]),
            Quality::HalfDiminished7 => tones(&[0, 3, 6, 10]),
            Quality::Diminished7 => tones(&[0, 3, 6, 9]),
            Quality::Major6 => tones(&[0, 4, 7, 9]),
            Quality::Minor6 => tones(&[0, 3, 7, 9]),
            Quality::Add9 => tones(&[0, 2, 4, 7]),
        }
    }

    /// The tones that must sound for recognition to name this quality. A perfect fifth is
    /// optional where the third already decides (players drop it from sevenths); it is
    /// essential for sus and power chords, which would otherwise be a bare second or fourth.
    const fn essential(self) -> u16 {
        const PERFECT_FIFTH: u16 = 1 << 7;
        match self {
            Quality::Major
            | Quality::Minor
            | Quality::Dominant7
            | Quality::Major7
            | Quality::Minor7
            | Quality::Major6
            | Quality::Minor6
            | Quality::Add9 => self.intervals() & !PERFECT_FIFTH,
            _ => self.intervals(),
        }
    }

    /// The suffix after the root in a chord name ("" for major, "m7b5", ...).
    pub const fn suffix(self) -> &'static str {
        match self {
            Quality::Major => "",
            Quality::Minor => "m",
            Quality::Diminished => "dim",
            Quality::Augmented => "aug",
            Quality::Sus2 => "sus2",
            Quality::Sus4 => "sus4",
            Quality::Power => "5",
            Quality::Dominant7 => "7",
            Quality::Major7 => "maj7",
            Quality::Minor7 => "m7",
            Quality::HalfDiminished7 => "m7b5",
            Quality::Diminished7 => "dim7",
            Quality::Major6 => "6",
            Quality::Minor6 => "m6",
            Quality::Add9 => "add9",
        }
    }

    /// Reads a suffix in any of the common spellings. Case matters: "M7" is major seventh,
    /// "m7" minor seventh.
    fn from_suffix(suffix: &str) -> Option<Quality> {
        Some(match suffix {
            "" | "M" | "maj" | "Maj" | "major" => Quality::Major,
            "m" | "-" | "min" | "mi" | "minor" => Quality::Minor,
            "dim" | "°" | "o" => Quality::Diminished,
            "aug" | "+" => Quality::Augmented,
            "sus2" => Quality::Sus2,
            "sus" | "sus4" => Quality::Sus4,
            "5" => Quality::Power,
            "7" | "dom7" => Quality::Dominant7,
            "maj7" | "Maj7" | "M7" | "ma7" | "Δ" | "Δ7" => Quality::Major7,
            "m7" | "-7" | "min7" | "mi7" => Quality::Minor7,
            "m7b5" | "m7♭5" | "-7b5" | "min7b5" | "m7-5" | "ø" | "ø7" => {
                Quality::HalfDiminished7
            }
            "dim7" | "°7" | "o7" => Quality::Diminished7,
            "6" | "maj6" | "M6" => Quality::Major6,
            "m6" | "-6" | "min6" => Quality::Minor6,
            "add9" | "(add9)" | "add2" => Quality::Add9,
            _ => return None,
        })
    }
}

/// Moves every pitch class of a mask (bit `i` = pitch class `i`) up by `semitones`.
pub fn transpose_mask(mask: u16, semitones: u8) -> u16 {
    let s = semitones % 12;
    let mask = mask & ALL_PITCH_CLASSES;
    ((mask << s) | (mask >> (12 - s))) & ALL_PITCH_CLASSES
}

fn bit(pc: PitchClass) -> u16 {
    1 << pc.semitone()
}

/// A chord: root, quality and the note in the bass (the root unless it is a slash chord).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chord {
    pub root: PitchClass,
    pub quality: Quality,
    pub bass: PitchClass,
}

impl Chord {
    /// A chord in root position.
    pub fn new(root: PitchClass, quality: Quality) -> Chord {
        Chord {
            root,
            quality,
            bass: root,
        }
    }

    /// The same chord over another bass note ("C" over E is "C/E").
    pub fn over(self, bass: PitchClass) -> Chord {
        Chord { bass, ..self }
    }

    /// The sounding pitch classes, bass included (bit `i` = pitch class `i`, C = 0).
    pub fn pitch_classes(&self) -> u16 {
        transpose_mask(self.quality.intervals(), self.root.semitone()) | bit(self.bass)
    }

    /// The pitch classes relative to a key's tonic (bit 0 = tonic), so that the same
    /// function in any key gives the same mask: what the neural model is conditioned on.
    pub fn relative_mask(&self, key_tonic: PitchClass) -> u16 {
        transpose_mask(self.pitch_classes(), 12 - key_tonic.semitone())
    }

    /// The chord's name, as [`Chord::parse`] reads it back: "Am", "F#m7", "Bb/D".
    pub fn name(&self) -> impl fmt::Display + use<> {
        *self
    }

    /// Names the chord a set of pitch classes forms, following the rule in the module doc.
    /// `bass` is the lowest note sounding, when known; it sounds, so it joins the set.
    /// Allocation-free: called from the audio thread.
    pub fn recognize(mask: u16, bass: Option<PitchClass>) -> Option<Chord> {
        let mask = (mask & ALL_PITCH_CLASSES) | bass.map_or(0, bit);
        if mask.count_ones() < 2 {
            return None;
        }
        // (score, root is the bass, preference): compared as a tuple, larger is better.
        let mut best: Option<((i32, bool, i32), Chord)> = None;
        for root in (0..12u8).filter(|&r| mask & (1 << r) != 0) {
            let root_pc = PitchClass::from_index(root);
            for (preference, quality) in Quality::ALL.into_iter().enumerate() {
                let template = transpose_mask(quality.intervals(), root);
                let essential = transpose_mask(quality.essential(), root);
                if mask & essential != essential {
                    continue;
                }
                let matched = (mask & template).count_ones() as i32;
                let extra = (mask & !template).count_ones() as i32;
                let missing = (template & !mask).count_ones() as i32;
                let score = 4 * matched - 4 * extra - missing;
                if score <= 0 {
                    continue;
                }
                let rank = (score, bass == Some(root_pc), -(preference as i32));
                if best.is_none_or(|(best_rank, _)| rank > best_rank) {
                    let chord = Chord::new(root_pc, quality).over(bass.unwrap_or(root_pc));
                    best = Some((rank, chord));
                }
            }
        }
        best.map(|(_, chord)| chord)
    }

    /// Reads a chord name: root (A–G, optional `#`/`♯` or `b`/`♭`), a quality suffix in a
    /// common spelling ("m", "-", "min", "M7", "maj7", "°", "+", "sus", "ø", ...), and an
    /// optional `/bass`.
    pub fn parse(text: &str) -> Result<Chord, ChordError> {
        let name = text.trim();
        if name.is_empty() {
            return Err(ChordError::Empty);
        }
        let (body, bass_text) = match name.split_once('/') {
            Some((body, bass)) => (body, Some(bass)),
            None => (name, None),
        };
        let (root, suffix) = split_note(body).ok_or_else(|| ChordError::UnknownRoot {
            name: name.to_string(),
            root: body.chars().next().map(String::from).unwrap_or_default(),
        })?;
        let quality = Quality::from_suffix(suffix).ok_or_else(|| ChordError::UnknownQuality {
            name: name.to_string(),
            quality: suffix.to_string(),
        })?;
        let bass = match bass_text {
            None => root,
            Some(bass) => match split_note(bass) {
                Some((pc, "")) => pc,
                _ => {
                    return Err(ChordError::UnknownBass {
                        name: name.to_string(),
                        bass: bass.to_string(),
                    });
                }
            },
        };
        Ok(Chord::new(root, quality).over(bass))
    }
}

/// Splits "F#m7" into (F#, "m7"). Only `#`, `♯`, `b` and `♭` count as accidentals, so that
/// "Asus" stays A + "sus" (unlike [`PitchClass::parse`], which reads "As" as A#).
fn split_note(text: &str) -> Option<(PitchClass, &str)> {
    let mut chars = text.chars();
    let natural = PitchClass::natural_semitone(chars.next()?)?;
    let rest = chars.as_str();
    let (shift, rest) = match rest.chars().next() {
        Some(c @ ('#' | '♯')) => (1, &rest[c.len_utf8()..]),
        Some(c @ ('b' | '♭')) => (-1, &rest[c.len_utf8()..]),
        _ => (0, rest),
    };
    let pc = PitchClass::from_index((natural + shift).rem_euclid(12) as u8);
    Some((pc, rest))
}

impl fmt::Display for Chord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.root.name(), self.quality.suffix())?;
        if self.bass != self.root {
            write!(f, "/{}", self.bass.name())?;
        }
        Ok(())
    }
}

/// Why a chord name could not be read; each message names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordError {
    Empty,
    UnknownRoot { name: String, root: String },
    UnknownQuality { name: String, quality: String },
    UnknownBass { name: String, bass: String },
}

impl fmt::Display for ChordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NOTE_HINT: &str = "expected A–G with optional # or b";
        match self {
            ChordError::Empty => write!(f, "empty chord name"),
            ChordError::UnknownRoot { name, root } => {
                write!(f, "{name}: unknown root '{root}' ({NOTE_HINT})")
            }
            ChordError::UnknownQuality { name, quality } => write!(
                f,
                "{name}: unknown chord type '{quality}' (expected one of m, dim, aug, sus2, \
                 sus4, 5, 7, maj7, m7, m7b5, dim7, 6, m6, add9)"
            ),
            ChordError::UnknownBass { name, bass } => {
                write!(
                    f,
                    "{name}: unknown bass note '{bass}' after '/' ({NOTE_HINT})"
                )
            }
        }
    }
}

impl std::error::Error for ChordError {}

/// The MIDI notes held on the chord input, as a 128-bit set: notes that arrive a few samples
/// apart just add to the set, and the chord is recognised whenever it is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldNotes {
    bits: u128,
}

impl HeldNotes {
    pub const fn new() -> HeldNotes {
        HeldNotes { bits: 0 }
    }

    /// Pitches above 127 are not MIDI notes and are ignored.
    pub fn note_on(&mut self, pitch: u8) {
        if pitch < 128 {
            self.bits |= 1 << pitch;
        }
    }

    pub fn note_off(&mut self, pitch: u8) {
        if pitch < 128 {
            self.bits &= !(1 << pitch);
        }
    }

    /// Releases everything (transport stop, all-notes-off).
    pub fn clear(&mut self) {
        self.bits = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    pub fn contains(&self, pitch: u8) -> bool {
        pitch < 128 && self.bits & (1 << pitch) != 0
    }

    /// The held pitch classes (bit `i` = pitch class `i`).
    pub fn mask(&self) -> u16 {
        let mut mask = 0;
        let mut rest = self.bits;
        while rest != 0 {
            mask |= 1 << (rest.trailing_zeros() % 12);
            rest &= rest - 1;
        }
        mask
    }

    /// The lowest held pitch: the bass.
    pub fn lowest(&self) -> Option<u8> {
        (self.bits != 0).then(|| self.bits.trailing_zeros() as u8)
    }

    /// The chord the held notes form, with the lowest note as bass.
    pub fn chord(&self) -> Option<Chord> {
        Chord::recognize(self.mask(), self.lowest().map(PitchClass::from_index))
    }
}

/// One chord of a progression, in quarter-note beats from the progression's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChordSpan {
    pub start: f64,
    pub length: f64,
    pub chord: Chord,
}

/// A chord progression: chords at beat positions, in order, not overlapping. Stretches
/// without a chord (N.C., rests) are gaps between spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progression {
    spans: Vec<ChordSpan>,
    length: f64,
}

/// A MIDI chord track's segments shorter than this (in beats) are strum or release raggedness,
/// not chords: a good default for [`Progression::from_midi_notes`].
pub const DEFAULT_MIN_CHORD_BEATS: f64 = 0.125;

impl Progression {
    /// Reads a progression such as "Am F C G" (one chord per bar) or "Am:2 F:2 C G" (`:N` =
    /// N beats, fractions allowed). "N.C." or "-" is a bar (or `:N` beats) without a chord.
    pub fn parse(text: &str, beats_per_bar: f64) -> Result<Progression, ProgressionError> {
        if !(beats_per_bar.is_finite() && beats_per_bar > 0.0) {
            return Err(ProgressionError::BarLength(beats_per_bar));
        }
        let mut spans = Vec::new();
        let mut start = 0.0;
        for (index, token) in text.split_whitespace().enumerate() {
            let position = index + 1;
            let (name, length) = match token.rsplit_once(':') {
                Some((name, beats)) => match beats.parse::<f64>() {
                    Ok(beats) if beats.is_finite() && beats > 0.0 => (name, beats),
                    _ => {
                        return Err(ProgressionError::Length {
                            position,
                            token: token.to_string(),
                        });
                    }
                },
                None => (token, beats_per_bar),
            };
            if !is_no_chord(name) {
                let chord = Chord::parse(name)
                    .map_err(|error| ProgressionError::Chord { position, error })?;
                spans.push(ChordSpan {
                    start,
                    length,
                    chord,
                });
            }
            start += length;
        }
        Ok(Progression {
            spans,
            length: start,
        })
    }

    /// Reads a chord track from a MIDI file's notes `(start, duration, pitch)` in beats.
    ///
    /// The track is cut at every note-on and note-off. A piece shorter than `min_beats` is
    /// not a chord of its own: one that begins with a note-on joins the next piece (a strummed
    /// or sloppy attack: the chord starts at its first note), one that begins with note-offs
    /// only joins the previous piece (a ragged release). Pieces then become chords by
    /// [`Chord::recognize`] with the lowest note as bass, silence and unnamed sets become
    /// gaps, and equal neighbours merge.
    pub fn from_midi_notes(notes: &[(f64, f64, u8)], min_beats: f64) -> Progression {
        let notes: Vec<(f64, f64, u8)> = notes
            .iter()
            .filter(|(start, duration, pitch)| {
                start.is_finite() && duration.is_finite() && *duration > 0.0 && *pitch < 128
            })
            .map(|&(start, duration, pitch)| (start, start + duration, pitch))
            .collect();
        let pieces = absorb_short_pieces(cut_at_note_edges(&notes), min_beats);

        let mut spans: Vec<(f64, f64, Chord)> = Vec::new();
        for piece in pieces {
            let Some(chord) = piece.held.chord() else {
                continue;
            };
            match spans.last_mut() {
                Some((_, end, last)) if *last == chord && *end == piece.start => *end = piece.end,
                _ => spans.push((piece.start, piece.end, chord)),
            }
        }
        Progression {
            spans: spans
                .into_iter()
                .map(|(start, end, chord)| ChordSpan {
                    start,
                    length: end - start,
                    chord,
                })
                .collect(),
            length: notes.iter().map(|n| n.1).fold(0.0, f64::max),
        }
    }

    pub fn spans(&self) -> &[ChordSpan] {
        &self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Total length in beats, trailing N.C. included (what a loop of it repeats after).
    pub fn length_beats(&self) -> f64 {
        self.length
    }

    /// The chord sounding at a beat; `None` in a gap or outside the progression.
    pub fn chord_at(&self, beat: f64) -> Option<Chord> {
        let after = self.spans.partition_point(|span| span.start <= beat);
        let span = self.spans.get(after.checked_sub(1)?)?;
        (beat < span.start + span.length).then_some(span.chord)
    }
}

fn is_no_chord(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "N.C." | "N.C" | "NC" | "-"
    )
}

/// A stretch of a MIDI chord track during which the same notes sound.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: f64,
    end: f64,
    held: HeldNotes,
    begins_with_note_on: bool,
}

/// Cuts notes `(start, end, pitch)` at every note edge.
fn cut_at_note_edges(notes: &[(f64, f64, u8)]) -> Vec<Piece> {
    let mut edges: Vec<f64> = notes.iter().flat_map(|n| [n.0, n.1]).collect();
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    edges
        .windows(2)
        .map(|edge| {
            let (start, end) = (edge[0], edge[1]);
            let mut held = HeldNotes::new();
            for &(_, _, pitch) in notes.iter().filter(|n| n.0 < end && n.1 > start) {
                held.note_on(pitch);
            }
            Piece {
                start,
                end,
                held,
                begins_with_note_on: notes.iter().any(|n| n.0 == start),
            }
        })
        .collect()
}

/// Gives each piece shorter than `min_beats` to a neighbour (see
/// [`Progression::from_midi_notes`]). Neighbours are always contiguous: pieces tile the track.
fn absorb_short_pieces(pieces: Vec<Piece>, min_beats: f64) -> Vec<Piece> {
    let mut kept: Vec<Piece> = Vec::with_capacity(pieces.len());
    let mut waiting_start: Option<f64> = None;
    let count = pieces.len();
    for (index, mut piece) in pieces.into_iter().enumerate() {
        if let Some(start) = waiting_start.take() {
            piece.start = start;
        }
        let is_last = index + 1 == count;
        if piece.end - piece.start >= min_beats {
            kept.push(piece);
        } else if piece.begins_with_note_on && !is_last {
            waiting_start = Some(piece.start);
        } else if let Some(previous) = kept.last_mut() {
            previous.end = piece.end;
        } else if !is_last {
            waiting_start = Some(piece.start);
        }
    }
    kept
}

/// Why a progression could not be read; positions count chords from 1.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressionError {
    Chord { position: usize, error: ChordError },
    Length { position: usize, token: String },
    BarLength(f64),
}

impl fmt::Display for ProgressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressionError::Chord { position, error } => write!(f, "chord {position}: {error}"),
            ProgressionError::Length { position, token } => write!(
                f,
                "chord {position}: {token}: the length after ':' must be a positive number \
                 of beats, as in Am:2"
            ),
            ProgressionError::BarLength(beats) => {
                write!(f, "a bar must last a positive number of beats, not {beats}")
            }
        }
    }
}

impl std::error::Error for ProgressionError {}

/// Bars [`ChordMemory`] remembers: two cycles of the longest period it looks for.
pub const MEMORY_BARS: usize = 16;
/// Quarter-note slots per bar (16 covers every meter up to 16/4).
pub const SLOTS_PER_BAR: usize = 16;
/// The bars checked for a consistent period: recent enough that a new progression takes over
/// within 8 bars, long enough to hold a whole 8-bar cycle.
pub const WINDOW_BARS: i64 = 8;
/// Candidate periods in bars, shortest first.
const PERIODS: [i64; 4] = [1, 2, 4, 8];

/// What was heard in one beat slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Slot {
    #[default]
    Unheard,
    NoChord,
    Heard(Chord),
}

impl Slot {
    /// Same harmony: equal pitch classes, so a change of inversion does not break a loop.
    fn sounds_like(self, other: Slot) -> bool {
        match (self, other) {
            (Slot::Heard(a), Slot::Heard(b)) => a.pitch_classes() == b.pitch_classes(),
            _ => self == other,
        }
    }
}

/// Remembers the chords heard live and predicts the chord at a coming beat by assuming the
/// progression repeats (rule in the module doc). Fixed size, no allocation: safe to use on
/// the audio thread.
///
/// `bar` must count bars as heard, increasing (for example bars since play started, carrying
/// on across a host loop's wrap): it is time, not song position.
#[derive(Debug, Clone, Copy)]
pub struct ChordMemory {
    /// The bar each row of `slots` holds (rows are reused by `bar mod MEMORY_BARS`).
    row_bar: [Option<i64>; MEMORY_BARS],
    slots: [[Slot; SLOTS_PER_BAR]; MEMORY_BARS],
    newest_bar: Option<i64>,
    last_chord: Option<Chord>,
}

impl Default for ChordMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl ChordMemory {
    pub const fn new() -> ChordMemory {
        ChordMemory {
            row_bar: [None; MEMORY_BARS],
            slots: [[Slot::Unheard; SLOTS_PER_BAR]; MEMORY_BARS],
            newest_bar: None,
            last_chord: None,
        }
    }

    /// Forgets everything (a new song, or the player wants a fresh start).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Records the chord sounding (or `None`) at a beat. Call it as often as convenient: in a
    /// beat slot a chord replaces silence, and a later chord replaces an earlier one, so a
    /// slot keeps the chord the beat settled on.
    pub fn observe(&mut self, bar: i64, beat_in_bar: f64, chord: Option<Chord>) {
        let Some(slot) = slot_index(beat_in_bar) else {
            return;
        };
        if self
            .newest_bar
            .is_some_and(|newest| bar <= newest.saturating_sub(MEMORY_BARS as i64))
        {
            return;
        }
        let row = bar.rem_euclid(MEMORY_BARS as i64) as usize;
        if self.row_bar[row] != Some(bar) {
            self.row_bar[row] = Some(bar);
            self.slots[row] = [Slot::Unheard; SLOTS_PER_BAR];
        }
        let cell = &mut self.slots[row][slot];
        match chord {
            Some(chord) => {
                *cell = Slot::Heard(chord);
                self.last_chord = Some(chord);
            }
            None if *cell == Slot::Unheard => *cell = Slot::NoChord,
            None => {}
        }
        self.newest_bar = Some(self.newest_bar.map_or(bar, |newest| newest.max(bar)));
    }

    /// The shortest period (1, 2, 4 or 8 bars) the recent bars agree with, if any.
    pub fn period_bars(&self) -> Option<i64> {
        let newest = self.newest_bar?;
        PERIODS
            .into_iter()
            .find(|&period| self.repeats_every(newest, period))
    }

    /// The chord expected at a beat: the one heard a whole number of periods earlier at the
    /// same slot, else the last chord heard.
    pub fn predict(&self, bar: i64, beat_in_bar: f64) -> Option<Chord> {
        if let (Some(period), Some(newest), Some(slot)) =
            (self.period_bars(), self.newest_bar, slot_index(beat_in_bar))
        {
            // Whole periods back to a bar already heard, then further back while unheard.
            let periods_back = if bar > newest {
                bar.saturating_sub(newest).saturating_add(period - 1) / period
            } else {
                1
            };
            let mut source = bar.saturating_sub(periods_back.saturating_mul(period));
            while source > newest.saturating_sub(MEMORY_BARS as i64) {
                match self.slot(source, slot) {
                    Slot::Heard(chord) => return Some(chord),
                    Slot::NoChord => return None,
                    Slot::Unheard => source = source.saturating_sub(period),
                }
            }
        }
        self.last_chord
    }

    fn slot(&self, bar: i64, slot: usize) -> Slot {
        let row = bar.rem_euclid(MEMORY_BARS as i64) as usize;
        if self.row_bar[row] == Some(bar) {
            self.slots[row][slot]
        } else {
            Slot::Unheard
        }
    }

    /// Whether every slot heard in the window matches the slot one period earlier, with at
    /// least one such pair to go on.
    fn repeats_every(&self, newest: i64, period: i64) -> bool {
        let mut compared = 0;
        for bar in newest.saturating_sub(WINDOW_BARS - 1)..=newest {
            for slot in 0..SLOTS_PER_BAR {
                let before = self.slot(bar.saturating_sub(period), slot);
                let now = self.slot(bar, slot);
                if now == Slot::Unheard || before == Slot::Unheard {
                    continue;
                }
                if !now.sounds_like(before) {
                    return false;
                }
                compared += 1;
            }
        }
        compared > 0
    }
}

/// The quarter-note slot of a beat within its bar; `None` for nonsense (negative, NaN).
fn slot_index(beat_in_bar: f64) -> Option<usize> {
    (beat_in_bar.is_finite() && beat_in_bar >= 0.0)
        .then(|| (beat_in_bar as usize).min(SLOTS_PER_BAR - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PitchClass as P;

    /// Live types must own no heap memory: only such types can be `Copy`.
    const _: () = {
        const fn copy<T: Copy>() {}
        copy::<HeldNotes>();
        copy::<ChordMemory>();
        copy::<Chord>();
    };

    fn held(pitches: &[u8]) -> HeldNotes {
        let mut notes = HeldNotes::new();
        for &pitch in pitches {
            notes.note_on(pitch);
        }
        notes
    }

    fn chord(name: &str) -> Chord {
        Chord::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn voicings_are_named_with_the_lowest_note_as_bass() {
        #[rustfmt::skip]
        let table: &[(&[u8], &str)] = &[
            // Triads, root position and inversions.
            (&[60, 64, 67], "C"),
            (&[64, 67, 72], "C/E"),
            (&[67, 72, 76], "C/G"),
            (&[57, 60, 64], "Am"),
            (&[60, 64, 69], "Am/C"),
            (&[62, 65, 70], "Bb/D"),
            (&[59, 62, 65], "Bdim"),
            (&[60, 64, 68], "Caug"),
            (&[60, 65, 67], "Csus4"),
            (&[60, 62, 67], "Csus2"),
            (&[55, 62, 67], "G5"),
            // Sevenths and sixths; the bass decides between C6 and Am7.
            (&[55, 59, 62, 65], "G7"),
            (&[60, 64, 67, 71], "Cmaj7"),
            (&[57, 60, 64, 67], "Am7"),
            (&[48, 57, 64, 67], "C6"),
            (&[54, 57, 61, 64], "F#m7"),
            (&[59, 62, 65, 69], "Bm7b5"),
            (&[60, 63, 66, 69], "Cdim7"),
            (&[57, 60, 64, 66], "Am6"),
            (&[60, 62, 64, 67], "Cadd9"),
            (&[64, 67, 70, 72], "C7/E"),
            // A seventh without its fifth, and a ninth read as its seventh chord.
            (&[48, 52, 58], "C7"),
            (&[48, 52, 55, 58, 62], "C7"),
            // Dyads: thirds and fifths name a chord, with the third's lower note as root.
            (&[60, 64], "C"),
            (&[57, 60], "Am"),
            (&[60, 63], "Cm"),
            (&[64, 72], "C/E"),
            (&[60, 67], "C5"),
            (&[55, 60], "C5/G"),
            // Doubled notes.
            (&[48, 60, 64, 67, 72, 76], "C"),
            (&[45, 57, 60, 64, 69], "Am"),
            (&[40, 52, 59, 64, 67, 71], "Em"),
            // A bass outside the chord.
            (&[48, 62, 66, 69], "D7/C"),
            (&[58, 60, 64, 67], "C7/Bb"),
            (&[54, 60, 64, 67], "C/F#"),
            (&[54, 62, 67, 71], "Gmaj7/F#"),
        ];
        for (pitches, expected) in table {
            let named = held(pitches).chord().map(|c| c.name().to_string());
            assert_eq!(named.as_deref(), Some(*expected), "{pitches:?}");
        }
    }

    #[test]
    fn too_little_or_no_harmony_is_no_chord() {
        for pitches in [
            &[][..],
            &[60],
            &[60, 72],
            &[60, 61, 62],
            &[59, 65],
            &[60, 62],
        ] {
            assert_eq!(held(pitches).chord(), None, "{pitches:?}");
        }
        assert_eq!(Chord::recognize(0xFFF, None), None);
    }

    #[test]
    fn the_bass_picks_the_root_of_an_ambiguous_set() {
        let a_c_e_g = chord("Am7").pitch_classes();
        assert_eq!(Chord::recognize(a_c_e_g, Some(P::A)), Some(chord("Am7")));
        assert_eq!(Chord::recognize(a_c_e_g, Some(P::C)), Some(chord("C6")));
        assert_eq!(Chord::recognize(a_c_e_g, None), Some(chord("Am7")));
        let c_f_g = chord("Csus4").pitch_classes();
        assert_eq!(Chord::recognize(c_f_g, Some(P::F)), Some(chord("Fsus2")));
        let dim7 = chord("Cdim7").pitch_classes();
        assert_eq!(Chord::recognize(dim7, Some(P::A)), Some(chord("Adim7")));
    }

    #[test]
    fn every_chord_is_recognised_from_its_own_notes_over_its_root() {
        for root in (0..12).map(PitchClass::from_index) {
            for quality in Quality::ALL {
                let c = Chord::new(root, quality);
                assert_eq!(Chord::recognize(c.pitch_classes(), Some(root)), Some(c));
            }
        }
    }

    #[test]
    fn names_parse_back_to_the_same_chord_for_every_quality_and_root() {
        for root in (0..12).map(PitchClass::from_index) {
            for quality in Quality::ALL {
                for bass in [root, PitchClass::from_index(root.semitone() + 4)] {
                    let c = Chord::new(root, quality).over(bass);
                    assert_eq!(Chord::parse(&c.name().to_string()), Ok(c));
                }
            }
        }
    }

    #[test]
    fn common_spellings_parse() {
        let spellings = [
            ("Am", "Am"),
            ("A-", "Am"),
            ("Amin", "Am"),
            ("AM7", "Amaj7"),
            ("Amaj7", "Amaj7"),
            ("A7", "A7"),
            ("Adim", "Adim"),
            ("A°", "Adim"),
            ("Aaug", "Aaug"),
            ("A+", "Aaug"),
            ("Asus", "Asus4"),
            ("Asus2", "Asus2"),
            ("Asus4", "Asus4"),
            ("A5", "A5"),
            ("Am7b5", "Am7b5"),
            ("Aø", "Am7b5"),
            ("Adim7", "Adim7"),
            ("A6", "A6"),
            ("Am6", "Am6"),
            ("A/C#", "A/C#"),
            ("Bb", "Bb"),
            ("F#m", "F#m"),
            ("Db", "C#"),
            (" ebm7 ", "Ebm7"),
            ("Cadd9", "Cadd9"),
        ];
        for (text, name) in spellings {
            let parsed = Chord::parse(text).map(|c| c.name().to_string());
            assert_eq!(parsed.as_deref(), Ok(name), "{text}");
        }
    }

    #[test]
    fn bad_names_say_which_part_is_wrong() {
        let error = Chord::parse("H7").unwrap_err();
        assert_eq!(
            error,
            ChordError::UnknownRoot {
                name: "H7".into(),
                root: "H".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "H7: unknown root 'H' (expected A–G with optional # or b)"
        );
        assert_eq!(
            Chord::parse("Cxyz"),
            Err(ChordError::UnknownQuality {
                name: "Cxyz".into(),
                quality: "xyz".into()
            })
        );
        assert_eq!(
            Chord::parse("C/H"),
            Err(ChordError::UnknownBass {
                name: "C/H".into(),
                bass: "H".into()
            })
        );
        assert_eq!(
            Chord::parse("Am/C7"),
            Err(ChordError::UnknownBass {
                name: "Am/C7".into(),
                bass: "C7".into()
            })
        );
        assert_eq!(Chord::parse("  "), Err(ChordError::Empty));
    }

    #[test]
    fn masks_are_absolute_or_relative_to_the_key() {
        assert_eq!(chord("C").pitch_classes(), 0b0000_1001_0001);
        assert_eq!(chord("Am").pitch_classes(), 0b0010_0001_0001);
        // Am in A minor and Em in E minor are both the tonic triad: C's shape.
        // The tonic triad of any minor key has the same relative mask.
        assert_eq!(chord("Am").relative_mask(P::A), tones(&[0, 3, 7]));
        assert_eq!(
            chord("Em").relative_mask(P::E),
            chord("Am").relative_mask(P::A)
        );
        // G7 in C: scale degrees 7, 11, 2, 5.
        assert_eq!(chord("G7").relative_mask(P::C), tones(&[7, 11, 2, 5]));
        assert_eq!(chord("D7").relative_mask(P::D), tones(&[0, 4, 7, 10]));
        // The bass sounds, so a foreign bass joins the mask.
        assert_eq!(chord("C/Bb").pitch_classes(), tones(&[0, 4, 7, 10]));
    }

    #[test]
    fn progressions_read_bars_and_beats() {
        let bars = Progression::parse("Am F C G", 4.0).unwrap();
        let starts: Vec<f64> = bars.spans().iter().map(|s| s.start).collect();
        assert_eq!(starts, [0.0, 4.0, 8.0, 12.0]);
        assert_eq!(bars.length_beats(), 16.0);
        assert_eq!(bars.chord_at(5.0), Some(chord("F")));
        assert_eq!(bars.chord_at(15.99), Some(chord("G")));
        assert_eq!(bars.chord_at(16.0), None);
        assert_eq!(bars.chord_at(-1.0), None);

        let beats = Progression::parse("Am:2 F:2 C G:1.5", 4.0).unwrap();
        let layout: Vec<(f64, f64)> = beats.spans().iter().map(|s| (s.start, s.length)).collect();
        assert_eq!(layout, [(0.0, 2.0), (2.0, 2.0), (4.0, 4.0), (8.0, 1.5)]);
        assert_eq!(beats.length_beats(), 9.5);

        let waltz = Progression::parse("C N.C. - Dm7:6", 3.0).unwrap();
        assert_eq!(waltz.spans().len(), 2);
        assert_eq!(waltz.chord_at(4.0), None);
        assert_eq!(waltz.chord_at(9.0), Some(chord("Dm7")));
        assert_eq!(waltz.length_beats(), 15.0);

        assert!(Progression::parse("  ", 4.0).unwrap().is_empty());
    }

    #[test]
    fn progression_errors_name_the_chord_and_the_part() {
        assert_eq!(
            Progression::parse("Am H7", 4.0),
            Err(ProgressionError::Chord {
                position: 2,
                error: ChordError::UnknownRoot {
                    name: "H7".into(),
                    root: "H".into()
                }
            })
        );
        for bad in ["Am:x", "Am:0", "Am:-2", "Am:"] {
            assert_eq!(
                Progression::parse(bad, 4.0),
                Err(ProgressionError::Length {
                    position: 1,
                    token: bad.into()
                })
            );
        }
        assert_eq!(
            Progression::parse("Am", 0.0),
            Err(ProgressionError::BarLength(0.0))
        );
        assert_eq!(
            Progression::parse("C H7", 4.0).unwrap_err().to_string(),
            "chord 2: H7: unknown root 'H' (expected A–G with optional # or b)"
        );
    }

    /// Notes a few ticks apart at 480 ticks per quarter.
    const TICK: f64 = 1.0 / 480.0;

    /// The spans as (start tick, end tick, name), free of float rounding.
    fn layout(progression: &Progression) -> Vec<(i64, i64, String)> {
        let tick = |beats: f64| (beats / TICK).round() as i64;
        progression
            .spans()
            .iter()
            .map(|s| {
                (
                    tick(s.start),
                    tick(s.start + s.length),
                    s.chord.name().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_midi_chord_track_becomes_a_progression() {
        let notes = [
            // C major strummed: notes a few ticks apart, released raggedly.
            (0.0, 4.0 - 2.0 * TICK, 60),
            (3.0 * TICK, 4.0 - 3.0 * TICK, 64),
            (6.0 * TICK, 4.0 - 6.0 * TICK, 67),
            // F over the next bar, played legato (overlapping C's release by a tick).
            (4.0 - TICK, 4.0, 65),
            (4.0, 4.0, 69),
            (4.0 + 2.0 * TICK, 4.0 - 2.0 * TICK, 72),
            // A rest, then G twice in a row with another voicing: one chord.
            (10.0, 1.0, 55),
            (10.0, 1.0, 59),
            (10.0, 1.0, 62),
            (11.0, 1.0, 67),
            (11.0, 1.0, 71),
            (11.0, 1.0, 62),
            (11.0, 1.0, 55),
            // A stab too short to count, then Am over C.
            (12.0, 0.05, 50),
            (12.0, 0.05, 53),
            (13.0, 2.0, 48),
            (13.0, 2.0, 57),
            (13.0, 2.0, 64),
        ];
        let progression = Progression::from_midi_notes(&notes, DEFAULT_MIN_CHORD_BEATS);
        assert_eq!(
            layout(&progression),
            [
                (0, 1919, "C".to_string()),
                (1919, 3840, "F".to_string()),
                (4800, 5760, "G".to_string()),
                (6240, 7200, "Am/C".to_string()),
            ]
        );
        assert_eq!(progression.chord_at(9.0), None);
        assert_eq!(progression.chord_at(12.02), None);
        assert_eq!(progression.length_beats(), 15.0);
    }

    #[test]
    fn nonsense_midi_notes_are_skipped() {
        let notes = [
            (f64::NAN, 1.0, 60),
            (0.0, -1.0, 60),
            (0.0, 2.0, 200),
            (0.0, 2.0, 57),
            (0.0, 2.0, 60),
        ];
        let progression = Progression::from_midi_notes(&notes, DEFAULT_MIN_CHORD_BEATS);
        assert_eq!(layout(&progression), [(0, 960, "Am".to_string())]);
        assert!(Progression::from_midi_notes(&[], 0.125).is_empty());
    }

    #[test]
    fn held_notes_follow_note_ons_and_offs() {
        let mut notes = HeldNotes::new();
        notes.note_on(60);
        assert_eq!(notes.chord(), None);
        notes.note_on(64);
        assert_eq!(notes.chord(), Some(chord("C")));
        notes.note_on(67);
        notes.note_on(67);
        notes.note_on(200);
        assert_eq!(notes.chord(), Some(chord("C")));
        notes.note_on(45);
        assert_eq!(notes.lowest(), Some(45));
        assert_eq!(notes.chord(), Some(chord("Am7")));
        notes.note_off(45);
        notes.note_off(60);
        assert!(notes.contains(64) && !notes.contains(60));
        assert_eq!(notes.mask(), tones(&[4, 7]));
        assert_eq!(notes.chord(), Some(chord("Em")));
        notes.clear();
        assert!(notes.is_empty());
        assert_eq!(notes.lowest(), None);
    }

    /// Plays `text` (one chord per bar or `:N` beats) into the memory over `bars`, looping,
    /// observing each beat several times as the audio thread would.
    fn play(memory: &mut ChordMemory, text: &str, bars: std::ops::Range<i64>) {
        let progression = Progression::parse(text, 4.0).unwrap();
        let cycle = progression.length_beats();
        for bar in bars {
            for step in 0..16 {
                let beat_in_bar = step as f64 * 0.25;
                let beat = (bar as f64 * 4.0 + beat_in_bar) % cycle;
                memory.observe(bar, beat_in_bar, progression.chord_at(beat));
            }
        }
    }

    #[test]
    fn a_two_bar_progression_is_predicted() {
        let mut memory = ChordMemory::new();
        play(&mut memory, "Am F", 0..1);
        assert_eq!(memory.period_bars(), None);
        assert_eq!(
            memory.predict(1, 0.0),
            Some(chord("Am")),
            "last chord continues"
        );
        play(&mut memory, "Am F", 1..3);
        assert_eq!(memory.period_bars(), Some(2));
        assert_eq!(memory.predict(3, 0.0), Some(chord("F")));
        assert_eq!(memory.predict(4, 2.5), Some(chord("Am")));
        assert_eq!(memory.predict(101, 3.0), Some(chord("F")));
    }

    #[test]
    fn a_four_bar_progression_is_predicted_after_its_first_bar_comes_back() {
        let mut memory = ChordMemory::new();
        play(&mut memory, "Am F C G", 0..4);
        assert_eq!(memory.period_bars(), None);
        assert_eq!(memory.predict(4, 0.0), Some(chord("G")));
        memory.observe(4, 0.0, Some(chord("Am")));
        assert_eq!(memory.period_bars(), Some(4));
        assert_eq!(memory.predict(4, 2.0), Some(chord("Am")));
        assert_eq!(memory.predict(5, 0.0), Some(chord("F")));
        assert_eq!(memory.predict(6, 1.0), Some(chord("C")));
        assert_eq!(memory.predict(7, 3.0), Some(chord("G")));
        assert_eq!(memory.predict(8, 0.0), Some(chord("Am")));
    }

    #[test]
    fn a_repeated_chord_does_not_hide_a_longer_period() {
        let mut memory = ChordMemory::new();
        play(&mut memory, "Am Am F G", 0..10);
        assert_eq!(memory.period_bars(), Some(4));
        assert_eq!(memory.predict(10, 0.0), Some(chord("F")));
    }

    #[test]
    fn a_one_bar_progression_is_predicted_within_the_bar() {
        let mut memory = ChordMemory::new();
        play(&mut memory, "Am:2 F:2", 0..2);
        assert_eq!(memory.period_bars(), Some(1));
        assert_eq!(memory.predict(2, 0.5), Some(chord("Am")));
        assert_eq!(memory.predict(2, 2.5), Some(chord("F")));
    }

    #[test]
    fn a_new_chord_changes_the_prediction() {
        let mut memory = ChordMemory::new();
        play(&mut memory, "Am F", 0..4);
        assert_eq!(memory.predict(4, 0.0), Some(chord("Am")));
        memory.observe(4, 0.0, Some(chord("Dm")));
        assert_eq!(memory.period_bars(), None);
        assert_eq!(memory.predict(4, 2.0), Some(chord("Dm")));
        assert_eq!(memory.predict(5, 0.0), Some(chord("Dm")));
        // The new two-bar loop takes over once the old one leaves the window.
        play(&mut memory, "Dm G", 4..13);
        assert_eq!(
            memory.period_bars(),
            None,
            "bar 4 vs bar 2 is still in the window"
        );
        play(&mut memory, "Dm G", 13..14);
        assert_eq!(memory.period_bars(), Some(2));
        assert_eq!(memory.predict(14, 0.0), Some(chord("Dm")));
        assert_eq!(memory.predict(15, 0.0), Some(chord("G")));
    }

    #[test]
    fn silence_and_inversions_in_the_memory() {
        let mut memory = ChordMemory::new();
        // "C, then a bar of rest" twice: the rest is part of the loop.
        play(&mut memory, "C N.C.", 0..4);
        assert_eq!(memory.period_bars(), Some(2));
        assert_eq!(memory.predict(5, 0.0), None);
        assert_eq!(memory.predict(6, 0.0), Some(chord("C")));
        // An inversion is the same harmony for the period.
        let mut memory = ChordMemory::new();
        play(&mut memory, "C G C/E G", 0..4);
        assert_eq!(memory.period_bars(), Some(2));
        // Old and nonsense observations are ignored.
        memory.observe(-20, 0.0, Some(chord("Bdim")));
        memory.observe(3, f64::NAN, Some(chord("Bdim")));
        assert_eq!(memory.period_bars(), Some(2));
        memory.clear();
        assert_eq!(memory.predict(0, 0.0), None);
    }
}
