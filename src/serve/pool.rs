//! The decode pool: a few plain threads that own the models and run decode jobs, fed by a
//! **bounded** queue. Decoding is CPU work of a few to a few hundred milliseconds; on the
//! async runtime's threads it would stall every other connection, so handlers only queue
//! a job and await its answer.
//!
//! - A full queue is refused at once ([`ApiError::busy`], a 429 with `Retry-After`)
//!   instead of growing: the client learns the server is at capacity while its request
//!   is still cheap to retry, and memory and latency stay bounded.
//! - A job that panics becomes a 500 for its own request only: the panic is caught on the
//!   decode thread, the job's answer channel is dropped (the handler reads that as an
//!   internal error), and the thread rebuilds its models and takes the next job.

use super::error::ApiError;
use super::models::Worker;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use prometheus::{Histogram, IntGauge};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A unit of work for a decode thread.
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// Builds one decode thread's models (called once per thread, and again after a panic).
pub type WorkerFactory = Arc<dyn Fn() -> anyhow::Result<Worker> + Send + Sync>;

/// Sizes of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Decode threads (one per core is the most that helps).
    pub threads: usize,
    /// Jobs that may wait for a thread; one more is answered with a 429.
    pub queue: usize,
}

/// Handle to the pool; dropping the last one lets the threads finish and exit.
pub struct DecodePool {
    jobs: Sender<Job>,
    queue_depth: IntGauge,
    batch_size: Histogram,
}

impl DecodePool {
    /// Builds every thread's models first (so a model that cannot load fails the start,
    /// with its reason), then starts the threads.
    pub fn start(
        config: PoolConfig,
        factory: WorkerFactory,
        queue_depth: IntGauge,
        batch_size: Histogram,
    ) -> anyhow::Result<Self> {
        let (jobs, queue) = bounded::<Job>(config.queue.max(1));
        for i in 0..config.threads.max(1) {
            let worker = factory()?;
            let (queue, factory, depth) = (queue.clone(), factory.clone(), queue_depth.clone());
            std::thread::Builder::new()
                .name(format!("melodist-decode-{i}"))
                .spawn(move || run(worker, queue, factory, depth))?;
        }
        Ok(Self {
            jobs,
            queue_depth,
            batch_size,
        })
    }

    /// Queues `job` for a decode thread and returns where its answer will arrive. The
    /// answer channel closes without a value if the job panicked.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let batch_size = self.batch_size.clone();
        let boxed: Job = Box::new(move |worker| {
            batch_size.observe(1.0);
            // The receiver may be gone (client disconnected): nothing to do then.
            let _ = tx.send(job(worker));
        });
        self.queue_depth.inc();
        match self.jobs.try_send(boxed) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                self.queue_depth.dec();
                Err(ApiError::busy(1))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queue_depth.dec();
                Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                ))
            }
        }
    }

    /// Runs `job` on a decode thread and waits for its answer without blocking the
    /// runtime; a panic in the job is a 500.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.submit(job)?.await.map_err(|_| {
            ApiError::internal(
                "decoding this request failed on the server (an internal error); other requests are not affected",
            )
        })?
    }
}

/// A decode thread: take a job, run it, survive it.
fn run(mut worker: Worker, queue: Receiver<Job>, factory: WorkerFactory, depth: IntGauge) {
    while let Ok(job) = queue.recv() {
        depth.dec();
        if catch_unwind(AssertUnwindSafe(|| job(&mut worker))).is_err() {
            // The models' scratch state may be half-written: start from fresh copies.
            match factory() {
                Ok(fresh) => worker = fresh,
                Err(err) => eprintln!(
                    "melodist serve: could not rebuild a decode thread's models after a panic ({err:#}); keeping the old ones"
                ),
            }
        }
    }
}
