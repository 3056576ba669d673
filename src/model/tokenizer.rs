//! The event representation the neural model reads and writes.
//!
//! A melody becomes one token sequence:
//!
//! ```text
//! BOS  STYLE  METER  KEY  (PITCH|REST  DUR)*  END
//! ```
//!
//! - `STYLE`: an optional tag from the collection or tune type ("reel", "chorale", ...);
//!   `STYLE_ANY` when unknown. Training drops the tag now and then so `STYLE_ANY` means
//!   "any style" at generation time.
//! - `METER`: the time signature (common ones get their own token, others share one).
//! - `KEY`: tonic + mode (major/minor flavour, as `Scale::is_minor` sees it).
//! - Each note or rest is two tokens: its pitch (or `REST`), then its inter-onset duration on the Markov baseline's grid (`TPQ` = 12 ticks per
//!   quarter, so sixteenths, triplets and dotted values up to a whole note are exact).
//!   Silence before the first note (a pickup) is written as rests so onsets round-trip.
//! - Pitches are written **relative to the key**: token pitch = MIDI pitch − the tonic's
//!   pitch class (0..=11), octave kept, in 24..=107. A D-major tune and the same tune in C
//!   give the same tokens, so the model does not have to learn every tune in twelve keys
//!   (with absolute pitches a 1M-parameter LSTM stayed above the Markov baseline after
//!   two epochs). Transposition augmentation still matters: moving a tune across the
//!   tonic's octave boundary (D → B) moves it an octave in token space, so the model
//!   learns each melody shape in several registers.
//!
//! Bar lines are not tokens: every token also carries an [`Onset`], where the next note
//! starts once this token is read: its **position in the bar** (derived from the durations,
//! never predicted), how many bars are left to the end of the 8-bar **strain** (so the
//! model learns where phrases close: the corpus's tunes are 8-bar strains with 4-bar
//! halves), and the **chord** sounding there, relative to the key (the Bach chorales give
//! the other voices' chord under every note; tunes without chords read "no chord"). The model reads the sequence one note per
//! step ([`NoteSeq`]: previous pitch and duration, position of the next onset, header as
//! conditioning), which keeps recurrent steps few (speed) while it always knows where the
//! downbeat is.
//!
//! Events are exactly the Markov baseline's (both quantise with `grid::events_of`), so both
//! models are scored on the same notes.

use super::grid::{DURATIONS, TPQ, bar_ticks, duration_token, events_of, histogram};
use crate::midi::{Melody, MelodyNote};
use crate::music::chord::transpose_mask;
use crate::music::{Key, Meter, PitchClass, Scale, detect_key};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const END: u32 = 2;
pub const REST: u32 = 3;
/// Lowest and highest pitch the vocabulary can say (C1..B7).
pub const PITCH_LOW: u8 = 24;
pub const PITCH_HIGH: u8 = 107;
pub const PITCH0: u32 = 4;
pub const DUR0: u32 = PITCH0 + (PITCH_HIGH - PITCH_LOW + 1) as u32;
pub const METER0: u32 = DUR0 + DURATIONS.len() as u32;
/// Meters with their own token; anything else maps to the extra "other" token after them.
pub const METERS: [(u8, u8); 11] = [
    (4, 4),
    (2, 4),
    (3, 4),
    (2, 2),
    (6, 8),
    (9, 8),
    (12, 8),
    (3, 8),
    (3, 2),
    (5, 4),
    (6, 4),
];
pub const KEY0: u32 = METER0 + METERS.len() as u32 + 1;
pub const STYLE0: u32 = KEY0 + 24;
pub const VOCAB: usize = (STYLE0 + Style::COUNT as u32) as usize;
/// Position-in-bar values the model distinguishes (ticks); longer bars are clamped.
pub const MAX_POS: usize = 96;
/// Bars in a strain, the unit the `cadence` input counts down (the corpus's tunes are
/// built of 8-bar strains with 4-bar halves: antecedent, then consequent).
pub const STRAIN_BARS: u8 = 8;
/// The chord input: 12 pitch classes relative to the tonic, plus a "no chord" flag.
pub const CHORD_INPUTS: usize = 13;

