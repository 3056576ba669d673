//! Keys (tonic + scale) and key detection from what the producer plays.

use super::Scale;
use nice_plug::prelude::Enum;
use serde::{Deserialize, Serialize};

/// The twelve tonics, as the host's generic UI shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum, Serialize, Deserialize)]
pub enum PitchClass {
    C,
    #[name = "C#/Db"]
    Cs,
    D,
    #[name = "D#/Eb"]
    Ds,
    E,
    F,
    #[name = "F#/Gb"]
    Fs,
    G,
    #[name = "G#/Ab"]
    Gs,
    A,
    #[name = "A#/Bb"]
    As,
    B,
}

impl PitchClass {
    pub fn from_index(i: u8) -> PitchClass {
        Self::from_index_enum(i as usize % 12)
    }

    fn from_index_enum(i: usize) -> PitchClass {
        <PitchClass as Enum>::from_index(i)
    }

    pub fn semitone(self) -> u8 {
        self.to_index() as u8
    }

    /// Semitones above C of a natural note's letter (`C`..`B`, either case).
    pub fn natural_semitone(letter: char) -> Option<i32> {
        Some(match letter.to_ascii_uppercase() {
            'C' => 0,
            'D' => 2,
            'E' => 4,
            'F' => 5,
            'G' => 7,
            'A' => 9,
            'B' => 11,
            _ => return None,
        })
    }

    /// Parses `A`, `a`, `C#`, `Db`, `f#`.
    pub fn parse(text: &str) -> Option<PitchClass> {
        let mut chars = text.trim().chars();
        let base = Self::natural_semitone(chars.next()?)?;
        let shift: i32 = match chars.as_str() {
            "" => 0,
            "#" | "s" | "♯" => 1,
            "b" | "♭" => -1,
            _ => return None,
        };
        Some(PitchClass::from_index((base + shift).rem_euclid(12) as u8))
    }

    pub fn name(self) -> &'static str {
        [
            "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
        ][self.semitone() as usize]
    }
}

/// A key: tonic plus scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    pub tonic: PitchClass,
    pub scale: Scale,
}

impl Key {
    pub fn new(tonic: PitchClass, scale: Scale) -> Self {
        Self { tonic, scale }
    }

    /// Whether the MIDI pitch belongs to the key's scale.
    pub fn contains(&self, pitch: u8) -> bool {
        let rel = (pitch as i32 - self.tonic.semitone() as i32).rem_euclid(12);
        self.scale.mask() & (1 << rel) != 0
    }

    /// Pitch class relative to the tonic, 0..12.
    pub fn relative_pc(&self, pitch: u8) -> u8 {
        (pitch as i32 - self.tonic.semitone() as i32).rem_euclid(12) as u8
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.tonic.name(),
            Scale::variants()[self.scale.to_index()]
        )
    }
}

// Krumhansl–Kessler key profiles (probe-tone ratings), the standard for key finding.
const MAJOR_PROFILE: [f32; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const MINOR_PROFILE: [f32; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// Krumhansl–Schmuckler key finding over a duration-weighted pitch-class histogram.
///
/// Returns `None` when the histogram is empty. Only major / natural minor are detected; the
/// caller keeps the producer's scale flavour when it matches the detected mode.
pub fn detect_key(histogram: &[f32; 12]) -> Option<Key> {
    let total: f32 = histogram.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut best = (f32::MIN, Key::new(PitchClass::C, Scale::Major));
    for tonic in 0..12 {
        for (profile, scale) in [
            (&MAJOR_PROFILE, Scale::Major),
            (&MINOR_PROFILE, Scale::Minor),
        ] {
            let r = correlation(histogram, profile, tonic);
            if r > best.0 {
                best = (r, Key::new(PitchClass::from_index(tonic as u8), scale));
            }
        }
    }
    Some(best.1)
}

fn correlation(hist: &[f32; 12], profile: &[f32; 12], tonic: usize) -> f32 {
    let mh = hist.iter().sum::<f32>() / 12.0;
    let mp = profile.iter().sum::<f32>() / 12.0;
    let (mut num, mut dh, mut dp) = (0.0, 0.0, 0.0);
    for i in 0..12 {
        let h = hist[(i + tonic) % 12] - mh;
        let p = profile[i] - mp;
        num += h * p;
        dh += h * h;
        dp += p * p;
    }
    if dh == 0.0 {
        0.0
    } else {
        num / (dh.sqrt() * dp.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_note_names() {
        assert_eq!(PitchClass::parse("A"), Some(PitchClass::A));
        assert_eq!(PitchClass::parse("db"), Some(PitchClass::Cs));
        assert_eq!(PitchClass::parse("B#"), Some(PitchClass::C));
        assert_eq!(PitchClass::parse("H"), None);
    }

    #[test]
    fn detects_a_minor_and_e_flat_major() {
        let mut h = [0.0; 12];
        // A natural minor scale with tonic and fifth emphasised.
        for (pc, w) in [
            (9, 4.0),
            (11, 1.0),
            (0, 2.0),
            (2, 1.0),
            (4, 3.0),
            (5, 1.0),
            (7, 1.0),
        ] {
            h[pc] = w;
        }
        assert_eq!(detect_key(&h), Some(Key::new(PitchClass::A, Scale::Minor)));
        let mut h = [0.0; 12];
        for (pc, w) in [
            (3, 4.0),
            (5, 1.0),
            (7, 2.5),
            (8, 1.0),
            (10, 3.0),
            (0, 1.0),
            (2, 1.0),
        ] {
            h[pc] = w;
        }
        assert_eq!(detect_key(&h), Some(Key::new(PitchClass::Ds, Scale::Major)));
        assert_eq!(detect_key(&[0.0; 12]), None);
    }

    #[test]
    fn contains_respects_tonic() {
        let k = Key::new(PitchClass::A, Scale::Minor);
        assert!(k.contains(69)); // A4
        assert!(k.contains(72)); // C5
        assert!(!k.contains(73)); // C#5
    }
}
