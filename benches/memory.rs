//! Resident memory of the plugin with both models (the LSTM and the melody VAE) loaded and
//! playing.
//!
//! Loads the built `libmelodist.so` through a CLAP host (as a DAW would), activates it,
//! renders 16 bars offline in loop mode (4 bars) with Morph at 50 %, so the worker has
//! loaded both models and generated with both, and prints the process's resident set size before and after, from
//! `/proc/self/status`. Run: `cargo bench --bench memory` (Linux only).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{BLOCK, SR, Session, transport};

/// `VmRSS` and `VmHWM` (peak) in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks bench binaries to list their benchmarks
    }
    let (before, _) = rss_mib();
    let mut s = Session::offline();
    s.set_params(&[
        ("looplen", serde_json::json!({"i32": 3})), // "4 bars"
        ("morph", serde_json::json!({"f32": 0.5})),
    ]);
    let (loaded, _) = rss_mib();
    let tempo = 120.0;
    let beats_per_sample = tempo / 60.0 / SR;
    let blocks = (16.0 * 4.0 / beats_per_sample / BLOCK as f64) as usize;
    let mut notes = 0;
    for i in 0..blocks {
        let pos = (i * BLOCK) as f64 * beats_per_sample;
        notes += s
            .block(Some(transport(pos, tempo, true)), &[])
            .iter()
            .filter(|e| e.on)
            .count();
    }
    let (playing, peak) = rss_mib();
    println!("host process before loading the plugin: {before:7.1} MiB resident");
    println!("after load + activate:                  {loaded:7.1} MiB resident");
    println!(
        "after 16 bars offline, loop + Morph ({notes} notes): {playing:7.1} MiB resident, peak {peak:.1} MiB"
    );
    println!(
        "the plugin's share (now - before):       {:7.1} MiB",
        playing - before
    );
}
