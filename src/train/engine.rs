//! The one training engine. Every family (classifiers, LXMERT pretraining, the VQ-VAE, the
//! DALL-E decoder) is a [`TrainingTask`]: it says what a batch's loss is, what happens after
//! the optimizer step, and how to evaluate; [`train`] owns everything else, top to bottom:
//!
//! 1. resume from the run directory's last committed epoch (or start fresh);
//! 2. per epoch: shuffle with the epoch's seed; loader threads make each step's batch ahead
//!    of it, its random choices drawn from the step's own seed ([`super::batch_loader`]);
//!    per step take the loss, backward, clip, AdamW step with the warm-up/cosine learning
//!    rate, and the task's post-step hook;
//!    Under `--precision bf16|f16` the loss (and evaluation) runs inside
//!    [`crate::nn::autocast`], and f16 losses are scaled ([`super::mixed_precision`]);
//! 3. keep per-step losses on the device and read them every `log_every` steps (one sync),
//!    appending them to `metrics.jsonl` and stopping at the first non-finite value;
//! 4. evaluate on the held-out split, check the held-out metrics and the weights are finite,
//!    log (with the time the loop waited for batches), and commit the epoch (weights,
//!    optimizer, then `state.json`).
//!
//! [`train_on`] runs the same loop with one replica per device, each step's batch split
//! between them and the gradients summed ([`super::data_parallel`]).
//!
//! Random streams are per run: shuffling and batch draws come from seeds derived from
//! (run seed, epoch, step), so a resumed run repeats an uninterrupted one bit for bit. The
//! backend's own generator (dropout, dead-code re-seeding) is process-wide in Burn's CPU
//! backends; a task that draws from it ([`TrainingTask::uses_backend_random`]) reseeds it per
//! step while holding [`BACKEND_RANDOM`], so parallel runs never interleave their draws.

use std::time::Instant;

use crate::nn::{AutodiffBackend, Backend};
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::store::ModuleSnapshot;
use indicatif::MultiProgress;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::batch_loader::BatchLoader;
use super::budget::Budget;
use super::compute_threads::ComputeThreads;
use super::data_parallel::{
    self, all_reduce_gradients, all_reduce_losses, shards, Peer, ShardStep,
};
use super::metrics_log::MetricsLog;
use super::mixed_precision::MixedPrecision;
pub use super::run_dir::EpochEvaluation;
use super::run_dir::{EpochLog, RunDir, RunState};
use super::schedule::WarmupCosine;
use super::step_log::{LossSums, PendingSteps};
pub use super::step_log::{Losses, StepOutput};
use super::weights_check::first_non_finite_parameter;
use super::TrainError;
use crate::io::checkpoint::{assign_stable_param_ids, copy_weights};
use crate::io::progress;
use crate::nn::autocast;

pub use crate::nn::backend::BACKEND_RANDOM;

/// What a model family brings to the engine: only what is really its own.
pub trait TrainingTask<B: AutodiffBackend> {
    type Model: AutodiffModule<B> + ModuleSnapshot<B>;
    /// Passed from the loss to [`TrainingTask::after_step`].
    type Aux;
    type Evaluation: EpochEvaluation;

    /// Number of training examples (an epoch visits each once, in a shuffled order).
    fn n_train(&self) -> usize;

    /// Whether a step draws from the backend's generator (dropout, re-seeding codes).
    fn uses_backend_random(&self) -> bool;

    /// A step's examples as tensors on the device.
    type Batch: Send;

