//! Training and evaluating one classifier (one model kind, one seed), with per-epoch checkpoints
//! ([`EpochCheckpoints`]) that let an interrupted run continue where it stopped. A finished run
//! directory holds only `model.safetensors`, `model-config.json` and `result.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::MultiProgress;

use burn::module::AutodiffModule;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::store::ModuleSnapshot;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    assign_stable_param_ids, load_safetensors, save_safetensors, write_atomic,
};
use super::classify::{ClassifierKind, ClassifyError, TrainingConfig};
use super::epoch_checkpoints::{epoch_seed, EpochCheckpoints, RunState};
use super::metrics::{mean_average_precision, micro_f1};
use super::progress;
use super::schedule::WarmupCosine;
use crate::data::{ClassificationSplit, SpecialIds};
use crate::models::classifier::{MultiLabelClassifier, SingleStreamClassifierConfig};
use crate::models::lxmert::LxmertClassifierConfig;

/// Metrics after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_map: f64,
    pub val_micro_f1: f64,
    pub train_seconds: f64,
}

/// The outcome of one finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub model: ClassifierKind,
    pub seed: u64,
    /// Mean average precision on the held-out split, after the last epoch.
    pub map: f64,
    pub micro_f1: f64,
    pub n_params: usize,
    pub train_samples_per_second: f64,
    pub history: Vec<EpochLog>,
}

/// Metrics of the model on a split.
pub struct Evaluation {
    pub loss: f64,
    pub map: f64,
    pub micro_f1: f64,
}

/// Binary cross-entropy on logits, averaged over batch and labels, in the numerically stable
/// form `max(x, 0) - x*y + log(1 + exp(-|x|))`.
///
/// # Shapes
/// - `logits`, `targets`: `[batch, n_labels]`
/// - returns: `[1]`
pub fn bce_with_logits<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    let softplus_neg_abs = logits.clone().abs().neg().exp().add_scalar(1.0).log();
    (logits.clone().clamp_min(0.0) - logits * targets + softplus_neg_abs).mean()
}

/// Evaluates on every example of `split`, with each image's first caption.
pub fn evaluate<B: Backend, M: MultiLabelClassifier<B>>(
    model: &M,
    split: &ClassificationSplit,
    special: SpecialIds,
    batch_size: usize,
    device: &B::Device,
) -> Evaluation {
    let mut probabilities = Vec::with_capacity(split.len() * split.n_labels);
    let mut labels = Vec::with_capacity(split.len() * split.n_labels);
    let mut loss_sum = Tensor::<B, 1>::zeros([1], device);
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let batch = split.batch::<B>(chunk, &vec![0; chunk.len()], special, device);
        let logits = model.classify(batch.images, batch.text);
        loss_sum =
            loss_sum + bce_with_logits(logits.clone(), batch.labels.clone()) * chunk.len() as f64;
        probabilities.extend(to_vec(burn::tensor::activation::sigmoid(logits)));
        labels.extend(to_vec(batch.labels));
    }
    Evaluation {
        loss: scalar(loss_sum) / split.len().max(1) as f64,
        map: mean_average_precision(&probabilities, &labels, split.n_labels),
        micro_f1: micro_f1(&probabilities, &labels, 0.5),
    }
}

fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

fn scalar<B: Backend>(tensor: Tensor<B, 1>) -> f64 {
    tensor.into_scalar().elem::<f64>()
}

/// The model of a run.
#[derive(Debug, Clone)]
pub enum RunModel {
    SingleStream(SingleStreamClassifierConfig),
    /// LXMERT, starting from a pretrained encoder (`lxmert.safetensors` of a pretraining run)
    /// when `pretrained` is set.
    Lxmert {
        config: LxmertClassifierConfig,
        pretrained: Option<PathBuf>,
    },
}

/// Everything one run needs.
pub struct RunSpec<'a> {
    pub kind: ClassifierKind,
    pub seed: u64,
    pub model: RunModel,
    pub training: &'a TrainingConfig,
    pub dir: PathBuf,
    /// Where progress bars and epoch summaries are drawn.
    pub progress: &'a MultiProgress,
}

/// Serialises model initialisation: the CPU backend's random generator is process-wide, so
/// runs on other threads must not draw from it between `seed` and `init`.
static INIT_LOCK: Mutex<()> = Mutex::new(());

