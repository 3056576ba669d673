//! `melodist serve` end to end: a server on 127.0.0.1 with an ephemeral port, called over
//! real HTTP (hyper's client). Endpoint contracts, bad input, back-pressure, and that one
//! user can never read, rank from or delete another's history.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use melodist::cli::generate::generate_notes;
use melodist::generator::loader::{self, ModelChoice};
use melodist::generator::remote::{CALL_LIMIT, RemoteGenerator, ServerLink, ServerSetting};
use melodist::generator::{Cadence, ContextNote, GenSettings, PhraseShape, render_phrase};
use melodist::midi::MelodyNote;
use melodist::model::tokenizer::Style;
use melodist::music::{Key, Meter, PitchClass, Scale};
use melodist::serve::api::{CheckedPhrase, PhraseCall};
use melodist::serve::auth::TokenStore;
use melodist::serve::{RunningServer, ServeConfig, start};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A server on a free loopback port with its own database; one decode thread, decoding up
/// to 4 requests at once.
async fn server(dir: &Path, edit: impl FnOnce(&mut ServeConfig)) -> RunningServer {
    let mut config = ServeConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        db: dir.join("server.db"),
        models: "models".into(),
        threads: 1,
        batch: 4,
        queue: 8,
        ..ServeConfig::default()
    };
    edit(&mut config);
    start(config).await.expect("server starts")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The sentence of an error reply (and that it is one, with the status inside).
    fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v["error"]["status"], self.status.as_u16(), "{v}");
        v["error"]["message"]
            .as_str()
            .expect("a message")
            .to_string()
    }
}

/// One HTTP call with an optional token, body bytes and extra headers.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let res = client.request(req).await.expect("the server answers");
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> Reply {
    call(
        addr,
        Method::POST,
        path,
        token,
        Some(body.to_string().into_bytes()),
        &[],
    )
    .await
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    call(addr, Method::GET, path, token, None, &[]).await
}

