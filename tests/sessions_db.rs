//! The session database under stress: two processes writing at once, a writer killed
//! mid-write, a corrupt file, an old schema, export / import / forget.
//!
//! Multi-process tests re-run this test binary as a child with `HELPER_ENV` set: the child
//! runs only `helper_process` (which does nothing in a normal run).

use melodist::music::{Key, Meter, PitchClass, Scale};
use melodist::sessions::db::MIGRATIONS;
use melodist::sessions::{
    DATA_DIR_ENV, Event, EventKind, Observation, RecorderEvent, SessionContext, SessionDb,
    SessionLog, SessionRecorder, SessionTracker, default_db_path, jsonl,
};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "MELODIST_TEST_HELPER";
const EVENTS_PER_WRITER: usize = 300;

/// Child-process entry point; a no-op unless this binary was started by `spawn_helper`.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(HELPER_ENV) else {
        return;
    };
    let path = default_db_path().expect("data dir from MELODIST_DATA_DIR");
    match role.as_str() {
        // Records one session through the recorder, like a plugin instance.
        "writer" => {
            let producer = std::env::var("MELODIST_TEST_PRODUCER").unwrap();
            let ids = vec!["reel-drive".to_string(), "jig-lilt".to_string()];
            let recorder = SessionRecorder::start(path, producer, ids, EVENTS_PER_WRITER + 8);
            let tx = recorder.sender();
            assert!(tx.record(RecorderEvent::Start {
                tempo: 118.0,
                meter: Meter::new(4, 4),
                key: None
            }));
            for i in 0..EVENTS_PER_WRITER {
                assert!(tx.record(RecorderEvent::Feedback {
                    kind: EventKind::Liked,
                    preset: (i % 2) as u16
                }));
            }
            assert!(tx.record(RecorderEvent::End));
            drop(tx);
            assert_eq!(recorder.finish(), EVENTS_PER_WRITER as u64 + 2);
        }
        // Writes numbered events until killed.
        "endless" => {
            let db = SessionDb::open(&path).unwrap();
            let session = db
                .start_session("victim", 0, &SessionContext::default())
                .unwrap();
            for i in 0.. {
                let e = Event::about(i, EventKind::Kept, &format!("preset-{i}"), None);
                db.add_event(session, &e).unwrap();
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn spawn_helper(role: &str, data_dir: &Path, producer: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_process",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(HELPER_ENV, role)
        .env(DATA_DIR_ENV, data_dir)
        .env("MELODIST_TEST_PRODUCER", producer)
        .spawn()
        .expect("re-run the test binary")
}

#[test]
fn two_processes_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = ["ana", "ben"]
        .iter()
        .map(|p| spawn_helper("writer", dir.path(), p))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a writer process failed");
    }
    let db = SessionDb::open(&dir.path().join("sessions.sqlite3")).unwrap();
    assert_eq!(db.integrity_check().unwrap(), "ok");
    let log = db.load_log().unwrap();
    assert_eq!(log.producers(), vec!["ana", "ben"]);
    for s in &log.sessions {
        assert_eq!(s.events.len(), EVENTS_PER_WRITER);
        assert!(s.ended_at_ms.is_some(), "session closed");
        assert_eq!(
            s.events[1].preset.as_deref(),
            Some("jig-lilt"),
            "indices mapped to ids"
        );
    }
}

#[test]
fn killed_writer_leaves_a_consistent_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.sqlite3");
    let mut child = spawn_helper("endless", dir.path(), "victim");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let written = SessionDb::open(&path)
            .ok()
            .and_then(|db| db.counts().ok())
            .map_or(0, |c| c.1);
        if written >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "writer made no progress");
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no flush.
    child.wait().unwrap();
    let db = SessionDb::open(&path).unwrap();
    assert!(
        db.recovered.is_none(),
        "a killed writer must not corrupt the file"
    );
    assert_eq!(db.integrity_check().unwrap(), "ok");
    let log = db.load_log().unwrap();
    let events = &log.sessions[0].events;
    // Every committed event is whole and none is missing before the last one.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.t_ms, i as i64);
        assert_eq!(e.preset.as_deref(), Some(format!("preset-{i}").as_str()));
    }
    assert!(events.len() >= 200);
}

#[test]
fn corrupt_file_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.sqlite3");
    std::fs::write(
        &path,
        b"this is not an SQLite database, just some bytes ".repeat(200),
    )
    .unwrap();
    let db = SessionDb::open(&path).unwrap();
    let note = db.recovered.clone().expect("recovery is reported");
    assert!(note.contains("moved"), "{note}");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("sessions.sqlite3.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for inspection");
    let id = db
        .start_session("local", 5, &SessionContext::default())
        .unwrap();
    db.add_event(
        id,
        &Event {
            t_ms: 1,
            kind: EventKind::Liked,
            preset: None,
            seconds: None,
            context: None,
        },
    )
    .unwrap();
    assert_eq!(db.counts().unwrap(), (1, 1));
    drop(db);
    assert!(
        SessionDb::open(&path).unwrap().recovered.is_none(),
        "the fresh file is healthy"
    );
}

