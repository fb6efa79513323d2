//! The threads a training run computes on: a rayon pool of its own, with the training loop
//! running on one of its workers.
//!
//! Why: a training step is hundreds of tensor ops, and the CPU backend splits every large
//! enough one (matrix products, element-wise ops, vislang's row kernels) across rayon's
//! threads. Called from a thread outside the pool, each such op wakes pool workers and puts
//! the caller to sleep until they finish: the classifier's step made about 900 context
//! switches, 25,000 a second on 2 cores. Called from a worker, the op runs its first piece on
//! the calling thread while idle workers steal the rest, and nobody sleeps between ops.
//! With `examples/profile_step` on a 2-core Intel Xeon (alternating runs), context switches
//! fall from ~200,000 to ~16,000 in 8 s of classifier steps, and examples/s rise 10-35% in
//! every family (classifier 780-900 -> 980-1,010, LXMERT 520-545 -> 650-735, VQ-VAE 280-295
//! -> 325-330, DALL-E 290-355 -> 360-380).
//!
//! A pool per run also lets runs trained side by side (`classify --jobs`) split the cores
//! between them instead of queueing on one shared pool. The number of threads does not change
//! results: every parallel op here splits its work at sizes fixed by the data, not by the
//! thread count, and none splits a sum (tested in `tests/engine.rs`).

use crate::train::TrainError;

/// The number of cores this process may use (1 if the system does not say).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A run's compute pool.
pub struct ComputeThreads {
    pool: rayon::ThreadPool,
}

impl ComputeThreads {
    /// A pool of `threads` workers (0: one per core).
    pub fn new(threads: usize) -> Result<Self, TrainError> {
        let threads = if threads == 0 { cores() } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|k| format!("vislang-compute-{k}"))
            .build()
            .map_err(|e| TrainError::Config(format!("cannot start {threads} threads: {e}")))?;
        Ok(Self { pool })
    }

    /// The pool's number of workers.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on one of the pool's workers, so that every parallel op inside it runs on
    /// this pool; returns its result.
    pub fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}