fn notes_of(v: &Value) -> Vec<MelodyNote> {
    v.as_array()
        .expect("notes")
        .iter()
        .map(|n| MelodyNote {
            start: n["start"].as_f64().unwrap(),
            duration: n["duration"].as_f64().unwrap(),
            pitch: n["pitch"].as_u64().unwrap() as u8,
            velocity: n["velocity"].as_u64().unwrap() as u8,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_gives_the_clis_notes_and_midi_file_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    let request = json!({
        "bars": 8, "seed": 4242, "key": "D", "scale": "dorian", "meter": "6/8",
        "tempo": 100, "density": 0.7, "variation": 0.4, "low": 55, "high": 79,
        "gate": 0.8, "velocity": 90, "humanize": 0.3, "style": "jig", "form": 8
    });
    let reply = post(s.addr, "/v1/generate", None, request.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.json();
    let settings = GenSettings {
        key: Key::new(
            PitchClass::parse("D").unwrap(),
            Scale::parse("dorian").unwrap(),
        ),
        low: 55,
        high: 79,
        density: 0.7,
        variation: 0.4,
        gate: 0.8,
        velocity: 90,
        humanize: 0.3,
        seed: 4242,
        style: Style::Jig,
        form: 8,
        ..GenSettings::default()
    };
    let (want, _, _) = generate_notes(&ModelChoice::Default, settings, Meter::new(6, 8), 8);
    assert!(!want.is_empty());
    assert_eq!(notes_of(&body["notes"]), want);
    assert_eq!(body["meter"], "6/8");

    // With Accept: audio/midi, the very bytes `melodist generate` writes.
    let midi = call(
        s.addr,
        Method::POST,
        "/v1/generate",
        None,
        Some(request.to_string().into_bytes()),
        &[("accept", "audio/midi")],
    )
    .await;
    assert_eq!(midi.status, StatusCode::OK);
    assert_eq!(midi.headers["content-type"], "audio/midi");
    let out = dir.path().join("cli.mid");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_melodist"))
        .args([
            "generate",
            "--bars",
            "8",
            "--seed",
            "4242",
            "--key",
            "D",
            "--scale",
            "dorian",
            "--meter",
            "6/8",
            "--tempo",
            "100",
            "--density",
            "0.7",
            "--variation",
            "0.4",
            "--low",
            "55",
            "--high",
            "79",
            "--gate",
            "0.8",
            "--velocity",
            "90",
            "--humanize",
            "0.3",
            "--style",
            "jig",
            "--form",
            "8",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_eq!(midi.body.as_ref(), std::fs::read(&out).unwrap().as_slice());
}

/// Loop mode with the plugin's Morph and Vary: the server plays what the plugin and
/// `melodist generate --loop-bars 4 --morph 0.5 --vary 1` play.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_morph_and_vary_give_the_clis_notes() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    let request = json!({"bars": 8, "seed": 31, "loop_bars": 4, "morph": 0.5, "vary": 1});
    let reply = post(s.addr, "/v1/generate", None, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let settings = GenSettings {
        seed: 31,
        loop_bars: 4,
        morph: 0.5,
        vary_step: 1,
        ..GenSettings::default()
    };
    let (want, _, _) = generate_notes(&ModelChoice::Default, settings, Meter::new(4, 4), 8);
    let plain = GenSettings {
        morph: 0.0,
        vary_step: 0,
        ..settings
    };
    let (unmorphed, _, _) = generate_notes(&ModelChoice::Default, plain, Meter::new(4, 4), 8);
    assert_ne!(want, unmorphed, "Morph and Vary change the loop");
    assert_eq!(notes_of(&reply.json()["notes"]), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_and_a_pinned_version_must_be_the_served_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    assert_eq!(get(s.addr, "/healthz", None).await.json()["status"], "ok");
    let models = get(s.addr, "/v1/models", None).await.json();
    let list = models["models"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["neural", "markov", "vae"]);
    let config: Value =
        serde_json::from_slice(&std::fs::read("models/neural/config.json").unwrap()).unwrap();
    assert_eq!(list[0]["version"], config["weights_fnv1a"]);
    assert_eq!(list[0]["format"], config["format"]);

    let version = list[1]["version"].as_str().unwrap();
    let ok = post(
        s.addr,
        "/v1/generate",
        None,
        json!({"model": "markov", "version": version, "bars": 2}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["model"], "markov");
    let stale = post(
        s.addr,
        "/v1/generate",
        None,
        json!({"version": "0000000000000000"}),
    )
    .await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
    assert!(
        stale
            .error()
            .contains("version \"0000000000000000\" is not served here")
    );
    let unknown = post(s.addr, "/v1/generate", None, json!({"model": "gpt"})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.error().starts_with("unknown model \"gpt\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_lists_every_v1_endpoint_and_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    let doc = get(s.addr, "/v1/openapi.json", None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/models",
        "/v1/generate",
        "/v1/vary",
        "/v1/morph",
        "/v1/sessions",
        "/v1/recommend",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    // Derived from the request type: a new field shows up without editing the document.
    for field in ["density", "seed", "loop_bars", "chords"] {
        assert!(
            schemas["GenerateRequest"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schemas["ErrorBody"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_a_status_and_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |c| c.body_limit = 4096).await;
    let raw = |body: &str| Some(body.as_bytes().to_vec());
    // Not JSON.
    let r = call(
        s.addr,
        Method::POST,
        "/v1/generate",
        None,
        raw("{bars: 4"),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.error().is_empty());
    // Too large.
    let big = format!("{{\"key\": \"{}\"}}", "C".repeat(10_000));
    let r = call(
        s.addr,
        Method::POST,
        "/v1/generate",
        None,
        Some(big.into_bytes()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error(), "the request body is too large");
    // Out of range, with the field, range and value.
    let r = post(s.addr, "/v1/generate", None, json!({"density": 5})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error(), "density must be between 0 and 1, not 5");
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 100000})).await;
    assert_eq!(r.error(), "bars must be between 1 and 256, not 100000");
    // A misspelt field is refused, not ignored.
    let r = post(s.addr, "/v1/generate", None, json!({"densty": 0.5})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.error().contains("unknown field `densty`"));
    // Not declared as JSON.
    let r = call(s.addr, Method::POST, "/v1/generate", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(!r.error().is_empty());
    // Bad chords, bad notes for the VAE, unknown path.
    let r = post(s.addr, "/v1/generate", None, json!({"chords": "Am Xq9"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.error().starts_with("bad chords"));
    let r = post(
        s.addr,
        "/v1/vary",
        None,
        json!({"notes": [{"start": 0, "duration": 1, "pitch": 200}]}),
    )
    .await;
    assert_eq!(
        r.error(),
        "notes[0].pitch must be between 0 and 127, not 200"
    );
    // A plugin's phrase call with a knob, a length or an ending it cannot have.
    let phrase = |edit: &dyn Fn(&mut Value)| {
        let phrase = worker_phrases().remove(1);
        let request = phrase.request();
        let mut body = serde_json::to_value(PhraseCall::new("neural", &request)).unwrap();
        edit(&mut body);
        body
    };
    for (edit, sentence) in [
        (
            &(|b: &mut Value| b["settings"]["density"] = json!(5)) as &dyn Fn(&mut Value),
            "settings.density must be between 0 and 1, not 5",
        ),
        (
            &|b| b["bars"] = json!(0),
            "bars must be between 1 and 8, not 0",
        ),
        (
            &|b| b["cadence"] = json!("loud"),
            "cadence must be \"open\", \"close\" or absent, not \"loud\"",
        ),
        (
            &|b| b["context"][0]["pitch"] = json!(-1),
            "context[0].pitch must be between 0 and 127, not -1",
        ),
        (
            &|b| b["chords"] = json!(vec![0; 1000]),
            "chords has 1000 ticks; a 2-bar phrase in 4/4 has 96",
        ),
    ] {
        let r = post(s.addr, "/v1/phrase", None, phrase(edit)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.error(), sentence);
    }
    let r = post(s.addr, "/v1/phrase", None, phrase(&|_| {})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.error());
    let r = get(s.addr, "/v2/nothing", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.error().is_empty());
    // The server is still fine.
    assert_eq!(
        post(s.addr, "/v1/generate", None, json!({"bars": 1}))
            .await
            .status,
        StatusCode::OK
    );
}

/// Concurrent requests are decoded together (their network steps batched) and each still
/// gets the notes it gets alone, on a server that decodes one request at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_notes() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let batched = server(dir_a.path(), |c| c.batch = 8).await;
    let alone = server(dir_b.path(), |c| c.batch = 1).await;
    let styles = ["reel", "jig", "hornpipe", "chorale"];
    let requests: Vec<Value> = (0..8)
        .map(|i| {
            json!({
                "bars": 4, "seed": 100 + i, "style": styles[i % 4],
                "density": 0.3 + 0.1 * i as f64, "chords": "Am F C G"
            })
        })
        .collect();
    let addr = batched.addr;
    let tasks: Vec<_> = (requests.iter().cloned())
        .map(|r| tokio::spawn(async move { post(addr, "/v1/generate", None, r).await }))
        .collect();
    for (task, request) in tasks.into_iter().zip(&requests) {
        let together = task.await.unwrap();
        assert_eq!(together.status, StatusCode::OK, "{:?}", together.body);
        let one = post(alone.addr, "/v1/generate", None, request.clone()).await;
        assert!(!notes_of(&one.json()["notes"]).is_empty());
        assert_eq!(together.json()["notes"], one.json()["notes"], "{request}");
    }
    // Some steps did run for several requests at once.
    let metrics = String::from_utf8(get(addr, "/metrics", None).await.body.to_vec()).unwrap();
    let value = |name: &str| -> f64 {
        (metrics.lines())
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let singles = value("melodist_decode_batch_size_bucket{le=\"1\"}");
    let steps = value("melodist_decode_batch_size_count");
    assert!(steps > singles, "no step was batched: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_decode_queue_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |c| c.queue = 1).await;
    let pool = &s.state.pool;
    // Occupy the one decode thread until released...
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = pool
        .submit(move |_| {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
        .unwrap();
    started_rx.recv().unwrap();
    // ...and fill the queue's one place.
    let queued = pool.submit(|_| ()).unwrap();
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 1})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.error().contains("busy"));
    let metrics = String::from_utf8(get(s.addr, "/metrics", None).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("melodist_decode_queue_depth 1"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"melodist_requests_total{endpoint="/v1/generate",status="429"} 1"#));
    // Released, the queue drains and requests are served again.
    release_tx.send(()).unwrap();
    blocker.await.unwrap();
    queued.await.unwrap();
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 1})).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_answered_in_time_is_a_408_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |c| {
        c.request_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = s
        .state
        .pool
        .submit(move |_| release_rx.recv().unwrap())
        .unwrap();
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 1})).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert!(r.error().contains("not answered within 0.3 s"));
    release_tx.send(()).unwrap();
    blocker.await.unwrap();
    assert_eq!(
        post(s.addr, "/v1/generate", None, json!({"bars": 1}))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_decode_is_a_500_and_the_pool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    let err = s
        .state
        .pool
        .run(|_| -> Result<(), _> { panic!("a decode bug") })
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(err.message.contains("other requests are not affected"));
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 2})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.json()["notes"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_and_morph_return_notes_in_beat_time_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    let hook: Vec<Value> = [60, 62, 64, 65, 67, 65, 64, 62]
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"start": i as f64 * 0.5, "duration": 0.5, "pitch": p}))
        .collect();
    let other: Vec<Value> = [67, 67, 69, 71, 72, 71, 69, 67]
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"start": i as f64, "duration": 1.0, "pitch": p}))
        .collect();
    let vary =
        json!({"notes": hook, "count": 3, "distance": 0.5, "options": {"key": "C", "seed": 7}});
    let a = post(s.addr, "/v1/vary", None, vary.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let a = a.json();
    assert_eq!(a["phrases"].as_array().unwrap().len(), 3);
    assert_eq!(a, post(s.addr, "/v1/vary", None, vary).await.json());
    for phrase in a["phrases"].as_array().unwrap() {
        assert!(
            notes_of(phrase)
                .iter()
                .all(|n| (48..=96).contains(&n.pitch) && n.start >= 0.0)
        );
    }
    let morph = json!({"a": hook, "b": other, "steps": 4, "options": {"key": "C"}});
    let m = post(s.addr, "/v1/morph", None, morph).await;
    assert_eq!(m.status, StatusCode::OK, "{:?}", m.body);
    assert_eq!(m.json()["phrases"].as_array().unwrap().len(), 4);
    let r = post(
        s.addr,
        "/v1/morph",
        None,
        json!({"a": hook, "b": [], "options": {"key": "C"}}),
    )
    .await;
    assert_eq!(r.error(), "b has no notes");
}

// ---- history isolation: one test per endpoint -------------------------------------------

/// A server that needs tokens even on loopback, with users "a" and "b".
async fn two_users(dir: &Path) -> (RunningServer, String, String) {
    let tokens = TokenStore::open(&dir.join("server.db")).unwrap();
    let (a, b) = (tokens.add("a").unwrap(), tokens.add("b").unwrap());
    let s = server(dir, |c| c.require_token = true).await;
    (s, a, b)
}

fn session(preset: &str) -> Value {
    json!({
        "started_at_ms": 1_700_000_000_000i64, "ended_at_ms": 1_700_000_600_000i64,
        "tempo": 120.0, "meter": "4/4",
        "events": [
            {"t_ms": 1000, "kind": "liked", "preset": preset},
            {"t_ms": 2000, "kind": "kept", "preset": preset},
            {"t_ms": 3000, "kind": "preset_used", "preset": preset, "seconds": 300.0}
        ]
    })
}

async fn sessions_of(addr: SocketAddr, token: &str) -> Vec<Value> {
    let r = get(addr, "/v1/sessions", Some(token)).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()["sessions"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_is_filed_under_the_caller_whatever_the_body_says() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_users(dir.path()).await;
    let mut body = session("reel-drive");
    body["producer"] = json!("b");
    let r = post(s.addr, "/v1/sessions", Some(&a), body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(sessions_of(s.addr, &a).await[0]["producer"], "a");
    assert!(sessions_of(s.addr, &b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_can_never_list_or_export_another_users_history() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_users(dir.path()).await;
    post(s.addr, "/v1/sessions", Some(&b), session("slow-air")).await;
    post(s.addr, "/v1/sessions", Some(&a), session("reel-drive")).await;
    let mine = sessions_of(s.addr, &a).await;
    assert_eq!(mine.len(), 1);
    assert!(!mine[0].to_string().contains("slow-air"));
    let export = get(s.addr, "/v1/sessions?format=jsonl", Some(&a)).await;
    assert_eq!(export.status, StatusCode::OK);
    let text = String::from_utf8(export.body.to_vec()).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("reel-drive") && !text.contains("slow-air"));
    // No token, or a wrong one: nothing at all.
    assert_eq!(
        get(s.addr, "/v1/sessions", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = get(s.addr, "/v1/sessions", Some("mld_0000")).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(!forged.error().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_can_never_delete_another_users_history() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_users(dir.path()).await;
    post(s.addr, "/v1/sessions", Some(&b), session("slow-air")).await;
    post(s.addr, "/v1/sessions", Some(&b), session("slow-air")).await;
    post(s.addr, "/v1/sessions", Some(&a), session("reel-drive")).await;
    let r = call(s.addr, Method::DELETE, "/v1/sessions", Some(&a), None, &[]).await;
    assert_eq!(r.json()["deleted"], 1);
    assert!(sessions_of(s.addr, &a).await.is_empty());
    assert_eq!(sessions_of(s.addr, &b).await.len(), 2);
    let r = call(s.addr, Method::DELETE, "/v1/sessions", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sessions_of(s.addr, &b).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_can_never_rank_from_another_users_history() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = two_users(dir.path()).await;
    let context = json!({"tempo": 120, "meter": "4/4", "count": 50});
    let before = post(s.addr, "/v1/recommend", Some(&a), context.clone())
        .await
        .json();
    for _ in 0..6 {
        post(s.addr, "/v1/sessions", Some(&b), session("slow-air")).await;
    }
    // B's history moves B's ranking...
    let of_b = post(s.addr, "/v1/recommend", Some(&b), context.clone())
        .await
        .json();
    assert_eq!(of_b["sessions"], 6);
    assert_eq!(of_b["presets"][0]["preset_id"], "slow-air", "{of_b}");
    // ...and leaves A's exactly as it was.
    let after = post(s.addr, "/v1/recommend", Some(&a), context)
        .await
        .json();
    assert_eq!(after["sessions"], 0);
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_server_is_for_this_machine_only() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback, no tokens: anonymous calls are the local user.
    let s = server(dir.path(), |_| {}).await;
    assert_eq!(get(s.addr, "/v1/me", None).await.json()["user"], "local");
    s.stop().await.unwrap();
    // Any other address needs tokens, so the server does not start without any.
    let config = ServeConfig {
        bind: SocketAddr::from(([0, 0, 0, 0], 0)),
        db: dir.path().join("server.db"),
        threads: 1,
        ..ServeConfig::default()
    };
    let err = start(config).await.err().expect("refused");
    assert!(format!("{err:#}").contains("needs API tokens"), "{err:#}");
}

/// Runs the `melodist` binary off the async threads; (success, stdout, stderr).
async fn cli(args: Vec<String>, envs: Vec<(&'static str, String)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_melodist"))
            .args(&args)
            .envs(envs)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    })
    .await
    .unwrap()
}

/// `--server` on the command line: the melody and the ranking come from the server (with
/// the caller's token), the file is byte for byte the local one, and with the server gone
/// the command still writes it, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_asks_the_server_and_writes_here_when_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (s, alice, _) = two_users(dir.path()).await;
    post(s.addr, "/v1/sessions", Some(&alice), session("slow-air")).await;
    let url = format!("http://{}", s.addr);
    let token = vec![
        ("MELODIST_TOKEN", alice.clone()),
        ("MELODIST_DATA_DIR", dir.path().display().to_string()),
    ];
    let generate = |out: &str, server: Option<&str>| {
        let mut args: Vec<String> = [
            "generate", "--bars", "4", "--seed", "77", "--style", "jig", "--meter", "6/8",
            "--chords", "Dm C", "--out",
        ]
        .map(String::from)
        .to_vec();
        args.push(dir.path().join(out).display().to_string());
        if let Some(server) = server {
            args.extend(["--server".to_string(), server.to_string()]);
        }
        args
    };

    let (ok, stdout, stderr) = cli(generate("remote.mid", Some(&url)), token.clone()).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("on {url}")), "{stdout}");
    let metrics = String::from_utf8(get(s.addr, "/metrics", None).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"melodist_requests_total{endpoint="/v1/generate",status="200"} 1"#),
        "{metrics}"
    );
    let (ok, _, stderr) = cli(generate("local.mid", None), token.clone()).await;
    assert!(ok, "{stderr}");
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert_eq!(read("remote.mid"), read("local.mid"));

    let recommend = vec!["recommend".to_string(), "--server".to_string(), url.clone()];
    let (ok, stdout, stderr) = cli(recommend.clone(), token.clone()).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("from \"a\"'s 1 session there"), "{stdout}");
    assert!(stdout.contains("slow-air"), "{stdout}");

    s.stop().await.unwrap();
    let (ok, stdout, stderr) = cli(generate("fallback.mid", Some(&url)), token.clone()).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("gave no melody") && stderr.contains("writing it here"),
        "{stderr}"
    );
    assert!(!stdout.contains(&format!("on {url}")), "{stdout}");
    assert_eq!(read("fallback.mid"), read("local.mid"));
    let (ok, _, stderr) = cli(recommend, token).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("gave no ranking"), "{stderr}");
}

/// `melodist sessions import/export/forget --server`: each user's own history on the
/// server, with their token; another user's is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_commands_act_on_the_callers_history_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (s, alice, bob) = two_users(dir.path()).await;
    let url = format!("http://{}", s.addr);
    let as_user = |token: &str| {
        vec![
            ("MELODIST_TOKEN", token.to_string()),
            (
                "MELODIST_DATA_DIR",
                dir.path().join("local").display().to_string(),
            ),
        ]
    };
    let run = |args: &[&str], token: &str| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--server".to_string(), url.clone()]);
        cli(args, as_user(token))
    };
    let mine = dir.path().join("mine.jsonl");
    let lines: String = ["reel-drive", "slow-air"]
        .iter()
        .map(|preset| {
            let mut line = session(preset);
            line["producer"] = json!("someone-else");
            line["session"] = json!(0);
            format!("{line}\n")
        })
        .collect();
    std::fs::write(&mine, lines).unwrap();

    let (ok, stdout, stderr) = run(&["sessions", "import", mine.to_str().unwrap()], &alice).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("added 2 sessions"), "{stdout}");
    assert_eq!(sessions_of(s.addr, &alice).await.len(), 2);
    assert!(sessions_of(s.addr, &bob).await.is_empty());

    let out = dir.path().join("export.jsonl");
    let (ok, stdout, stderr) = run(&["sessions", "export", out.to_str().unwrap()], &alice).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("exported your 2 sessions"), "{stdout}");
    let exported = melodist::sessions::jsonl::read_file(&out).unwrap();
    assert_eq!(exported.sessions.len(), 2);
    assert!(exported.sessions.iter().all(|x| x.producer == "a"));

    let (ok, stdout, stderr) = run(&["sessions", "forget", "--yes"], &bob).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("deleted your 0 sessions"), "{stdout}");
    assert_eq!(sessions_of(s.addr, &alice).await.len(), 2);
    let (ok, stdout, stderr) = run(&["sessions", "forget", "--yes"], &alice).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("deleted your 2 sessions"), "{stdout}");
    assert!(sessions_of(s.addr, &alice).await.is_empty());

    // A wrong token is an error that says so, and changes nothing.
    let (ok, _, stderr) = run(&["sessions", "forget", "--yes"], "mld_wrong").await;
    assert!(!ok);
    assert!(stderr.contains("answered 401"), "{stderr}");
}

