//! Harmony following, live: the chords the producer holds on MIDI in, as the worker sees
//! them, and the chords it assumes for bars not heard yet.
//!
//! Melodies are written a section ahead, chords arrive as they are played. The worker
//! remembers what was heard ([`ChordMemory`]: the progression's period, 1–8 bars) and
//! assumes it goes on repeating. When a chord arrives that the prediction did not expect,
//! [`LiveChords::version`] changes: the section under the playhead is rewritten with the
//! new chords and the scheduler splices it in from the next beat (or bar, per *Change
//! at*), the way any change of input is handled, so no note is doubled or left hanging.
//!
//! Bars are counted as heard (always forward): a host loop that jumps back to bar 1 is
//! the progression going round again, not the past being rewritten.

use crate::generator::form::ChordSource;
use crate::model::grid::{TPQ, bar_ticks};
use crate::music::Meter;
use crate::music::chord::{Chord, ChordMemory};

/// Chords heard live, and the prediction of the ones to come.
#[derive(Default)]
pub struct LiveChords {
    memory: ChordMemory,
    /// Bars heard so far (monotonic) at the song bar of the last chord.
    heard_bar: i64,
    last_song_bar: Option<i64>,
    /// Bumped whenever a chord arrives that the prediction did not expect.
    pub version: u64,
}

impl LiveChords {
    /// A chord struck at song beat `beat`.
    pub fn observe(&mut self, beat: f64, chord: Chord, meter: Meter) {
        let per_bar = meter.beats_per_bar();
        let song_bar = (beat / per_bar).floor() as i64;
        let in_bar = beat - song_bar as f64 * per_bar;
        match self.last_song_bar {
            Some(last) if song_bar >= last => self.heard_bar += song_bar - last,
            // A loop or a jump back: the progression goes round again.
            Some(_) => self.heard_bar += 1,
            None => {}
        }
        self.last_song_bar = Some(song_bar);
        let expected = self.memory.predict(self.heard_bar, in_bar);
        self.memory.observe(self.heard_bar, in_bar, Some(chord));
        if expected.map(|c| c.pitch_classes()) != Some(chord.pitch_classes()) {
            self.version += 1;
        }
    }

    /// Forgets every chord (the producer cleared the input).
    pub fn clear(&mut self) {
        *self = LiveChords {
            version: self.version + 1,
            ..LiveChords::default()
        };
    }
}

impl ChordSource for LiveChords {
    fn ticks(&self, first_bar: i64, bars: usize, meter: Meter) -> Vec<u16> {
        let Some(last) = self.last_song_bar else {
            return Vec::new();
        };
        let per_bar = bar_ticks(meter) as usize;
        (0..bars * per_bar)
            .map(|t| {
                let heard = self.heard_bar + (first_bar + (t / per_bar) as i64 - last);
                let in_bar = (t % per_bar) as f64 / TPQ as f64;
                (self.memory.predict(heard, in_bar)).map_or(0, |c| c.pitch_classes())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chord(name: &str) -> Chord {
        Chord::parse(name).unwrap()
    }

    #[test]
    fn a_repeating_progression_is_assumed_ahead_and_a_surprise_bumps_the_version() {
        let meter = Meter::new(4, 4);
        let mut live = LiveChords::default();
        let prog = ["Am", "F", "C", "G"];
        for bar in 0..8 {
            live.observe(bar as f64 * 4.0, chord(prog[bar % 4]), meter);
        }
        let before = live.version;
        // Bars 8-11 are not heard yet: the progression is assumed to go on.
        let ahead = live.ticks(8, 4, meter);
        let per_bar = bar_ticks(meter) as usize;
        for (b, name) in prog.iter().enumerate() {
            assert_eq!(
                ahead[b * per_bar + 5],
                chord(name).pitch_classes(),
                "bar {b}"
            );
        }
        // The expected chord changes nothing; a different one does.
        live.observe(32.0, chord("Am"), meter);
        assert_eq!(live.version, before);
        live.observe(36.0, chord("Dm"), meter);
        assert!(live.version > before);
        assert_eq!(live.ticks(9, 1, meter)[0], chord("Dm").pitch_classes());
    }

    #[test]
    fn a_host_loop_back_counts_as_going_round() {
        let meter = Meter::new(4, 4);
        let mut live = LiveChords::default();
        for pass in 0..3 {
            live.observe(0.0, chord("C"), meter);
            live.observe(4.0, chord("G"), meter);
            if pass == 2 {
                assert_eq!(live.ticks(0, 1, meter)[0], chord("C").pitch_classes());
                assert_eq!(live.ticks(1, 1, meter)[0], chord("G").pitch_classes());
            }
        }
        assert!(LiveChords::default().ticks(0, 4, meter).is_empty());
    }
}
