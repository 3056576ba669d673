//! Dynamic batching of LSTM steps across concurrent decodes (the model server's).
//!
//! Every request decodes through the very code a single decode runs, with its own
//! [`FastState`], sampler and random numbers; it runs as a coroutine (its own stack, on
//! the decode thread) so that it can stop at each network step. A [`StepScheduler`] runs
//! the steps of all its requests waiting there as one [`FastLstm::step_batch`], which
//! reads each weight matrix once for the whole batch instead of once per request, and
//! resumes each with its state. A batched step's logits are bit for bit a single step's,
//! so each request gets the notes it would get alone.
//!
//! Switching coroutines is a few register saves on one thread, not a trip through the
//! kernel: an earlier version handed steps to a batching thread over channels, and its
//! two thread switches per step cost more than batching saved on two cores.

use super::lstm_fast::{FastLstm, FastState, StepInput};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// A network step a decode waits for: its input and its state, lent to the scheduler.
pub struct StepCall {
    input: StepInput,
    state: FastState,
}

type StepYielder = Yielder<FastState, StepCall>;
type Decode<R> = Coroutine<FastState, StepCall, R>;

/// Stack of one decode coroutine (virtual memory; pages are used as touched).
const STACK_BYTES: usize = 4 << 20;

thread_local! {
    /// The running decode coroutine's yielder, or null outside one. Each coroutine sets
    /// it when it starts and again every time it is resumed, so it always names the
    /// coroutine that is running; the scheduler clears it whenever control comes back.
    static YIELDER: Cell<*const StepYielder> = const { Cell::new(std::ptr::null()) };
}

/// [`FastLstm::step`] as part of a batch, when called from a decode that a
/// [`StepScheduler`] runs: waits for the batched step and returns true with `state`
/// stepped. Elsewhere returns false at once and leaves `state` as it was.
pub fn step_in_batch(input: StepInput, state: &mut FastState) -> bool {
    let yielder = YIELDER.get();
    if yielder.is_null() {
        return false;
    }
    // SAFETY: non-null only while the coroutine that set it runs (see `YIELDER`): the
    // yielder it points to belongs to that coroutine, which is running this very code.
    let call = StepCall {
        input,
        state: std::mem::take(state),
    };
    *state = unsafe { &*yielder }.suspend(call);
    YIELDER.set(yielder);
    true
}

/// How a decode ended: its return value, or the panic it raised.
pub type Finished<R> = Result<R, Box<dyn Any + Send>>;

/// Runs decodes as coroutines and their network steps as batches (see the module docs).
/// Lives on one thread.
pub struct StepScheduler<R> {
    model: Arc<FastLstm>,
    /// Decodes stopped at a step, with that step.
    waiting: Vec<(Decode<R>, StepCall)>,
    inputs: Vec<StepInput>,
    states: Vec<FastState>,
}

