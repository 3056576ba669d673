//! What `melodist stats` measures of a piece's form, the same way for generated pieces and
//! for the corpus's tunes (the table of the form issue):
//! - bars identical to an earlier bar (same onsets and pitches), among non-empty bars;
//! - pieces with a repeated 2-bar unit (two non-overlapping equal pairs of bars);
//! - 4-bar phrases that recur: at least 2 of their 4 bars equal to the same bars of an
//!   earlier phrase (phrases after the first);
//! - distinct 4-note patterns (intervals + inter-onset times) per piece, as a share;
//! - final note on the tonic, and held at least as long as the piece's average note;
//! - leap recovery: a leap (a fourth or more) followed by a change of direction.

use crate::midi::MelodyNote;
use crate::model::grid::duration_token;
use crate::model::sampler::LEAP;
use crate::music::{Key, Meter};
use std::collections::HashSet;

/// A piece cut into bars (notes relative to their bar line, in quarter notes).
pub struct Piece {
    pub key: Key,
    pub bars: Vec<Vec<(f64, u8)>>,
    /// (pitch, inter-onset quarter notes) of the whole line, the last note its length.
    pub line: Vec<(u8, f64)>,
}

impl Piece {
    /// `bars` bars of `notes` (absolute quarter notes), starting at beat `from`.
    pub fn new(key: Key, meter: Meter, notes: &[MelodyNote], from: f64, bars: usize) -> Piece {
        let len = meter.beats_per_bar();
        let end = from + bars as f64 * len;
        let inside: Vec<&MelodyNote> = (notes.iter())
            .filter(|n| n.start >= from - 1e-6 && n.start < end - 1e-6)
            .collect();
        let mut by_bar = vec![Vec::new(); bars];
        for n in &inside {
            let b = (((n.start - from) / len) + 1e-6).floor() as usize;
            let at = n.start - from - b as f64 * len;
            by_bar[b.min(bars - 1)].push(((at * 48.0).round() / 48.0, n.pitch));
        }
        let line = (0..inside.len())
            .map(|i| {
                let gap = inside
                    .get(i + 1)
                    .map_or(inside[i].duration, |next| next.start - inside[i].start);
                (inside[i].pitch, gap)
            })
            .collect();
        Piece {
            key,
            bars: by_bar,
            line,
        }
    }
}

/// The table's measures over a set of pieces (shares in 0..=1).
#[derive(Debug, Default, Clone, Copy)]
pub struct FormMeasures {
    pub pieces: usize,
    pub identical_bars: f64,
    pub repeated_two_bars: f64,
    pub recurring_phrases: f64,
    pub distinct_patterns: f64,
    pub final_tonic: f64,
    pub final_held: f64,
    pub leap_recovery: f64,
}

