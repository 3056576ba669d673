//! Soak test for `melodist serve` (issue 17), against loopback only and bounded in time:
//! an in-process server with a copy of the shipped models, then for `--seconds` (default
//! 600)
//! - 32 clients asking for 4-bar phrases at 80% of the capacity measured first;
//! - one client recording a session every half second (each must be in the history at
//!   the end: none lost);
//! - one rude client that sends a request and hangs up after 0-20 ms, five times a second;
//! - at a third and at two thirds of the run, the neural model on disk is replaced by
//!   another version (the server swaps it while serving).
//!
//! It prints the answers by status (429s are the server's deliberate back-pressure; any
//! other non-200 is an error), latency, history recorded vs stored, and the process's
//! resident memory every minute. Run with
//! `cargo bench --bench soak -- --seconds 600` (or `--profile dev` with the melodist crate
//! optimised, as the README says).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use melodist::serve::{ServeConfig, start};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Http = Client<HttpConnector, Full<Bytes>>;

const CLIENTS: usize = 32;
const BARS: u32 = 4;

async fn call(
    client: &Http,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    match client.request(req).await {
        Ok(res) => {
            let status = res.status();
            let body = res.into_body().collect().await.map(|b| b.to_bytes());
            (status, body.unwrap_or_default())
        }
        // Counted as an error (status 0): the server dropped the connection.
        Err(_) => (StatusCode::from_u16(599).unwrap(), Bytes::new()),
    }
}

/// Each client starts at its own seed (seeds go up to 99,999).
const SEEDS_PER_CLIENT: u64 = 100_000 / CLIENTS as u64;

/// One 4-bar phrase; its status.
async fn generate(client: &Http, addr: SocketAddr, seed: u64) -> StatusCode {
    let body = generate_body(seed);
    call(client, addr, Method::POST, "/v1/generate", body)
        .await
        .0
}

fn generate_body(seed: u64) -> Value {
    // Seeds go up to 99,999 (`limits::SEED`).
    json!({"bars": BARS, "seed": seed % 100_000})
}

/// Bars per second with `CLIENTS` clients sending back to back for `seconds`.
async fn capacity(client: &Http, addr: SocketAddr, seconds: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut ok = 0u32;
                let mut seed = c as u64 * SEEDS_PER_CLIENT;
                while Instant::now() < until {
                    seed += 1;
                    let status = generate(&client, addr, seed).await;
                    ok += (status == StatusCode::OK) as u32;
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    (ok * BARS) as f64 / seconds
}

/// The shipped neural model with every weight scaled by `factor`, written into `dir` the
/// way a deploy does (weights first, then the config, each renamed over the old file).
fn replace_model(dir: &Path, factor: f32) {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/neural"));
    let (weights, config) = melodist::serve::models::scaled_neural_model(root, factor).unwrap();
    for (name, bytes) in [("model.safetensors", weights), ("config.json", config)] {
        let fresh = dir.join(format!("{name}.new"));
        std::fs::write(&fresh, bytes).unwrap();
        std::fs::rename(&fresh, dir.join(name)).unwrap();
    }
}

fn resident_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = (args.iter().position(|a| a == "--seconds"))
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(600)
        .clamp(10, 3600);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(soak(Duration::from_secs(seconds)));
}

