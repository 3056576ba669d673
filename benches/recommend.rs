//! Recommender and recorder benchmarks (numbers are printed; nothing is asserted).
//!
//! - top-10 recommendation with explanations for one context, each recommender fitted on
//!   10,000 simulated sessions over 500 presets (target: hybrid ≤ 1 ms median);
//! - the session recorder fed 1,000 feedback events per second from a paced "audio" thread:
//!   per-event `record()` latency, drops and what reached the database (target: no
//!   blocking, nothing dropped).
//!
//! - 40,000 sessions (plugin-faithful simulator): hybrid top-10 from a fitted model
//!   (target ≤ 1 ms), one online update, and `melodist recommend` end to end (target
//!   ≤ 100 ms): in process (open the SQLite file, read what changed since the stored copy,
//!   fit, rank with explanations; with nothing new and with a new session between calls,
//!   against reading the whole history), and as the release `melodist` process itself.
//!   Printed as medians.
//!
//! Run with `cargo bench --bench recommend`.

use criterion::{Criterion, criterion_group, criterion_main};
use melodist::recommend::sim::{self, SimConfig};
use melodist::recommend::{
    Catalogue, ContentBased, Context, Dataset, Hybrid, ItemCf, Popularity, Recommender, SessionKnn,
};
use melodist::sessions::{EventKind, RecorderEvent, SessionDb, SessionRecorder};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn world() -> (Dataset, Context) {
    let cfg = SimConfig {
        producers: 100,
        min_sessions: 100,
        max_sessions: 100,
        shared_presets: 500,
        user_presets: 0,
        ..SimConfig::default()
    };
    let world = sim::simulate(&cfg);
    let data = Dataset::new(&world.log, Catalogue::from_presets(&world.presets));
    let last = world.log.sessions.last().expect("simulated sessions");
    let ctx = Context::from_session(&last.producer, &last.context);
    println!(
        "dataset: {} sessions, {} presets, {} producers",
        data.sessions.len(),
        data.catalogue.len(),
        data.producers.len()
    );
    (data, ctx)
}

