//! Loads the built `.clap` (the cdylib cargo builds for the tests, with
//! `assert_process_allocs` on) in a real CLAP host library, clack-host, and plays it.

mod common;

use clack_host::utils::BeatTime;
use common::{BLOCK, SR, Session, transport};
use melodist::cli::generate::generate_notes;
use melodist::generator::GenSettings;
use melodist::generator::loader::ModelChoice;
use melodist::music::{Key, Meter, PitchClass, Scale};

/// Plays `blocks` blocks from `start`, pacing like a real host so the worker keeps ahead.
/// Returns every NoteOn as (beat, key, channel) and the beat after the last block.
fn play(s: &mut Session, start: f64, blocks: usize, tempo: f64) -> (Vec<(f64, u8, u8)>, f64) {
    // A host runs stopped blocks before play; the plugin uses them to prepare.
    s.block(Some(transport(start, tempo, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let bps = tempo / 60.0 / SR;
    let mut pos = start;
    let mut ons = Vec::new();
    for i in 0..blocks {
        if i % 8 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let p = BeatTime::from_float(pos).to_float();
        for e in s.block(Some(transport(pos, tempo, true)), &[]) {
            if e.on {
                ons.push((p + e.timing as f64 * bps, e.key, e.channel));
            }
        }
        pos += BLOCK as f64 * bps;
    }
    (ons, pos)
}

fn a_minor(s: &mut Session, seed: i32) {
    s.set_params(&[
        ("seed", serde_json::json!({"i32": seed})),
        ("root", serde_json::json!({"i32": 9})),
        ("scale", serde_json::json!({"i32": 1})),
        ("low", serde_json::json!({"i32": 57})),
        ("high", serde_json::json!({"i32": 81})),
        ("channel", serde_json::json!({"i32": 3})),
    ]);
}

#[test]
fn plays_the_seeded_melody_in_key_on_the_grid_and_stops_cleanly() {
    let mut s = Session::offline();
    a_minor(&mut s, 7);
    let tempo = 110.0;
    let (ons, end) = play(&mut s, 0.0, 1700, tempo); // ~8.7 bars
    // The same notes the CLI writes for `generate --seed 7 --key A --scale minor --low 57 --high 81`.
    let settings = GenSettings {
        key: Key::new(PitchClass::A, Scale::Minor),
        low: 57,
        high: 81,
        seed: 7,
        ..Default::default()
    };
    let (expected, _, _) = generate_notes(&ModelChoice::Default, settings, Meter::new(4, 4), 12);
    let expected: Vec<_> = expected
        .into_iter()
        .filter(|n| n.start < end - 1e-9)
        .collect();
    assert!(expected.len() > 16, "too few notes: {}", expected.len());
    assert_eq!(ons.len(), expected.len(), "ons {ons:?}");
    let bps = tempo / 60.0 / SR;
    for ((beat, key, channel), n) in ons.iter().zip(&expected) {
        assert_eq!(*key, n.pitch);
        assert_eq!(*channel, 2, "MIDI channel 3 is index 2");
        assert!(settings.key.contains(*key) && (57..=81).contains(key));
        let err = beat - n.start;
        assert!(
            err > -1e-6 && err <= bps + 1e-6,
            "note at {beat}, intended {}",
            n.start
        );
    }
    // Stop: every sounding note is released at once, and nothing plays while stopped.
    let out = s.block(Some(transport(end, tempo, false)), &[]);
    assert!(out.iter().all(|e| !e.on && e.timing == 0));
    assert!(s.sounding.is_empty(), "stuck notes {:?}", s.sounding);
    for _ in 0..100 {
        assert!(s.block(Some(transport(end, tempo, false)), &[]).is_empty());
    }
    s.deactivate();
}

#[test]
fn saved_state_reproduces_the_same_output() {
    let mut a = Session::offline();
    a_minor(&mut a, 1234);
    let state = a.save();
    let (first, _) = play(&mut a, 8.0, 400, 128.0);
    assert!(!first.is_empty());

    let mut b = Session::offline();
    b.load(&state).expect("load saved state");
    let (second, _) = play(&mut b, 8.0, 400, 128.0);
    assert_eq!(first, second);

    // A different seed plays something else (so the comparison above can fail).
    let mut c = Session::offline();
    a_minor(&mut c, 1235);
    let (third, _) = play(&mut c, 8.0, 400, 128.0);
    assert_ne!(first, third);
}

#[test]
fn corrupt_state_is_rejected_and_the_plugin_keeps_working() {
    let mut s = Session::offline();
    assert!(s.load(b"{ this is not a saved state").is_err());
    assert!(s.load(b"").is_err());
    // Still generates and still passes MIDI through, merged in time order.
    s.block(Some(transport(0.0, 120.0, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = s.block(Some(transport(0.0, 120.0, true)), &[(3, 50), (300, 52)]);
    assert!(
        out.iter().any(|e| e.on && e.key == 50 && e.timing == 3),
        "thru missing: {out:?}"
    );
    assert!(out.iter().any(|e| e.on && e.key == 52 && e.timing == 300));
    let (ons, _) = play(&mut s, 4.0, 200, 120.0);
    assert!(!ons.is_empty());
}

#[test]
fn deactivation_releases_sounding_notes() {
    let mut s = Session::offline();
    s.set_params(&[("gate", serde_json::json!({"f32": 1.0}))]);
    s.block(Some(transport(0.0, 120.0, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut pos = 0.0;
    while s.sounding.is_empty() {
        s.block(Some(transport(pos, 120.0, true)), &[]);
        pos += BLOCK as f64 * 2.0 / SR;
        assert!(pos < 64.0, "never played a note");
    }
    let held: Vec<_> = s.sounding.iter().copied().collect();
    s.deactivate();
    s.activate();
    let out = s.block(Some(transport(pos, 120.0, false)), &[]);
    for (ch, key) in held {
        assert!(
            out.iter()
                .any(|e| !e.on && e.key == key && e.channel == ch && e.timing == 0),
            "no release of {key}: {out:?}"
        );
    }
    assert!(s.sounding.is_empty());
}

/// Real time: the plugin never waits, so a loaded machine may cost notes, but every note
/// that plays is the intended one, on its sample, and nothing is left sounding.
#[test]
fn realtime_playback_plays_intended_notes_only() {
    let mut s = Session::new();
    a_minor(&mut s, 99);
    s.block(Some(transport(0.0, 120.0, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let bps = 120.0 / 60.0 / SR;
    let mut pos = 0.0;
    let mut ons = Vec::new();
    for _ in 0..400 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let p = BeatTime::from_float(pos).to_float();
        for e in s.block(Some(transport(pos, 120.0, true)), &[]) {
            if e.on {
                ons.push((p + e.timing as f64 * bps, e.key));
            }
        }
        pos += BLOCK as f64 * bps;
    }
    let settings = GenSettings {
        key: Key::new(PitchClass::A, Scale::Minor),
        low: 57,
        high: 81,
        seed: 99,
        ..Default::default()
    };
    let (expected, _, _) = generate_notes(&ModelChoice::Default, settings, Meter::new(4, 4), 8);
    assert!(!ons.is_empty(), "nothing played in real time");
    for (beat, key) in &ons {
        assert!(
            expected
                .iter()
                .any(|n| n.pitch == *key && beat - n.start > -1e-6 && beat - n.start <= bps + 1e-6),
            "unintended note {key} at {beat}"
        );
    }
    s.block(Some(transport(pos, 120.0, false)), &[]);
    assert!(s.sounding.is_empty());
}

/// The session log is written off the audio thread: play with a style preset, stop, close
/// the plugin, and the local history holds the session, its tempo and the preset's use.
#[test]
fn sessions_are_recorded_from_what_played() {
    let data = common::isolate_user_data();
    let mut s = Session::offline();
    let preset_index = 3; // the third factory preset (1-based; 0 = Manual)
    s.set_params(&[("preset", serde_json::json!({"i32": preset_index}))]);
    let tempo = 133.0;
    s.block(Some(transport(0.0, tempo, false)), &[]);
    let mut pos = 0.0;
    for _ in 0..250 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.block(Some(transport(pos, tempo, true)), &[]);
        pos += BLOCK as f64 * tempo / 60.0 / SR;
    }
    s.block(Some(transport(pos, tempo, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    s.deactivate();
    drop(s);

    let preset_id = melodist::presets::PresetLibrary::factory().presets()
        [preset_index as usize - 1]
        .id
        .clone();
    // Teardown does not wait for the history commit, so the log may land a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let db = melodist::sessions::SessionDb::open(&data.join("sessions.sqlite3"))
            .expect("history database");
        let log = db.load_log().unwrap();
        let ours: Vec<_> = log
            .sessions
            .iter()
            .filter(|x| (x.context.tempo - tempo as f32).abs() < 0.01)
            .collect();
        let used = ours.iter().any(|x| {
            x.events.iter().any(|e| {
                e.kind == melodist::sessions::EventKind::PresetUsed
                    && e.preset.as_deref() == Some(preset_id.as_str())
            })
        });
        if ours.len() == 1 && used {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions: {:?}",
            log.sessions
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