/// Phrases as the plugin's worker asks for them: a 4-bar opening, a 2-bar answer after
/// the producer's notes, a phrase over chords in 6/8, one left to end as the model likes.
fn worker_phrases() -> Vec<CheckedPhrase> {
    let settings = GenSettings {
        seed: 31,
        key: Key::new(PitchClass::D, Scale::Dorian),
        style: Style::Reel,
        ..GenSettings::default()
    };
    let played: Vec<ContextNote> = [62u8, 65, 69, 67, 65, 64]
        .iter()
        .map(|&pitch| ContextNote {
            pitch,
            duration: 0.5,
        })
        .collect();
    let d_minor = 1u16 << 2 | 1 << 5 | 1 << 9;
    let phrase = |meter, phrase_index, bars, strain_bar, cadence| CheckedPhrase {
        settings,
        meter,
        phrase_index,
        bars,
        context: Vec::new(),
        shape: PhraseShape {
            strain_bar,
            cadence,
        },
        chords: Vec::new(),
    };
    vec![
        phrase(Meter::new(4, 4), 0, 4, 7, Some(Cadence::Open)),
        CheckedPhrase {
            context: played,
            ..phrase(Meter::new(4, 4), 1, 2, 1, Some(Cadence::Close))
        },
        CheckedPhrase {
            settings: GenSettings {
                seed: 5,
                density: 0.8,
                ..settings
            },
            chords: vec![d_minor; 60],
            ..phrase(Meter::new(6, 8), 3, 4, 3, Some(Cadence::Close))
        },
        phrase(Meter::new(3, 4), -2, 1, 4, None),
    ]
}