pub fn measure(pieces: &[Piece]) -> FormMeasures {
    let mut m = FormMeasures {
        pieces: pieces.len(),
        ..Default::default()
    };
    let (mut bars, mut same) = (0, 0);
    let (mut phrases, mut recurring) = (0, 0);
    let (mut leaps, mut recovered) = (0, 0);
    let (mut ended, mut tonic, mut held) = (0, 0, 0);
    let mut distinct = Vec::new();
    for p in pieces {
        let full: Vec<usize> = (0..p.bars.len())
            .filter(|&b| !p.bars[b].is_empty())
            .collect();
        for (k, &b) in full.iter().enumerate() {
            bars += 1;
            same += full[..k].iter().any(|&a| p.bars[a] == p.bars[b]) as usize;
        }
        let pair = |a: usize| !p.bars[a].is_empty() || !p.bars[a + 1].is_empty();
        let repeated = (0..p.bars.len().saturating_sub(1)).any(|a| {
            pair(a)
                && (a + 2..p.bars.len() - 1)
                    .any(|b| p.bars[a] == p.bars[b] && p.bars[a + 1] == p.bars[b + 1])
        });
        m.repeated_two_bars += repeated as u8 as f64;
        for q in 1..p.bars.len() / 4 {
            phrases += 1;
            let matches = |r: usize| {
                (0..4)
                    .filter(|&i| {
                        !p.bars[q * 4 + i].is_empty() && p.bars[q * 4 + i] == p.bars[r * 4 + i]
                    })
                    .count()
            };
            recurring += (0..q).any(|r| matches(r) >= 2) as usize;
        }
        let steps: Vec<(i32, u8)> = (p.line.windows(2))
            .map(|w| {
                let ticks = (w[0].1 * 12.0).round().max(0.0) as u32;
                (w[1].0 as i32 - w[0].0 as i32, duration_token(ticks))
            })
            .collect();
        if steps.len() >= 3 {
            let windows: HashSet<&[(i32, u8)]> = steps.windows(3).collect();
            distinct.push(windows.len() as f64 / (steps.len() - 2) as f64);
        }
        for w in steps.windows(2) {
            if w[0].0.abs() >= LEAP && w[1].0 != 0 {
                leaps += 1;
                recovered += (w[0].0.signum() != w[1].0.signum()) as usize;
            }
        }
        if let Some(&(pitch, length)) = p.line.last() {
            ended += 1;
            tonic += (p.key.relative_pc(pitch) == 0) as usize;
            let mean = p.line.iter().map(|n| n.1).sum::<f64>() / p.line.len() as f64;
            held += (length >= mean - 1e-9) as usize;
        }
    }
    let share = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    m.identical_bars = share(same, bars);
    m.repeated_two_bars /= pieces.len().max(1) as f64;
    m.recurring_phrases = share(recurring, phrases);
    m.distinct_patterns = distinct.iter().sum::<f64>() / distinct.len().max(1) as f64;
    m.final_tonic = share(tonic, ended);
    m.final_held = share(held, ended);
    m.leap_recovery = share(recovered, leaps);
    m
}

/// The measures as table rows: `(name, value as text)`.
pub fn rows(m: &FormMeasures) -> [(&'static str, String); 7] {
    let pc = |x: f64| format!("{:.0}%", 100.0 * x);
    [
        ("bars identical to an earlier bar", pc(m.identical_bars)),
        ("pieces with a repeated 2-bar unit", pc(m.repeated_two_bars)),
        (
            "4-bar phrase that recurs (>= 2 matching bars)",
            pc(m.recurring_phrases),
        ),
        (
            "distinct 4-note patterns (share)",
            format!("{:.2}", m.distinct_patterns),
        ),
        ("final note on the tonic", pc(m.final_tonic)),
        ("final note held >= the average note", pc(m.final_held)),
        (
            "leap followed by a change of direction",
            pc(m.leap_recovery),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::{PitchClass, Scale};

    fn piece(bars: &[&[(f64, u8)]]) -> Piece {
        let meter = Meter::new(4, 4);
        let notes: Vec<MelodyNote> = (bars.iter().enumerate())
            .flat_map(|(b, notes)| {
                notes.iter().map(move |&(at, pitch)| MelodyNote {
                    start: b as f64 * 4.0 + at,
                    duration: 1.0,
                    pitch,
                    velocity: 90,
                })
            })
            .collect();
        let key = Key::new(PitchClass::C, Scale::Major);
        Piece::new(key, meter, &notes, 0.0, bars.len())
    }

    #[test]
    fn repeats_cadences_and_leaps_are_counted() {
        let a: &[(f64, u8)] = &[(0.0, 60), (1.0, 67), (2.0, 65)];
        let b: &[(f64, u8)] = &[(0.0, 64), (2.0, 62)];
        let c: &[(f64, u8)] = &[(0.0, 62), (1.0, 64)];
        let end: &[(f64, u8)] = &[(0.0, 60)];
        // A B A B | C A B end: bars 2, 3, 5 and 6 repeat earlier bars.
        let p = piece(&[a, b, a, b, c, a, b, end]);
        let m = measure(&[p]);
        assert!((m.identical_bars - 4.0 / 8.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m.repeated_two_bars, 1.0);
        // Phrase 2 (C A B end) matches phrase 1 (A B A B) in no position: bars 5 and 6
        // (A, B) sit where phrase 1 has B, A.
        assert_eq!(m.recurring_phrases, 0.0);
        assert_eq!(m.final_tonic, 1.0);
        // Every leap is 60 → 67 (in each A bar), and 67 → 65 turns back down.
        assert_eq!(m.leap_recovery, 1.0);
        let q = piece(&[a, b, c, end, a, b, end, end]);
        assert_eq!(measure(&[q]).recurring_phrases, 1.0);
    }
}
