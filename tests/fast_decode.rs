//! The decoder the plugin runs (`model::lstm_fast`) against candle's reference, on the
//! shipped weights: the same logits to 1e-4, the same notes for a seed, and (Linux, with
//! `strace`) not one system call while it writes phrases.

use melodist::generator::loader::{EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_GUARD};
use melodist::generator::loader::{EMBEDDED_NEURAL_WEIGHTS, LoadedModel, ModelChoice, load_model};
use melodist::generator::neural::NeuralGenerator;
use melodist::generator::{ContextNote, GenSettings, Generator, Mode, PhraseRequest};
use melodist::model::lstm_fast::Precision;
use melodist::model::tokenizer::{Onset, Style, cond_tokens};
use melodist::music::{Key, Meter, PitchClass, Scale, SeedRng};
use std::hint::black_box;

/// The shipped model decoding its exact f32 weights (whatever its `config.json` decodes
/// with), which is what candle's reference must match.
fn shipped() -> NeuralGenerator {
    NeuralGenerator::from_bytes(EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS)
        .unwrap()
        .with_guard(EMBEDDED_NEURAL_GUARD)
        .unwrap()
        .with_precision(Precision::F32)
        .unwrap()
}

/// `config.json`'s `decode` picks the decoder's weight precision: absent is f32, `"int8"`
/// decodes with int8 matrices, anything else is a clear error.
#[test]
fn the_model_config_chooses_the_decoder_precision() {
    let with_decode = |value: Option<&str>| {
        let mut config: serde_json::Value = serde_json::from_slice(EMBEDDED_NEURAL_CONFIG).unwrap();
        let fields = config.as_object_mut().unwrap();
        match value {
            Some(v) => fields.insert("decode".into(), v.into()),
            None => fields.remove("decode"),
        };
        NeuralGenerator::from_bytes(
            &serde_json::to_vec(&config).unwrap(),
            EMBEDDED_NEURAL_WEIGHTS,
        )
    };
    let f32_path = with_decode(None).unwrap();
    assert_eq!(f32_path.fast_model().precision(), Precision::F32);
    let int8 = with_decode(Some("int8")).unwrap();
    assert_eq!(int8.fast_model().precision(), Precision::Int8);
    assert!(2 * int8.fast_model().bytes_per_note() < f32_path.fast_model().bytes_per_note());
    let err = with_decode(Some("int4"))
        .err()
        .expect("int4 is not a precision");
    assert!(format!("{err:#}").contains("config.json"), "{err:#}");
}

