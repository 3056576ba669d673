//! The decode pool: a few plain threads that own the models and run decode jobs, fed by a
//! **bounded** queue. Decoding is CPU work of a few to a few hundred milliseconds; on the
//! async runtime's threads it would stall every other connection, so handlers only queue
//! a job and await its answer.
//!
//! - Each thread runs up to `batch` jobs at once, as coroutines of a
//!   [`StepScheduler`]: whenever all of them wait for a network step, one batched step
//!   serves them all (dynamic batching, see `model::batcher`). A job that arrives while
//!   others decode joins them at their next step; nothing waits for a batch to fill.
//! - A full queue is refused at once ([`ApiError::busy`], a 429 with `Retry-After`)
//!   instead of growing: the client learns the server is at capacity while its request
//!   is still cheap to retry, and memory and latency stay bounded.
//! - A job that panics becomes a 500 for its own request only: the panic is caught on the
//!   decode thread, the job's answer channel is dropped (the handler reads that as an
//!   internal error), and its models are replaced by fresh copies.
//! - New models ([`DecodePool::swap`]) are taken by each thread between jobs, once the
//!   jobs it is running have ended: a request is decoded wholly by one version, and one
//!   batched step never mixes two models.

use super::error::ApiError;
use super::models::Worker;
use crate::model::batcher::{Finished, StepScheduler};
use crate::model::lstm_fast::FastLstm;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use prometheus::{Histogram, IntGauge};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;

/// A unit of work for a decode thread.
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// Builds one job slot's models (as a thread starts, and again after a panic).
pub type WorkerFactory = Arc<dyn Fn() -> anyhow::Result<Worker> + Send + Sync>;

/// Sizes of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Decode threads (one per core is the most that helps).
    pub threads: usize,
    /// Jobs one thread decodes at once, their steps batched; 1 decodes one at a time.
    pub batch: usize,
    /// Jobs that may wait for a thread; one more is answered with a 429.
    pub queue: usize,
}

/// Handle to the pool; dropping the last one lets the threads finish and exit.
pub struct DecodePool {
    jobs: Sender<Job>,
    queue_depth: IntGauge,
    models: Arc<Current>,
}

/// The models the threads are to run, and a number that changes with them.
struct Current {
    id: AtomicU64,
    models: RwLock<(WorkerFactory, Arc<FastLstm>)>,
}

impl Current {
    fn get(&self) -> (u64, WorkerFactory, Arc<FastLstm>) {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: `swap` changes both together.
        let id = self.id.load(Ordering::Acquire);
        (id, models.0.clone(), models.1.clone())
    }
}

/// What a decode thread needs besides its queue.
struct Thread {
    current: Arc<Current>,
    slots: usize,
    depth: IntGauge,
    batch_size: Histogram,
}

impl DecodePool {
    /// Builds every thread's models first (so a model that cannot load fails the start,
    /// with its reason), then starts the threads. `model` is the neural decoder the
    /// batched steps run (the one the factory's generators share).
    pub fn start(
        config: PoolConfig,
        factory: WorkerFactory,
        model: Arc<FastLstm>,
        queue_depth: IntGauge,
        batch_size: Histogram,
    ) -> anyhow::Result<Self> {
        let (jobs, queue) = bounded::<Job>(config.queue.max(1));
        let current = Arc::new(Current {
            id: AtomicU64::new(0),
            models: RwLock::new((factory.clone(), model)),
        });
        for i in 0..config.threads.max(1) {
            let slots = config.batch.max(1);
            let workers = (0..slots)
                .map(|_| factory())
                .collect::<anyhow::Result<_>>()?;
            let thread = Thread {
                current: current.clone(),
                slots,
                depth: queue_depth.clone(),
                batch_size: batch_size.clone(),
            };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("melodist-decode-{i}"))
                .spawn(move || thread.run(workers, queue))?;
        }
        Ok(Self {
            jobs,
            queue_depth,
            models: current,
        })
    }

    /// Decodes with these models from now on: each thread takes them once the jobs it is
    /// running have ended (jobs already queued run on the new ones).
    pub fn swap(&self, factory: WorkerFactory, model: Arc<FastLstm>) {
        let mut models = self
            .models
            .models
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *models = (factory, model);
        self.models.id.fetch_add(1, Ordering::AcqRel);
    }

    /// Queues `job` for a decode thread and returns where its answer will arrive. The
    /// answer channel closes without a value if the job panicked.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let boxed: Job = Box::new(move |worker| {
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

impl Thread {
    /// Takes jobs while it has free slots (waiting for one only when idle), runs them as
    /// coroutines, and steps all of them together until each ends; survives panics.
    fn run(self, mut free: Vec<Worker>, queue: Receiver<Job>) {
        let (mut id, mut factory, model) = self.current.get();
        let mut scheduler = StepScheduler::new(model);
        loop {
            while scheduler.waiting() < self.slots {
                let job = if scheduler.waiting() == 0 {
                    let Ok(job) = queue.recv() else {
                        return; // the pool is gone
                    };
                    if self.current.id.load(Ordering::Acquire) != id {
                        // New models, and nothing running on the old ones: take them.
                        let model;
                        (id, factory, model) = self.current.get();
                        scheduler = StepScheduler::new(model);
                        free.clear();
                        release_freed_memory();
                    }
                    job
                } else if self.current.id.load(Ordering::Acquire) != id {
                    break; // let the running jobs end first
                } else {
                    match queue.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                };
                self.depth.dec();
                let Some(mut worker) = free.pop().or_else(|| fresh_worker(&factory)) else {
                    continue; // dropping the job answers its request with a 500
                };
                let decode = move || {
                    job(&mut worker);
                    worker
                };
                if let Some(end) = scheduler.start(decode) {
                    settle(end, &mut free);
                }
            }
            if scheduler.waiting() == 0 {
                continue;
            }
            let (size, ended) = scheduler.step();
            self.batch_size.observe(size as f64);
            for end in ended {
                settle(end, &mut free);
            }
        }
    }
}

/// Models for a slot that has none yet: after a swap, or after its last job panicked
/// (its scratch state may be half-written).
fn fresh_worker(factory: &WorkerFactory) -> Option<Worker> {
    factory()
        .map_err(|err| {
            eprintln!("melodist serve: could not build a decode slot's models ({err:#})")
        })
        .ok()
}

/// Hands memory freed by replaced models back to the system. glibc keeps freed blocks
/// in its per-thread arenas (a model's matrices fall below its adaptive mmap threshold),
/// so without this every model swap raised the resident size by about a model's worth
/// (soak: 53 → 67 → 98 MB over two swaps). The last holder of the old models may be
/// any decode thread or the reload, so each calls it once after letting go.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim has no preconditions; it only returns free pages.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// A finished job gives its models back; a panicked one's are dropped.
fn settle(end: Finished<Worker>, free: &mut Vec<Worker>) {
    if let Ok(worker) = end {
        free.push(worker);
    }
}
