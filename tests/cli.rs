//! The `melodist` binary as a producer uses it.

use melodist::midi::read_melody;
use melodist::music::{Key, Meter, PitchClass, Scale};
use std::path::Path;
use std::process::Command;

fn melodist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_melodist"))
}

/// Runs the command, asserting it succeeded (its stderr is the failure message).
fn succeed(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generate_writes_a_midi_file_in_key_and_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        let status = melodist()
            .args([
                "generate", "--bars", "16", "--seed", seed, "--key", "A", "--scale", "minor",
                "--tempo", "110",
            ])
            .args(["--meter", "6/8", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        read_melody(&out).unwrap()
    };
    let a = run("7", "a.mid");
    let b = run("7", "b.mid");
    let c = run("8", "c.mid");
    assert_eq!(a, b, "same seed must give the same file");
    assert_ne!(a.notes, c.notes);
    assert_eq!(a.meter, Meter::new(6, 8));
    assert_eq!(a.key, Some(Key::new(PitchClass::A, Scale::Minor)));
    let key = Key::new(PitchClass::A, Scale::Minor);
    assert!(a.notes.len() >= 16);
    assert!(
        a.notes
            .iter()
            .all(|n| key.contains(n.pitch) && (60..=84).contains(&n.pitch))
    );
    // 16 bars of 6/8 are 48 quarter notes.
    assert!(a.notes.iter().all(|n| n.start + n.duration <= 48.0 + 1e-6));
}

#[test]
fn bad_arguments_and_bad_models_give_clear_errors() {
    let out = melodist()
        .args(["generate", "--key", "H", "--out", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key 'H'"));

    // An explicit model that cannot be loaded is an error on the command line (the plugin
    // falls back to the shipped Markov model instead), and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.bin");
    std::fs::write(&bad, b"not a model").unwrap();
    let mid = dir.path().join("x.mid");
    for model in [bad.as_path(), Path::new("/nonexistent")] {
        let out = melodist()
            .args(["generate", "--bars", "2", "--model"])
            .arg(model)
            .arg("--out")
            .arg(&mid)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("could not load model {}", model.display())),
            "{stderr}"
        );
        assert!(
            !stderr.contains("using the shipped Markov model"),
            "{stderr}"
        );
        assert!(!mid.exists());
    }
    let err = String::from_utf8_lossy(
        &melodist()
            .args(["generate", "--model", "/nonexistent", "--out"])
            .arg(&mid)
            .output()
            .unwrap()
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains("cannot read Markov model /nonexistent"),
        "{err}"
    );
}

/// Runs `melodist ARGS` and returns its stderr, asserting it failed as clap does on a bad
/// value (exit status 2, before any work).
/// `recommend` opens the history without reading all of it first; a damaged file is still
/// found, moved aside and reported, and the ranking comes from a fresh history.
#[test]
fn recommend_moves_a_damaged_history_aside_and_still_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.sqlite3");
    std::fs::write(&db, b"not an SQLite database ".repeat(100)).unwrap();
    let out = melodist()
        .args(["recommend", "--tempo", "120", "--meter", "4/4"])
        .env("MELODIST_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was damaged") && stderr.contains("moved"),
        "{stderr}"
    );
    assert!(stdout.contains("No history"), "{stdout}");
    assert!(stdout.contains(" 1. "), "{stdout}");
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy()
                .starts_with("sessions.sqlite3.corrupt-")
        })
        .count();
    assert_eq!(aside, 1, "the damaged file is kept for inspection");
}

fn rejected(args: &[&str]) -> String {
    let out = melodist().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} was accepted: {stderr}"
    );
    stderr
}