/// The plugin's *Model server* setting, on the worker's side: every phrase comes from the
/// server (with the user's token) and is the phrase the local model writes; with a wrong
/// token, a server that stops answering, or one gone, the local model writes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_worker_gets_its_phrases_from_the_server_and_plays_locally_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let (s, alice, _) = two_users(dir.path()).await;
    let url = format!("http://{}", s.addr);
    let link = Arc::new(ServerLink::default());
    // What the editor's Apply does.
    let point_at = |url: String, token: &str| {
        link.set(ServerSetting {
            enabled: true,
            url,
            token: token.to_string(),
        })
    };
    point_at(url.clone(), &alice);
    // The worker's thread is not async: the generator makes blocking calls.
    let worker = |mut remote: RemoteGenerator| {
        tokio::task::spawn_blocking(move || {
            let mut local = loader::load(&ModelChoice::Default).0;
            let mut pairs = Vec::new();
            for phrase in worker_phrases() {
                let request = phrase.request();
                let started = std::time::Instant::now();
                let remote_bars = render_phrase(&mut remote, &request);
                let waited = started.elapsed();
                pairs.push((remote_bars, render_phrase(local.as_mut(), &request), waited));
            }
            (remote, pairs)
        })
    };
    // Phrases from the server and from the local model so far, and what the editor shows.
    let counted = |served: u64, here: u64, said: &str| {
        assert_eq!(link.from_server.load(Ordering::Relaxed), served);
        assert_eq!(link.fell_back.load(Ordering::Relaxed), here);
        assert!(link.report().contains(said), "{}", link.report());
    };
    let remote = RemoteGenerator::new(loader::load(&ModelChoice::Default).0, link.clone());
    let (remote, pairs) = worker(remote).await.unwrap();
    for (remote_bars, local_bars, _) in &pairs {
        assert_eq!(remote_bars, local_bars);
        assert!(remote_bars.iter().flatten().count() > 0);
    }
    counted(4, 0, "wrote the last phrase");
    let metrics = String::from_utf8(get(s.addr, "/metrics", None).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"melodist_requests_total{endpoint="/v1/phrase",status="200"} 4"#),
        "{metrics}"
    );

    // A wrong token: refused, said, and the local model writes every phrase.
    point_at(url.clone(), "not-a-token");
    let (remote, pairs) = worker(remote).await.unwrap();
    assert!(pairs.iter().all(|(r, l, _)| r == l));
    counted(4, 4, "answered 401");

    // A server that takes connections and never answers: one call waits out the limit,
    // then the server is left alone and the rest are written here at once.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    point_at(format!("http://{}", silent.local_addr().unwrap()), "");
    let (remote, pairs) = worker(remote).await.unwrap();
    assert!(pairs.iter().all(|(r, l, _)| r == l));
    let waits: Vec<_> = pairs.iter().map(|p| p.2).collect();
    assert!(
        waits[0] >= CALL_LIMIT && waits[0] < CALL_LIMIT * 4,
        "{waits:?}"
    );
    assert!(waits[1..].iter().all(|w| *w < CALL_LIMIT), "{waits:?}");
    counted(4, 8, "no answer within");
    drop(silent);

    // The server gone: the same, at once.
    point_at(url, &alice);
    s.stop().await.unwrap();
    let (remote, pairs) = worker(remote).await.unwrap();
    // Its client's runtime may not be dropped on an async thread.
    tokio::task::spawn_blocking(move || drop(remote))
        .await
        .unwrap();
    assert!(pairs.iter().all(|(r, l, w)| r == l && *w < CALL_LIMIT));
    counted(4, 12, "cannot reach it");
}