impl<R: 'static> StepScheduler<R> {
    pub fn new(model: Arc<FastLstm>) -> Self {
        Self {
            model,
            waiting: Vec::new(),
            inputs: Vec::new(),
            states: Vec::new(),
        }
    }

    /// Decodes waiting for a step.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Starts `decode` and runs it up to its first network step; returns its end if it
    /// ended before one (a Markov request, a bad one, or a panic).
    pub fn start(&mut self, decode: impl FnOnce() -> R + 'static) -> Option<Finished<R>> {
        let coroutine = Coroutine::with_stack(
            DefaultStack::new(STACK_BYTES).expect("a decode stack (virtual memory)"),
            move |yielder: &StepYielder, _: FastState| {
                YIELDER.set(yielder);
                decode()
            },
        );
        self.resume(coroutine, FastState::default())
    }

    /// Runs one batched step for every waiting decode and resumes each up to its next
    /// step; returns the batch's size and the decodes that ended.
    pub fn step(&mut self) -> (usize, Vec<Finished<R>>) {
        let batch = std::mem::take(&mut self.waiting);
        self.inputs.clear();
        self.states.clear();
        let mut decodes = Vec::with_capacity(batch.len());
        for (decode, call) in batch {
            self.inputs.push(call.input);
            self.states.push(call.state);
            decodes.push(decode);
        }
        // Fewer sequences than the batched kernel's group take the one-sequence kernel
        // inside `step_batch` itself.
        self.model.step_batch(&self.inputs, &mut self.states);
        let size = decodes.len();
        let states = std::mem::take(&mut self.states);
        let ended = (decodes.into_iter().zip(states))
            .filter_map(|(decode, state)| self.resume(decode, state))
            .collect();
        (size, ended)
    }

    /// Resumes `decode` with `state`; it either waits at its next step or has ended.
    fn resume(&mut self, mut decode: Decode<R>, state: FastState) -> Option<Finished<R>> {
        let result = catch_unwind(AssertUnwindSafe(|| decode.resume(state)));
        YIELDER.set(std::ptr::null());
        match result {
            Ok(CoroutineResult::Yield(call)) => {
                self.waiting.push((decode, call));
                None
            }
            Ok(CoroutineResult::Return(value)) => Some(Ok(value)),
            Err(panic) => Some(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::loader::{EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS};
    use crate::model::load_model;
    use crate::model::tokenizer::Onset;

    fn argmax(v: &[f32]) -> u32 {
        (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u32
    }

    /// Greedy decode of `notes` notes for header `cond`, stepping in a batch when run by a
    /// scheduler and alone otherwise.
    fn decode(fast: &FastLstm, cond: [u32; 3], notes: usize) -> Vec<u32> {
        let mut s = fast.state();
        fast.start(cond, &mut s);
        let mut prev = (1, 2);
        let mut out = vec![];
        for t in 0..notes {
            let input = StepInput {
                prev_pitch: prev.0,
                prev_dur: prev.1,
                at: Onset {
                    pos: (t * 6 % 48) as u16,
                    cadence: 3,
                    chord: 0,
                },
            };
            if !step_in_batch(input, &mut s) {
                fast.step(input.prev_pitch, input.prev_dur, input.at, &mut s);
            }
            let pitch = argmax(s.pitch_logits());
            prev = (pitch, argmax(fast.duration_logits(pitch, &mut s)));
            out.push(pitch);
        }
        out
    }

    fn shipped() -> Arc<FastLstm> {
        let model = load_model(EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS).unwrap();
        Arc::new(FastLstm::from_lstm(&model).unwrap())
    }

    #[test]
    fn concurrent_decodes_are_stepped_together_and_get_their_own_notes() {
        let fast = shipped();
        // Different lengths: the batch shrinks as decodes end.
        let jobs: Vec<([u32; 3], usize)> = (0..4)
            .map(|b| ([1 + b, 20, 30], 12 + 4 * b as usize))
            .collect();
        let alone: Vec<Vec<u32>> = jobs.iter().map(|&(c, n)| decode(&fast, c, n)).collect();

        let mut scheduler = StepScheduler::new(fast.clone());
        for (i, &(cond, notes)) in jobs.iter().enumerate() {
            let fast = fast.clone();
            assert!(
                scheduler
                    .start(move || (i, decode(&fast, cond, notes)))
                    .is_none()
            );
        }
        let mut sizes = vec![];
        let mut together = vec![vec![]; jobs.len()];
        while scheduler.waiting() > 0 {
            let (size, ended) = scheduler.step();
            sizes.push(size);
            for (i, notes) in ended.into_iter().map(Result::unwrap) {
                together[i] = notes;
            }
        }
        assert_eq!(together, alone, "batching must not change a decode's notes");
        // Each step runs every decode still going: 12 steps of 4, then 3, 2 and 1 as the
        // shorter ones end.
        let want: Vec<usize> = [4; 12]
            .into_iter()
            .chain([3; 4])
            .chain([2; 4])
            .chain([1; 4])
            .collect();
        assert_eq!(sizes, want);
        // Outside a scheduler nothing is batched.
        let mut s = fast.state();
        let input = StepInput {
            prev_pitch: 1,
            prev_dur: 2,
            at: Onset::at(0),
        };
        assert!(!step_in_batch(input, &mut s));
    }

    #[test]
    fn a_panicking_decode_ends_alone() {
        let fast = shipped();
        let mut scheduler = StepScheduler::new(fast.clone());
        let f = fast.clone();
        scheduler.start(move || decode(&f, [1, 20, 30], 8));
        let f = fast.clone();
        scheduler.start(move || {
            decode(&f, [2, 20, 30], 3);
            panic!("a decode bug");
        });
        let (mut finished, mut panicked) = (0, 0);
        while scheduler.waiting() > 0 {
            for end in scheduler.step().1 {
                match end {
                    Ok(notes) => {
                        assert_eq!(notes, decode(&fast, [1, 20, 30], 8));
                        finished += 1;
                    }
                    Err(_) => panicked += 1,
                }
            }
        }
        assert_eq!((finished, panicked), (1, 1));
    }
}