fn recommend_top10(c: &mut Criterion) {
    let (data, ctx) = world();
    let mut recommenders: Vec<Box<dyn Recommender>> = vec![
        Box::new(Hybrid::default()),
        Box::new(ItemCf::default()),
        Box::new(SessionKnn::default()),
        Box::new(ContentBased::default()),
        Box::new(Popularity::default()),
    ];
    for r in &mut recommenders {
        let t = Instant::now();
        r.fit(&data);
        println!(
            "fit {:<12} {:>8.1} ms",
            r.name(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut group = c.benchmark_group("top10_10k_sessions_500_presets");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for r in &recommenders {
        group.bench_function(r.name(), |b| {
            b.iter(|| black_box(r.recommend(black_box(&ctx), 10)))
        });
    }
    group.finish();
}

/// Median and maximum of a list of durations, in microseconds.
fn median_max_us(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        us(samples[samples.len() / 2]),
        us(*samples.last().expect("samples")),
    )
}

fn recorder_ingest(_c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.sqlite3");
    let ids: Vec<String> = (0..500).map(|i| format!("preset-{i}")).collect();
    let recorder = SessionRecorder::start(path.clone(), "bench".into(), ids, 1024);
    let tx = recorder.sender();
    tx.record(RecorderEvent::Start {
        tempo: 120.0,
        meter: Default::default(),
        key: None,
    });
    // 1,000 events over one second, paced like an audio thread reporting feedback.
    let mut latencies = Vec::with_capacity(1000);
    let start = Instant::now();
    for i in 0..1000u32 {
        let due = start + Duration::from_micros(1000 * i as u64);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        black_box(tx.record(RecorderEvent::Feedback {
            kind: EventKind::Liked,
            preset: (i % 500) as u16,
        }));
        latencies.push(t.elapsed());
    }
    let sent_in = start.elapsed();
    let (median, max) = median_max_us(latencies);
    let dropped = recorder.dropped();
    drop(tx);
    let flush = Instant::now();
    let written = recorder.finish();
    let flush_ms = flush.elapsed().as_secs_f64() * 1e3;
    let (_, events) = SessionDb::open(&path)
        .and_then(|db| db.counts())
        .expect("read back");
    println!(
        "recorder, 1000 events/s for {:.2} s: record() median {median:.2} µs, max {max:.2} µs, dropped {dropped}, \
         written {written} (incl. start), {events} events in the database, final flush {flush_ms:.1} ms",
        sent_in.as_secs_f64()
    );

    // Burst: as fast as possible, to show the writer's sustained rate and that a full queue
    // drops instead of blocking.
    let path = dir.path().join("burst.sqlite3");
    let recorder = SessionRecorder::start(path, "bench".into(), Vec::new(), 1024);
    let tx = recorder.sender();
    // The recorder writes only inside an open session.
    tx.record(RecorderEvent::Start {
        tempo: 120.0,
        meter: melodist::music::Meter::new(4, 4),
        key: None,
    });
    let mut latencies = Vec::with_capacity(20_000);
    let start = Instant::now();
    for i in 0..20_000u32 {
        let t = Instant::now();
        black_box(tx.record(RecorderEvent::Feedback {
            kind: EventKind::Kept,
            preset: (i % 7) as u16,
        }));
        latencies.push(t.elapsed());
    }
    let (median, max) = median_max_us(latencies);
    let dropped = recorder.dropped();
    drop(tx);
    let written = recorder.finish();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "recorder burst of 20000: record() median {median:.2} µs, max {max:.2} µs, dropped {dropped}, written {written} \
         in {secs:.2} s ({:.0} events/s sustained by the writer)",
        written as f64 / secs
    );
}

/// 40k sessions: top-10, online update, and the CLI's end-to-end path.
fn recommend_40k(_c: &mut Criterion) {
    let cfg = SimConfig {
        producers: 400,
        min_sessions: 100,
        max_sessions: 100,
        ..SimConfig::default()
    };
    let world = sim::simulate(&cfg);
    let catalogue = Catalogue::from_presets(&world.presets);
    let dir = tempfile::tempdir().expect("temp dir");
    // Named as `melodist` names it, so the CLI finds it through MELODIST_DATA_DIR.
    let path = dir.path().join("sessions.sqlite3");
    let mut db = SessionDb::open(&path).expect("db");
    db.import_log(&world.log).expect("import");
    drop(db);
    let last = world.log.sessions.last().expect("sessions");
    let ctx = Context::from_session(&last.producer, &last.context);
    let median_ms = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let mut hybrid = Hybrid::default();
    let t = Instant::now();
    hybrid.fit(&Dataset::new(&world.log, catalogue.clone()));
    println!(
        "40k: {} sessions, {} presets; fit {:.1} ms",
        world.log.sessions.len(),
        catalogue.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let top: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            black_box(hybrid.top_k(black_box(&ctx), 10));
            t.elapsed()
        })
        .collect();
    let explained: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            black_box(hybrid.recommend(black_box(&ctx), 10));
            t.elapsed()
        })
        .collect();
    let update: Vec<Duration> = (0..200)
        .map(|i| {
            let fb = melodist::recommend::Feedback {
                producer: last.producer.clone(),
                session: 1_000_000 + i / 5,
                context: last.context,
                preset: (i % 30) as u16,
                kind: EventKind::Liked,
                seconds: None,
                at_ms: 0,
            };
            let t = Instant::now();
            hybrid.update(black_box(&fb));
            t.elapsed()
        })
        .collect();
    let data = Dataset::new(&world.log, catalogue.clone());
    let mut parts: Vec<Box<dyn Recommender>> = vec![
        Box::new(ItemCf::default()),
        Box::new(SessionKnn::default()),
        Box::new(ContentBased::default()),
        Box::new(Popularity::default()),
        Box::new(melodist::recommend::RecentPersonal::default()),
        Box::new(melodist::recommend::ContextPopularity::default()),
    ];
    for r in &mut parts {
        r.fit(&data);
        let times: Vec<Duration> = (0..100)
            .map(|_| {
                let t = Instant::now();
                black_box(r.top_k(black_box(&ctx), 10));
                t.elapsed()
            })
            .collect();
        println!(
            "40k: {:<16} top-10 median {:.3} ms",
            r.name(),
            median_ms(times)
        );
    }
    println!(
        "40k: hybrid top-10 median {:.3} ms, with explanations {:.3} ms, online update {:.3} ms",
        median_ms(top),
        median_ms(explained),
        median_ms(update),
    );

    // `melodist recommend`'s path in process: open, read (whole history / only what changed
    // since the stored copy), fit, rank with explanations.
    let library = Catalogue::from_library(&melodist::presets::PresetLibrary::factory());
    let full: Vec<Duration> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let db = SessionDb::open(&path).expect("db");
            let log = db.load_log().expect("log");
            let mut h = Hybrid::default();
            h.fit(&Dataset::new(&log, library.clone()));
            black_box(h.recommend(&ctx, 5));
            t.elapsed()
        })
        .collect();
    let cached = |label: &str, runs: usize, before: &mut dyn FnMut(usize)| {
        let mut total = Vec::new();
        let mut parts = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut last = melodist::recommend::cache::LoadStats::default();
        for run in 0..runs {
            before(run);
            let t = Instant::now();
            // As `melodist recommend` opens it: without the whole-file check.
            let db = SessionDb::open_unverified(&path).expect("db");
            let opened = t.elapsed();
            let (data, stats) =
                melodist::recommend::cache::load_dataset(&db, library.clone()).expect("load");
            let loaded = t.elapsed();
            let mut h = Hybrid::default();
            h.fit(&data);
            let fitted = t.elapsed();
            black_box(h.recommend(&ctx, 5));
            let done = t.elapsed();
            total.push(done);
            parts[0].push(opened);
            parts[1].push(loaded - opened);
            parts[2].push(fitted - loaded);
            parts[3].push(done - fitted);
            last = stats;
        }
        let [open, load, fit, rank] = parts.map(median_ms);
        println!(
            "40k: recommend {label}: median {:.1} ms (open {open:.1}, read {load:.1}, fit {fit:.1}, rank {rank:.1}; last run read {} sessions, {} events, rebuilt {}, stored {})",
            median_ms(total),
            last.sessions_read,
            last.events_read,
            last.rebuilt,
            last.stored,
        );
    };
    cached("first call (builds the stored copy)", 1, &mut |_| {});
    cached("nothing new", 9, &mut |_| {});
    // A producer playing between calls: one new session with 20 events each time.
    cached("after 1 new session + 20 events", 9, &mut |run| {
        let db = SessionDb::open(&path).expect("db");
        let id = db
            .start_session(
                &last.producer,
                last.started_at_ms + 1 + run as i64,
                &last.context,
            )
            .expect("session");
        for e in 0..20 {
            let event = melodist::sessions::Event::about(
                e * 1000,
                EventKind::KeptPlaying,
                &world.presets[(e as usize * 7 + run) % world.presets.len()].id,
                None,
            );
            db.add_event(id, &event).expect("event");
        }
    });
    println!(
        "40k: recommend reading the whole history every call (before): median {:.0} ms",
        median_ms(full)
    );

    // The real thing: the release `melodist recommend` process on this database.
    let exe = env!("CARGO_BIN_EXE_melodist");
    let runs: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(exe)
                .args([
                    "recommend",
                    "--tempo",
                    "120",
                    "--meter",
                    "4/4",
                    "--key",
                    "A",
                ])
                .args(["--scale", "minor", "--producer", &last.producer])
                .env("MELODIST_DATA_DIR", dir.path())
                .output()
                .expect("run melodist");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.elapsed()
        })
        .collect();
    println!(
        "40k: `melodist recommend` process end to end: median {:.1} ms, max {:.1} ms (7 runs, first builds the stored copy if needed)",
        median_ms(runs.clone()),
        runs.iter().max().expect("runs").as_secs_f64() * 1e3
    );
}

criterion_group!(benches, recommend_top10, recorder_ingest, recommend_40k);
criterion_main!(benches);
