//! What a run is given besides its task and budget (how it is shown and fed, none of which
//! changes results), and what it returns.

use burn::module::AutodiffModule;
use indicatif::MultiProgress;

use crate::train::engine::run_dir::EpochLog;
use crate::train::engine::TrainingTask;

/// How a run is shown and fed; none of it changes results.
pub struct RunDisplay<'a> {
    /// Names the run in log lines and errors ("joint seed 0").
    pub name: String,
    pub progress: &'a MultiProgress,
    pub feed: Feed,
}

/// How a run is shown and fed, the same for every experiment; changes no result. The default
/// shows no progress bars and feeds as [`Feed::default`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Progress bars (epoch summaries are printed either way).
    pub show_progress: bool,
    /// How the loop reads losses and gets its batches.
    pub feed: Feed,
}

/// How the loop reads losses and gets its batches; none of it changes results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Per-step losses are read from the device (one sync) and logged every this many steps.
    pub log_every: usize,
    /// Threads making batches ahead of the step ([`crate::train::engine::batch_loader`]); 0 makes them in
    /// the loop.
    pub loader_threads: usize,
    /// Threads the step's tensor ops run on ([`ComputeThreads`](crate::train::engine::compute_threads::ComputeThreads)); 0: one per core.
    pub compute_threads: usize,
}

impl Default for Feed {
    /// Losses read every 50 steps; one loader thread (on a CPU the step needs the cores);
    /// compute on every core.
    fn default() -> Self {
        Self {
            log_every: 50,
            loader_threads: 1,
            compute_threads: 0,
        }
    }
}

/// A finished training run: the trained model (without autodiff) and its epochs.
pub struct Trained<M, E> {
    pub model: M,
    pub history: Vec<EpochLog<E>>,
    pub n_params: usize,
}

impl<M, E> Trained<M, E> {
    /// Training examples per second over all epochs (of this process and earlier ones).
    pub fn samples_per_second(&self, n_train: usize) -> f64 {
        let seconds: f64 = self.history.iter().map(|h| h.train_seconds).sum();
        (n_train * self.history.len()) as f64 / seconds.max(1e-9)
    }

    /// The last epoch's log.
    pub fn last(&self) -> &EpochLog<E> {
        self.history
            .last()
            .expect("a budget has at least one epoch")
    }
}

/// What [`train`] returns for task `T`.
pub type TrainedOf<B, T> = Trained<
    <<T as TrainingTask<B>>::Model as AutodiffModule<B>>::InnerModule,
    <T as TrainingTask<B>>::Evaluation,
>;