    /// The batch of the examples at `indices`; `rng` is this step's own generator, for the
    /// batch's random choices (caption choice, masking, caption dropout). The engine calls it
    /// ahead of the step on a loader thread ([`super::batch_loader`]), so it must not draw
    /// from the backend's generator.
    fn batch(
        &self,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self::Batch, TrainError>;

    /// The loss of a batch.
    fn loss(
        &self,
        model: &Self::Model,
        batch: Self::Batch,
    ) -> Result<StepOutput<B, Self::Aux>, TrainError>;

    /// Whether replicas on several devices can train this task, each on a shard of the
    /// batch (see [`super::data_parallel`]): not when [`TrainingTask::after_step`] updates
    /// the model from its shard's statistics alone.
    fn supports_data_parallel(&self) -> bool {
        true
    }

    /// Runs after the optimizer step (the VQ-VAE's EMA codebook update).
    fn after_step(&self, model: Self::Model, _aux: Self::Aux) -> Self::Model {
        model
    }

    /// Held-out evaluation after epoch `epoch` (1-based), writing any pictures it shows.
    fn evaluate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
        epoch: usize,
        device: &B::Device,
    ) -> Result<Self::Evaluation, TrainError>;

    /// Redraws the run's charts from the history so far.
    fn charts(&self, _history: &[EpochLog<Self::Evaluation>]) -> Result<(), TrainError> {
        Ok(())
    }
}

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
    /// Threads making batches ahead of the step ([`super::batch_loader`]); 0 makes them in
    /// the loop.
    pub loader_threads: usize,
    /// Threads the step's tensor ops run on ([`ComputeThreads`]); 0: one per core.
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

/// Builds a model with the backend seeded to `seed`, holding [`BACKEND_RANDOM`] until every
/// parameter has been materialised (Burn initialises parameters lazily, on first use) and given
/// a stable id, so that runs initialising on other threads cannot change its weights.
pub fn seeded_init<B: Backend, M: Module<B>>(
    seed: u64,
    device: &B::Device,
    init: impl FnOnce() -> M,
) -> M {
    let _guard = BACKEND_RANDOM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    assign_stable_param_ids(init())
}