#[test]
fn out_of_range_values_are_errors_that_name_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.mid");
    let out = out.to_str().unwrap();
    for (option, value, range) in [
        ("--density", "5", "must be between 0 and 1"),
        ("--density", "-0.5", "must be between 0 and 1"),
        ("--variation", "1.5", "must be between 0 and 1"),
        ("--humanize", "2", "must be between 0 and 1"),
        ("--gate", "0", "must be between 0.05 and 1"),
        ("--tempo", "1000", "must be between 20 and 300"),
        ("--bars", "0", "must be between 1 and 10000"),
        ("--seed", "100000", "must be between 0 and 99999"),
        ("--low", "200", "must be between 0 and 127"),
        ("--high", "128", "must be between 0 and 127"),
        ("--velocity", "0", "must be between 1 and 127"),
        ("--channel", "17", "must be between 1 and 16"),
        ("--loop-bars", "3", "must be 0 (off), 1, 2, 4 or 8"),
        ("--evolve", "1.5", "must be between 0 and 1"),
    ] {
        let arg = format!("{option}={value}");
        let stderr = rejected(&["generate", &arg, "--out", out]);
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{option} <")),
            "{option} {value}: {stderr}"
        );
        assert!(stderr.contains(range), "{option} {value}: {stderr}");
    }
    assert!(!Path::new(out).exists(), "nothing is written");
    // A negative number after a space is a value out of range, not an unknown argument.
    let stderr = rejected(&["generate", "--variation", "-1", "--out", out]);
    assert!(
        stderr
            .contains("invalid value '-1' for '--variation <VARIATION>': must be between 0 and 1"),
        "{stderr}"
    );
    // The exact wording, once.
    assert!(
        rejected(&["generate", "--density", "5", "--out", out]).contains(
            "error: invalid value '5' for '--density <DENSITY>': must be between 0 and 1"
        )
    );
    // Other subcommands check their numbers the same way.
    let stderr = rejected(&["recommend", "--tempo", "1000"]);
    assert!(stderr.contains("must be between 20 and 300"), "{stderr}");
    let stderr = rejected(&["stats", "--samples", "0", "--midi-dir", "."]);
    assert!(stderr.contains("must be between 1 and 100000"), "{stderr}");
    let stderr = rejected(&["train", "--midi-dir", ".", "--out", out, "--dropout", "1"]);
    assert!(stderr.contains("must be between 0 and 0.9"), "{stderr}");
    let stderr = rejected(&["eval-recs", "--shared-presets", "0"]);
    assert!(stderr.contains("must be between 1 and 10000"), "{stderr}");

    // A crossed register is still repaired (swapped), as documented.
    let mid = dir.path().join("crossed.mid");
    let status = melodist()
        .args([
            "generate", "--bars", "4", "--low", "84", "--high", "60", "--out",
        ])
        .arg(&mid)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let notes = read_melody(&mid).unwrap().notes;
    assert!(!notes.is_empty());
    assert!(notes.iter().all(|n| (60..=84).contains(&n.pitch)));
}

/// A one-track MIDI file of `pitches` as quarter notes in 4/4, C major.
fn write_tune(path: &Path, pitches: &[u8]) {
    let steps: Vec<(&[u8], u32)> = pitches
        .iter()
        .map(|p| (std::slice::from_ref(p), 480))
        .collect();
    write_midi(path, &steps);
}

/// A one-track MIDI file in 4/4, C major, at 480 ticks per quarter: each step's pitches
/// struck together and held for its ticks.
fn write_midi(path: &Path, steps: &[(&[u8], u32)]) {
    use midly::num::{u4, u7, u15, u24, u28};
    use midly::{
        Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind,
    };
    let event = |delta: u32, kind| TrackEvent {
        delta: u28::new(delta),
        kind,
    };
    let note = |on: bool, pitch: u8| {
        let (key, vel) = (u7::new(pitch), u7::new(if on { 90 } else { 0 }));
        TrackEventKind::Midi {
            channel: u4::new(0),
            message: if on {
                MidiMessage::NoteOn { key, vel }
            } else {
                MidiMessage::NoteOff { key, vel }
            },
        }
    };
    let mut track = vec![
        event(
            0,
            TrackEventKind::Meta(MetaMessage::Tempo(u24::new(500_000))),
        ),
        event(
            0,
            TrackEventKind::Meta(MetaMessage::TimeSignature(4, 2, 24, 8)),
        ),
        event(0, TrackEventKind::Meta(MetaMessage::KeySignature(0, false))),
    ];
    for &(pitches, ticks) in steps {
        track.extend(pitches.iter().map(|&p| event(0, note(true, p))));
        for (i, &p) in pitches.iter().enumerate() {
            track.push(event(if i == 0 { ticks } else { 0 }, note(false, p)));
        }
    }
    track.push(event(0, TrackEventKind::Meta(MetaMessage::EndOfTrack)));
    let smf = Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(u15::new(480))),
        tracks: vec![track],
    };
    smf.save(path).unwrap();
}

