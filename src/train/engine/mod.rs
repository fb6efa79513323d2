//! The one training engine. Every family (classifiers, LXMERT pretraining, the VQ-VAE, the
//! DALL-E decoder) is a [`TrainingTask`]: it says what a batch's loss is, what happens after
//! the optimizer step, and how to evaluate; [`train`] owns everything else, top to bottom:
//!
//! 1. resume from the run directory's last committed epoch (or start fresh);
//! 2. per epoch: shuffle with the epoch's seed; loader threads make each step's batch ahead
//!    of it, its random choices drawn from the step's own seed ([`crate::train::engine::batch_loader`]);
//!    per step take the loss, backward, clip, AdamW step with the warm-up/cosine learning
//!    rate, and the task's post-step hook;
//!    Under `--precision bf16|f16` the loss (and evaluation) runs inside
//!    [`crate::nn::autocast`], and f16 losses are scaled ([`crate::train::engine::mixed_precision`]);
//! 3. keep per-step losses on the device and read them every `log_every` steps (one sync),
//!    appending them to `metrics.jsonl` and stopping at the first non-finite value;
//! 4. evaluate on the held-out split, check the held-out metrics and the weights are finite,
//!    log (with the time the loop waited for batches), and commit the epoch (weights,
//!    optimizer, then `state.json`).
//!
//! [`train_on`] runs the same loop with one replica per device, each step's batch split
//! between them and the gradients summed ([`crate::train::engine::data_parallel`]).
//!
//! Random streams are per run: shuffling and batch draws come from seeds derived from
//! (run seed, epoch, step), so a resumed run repeats an uninterrupted one bit for bit. The
//! backend's own generator (dropout, dead-code re-seeding) is process-wide in Burn's CPU
//! backends; a task that draws from it ([`TrainingTask::uses_backend_random`]) reseeds it per
//! step while holding [`BACKEND_RANDOM`], so parallel runs never interleave their draws.

pub mod adamw;
pub mod batch_loader;
pub mod budget;
pub mod compute_threads;
pub(super) mod config_diff;
pub mod data_parallel;
pub(super) mod epoch_log;
pub mod gradients;
pub mod memory;
pub(super) mod metrics_log;
pub mod mixed_precision;
pub mod run;
pub mod run_dir;
pub mod schedule;
pub mod step;
pub(super) mod step_log;
pub(super) mod weights_check;

use std::time::Instant;

use crate::nn::AutodiffBackend;
use burn::module::{AutodiffModule, Module};
use burn::store::ModuleSnapshot;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::io::checkpoint::copy_weights;
use crate::io::progress;
use crate::nn::autocast;
use crate::train::engine::batch_loader::BatchLoader;
use crate::train::engine::budget::Budget;
use crate::train::engine::compute_threads::ComputeThreads;
use crate::train::engine::data_parallel::{shards, Peer, ShardStep};
use crate::train::engine::metrics_log::MetricsLog;
use crate::train::engine::mixed_precision::MixedPrecision;
pub use crate::train::engine::run_dir::EpochEvaluation;
use crate::train::engine::run_dir::{EpochLog, RunDir, RunState};
use crate::train::engine::schedule::WarmupCosine;
use crate::train::engine::step_log::{LossSums, PendingSteps};
pub use crate::train::engine::step_log::{Losses, StepOutput};
use crate::train::engine::weights_check::first_non_finite_parameter;
use crate::train::TrainError;

pub use crate::nn::backend::BACKEND_RANDOM;
pub use run::{Feed, RunDisplay, RunOptions, Trained, TrainedOf};
pub use step::{
    derived_seed, examples_per_second, optimizer, seeded_init, step, step_batch, StepTimer,
    TrainingOptimizer,
};
use step::{Replica, SHUFFLE_STREAM, STEP_STREAM};

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
    /// ahead of the step on a loader thread ([`crate::train::engine::batch_loader`]), so it must not draw
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
    /// batch (see [`crate::train::engine::data_parallel`]): not when [`TrainingTask::after_step`] updates
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
/// every batch (see [`crate::train::engine::data_parallel`]); the first device evaluates and checkpoints.
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
