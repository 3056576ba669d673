//! Melodist outside a DAW: nice-plug's standalone wrapper runs the plugin with its editor,
//! MIDI in/out through ALSA or JACK and an internal transport.
//!
//! Build with `--features standalone`; `--help` lists the wrapper's options (backend,
//! tempo, MIDI ports, ...).

use melodist::plugin::Melodist;

fn main() {
    nice_plug::prelude::nice_export_standalone::<Melodist>();
}