/// What the model knows about the moment the next note starts, besides the notes before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Onset {
    /// Position in the bar (ticks), clamped below [`MAX_POS`].
    pub pos: u16,
    /// Bars left to the end of the strain: 0 is the closing bar (full cadence), 4 the bar
    /// that ends the first half (half cadence). Read by format-3 models only.
    pub cadence: u8,
    /// The chord under the note: bit `i` set when the pitch class `i` semitones above the
    /// tonic sounds; 0 means no chord. Read by format-3 models only.
    pub chord: u16,
}

impl Onset {
    pub fn at(pos_ticks: u32) -> Onset {
        Onset {
            pos: (pos_ticks as usize).min(MAX_POS - 1) as u16,
            ..Onset::default()
        }
    }

    /// The onset's bars-to-cadence when it lies in bar `bar` of a piece whose strains start
    /// at bar `first` (the first full bar).
    pub fn with_strain(mut self, bar: i64, first: i64) -> Onset {
        self.cadence = STRAIN_BARS - 1 - (bar - first).rem_euclid(STRAIN_BARS as i64) as u8;
        self
    }

    /// The onset with `left` bars to the strain's cadence.
    pub fn with_strain_left(mut self, left: u8) -> Onset {
        self.cadence = left.min(STRAIN_BARS - 1);
        self
    }

    pub fn with_chord(mut self, chord: u16) -> Onset {
        self.chord = chord & 0xfff;
        self
    }
}

/// A chord given by absolute pitch classes (bit `i` = pitch class `i`, C = 0) made
/// relative to the key's tonic, as the model reads it.
pub fn relative_chord(absolute: u16, key: Key) -> u16 {
    transpose_mask(absolute, 12 - key.tonic.semitone())
}

/// Coarse style tags the corpus can provide (collection or the tune type in the title).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    #[default]
    Any = 0,
    Chorale,
    Reel,
    Jig,
    SlipJig,
    Hornpipe,
    March,
    Air,
    Waltz,
    Polka,
    Dance,
}

impl Style {
    pub const COUNT: usize = 11;
    const NAMES: [&str; Self::COUNT] = [
        "any", "chorale", "reel", "jig", "slip jig", "hornpipe", "march", "air", "waltz", "polka",
        "dance",
    ];

    /// Guesses the style from a file path and tune title: Bach chorale folders, the
    /// sections of O'Neill's *Music of Ireland* (by tune number: the book is ordered by
    /// tune type and its titles rarely name it), then tune-type **words** in titles
    /// ("Fairy Reel" is a reel, not an air; "The Slipjig" is a slip jig). Other folk tunes
    /// are `Dance`; unknown folders give `Any`. Waltz and polka are never guessed: the
    /// corpus has no such tunes, so those presets are conditioned as `Any` (see [`Style::parse`]).
    pub fn guess(path: &Path, title: &str) -> Style {
        let p = path.to_string_lossy().to_lowercase();
        let words: Vec<String> = title
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let has = |w: &str| {
            words
                .iter()
                .any(|x| x == w || x.strip_suffix('s') == Some(w))
        };
        let slip = has("slipjig") || words.windows(2).any(|w| w[0] == "slip" && w[1] == "jig");
        if p.contains("bach") || p.contains("chorale") || has("chorale") {
            return Style::Chorale;
        }
        if slip {
            return Style::SlipJig;
        }
        // Most specific words first; a clog is a hornpipe in 2/2.
        for (word, style) in [
            ("hornpipe", Style::Hornpipe),
            ("clog", Style::Hornpipe),
            ("reel", Style::Reel),
            ("jig", Style::Jig),
            ("march", Style::March),
            ("air", Style::Air),
        ] {
            if has(word) {
                return style;
            }
        }
        if let Some(style) = oneill_section(&p) {
            return style;
        }
        if p.contains("oneill") || p.contains("ryan") {
            Style::Dance
        } else {
            Style::Any
        }
    }