#[test]
fn migrates_a_version_1_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO sessions (producer, started_at, tempo, meter, key) VALUES ('local', 42, 96.0, '6/8', 'D Dorian')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (session_id, t_ms, kind, preset) VALUES (1, 7, 'kept', 'jig-lilt')",
            [],
        )
        .unwrap();
    }
    let db = SessionDb::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap() as usize, MIGRATIONS.len());
    let log = db.load_log().unwrap();
    let s = &log.sessions[0];
    assert_eq!((s.context.tempo, s.context.meter), (96.0, Meter::new(6, 8)));
    assert_eq!(s.context.key, Some(Key::new(PitchClass::D, Scale::Dorian)));
    assert_eq!(s.context.input_density, None, "new column starts empty");
    assert_eq!(s.events[0].preset.as_deref(), Some("jig-lilt"));
    // New columns are usable after the migration.
    let ctx = SessionContext {
        input_density: Some(1.5),
        ..s.context
    };
    db.update_context(s.session, &ctx).unwrap();
    assert_eq!(
        db.load_log().unwrap().sessions[0].context.input_density,
        Some(1.5)
    );
}

#[test]
fn recorder_records_context_and_presets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let recorder =
        SessionRecorder::start(path.clone(), "local".into(), vec!["trap-bell".into()], 64);
    let tx = recorder.sender();
    let key = Some(Key::new(PitchClass::A, Scale::Minor));
    // Nothing is open yet: these are not written, and no session appears for them.
    tx.record(RecorderEvent::Feedback {
        kind: EventKind::Liked,
        preset: 0,
    });
    tx.record(RecorderEvent::Context {
        tempo: 90.0,
        meter: Meter::new(4, 4),
        key: None,
        input_density: None,
        input_register: None,
    });
    tx.record(RecorderEvent::Start {
        tempo: 140.0,
        meter: Meter::new(4, 4),
        key: None,
    });
    tx.record(RecorderEvent::Context {
        tempo: 141.0,
        meter: Meter::new(4, 4),
        key,
        input_density: Some(2.0),
        input_register: Some(64.0),
    });
    tx.record(RecorderEvent::PresetUsed {
        preset: 0,
        seconds: 75.0,
    });
    tx.record(RecorderEvent::Feedback {
        kind: EventKind::Exported,
        preset: 9,
    });
    tx.record(RecorderEvent::End);
    assert_eq!(recorder.finish(), 5);
    let log = SessionDb::open(&path).unwrap().load_log().unwrap();
    assert_eq!(log.sessions.len(), 1, "no phantom session");
    let s = &log.sessions[0];
    // The session keeps its starting tempo; the key and input it did not know are filled in.
    assert_eq!(
        (
            s.context.tempo,
            s.context.key,
            s.context.input_density,
            s.context.input_register
        ),
        (140.0, key, Some(2.0), Some(64.0))
    );
    let kinds: Vec<_> = s
        .events
        .iter()
        .map(|e| (e.kind, e.preset.clone(), e.seconds))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Context, None, None),
            (EventKind::PresetUsed, Some("trap-bell".into()), Some(75.0)),
            (EventKind::Exported, Some("preset-9".into()), None)
        ]
    );
    // The change itself reached the database.
    assert_eq!(
        s.events[0].context,
        Some(SessionContext {
            tempo: 141.0,
            meter: Meter::new(4, 4),
            key,
            input_density: Some(2.0),
            input_register: Some(64.0),
        })
    );
}