async fn soak(length: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let neural = dir.path().join("models/neural");
    std::fs::create_dir_all(&neural).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/neural");
    for file in ["config.json", "model.safetensors", "copyguard.bin"] {
        std::fs::copy(shipped.join(file), neural.join(file)).unwrap();
    }
    let server = start(ServeConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        db: dir.path().join("server.db"),
        models: dir.path().join("models"),
        model_poll: Some(Duration::from_secs(1)),
        ..ServeConfig::default()
    })
    .await
    .expect("server starts");
    let addr = server.addr;
    let client: Http = Client::builder(TokioExecutor::new()).build_http();

    let full = capacity(&client, addr, 10.0).await;
    let target = 0.8 * full;
    // Each client starts a request every `gap` (closed loop: later if the last is slow).
    let gap = Duration::from_secs_f64(CLIENTS as f64 * BARS as f64 / target);
    println!(
        "capacity {full:.0} bars/s with {CLIENTS} clients; soaking at {target:.0} bars/s for {} s (a request per client every {:.1} ms)",
        length.as_secs(),
        gap.as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let until = started + length;
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    // Latency counts per 0.1 ms up to 10 s, allocated once: a growing list of samples
    // would itself raise the memory this run watches.
    let latencies = Arc::new(Mutex::new(vec![0u64; 100_000]));
    let mut tasks = vec![];
    for c in 0..CLIENTS {
        let (client, statuses, latencies) = (client.clone(), statuses.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = c as u64 * SEEDS_PER_CLIENT;
            let mut next = Instant::now();
            while Instant::now() < until {
                seed += 1;
                let t = Instant::now();
                let status = generate(&client, addr, seed).await;
                let tenths = (t.elapsed().as_secs_f64() * 1e4) as usize;
                latencies.lock().unwrap()[tenths.min(99_999)] += 1;
                *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
                next += gap;
                tokio::time::sleep_until(next.into()).await;
            }
        }));
    }
    // History: one session every half second; each must be stored.
    let recorded = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut ok = 0u64;
            let mut failed = 0u64;
            while Instant::now() < until {
                let session = json!({
                    "started_at_ms": 1_700_000_000_000i64 + ok as i64 * 1000,
                    "ended_at_ms": 1_700_000_000_500i64 + ok as i64 * 1000,
                    "tempo": 120.0, "meter": "4/4",
                    "events": [{"t_ms": 100, "kind": "liked", "preset": "slow-air"}]
                });
                match call(&client, addr, Method::POST, "/v1/sessions", session)
                    .await
                    .0
                {
                    StatusCode::OK | StatusCode::CREATED => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (ok, failed)
        })
    };
    // The rude client: a request, then gone after 0-20 ms.
    let rude = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut n = 0u64;
        while Instant::now() < until {
            n += 1;
            if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                let body = generate_body(n).to_string();
                let head = format!(
                    "POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                std::thread::sleep(Duration::from_millis(n * 7919 % 21));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        n
    });
    // At a third and at two thirds: a new model version on disk (two swaps, so that
    // what a repeated swap costs shows). Memory every minute meanwhile.
    let mut swaps = [(1.0 / 3.0, 1.05f32), (2.0 / 3.0, 0.95)]
        .into_iter()
        .peekable();
    let mut memory = vec![(0u64, resident_mb())];
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = started.elapsed().as_secs();
        if let Some(&(fraction, factor)) = swaps.peek()
            && at as f64 >= length.as_secs_f64() * fraction
        {
            replace_model(&neural, factor);
            swaps.next();
            println!("{at:>4} s: replaced the neural model on disk (weights × {factor})");
        }
        if at.is_multiple_of(60) && memory.last().unwrap().0 != at {
            memory.push((at, resident_mb()));
            println!(
                "{at:>4} s: resident memory {:.0} MB",
                memory.last().unwrap().1
            );
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (recorded_ok, recorded_failed) = recorded.await.unwrap();
    let rude_requests = rude.await.unwrap();
    memory.push((started.elapsed().as_secs(), resident_mb()));

    let (status, body) = call(&client, addr, Method::GET, "/v1/sessions", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let stored = serde_json::from_slice::<Value>(&body).unwrap()["sessions"]
        .as_array()
        .map_or(0, Vec::len);
    let (_, models) = call(&client, addr, Method::GET, "/v1/models", json!({})).await;
    let statuses = statuses.lock().unwrap().clone();
    let total: u64 = statuses.values().sum();
    let errors: u64 = (statuses.iter())
        .filter(|(s, _)| **s != 200 && **s != 429)
        .map(|(_, n)| n)
        .sum();
    let counts = latencies.lock().unwrap().clone();
    let pct = |p: f64| {
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        let tenth = counts.iter().position(|&n| {
            seen += n;
            seen >= rank
        });
        tenth.unwrap_or(99_999) as f64 / 10.0
    };
    println!(
        "{total} generate requests in {} s ({:.0} bars/s): by status {statuses:?}; errors other than 429: {errors}; latency p50 {:.1} ms, p99 {:.1} ms",
        started.elapsed().as_secs(),
        (statuses.get(&200).copied().unwrap_or(0) * BARS as u64) as f64
            / started.elapsed().as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    println!(
        "history: {recorded_ok} sessions recorded ({recorded_failed} refused), {stored} stored: {} lost",
        recorded_ok as i64 - stored as i64
    );
    println!("rude client: {rude_requests} requests dropped mid-way");
    println!(
        "resident memory (MB) by second: {}",
        (memory.iter())
            .map(|(s, mb)| format!("{s}: {mb:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "models served at the end: {}",
        String::from_utf8_lossy(&models)
    );
    server.stop().await.unwrap();
}
