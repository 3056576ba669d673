//! The neural generator end to end on a tiny synthetic corpus: training lowers the loss and
//! writes a model that loads, respects key and register, is deterministic, continues a
//! phrase; damaged model files give clear errors.

use melodist::generator::neural::NeuralGenerator;
use melodist::generator::{ContextNote, GenSettings, Mode, PhraseRequest, render_phrase};
use melodist::midi::{Melody, MelodyNote};
use melodist::model::lstm::LstmConfig;
use melodist::model::tokenizer::Style;
use melodist::model::train::{CorpusTune, TrainOptions, train};
use melodist::model::{CONFIG_FILE, WEIGHTS_FILE};
use melodist::music::{Key, Meter, PitchClass, Scale, SeedRng};
use std::path::{Path, PathBuf};

/// Stepwise tunes in C major (4/4) and A minor (6/8) with simple rhythms.
fn toy_corpus() -> Vec<CorpusTune> {
    (0..60)
        .map(|i| {
            let mut rng = SeedRng::new(i);
            let minor = i % 2 == 1;
            let (meter, tonic, scale) = if minor {
                (Meter::new(6, 8), PitchClass::A, Scale::Minor)
            } else {
                (Meter::new(4, 4), PitchClass::C, Scale::Major)
            };
            let key = Key::new(tonic, scale);
            let mut pitch = if minor { 69 } else { 60 };
            let (mut t, mut notes) = (0.0, Vec::new());
            for j in 0..32 {
                let d = if minor {
                    [1.0, 0.5][j % 2]
                } else {
                    [0.5, 0.5, 1.0][j % 3]
                };
                notes.push(MelodyNote {
                    start: t,
                    duration: d,
                    pitch,
                    velocity: 80,
                });
                t += d;
                let step = [-2i32, -1, 1, 2][(rng.next_u64() % 4) as usize];
                pitch = (pitch as i32 + step).clamp(57, 81) as u8;
                while !key.contains(pitch) {
                    pitch += 1;
                }
            }
            CorpusTune {
                path: PathBuf::from(format!("toy/t{i}.mid")),
                group: format!("t{i}"),
                style: if minor { Style::Jig } else { Style::Reel },
                melody: Melody {
                    title: format!("t{i}"),
                    meter,
                    key: Some(key),
                    notes,
                },
                harmony: vec![],
            }
        })
        .collect()
}

fn tiny_options() -> TrainOptions {
    TrainOptions {
        model: LstmConfig {
            embed: 16,
            hidden: 32,
            layers: 1,
            dropout: 0.0,
            ..LstmConfig::default()
        },
        epochs: 4,
        batch_size: 8,
        window: 64,
        lr: 1e-2,
        warmup_steps: 5,
        patience: 10,
        progress: false,
        ..TrainOptions::default()
    }
}

fn request(settings: GenSettings, context: &[ContextNote]) -> PhraseRequest<'_> {
    PhraseRequest {
        settings,
        meter: Meter::new(4, 4),
        phrase_index: 3,
        bars: 4,
        context,
        shape: Default::default(),
        chords: &[],
    }
}

fn trained(dir: &Path) -> NeuralGenerator {
    let tunes = toy_corpus();
    assert!(tunes.iter().any(|t| t.is_validation()) && tunes.iter().any(|t| !t.is_validation()));
    let metrics = train(&tunes, 0, dir, &tiny_options()).unwrap();
    let first = &metrics.history[0];
    let last = metrics.history.last().unwrap();
    assert!(
        last.train_loss < first.train_loss * 0.8,
        "loss {} -> {}",
        first.train_loss,
        last.train_loss
    );
    assert!(dir.join("metrics.json").exists());
    NeuralGenerator::load(dir).unwrap()
}