/// The seed of an epoch's shuffling, or of one step's draws, derived from the run's seed.
pub fn derived_seed(run_seed: u64, stream: u64, index: u64) -> u64 {
    // SplitMix64 finaliser over the three inputs: nearby inputs give unrelated seeds.
    let mut z = run_seed
        .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const SHUFFLE_STREAM: u64 = 1;
const STEP_STREAM: u64 = 2;
const BACKEND_STREAM: u64 = 3;

/// The optimizer every family trains with.
pub type TrainingOptimizer<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// What a data-parallel replica keeps between steps.
type Replica<B, T> = (
    <T as TrainingTask<B>>::Model,
    TrainingOptimizer<<T as TrainingTask<B>>::Model, B>,
    MixedPrecision,
);

/// AdamW with the budget's weight decay and clipping (eps 1e-8, as PyTorch).
pub fn optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(
    budget: &Budget,
) -> TrainingOptimizer<M, B> {
    AdamWConfig::new()
        .with_weight_decay(budget.weight_decay as f32)
        .with_epsilon(1e-8)
        .with_grad_clipping(
            budget
                .grad_clip
                .map(|norm| GradientClippingConfig::Norm(norm as f32)),
        )
        .init()
}

/// The batch of the examples at `indices` for the step seeded `step_seed`: its random choices
/// come from the step's own stream, so it is the same batch whichever thread makes it.
pub fn step_batch<B, T>(
    task: &T,
    indices: &[usize],
    step_seed: u64,
    device: &B::Device,
) -> Result<T::Batch, TrainError>
where
    B: AutodiffBackend,
    T: TrainingTask<B>,
{
    let mut rng = StdRng::seed_from_u64(derived_seed(step_seed, STEP_STREAM, 0));
    task.batch(indices, &mut rng, device)
}

/// One optimisation step on `batch` (made by [`step_batch`] from the same `step_seed`): loss
/// (in the run's precision), backward, clipped AdamW step at `lr`, post-step hook. In f16 the
/// loss is scaled, and a step whose gradients overflow is skipped (the model comes back
/// unchanged). The training loop and the bench both time exactly this.
#[allow(clippy::too_many_arguments)]
pub fn step<B, T>(
    task: &T,
    model: T::Model,
    optimizer: &mut TrainingOptimizer<T::Model, B>,
    mixed: &mut MixedPrecision,
    batch: T::Batch,
    step_seed: u64,
    lr: f64,
    device: &B::Device,
    peer: Option<Peer>,
) -> Result<(T::Model, Losses<B::InnerBackend>), TrainError>
where
    B: AutodiffBackend,
    T: TrainingTask<B>,
{
    let backend_seed = derived_seed(step_seed, BACKEND_STREAM, 0);
    let with_backend_random = |f: &mut dyn FnMut()| {
        if task.uses_backend_random() {
            let _guard = BACKEND_RANDOM
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            B::seed(device, backend_seed);
            f()
        } else {
            f()
        }
    };
    let mut output = None;
    let mut batch = Some(batch);
    with_backend_random(&mut || {
        let batch = batch.take().expect("once");
        output = Some(autocast(mixed.precision, || task.loss(&model, batch)))
    });
    let StepOutput { losses, aux } = output.expect("the closure ran")?;
    let mut detached = Losses {
        total: losses.total.clone().inner(),
        parts: losses
            .parts
            .iter()
            .map(|(name, value)| (*name, value.clone().inner()))
            .collect(),
    };
    // A replica's shard counts by its share of the batch; the replicas' gradients are summed
    // (see `data_parallel`), before unscaling, so every replica skips the same f16 steps.
    let share = peer.map_or(1.0, |p| f64::from(p.share));
    let factor = share * mixed.scaler.as_ref().map_or(1.0, |s| s.scale);
    let objective = if factor == 1.0 {
        losses.total
    } else {
        losses.total.mul_scalar(factor)
    };
    let mut grads = GradientsParams::from_grads(objective.backward(), &model);
    if let Some(peer) = peer {
        grads = all_reduce_gradients::<B>(grads, peer)?;
        detached = all_reduce_losses(detached, peer)?;
    }
    if let Some(scaler) = &mut mixed.scaler {
        match scaler.unscale(&model, grads) {
            Some(unscaled) => grads = unscaled,
            None => return Ok((model, detached)), // overflow: skip, at a lower scale
        }
    }
    let model = optimizer.step(lr, model, grads);
    let (mut model, mut aux) = (Some(model), Some(aux));
    with_backend_random(&mut || {
        let stepped = task.after_step(model.take().expect("once"), aux.take().expect("once"));
        model = Some(stepped);
    });
    Ok((model.expect("the closure ran"), detached))
}

/// Times the engine's own training step ([`step`]) on `task`, keeping the model and the
/// optimizer between measurements, so a benchmark can interleave rounds with a reference.
/// Steps cycle through the training set in order.
pub struct StepTimer<'t, B: AutodiffBackend, T: TrainingTask<B>> {
    task: &'t T,
    model: Option<T::Model>,
    optimizer: TrainingOptimizer<T::Model, B>,
    mixed: MixedPrecision,
    batch_size: usize,
    steps_taken: usize,
    device: B::Device,
    /// The pool [`train`] would compute on, one thread per core.
    threads: std::sync::Arc<ComputeThreads>,
}

