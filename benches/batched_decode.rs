//! Batched decoding (issue 17's dynamic batching): one matrix-matrix LSTM step for B
//! sequences ([`FastLstm::step_batch`]) against B matrix-vector steps ([`FastLstm::step`]),
//! with the shipped model, on this one thread. Prints a table, best of 5 runs each:
//! - 32 sequences × 32 notes (a 4-bar phrase of eighths each), LSTM step + duration layer
//!   per note, one by one vs batched, and the speed-up;
//! - µs per step at batch 1, 8 and 32 (per batch and per sequence), next to the
//!   single-stream `step`.
//!
//! Run with `cargo bench --bench batched_decode` (add `--profile dev` and
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3` to skip the release build; the README says which).

use melodist::generator::loader::{EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS};
use melodist::model::load_model;
use melodist::model::lstm_fast::{FastLstm, FastState, Precision, StepInput};
use melodist::model::tokenizer::Onset;
use std::hint::black_box;
use std::time::Instant;

const SEQUENCES: usize = 32;
const NOTES: usize = 32;

/// Greedy choice: the same in both paths and cheap next to a step.
fn argmax(v: &[f32]) -> u32 {
    (v.iter().enumerate())
        .fold(
            (0, f32::MIN),
            |best, (i, &x)| if x > best.1 { (i, x) } else { best },
        )
        .0 as u32
}

fn input(prev: (u32, u32), t: usize) -> StepInput {
    StepInput {
        prev_pitch: prev.0,
        prev_dur: prev.1,
        at: Onset {
            pos: (t * 6 % 48) as u16,
            cadence: 3,
            chord: 0,
        },
    }
}

fn start(fast: &FastLstm, states: &mut [FastState]) {
    for (b, s) in states.iter_mut().enumerate() {
        fast.start([1 + b as u32 % 5, 20, 30], s);
    }
}

/// Every sequence decoded on its own, one after the other.
fn one_by_one(fast: &FastLstm, states: &mut [FastState]) -> Vec<u32> {
    start(fast, states);
    let mut last = Vec::new();
    for s in states.iter_mut() {
        let mut prev = (1, 2);
        for t in 0..NOTES {
            let i = input(prev, t);
            let pitch = argmax(fast.step(i.prev_pitch, i.prev_dur, i.at, s));
            prev = (pitch, argmax(fast.duration_logits(pitch, s)));
        }
        last.push(prev.0);
    }
    last
}

/// All sequences decoded together, one batched step per note.
fn batched(fast: &FastLstm, states: &mut [FastState]) -> Vec<u32> {
    start(fast, states);
    let mut prev = vec![(1, 2); states.len()];
    for t in 0..NOTES {
        let inputs: Vec<StepInput> = prev.iter().map(|&p| input(p, t)).collect();
        fast.step_batch(&inputs, states);
        for (p, s) in prev.iter_mut().zip(states.iter_mut()) {
            let pitch = argmax(s.pitch_logits());
            *p = (pitch, argmax(fast.duration_logits(pitch, s)));
        }
    }
    prev.iter().map(|p| p.0).collect()
}

/// Best wall time of 5 runs, in seconds.
fn best<T>(mut f: impl FnMut() -> T) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let lstm = load_model(EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS).expect("shipped model");
    for precision in [Precision::F32, Precision::Bf16] {
        let fast = FastLstm::with_precision(&lstm, precision).unwrap();
        let mut states: Vec<FastState> = (0..SEQUENCES).map(|_| fast.state()).collect();
        // Same notes both ways (the unit tests check logits bit for bit).
        assert_eq!(one_by_one(&fast, &mut states), batched(&fast, &mut states));
        let single = best(|| one_by_one(&fast, &mut states));
        let together = best(|| batched(&fast, &mut states));
        println!(
            "{precision:?}: {SEQUENCES} sequences x {NOTES} notes (step + duration layer): one by one {:.2} ms, batched {:.2} ms, speed-up {:.2}x",
            single * 1e3,
            together * 1e3,
            single / together
        );
        let reps = 64;
        let mut one = vec![fast.state()];
        start(&fast, &mut one);
        let step1 = best(|| {
            for t in 0..reps {
                let i = input((5, 6), t);
                fast.step(i.prev_pitch, i.prev_dur, i.at, &mut one[0]);
            }
        }) / reps as f64;
        print!(
            "{precision:?}: µs per step: single-stream step {:.1}",
            step1 * 1e6
        );
        for b in [1, 8, 32] {
            let mut states: Vec<FastState> = (0..b).map(|_| fast.state()).collect();
            start(&fast, &mut states);
            let inputs: Vec<StepInput> = (0..b).map(|i| input((5 + i as u32, 6), i)).collect();
            let per_step = best(|| {
                for _ in 0..reps {
                    fast.step_batch(&inputs, &mut states);
                }
            }) / reps as f64;
            print!(
                "; batch {b}: {:.1} per step, {:.1} per sequence",
                per_step * 1e6,
                per_step * 1e6 / b as f64
            );
        }
        println!();
    }
}
