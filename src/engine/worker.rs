//! The worker thread: owns the generator, answers bar requests, remembers the producer's
//! input as context.

use super::chords::LiveChords;
use super::messages::{BarNotes, BarReady, CHANNEL_CAPACITY, InputNote, ToWorker};
use super::thread::{Background, TEARDOWN_WAIT};
use crate::generator::form::FormPlayer;
use crate::generator::hooks::{HookBank, Variations};
use crate::generator::looping::LoopPlayer;
use crate::generator::{ContextNote, GenSettings, Generator, Mode};
use crate::music::{Key, Scale, detect_key};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many of the producer's notes the worker remembers.
const INPUT_MEMORY: usize = 32;

/// What the worker reports to the UI / CLI. Only non-audio threads read the strings.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    /// Name of the generator in use, once loaded.
    pub generator: Mutex<String>,
    /// Why the preferred generator could not be used, if it could not.
    pub fallback_reason: Mutex<Option<String>>,
    /// Why Vary and Morph act on notes instead of through the VAE, if they do.
    pub vae_fallback_reason: Mutex<Option<String>>,
    pub loaded: AtomicBool,
    pub bars_generated: AtomicU64,
    /// Wall time of the last phrase generation, in microseconds.
    pub last_phrase_us: AtomicU32,
    /// Key detected from the producer's input (tonic*16 + scale index), `u32::MAX` if none.
    pub detected_key: AtomicU32,
}

impl WorkerStatus {
    pub fn detected_key(&self) -> Option<Key> {
        let v = self.detected_key.load(Ordering::Relaxed);
        (v != u32::MAX).then(|| {
            use nice_plug::prelude::Enum;
            Key::new(
                crate::music::PitchClass::from_index((v / 16) as u8),
                Scale::from_index((v % 16) as usize),
            )
        })
    }
}

/// Loads the generator on the worker thread; returns it and, if it is a fallback, why.
pub type GeneratorLoader = Box<dyn FnOnce() -> (Box<dyn Generator>, Option<String>) + Send>;

/// Handle to the worker thread. Dropping it stops and joins the thread.
pub struct Worker {
    pub to_worker: Sender<ToWorker>,
    pub from_worker: Receiver<BarReady>,
    pub status: Arc<WorkerStatus>,
    /// The scheduler's request generation (see [`ToWorker::Bar`]).
    generation: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Background,
}

/// What the audio thread holds of the worker: both channel ends and the generation
/// counter it bumps when a jump makes pending requests stale.
#[derive(Clone)]
pub struct WorkerLink {
    pub to_worker: Sender<ToWorker>,
    pub from_worker: Receiver<BarReady>,
    pub generation: Arc<AtomicU32>,
}

impl Worker {
    /// Spawns the thread. Cheap: the (possibly slow) model load happens on the new thread.
    /// `hooks` are the loop's hook slots, which the editor captures and the project saves.
    pub fn spawn(loader: GeneratorLoader, hooks: HookBank) -> Self {
        let (to_worker, requests) = bounded(CHANNEL_CAPACITY);
        let (answers, from_worker) = bounded(CHANNEL_CAPACITY);
        let status = Arc::new(WorkerStatus {
            detected_key: AtomicU32::new(u32::MAX),
            ..Default::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU32::new(0));
        let thread = {
            let shared = Shared {
                hooks,
                status: status.clone(),
                stop: stop.clone(),
                generation: generation.clone(),
            };
            Background::spawn("melodist-worker", move || {
                run(loader, requests, answers, shared)
            })
            .expect("cannot spawn the Melodist worker thread")
        };
        Self {
            to_worker,
            from_worker,
            status,
            generation,
            stop,
            thread,
        }
    }

    /// The audio thread's side of the worker, for [`crate::engine::Scheduler::new`].
    pub fn link(&self) -> WorkerLink {
        WorkerLink {
            to_worker: self.to_worker.clone(),
            from_worker: self.from_worker.clone(),
            generation: self.generation.clone(),
        }
    }
}

/// What the worker thread shares with its handle and the scheduler.
struct Shared {
    hooks: HookBank,
    status: Arc<WorkerStatus>,
    stop: Arc<AtomicBool>,
    generation: Arc<AtomicU32>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the thread; if the queue is full it is busy and sees the flag right after.
        let _ = self.to_worker.try_send(ToWorker::Stop);
        // A model still loading finishes alone; the host does not wait for it.
        self.thread.stop_within(TEARDOWN_WAIT);
    }
}

