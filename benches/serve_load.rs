//! Load generator for `melodist serve` (issue 17's targets), against loopback only and
//! bounded in count and time: it starts a server in this process on 127.0.0.1 with an
//! ephemeral port and the shipped models, then prints
//! - start to first answer: from `serve::start` (database, models for every decode thread,
//!   VAE) to the first `POST /v1/generate` answered;
//! - bars per second and p50 / p99 latency of 4-bar phrases at 1 and at 32 concurrent
//!   clients (each client sends its requests one after another), and any non-200 answers;
//! - resident memory of this process (server and client together) after the runs.
//!
//! Run with `cargo bench --bench serve_load` (or `--profile dev` with the melodist crate
//! optimised, as the README says). Both the client and the server share this machine's
//! cores, as they would on one box.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use melodist::serve::{ServeConfig, start};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Http = Client<HttpConnector, Full<Bytes>>;

/// Stop sending after this long, whatever the counts say.
const TIME_LIMIT: Duration = Duration::from_secs(300);
const BARS: u32 = 4;

async fn generate(client: &Http, addr: SocketAddr, seed: u64) -> (StatusCode, Duration) {
    let body = format!("{{\"bars\": {BARS}, \"seed\": {seed}}}");
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/v1/generate"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let t = Instant::now();
    let res = client.request(req).await.expect("the server answers");
    let status = res.status();
    res.into_body().collect().await.expect("a body");
    (status, t.elapsed())
}

/// `clients` clients sending `each` requests one after another; prints one line.
async fn run(client: &Http, addr: SocketAddr, clients: usize, each: usize, deadline: Instant) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for r in 0..each {
                    if Instant::now() > deadline {
                        break;
                    }
                    out.push(generate(&client, addr, (c * 1000 + r) as u64).await);
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    let wall = started.elapsed().as_secs_f64();
    let ok: Vec<Duration> = (results.iter())
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, d)| *d)
        .collect();
    let mut ms: Vec<f64> = ok.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{clients:>2} client(s): {} requests of {BARS} bars in {wall:.2} s: {:.0} bars/s, latency p50 {:.1} ms, p99 {:.1} ms, non-200 answers {}",
        results.len(),
        (ok.len() as u32 * BARS) as f64 / wall,
        pct(0.5),
        pct(0.99),
        results.len() - ok.len()
    );
}

/// This process's resident memory, from /proc (Linux).
fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + TIME_LIMIT;
        // Batch sizes down to no batching (1): three
        // rounds, alternating, as this machine's speed drifts from minute to minute.
        let batches = [16, 8, 4, 1];
        for (round, batch) in (0..3).flat_map(|r| batches.map(|b| (r, b))) {
            let dir = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let server = start(ServeConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                db: dir.path().join("server.db"),
                models: concat!(env!("CARGO_MANIFEST_DIR"), "/models").into(),
                batch,
                ..ServeConfig::default()
            })
            .await
            .expect("server starts");
            let client: Http = Client::builder(TokioExecutor::new()).build_http();
            let (status, _) = generate(&client, server.addr, 1).await;
            assert_eq!(status, StatusCode::OK);
            println!(
                "--batch {batch}: start to first answer {:.0} ms ({} compute threads, models: {})",
                t.elapsed().as_secs_f64() * 1e3,
                server.state.config.threads,
                (server.state.models().infos.iter())
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            run(&client, server.addr, 1, 200, deadline).await;
            run(&client, server.addr, 32, 32, deadline).await;
            print_batch_sizes(&client, server.addr).await;
            if round == 0 && batch == ServeConfig::default().batch {
                // Later servers in this process would count the earlier ones' leftovers.
                if let Some(mb) = resident_mb() {
                    println!("resident memory (server + client, one process): {mb:.0} MB");
                }
            }
            server.stop().await.unwrap();
        }
    });
}

/// The mean batched step size so far, from the server's own `/metrics`.
async fn print_batch_sizes(client: &Http, addr: SocketAddr) {
    let req = Request::builder()
        .uri(format!("http://{addr}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = client.request(req).await.unwrap().into_body();
    let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let value = |name: &str| -> f64 {
        (text.lines())
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        value("melodist_decode_batch_size_sum"),
        value("melodist_decode_batch_size_count"),
    );
    println!(
        "  decode steps: {count:.0} batches, {:.1} sequences per batch on average",
        sum / count.max(1.0)
    );
}
