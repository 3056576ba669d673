//! The note grid both melody models share: ticks per quarter, the duration vocabulary,
//! and melodies quantised onto it as note and rest events.
//!
//! It lives below the generators and the neural model's tokenizer so that the layers read
//! top to bottom (plugin → engine → generator → model → music): the Markov baseline
//! (`generator::markov`) and the LSTM's tokenizer, sampler and copy guard import it from
//! here, and nothing here imports a generator.

use crate::midi::Melody;
use crate::music::Meter;

/// Grid resolution: ticks per quarter note. 12 covers sixteenths (3) and triplets (4, 2).
pub const TPQ: u32 = 12;
/// Duration vocabulary, in ticks.
pub const DURATIONS: [u32; 11] = [2, 3, 4, 6, 8, 9, 12, 18, 24, 36, 48];

/// The nearest duration token (index into [`DURATIONS`]) on a log scale: past the geometric
/// mean of two neighbours, the longer one. Integer arithmetic (no `ln` per note on the
/// decode path); no tick count sits exactly on a boundary, since no product of two
/// neighbours is a square.
pub fn duration_token(ticks: u32) -> u8 {
    let t = u64::from(ticks.max(1));
    (DURATIONS.windows(2))
        .take_while(|w| t * t > u64::from(w[0] * w[1]))
        .count() as u8
}

/// Duration-weighted pitch-class histogram of a melody.
pub fn histogram(m: &Melody) -> [f32; 12] {
    let mut h = [0.0; 12];
    for n in &m.notes {
        h[n.pitch as usize % 12] += n.duration as f32;
    }
    h
}

/// Ticks in one bar of `meter`.
pub fn bar_ticks(meter: Meter) -> u32 {
    ((meter.beats_per_bar() * TPQ as f64).round() as u32).max(1)
}

/// Ticks between strong beats: half a bar in duple meters (beats 1 and 3 of 4/4, 1 and 4
/// of 6/8), else the whole bar.
pub fn strong_beat_ticks(meter: Meter) -> u32 {
    let bar = bar_ticks(meter);
    if meter.numerator.is_multiple_of(2) {
        bar / 2
    } else {
        bar
    }
}

/// Where the last strong beat of a bar starts (ticks): where a cadence note goes.
pub fn strong_tail_start(meter: Meter) -> u32 {
    bar_ticks(meter) - strong_beat_ticks(meter)
}

/// One note or rest on the grid: onset tick, duration token (index into `DURATIONS`), pitch.
#[derive(Debug, Clone, Copy)]
pub struct GridEvent {
    pub start_tick: u32,
    pub duration: u8,
    pub pitch: Option<u8>,
}

/// Quantises a melody onto the grid as note and rest events (inter-onset durations).
pub fn events_of(m: &Melody) -> Vec<GridEvent> {
    let q = |x: f64| (x * TPQ as f64).round().max(0.0) as u32;
    let mut out = Vec::new();
    let notes: Vec<_> = m.notes.iter().filter(|n| n.duration > 0.0).collect();
    for (i, n) in notes.iter().enumerate() {
        let start = q(n.start);
        let end = q(n.start + n.duration).max(start + 1);
        let next = notes
            .get(i + 1)
            .map_or(end, |nx| q(nx.start).max(start + 1));
        // A gap of at least an eighth becomes an explicit rest.
        let (sound, rest) = if next > end && next - end >= TPQ / 2 {
            (end - start, next - end)
        } else {
            (next - start, 0)
        };
        if i > 0
            && out
                .last()
                .is_some_and(|e: &GridEvent| e.start_tick == start)
        {
            continue;
        }
        out.push(GridEvent {
            start_tick: start,
            duration: duration_token(sound),
            pitch: Some(n.pitch),
        });
        if rest > 0 {
            out.push(GridEvent {
                start_tick: end,
                duration: duration_token(rest),
                pitch: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_token_is_the_nearest_duration_on_a_log_scale() {
        for ticks in 0..2000u32 {
            let l = (ticks.max(1) as f64).ln();
            let distance = |d: u32| ((d as f64).ln() - l).abs();
            let want = (0..DURATIONS.len())
                .min_by(|&a, &b| distance(DURATIONS[a]).total_cmp(&distance(DURATIONS[b])))
                .unwrap();
            assert_eq!(duration_token(ticks) as usize, want, "{ticks} ticks");
        }
    }
}