#[test]
fn trains_loads_and_generates_within_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = trained(dir.path());
    let key = Key::new(PitchClass::E, Scale::Dorian);
    let context: Vec<ContextNote> = [64, 66, 67, 69, 71, 69, 67, 66]
        .iter()
        .map(|&p| ContextNote {
            pitch: p,
            duration: 0.5,
        })
        .collect();
    for mode in [Mode::Generate, Mode::Continue] {
        for seed in 0..6 {
            let s = GenSettings {
                key,
                low: 55,
                high: 76,
                seed,
                mode,
                ..Default::default()
            };
            let a = render_phrase(&mut g, &request(s, &context));
            assert_eq!(
                a,
                render_phrase(&mut g, &request(s, &context)),
                "same seed, same notes"
            );
            assert_eq!(a.len(), 4);
            let notes: Vec<_> = a.iter().flatten().collect();
            assert!(notes.len() >= 4, "{mode:?}: only {} notes", notes.len());
            for bar in &a {
                for n in bar {
                    assert!(
                        key.contains(n.pitch) && (55..=76).contains(&n.pitch),
                        "{n:?}"
                    );
                    assert!(
                        n.start >= 0.0 && n.start + n.duration <= 4.0 + 1e-9,
                        "{n:?}"
                    );
                }
            }
        }
    }
    // A register below the vocabulary still gets in-key, in-register notes.
    let low = GenSettings {
        key,
        low: 0,
        high: 12,
        seed: 5,
        ..Default::default()
    };
    let phrase = render_phrase(&mut g, &request(low, &[]));
    assert!(
        phrase
            .iter()
            .flatten()
            .all(|n| n.pitch <= 12 && key.contains(n.pitch)),
        "{phrase:?}"
    );
    let s = GenSettings {
        seed: 1,
        ..Default::default()
    };
    assert_ne!(
        render_phrase(&mut g, &request(s, &[])),
        render_phrase(&mut g, &request(GenSettings { seed: 2, ..s }, &[]))
    );
    // The style tag conditions the model: same seed, another style, other notes.
    let mut styled = |style: Style| {
        (0..4)
            .map(|seed| render_phrase(&mut g, &request(GenSettings { seed, style, ..s }, &[])))
            .collect::<Vec<_>>()
    };
    let (reel, jig) = (styled(Style::Reel), styled(Style::Jig));
    assert_ne!(reel, jig);
}

#[test]
fn damaged_or_missing_model_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = NeuralGenerator::load(dir.path()).err().unwrap();
    assert!(format!("{err:#}").contains("cannot read"), "{err:#}");

    let tunes = toy_corpus();
    let opts = TrainOptions {
        epochs: 1,
        ..tiny_options()
    };
    train(&tunes, 0, dir.path(), &opts).unwrap();
    let config = std::fs::read(dir.path().join(CONFIG_FILE)).unwrap();
    let weights = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
    assert!(NeuralGenerator::from_bytes(&config, &weights).is_ok());

    let mut flipped = weights.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let err = NeuralGenerator::from_bytes(&config, &flipped)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    let err = NeuralGenerator::from_bytes(&config, &weights[..weights.len() / 2])
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    let err = NeuralGenerator::from_bytes(b"{not json", &weights)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("config.json"), "{err:#}");
    // A config describing another network shape, with a matching checksum: shape error.
    let text = String::from_utf8(config)
        .unwrap()
        .replace("\"hidden\": 32", "\"hidden\": 48");
    let err = NeuralGenerator::from_bytes(text.as_bytes(), &weights)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
}

#[test]
fn training_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tunes = toy_corpus();
    let one = TrainOptions {
        epochs: 1,
        ..tiny_options()
    };
    let first = train(&tunes, 0, dir.path(), &one).unwrap();
    for f in [
        "checkpoint.json",
        "checkpoint.safetensors",
        "checkpoint.optimizer.safetensors",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let more = TrainOptions {
        epochs: 3,
        resume: true,
        ..tiny_options()
    };
    let resumed = train(&tunes, 0, dir.path(), &more).unwrap();
    assert_eq!(resumed.history.len(), 3);
    assert_eq!(resumed.history[0].val.total, first.history[0].val.total);
    assert_eq!(
        resumed.steps,
        first.steps * 3,
        "the step count (and schedule) continues"
    );
    assert!(resumed.history[2].train_loss < first.history[0].train_loss);

    // A damaged optimizer state is a clear error, not a silent restart.
    std::fs::write(dir.path().join("checkpoint.optimizer.safetensors"), b"junk").unwrap();
    let err = train(&tunes, 0, dir.path(), &TrainOptions { epochs: 4, ..more })
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("optimizer"), "{err:#}");
}
