//! Background threads that never hold up the host.
//!
//! A host destroys a plugin on its main thread and expects it back at once (≤ 50 ms), but
//! our threads may be busy when that happens: the worker loading its model, the companion
//! refitting suggestions or committing the session log. [`Background::stop_within`] waits
//! a bounded time for the thread to finish, then lets it finish on its own (it has already
//! been told to stop, and every one of our threads exits after its current step).

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a plugin teardown waits for one of its threads.
pub const TEARDOWN_WAIT: Duration = Duration::from_millis(15);

pub struct Background {
    handle: Option<JoinHandle<()>>,
    /// Disconnects when the thread's closure returns (its sender is dropped there).
    done: Receiver<()>,
}

impl Background {
    pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let (finished, done) = bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _finished = finished;
                f();
            })?;
        Ok(Self {
            handle: Some(handle),
            done,
        })
    }

    /// After the thread was told to stop: joins it if it finishes within `limit`, else
    /// detaches it to finish its current step alone. Returns whether it was joined.
    pub fn stop_within(&mut self, limit: Duration) -> bool {
        let Some(handle) = self.handle.take() else {
            return true;
        };
        match self.done.recv_timeout(limit) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                let _ = handle.join();
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn joins_a_quick_thread_and_detaches_a_busy_one() {
        let mut quick = Background::spawn("quick", || {}).unwrap();
        assert!(quick.stop_within(Duration::from_secs(5)));

        let mut busy =
            Background::spawn("busy", || std::thread::sleep(Duration::from_millis(500))).unwrap();
        let started = Instant::now();
        assert!(!busy.stop_within(Duration::from_millis(10)));
        assert!(started.elapsed() < Duration::from_millis(400));
    }
}