    /// The tag a preset's style name conditions the model on. Tags without training tunes
    /// (waltz, polka) fall back to `Any`, so their untrained embedding is never used.
    pub fn parse(name: &str) -> Option<Style> {
        let i = Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name.trim()))?;
        match Self::from_index(i) {
            Style::Waltz | Style::Polka => Some(Style::Any),
            style => Some(style),
        }
    }

    /// The meter the model is conditioned on for this style: reels and hornpipes were
    /// written in 2/2 (and 2/4), never 4/4, and a 2/2 bar is a 4/4 bar, so a 4/4 session
    /// asks for 2/2 and gets the style the model learned.
    pub fn model_meter(self, meter: Meter) -> Meter {
        match self {
            Style::Reel | Style::Hornpipe if meter == Meter::new(4, 4) => Meter::new(2, 2),
            _ => meter,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn from_index(i: usize) -> Style {
        use Style::*;
        [
            Any, Chorale, Reel, Jig, SlipJig, Hornpipe, March, Air, Waltz, Polka, Dance,
        ][i]
    }

    pub fn token(self) -> u32 {
        STYLE0 + self as u32
    }
}

/// The tune type of an O'Neill *Music of Ireland* file (`oneills_NNNN.mid`) from its number:
/// the book runs airs (1–663), double jigs (664–1115), slip jigs (1116–1175), reels
/// (1176–1557), hornpipes (1558–1750), then long dances and marches (left untagged).
/// Boundaries read off the corpus's meters, which change with each section.
fn oneill_section(path: &str) -> Option<Style> {
    let name = path.rsplit(['/', '\\']).next()?;
    let digits: String = name
        .strip_prefix("oneills_")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(match digits.parse::<u32>().ok()? {
        1..=663 => Style::Air,
        664..=1115 => Style::Jig,
        1116..=1175 => Style::SlipJig,
        1176..=1557 => Style::Reel,
        1558..=1750 => Style::Hornpipe,
        _ => return None,
    })
}

pub fn pitch_token(pitch: u8) -> Option<u32> {
    (PITCH_LOW..=PITCH_HIGH)
        .contains(&pitch)
        .then(|| PITCH0 + (pitch - PITCH_LOW) as u32)
}

/// The token-space (key-relative) pitch of a token, if it is a pitch token.
pub fn token_pitch(token: u32) -> Option<u8> {
    (PITCH0..DUR0)
        .contains(&token)
        .then(|| PITCH_LOW + (token - PITCH0) as u8)
}

/// The token for a MIDI pitch in `key`; `None` outside the vocabulary.
pub fn key_pitch_token(pitch: u8, key: Key) -> Option<u32> {
    pitch_token(u8::try_from(pitch as i32 - key.tonic.semitone() as i32).ok()?)
}

/// The MIDI pitch a pitch token stands for in `key`.
pub fn token_key_pitch(token: u32, key: Key) -> Option<u8> {
    token_pitch(token).map(|p| p + key.tonic.semitone())
}

pub fn dur_token(index: u8) -> u32 {
    DUR0 + index as u32
}

/// Duration in ticks of a duration token.
pub fn token_ticks(token: u32) -> Option<u32> {
    (DUR0..METER0)
        .contains(&token)
        .then(|| DURATIONS[(token - DUR0) as usize])
}

pub fn meter_token(meter: Meter) -> u32 {
    let i = METERS
        .iter()
        .position(|&(n, d)| meter == Meter::new(n, d))
        .unwrap_or(METERS.len());
    METER0 + i as u32
}

/// Key token: tonic × {major, minor}. Modes other than major/minor use their flavour.
pub fn key_token(key: Key) -> u32 {
    KEY0 + key.tonic.semitone() as u32 * 2 + key.scale.is_minor() as u32
}

pub fn token_key(token: u32) -> Option<Key> {
    (KEY0..STYLE0).contains(&token).then(|| {
        let i = token - KEY0;
        let scale = if i % 2 == 1 {
            Scale::Minor
        } else {
            Scale::Major
        };
        Key::new(PitchClass::from_index((i / 2) as u8), scale)
    })
}

/// A tokenised melody: `tokens[i]` with `at[i]`, where the next onset lies (position in
/// the bar, strain, chord) once `tokens[i]` has been read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenSeq {
    pub tokens: Vec<u32>,
    pub at: Vec<Onset>,
}

