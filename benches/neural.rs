//! Neural generator speed at batch 1 on one thread: one bar of melody including sampling,
//! model load time, and raw decoding throughput (tokens per second).
//!
//! Needs the shipped model in `models/neural/`; run with `cargo bench --bench neural`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use melodist::generator::neural::NeuralGenerator;
use melodist::generator::{GenSettings, Generator, PhraseRequest};
use melodist::model::{CONFIG_FILE, WEIGHTS_FILE};
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
    c.bench_function("neural/load (config + safetensors bytes)", |b| {
        b.iter(|| NeuralGenerator::from_bytes(black_box(&config), black_box(&weights)).unwrap())
    });

    let mut g = NeuralGenerator::from_bytes(&config, &weights).unwrap();
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
    let mut state = model.zero_state().unwrap();
    let mut group = c.benchmark_group("neural");
    group.throughput(Throughput::Elements(64));
    group.bench_function("64 tokens (model steps)", |b| {
        b.iter(|| {
            pool.install(|| {
                for i in 0..64u32 {
                    black_box(
                        model
                            .step(black_box(60 + i % 12), (i % 48) as u16, &mut state)
                            .unwrap(),
                    );
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
