//! Recommender and recorder benchmarks (numbers are printed; nothing is asserted).
//!
//! - top-10 recommendation with explanations for one context, each recommender fitted on
//!   10,000 simulated sessions over 500 presets (target: hybrid ≤ 1 ms median);
//! - the session recorder fed 1,000 feedback events per second from a paced "audio" thread:
//!   per-event `record()` latency, drops and what reached the database (target: no
//!   blocking, nothing dropped).
//!
//! - 40,000 sessions (plugin-faithful simulator): hybrid top-10 from a fitted model, one
//!   online update, and `melodist recommend` end to end (open the SQLite file, load, fit,
//!   rank with explanations; target ≤ 100 ms), printed as medians.
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
    let path = dir.path().join("40k.sqlite3");
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
    let end_to_end: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let db = SessionDb::open(&path).expect("db");
            let log = db.load_log().expect("log");
            let mut h = Hybrid::default();
            h.fit(&Dataset::new(&log, catalogue.clone()));
            black_box(h.recommend(&ctx, 5));
            t.elapsed()
        })
        .collect();
    println!(
        "40k: hybrid top-10 median {:.3} ms, with explanations {:.3} ms, online update {:.3} ms, end to end (open+load+fit+rank) {:.0} ms",
        median_ms(top),
        median_ms(explained),
        median_ms(update),
        median_ms(end_to_end)
    );
}

criterion_group!(benches, recommend_top10, recorder_ingest, recommend_40k);
criterion_main!(benches);