impl TokenSeq {
    pub fn push(&mut self, token: u32, at: Onset) {
        self.tokens.push(token);
        self.at.push(at);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The same melody moved by `semitones` (key token included); `None` if a pitch would
    /// leave the vocabulary.
    pub fn transposed(&self, semitones: i32) -> Option<TokenSeq> {
        let mut out = self.clone();
        let old = self.key();
        let tonic =
            PitchClass::from_index((old.tonic.semitone() as i32 + semitones).rem_euclid(12) as u8);
        let new = Key::new(tonic, old.scale);
        for t in &mut out.tokens {
            if let Some(p) = token_key_pitch(*t, old) {
                *t = key_pitch_token(u8::try_from(p as i32 + semitones).ok()?, new)?;
            } else if token_key(*t).is_some() {
                *t = key_token(new);
            }
        }
        Some(out)
    }

    /// The key of the header (C major if there is none).
    pub fn key(&self) -> Key {
        key_of(&self.tokens)
    }
}

/// The header every sequence starts with.
pub fn header(style: Style, meter: Meter, key: Key, first: Onset) -> TokenSeq {
    let mut seq = TokenSeq::default();
    for t in [BOS, style.token(), meter_token(meter), key_token(key)] {
        seq.push(t, first);
    }
    seq
}

/// The header tokens the model is conditioned on at every step: style, meter, key.
pub fn cond_tokens(style: Style, meter: Meter, key: Key) -> [u32; 3] {
    [style.token(), meter_token(meter), key_token(key)]
}

/// The model's view of a token sequence: one step per note (see `model::lstm`).
///
/// Step `t` reads the previous note (`BOS`, `PAD` before the first) and where note `t`
/// starts ([`Onset`]), and predicts note `t`'s pitch-kind token (pitch, `REST` or `END`)
/// and duration token (`PAD` after `END`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NoteSeq {
    pub cond: [u32; 3],
    pub prev_pitch: Vec<u32>,
    pub prev_dur: Vec<u32>,
    pub at: Vec<Onset>,
    pub pitch: Vec<u32>,
    pub dur: Vec<u32>,
}

impl NoteSeq {
    pub fn len(&self) -> usize {
        self.pitch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pitch.is_empty()
    }

    /// Groups `seq` (header, then pitch/duration pairs, maybe `END`) into note steps.
    pub fn from_tokens(seq: &TokenSeq) -> NoteSeq {
        let t = &seq.tokens;
        let mut out = NoteSeq {
            cond: [t[1], t[2], t[3]],
            ..Default::default()
        };
        let (mut prev_p, mut prev_d) = (BOS, PAD);
        let mut i = 4;
        while i < t.len() {
            let last = t[i] == END || i + 1 >= t.len();
            out.prev_pitch.push(prev_p);
            out.prev_dur.push(prev_d);
            out.at.push(seq.at[i]);
            out.pitch.push(t[i]);
            out.dur.push(if last { PAD } else { t[i + 1] });
            if last {
                break;
            }
            (prev_p, prev_d) = (t[i], t[i + 1]);
            i += 2;
        }
        out
    }
}

/// The melody's key: its key signature, else the detected one.
pub fn melody_key(m: &Melody) -> Option<Key> {
    m.key.or_else(|| detect_key(&histogram(m)))
}

