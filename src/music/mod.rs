//! Music theory the whole crate shares: keys, scales, beat-time notes, meters and a
//! reproducible random number generator.

pub mod key;
pub mod note;
pub mod rng;
pub mod scale;

pub use key::{Key, PitchClass, detect_key};
pub use note::{BeatNote, Meter};
pub use rng::{SeedRng, fnv1a};
pub use scale::Scale;
