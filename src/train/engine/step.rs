//! One optimisation step, exactly as the training loop takes it, and the pieces it is built
//! from: seeded initialisation, the seeds of shuffles and batches, the optimizer. [`StepTimer`]
//! times this same step for the bench.

use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{GradientsParams, Optimizer};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::io::checkpoint::assign_stable_param_ids;
use crate::nn::backend::BACKEND_RANDOM;
use crate::nn::{autocast, AutodiffBackend, Backend};
use crate::train::engine::adamw::FusedAdamW;
use crate::train::engine::budget::Budget;
use crate::train::engine::compute_threads::ComputeThreads;
use crate::train::engine::data_parallel::{all_reduce_gradients, all_reduce_losses, Peer};
use crate::train::engine::mixed_precision::MixedPrecision;
use crate::train::engine::step_log::{Losses, StepOutput};
use crate::train::engine::{Feed, TrainingTask};
use crate::train::TrainError;

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

pub(super) const SHUFFLE_STREAM: u64 = 1;
pub(super) const STEP_STREAM: u64 = 2;
pub(super) const BACKEND_STREAM: u64 = 3;

/// The optimizer every family trains with.
pub type TrainingOptimizer<M, B> = OptimizerAdaptor<FusedAdamW, M, B>;

/// What a data-parallel replica keeps between steps.
pub(super) type Replica<B, T> = (
    <T as TrainingTask<B>>::Model,
    TrainingOptimizer<<T as TrainingTask<B>>::Model, B>,
    MixedPrecision,
);

/// AdamW with the budget's weight decay and clipping (burn's betas 0.9 and 0.999, eps 1e-8,
/// as PyTorch), each parameter's step one fused pass ([`FusedAdamW`]).
pub fn optimizer<B: AutodiffBackend, M: AutodiffModule<B>>(
    budget: &Budget,
) -> TrainingOptimizer<M, B> {
    let optimizer = OptimizerAdaptor::from(FusedAdamW::new(budget.weight_decay as f32));
    match budget.grad_clip {
        Some(norm) => {
            optimizer.with_grad_clipping(GradientClippingConfig::Norm(norm as f32).init())
        }
        None => optimizer,
    }
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
