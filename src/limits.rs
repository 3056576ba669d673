//! Ranges of the settings a producer can set, in one place: the plugin's parameters allow
//! these values and the `melodist` command line rejects anything outside them (see
//! `cli::ranged`). A test in `cli` checks they still match the plugin's parameters.

use std::ops::RangeInclusive;

/// Density, variation and humanize: 0 (sparse, predictable, exact) to 1.
pub const UNIT: RangeInclusive<f32> = 0.0..=1.0;
/// Gate: the sounding share of a note's slot.
pub const GATE: RangeInclusive<f32> = 0.05..=1.0;
/// Base MIDI velocity.
pub const VELOCITY: RangeInclusive<u8> = 1..=127;
/// MIDI channel, 1-based as producers count them.
pub const CHANNEL: RangeInclusive<u8> = 1..=16;
/// The Seed parameter (before any "new idea" presses).
pub const SEED: RangeInclusive<u64> = 0..=99_999;
/// Tempo in BPM (the plugin's free-run tempo).
pub const TEMPO: RangeInclusive<f32> = 20.0..=300.0;
/// Any MIDI note: the command line's `--low` / `--high` and a played register.
pub const MIDI_NOTE: RangeInclusive<u8> = 0..=127;
/// Lowest / Highest note parameters in the plugin (C0 to C9).
pub const REGISTER_NOTE: RangeInclusive<i32> = 12..=120;
/// Bars of melody one `melodist generate` writes.
pub const BARS: RangeInclusive<usize> = 1..=10_000;