/// Encodes a melody without chords. `None` if it has no notes or a pitch outside 24..=107.
pub fn encode(m: &Melody, style: Style) -> Option<TokenSeq> {
    encode_with_chords(m, style, |_| 0)
}

/// Encodes a melody; `chord_at(tick)` gives the absolute pitch classes sounding under an
/// onset (0 for none). Strains are counted from the first full bar: a file with a pickup
/// starts with a silent lead-in, so the pickup's notes close the strain "before" bar 1.
pub fn encode_with_chords(
    m: &Melody,
    style: Style,
    chord_at: impl Fn(u32) -> u16,
) -> Option<TokenSeq> {
    let key = melody_key(m)?;
    let events = events_of(m);
    let first = events.first()?;
    let bar = bar_ticks(m.meter);
    let first_full = (first.start_tick > 0) as i64;
    let onset = |tick: u32| {
        Onset::at(tick % bar)
            .with_strain((tick / bar) as i64, first_full)
            .with_chord(relative_chord(chord_at(tick), key))
    };
    let mut seq = header(style, m.meter, key, onset(0));
    // Leading silence as rests (largest durations first), so onsets survive a round trip.
    let mut t = 0;
    while first.start_tick - t >= DURATIONS[0] {
        let d = DURATIONS
            .iter()
            .rposition(|&d| d <= first.start_tick - t)
            .unwrap_or(0);
        seq.push(REST, onset(t));
        t += DURATIONS[d];
        seq.push(dur_token(d as u8), onset(t));
    }
    for (i, ev) in events.iter().enumerate() {
        seq.push(
            ev.pitch.map_or(Some(REST), |p| key_pitch_token(p, key))?,
            onset(ev.start_tick),
        );
        let next = events
            .get(i + 1)
            .map_or(ev.start_tick + DURATIONS[ev.duration as usize], |n| {
                n.start_tick
            });
        seq.push(dur_token(ev.duration), onset(next));
    }
    let end = *seq.at.last().expect("at least one note");
    seq.push(END, end);
    // The header's positions are the first token's onset.
    let first_at = seq.at[4];
    seq.at[..4].fill(first_at);
    Some(seq)
}

/// Decodes tokens back to notes (quarter notes from the start), ignoring header tokens.
/// Durations are inter-onset times, as on the grid.
pub fn decode(tokens: &[u32]) -> Vec<MelodyNote> {
    let key = key_of(tokens);
    let mut notes = Vec::new();
    let mut t = 0u32;
    let mut pitch: Option<Option<u8>> = None;
    for &tok in tokens {
        if tok == REST {
            pitch = Some(None);
        } else if let Some(p) = token_key_pitch(tok, key) {
            pitch = Some(Some(p));
        } else if let Some(ticks) = token_ticks(tok) {
            if let Some(Some(p)) = pitch.take() {
                let q = |x: u32| x as f64 / TPQ as f64;
                notes.push(MelodyNote {
                    start: q(t),
                    duration: q(ticks),
                    pitch: p,
                    velocity: 80,
                });
            }
            t += ticks;
        }
    }
    notes
}

fn key_of(tokens: &[u32]) -> Key {
    tokens
        .iter()
        .find_map(|&t| token_key(t))
        .unwrap_or(Key::new(PitchClass::C, Scale::Major))
}

