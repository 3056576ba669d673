//! Music theory the whole crate shares: keys, scales, chords, beat-time notes, meters and a
//! reproducible random number generator.

pub mod chord;
pub mod key;
pub mod note;
pub mod rng;
pub mod scale;

pub use chord::{
    Chord, ChordError, ChordMemory, HeldNotes, Progression, ProgressionError, Quality,
};
pub use key::{Key, PitchClass, detect_key};
pub use note::{BeatNote, Meter};
pub use rng::{SeedRng, fnv1a};
pub use scale::Scale;
