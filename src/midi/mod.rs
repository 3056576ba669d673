//! Standard MIDI files: reading melodies for training and context, writing what we generate.

pub mod file;

pub use file::{
    Melody, MelodyNote, collect_midi_files, read_all_notes, read_melody, read_melody_bytes,
    write_melody, write_melody_with_chords,
};