#[test]
fn fast_path_matches_candle_logits_on_the_shipped_weights() {
    let g = shipped();
    let (model, fast) = (g.model(), g.fast_model());
    let vocab = model.config.vocab as u64;
    let mut rng = SeedRng::new(7);
    for tune in 0..3 {
        let key = Key::new(PitchClass::from_index(tune * 5), Scale::ALL[tune as usize]);
        let cond = cond_tokens(Style::Any, Meter::new(4, 4), key);
        let mut reference = model.start(cond).unwrap();
        let mut state = fast.state();
        fast.start(cond, &mut state);
        let mut worst = 0f32;
        for _ in 0..200 {
            let mut tok = || (rng.next_u64() % vocab) as u32;
            let (p, d, next) = (tok(), tok(), tok());
            let at = Onset {
                pos: (tok() % 48) as u16,
                cadence: (tok() % 8) as u8,
                chord: (tok() * 91 % 4096) as u16,
            };
            let want = model.step(p, d, at, &mut reference).unwrap();
            let got = fast.step(p, d, at, &mut state);
            worst = worst.max(max_diff(got, &want));
            let want = model.duration_logits(next, &reference).unwrap();
            worst = worst.max(max_diff(fast.duration_logits(next, &mut state), &want));
        }
        assert!(worst < 1e-4, "tune {tune}: logits differ by {worst}");
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn request(seed: u64, mode: Mode, density: f32, context: &[ContextNote]) -> PhraseRequest<'_> {
    PhraseRequest {
        settings: GenSettings {
            seed,
            mode,
            density,
            ..Default::default()
        },
        meter: if seed.is_multiple_of(3) {
            Meter::new(6, 8)
        } else {
            Meter::new(4, 4)
        },
        phrase_index: seed as i64,
        bars: 4,
        context,
        shape: Default::default(),
        chords: &[],
    }
}

#[test]
fn fast_path_plays_the_same_notes_as_candle_for_a_seed() {
    let mut g = shipped();
    let context: Vec<ContextNote> = (0..12)
        .map(|i| ContextNote {
            pitch: 60 + [0, 2, 4, 5, 7, 9][i % 6],
            duration: 0.5,
        })
        .collect();
    let mut notes = 0;
    for seed in 0..40 {
        let (mode, ctx) = match seed % 2 {
            0 => (Mode::Generate, &[][..]),
            _ => (Mode::Continue, &context[..]),
        };
        let density = [0.2, 0.5, 0.9][seed as usize % 3];
        let req = request(seed, mode, density, ctx);
        let fast = g.generate(&req, &mut SeedRng::new(seed));
        let reference = g.generate_reference(&req, &mut SeedRng::new(seed));
        assert_eq!(fast, reference, "seed {seed}");
        notes += fast.iter().map(Vec::len).sum::<usize>();
    }
    assert!(notes > 500, "only {notes} notes compared");
}

/// Set in the child process that [`decoding_makes_no_system_calls`] runs under `strace`.
const CHILD: &str = "MELODIST_SYSCALL_CHILD";

/// Marker paths: `stat` on them shows up in the trace around the decode loop.
const BEGIN: &str = "/melodist-decode-begin";
const END: &str = "/melodist-decode-end";
/// Around candle's decoder, to show the trace does see the thread's system calls.
const REF_BEGIN: &str = "/melodist-reference-begin";
const REF_END: &str = "/melodist-reference-end";
/// Around the VAE's encode + decode of hooks (`model::vae_fast`).
const VAE_BEGIN: &str = "/melodist-vae-begin";
const VAE_END: &str = "/melodist-vae-end";

/// In the child: load, warm up, then write 64 phrases of 4 bars (and 16 more with int8
/// weights) between two markers, on this thread, as the plugin's worker does (no
/// environment variables set); then 4 phrases
/// with candle's decoder between two other markers.
#[test]
fn syscall_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let LoadedModel::Neural(mut g) = load_model(&ModelChoice::Default).unwrap() else {
        panic!("the default model is the neural one");
    };
    let phrase = |g: &mut Box<NeuralGenerator>, seed| {
        let req = request(seed, Mode::Generate, 0.5, &[]);
        g.generate(&req, &mut SeedRng::new(seed))
    };
    // Each phrase is dropped before the next, as the plugin's worker hands phrases on: kept
    // alive, their growing total makes malloc extend its arena (mprotect), which is the
    // caller's memory, not the decoder's.
    // The same model with int8 weights (its integer kernel) is traced in the same span.
    let LoadedModel::Neural(g8) = load_model(&ModelChoice::Default).unwrap() else {
        panic!("the default model is the neural one");
    };
    let mut g8 = Box::new(g8.with_precision(Precision::Int8).unwrap());
    let warm = phrase(&mut g, 0);
    let warm8 = phrase(&mut g8, 0);
    let _ = std::fs::metadata(BEGIN);
    let mut notes = 0;
    for seed in 1..=64 {
        let p = phrase(&mut g, seed);
        assert_eq!(p.len(), 4);
        notes += p.iter().map(Vec::len).sum::<usize>();
    }
    let mut int8_notes = 0;
    for seed in 1..=16 {
        int8_notes += phrase(&mut g8, seed).iter().map(Vec::len).sum::<usize>();
    }
    let _ = std::fs::metadata(END);
    assert!(
        warm8.len() == 4 && int8_notes > 64,
        "{int8_notes} int8 notes"
    );
    let _ = std::fs::metadata(REF_BEGIN);
    for seed in 1..=4 {
        let req = request(seed, Mode::Generate, 0.5, &[]);
        black_box(g.generate_reference(&req, &mut SeedRng::new(seed)));
    }
    let _ = std::fs::metadata(REF_END);
    assert!(warm.len() == 4 && notes > 256, "{notes} notes");

    // The VAE: encode a phrase the LSTM wrote, vary it, decode it, as Vary does.
    use melodist::generator::hooks::{EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS, Hook};
    use melodist::model::variation::{DecodeRules, PhraseContext, VaeModel, vary};
    let vae = VaeModel::load(EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS).unwrap();
    let context = PhraseContext {
        meter: Meter::new(4, 4),
        key: Key::new(PitchClass::C, Scale::Major),
        style: Default::default(),
    };
    let hooks: Vec<Vec<melodist::midi::MelodyNote>> = (1..=16)
        .map(|seed| {
            let bars = phrase(&mut g, seed);
            Hook {
                meter: context.meter,
                bars,
            }
            .notes()
        })
        .collect();
    let round_trip = |notes: &[melodist::midi::MelodyNote], seed: u64| {
        let code = vary(&vae.encode(notes, context).unwrap(), 0.3, seed);
        vae.decode(&code, &DecodeRules::default(), seed).unwrap()
    };
    let warm = round_trip(&hooks[0], 0);
    let _ = std::fs::metadata(VAE_BEGIN);
    let mut vae_notes = 0;
    for (seed, hook) in hooks.iter().enumerate() {
        vae_notes += round_trip(hook, seed as u64).len();
    }
    let _ = std::fs::metadata(VAE_END);
    assert!(!warm.is_empty() && vae_notes > 64, "{vae_notes} VAE notes");
}

