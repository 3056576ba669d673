//! Form, cadences and chords with the shipped neural model, through the path the plugin
//! and `melodist generate` use (`FormPlayer`).

use melodist::cli::generate::{chord_ticks, generate_with};
use melodist::generator::form::{FormPlayer, Role, SongChords, plan};
use melodist::generator::loader::{ModelChoice, load_strict};
use melodist::generator::{GenSettings, Generator};
use melodist::midi::MelodyNote;
use melodist::model::grid::TPQ;
use melodist::model::grid::strong_tail_start;
use melodist::music::chord::Progression;
use melodist::music::{Key, Meter, PitchClass, Scale};

fn neural() -> Box<dyn Generator> {
    load_strict(&ModelChoice::Default).expect("the shipped model loads")
}

fn settings(seed: u64, key: Key) -> GenSettings {
    GenSettings {
        seed,
        key,
        low: 55,
        high: 84,
        ..GenSettings::default()
    }
}

/// The last note of each 4-bar phrase.
fn phrase_ends(notes: &[MelodyNote], meter: Meter, phrases: usize) -> Vec<&MelodyNote> {
    let phrase_len = 4.0 * meter.beats_per_bar();
    (0..phrases)
        .filter_map(|k| {
            let end = (k + 1) as f64 * phrase_len;
            notes.iter().rev().find(|n| n.start < end - 1e-9)
        })
        .collect()
}

#[test]
fn closing_phrases_end_on_the_tonic_and_open_ones_on_two_or_five_on_a_held_strong_beat() {
    let mut g = neural();
    for (seed, meter) in [
        (1, Meter::new(4, 4)),
        (2, Meter::new(6, 8)),
        (3, Meter::new(3, 4)),
    ] {
        let key = Key::new(PitchClass::from_index(seed as u8 * 5 % 12), Scale::Minor);
        let s = settings(seed, key);
        let notes = generate_with(g.as_mut(), s, meter, 16, &[]);
        let bar = meter.beats_per_bar();
        let strong = strong_tail_start(meter) as f64 / TPQ as f64;
        for (k, end) in phrase_ends(&notes, meter, 4).into_iter().enumerate() {
            let degree = key.relative_pc(end.pitch);
            if k % 2 == 1 {
                assert_eq!(degree, 0, "seed {seed}: phrase {k} closes on the tonic");
            } else {
                assert!(
                    [2, 7].contains(&degree),
                    "seed {seed}: phrase {k} ends open, on {degree}"
                );
            }
            let phrase_end = (k + 1) as f64 * 4.0 * bar;
            assert!(
                (end.start - (phrase_end - bar + strong)).abs() < 1e-6,
                "seed {seed} phrase {k}: the cadence note starts on the last strong beat ({} vs {})",
                end.start,
                phrase_end - bar + strong
            );
            // Held to the bar line (gate 0.9 of its slot).
            assert!(end.duration >= 0.85 * (phrase_end - end.start), "{end:?}");
        }
    }
}

#[test]
fn repeats_in_the_plan_are_heard_and_a_bar_is_the_same_however_it_is_reached() {
    let mut g = neural();
    let meter = Meter::new(4, 4);
    let key = Key::new(PitchClass::D, Scale::Major);
    let mut heard_repeat = false;
    for seed in 0..8 {
        let s = settings(seed, key);
        let mut player = FormPlayer::default();
        let through: Vec<_> = (0..16)
            .map(|b| player.bar(g.as_mut(), s, meter, b, &[], &SongChords(&[]), 0))
            .collect();
        for (k, p) in plan(s.form, s.style, seed, 0).iter().enumerate() {
            if let Role::Repeat(i) = p.role {
                assert_eq!(through[k * 4..k * 4 + 4], through[i * 4..i * 4 + 4]);
                heard_repeat = true;
            }
        }
        let mut jumped = FormPlayer::default();
        for b in [13, 6, 15] {
            let bar = jumped.bar(g.as_mut(), s, meter, b, &[], &SongChords(&[]), 0);
            assert_eq!(bar, through[b as usize], "seed {seed}, bar {b}");
        }
    }
    assert!(heard_repeat, "no plan drew a repeat in 8 seeds");
}

/// Share of notes starting on strong beats (beats 1 and 3 of 4/4) that are chord tones.
fn strong_chord_tone_share(notes: &[MelodyNote], chords: &[u16]) -> f64 {
    let on_strong: Vec<&MelodyNote> = notes
        .iter()
        .filter(|n| (n.start / 2.0).fract().abs() < 1e-6)
        .collect();
    let tones = on_strong
        .iter()
        .filter(|n| {
            let tick = (n.start * TPQ as f64).round() as usize;
            chords
                .get(tick)
                .is_some_and(|c| c >> (n.pitch % 12) & 1 == 1)
        })
        .count();
    tones as f64 / on_strong.len().max(1) as f64
}

/// The model itself reads the chords (format 3, trained on the chorales' harmony): with
/// Chord fit 0 (no bonus on chord tones) the chords still pull strong beats onto them.
#[test]
fn the_models_chord_input_moves_notes_onto_the_chords() {
    let mut g = neural();
    let meter = Meter::new(4, 4);
    let progression = Progression::parse("C Am F G", 4.0).unwrap();
    let chords = chord_ticks(&progression, meter, 16);
    let (mut with, mut without) = (0.0, 0.0);
    for seed in 0..6 {
        let s = GenSettings {
            chord_fit: 0.0,
            ..settings(seed, Key::new(PitchClass::C, Scale::Major))
        };
        let a = generate_with(g.as_mut(), s, meter, 16, &chords);
        let b = generate_with(g.as_mut(), s, meter, 16, &[]);
        with += strong_chord_tone_share(&a, &chords) / 6.0;
        without += strong_chord_tone_share(&b, &chords) / 6.0;
    }
    assert!(
        with > without + 0.15,
        "with chords {with:.2}, without {without:.2}"
    );
}

#[test]
fn chord_fit_puts_chord_tones_on_strong_beats() {
    let mut g = neural();
    let meter = Meter::new(4, 4);
    let progression = Progression::parse("Am F C G", 4.0).unwrap();
    let chords = chord_ticks(&progression, meter, 16);
    let (mut with, mut without) = (0.0, 0.0);
    for seed in 0..4 {
        let key = Key::new(PitchClass::A, Scale::Minor);
        let fit = |chord_fit| GenSettings {
            chord_fit,
            ..settings(seed, key)
        };
        let a = generate_with(g.as_mut(), fit(1.0), meter, 16, &chords);
        let b = generate_with(g.as_mut(), fit(0.0), meter, 16, &[]);
        with += strong_chord_tone_share(&a, &chords) / 4.0;
        without += strong_chord_tone_share(&b, &chords) / 4.0;
    }
    assert!(
        with >= 0.85,
        "strong-beat chord tones with chords: {with:.2}"
    );
    assert!(
        with > without + 0.15,
        "with {with:.2}, without {without:.2}"
    );
}
