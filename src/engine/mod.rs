//! The real-time engine.
//!
//! Two halves talk through two preallocated bounded crossbeam channels:
//! - [`scheduler::Scheduler`] lives on the audio thread. Each block it asks for the bars it
//!   will soon need (`try_send`), takes finished bars (`try_recv`), and turns their beat-time
//!   notes into sample-accurate note events for the current transport. It never allocates,
//!   locks or blocks (except in offline render, where it may wait for the worker).
//! - [`worker::Worker`] owns the `Generator` on its own thread and writes phrases ahead of
//!   the playhead.

pub mod chords;
pub mod messages;
pub mod monitor;
pub mod scheduler;
pub mod thread;
pub mod worker;

pub use messages::{BarNotes, BarReady, InputNote, MAX_NOTES_PER_BAR, ToWorker};
pub use monitor::{EngineView, MonitorEvent, PlayedNote};
pub use scheduler::{BlockTransport, OutEvent, OutKind, Quantize, Scheduler};
pub use worker::{Worker, WorkerLink, WorkerStatus};
