//! Batches made ahead of the step: background threads assemble each step's batch (pixels
//! copied from the memory-mapped image cache, captions chosen and masked, tensors made on the
//! device) into bounded queues while the training loop computes the step before it. The loop
//! only waits when the next batch is not ready, and [`BatchLoader::waited`] says for how long:
//! the engine logs it per epoch as `data_wait_seconds`.
//!
//! With `threads` loaders, thread `t` makes steps `t`, `t + threads`, .. into its own queue and
//! the loop reads the queues in turn, so batches arrive in step order. Each batch is made from
//! its step's own seed, so what a run computes does not depend on the loader (tests/engine.rs
//! trains with one and two threads against the same run).
//!
//! With no threads, each batch is made on the loop's own thread when it is asked for: on a
//! CPU whose cores the step's kernels already fill, a loader thread only competes with them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::train::TrainError;

/// Ready batches each thread's queue holds. Two keep the next step fed when one batch takes
/// as long as a step to make; more would only hold memory.
pub const QUEUE_DEPTH: usize = 2;

/// Where the batches come from.
enum Source<'scope, Batch> {
    /// One queue per loader thread, read in turn.
    Queues(Vec<Receiver<Result<Batch, TrainError>>>),
    /// Made on the loop's thread when asked for, up to this many steps.
    Inline {
        make: Box<dyn Fn(usize) -> Result<Batch, TrainError> + 'scope>,
        steps: usize,
    },
}

/// The receiving end: the steps' batches in order.
pub struct BatchLoader<'scope, Batch> {
    source: Source<'scope, Batch>,
    next_step: usize,
    waited: Duration,
}

impl<'scope, Batch: Send + 'scope> BatchLoader<'scope, Batch> {
    /// Starts `threads` threads in `scope` that make `make(0)`, `make(1)`, ..
    /// `make(steps - 1)` and queue them. They stop early when the loader is dropped, or after
    /// the first error. With `threads` 0 no thread starts: [`BatchLoader::next_batch`] makes
    /// each batch itself.
    pub fn spawn<'env, F>(
        scope: &'scope Scope<'scope, 'env>,
        steps: usize,
        threads: usize,
        make: F,
    ) -> Self
    where
        F: Fn(usize) -> Result<Batch, TrainError> + Send + Sync + 'scope,
    {
        if threads == 0 {
            return Self {
                source: Source::Inline {
                    make: Box::new(make),
                    steps,
                },
                next_step: 0,
                waited: Duration::ZERO,
            };
        }
        let make = Arc::new(make);
        let threads = threads.clamp(1, steps.max(1));
        let queues = (0..threads)
            .map(|first| {
                let (sender, receiver) = sync_channel(QUEUE_DEPTH);
                let make = Arc::clone(&make);
                scope.spawn(move || {
                    for step in (first..steps).step_by(threads) {
                        let batch =
                            catch_unwind(AssertUnwindSafe(|| make(step))).unwrap_or_else(|panic| {
                                Err(TrainError::Config(format!(
                                    "making the batch of step {} failed: {}",
                                    step + 1,
                                    panic_message(panic.as_ref())
                                )))
                            });
                        let failed = batch.is_err();
                        // A send fails when the training loop has stopped: nothing is left to do.
                        if sender.send(batch).is_err() || failed {
                            return;
                        }
                    }
                });
                receiver
            })
            .collect();
        Self {
            source: Source::Queues(queues),
            next_step: 0,
            waited: Duration::ZERO,
        }
    }

    /// The next step's batch, waiting for it if it is not made yet (made here, without
    /// loader threads).
    pub fn next_batch(&mut self) -> Result<Batch, TrainError> {
        let stopped =
            || TrainError::Config("the batch loader stopped before the epoch's last step".into());
        let started = Instant::now();
        let batch = match &self.source {
            Source::Queues(queues) => queues[self.next_step % queues.len()]
                .recv()
                .unwrap_or_else(|_| Err(stopped())),
            Source::Inline { make, steps } if self.next_step < *steps => make(self.next_step),
            Source::Inline { .. } => Err(stopped()),
        };
        self.waited += started.elapsed();
        self.next_step += 1;
        batch
    }

    /// Time spent in [`BatchLoader::next_batch`] waiting for batches not yet made (all of
    /// the batches' making, without loader threads).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (_, Some(message)) => message,
        _ => "a panic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn batches_arrive_in_step_order() {
        for threads in [0, 1, 2, 3, 10] {
            std::thread::scope(|scope| {
                let mut loader = BatchLoader::spawn(scope, 7, threads, |step| Ok(step * step));
                let got: Vec<usize> = (0..7).map(|_| loader.next_batch().unwrap()).collect();
                assert_eq!(got, vec![0, 1, 4, 9, 16, 25, 36], "{threads} threads");
                // After the last step the loader is done: asking again is an error, not a hang.
                assert!(loader.next_batch().is_err());
            });
        }
    }

    #[test]
    fn the_next_batch_is_made_while_the_step_runs() {
        let (started, started_rx) = channel();
        std::thread::scope(|scope| {
            let mut loader = BatchLoader::spawn(scope, 3, 1, move |step| {
                started.send(step).unwrap();
                Ok(step)
            });
            assert_eq!(loader.next_batch().unwrap(), 0);
            // The "step" of batch 0 has not ended, and batch 1 is being made already.
            let mut seen = Vec::new();
            while !seen.contains(&1) {
                let step = started_rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("batch 1 started while batch 0 was in use");
                seen.push(step);
            }
            assert_eq!(loader.next_batch().unwrap(), 1);
        });
    }

    #[test]
    fn an_error_or_a_panic_stops_the_loader_and_reaches_the_loop() {
        std::thread::scope(|scope| {
            let mut loader = BatchLoader::spawn(scope, 5, 1, |step| match step {
                2 => Err(TrainError::Config("feature file truncated".into())),
                _ => Ok(step),
            });
            assert_eq!(loader.next_batch().unwrap(), 0);
            assert_eq!(loader.next_batch().unwrap(), 1);
            let error = loader.next_batch().unwrap_err().to_string();
            assert!(error.contains("feature file truncated"), "{error}");
            assert!(loader.next_batch().is_err());

            let mut loader = BatchLoader::<usize>::spawn(scope, 5, 2, |step| match step {
                1 => panic!("index out of range"),
                _ => Ok(step),
            });
            assert_eq!(loader.next_batch().unwrap(), 0);
            let error = loader.next_batch().unwrap_err().to_string();
            assert!(
                error.contains("step 2") && error.contains("index out of range"),
                "{error}"
            );
        });
    }

    #[test]
    fn dropping_the_loader_stops_its_thread() {
        // The scope joins the loader's thread: this returns only if it stopped.
        std::thread::scope(|scope| {
            let mut loader = BatchLoader::spawn(scope, usize::MAX, 2, Ok);
            assert_eq!(loader.next_batch().unwrap(), 0);
        });
    }
}