/// The duration token closest to `ticks` (log scale), as a vocabulary token.
pub fn ticks_token(ticks: u32) -> u32 {
    dur_token(duration_token(ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn melody(meter: Meter, lead_in: f64, notes: &[(f64, u8)]) -> Melody {
        let mut t = lead_in;
        let notes = notes
            .iter()
            .map(|&(d, p)| {
                let n = MelodyNote {
                    start: t,
                    duration: d,
                    pitch: p,
                    velocity: 80,
                };
                t += d;
                n
            })
            .collect();
        Melody {
            title: "t".into(),
            meter,
            key: Some(Key::new(PitchClass::D, Scale::Major)),
            notes,
        }
    }

    #[test]
    fn vocabulary_regions_do_not_overlap() {
        assert_eq!(token_pitch(pitch_token(60).unwrap()), Some(60));
        assert_eq!(token_pitch(DUR0), None);
        assert_eq!(token_ticks(DUR0), Some(DURATIONS[0]));
        assert_eq!(token_ticks(METER0), None);
        for tonic in 0..12 {
            for scale in [Scale::Major, Scale::Minor] {
                let k = Key::new(PitchClass::from_index(tonic), scale);
                assert_eq!(token_key(key_token(k)), Some(k));
            }
        }
        assert!(Style::Dance.token() < VOCAB as u32);
        assert_eq!(Style::parse("Slip jig"), Some(Style::SlipJig));
        assert_eq!(Style::parse("waltz"), Some(Style::Any));
        assert_eq!(meter_token(Meter::new(7, 8)), METER0 + METERS.len() as u32);
    }

    #[test]
    fn round_trip_keeps_pitches_onsets_and_durations() {
        // A pickup of one eighth in 6/8, sixteenths, triplets and a dotted quarter.
        let third = 1.0 / 3.0;
        let m = melody(
            Meter::new(6, 8),
            2.5,
            &[
                (0.5, 62),
                (0.25, 64),
                (0.25, 66),
                (third, 67),
                (third, 69),
                (third, 71),
                (1.5, 74),
                (1.0, 73),
                (2.0, 74),
            ],
        );
        let seq = encode(&m, Style::Jig).unwrap();
        assert_eq!(
            &seq.tokens[..4],
            &[
                BOS,
                Style::Jig.token(),
                meter_token(m.meter),
                key_token(m.key.unwrap())
            ]
        );
        assert_eq!(*seq.tokens.last().unwrap(), END);
        let back = decode(&seq.tokens);
        assert_eq!(back.len(), m.notes.len());
        for (a, b) in back.iter().zip(&m.notes) {
            assert_eq!(a.pitch, b.pitch);
            assert!((a.start - b.start).abs() < 1e-9, "{a:?} vs {b:?}");
            assert!((a.duration - b.duration).abs() < 1e-9, "{a:?} vs {b:?}");
        }
        // The first note (the pickup) sits on the last eighth of the 6/8 bar: tick 30 of 36.
        let first_pitch = seq
            .tokens
            .iter()
            .position(|&t| token_pitch(t).is_some())
            .unwrap();
        assert_eq!(seq.at[first_pitch].pos, 30);

        // The model's note steps: the same notes, each reading the one before.
        let steps = NoteSeq::from_tokens(&seq);
        assert_eq!(steps.cond, [seq.tokens[1], seq.tokens[2], seq.tokens[3]]);
        assert_eq!((steps.prev_pitch[0], steps.prev_dur[0]), (BOS, PAD));
        assert_eq!(steps.len(), (seq.len() - 4).div_ceil(2));
        assert_eq!(
            (*steps.pitch.last().unwrap(), *steps.dur.last().unwrap()),
            (END, PAD)
        );
        for i in 0..steps.len() - 1 {
            assert_eq!(steps.pitch[i], seq.tokens[4 + 2 * i]);
            assert_eq!(steps.dur[i], seq.tokens[5 + 2 * i]);
            assert_eq!(steps.at[i], seq.at[4 + 2 * i]);
            assert_eq!(
                (steps.prev_pitch[i + 1], steps.prev_dur[i + 1]),
                (steps.pitch[i], steps.dur[i])
            );
        }
        // END sits where the next note would have started: after the final 2-beat note.
        assert_eq!(steps.at.last().unwrap().pos, 0);
        assert_eq!(steps.at[steps.len() - 2].pos, 12);
    }

    #[test]
    fn styles_match_whole_words_and_book_sections() {
        let ryan = Path::new("corpus/ryansMammoth/ryan_0001.mid");
        let guess = |t: &str| Style::guess(ryan, t);
        assert_eq!(guess("The Fairy Reel"), Style::Reel);
        assert_eq!(guess("The Slipjig"), Style::SlipJig);
        assert_eq!(guess("Drops of Brandy (Slip Jig)"), Style::SlipJig);
        assert_eq!(guess("Fair-Haired Mary"), Style::Dance);
        assert_eq!(guess("Reels of Bogie"), Style::Reel);
        assert_eq!(guess("Marching Through Georgia"), Style::Dance);
        assert_eq!(guess("Cincinnati Clog"), Style::Hornpipe);
        let oneill = |n: &str| Style::guess(&Path::new("pd/oneills1850").join(n), "Untitled");
        assert_eq!(oneill("oneills_0002.mid"), Style::Air);
        assert_eq!(oneill("oneills_0700.mid"), Style::Jig);
        assert_eq!(oneill("oneills_1120.mid"), Style::SlipJig);
        assert_eq!(oneill("oneills_1200.mid"), Style::Reel);
        assert_eq!(oneill("oneills_1600.mid"), Style::Hornpipe);
        assert_eq!(oneill("oneills_1800.mid"), Style::Dance);
        let chorale = Path::new("pd/bach/bwv10.7_soprano.mid");
        assert_eq!(Style::guess(chorale, "Air"), Style::Chorale);
        assert_eq!(Style::Reel.model_meter(Meter::new(4, 4)), Meter::new(2, 2));
        assert_eq!(Style::Jig.model_meter(Meter::new(6, 8)), Meter::new(6, 8));
    }

    #[test]
    fn strains_and_chords_reach_every_onset() {
        // A one-beat pickup in 4/4, then full bars of quarters; a C-major chord throughout.
        let notes: Vec<(f64, u8)> = (0..20).map(|i| (1.0, 60 + (i % 5) as u8)).collect();
        let m = melody(Meter::new(4, 4), 3.0, &notes);
        let seq = encode_with_chords(&m, Style::Any, |_| 0b1001_0001).unwrap();
        let steps = NoteSeq::from_tokens(&seq);
        // Key D: C-E-G is 10, 2, 5 semitones above the tonic.
        let want = (1 << 10) | (1 << 2) | (1 << 5);
        assert!(steps.at.iter().all(|a| a.chord == want));
        // The first real note is the pickup: the end of the strain before bar 1.
        let first = steps
            .pitch
            .iter()
            .position(|&p| token_pitch(p).is_some())
            .unwrap();
        assert_eq!(steps.at[first].cadence, 0);
        // Then bar 1 starts a strain (7 bars to go) and the 4 notes of bar 1 share it.
        assert!(
            steps.at[first + 1..first + 5]
                .iter()
                .all(|a| a.cadence == 7)
        );
        assert!(
            steps.at[first + 5..first + 9]
                .iter()
                .all(|a| a.cadence == 6)
        );
        assert_eq!(
            relative_chord(0b1001_0001, Key::new(PitchClass::C, Scale::Major)),
            0b1001_0001
        );
    }

    #[test]
    fn rests_and_transposition() {
        let mut m = melody(Meter::new(4, 4), 0.0, &[(1.0, 60), (1.0, 62), (2.0, 64)]);
        m.notes[1].start += 1.0; // a quarter rest after the first note
        m.notes[2].start += 1.0;
        let seq = encode(&m, Style::Any).unwrap();
        assert!(seq.tokens.contains(&REST));
        let up = seq.transposed(5).unwrap();
        let pitches: Vec<u8> = decode(&up.tokens).iter().map(|n| n.pitch).collect();
        assert_eq!(pitches, vec![65, 67, 69]);
        assert_eq!(
            token_key(up.tokens[3]),
            Some(Key::new(PitchClass::G, Scale::Major))
        );
        assert!(seq.transposed(60).is_none());
    }
}
