//! Records a session from the audio thread without ever blocking it.
//!
//! The audio thread holds a [`RecorderSender`] and calls [`RecorderSender::record`] with a
//! small `Copy` event: a `try_send` into a preallocated bounded crossbeam channel, no
//! allocation, no lock, no clock read. Presets travel as their index in the preset library,
//! not as strings. A background thread owned by [`SessionRecorder`] timestamps the events,
//! maps indices to preset ids and writes them to SQLite. If the queue is ever full the event
//! is dropped and counted, never waited for.
//!
//! Only `Start` opens a session: events that arrive while none is open are not written (no
//! phantom sessions with a made-up context). What to send when is decided by
//! [`super::SessionTracker`].

use super::{Event, EventKind, SessionContext, SessionDb};
use crate::music::{Key, Meter};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the audio thread reports. Plain `Copy` data, a few bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecorderEvent {
    /// Transport started / plugin activated: opens a session (closing any open one).
    Start {
        tempo: f32,
        meter: Meter,
        key: Option<Key>,
    },
    /// New facts about the running session: host tempo or meter changed, key detected, input
    /// statistics updated. Logged as a `context` event; facts the session did not know at its
    /// start (key, input statistics) are also filled into the session itself.
    Context {
        tempo: f32,
        meter: Meter,
        key: Option<Key>,
        input_density: Option<f32>,
        input_register: Option<f32>,
    },
    /// Preset `preset` (library index) was active for `seconds`.
    PresetUsed { preset: u16, seconds: f32 },
    /// Feedback about the phrase generated with preset `preset`.
    Feedback { kind: EventKind, preset: u16 },
    /// Closes the session.
    End,
}

/// The audio thread's end of the queue. Cheap to clone.
#[derive(Clone)]
pub struct RecorderSender {
    tx: Sender<RecorderEvent>,
    dropped: Arc<AtomicU64>,
}

