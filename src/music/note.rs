//! Notes in beat time and meters.

use serde::{Deserialize, Serialize};

/// One melody note, positioned in quarter-note beats relative to the start of its bar.
///
/// Beat time (not samples) is what the worker produces: the audio thread converts it to
/// sample offsets with the tempo it sees in each block, so tempo changes never shift notes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BeatNote {
    /// Start, in quarter notes from the bar line.
    pub start: f64,
    /// Sounding length in quarter notes (already shortened by the gate setting).
    pub duration: f64,
    pub pitch: u8,
    /// MIDI velocity 1..=127.
    pub velocity: u8,
}

/// A time signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meter {
    pub numerator: u8,
    pub denominator: u8,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new(4, 4)
    }
}

impl Meter {
    pub const fn new(numerator: u8, denominator: u8) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    /// Builds a meter from what a host reports, replacing nonsense (0, negative, or a
    /// denominator that is not a power of two) with 4/4.
    pub fn from_host(numerator: Option<i32>, denominator: Option<i32>) -> Self {
        match (numerator, denominator) {
            (Some(n), Some(d)) if (1..=32).contains(&n) && matches!(d, 1 | 2 | 4 | 8 | 16 | 32) => {
                Self::new(n as u8, d as u8)
            }
            _ => Self::default(),
        }
    }

    /// Bar length in quarter notes.
    pub fn beats_per_bar(&self) -> f64 {
        self.numerator as f64 * 4.0 / self.denominator as f64
    }

    /// Length of the meter's pulse in quarter notes: a dotted quarter for compound meters
    /// (6/8, 9/8, 12/8), otherwise the denominator's note value.
    pub fn pulse(&self) -> f64 {
        let unit = 4.0 / self.denominator as f64;
        if self.denominator >= 8 && self.numerator.is_multiple_of(3) && self.numerator > 3 {
            unit * 3.0
        } else {
            unit
        }
    }

    pub fn parse(text: &str) -> Option<Meter> {
        let (n, d) = text.split_once('/')?;
        let m = Meter::from_host(n.trim().parse().ok(), d.trim().parse().ok());
        (m.to_string() == format!("{}/{}", n.trim(), d.trim())).then_some(m)
    }
}

impl std::fmt::Display for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_lengths() {
        assert_eq!(Meter::new(4, 4).beats_per_bar(), 4.0);
        assert_eq!(Meter::new(6, 8).beats_per_bar(), 3.0);
        assert_eq!(Meter::new(6, 8).pulse(), 1.5);
        assert_eq!(Meter::new(3, 4).pulse(), 1.0);
        assert_eq!(Meter::from_host(Some(7), Some(3)), Meter::new(4, 4));
        assert_eq!(Meter::parse("9/8"), Some(Meter::new(9, 8)));
        assert_eq!(Meter::parse("9/7"), None);
    }
}
