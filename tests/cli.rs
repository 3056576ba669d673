//! The `melodist` binary as a producer uses it.

use melodist::midi::read_melody;
use melodist::music::{Key, Meter, PitchClass, Scale};
use std::process::Command;

fn melodist() -> Command {
    Command::new(env!("CARGO_BIN_EXE_melodist"))
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

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.bin");
    std::fs::write(&bad, b"not a model").unwrap();
    let mid = dir.path().join("x.mid");
    let out = melodist()
        .args(["generate", "--bars", "2", "--model"])
        .arg(&bad)
        .arg("--out")
        .arg(&mid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a broken model falls back instead of failing"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("using the shipped Markov model"));
    assert!(read_melody(&mid).is_ok());
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
