//! Neural generator speed at batch 1 on one thread: one bar of melody including sampling,
//! model load time, and raw decoding throughput (notes per second: one LSTM step plus the
//! duration layer per note).
//!
//! Needs the shipped model in `models/neural/`; run with `cargo bench --bench neural`.
//!
//! Before criterion's benches it prints one side-by-side table (best of 5 runs each):
//! - µs per note (LSTM step + duration layer) of the fast path (`model::lstm_fast`, with
//!   f32, bf16 and int8 weight matrices) and of
//!   candle's step in a one-thread pool, in this process (whatever `RAYON_NUM_THREADS` it
//!   has) and in a child process of this benchmark with `RAYON_NUM_THREADS=1`;
//! - ms per 4/4 bar at density 0.5, sampling included, on a spawned worker thread as the
//!   plugin runs it (the plugin cannot set environment variables): fast path (f32, bf16,
//!   int8) and candle.
//!
//! Then the fast path's cost per note for bigger models (2×320, 2×384, 3×256, 2×512), f32
//! and int8: what a bigger model costs within the per-note budget.
//!
//! `cargo bench --bench neural -- --side-by-side` prints the tables only.

use criterion::{Criterion, Throughput, criterion_group};
use melodist::generator::loader::{
    EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_GUARD, EMBEDDED_NEURAL_WEIGHTS,
};
use melodist::generator::neural::NeuralGenerator;
use melodist::generator::{GenSettings, Generator, PhraseRequest};
use melodist::model::lstm_fast::{FastLstm, Precision};
use melodist::model::tokenizer::{Onset, Style, cond_tokens};
use melodist::model::{CONFIG_FILE, GUARD_FILE, WEIGHTS_FILE};
use melodist::music::{Key, Meter, PitchClass, Scale, SeedRng};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

/// Set in the child process that times candle's step with `RAYON_NUM_THREADS=1`.
const CANDLE_CHILD: &str = "MELODIST_BENCH_CANDLE_CHILD";

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
                    shape: Default::default(),
                    chords: &[],
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
    group.bench_function("64 notes, candle (model steps + duration layer)", |b| {
        b.iter(|| {
            pool.install(|| {
                let mut prev = (60u32, 92u32); // a pitch token, an eighth-note token
                for i in 0..64u32 {
                    let logits = model
                        .step(prev.0, prev.1, Onset::at(i % 48), &mut state)
                        .unwrap();
                    let pitch = 60 + i % 12;
                    black_box((logits, model.duration_logits(pitch, &state).unwrap()));
                    prev = (pitch, 90 + i % 4);
                }
            })
        })
    });
    let fast = g.fast_model();
    let mut fast_state = fast.state();
    fast.start(
        cond_tokens(
            Style::Any,
            Meter::new(4, 4),
            Key::new(PitchClass::C, Scale::Major),
        ),
        &mut fast_state,
    );
    group.bench_function("64 notes, fast path (model steps + duration layer)", |b| {
        b.iter(|| {
            let mut prev = (60u32, 92u32);
            for i in 0..64u32 {
                black_box(fast.step(prev.0, prev.1, Onset::at(i % 48), &mut fast_state));
                let pitch = 60 + i % 12;
                black_box(fast.duration_logits(pitch, &mut fast_state));
                prev = (pitch, 90 + i % 4);
            }
        })
    });
    group.finish();
}

/// The generator as the plugin loads it (the shipped model, embedded in the binary).
fn shipped() -> NeuralGenerator {
    NeuralGenerator::from_bytes(EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS)
        .unwrap()
        .with_guard(EMBEDDED_NEURAL_GUARD)
        .unwrap()
}

/// Best of 5 runs of 2,000 notes (after 200 to warm up), µs per note. `note(i)` runs one.
fn per_note_us(mut note: impl FnMut(u32)) -> f64 {
    (0..200).for_each(&mut note);
    (0..5)
        .map(|_| {
            let start = Instant::now();
            (0..2000).for_each(&mut note);
            start.elapsed().as_secs_f64() * 1e6 / 2000.0
        })
        .fold(f64::INFINITY, f64::min)
}

/// The notes fed to both decoders: (prev pitch, prev duration, position, chosen pitch).
fn note_tokens(i: u32) -> (u32, u32, u16, u32) {
    (60 + i % 12, 90 + i % 4, (i % 48) as u16, 60 + (i + 1) % 12)
}

fn candle_us_per_note(g: &NeuralGenerator) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c_major = Key::new(PitchClass::C, Scale::Major);
    let mut state = g
        .start_state(Style::Any, Meter::new(4, 4), c_major)
        .unwrap();
    let model = g.model();
    pool.install(|| {
        per_note_us(|i| {
            let (p, d, pos, next) = note_tokens(i);
            black_box(model.step(p, d, Onset::at(pos as u32), &mut state).unwrap());
            black_box(model.duration_logits(next, &state).unwrap());
        })
    })
}

