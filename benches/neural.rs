//! Neural generator speed at batch 1 on one thread: one bar of melody including sampling,
//! model load time, and raw decoding throughput (notes per second: one LSTM step plus the
//! duration layer per note).
//!
//! Needs the shipped model in `models/neural/`; run with `cargo bench --bench neural`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use melodist::generator::neural::NeuralGenerator;
use melodist::generator::{GenSettings, Generator, PhraseRequest};
use melodist::model::tokenizer::Style;
use melodist::model::{CONFIG_FILE, GUARD_FILE, WEIGHTS_FILE};
use melodist::music::{Meter, SeedRng};
use std::hint::black_box;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/neural");
    let (Ok(config), Ok(weights)) = (
        std::fs::read(dir.join(CONFIG_FILE)),
        std::fs::read(dir.join(WEIGHTS_FILE)),
    ) else {
        eprintln!(
            "no model in {}: train one first (see models/README.md)",
            dir.display()
        );
        return;
    };
    // The originality guard, as the plugin loads it (absent for models trained before it).
    let guard = std::fs::read(dir.join(GUARD_FILE)).ok();
    let load = |config: &[u8], weights: &[u8]| {
        let g = NeuralGenerator::from_bytes(config, weights).unwrap();
        match &guard {
            Some(bytes) => g.with_guard(bytes).unwrap(),
            None => g,
        }
    };
    c.bench_function("neural/load (config + safetensors + guard bytes)", |b| {
        b.iter(|| load(black_box(&config), black_box(&weights)))
    });

    let mut g = load(&config, &weights);
    let mut seed = 0u64;
    for (name, meter, density) in [
        ("4/4, density 0.5", Meter::new(4, 4), 0.5),
        ("4/4, density 1.0", Meter::new(4, 4), 1.0),
    ] {
        c.bench_function(&format!("neural/one bar incl. sampling ({name})"), |b| {
            b.iter(|| {
                seed += 1;
                let settings = GenSettings {
                    seed,
                    density,
                    ..Default::default()
                };
                let req = PhraseRequest {
                    settings,
                    meter,
                    phrase_index: 0,
                    bars: 1,
                    context: &[],
                };
                g.generate(black_box(&req), &mut SeedRng::new(seed))
            })
        });
    }

    // Raw model steps, 64 per iteration on a one-thread pool, as the generator runs them.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let model = g.model();
    let mut state = g
        .start_state(
            Style::Any,
            Meter::new(4, 4),
            melodist::music::Key::new(
                melodist::music::PitchClass::C,
                melodist::music::Scale::Major,
            ),
        )
        .unwrap();
    let mut group = c.benchmark_group("neural");
    group.throughput(Throughput::Elements(64));
    group.bench_function("64 notes (model steps + duration layer)", |b| {
        b.iter(|| {
            pool.install(|| {
                let mut prev = (60u32, 92u32); // a pitch token, an eighth-note token
                for i in 0..64u32 {
                    let logits = model
                        .step(prev.0, prev.1, (i % 48) as u16, &mut state)
                        .unwrap();
                    let pitch = 60 + i % 12;
                    black_box((logits, model.duration_logits(pitch, &state).unwrap()));
                    prev = (pitch, 90 + i % 4);
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