#[test]
fn eval_markov_uses_the_shipped_model_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let midi = dir.path().join("midi");
    std::fs::create_dir(&midi).unwrap();
    write_tune(
        &midi.join("tune.mid"),
        &[
            60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 60,
        ],
    );
    // Run where there is no `models/` folder: `markov` must not mean `./models/markov.bin`.
    assert!(!dir.path().join("models").exists());
    let out = melodist()
        .current_dir(dir.path())
        .args(["eval", "--model", "markov", "--midi-dir", "midi"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first note has no context, so 15 of the 16 are scored.
    assert!(
        stdout.starts_with("markov: 1 tunes, 15 notes (0 files skipped)"),
        "{stdout}"
    );
    assert!(stdout.contains("bits/note"), "{stdout}");

    // A model path that does not load is an error there too, before the corpus is read.
    let out = melodist()
        .current_dir(dir.path())
        .args(["eval", "--model", "missing-model", "--midi-dir", "midi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not load model missing-model"));
}

#[test]
fn train_markov_learns_from_a_folder_and_skips_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let midi = dir.path().join("midi");
    std::fs::create_dir(&midi).unwrap();
    // Two small melodies written by the generator itself, and one corrupt file.
    for seed in ["1", "2"] {
        let st = melodist()
            .args(["generate", "--bars", "8", "--seed", seed, "--out"])
            .arg(midi.join(format!("m{seed}.mid")))
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::write(midi.join("broken.mid"), b"MThd garbage").unwrap();
    let model = dir.path().join("m.bin");
    let out = melodist()
        .args(["train-markov", "--midi-dir"])
        .arg(&midi)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("trained on 2 melodies"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.mid"));
    // The new model generates.
    let st = melodist()
        .args(["generate", "--bars", "4", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("o.mid"))
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(
        st.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // An empty folder is an error, not a silent empty model.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = melodist()
        .args(["train-markov", "--midi-dir"])
        .arg(&empty)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn generate_follows_chords_from_text_or_a_midi_file_and_names_a_bad_chord() {
    let dir = tempfile::tempdir().unwrap();
    let chord_file = dir.path().join("chords.mid");
    // Am F C G as a chord track.
    let bar = 1920;
    write_midi(
        &chord_file,
        &[
            (&[57, 60, 64], bar),
            (&[53, 57, 60], bar),
            (&[48, 52, 55], bar),
            (&[55, 59, 62], bar),
        ],
    );
    let tones: [&[u8]; 4] = [&[9, 0, 4], &[5, 9, 0], &[0, 4, 7], &[7, 11, 2]];
    for (name, chord_args) in [
        (
            "text.mid",
            vec!["--chords".to_string(), "Am F C G".to_string()],
        ),
        (
            "file.mid",
            vec![
                "--chords-midi".to_string(),
                chord_file.display().to_string(),
            ],
        ),
    ] {
        let out = dir.path().join(name);
        succeed(
            melodist()
                .args([
                    "generate", "--bars", "16", "--seed", "4", "--key", "A", "--scale", "minor",
                ])
                .args(["--chord-fit", "1"])
                .args(&chord_args)
                .arg("--out")
                .arg(&out),
        );
        let notes = read_melody(&out).unwrap().notes;
        // Notes on beats 1 and 3 sit on the bar's chord.
        let strong: Vec<_> = notes
            .iter()
            .filter(|n| (n.start / 2.0).fract() < 1e-6)
            .collect();
        let on_chord = strong
            .iter()
            .filter(|n| tones[(n.start / 4.0) as usize % 4].contains(&(n.pitch % 12)))
            .count();
        assert!(
            on_chord as f64 >= 0.85 * strong.len() as f64,
            "{name}: {on_chord} of {} strong-beat notes on the chord",
            strong.len()
        );
    }
    let bad = melodist()
        .args(["generate", "--chords", "Am H7 C", "--out"])
        .arg(dir.path().join("bad.mid"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("H7") && stderr.contains("unknown root"),
        "{stderr}"
    );
}

#[test]
fn generate_can_write_the_chords_on_a_second_track() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sketch.mid");
    succeed(
        melodist()
            .args(["generate", "--bars", "8", "--chords", "Am F C G"])
            .args(["--write-chords", "--out"])
            .arg(&out),
    );
    let bytes = std::fs::read(&out).unwrap();
    let smf = midly::Smf::parse(&bytes).unwrap();
    assert_eq!(smf.tracks.len(), 2, "melody and chords");
    // The chord track: each bar's chord struck on its downbeat (pitch classes from C3 up).
    let mut tick = 0u32;
    let mut onsets: Vec<(u32, u8)> = Vec::new();
    for ev in &smf.tracks[1] {
        tick += ev.delta.as_int();
        if let midly::TrackEventKind::Midi {
            message: midly::MidiMessage::NoteOn { key, vel },
            ..
        } = ev.kind
            && vel.as_int() > 0
        {
            onsets.push((tick, key.as_int()));
        }
    }
    let at = |t: u32| {
        let mut p: Vec<u8> = onsets.iter().filter(|o| o.0 == t).map(|o| o.1).collect();
        p.sort();
        p
    };
    assert_eq!(at(0), vec![48, 52, 57], "Am");
    assert_eq!(at(1920), vec![48, 53, 57], "F");
    assert_eq!(at(3 * 1920), vec![50, 55, 59], "G");
    assert_eq!(
        at(4 * 1920),
        vec![48, 52, 57],
        "Am again: the progression loops"
    );
    // Without --write-chords the file stays one track.
    let plain = dir.path().join("plain.mid");
    succeed(
        melodist()
            .args(["generate", "--bars", "8", "--chords", "Am F C G", "--out"])
            .arg(&plain),
    );
    assert_eq!(
        midly::Smf::parse(&std::fs::read(&plain).unwrap())
            .unwrap()
            .tracks
            .len(),
        1
    );
}