impl<'t, B: AutodiffBackend, T: TrainingTask<B>> StepTimer<'t, B, T> {
    /// A timer over `task`, starting from `model` with the optimizer `budget` describes.
    pub fn new(
        task: &'t T,
        model: T::Model,
        budget: &Budget,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            task,
            model: Some(model),
            optimizer: optimizer::<B, T::Model>(budget),
            mixed: MixedPrecision::new(budget.precision),
            batch_size: budget.batch_size,
            steps_taken: 0,
            device: device.clone(),
            threads: std::sync::Arc::new(ComputeThreads::new(Feed::default().compute_threads)?),
        })
    }

    /// Computes on a pool of `threads` threads (0: one per core) instead of one per core.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, TrainError> {
        self.threads = std::sync::Arc::new(ComputeThreads::new(threads)?);
        Ok(self)
    }

    /// The model as the steps so far have left it.
    pub fn into_model(self) -> T::Model {
        self.model.expect("a model between measurements")
    }

    /// Examples per second of the next `steps` steps. Call it once untimed first: the first
    /// steps absorb allocation, kernel compilation and autotuning.
    pub fn examples_per_second(&mut self, steps: usize) -> Result<f64, TrainError>
    where
        T: Sync,
        T::Model: Send,
    {
        let threads = self.threads.clone();
        threads.run(|| self.timed_steps(steps))
    }

    fn timed_steps(&mut self, steps: usize) -> Result<f64, TrainError> {
        let n = self.task.n_train().max(1);
        let started = Instant::now();
        let mut model = self.model.take().expect("a model between measurements");
        for k in 0..steps {
            let index = self.steps_taken;
            let indices: Vec<usize> = (0..self.batch_size)
                .map(|i| (index * self.batch_size + i) % n)
                .collect();
            let batch = step_batch::<B, T>(self.task, &indices, index as u64, &self.device)?;
            let (stepped, losses) = step::<B, T>(
                self.task,
                model,
                &mut self.optimizer,
                &mut self.mixed,
                batch,
                index as u64,
                1e-4,
                &self.device,
                None,
            )?;
            model = stepped;
            self.steps_taken += 1;
            if k + 1 == steps {
                // Reading the loss waits for all queued work (asynchronous GPU backends).
                let _ = losses.total.into_data();
            }
        }
        self.model = Some(model);
        Ok((steps * self.batch_size) as f64 / started.elapsed().as_secs_f64())
    }
}