/// The shipped neural model with every weight scaled by `factor`: another version of it.
fn scaled_model(factor: f32) -> (Vec<u8>, Vec<u8>) {
    melodist::serve::models::scaled_neural_model(Path::new("models/neural"), factor).unwrap()
}

/// Writes `bytes` to `path` the way a careful deploy does: a new file renamed over the old.
fn replace_file(path: &Path, bytes: &[u8]) {
    let fresh = path.with_extension("new");
    std::fs::write(&fresh, bytes).unwrap();
    std::fs::rename(&fresh, path).unwrap();
}

async fn neural_version(addr: SocketAddr) -> String {
    let models = get(addr, "/v1/models", None).await.json();
    let neural = (models["models"].as_array().unwrap().iter()).find(|m| m["name"] == "neural");
    neural.unwrap()["version"].as_str().unwrap().to_string()
}

/// A model folder replaced while the server runs is served from then on, without a
/// restart and without failing the requests in flight (each answer names the version that
/// wrote it); a folder that does not load is refused with its reason, and the previous
/// models stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_replaced_while_serving_are_swapped_whole_and_a_broken_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let neural = dir.path().join("models/neural");
    std::fs::create_dir_all(&neural).unwrap();
    for file in ["config.json", "model.safetensors", "copyguard.bin"] {
        std::fs::copy(Path::new("models/neural").join(file), neural.join(file)).unwrap();
    }
    let s = server(dir.path(), |c| {
        c.models = dir.path().join("models");
        c.model_poll = Some(std::time::Duration::from_millis(50));
    })
    .await;
    let old = neural_version(s.addr).await;
    let old_weights = std::sync::Arc::downgrade(&s.state.models().fast_model());

    // Requests keep coming while the model is replaced.
    let addr = s.addr;
    let traffic = tokio::spawn(async move {
        let mut answers = vec![];
        for seed in 0..40 {
            let r = post(addr, "/v1/generate", None, json!({"bars": 2, "seed": seed})).await;
            answers.push((r.status, r.json()["version"].as_str().map(str::to_string)));
        }
        answers
    });
    let (weights, config) = scaled_model(1.05);
    replace_file(&neural.join("model.safetensors"), &weights);
    replace_file(&neural.join("config.json"), &config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let new = loop {
        let now = neural_version(s.addr).await;
        if now != old {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new model was not taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(new, format!("{:016x}", melodist::music::fnv1a(&weights)));
    for (status, version) in traffic.await.unwrap() {
        assert_eq!(status, StatusCode::OK);
        let version = version.unwrap();
        assert!(version == old || version == new, "{version}");
    }
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 2, "seed": 1})).await;
    assert_eq!(r.json()["version"], new.as_str());
    // Nothing holds the old model's weights any more (every decode thread has moved on:
    // each took a job since the swap, or takes one now).
    for seed in 0..8 {
        post(
            s.addr,
            "/v1/generate",
            None,
            json!({"bars": 1, "seed": seed}),
        )
        .await;
    }
    assert!(
        old_weights.upgrade().is_none(),
        "the replaced model is still held"
    );
    let pinned_old = json!({"bars": 2, "version": old});
    assert_eq!(
        post(s.addr, "/v1/generate", None, pinned_old).await.status,
        StatusCode::NOT_FOUND
    );

    // A damaged folder: refused, said why, and the new model goes on serving.
    replace_file(&neural.join("config.json"), b"{ not a config");
    let health = loop {
        let health = get(s.addr, "/healthz", None).await.json();
        if health.get("models_error").is_some() {
            break health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the damaged folder was not noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        health["models_error"]
            .as_str()
            .unwrap()
            .contains("serving the previous models")
    );
    let r = post(s.addr, "/v1/generate", None, json!({"bars": 2, "seed": 1})).await;
    assert_eq!(
        (r.status, r.json()["version"].clone()),
        (StatusCode::OK, json!(new))
    );
    let metrics = String::from_utf8(get(s.addr, "/metrics", None).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"melodist_model_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    // At least the damaged config (a poll between the two files above may add one).
    assert!(
        metrics.contains(r#"melodist_model_reloads_total{result="failed"}"#),
        "{metrics}"
    );
}

/// Clients that hang up (in the middle of their body, or while their melody is being
/// decoded) cost the server nothing lasting: no stuck job or batch, and the next requests
/// are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_mid_request_leave_nothing_stuck() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), |_| {}).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let body = json!({"bars": 64, "seed": 9}).to_string();
        for round in 0..8 {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            let head = format!(
                "POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            if round % 2 == 0 {
                // Half the body, then gone.
                stream.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
            } else {
                // The whole request, then gone while it is decoded.
                stream.write_all(body.as_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    })
    .await
    .unwrap();
    // Every request after them is answered in full.
    for seed in 0..4 {
        let r = post(
            s.addr,
            "/v1/generate",
            None,
            json!({"bars": 4, "seed": seed}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.json()["notes"].as_array().unwrap().is_empty());
    }
    // And the queue drains: nothing is left waiting for a thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = String::from_utf8(get(s.addr, "/metrics", None).await.body.to_vec()).unwrap();
        if metrics.contains("melodist_decode_queue_depth 0") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// nginx (from the system packages) on a free loopback port in front of `upstreams`, as
/// one process (no master and workers), stopped when dropped.
struct Proxy {
    addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// A local TCP port nothing listens on now (for a server the test starts next).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Proxy {
    fn start(upstreams: &[SocketAddr]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let servers: String = upstreams.iter().map(|a| format!("server {a};")).collect();
        let conf = format!(
            "master_process off; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
             events {{ worker_connections 256; }}
             http {{
               access_log off;
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
               upstream melodist {{ {servers} keepalive 8; }}
               server {{
                 listen 127.0.0.1:{port};
                 location / {{
                   proxy_pass http://melodist;
                   proxy_http_version 1.1;
                   proxy_set_header Connection \"\";
                 }}
               }}
             }}"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx runs (README: apt-get install nginx-light)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            let log = || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {}",
                log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Proxy {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generate_answers(metrics: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(metrics);
    (text.lines())
        .find_map(|l| {
            l.strip_prefix(r#"melodist_requests_total{endpoint="/v1/generate",status="200"} "#)
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Two instances, each with its own database, behind an ordinary nginx: requests are
/// spread over both, every answer is the one either instance gives directly (the server
/// keeps no state between generate calls), and with one instance gone nginx sends
/// everything to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_behind_nginx_share_the_load_and_cover_for_each_other() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = server(dir_a.path(), |_| {}).await;
    let b = server(dir_b.path(), |_| {}).await;
    let proxy = tokio::task::block_in_place(|| Proxy::start(&[a.addr, b.addr]));
    let request = |seed: u64| json!({"bars": 4, "seed": seed, "style": "reel"});
    for seed in 0..8 {
        let through = post(proxy.addr, "/v1/generate", None, request(seed)).await;
        assert_eq!(through.status, StatusCode::OK, "{:?}", through.body);
        let direct = post(a.addr, "/v1/generate", None, request(seed)).await;
        assert_eq!(through.json(), direct.json());
    }
    let answered = |s: &RunningServer| {
        let addr = s.addr;
        async move { generate_answers(&get(addr, "/metrics", None).await.body) }
    };
    // a answered its 8 direct requests and its share of the 8 through nginx.
    let (from_a, from_b) = (answered(&a).await - 8, answered(&b).await);
    assert_eq!(from_a + from_b, 8);
    assert!(from_a > 0 && from_b > 0, "a {from_a}, b {from_b}");

    b.stop().await.unwrap();
    for seed in 0..4 {
        let r = post(proxy.addr, "/v1/generate", None, request(seed)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(answered(&a).await - 8, from_a + 4);
    drop(proxy);
}

/// A PostgreSQL server from the system's packages (`apt-get install postgresql`), run for
/// one test in a temporary folder on a free loopback port. PostgreSQL refuses to run as
/// root, so a root test runs it as the `postgres` user the package creates.
struct Postgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|b| b.join("pg_ctl").exists())
            .max()
            .expect("PostgreSQL is not installed here: apt-get install postgresql (.ci/run does)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pg = Self { dir, bin, port };
        if pg.as_root() {
            let owned = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(owned.success());
        }
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "melodist",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    fn as_root(&self) -> bool {
        let id = std::process::Command::new("id").arg("-u").output().unwrap();
        String::from_utf8_lossy(&id.stdout).trim() == "0"
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root).
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it takes connections.
    fn up(&self) {
        let dir = self.dir.path().to_str().unwrap();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let (data, log) = (format!("{dir}/data"), format!("{dir}/log"));
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }

    /// Stops it at once, as a crash or a power cut would.
    fn down(&self) {
        let data = format!("{}/data", self.dir.path().display());
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://melodist@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = format!("{}/data", self.dir.path().display());
        let _ = std::process::Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        if self.as_root() {
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// Two instances on one PostgreSQL database (`--postgres`) serve the same users: a token
/// made with the command line works on both, a session recorded on one is listed, ranked
/// from and forgotten on the other, and users stay apart. With the database down, calls
/// get a 503 and a sentence; when it is back, both instances reconnect with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_postgres_database_share_users_and_survive_its_restart() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.url();
    let token = |name: &str| {
        let args = ["serve", "token", "add", name, "--postgres", &url].map(String::from);
        cli(args.to_vec(), vec![])
    };
    let (ok, alice, stderr) = token("alice").await;
    assert!(ok, "{stderr}");
    let (ok, bob, stderr) = token("bob").await;
    assert!(ok, "{stderr}");
    let (alice, bob) = (alice.trim().to_string(), bob.trim().to_string());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = |c: &mut ServeConfig| {
        c.postgres = Some(url.clone());
        c.require_token = true;
    };
    let a = server(dir_a.path(), shared).await;
    let b = server(dir_b.path(), shared).await;

    let r = post(a.addr, "/v1/sessions", Some(&alice), session("slow-air")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    post(b.addr, "/v1/sessions", Some(&bob), session("reel-drive")).await;
    let on_b = sessions_of(b.addr, &alice).await;
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0]["producer"], "alice");
    assert!(on_b[0].to_string().contains("slow-air"));
    let bobs = sessions_of(a.addr, &bob).await;
    assert_eq!(bobs.len(), 1);
    assert!(!bobs[0].to_string().contains("slow-air"));
    let ranked = post(b.addr, "/v1/recommend", Some(&alice), json!({"count": 50}))
        .await
        .json();
    assert_eq!(ranked["sessions"], 1);
    assert_eq!(ranked["presets"][0]["preset_id"], "slow-air", "{ranked}");

    // Forgotten on B: gone on A too, and only alice's.
    let r = call(
        b.addr,
        Method::DELETE,
        "/v1/sessions",
        Some(&alice),
        None,
        &[],
    )
    .await;
    assert_eq!(r.json()["deleted"], 1);
    assert!(sessions_of(a.addr, &alice).await.is_empty());
    assert_eq!(sessions_of(a.addr, &bob).await.len(), 1);

    // The database goes down: a sentence, not a panic or a hang; nothing half-written.
    let pg = tokio::task::spawn_blocking(move || {
        pg.down();
        pg
    })
    .await
    .unwrap();
    let r = post(a.addr, "/v1/sessions", Some(&bob), session("slow-air")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("try again"), "{}", r.error());
    let r = get(b.addr, "/v1/sessions", Some(&bob)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("PostgreSQL"), "{}", r.error());
    // With tokens required, every call needs the database to check its token.
    assert_eq!(
        post(a.addr, "/v1/generate", Some(&bob), json!({"bars": 1}))
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a token cannot be checked without the database"
    );

    // Back up: both instances reconnect, and bob's history is whole.
    let pg = tokio::task::spawn_blocking(move || {
        pg.up();
        pg
    })
    .await
    .unwrap();
    assert_eq!(sessions_of(a.addr, &bob).await.len(), 1);
    let r = post(b.addr, "/v1/sessions", Some(&bob), session("slow-air")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(sessions_of(a.addr, &bob).await.len(), 2);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

/// Another process holding the SQLite database's write lock (a backup, a stuck writer):
/// recording waits for it a while, then gets a 503 with a sentence and stores nothing;
/// reading goes on meanwhile (WAL), and once the lock is gone the session is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_a_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, alice, _) = two_users(dir.path()).await;
    post(s.addr, "/v1/sessions", Some(&alice), session("slow-air")).await;
    let other = rusqlite::Connection::open(dir.path().join("server.db")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = post(s.addr, "/v1/sessions", Some(&alice), session("reel-drive")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.error().contains("nothing was changed, try again"),
        "{}",
        r.error()
    );
    assert_eq!(sessions_of(s.addr, &alice).await.len(), 1);
    other.execute_batch("ROLLBACK").unwrap();
    let r = post(s.addr, "/v1/sessions", Some(&alice), session("reel-drive")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(sessions_of(s.addr, &alice).await.len(), 2);
}