#[cfg(target_os = "linux")]
#[test]
fn decoding_makes_no_system_calls() {
    use std::process::Command;
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .arg(&exe)
        .args([
            "--exact",
            "syscall_child",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env_remove("RAYON_NUM_THREADS")
        .status();
    let Ok(status) = status else {
        eprintln!("strace is not installed: skipping the system call check");
        return;
    };
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() && !trace.contains(BEGIN) {
        eprintln!("strace could not trace here (ptrace denied?): skipping\n{trace}");
        return;
    }
    assert!(status.success(), "the child failed:\n{trace}");
    let calls = calls_between(&trace, BEGIN, END, true);
    assert!(
        trace.contains(VAE_END),
        "the VAE part of the child did not run"
    );
    let vae_calls = calls_between(&trace, VAE_BEGIN, VAE_END, true);
    assert!(
        vae_calls.is_empty(),
        "{} system calls while the VAE encoded and decoded 16 phrases:\n{}",
        vae_calls.len(),
        vae_calls.join("\n")
    );
    // candle's work runs on its pool's thread: count every thread there.
    let reference = calls_between(&trace, REF_BEGIN, REF_END, false);
    eprintln!(
        "system calls: fast path {} on the decoding thread (256 bars), candle {} (16 bars)",
        calls.len(),
        reference.len()
    );
    assert!(
        !reference.is_empty(),
        "the trace should see the reference decoder's calls (/proc/cpuinfo, its pool):\n{trace}"
    );
    assert!(
        calls.is_empty(),
        "{} system calls while decoding 256 bars:\n{}",
        calls.len(),
        calls.join("\n")
    );
}

/// The system calls between the `begin` and `end` marker calls, of the thread that made
/// `begin` when `one_thread` (strace -f prefixes each line with the thread id).
#[cfg(target_os = "linux")]
fn calls_between<'t>(trace: &'t str, begin: &str, end: &str, one_thread: bool) -> Vec<&'t str> {
    let lines: Vec<&str> = trace.lines().collect();
    let b = lines
        .iter()
        .position(|l| l.contains(begin))
        .expect("begin marker");
    let e = lines
        .iter()
        .position(|l| l.contains(end))
        .expect("end marker");
    let tid = lines[b].split_whitespace().next().unwrap();
    lines[b + 1..e]
        .iter()
        .copied()
        .filter(|l| !one_thread || l.split_whitespace().next() == Some(tid))
        // The begin marker's own call may be split ("<unfinished ...>" then "<... resumed>").
        .filter(|l| !l.contains("stat resumed>") && !l.contains("statx resumed>"))
        .collect()
}
