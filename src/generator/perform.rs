//! Turns a model's notes into a performance: gate (note length), velocity with metric
//! accents, and humanised velocity. Shared by every generator so they feel the same.

use super::GenSettings;
use crate::music::{BeatNote, Meter, SeedRng};

/// Shortest note we ever emit, in quarter notes (a 64th): hosts drop zero-length notes.
const MIN_LENGTH: f64 = 1.0 / 16.0;

pub fn apply(phrase: &mut [Vec<BeatNote>], s: &GenSettings, meter: Meter, rng: &mut SeedRng) {
    let bar_len = meter.beats_per_bar();
    let pulse = meter.pulse();
    let gate = s.gate.clamp(0.05, 1.0) as f64;
    for bar in phrase.iter_mut() {
        bar.retain(|n| n.start >= 0.0 && n.start < bar_len && n.duration > 0.0);
        bar.sort_by(|a, b| a.start.total_cmp(&b.start));
        for i in 0..bar.len() {
            let slot_end = bar.get(i + 1).map_or(bar_len, |n| n.start);
            let n = &mut bar[i];
            let slot = n.duration.min(slot_end - n.start).max(MIN_LENGTH);
            n.duration = (slot * gate).max(MIN_LENGTH).min(bar_len - n.start);
            let accent = if n.start == 0.0 {
                10.0
            } else if (n.start / pulse).fract().abs() < 1e-6 {
                4.0
            } else {
                -4.0
            };
            let spread = (rng.next_f32() * 2.0 - 1.0) * 24.0 * s.humanize.clamp(0.0, 1.0);
            n.velocity = (s.velocity as f32 + accent + spread)
                .round()
                .clamp(1.0, 127.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_shortens_and_notes_never_overlap() {
        let mut phrase = vec![vec![
            BeatNote {
                start: 0.0,
                duration: 2.0,
                pitch: 60,
                velocity: 0,
            },
            BeatNote {
                start: 1.0,
                duration: 1.0,
                pitch: 62,
                velocity: 0,
            },
            BeatNote {
                start: 3.5,
                duration: 4.0,
                pitch: 64,
                velocity: 0,
            },
        ]];
        let s = GenSettings {
            gate: 0.5,
            humanize: 0.0,
            velocity: 90,
            ..Default::default()
        };
        apply(&mut phrase, &s, Meter::new(4, 4), &mut SeedRng::new(1));
        let bar = &phrase[0];
        assert_eq!(bar[0].duration, 0.5); // slot is 1 beat (next note), gate 0.5
        assert_eq!(bar[1].duration, 0.5);
        assert_eq!(bar[2].duration, 0.25); // clipped to bar end, then gated
        assert_eq!(bar[0].velocity, 100); // downbeat accent
        assert_eq!(bar[2].velocity, 86); // offbeat
    }
}