/// Examples per second of `steps` timed training steps (after `warmup` untimed ones), each
/// exactly the step that [`train`] takes.
pub fn examples_per_second<B, T>(
    task: &T,
    model: T::Model,
    budget: &Budget,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<f64, TrainError>
where
    B: AutodiffBackend,
    T: TrainingTask<B> + Sync,
    T::Model: Send,
{
    let mut timer = StepTimer::new(task, model, budget, device)?;
    timer.examples_per_second(warmup)?;
    timer.examples_per_second(steps)
}

/// Trains `model` on `task` under `budget` in `run_dir`, resuming from its last committed
/// epoch, and returns the trained model. The caller saves the final artifacts and calls
/// [`RunDir::finish`].
pub fn train<B, T>(
    task: &T,
    model: T::Model,
    budget: &Budget,
    run_dir: &RunDir,
    display: &RunDisplay,
    device: &B::Device,
) -> Result<TrainedOf<B, T>, TrainError>
where
    B: AutodiffBackend,
    T: TrainingTask<B> + Sync,
    T::Model: Send,
{
    train_on(
        task,
        model,
        budget,
        run_dir,
        display,
        std::slice::from_ref(device),
    )
}

/// [`train`] with one replica of the model per device in `devices`, each taking a shard of
/// every batch (see [`super::data_parallel`]); the first device evaluates and checkpoints.
/// The loop runs on a compute pool of its own ([`ComputeThreads`], `display.feed`).
pub fn train_on<B, T>(
    task: &T,
    model: T::Model,
    budget: &Budget,
    run_dir: &RunDir,
    display: &RunDisplay,
    devices: &[B::Device],
) -> Result<TrainedOf<B, T>, TrainError>
where
    B: AutodiffBackend,
    T: TrainingTask<B> + Sync,
    T::Model: Send,
{
    let threads = ComputeThreads::new(display.feed.compute_threads)?;
    threads.run(|| {
        let device = &devices[0];
        if devices.len() > 1 && !task.supports_data_parallel() {
            return Err(TrainError::Config(format!(
            "{} cannot train on several devices: its post-step update reads one shard's statistics",
            display.name
        )));
        }
        budget.validate()?;
        budget
            .precision
            .check_supported::<B>(device)
            .map_err(TrainError::Config)?;
        let n_train = task.n_train();
        if n_train == 0 {
            return Err(TrainError::Config(format!(
                "{}: no training examples",
                display.name
            )));
        }
        let n_params = model.num_params();
        let (mut model, mut optimizer, state) =
            run_dir.resume::<B, _, _, T::Evaluation>(model, optimizer::<B, _>(budget), device)?;
        let RunState {
            epochs_done,
            mut history,
            loss_scaler,
        } = state;
        let mut mixed = MixedPrecision::new(budget.precision);
        if mixed.scaler.is_some() && loss_scaler.is_some() {
            mixed.scaler = loss_scaler; // continue at the scale the run had reached
        }
        if epochs_done > budget.epochs {
            return Err(TrainError::Config(format!(
                "{} already holds {epochs_done} epochs, more than the {} asked for",
                run_dir.path().display(),
                budget.epochs
            )));
        }
        let steps_per_epoch = n_train.div_ceil(budget.batch_size);
        let schedule = WarmupCosine::new(
            budget.learning_rate,
            steps_per_epoch * budget.epochs,
            budget.warmup_fraction,
            budget.final_lr_ratio,
        );
        let mut metrics = MetricsLog::open(run_dir.path(), epochs_done * steps_per_epoch)?;
        if epochs_done > 0 {
            progress::println(
                display.progress,
                &format!("[{}] resuming after epoch {epochs_done}", display.name),
            );
        }

        // Replicas 1.. of a data-parallel run: copies of the resumed model (read through their
        // values, so no copy initialises itself anew) and optimizer, each taking `step`.
        let replica_step = |(model, mut optimizer, mut mixed): Replica<B, T>,
                            shard: ShardStep,
                            peer: Peer,
                            device: &B::Device| {
            let batch = step_batch::<B, T>(task, &shard.indices, shard.step_seed, device)?;
            let (model, _) = step::<B, T>(
                task,
                model,
                &mut optimizer,
                &mut mixed,
                batch,
                shard.step_seed,
                shard.lr,
                device,
                Some(peer),
            )?;
            Ok((model, optimizer, mixed))
        };
        let mut replica_states = Vec::new();
        for device in &devices[1..] {
            let copy = copy_weights::<B, B, _, _>(&model, model.clone().fork(device))?;
            replica_states.push((copy, optimizer.clone(), mixed.clone()));
        }
        std::thread::scope(|scope| {
            let helpers = match replica_states.is_empty() {
                true => None,
                false => Some(data_parallel::start::<B::InnerBackend, _, _>(
                    scope,
                    devices,
                    replica_states,
                    &replica_step,
                )?),
            };
            let replicas = helpers.as_ref().map_or(1, |h| h.replicas());
            if replicas > 1 && budget.batch_size < replicas {
                return Err(TrainError::Config(format!(
                    "--batch-size {} is smaller than the {replicas} devices: each needs a shard",
                    budget.batch_size
                )));
            }
            for epoch in epochs_done..budget.epochs {
                let mut order: Vec<usize> = (0..n_train).collect();
                order.shuffle(&mut StdRng::seed_from_u64(derived_seed(
                    budget.seed,
                    SHUFFLE_STREAM,
                    epoch as u64,
                )));
                let bar = progress::bar_in(
                    display.progress,
                    steps_per_epoch as u64,
                    &format!("{} epoch {}/{}", display.name, epoch + 1, budget.epochs),
                );
                let started = Instant::now();
                let mut pending = PendingSteps::default();
                let mut sums = LossSums::default();
                let mut lr = schedule.at(epoch * steps_per_epoch);
                let step_seed_at = move |step_in_epoch: usize| {
                    let step_index = epoch * steps_per_epoch + step_in_epoch;
                    derived_seed(budget.seed, STEP_STREAM, step_index as u64)
                };
                // Replica 0's shard of every step, made ahead on the loader threads (replicas 1..
                // make their own shards on their threads).
                let threads = display.feed.loader_threads;
                let mut loader = BatchLoader::spawn(scope, steps_per_epoch, threads, {
                    let order = order.clone();
                    move |step_in_epoch| {
                        let indices = order.chunks(budget.batch_size).nth(step_in_epoch);
                        let shard = shards(indices.expect("a step of the epoch"), replicas)[0];
                        step_batch::<B, T>(task, shard, step_seed_at(step_in_epoch), device)
                    }
                });
                for (step_in_epoch, indices) in order.chunks(budget.batch_size).enumerate() {
                    let step_index = epoch * steps_per_epoch + step_in_epoch;
                    lr = schedule.at(step_index);
                    let step_started = Instant::now();
                    let step_seed = step_seed_at(step_in_epoch);
                    let shards = shards(indices, replicas);
                    let peer = match &helpers {
                        Some(helpers) => {
                            Some(helpers.dispatch(&shards, indices.len(), step_seed, lr)?)
                        }
                        None => None,
                    };
                    let batch = loader.next_batch()?;
                    let (stepped, losses) = step::<B, T>(
                        task,
                        model,
                        &mut optimizer,
                        &mut mixed,
                        batch,
                        step_seed,
                        lr,
                        device,
                        peer,
                    )?;
                    model = stepped;
                    pending.push(
                        losses,
                        step_index + 1,
                        lr,
                        step_started.elapsed().as_secs_f64(),
                    );
                    if pending.len() >= display.feed.log_every.max(1) {
                        pending
                            .flush(&mut sums, &mut metrics, &display.name, epoch + 1)
                            .map_err(|e| run_dir.stopped(e))?;
                    }
                    bar.inc(1);
                }
                pending
                    .flush(&mut sums, &mut metrics, &display.name, epoch + 1)
                    .map_err(|e| run_dir.stopped(e))?;
                let train_seconds = started.elapsed().as_secs_f64();
                let data_wait_seconds = loader.waited().as_secs_f64();
                drop(loader);
                bar.finish_and_clear();
                display.progress.remove(&bar);

                let valid = model.valid();
                let steps_done = (epoch + 1) * steps_per_epoch;
                let stop = |objective: String, value: f64| {
                    Err(run_dir.stopped(TrainError::NonFinite {
                        run: display.name.clone(),
                        epoch: epoch + 1,
                        step: steps_done,
                        objective,
                        value,
                    }))
                };
                if let Some((path, value)) = first_non_finite_parameter(&valid) {
                    return stop(format!("weight {path}"), value);
                }
                let evaluation = autocast(budget.precision, || {
                    task.evaluate(&valid, epoch + 1, device)
                })?;
                for (name, value) in evaluation.metrics() {
                    if !value.is_finite() {
                        return stop(format!("held-out {name}"), value);
                    }
                }
                let log = EpochLog {
                    epoch: epoch + 1,
                    steps: steps_done,
                    learning_rate: lr,
                    train: sums.means(),
                    eval: evaluation,
                    train_seconds,
                    data_wait_seconds,
                    samples_per_second: n_train as f64 / train_seconds.max(1e-9),
                };
                progress::println(
                    display.progress,
                    &format!(
                        "[{}] epoch {}/{}: {}",
                        display.name,
                        log.epoch,
                        budget.epochs,
                        log.summary()
                    ),
                );
                metrics.evaluation(&log)?;
                history.push(log);
                task.charts(&history)?;
                run_dir.commit::<B, _, _, _>(
                    &model,
                    &optimizer,
                    &RunState {
                        epochs_done: epoch + 1,
                        history: history.clone(),
                        loss_scaler: mixed.scaler.clone(),
                    },
                )?;
            }
            if let Some(helpers) = helpers {
                for (k, (replica, _, _)) in helpers.finish::<B::InnerBackend>()?.iter().enumerate()
                {
                    if let Some(path) = data_parallel::first_difference(&model, replica) {
                        return Err(TrainError::Config(format!(
                        "data-parallel replica {} ended with other weights than replica 0 ({path})",
                        k + 1
                    )));
                    }
                }
            }
            Ok(Trained {
                model: model.valid(),
                history,
                n_params,
            })
        })
    })
}
