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

/// The nearest duration token (index into [`DURATIONS`]) on a log scale.
pub fn duration_token(ticks: u32) -> u8 {
    let l = (ticks.max(1) as f32).ln();
    DURATIONS
        .iter()
        .enumerate()
        .min_by(|a, b| {
            ((*a.1 as f32).ln() - l)
                .abs()
                .total_cmp(&((*b.1 as f32).ln() - l).abs())
        })
        .map(|(i, _)| i as u8)
        .unwrap_or(6)
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