/// What the plugin observes, run through the logging rules and the recorder into SQLite:
/// play/stop habits give no abandons, the kept signal and context changes land in the file.
#[test]
fn tracked_plugin_session_reaches_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sqlite3");
    let ids = vec!["a".to_string(), "b".to_string()];
    let recorder = SessionRecorder::start(path.clone(), "local".into(), ids, 256);
    let tx = recorder.sender();
    let mut tracker = SessionTracker::default();
    let mut t = 0.0;
    let mut look = |tracker: &mut SessionTracker, secs: f64, obs: Observation| {
        let mut out = Vec::new();
        let end = t + secs;
        while t < end {
            tracker.observe(t, &obs, &mut out);
            t += 0.1;
        }
        for e in out {
            tx.record(e);
        }
    };
    let base = Observation {
        preset: Some(0),
        ..Observation::default()
    };
    // Browse while stopped, like while stopped: nothing.
    look(&mut tracker, 5.0, base);
    let mut out = Vec::new();
    tracker.action(EventKind::Liked, &mut out);
    assert!(out.is_empty());
    // Play/stop habits: 3 s play, stop, 3 s play, stop... never an abandon.
    for _ in 0..3 {
        look(
            &mut tracker,
            3.0,
            Observation {
                playing: true,
                ..base
            },
        );
        look(&mut tracker, 2.0, base);
    }
    // Then 40 s rolling at 120 BPM (20 bars), with the producer's input known.
    look(
        &mut tracker,
        40.0,
        Observation {
            playing: true,
            input_density: Some(1.0),
            input_register: Some(70.0),
            ..base
        },
    );
    let mut out = Vec::new();
    tracker.finish(&mut out);
    for e in out {
        tx.record(e);
    }
    drop(tx);
    recorder.finish();
    let log = SessionDb::open(&path).unwrap().load_log().unwrap();
    assert_eq!(log.sessions.len(), 1);
    let s = &log.sessions[0];
    let has = |k| s.events.iter().any(|e| e.kind == k);
    assert!(!has(EventKind::AbandonedQuickly), "{:?}", s.events);
    assert!(has(EventKind::KeptPlaying), "{:?}", s.events);
    assert!(has(EventKind::Context), "{:?}", s.events);
    assert_eq!(s.context.input_register, Some(70.0));
    let used: f32 = s.events.iter().filter_map(|e| e.seconds).sum();
    assert!((used - 49.0).abs() < 0.5, "rolling time only: {used}");
}

/// Today's schema (v2) with data opens, migrates and reads the same.
#[test]
fn migrates_a_version_2_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO sessions (producer, started_at, ended_at, tempo, meter, key, input_density, input_register)
             VALUES ('local', 42, 99, 128.0, '4/4', 'A Natural minor', 1.25, 67.0)",
            [],
        )
        .unwrap();
        for (t, kind, seconds) in [(7, "liked", None), (90, "preset_used", Some(61.0))] {
            conn.execute(
                "INSERT INTO events (session_id, t_ms, kind, preset, seconds) VALUES (1, ?1, ?2, 'trap-bell', ?3)",
                rusqlite::params![t, kind, seconds],
            )
            .unwrap();
        }
    }
    let db = SessionDb::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap() as usize, MIGRATIONS.len());
    let log = db.load_log().unwrap();
    let s = &log.sessions[0];
    assert_eq!(
        s.context,
        SessionContext {
            tempo: 128.0,
            meter: Meter::new(4, 4),
            key: Some(Key::new(PitchClass::A, Scale::Minor)),
            input_density: Some(1.25),
            input_register: Some(67.0),
        }
    );
    assert_eq!(
        s.events,
        vec![
            Event::about(7, EventKind::Liked, "trap-bell", None),
            Event::about(90, EventKind::PresetUsed, "trap-bell", Some(61.0)),
        ]
    );
    // A context event can be written and read back after the migration.
    let ctx = SessionContext {
        tempo: 130.0,
        ..s.context
    };
    db.add_event(
        s.session,
        &Event {
            t_ms: 100,
            kind: EventKind::Context,
            preset: None,
            seconds: None,
            context: Some(ctx),
        },
    )
    .unwrap();
    let log = db.load_log().unwrap();
    assert_eq!(log.sessions[0].events[2].context, Some(ctx));
}

#[test]
fn export_import_and_forget() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SessionDb::open(&dir.path().join("a.sqlite3")).unwrap();
    let ctx = SessionContext {
        tempo: 100.0,
        key: Some(Key::new(PitchClass::E, Scale::Minor)),
        ..SessionContext::default()
    };
    let id = db.start_session("local", 1000, &ctx).unwrap();
    db.add_event(
        id,
        &Event::about(5, EventKind::PresetUsed, "slow-air", Some(61.5)),
    )
    .unwrap();
    db.end_session(id, 9000).unwrap();
    let log = db.load_log().unwrap();
    let file = dir.path().join("history.jsonl");
    jsonl::write_file(&log, &file).unwrap();

    let mut other = SessionDb::open(&dir.path().join("b.sqlite3")).unwrap();
    assert_eq!(
        other.import_log(&jsonl::read_file(&file).unwrap()).unwrap(),
        1
    );
    let strip = |mut l: SessionLog| {
        l.sessions.iter_mut().for_each(|s| s.session = 0);
        l
    };
    assert_eq!(strip(other.load_log().unwrap()), strip(log));

    assert_eq!(db.forget().unwrap(), 1);
    assert_eq!(db.counts().unwrap(), (0, 0));
}
