//! Melody VAE speed on one thread: encode and decode of 2-bar segments, as *Vary* and
//! *Morph* run them on the plugin's worker (`model::vae_fast`), next to candle's step.
//!
//! The segments are the first 4 bars of 48 phrases the shipped LSTM writes (96 segments),
//! in C major 4/4. Each is encoded (posterior mean), moved 0.3 towards a prior sample and
//! decoded under the default rules (scale lock, register, temperature 0.3). Prints medians
//! over the segments, best of 5 runs each: µs per segment for encode, decode, and both;
//! and µs per decoded note for the fast path and for candle's `Vae::step` (one thread).
//!
//! `cargo bench --bench vae`.

use melodist::generator::hooks::{EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS, Hook};
use melodist::generator::loader::{LoadedModel, ModelChoice, load_model};
use melodist::generator::{GenSettings, Generator, PhraseRequest};
use melodist::midi::MelodyNote;
use melodist::model::tokenizer::{BOS, PAD, Style, cond_tokens};
use melodist::model::variation::{DecodeRules, Encoded, PhraseContext, VaeModel, vary};
use melodist::music::{Key, Meter, PitchClass, Scale, SeedRng};
use std::hint::black_box;
use std::time::Instant;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The best of 5 medians of `f` over `items` (µs per item).
fn best_median<T>(items: &[T], mut f: impl FnMut(&T)) -> f64 {
    (0..5)
        .map(|_| {
            median(
                items
                    .iter()
                    .map(|item| {
                        let t = Instant::now();
                        f(item);
                        t.elapsed().as_secs_f64() * 1e6
                    })
                    .collect(),
            )
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // SAFETY: set before any thread of this process starts (candle's pool reads it).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    let vae = VaeModel::load(EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS).expect("shipped VAE");
    let LoadedModel::Neural(mut lstm) = load_model(&ModelChoice::Default).unwrap() else {
        panic!("the default model is the neural one");
    };
    let meter = Meter::new(4, 4);
    let context = PhraseContext {
        meter,
        key: Key::new(PitchClass::C, Scale::Major),
        style: Style::Any,
    };
    // One segment per item: 2 bars of notes from the segment's downbeat.
    let mut segments: Vec<Vec<MelodyNote>> = Vec::new();
    for seed in 0..48u64 {
        let request = PhraseRequest {
            settings: GenSettings {
                seed,
                ..Default::default()
            },
            meter,
            phrase_index: 0,
            bars: 4,
            context: &[],
            shape: Default::default(),
            chords: &[],
        };
        let bars = lstm.generate(&request, &mut SeedRng::new(seed));
        for pair in bars.chunks(2) {
            let notes = Hook {
                meter,
                bars: pair.to_vec(),
            }
            .notes();
            if !notes.is_empty() {
                segments.push(notes);
            }
        }
    }
    let rules = DecodeRules::default();
    let codes: Vec<Encoded> = (segments.iter().enumerate())
        .map(|(i, s)| vary(&vae.encode(s, context).unwrap(), 0.3, i as u64))
        .collect();
    let encode = best_median(&segments, |s| {
        black_box(vae.encode(s, context).unwrap());
    });
    let decode = best_median(&codes, |c| {
        black_box(vae.decode(c, &rules, 7).unwrap());
    });
    let both = best_median(&segments, |s| {
        let code = vary(&vae.encode(s, context).unwrap(), 0.3, 7);
        black_box(vae.decode(&code, &rules, 7).unwrap());
    });
    let notes: usize = codes
        .iter()
        .map(|c| vae.decode(c, &rules, 7).unwrap().len())
        .sum();
    let per_segment = notes as f64 / codes.len() as f64;

    // One decoder step + duration layer per note: fast path and candle, same weights.
    let z = &codes[0].codes[0];
    let cond = cond_tokens(Style::Any, meter, context.key);
    let steps = 32;
    let fast_note = best_median(&[()], |_| {
        let mut s = vae.fast.scratch();
        vae.fast.start(z, cond, &mut s);
        for i in 0..steps {
            black_box(vae.fast.step(BOS, PAD, i * 6, &mut s));
            black_box(vae.fast.duration_logits(BOS, &mut s));
        }
    }) / steps as f64;
    let candle_note = best_median(&[()], |_| {
        let mut state = vae.vae.start(z, cond).unwrap();
        for i in 0..steps {
            black_box(vae.vae.step(BOS, PAD, i * 6, &mut state).unwrap());
            black_box(vae.vae.duration_logits(BOS, &state).unwrap());
        }
    }) / steps as f64;

    println!(
        "VAE, {} two-bar segments ({per_segment:.1} notes each), one thread, median of each, best of 5:",
        codes.len()
    );
    println!("  encode            {encode:8.1} µs/segment");
    println!("  decode            {decode:8.1} µs/segment");
    println!("  encode + decode   {both:8.1} µs/segment");
    println!("  decoder step per note: fast path {fast_note:.2} µs, candle {candle_note:.2} µs");
}
