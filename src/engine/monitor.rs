//! What the audio thread tells the outside world (editor, capture, session log) about what
//! it played. The audio thread only `try_send`s fixed-size events into a bounded channel;
//! if nobody drains it (no editor open), events are dropped, never waited on.
//!
//! [`EngineView`] is the consumer side: it drains the channel on a UI or worker thread and
//! keeps a short history for the piano roll and for capturing what played to a `.mid`.

use super::messages::BarNotes;
use crate::midi::MelodyNote;
use crate::music::{BeatNote, Meter};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{BTreeMap, VecDeque};

/// Room for about ten seconds of events between two drains (the companion drains every
/// 100 ms). The queue is preallocated: ~1 MB, because a `Bar` event carries a whole bar.
pub const MONITOR_CAPACITY: usize = 1024;
/// Played notes remembered for capture (a few minutes of a busy melody).
const HISTORY_NOTES: usize = 4096;

// `Bar` is large on purpose: events are fixed-size so the audio thread never allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum MonitorEvent {
    /// A note started or ended, at a beat on the host timeline. `input` marks the
    /// producer's own notes (as opposed to generated ones).
    Note {
        beat: f64,
        pitch: u8,
        velocity: u8,
        on: bool,
        input: bool,
    },
    /// Once per block: where the playhead is.
    Playhead {
        beat: f64,
        tempo: f64,
        playing: bool,
        meter: Meter,
    },
    /// A bar's notes are ready: what is about to play.
    Bar {
        bar_index: i64,
        start_beat: f64,
        notes: BarNotes,
    },
    /// The timeline jumped (loop wrap, seek, stop).
    Resync,
}

pub fn channel() -> (Sender<MonitorEvent>, Receiver<MonitorEvent>) {
    bounded(MONITOR_CAPACITY)
}

/// A note that sounded, in beats on the host timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayedNote {
    pub start: f64,
    /// `None` while it still sounds.
    pub end: Option<f64>,
    pub pitch: u8,
    pub velocity: u8,
    pub input: bool,
}

/// The consumer side of the monitor channel.
pub struct EngineView {
    rx: Receiver<MonitorEvent>,
    pub playhead: f64,
    pub tempo: f64,
    pub playing: bool,
    pub meter: Meter,
    /// Oldest first.
    pub played: VecDeque<PlayedNote>,
    /// Upcoming bars by index: (bar start beat, notes relative to it).
    pub upcoming: BTreeMap<i64, (f64, Vec<BeatNote>)>,
}

impl EngineView {
    pub fn new(rx: Receiver<MonitorEvent>) -> Self {
        Self {
            rx,
            playhead: 0.0,
            tempo: 120.0,
            playing: false,
            meter: Meter::default(),
            played: VecDeque::with_capacity(HISTORY_NOTES),
            upcoming: BTreeMap::new(),
        }
    }

    /// Drains everything the audio thread sent since the last call.
    pub fn update(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.apply(ev);
        }
    }

    fn apply(&mut self, ev: MonitorEvent) {
        match ev {
            MonitorEvent::Note {
                beat,
                pitch,
                velocity,
                on: true,
                input,
            } => {
                if self.played.len() == HISTORY_NOTES {
                    self.played.pop_front();
                }
                self.played.push_back(PlayedNote {
                    start: beat,
                    end: None,
                    pitch,
                    velocity,
                    input,
                });
            }
            MonitorEvent::Note {
                beat,
                pitch,
                on: false,
                input,
                ..
            } => {
                if let Some(n) = self
                    .played
                    .iter_mut()
                    .rev()
                    .find(|n| n.pitch == pitch && n.input == input && n.end.is_none())
                {
                    n.end = Some(beat.max(n.start));
                }
            }
            MonitorEvent::Playhead {
                beat,
                tempo,
                playing,
                meter,
            } => {
                self.playhead = beat;
                self.tempo = tempo;
                self.playing = playing;
                self.meter = meter;
                let bar_len = meter.beats_per_bar();
                self.upcoming
                    .retain(|_, (start, _)| *start + bar_len > beat);
            }
            MonitorEvent::Bar {
                bar_index,
                start_beat,
                notes,
            } => {
                self.upcoming
                    .insert(bar_index, (start_beat, notes.as_slice().to_vec()));
            }
            MonitorEvent::Resync => {
                self.upcoming.clear();
                for n in self.played.iter_mut().filter(|n| n.end.is_none()) {
                    n.end = Some(n.start.max(self.playhead));
                }
            }
        }
    }

    /// The notes that played during the last `bars` bars before the playhead, with times
    /// relative to the start of that window (ready for `midi::write_melody`).
    /// Returns (generated, input).
    pub fn capture(&self, bars: u32) -> (Vec<MelodyNote>, Vec<MelodyNote>) {
        let bar_len = self.meter.beats_per_bar();
        let window_end = self.playhead;
        let window_start = ((window_end / bar_len).ceil() - bars as f64).max(0.0) * bar_len;
        let window_start = window_start.min(window_end);
        let mut generated = Vec::new();
        let mut input = Vec::new();
        for n in self
            .played
            .iter()
            .filter(|n| n.start >= window_start - 1e-9 && n.start < window_end)
        {
            let end = n.end.unwrap_or(window_end).min(window_end);
            let note = MelodyNote {
                start: n.start - window_start,
                duration: (end - n.start).max(1.0 / 64.0),
                pitch: n.pitch,
                velocity: n.velocity,
            };
            if n.input {
                input.push(note)
            } else {
                generated.push(note)
            }
        }
        (generated, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_takes_the_last_bars_relative_to_their_start() {
        let (tx, rx) = channel();
        let mut view = EngineView::new(rx);
        let note = |beat, pitch, on, input| MonitorEvent::Note {
            beat,
            pitch,
            velocity: 90,
            on,
            input,
        };
        for ev in [
            note(0.0, 60, true, false),
            note(1.0, 60, false, false),
            note(8.0, 62, true, false),
            note(8.5, 50, true, true),
            note(9.0, 62, false, false),
            note(9.5, 50, false, true),
            note(11.0, 64, true, false),
            MonitorEvent::Playhead {
                beat: 11.5,
                tempo: 120.0,
                playing: true,
                meter: Meter::new(4, 4),
            },
        ] {
            tx.send(ev).unwrap();
        }
        view.update();
        let (generated, input) = view.capture(1);
        // The last bar started at beat 8.
        assert_eq!(
            generated
                .iter()
                .map(|n| (n.start, n.pitch))
                .collect::<Vec<_>>(),
            vec![(0.0, 62), (3.0, 64)]
        );
        assert_eq!(generated[1].duration, 0.5); // still sounding: cut at the playhead
        assert_eq!(input.len(), 1);
        assert_eq!((input[0].start, input[0].duration), (0.5, 1.0));
        assert_eq!(view.capture(3).0.len(), 3);
    }
}
