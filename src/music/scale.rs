//! Scales the producer can lock the melody to.

use nice_plug::prelude::Enum;
use serde::{Deserialize, Serialize};

/// A scale as a set of semitone offsets from the tonic.
///
/// The enum order and names are part of the saved plugin state and the preset format: only
/// append new variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    #[name = "Major"]
    Major,
    #[name = "Natural minor"]
    Minor,
    #[name = "Dorian"]
    Dorian,
    #[name = "Mixolydian"]
    Mixolydian,
    #[name = "Harmonic minor"]
    HarmonicMinor,
    #[name = "Major pentatonic"]
    MajorPentatonic,
    #[name = "Minor pentatonic"]
    MinorPentatonic,
    #[name = "Blues"]
    Blues,
    #[name = "Chromatic"]
    Chromatic,
}

impl Scale {
    pub const ALL: [Scale; 9] = [
        Scale::Major,
        Scale::Minor,
        Scale::Dorian,
        Scale::Mixolydian,
        Scale::HarmonicMinor,
        Scale::MajorPentatonic,
        Scale::MinorPentatonic,
        Scale::Blues,
        Scale::Chromatic,
    ];

    /// Semitone offsets from the tonic, ascending, starting at 0.
    pub fn intervals(self) -> &'static [u8] {
        match self {
            Scale::Major => &[0, 2, 4, 5, 7, 9, 11],
            Scale::Minor => &[0, 2, 3, 5, 7, 8, 10],
            Scale::Dorian => &[0, 2, 3, 5, 7, 9, 10],
            Scale::Mixolydian => &[0, 2, 4, 5, 7, 9, 10],
            Scale::HarmonicMinor => &[0, 2, 3, 5, 7, 8, 11],
            Scale::MajorPentatonic => &[0, 2, 4, 7, 9],
            Scale::MinorPentatonic => &[0, 3, 5, 7, 10],
            Scale::Blues => &[0, 3, 5, 6, 7, 10],
            Scale::Chromatic => &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        }
    }

    /// A 12-bit mask: bit `i` set when the pitch class `tonic + i` is in the scale.
    pub fn mask(self) -> u16 {
        self.intervals().iter().fold(0, |m, &i| m | (1 << i))
    }

    /// Whether the scale has a minor third: decides which half of the statistics (major- or
    /// minor-flavoured) a generator uses for it.
    pub fn is_minor(self) -> bool {
        self.mask() & (1 << 3) != 0 && self.mask() & (1 << 4) == 0
    }

    /// Parses the CLI / preset spelling (`minor`, `harmonic-minor`, `pentatonic-major`, ...).
    pub fn parse(text: &str) -> Option<Scale> {
        let t = text.to_ascii_lowercase().replace(['_', ' '], "-");
        Some(match t.as_str() {
            "major" | "ionian" | "maj" => Scale::Major,
            "minor" | "aeolian" | "min" | "natural-minor" => Scale::Minor,
            "dorian" => Scale::Dorian,
            "mixolydian" => Scale::Mixolydian,
            "harmonic-minor" | "harmonic" => Scale::HarmonicMinor,
            "major-pentatonic" | "pentatonic-major" | "pentatonic" => Scale::MajorPentatonic,
            "minor-pentatonic" | "pentatonic-minor" => Scale::MinorPentatonic,
            "blues" => Scale::Blues,
            "chromatic" => Scale::Chromatic,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_have_expected_sizes() {
        for s in Scale::ALL {
            assert_eq!(s.mask().count_ones() as usize, s.intervals().len());
            assert!(s.mask() & 1 == 1, "{s:?} must contain its tonic");
        }
        assert!(Scale::Minor.is_minor());
        assert!(Scale::Dorian.is_minor());
        assert!(!Scale::Major.is_minor());
        assert!(!Scale::Mixolydian.is_minor());
    }

    #[test]
    fn parse_round_trips_common_spellings() {
        assert_eq!(Scale::parse("Harmonic minor"), Some(Scale::HarmonicMinor));
        assert_eq!(
            Scale::parse("minor-pentatonic"),
            Some(Scale::MinorPentatonic)
        );
        assert_eq!(Scale::parse("lydian-dominant"), None);
    }
}