fn fast_us_per_note(fast: &FastLstm) -> f64 {
    let mut state = fast.state();
    let c_major = Key::new(PitchClass::C, Scale::Major);
    fast.start(
        cond_tokens(Style::Any, Meter::new(4, 4), c_major),
        &mut state,
    );
    per_note_us(|i| {
        let (p, d, pos, next) = note_tokens(i);
        black_box(fast.step(p, d, Onset::at(pos as u32), &mut state));
        black_box(fast.duration_logits(next, &mut state));
    })
}

/// ms per 4/4 bar at density 0.5 on a spawned worker thread: best of 5 runs of 64 phrases
/// of 4 bars, with the fast path or candle's reference decoder.
fn ms_per_bar(reference: bool, precision: Precision) -> f64 {
    std::thread::spawn(move || {
        let mut g = shipped().with_precision(precision).unwrap();
        let mut phrase = |seed: u64| {
            let req = PhraseRequest {
                settings: GenSettings {
                    seed,
                    density: 0.5,
                    ..Default::default()
                },
                meter: Meter::new(4, 4),
                phrase_index: seed as i64,
                bars: 4,
                context: &[],
                shape: Default::default(),
                chords: &[],
            };
            let mut rng = SeedRng::new(seed);
            black_box(match reference {
                true => g.generate_reference(&req, &mut rng),
                false => g.generate(&req, &mut rng),
            });
        };
        (0..8).for_each(&mut phrase);
        (0..5)
            .map(|run| {
                let start = Instant::now();
                (0..64).for_each(|i| phrase(100 + 64 * run + i));
                start.elapsed().as_secs_f64() * 1e3 / (64.0 * 4.0)
            })
            .fold(f64::INFINITY, f64::min)
    })
    .join()
    .unwrap()
}

/// The side-by-side table (see the header).
fn side_by_side() {
    let g = shipped();
    let rayon_env = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    let fast = fast_us_per_note(&FastLstm::with_precision(g.model(), Precision::F32).unwrap());
    let bf16 = fast_us_per_note(&FastLstm::with_precision(g.model(), Precision::Bf16).unwrap());
    let int8 = fast_us_per_note(&FastLstm::with_precision(g.model(), Precision::Int8).unwrap());
    let candle = candle_us_per_note(&g);
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CANDLE_CHILD, "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok());
    let bar_fast = ms_per_bar(false, Precision::F32);
    let bar_bf16 = ms_per_bar(false, Precision::Bf16);
    let bar_int8 = ms_per_bar(false, Precision::Int8);
    let bar_candle = ms_per_bar(true, Precision::F32);
    let c = &g.model().config;
    println!(
        "neural side by side ({}x{} LSTM, batch 1, one thread; the plugin decodes with {:?}):",
        c.layers,
        c.hidden,
        g.fast_model().precision()
    );
    println!("  fast path, f32 weights                   {fast:8.1} µs/note");
    println!("  fast path, bf16 weights                  {bf16:8.1} µs/note");
    println!("  fast path, int8 weights                  {int8:8.1} µs/note");
    println!("  candle, RAYON_NUM_THREADS {rayon_env:<6}         {candle:8.1} µs/note");
    match child {
        Some(us) => println!("  candle, RAYON_NUM_THREADS=1 (child)      {us:8.1} µs/note"),
        None => println!("  candle, RAYON_NUM_THREADS=1 (child)      failed to run"),
    }
    println!("  worker thread, 4/4 density 0.5, fast     {bar_fast:8.3} ms/bar");
    println!("  worker thread, 4/4 density 0.5, bf16     {bar_bf16:8.3} ms/bar");
    println!("  worker thread, 4/4 density 0.5, int8     {bar_int8:8.3} ms/bar");
    println!("  worker thread, 4/4 density 0.5, candle   {bar_candle:8.3} ms/bar");
}

/// µs per note of the fast path for wider and deeper models (initial weights; only the
/// shapes matter for the cost): which bigger model fits the per-note budget.
fn sizes() {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use melodist::model::lstm::{Lstm, LstmConfig};
    println!("fast path by model size (µs/note, f32 / int8; MB read per note):");
    for (layers, hidden) in [(2, 256), (2, 320), (2, 384), (3, 256), (2, 512)] {
        let config = LstmConfig {
            layers,
            hidden,
            ..LstmConfig::default()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Lstm::new(config, vb).unwrap();
        let fast = |p| FastLstm::with_precision(&model, p).unwrap();
        let (f32_path, int8) = (fast(Precision::F32), fast(Precision::Int8));
        println!(
            "  {layers}x{hidden:<4} {:7.1} / {:5.1} µs   {:4.2} / {:4.2} MB",
            fast_us_per_note(&f32_path),
            fast_us_per_note(&int8),
            f32_path.bytes_per_note() as f64 / 1e6,
            int8.bytes_per_note() as f64 / 1e6,
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os(CANDLE_CHILD).is_some() {
        println!("{}", candle_us_per_note(&shipped()));
        return;
    }
    side_by_side();
    sizes();
    if std::env::args().any(|a| a == "--side-by-side") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
