//! Real-time costs: the plugin's `process()` per block (through a real CLAP host), the
//! worker's generation time per bar, and plugin activation.
//!
//! Run: `cargo bench --bench realtime`. Prints criterion's estimates; no timed asserts.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{BLOCK, SR, Session, transport};
use criterion::{Criterion, criterion_group, criterion_main};
use melodist::generator::loader::embedded_markov;
use melodist::generator::{GenSettings, PHRASE_BARS, PhraseRequest, render_phrase};
use melodist::music::Meter;
use std::hint::black_box;
use std::time::Duration;

/// A host that plays continuously; `notes_in` input notes per block go through MIDI thru.
fn bench_process(c: &mut Criterion, name: &str, notes_in: &[(u32, u8)]) {
    let mut s = Session::new();
    let bps = 120.0 / 60.0 / SR;
    let mut pos = 0.0;
    // Let the worker fill its lookahead first.
    s.process(Some(&transport(0.0, 120.0, false)), &[]);
    std::thread::sleep(Duration::from_millis(50));
    c.bench_function(name, |b| {
        b.iter(|| {
            let t = transport(pos, 120.0, true);
            black_box(s.process(Some(&t), notes_in));
            pos += BLOCK as f64 * bps;
            if pos > 64.0 {
                pos = 0.0; // a loop: keeps requests and resyncs in the measurement
            }
        })
    });
}

fn process_block(c: &mut Criterion) {
    bench_process(c, "process 512 @ 48k, playing (mostly no new notes)", &[]);
    let eight: Vec<(u32, u8)> = (0..8).map(|i| (i * 60, 48 + i as u8)).collect();
    bench_process(c, "process 512 @ 48k, playing + 8 input notes thru", &eight);
    // Transport stopped, play off: the floor cost of the wrapper + our bookkeeping.
    let mut s = Session::new();
    c.bench_function("process 512 @ 48k, stopped", |b| {
        let t = transport(0.0, 120.0, false);
        b.iter(|| black_box(s.process(Some(&t), &[])))
    });
}

fn generate_bar(c: &mut Criterion) {
    let mut g = embedded_markov();
    let mut phrase_index = 0;
    c.bench_function("markov: one phrase of 4 bars (divide by 4 per bar)", |b| {
        b.iter(|| {
            let s = GenSettings {
                seed: 42,
                ..Default::default()
            };
            let req = PhraseRequest {
                settings: s,
                meter: Meter::new(4, 4),
                phrase_index,
                bars: PHRASE_BARS,
                context: &[],
                shape: Default::default(),
                chords: &[],
            };
            phrase_index += 1;
            black_box(render_phrase(g.as_mut(), &req))
        })
    });
}

fn activation(c: &mut Criterion) {
    let mut s = Session::new();
    c.bench_function("deactivate + activate", |b| {
        b.iter(|| {
            s.deactivate();
            s.activate();
        })
    });
    c.bench_function("load + instantiate + first activate", |b| {
        b.iter(|| black_box(Session::new()))
    });
    // Teardown (deactivate + destroy) must stay under 50 ms, even while the worker is
    // still loading its model or the history is being written.
    let teardown = |c: &mut Criterion, name: &str, play_blocks: usize| {
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut s = Session::new();
                    let mut pos = 0.0;
                    for _ in 0..play_blocks {
                        s.process(Some(&transport(pos, 120.0, true)), &[]);
                        pos += BLOCK as f64 * 2.0 / SR;
                    }
                    let started = std::time::Instant::now();
                    s.deactivate();
                    drop(s);
                    total += started.elapsed();
                }
                total
            })
        });
    };
    teardown(c, "teardown right after activation (model loading)", 0);
    teardown(c, "teardown after 200 blocks of playing", 200);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    targets = process_block, generate_bar, activation
}
criterion_main!(benches);
