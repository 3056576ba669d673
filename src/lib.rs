//! Melodist: a real-time AI melody generator plugin.
//!
//! Architecture, from the host inwards:
//! - [`plugin`]: the CLAP/VST3 plugin (parameters, state, `process()`).
//! - [`editor`]: the plugin's egui editor (piano roll, controls, presets, capture).
//! - [`engine`]: the real-time core: the audio-thread scheduler that turns beat-time notes
//!   into sample-accurate MIDI, and the worker thread that generates ahead of the playhead.
//! - [`generator`]: the `Generator` seam and the models behind it.
//! - [`music`], [`midi`]: theory (keys, scales, meters) and MIDI files.
//! - [`serve`]: `melodist serve`, the models and users' history behind an HTTP API.

pub mod cli;
pub mod editor;
pub mod engine;
pub mod generator;
pub mod limits;
pub mod midi;
pub mod model;
pub mod music;
pub mod plugin;
pub mod presets;
pub mod recommend;
pub mod serve;
pub mod sessions;