impl RecorderSender {
    /// Queues an event without blocking or allocating. Returns `false` (and counts it) when
    /// the queue is full or the writer is gone.
    #[inline]
    pub fn record(&self, event: RecorderEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Owns the writer thread; dropping it flushes the queue, closes the session and joins.
pub struct SessionRecorder {
    sender: Option<RecorderSender>,
    worker: Option<JoinHandle<()>>,
    written: Arc<AtomicU64>,
    /// Tells the writer to finish even while audio-thread clones of the sender still exist.
    closing: Arc<AtomicBool>,
}

impl SessionRecorder {
    /// Starts the writer thread for `db_path`, recording as `producer`. `preset_ids[i]` is the
    /// id of the preset the audio thread calls `i`. `capacity` bounds the queue.
    pub fn start(
        db_path: PathBuf,
        producer: String,
        preset_ids: Vec<String>,
        capacity: usize,
    ) -> SessionRecorder {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let worker = {
            let (written, closing) = (written.clone(), closing.clone());
            std::thread::Builder::new()
                .name("melodist-sessions".into())
                .spawn(move || Writer::run(db_path, producer, preset_ids, rx, written, closing))
                .ok()
        };
        if worker.is_none() {
            eprintln!(
                "melodist: cannot start the session recorder thread; history is not recorded"
            );
        }
        let sender = Some(RecorderSender {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        });
        SessionRecorder {
            sender,
            worker,
            written,
            closing,
        }
    }

    /// A handle for the audio thread.
    pub fn sender(&self) -> RecorderSender {
        self.sender.clone().expect("sender lives until drop")
    }

    /// Events written to the database so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.sender
            .as_ref()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }

    /// Waits until everything queued so far is written; returns the written count.
    pub fn finish(mut self) -> u64 {
        self.shutdown();
        self.written()
    }

    fn shutdown(&mut self) {
        self.closing.store(true, Ordering::Release);
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Drop for SessionRecorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer thread's state.
struct Writer {
    db: SessionDb,
    producer: String,
    preset_ids: Vec<String>,
    /// Open session: (row id, start time in Unix ms, latest context).
    open: Option<(i64, i64, SessionContext)>,
}

/// How often an idle writer checks whether it should stop.
const POLL: Duration = Duration::from_millis(20);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Writer {
    fn run(
        db_path: PathBuf,
        producer: String,
        preset_ids: Vec<String>,
        rx: Receiver<RecorderEvent>,
        written: Arc<AtomicU64>,
        closing: Arc<AtomicBool>,
    ) {
        let db = match SessionDb::open(&db_path) {
            Ok(db) => db,
            Err(err) => {
                eprintln!("melodist: session history disabled: {err:#}");
                // Keep draining so senders never see a full queue for long.
                while !closing.load(Ordering::Acquire) {
                    let _ = rx.recv_timeout(POLL);
                }
                return;
            }
        };
        if let Some(note) = &db.recovered {
            eprintln!("melodist: {note}");
        }
        let mut writer = Writer {
            db,
            producer,
            preset_ids,
            open: None,
        };
        // Until asked to close (or every sender is gone), then until the queue is empty.
        loop {
            let event = match rx.recv_timeout(POLL) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) if !closing.load(Ordering::Acquire) => continue,
                Err(_) => break,
            };
            match writer.write(event) {
                Ok(true) => {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(err) => eprintln!("melodist: could not record a session event: {err:#}"),
            }
            if closing.load(Ordering::Acquire) && rx.is_empty() {
                break;
            }
        }
        if let Err(err) = writer.close() {
            eprintln!("melodist: could not close the session: {err:#}");
        }
    }

    /// Writes one event; `Ok(false)` when it was not written because no session is open.
    fn write(&mut self, event: RecorderEvent) -> anyhow::Result<bool> {
        match event {
            RecorderEvent::Start { tempo, meter, key } => {
                self.close()?;
                let ctx = SessionContext {
                    tempo,
                    meter,
                    key,
                    ..SessionContext::default()
                };
                self.open_session(ctx)?;
            }
            RecorderEvent::Context {
                tempo,
                meter,
                key,
                input_density,
                input_register,
            } => {
                let Some((id, started, ctx)) = self.open.as_mut() else {
                    return Ok(false);
                };
                let (id, started) = (*id, *started);
                let new = ctx.observe(SessionContext {
                    tempo,
                    meter,
                    key,
                    input_density,
                    input_register,
                });
                let filled = ctx.filled_from(&new);
                if filled != *ctx {
                    *ctx = filled;
                    self.db.update_context(id, &filled)?;
                }
                self.db.add_event(
                    id,
                    &Event {
                        t_ms: now_ms() - started,
                        kind: EventKind::Context,
                        preset: None,
                        seconds: None,
                        context: Some(new),
                    },
                )?;
            }
            RecorderEvent::PresetUsed { preset, seconds } => {
                return self.event(EventKind::PresetUsed, preset, Some(seconds));
            }
            RecorderEvent::Feedback { kind, preset } => return self.event(kind, preset, None),
            RecorderEvent::End => {
                if self.open.is_none() {
                    return Ok(false);
                }
                self.close()?
            }
        }
        Ok(true)
    }

    fn event(
        &mut self,
        kind: EventKind,
        preset: u16,
        seconds: Option<f32>,
    ) -> anyhow::Result<bool> {
        let Some((id, started, _)) = self.open else {
            return Ok(false);
        };
        let preset = Some(
            self.preset_ids
                .get(preset as usize)
                .cloned()
                .unwrap_or_else(|| format!("preset-{preset}")),
        );
        self.db.add_event(
            id,
            &Event {
                t_ms: now_ms() - started,
                kind,
                preset,
                seconds,
                context: None,
            },
        )?;
        Ok(true)
    }

    fn open_session(&mut self, ctx: SessionContext) -> anyhow::Result<()> {
        let started = now_ms();
        let id = self.db.start_session(&self.producer, started, &ctx)?;
        self.open = Some((id, started, ctx));
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        if let Some((id, _, _)) = self.open.take() {
            self.db.end_session(id, now_ms())?;
        }
        Ok(())
    }
}