fn run(
    loader: GeneratorLoader,
    requests: Receiver<ToWorker>,
    answers: Sender<BarReady>,
    shared: Shared,
) {
    let Shared {
        hooks,
        status,
        stop,
        generation: current_generation,
    } = shared;
    let (mut generator, fallback) = loader();
    *status.generator.lock().unwrap() = generator.name().to_string();
    *status.fallback_reason.lock().unwrap() = fallback;
    let variations = Variations::load();
    if let Some(why) = variations.fallback_reason() {
        nice_plug::nice_log!("melodist: {why}");
        *status.vae_fallback_reason.lock().unwrap() = Some(why.to_string());
    }
    status.loaded.store(true, Ordering::Release);

    let mut inputs: VecDeque<InputNote> = VecDeque::with_capacity(INPUT_MEMORY);
    let mut input_version = 0u64;
    // The form's varied phrases (A′) use the same VAE as the loop's Vary and Morph.
    let mut form = FormPlayer::new(variations.vae().clone());
    let mut chords = LiveChords::default();
    // The meter of the latest request: where the bar lines of a live chord fall.
    let mut meter_now = crate::music::Meter::new(4, 4);
    let mut looper = LoopPlayer::new(variations, hooks);
    let mut inbox = Inbox::default();
    while !stop.load(Ordering::Relaxed) {
        if inbox.is_empty() {
            match requests.recv_timeout(Duration::from_millis(20)) {
                Ok(m) => inbox.push(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Everything already sent, so that a later request for a bar replaces an earlier one.
        while let Ok(m) = requests.try_recv() {
            inbox.push(m);
        }
        let Some(msg) = inbox.pop() else {
            continue;
        };
        match msg {
            ToWorker::Input(note) => {
                if inputs.len() == INPUT_MEMORY {
                    inputs.pop_front();
                }
                inputs.push_back(note);
                input_version += 1;
            }
            ToWorker::Stop => break,
            ToWorker::ClearInput => {
                inputs.clear();
                chords.clear();
                input_version += 1;
            }
            ToWorker::Chord { beat, chord } => chords.observe(beat, chord, meter_now),
            ToWorker::GaveUp {
                bar_index,
                waited_ms,
            } => {
                nice_plug::nice_log!(
                    "melodist: offline render gave up waiting for bar {bar_index} after {waited_ms} ms; bars not ready play silent until the worker catches up"
                );
            }
            ToWorker::Bar { generation, .. }
                if generation != current_generation.load(Ordering::Relaxed) => {} // stale
            ToWorker::Bar {
                epoch,
                bar_index,
                meter,
                settings,
                ..
            } => {
                meter_now = meter;
                let uses_input = settings.mode == Mode::Continue || settings.follow_input;
                let settings = effective_settings(settings, &inputs, &status);
                if settings.loop_bars > 0 {
                    // Loop mode plays the seed's hook; the producer's input does not reshape it.
                    let bar = looper.bar(generator.as_mut(), settings, meter, bar_index, &chords);
                    status.bars_generated.fetch_add(1, Ordering::Relaxed);
                    let _ = answers.try_send(BarReady {
                        epoch,
                        bar_index,
                        notes: BarNotes::from_slice(&bar),
                    });
                    continue;
                }
                let version = if uses_input { input_version } else { 0 };
                // Live chords matter only with Chord fit on; their version takes the top bits.
                let version = if settings.chord_fit > 0.0 {
                    version ^ (chords.version << 32)
                } else {
                    version
                };
                let context = if settings.mode == Mode::Continue {
                    context_notes(&inputs)
                } else {
                    Vec::new()
                };
                let bar = form.bar(
                    generator.as_mut(),
                    settings,
                    meter,
                    bar_index,
                    &context,
                    &chords,
                    version,
                );
                status
                    .last_phrase_us
                    .store(form.last_write_us, Ordering::Relaxed);
                status.bars_generated.fetch_add(1, Ordering::Relaxed);
                // If the audio thread is not draining, dropping this answer is correct: it asks
                // again for a bar that is late (real time) or it gave up on (offline).
                let _ = answers.try_send(BarReady {
                    epoch,
                    bar_index,
                    notes: BarNotes::from_slice(&bar),
                });
            }
        }
    }
}

/// The worker's queue: messages in the order sent, except that a bar request replaces any
/// earlier request for the same bar. The scheduler accepts only a bar's latest request, so
/// the earlier one would be written for nothing; when requests come faster than phrases
/// (a meter or setting changing every block) they would pile up to the channel's capacity,
/// and real time would stay silent, or an offline render wait, until all were written.
#[derive(Default)]
struct Inbox {
    pending: VecDeque<ToWorker>,
}

impl Inbox {
    fn push(&mut self, msg: ToWorker) {
        if let ToWorker::Bar { bar_index, .. } = msg {
            self.pending
                .retain(|m| !matches!(m, ToWorker::Bar { bar_index: b, .. } if *b == bar_index));
        }
        self.pending.push_back(msg);
    }

    fn pop(&mut self) -> Option<ToWorker> {
        self.pending.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Applies "follow input": the tonic and flavour come from the producer's recent notes.
fn effective_settings(
    mut s: GenSettings,
    inputs: &VecDeque<InputNote>,
    status: &WorkerStatus,
) -> GenSettings {
    let mut hist = [0f32; 12];
    for n in inputs {
        hist[n.pitch as usize % 12] += 1.0;
    }
    let detected = (inputs.len() >= 4).then(|| detect_key(&hist)).flatten();
    if let Some(k) = detected {
        use nice_plug::prelude::Enum;
        status.detected_key.store(
            k.tonic.semitone() as u32 * 16 + k.scale.to_index() as u32,
            Ordering::Relaxed,
        );
        if s.follow_input {
            // Keep the producer's scale colour when it matches the detected major/minor mode.
            let scale = if s.key.scale.is_minor() == k.scale.is_minor()
                && s.key.scale != Scale::Chromatic
            {
                s.key.scale
            } else {
                k.scale
            };
            s.key = Key::new(k.tonic, scale);
        }
    }
    s
}

/// Notes struck closer together than this (in beats) count as one chord.
pub const CHORD_WINDOW: f64 = 0.06;

/// The producer's recent notes as generator context (inter-onset durations). What they
/// play may be polyphonic: each chord (notes struck within `CHORD_WINDOW`) is reduced to
/// its highest note, the melody line a listener hears on top.
fn context_notes(inputs: &VecDeque<InputNote>) -> Vec<ContextNote> {
    let mut line: Vec<(f64, u8)> = Vec::with_capacity(inputs.len());
    for n in inputs {
        match line.last_mut() {
            Some(top) if (n.beat - top.0).abs() < CHORD_WINDOW => top.1 = top.1.max(n.pitch),
            _ => line.push((n.beat, n.pitch)),
        }
    }
    (0..line.len())
        .map(|i| ContextNote {
            pitch: line[i].1,
            duration: line
                .get(i + 1)
                .map_or(1.0, |next| (next.0 - line[i].0).clamp(0.125, 4.0)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_request_for_a_bar_replaces_the_earlier_one() {
        let bar = |bar_index: i64, epoch: u32| ToWorker::Bar {
            epoch,
            generation: 0,
            bar_index,
            meter: crate::music::Meter::new(4, 4),
            settings: GenSettings::default(),
        };
        let mut inbox = Inbox::default();
        inbox.push(bar(1, 1));
        inbox.push(bar(2, 1));
        inbox.push(ToWorker::ClearInput);
        inbox.push(bar(1, 2));
        let order: Vec<String> = std::iter::from_fn(|| inbox.pop())
            .map(|m| match m {
                ToWorker::Bar {
                    bar_index, epoch, ..
                } => format!("bar {bar_index} epoch {epoch}"),
                other => format!("{other:?}"),
            })
            .collect();
        // Bar 1's first request is gone; the rest keep the order they were sent in.
        assert_eq!(order, ["bar 2 epoch 1", "ClearInput", "bar 1 epoch 2"]);
        assert!(inbox.is_empty());
    }

    #[test]
    fn chords_become_their_top_note() {
        let played = |beat: f64, pitch: u8| InputNote {
            pitch,
            velocity: 90,
            beat,
        };
        // A C chord (slightly spread), a single D, then an F chord strummed upwards.
        let inputs: VecDeque<InputNote> = [
            played(0.0, 64),
            played(0.01, 72),
            played(0.02, 60),
            played(1.0, 62),
            played(1.5, 65),
            played(1.53, 69),
            played(1.55, 77),
        ]
        .into_iter()
        .collect();
        let line: Vec<(u8, f64)> = context_notes(&inputs)
            .iter()
            .map(|c| (c.pitch, c.duration))
            .collect();
        assert_eq!(line, vec![(72, 1.0), (62, 0.5), (77, 1.0)]);
    }

    #[test]
    fn follow_input_detects_the_key() {
        let status = WorkerStatus {
            detected_key: AtomicU32::new(u32::MAX),
            ..Default::default()
        };
        let inputs: VecDeque<InputNote> = [57u8, 60, 64, 69, 72, 76, 69, 64, 62, 59, 57]
            .iter()
            .enumerate()
            .map(|(i, &p)| InputNote {
                pitch: p,
                velocity: 90,
                beat: i as f64 * 0.5,
            })
            .collect();
        let s = GenSettings {
            follow_input: true,
            key: Key::new(crate::music::PitchClass::C, Scale::Dorian),
            ..Default::default()
        };
        let e = effective_settings(s, &inputs, &status);
        assert_eq!(e.key, Key::new(crate::music::PitchClass::A, Scale::Dorian));
        assert_eq!(
            status.detected_key(),
            Some(Key::new(crate::music::PitchClass::A, Scale::Minor))
        );
        let fixed = effective_settings(
            GenSettings {
                follow_input: false,
                ..s
            },
            &inputs,
            &status,
        );
        assert_eq!(fixed.key, s.key);
    }
}
