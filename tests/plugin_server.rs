//! The plugin as a client of `melodist serve` (its *Model server* setting), hosted in
//! clack-host: a real `melodist serve` process writes the first phrases, is killed in the
//! middle of playback, and the producer still hears every bar, with no stuck note.

mod common;

use clack_host::utils::BeatTime;
use common::{BLOCK, SR, Session, transport};
use melodist::cli::generate::generate_notes;
use melodist::generator::GenSettings;
use melodist::generator::loader::ModelChoice;
use melodist::generator::remote::{SETTING_FILE, ServerSetting};
use melodist::music::{Key, Meter, PitchClass, Scale};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `melodist serve` on a free loopback port, with its own database.
fn start_server(dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_melodist"))
        .args(["serve", "--bind", "127.0.0.1:0", "--threads", "1", "--db"])
        .arg(dir.join("server.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("melodist serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}

/// How many phrases the server has answered (from its Prometheus text).
fn phrases_served(addr: SocketAddr) -> u64 {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let line = r#"melodist_requests_total{endpoint="/v1/phrase",status="200"} "#;
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[test]
fn with_the_server_killed_mid_playback_every_bar_plays_and_no_note_sticks() {
    let data = common::isolate_user_data();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server(dir.path());
    // What a producer's Apply writes; a new plugin instance reads it.
    let setting = ServerSetting {
        enabled: true,
        url: format!("http://{addr}"),
        token: String::new(),
    };
    std::fs::write(
        data.join(SETTING_FILE),
        serde_json::to_vec(&setting).unwrap(),
    )
    .unwrap();

    let mut s = Session::new();
    // Free form: every 4-bar phrase is a new one, so the ones after the kill must be
    // written by someone.
    s.set_params(&[
        ("seed", serde_json::json!({"i32": 42})),
        ("root", serde_json::json!({"i32": 9})),
        ("scale", serde_json::json!({"i32": 1})),
        ("form", serde_json::json!({"i32": 0})),
    ]);
    let tempo = 240.0;
    let bars = 16;
    let kill_at_bar = 5;
    s.block(Some(transport(0.0, tempo, false)), &[]);
    std::thread::sleep(Duration::from_millis(300));

    // Twice real time: the worker, two bars ahead, keeps a full second of lead.
    let bps = tempo / 60.0 / SR;
    let block_time = Duration::from_secs_f64(BLOCK as f64 / SR / 2.0);
    let started = Instant::now();
    let mut pos = 0.0;
    let mut ons = Vec::new();
    let mut served_before_kill = None;
    for i in 0.. {
        if pos >= bars as f64 * 4.0 {
            break;
        }
        if served_before_kill.is_none() && pos >= kill_at_bar as f64 * 4.0 {
            served_before_kill = Some(phrases_served(addr));
            server.kill().unwrap();
            server.wait().unwrap();
        }
        let p = BeatTime::from_float(pos).to_float();
        for e in s.block(Some(transport(pos, tempo, true)), &[]) {
            if e.on {
                ons.push((p + e.timing as f64 * bps, e.key));
            }
        }
        pos += BLOCK as f64 * bps;
        let due = block_time * (i + 1);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    s.block(Some(transport(pos, tempo, false)), &[]);
    assert!(s.sounding.is_empty(), "stuck notes: {:?}", s.sounding);

    // The server wrote the first phrases, and some were left for after the kill.
    let served = served_before_kill.unwrap();
    assert!((1..bars / 4).contains(&served), "{served} phrases served");

    // Every note of the local model's melody played, on time, and nothing else: the
    // server runs the same shipped model, and the local model filled in after the kill.
    let settings = GenSettings {
        key: Key::new(PitchClass::A, Scale::Minor),
        seed: 42,
        form: 0,
        ..Default::default()
    };
    let (expected, _, _) = generate_notes(
        &ModelChoice::Default,
        settings,
        Meter::new(4, 4),
        bars as usize,
    );
    let played = |n: &melodist::midi::MelodyNote| {
        ons.iter().any(|(beat, key)| {
            *key == n.pitch && beat - n.start > -1e-6 && beat - n.start <= bps + 1e-6
        })
    };
    let missing: Vec<_> = expected.iter().filter(|n| !played(n)).collect();
    assert!(missing.is_empty(), "not played: {missing:?}");
    assert_eq!(ons.len(), expected.len(), "played {ons:?}");
    let last_bar = expected.iter().map(|n| n.start).fold(0.0, f64::max) / 4.0;
    assert!(
        last_bar >= (bars - 1) as f64,
        "the melody ends at bar {last_bar}"
    );
}
