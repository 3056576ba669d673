//! Originality guard: the generator never completes a run of [`COPY_NOTES`] notes that
//! appears verbatim (same intervals and rhythm, in any key) in a tune the model was trained
//! on.
//!
//! A model trained for long enough reproduces stock phrases of its corpus; folk tunes share
//! many. The guard stores a 32-bit hash of every 12-step window of (interval,
//! inter-onset duration) of the training tunes, sorted, next to the weights
//! (`copyguard.bin`, ~1.4 MB). When the generator picks a pitch, candidates that would make
//! the last 13 notes such a window are masked, as long as something else (another pitch or
//! a rest) is allowed. The steps are those `melodist stats` uses to find copies.

use super::grid::{TPQ, duration_token};
use crate::midi::MelodyNote;
use anyhow::{Result, bail};

/// Runs of this many notes copied from a training tune are refused.
pub const COPY_NOTES: usize = 13;
const STEPS: usize = COPY_NOTES - 1;
const MAGIC: &[u8; 8] = b"MLDCPG01";

/// Sorted, deduplicated window hashes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyGuard {
    hashes: Vec<u32>,
}

/// One step between consecutive notes: (interval in semitones, duration class of the
/// inter-onset time in ticks).
fn step(from: (u8, u32), to_pitch: u8) -> (i32, u8) {
    (to_pitch as i32 - from.0 as i32, duration_token(from.1))
}

fn hash(steps: impl Iterator<Item = (i32, u8)>) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (interval, dur) in steps {
        for b in [interval as i8 as u8, dur] {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h ^ (h >> 32)) as u32
}

/// Notes as the guard and `melodist stats` see them: (pitch, ticks to the next onset) per
/// note; the last note keeps its own duration.
pub fn melody_line(n: &[MelodyNote]) -> Vec<(u8, u32)> {
    let q = |beats: f64| (beats * TPQ as f64).round().max(0.0) as u32;
    (0..n.len())
        .map(|i| {
            let gap = n
                .get(i + 1)
                .map_or(n[i].duration, |next| next.start - n[i].start);
            (n[i].pitch, q(gap))
        })
        .collect()
}

impl CopyGuard {
    /// Indexes melodies given as (pitch, ticks to the next onset) per note.
    pub fn build<'a>(melodies: impl IntoIterator<Item = &'a [(u8, u32)]>) -> Self {
        let mut hashes = Vec::new();
        for notes in melodies {
            for w in notes.windows(COPY_NOTES) {
                hashes.push(hash(w.windows(2).map(|p| step(p[0], p[1].0))));
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        Self { hashes }
    }

    pub fn windows(&self) -> usize {
        self.hashes.len()
    }

    /// Would playing `next_pitch` after `recent` (the notes so far as (pitch, ticks to the
    /// next onset), the last one's gap ending at the new note) repeat a training run?
    pub fn would_copy(&self, recent: &[(u8, u32)], next_pitch: u8) -> bool {
        if recent.len() < STEPS || self.hashes.is_empty() {
            return false;
        }
        let w = &recent[recent.len() - STEPS..];
        let steps = w
            .windows(2)
            .map(|p| step(p[0], p[1].0))
            .chain(std::iter::once(step(w[STEPS - 1], next_pitch)));
        self.hashes.binary_search(&hash(steps)).is_ok()
    }

    /// Does `line` (as [`melody_line`] writes it) hold a run of [`COPY_NOTES`] notes of a
    /// training tune anywhere? For melodies written without the guard (the VAE's).
    pub fn copies(&self, line: &[(u8, u32)]) -> bool {
        (STEPS..line.len()).any(|i| self.would_copy(&line[..i], line[i].0))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 4 * self.hashes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.hashes.len() as u32).to_le_bytes());
        for h in &self.hashes {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            bail!("copyguard.bin is not an originality-guard file");
        }
        let n = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let body = &bytes[12..];
        if body.len() != n * 4 {
            bail!("copyguard.bin is truncated or damaged");
        }
        let hashes: Vec<u32> = body
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if hashes.windows(2).any(|w| w[0] >= w[1]) {
            bail!("copyguard.bin is damaged (not sorted)");
        }
        Ok(Self { hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-note tune: a scale up and down in eighths (6 ticks) with one quarter (12).
    fn tune() -> Vec<(u8, u32)> {
        let pitches = [
            60, 62, 64, 65, 67, 69, 71, 72, 74, 72, 71, 69, 67, 65, 64, 62, 60, 64, 67, 72,
        ];
        pitches
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, if i == 8 { 12 } else { 6 }))
            .collect()
    }

    #[test]
    fn refuses_the_note_that_completes_a_copy_in_any_key() {
        let guard = CopyGuard::build([tune().as_slice()]);
        assert_eq!(guard.windows(), 20 - 12);
        // The same tune a fourth higher: after 12 of its notes, the 13th would copy.
        let up: Vec<(u8, u32)> = tune().iter().map(|&(p, d)| (p + 5, d)).collect();
        assert!(guard.would_copy(&up[..12], up[12].0));
        assert!(!guard.would_copy(&up[..12], up[12].0 + 1));
        // Too few notes, or a different rhythm: no copy.
        assert!(!guard.would_copy(&up[..11], up[11].0));
        let mut other_rhythm = up[..12].to_vec();
        other_rhythm[11].1 = 12;
        assert!(!guard.would_copy(&other_rhythm, up[12].0));
        // An empty guard allows everything.
        assert!(!CopyGuard::default().would_copy(&up[..12], up[12].0));
    }

    #[test]
    fn finds_a_copy_anywhere_in_a_finished_melody() {
        let guard = CopyGuard::build([tune().as_slice()]);
        // Three notes of its own, then 13 of the tune a tone lower, then one more.
        let mut line = vec![(50, 6), (55, 12), (53, 6)];
        line.extend(tune()[3..16].iter().map(|&(p, d)| (p - 2, d)));
        line.push((40, 24));
        assert!(guard.copies(&line));
        // One note of the run changed: 12 at most in a row.
        line[9].0 += 1;
        assert!(!guard.copies(&line));
        assert!(!guard.copies(&line[..5]));
    }

    #[test]
    fn file_round_trip_and_damage() {
        let guard = CopyGuard::build([tune().as_slice()]);
        let bytes = guard.to_bytes();
        assert_eq!(CopyGuard::from_bytes(&bytes).unwrap(), guard);
        assert!(CopyGuard::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(CopyGuard::from_bytes(b"not a guard file").is_err());
    }
}