fn json_error(path: &Path, e: serde_json::Error) -> ClassifyError {
    ClassifyError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Seeds the backend with `seed` and builds a model with `init`, holding [`INIT_LOCK`].
fn seeded_init<B: Backend, T>(seed: u64, device: &B::Device, init: impl FnOnce() -> T) -> T {
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    init()
}

/// Trains one classifier (resuming if its directory holds a partial run) and evaluates it.
pub fn train_run<B: AutodiffBackend>(
    spec: &RunSpec,
    train: &ClassificationSplit,
    val: &ClassificationSplit,
    special: SpecialIds,
    device: &B::Device,
) -> Result<RunResult, ClassifyError> {
    let result_path = spec.dir.join("result.json");
    if let Ok(bytes) = fs::read(&result_path) {
        return serde_json::from_slice(&bytes).map_err(|e| json_error(&result_path, e));
    }
    match &spec.model {
        RunModel::SingleStream(config) => {
            let model = seeded_init::<B, _>(spec.seed, device, || config.init::<B>(device));
            let config_json = serde_json::to_vec_pretty(config).expect("config serialises");
            train_model(spec, model, &config_json, train, val, special, device)
        }
        RunModel::Lxmert { config, pretrained } => {
            let mut model = seeded_init::<B, _>(spec.seed, device, || config.init::<B>(device));
            if let Some(path) = pretrained {
                model.lxmert = load_safetensors(model.lxmert, path)?;
            }
            let config_json = serde_json::to_vec_pretty(config).expect("config serialises");
            train_model(spec, model, &config_json, train, val, special, device)
        }
    }
}

/// The training loop shared by every classifier.
fn train_model<B, M>(
    spec: &RunSpec,
    model: M,
    config_json: &[u8],
    train: &ClassificationSplit,
    val: &ClassificationSplit,
    special: SpecialIds,
    device: &B::Device,
) -> Result<RunResult, ClassifyError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
    M::InnerModule: MultiLabelClassifier<B::InnerBackend>,
{
    let result_path = spec.dir.join("result.json");
    let training = spec.training;
    let name = format!("{} seed {}", spec.kind.name(), spec.seed);
    let model = assign_stable_param_ids(model);
    let n_params = model.num_params();
    let optimizer = AdamWConfig::new()
        .with_weight_decay(training.weight_decay as f32)
        .with_epsilon(1e-8)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(
            training.grad_clip as f32,
        )))
        .init::<B, M>();

    let checkpoints = EpochCheckpoints::new(&spec.dir);
    let (mut model, mut optimizer, state) =
        checkpoints.resume::<B, _, _, EpochLog>(model, optimizer, device)?;
    let start_epoch = state.epochs_done;
    let mut history = state.history;
    if start_epoch > 0 {
        progress::println(
            spec.progress,
            &format!("[{name}] resuming after epoch {start_epoch}"),
        );
    }

    let steps_per_epoch = train.len().div_ceil(training.batch_size);
    let total_steps = steps_per_epoch * training.epochs;
    let schedule = WarmupCosine::new(
        training.learning_rate,
        total_steps,
        training.warmup_fraction,
        0.05,
    );
    for epoch in start_epoch..training.epochs {
        // Seeds derived from (seed, epoch) make a resumed epoch identical to an uninterrupted
        // one. The backend seed drives dropout; with several runs in parallel threads their
        // dropout draws interleave, so only dropout-free configs are then bit-reproducible.
        let epoch_seed = epoch_seed(spec.seed, epoch);
        B::seed(device, epoch_seed);
        let mut rng = StdRng::seed_from_u64(epoch_seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let captions: Vec<usize> = order.iter().map(|_| rng.random_range(0..64)).collect();

        let bar = progress::bar_in(
            spec.progress,
            steps_per_epoch as u64,
            &format!("{name} epoch {}/{}", epoch + 1, training.epochs),
        );
        let started = Instant::now();
        let mut loss_sum = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut lr = schedule.at(0);
        for (step_in_epoch, (chunk, caption_chunk)) in order
            .chunks(training.batch_size)
            .zip(captions.chunks(training.batch_size))
            .enumerate()
        {
            let step = epoch * steps_per_epoch + step_in_epoch;
            lr = schedule.at(step);
            let batch = train.batch::<B>(chunk, caption_chunk, special, device);
            let logits = model.classify(batch.images, batch.text);
            let loss = bce_with_logits(logits, batch.labels);
            loss_sum = loss_sum + loss.clone().inner();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(lr, model, grads);
            bar.inc(1);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        spec.progress.remove(&bar);
        // One device sync per epoch for the loss, rather than one per step.
        let train_loss = scalar(loss_sum) / steps_per_epoch as f64;
        if !train_loss.is_finite() {
            return Err(ClassifyError::NonFiniteLoss {
                run: name,
                epoch: epoch + 1,
                value: train_loss,
            });
        }
        let eval = evaluate(&model.valid(), val, special, training.batch_size, device);
        let log = EpochLog {
            epoch: epoch + 1,
            steps: (epoch + 1) * steps_per_epoch,
            learning_rate: lr,
            train_loss,
            val_loss: eval.loss,
            val_map: eval.map,
            val_micro_f1: eval.micro_f1,
            train_seconds,
        };
        progress::println(spec.progress, &format!(
            "[{name}] epoch {}/{}: train loss {:.4}, val loss {:.4}, val mAP {:.4}, val micro-F1 {:.4} ({:.1}s, {:.0} samples/s)",
            log.epoch,
            training.epochs,
            log.train_loss,
            log.val_loss,
            log.val_map,
            log.val_micro_f1,
            train_seconds,
            train.len() as f64 / train_seconds
        ));
        history.push(log);

        checkpoints.commit::<B, _, _, _>(
            &model,
            &optimizer,
            &RunState {
                epochs_done: epoch + 1,
                history: history.clone(),
            },
        )?;
    }

    let last = history.last().cloned().ok_or_else(|| {
        ClassifyError::Config("training ran for zero epochs; use --epochs 1 or more".into())
    })?;
    let seconds: f64 = history.iter().map(|h| h.train_seconds).sum();
    let result = RunResult {
        model: spec.kind,
        seed: spec.seed,
        map: last.val_map,
        micro_f1: last.val_micro_f1,
        n_params,
        train_samples_per_second: (train.len() * history.len()) as f64 / seconds.max(1e-9),
        history,
    };
    save_safetensors(&model, &spec.dir.join("model.safetensors"))?;
    write_atomic(&spec.dir.join("model-config.json"), config_json)?;
    write_atomic(
        &result_path,
        &serde_json::to_vec_pretty(&result).expect("result serialises"),
    )?;
    // result.json now marks the run as done; the resume state and its checkpoint go.
    checkpoints.finish(training.epochs);
    Ok(result)
}
