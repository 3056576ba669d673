//! Messages between the audio thread and the worker. All are fixed-size `Copy` data, so
//! sending and receiving them through a bounded channel never allocates.

use crate::generator::GenSettings;
use crate::music::chord::Chord;
use crate::music::{BeatNote, Meter};

/// More notes than any sane bar holds (a 16/16 bar of 64ths would need more; the generators
/// write at most sixteenth triplets).
pub const MAX_NOTES_PER_BAR: usize = 48;

/// Capacity of each channel. Requests are a few per bar, so this is plenty.
pub const CHANNEL_CAPACITY: usize = 256;

/// One bar of notes, sorted by start, relative to the bar line.
#[derive(Debug, Clone, Copy)]
pub struct BarNotes {
    len: u8,
    notes: [BeatNote; MAX_NOTES_PER_BAR],
}

impl Default for BarNotes {
    fn default() -> Self {
        Self {
            len: 0,
            notes: [BeatNote::default(); MAX_NOTES_PER_BAR],
        }
    }
}

impl BarNotes {
    /// Copies up to `MAX_NOTES_PER_BAR` notes (worker side).
    pub fn from_slice(notes: &[BeatNote]) -> Self {
        let mut out = Self::default();
        let n = notes.len().min(MAX_NOTES_PER_BAR);
        out.notes[..n].copy_from_slice(&notes[..n]);
        out.len = n as u8;
        out
    }

    pub fn as_slice(&self) -> &[BeatNote] {
        &self.notes[..self.len as usize]
    }

    /// Keeps our notes before `beat` (cut to end there) and takes `other`'s from `beat` on:
    /// how a beat-quantised change replaces the rest of the current bar.
    pub fn splice_from(&mut self, other: &BarNotes, beat: f64) {
        let mut merged = Self::default();
        let mut n = 0;
        for note in self.as_slice().iter().filter(|x| x.start < beat) {
            let mut note = *note;
            note.duration = note.duration.min(beat - note.start);
            merged.notes[n] = note;
            n += 1;
        }
        for note in other.as_slice().iter().filter(|x| x.start >= beat) {
            if n == MAX_NOTES_PER_BAR {
                break;
            }
            merged.notes[n] = *note;
            n += 1;
        }
        merged.len = n as u8;
        *self = merged;
    }
}

/// A note the producer played, sent to the worker as context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNote {
    pub pitch: u8,
    pub velocity: u8,
    /// Onset in beats on the host timeline.
    pub beat: f64,
}

/// Audio thread → worker.
#[derive(Debug, Clone, Copy)]
pub enum ToWorker {
    /// Generate bar `bar_index` with these settings. `epoch` identifies the settings
    /// version, so answers for superseded settings can be dropped.
    Bar {
        epoch: u32,
        /// The scheduler's generation when it asked; the worker skips requests from an
        /// older one (a jump, stop or locate made them stale).
        generation: u32,
        bar_index: i64,
        meter: Meter,
        settings: GenSettings,
    },
    /// A note the producer played.
    Input(InputNote),
    /// The producer changed the chord they hold (three or more pitch classes), at this
    /// song beat (see `engine::chords`).
    Chord { beat: f64, chord: Chord },
    /// Forget the producer's input (panic / reset).
    ClearInput,
    /// An offline render gave up waiting for this bar (the worker logs it): sent once per
    /// stretch of blocks that gave up.
    GaveUp { bar_index: i64, waited_ms: u32 },
    /// Exit the thread (sent by `Worker::drop`, so dropping never waits on a timeout).
    Stop,
}

/// Worker → audio thread.
#[derive(Debug, Clone, Copy)]
pub struct BarReady {
    pub epoch: u32,
    pub bar_index: i64,
    pub notes: BarNotes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(start: f64, duration: f64, pitch: u8) -> BeatNote {
        BeatNote {
            start,
            duration,
            pitch,
            velocity: 100,
        }
    }

    #[test]
    fn splice_keeps_head_and_takes_tail() {
        let mut a =
            BarNotes::from_slice(&[note(0.0, 1.0, 60), note(1.0, 2.0, 62), note(3.0, 1.0, 64)]);
        let b = BarNotes::from_slice(&[note(0.0, 1.0, 70), note(2.0, 1.0, 72), note(3.5, 0.5, 74)]);
        a.splice_from(&b, 2.0);
        let got: Vec<(f64, f64, u8)> = a
            .as_slice()
            .iter()
            .map(|n| (n.start, n.duration, n.pitch))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.0, 1.0, 60),
                (1.0, 1.0, 62),
                (2.0, 1.0, 72),
                (3.5, 0.5, 74)
            ]
        );
    }

    #[test]
    fn from_slice_truncates_instead_of_overflowing() {
        let many: Vec<BeatNote> = (0..100).map(|i| note(i as f64 * 0.01, 0.01, 60)).collect();
        assert_eq!(
            BarNotes::from_slice(&many).as_slice().len(),
            MAX_NOTES_PER_BAR
        );
    }
}
