//! One classifier run (one model kind, one seed) as a task on the [`engine`](crate::train::engine): the
//! loss is binary cross-entropy of a batch with a random caption per image, the evaluation is
//! held-out loss, mAP and micro-F1 with each image's first caption. A finished run directory
//! holds `model.safetensors`, `model-config.json`, `result.json` and `metrics.jsonl`.

use std::marker::PhantomData;
use std::path::PathBuf;

use crate::nn::{AutodiffBackend, Backend};
use burn::module::AutodiffModule;
use burn::store::ModuleSnapshot;
use burn::tensor::{ElementConversion, Tensor};
use indicatif::MultiProgress;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::{ClassificationBatch, ClassificationSplit, SpecialIds};
use crate::io::checkpoint::{load_safetensors, save_safetensors, write_atomic};
use crate::models::classifier::{Modality, MultiLabelClassifier, SingleStreamClassifierConfig};
use crate::models::lxmert::hf::load_lxmert;
use crate::models::lxmert::LxmertClassifierConfig;
use crate::train::engine::budget::Budget;
use crate::train::engine::run_dir::{EpochLog, RunDir};
use crate::train::engine::{
    seeded_init, train, EpochEvaluation, Feed, Losses, RunDisplay, StepOutput, TrainingTask,
};
use crate::train::report::metrics::{mean_average_precision, micro_f1};
use crate::train::report::training_report;
use crate::train::TrainError;

/// The models `classify` compares: the single-stream classifier on each input, and LXMERT
/// reading both inputs in two streams, trained from scratch or from its pretraining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierKind {
    /// Single-stream `[CLS] img [SEP]`.
    ImageOnly,
    /// Single-stream `[CLS] text [SEP]`.
    TextOnly,
    /// Single-stream `[CLS] img [SEP] text [SEP]`.
    Joint,
    /// LXMERT (two streams, cross-attention), from scratch.
    Lxmert,
    /// LXMERT fine-tuned from its pretraining on the training split (its stages:
    /// [`crate::train::lxmert_pretrain::PretrainStage`]).
    LxmertPretrained,
}

impl ClassifierKind {
    pub const ALL: [ClassifierKind; 5] = [
        ClassifierKind::ImageOnly,
        ClassifierKind::TextOnly,
        ClassifierKind::Joint,
        ClassifierKind::Lxmert,
        ClassifierKind::LxmertPretrained,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClassifierKind::ImageOnly => "image-only",
            ClassifierKind::TextOnly => "text-only",
            ClassifierKind::Joint => "joint",
            ClassifierKind::Lxmert => "lxmert",
            ClassifierKind::LxmertPretrained => "lxmert-pretrained",
        }
    }

    /// The single-stream modality, for the three single-stream kinds.
    pub fn modality(self) -> Option<Modality> {
        match self {
            ClassifierKind::ImageOnly => Some(Modality::ImageOnly),
            ClassifierKind::TextOnly => Some(Modality::TextOnly),
            ClassifierKind::Joint => Some(Modality::Joint),
            ClassifierKind::Lxmert | ClassifierKind::LxmertPretrained => None,
        }
    }

    /// Relative training cost, longest first, for scheduling parallel runs.
    pub fn cost_rank(self) -> usize {
        match self {
            ClassifierKind::LxmertPretrained => 0,
            ClassifierKind::Lxmert => 1,
            ClassifierKind::Joint => 2,
            ClassifierKind::ImageOnly => 3,
            ClassifierKind::TextOnly => 4,
        }
    }
}

/// Held-out metrics of a classifier after an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierEvaluation {
    pub loss: f64,
    pub map: f64,
    pub micro_f1: f64,
}

impl EpochEvaluation for ClassifierEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("loss", self.loss),
            ("mAP", self.map),
            ("micro-F1", self.micro_f1),
        ]
    }

    fn continuous_metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("loss", self.loss)]
    }
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
    pub history: Vec<EpochLog<ClassifierEvaluation>>,
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
) -> ClassifierEvaluation {
    // Everything stays on the device until the end: one read per quantity for the split.
    let (mut probabilities, mut labels) = (Vec::new(), Vec::new());
    let mut loss_sum = Tensor::<B, 1>::zeros([1], device);
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let batch = split.batch::<B>(chunk, &vec![0; chunk.len()], special, device);
        let logits = model.classify(batch.images, batch.text);
        loss_sum =
            loss_sum + bce_with_logits(logits.clone(), batch.labels.clone()) * chunk.len() as f64;
        probabilities.push(burn::tensor::activation::sigmoid(logits));
        labels.push(batch.labels);
    }
    let (probabilities, labels) = if probabilities.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            to_vec(Tensor::cat(probabilities, 0)),
            to_vec(Tensor::cat(labels, 0)),
        )
    };
    ClassifierEvaluation {
        loss: loss_sum.into_scalar().elem::<f64>() / split.len().max(1) as f64,
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

/// A classifier `M` on a classification split: the engine's task.
pub struct ClassifierTask<'a, M> {
    pub train: &'a ClassificationSplit,
    pub val: &'a ClassificationSplit,
    pub special: SpecialIds,
    pub batch_size: usize,
    /// Whether the model has dropout (draws from the backend's generator).
    pub dropout: bool,
    pub model: PhantomData<fn() -> M>,
}

impl<B, M> TrainingTask<B> for ClassifierTask<'_, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
    M::InnerModule: MultiLabelClassifier<B::InnerBackend>,
{
    type Model = M;
    type Aux = ();
    type Evaluation = ClassifierEvaluation;

    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn uses_backend_random(&self) -> bool {
        self.dropout
    }

    type Batch = ClassificationBatch<B>;

    fn batch(
        &self,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<ClassificationBatch<B>, TrainError> {
        // Each image has several captions; a step sees a random one of each.
        let captions: Vec<usize> = indices.iter().map(|_| rng.random_range(0..64)).collect();
        Ok(self
            .train
            .batch::<B>(indices, &captions, self.special, device))
    }

    fn loss(
        &self,
        model: &M,
        batch: ClassificationBatch<B>,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let loss = bce_with_logits(model.classify(batch.images, batch.text), batch.labels);
        Ok(StepOutput {
            losses: Losses {
                total: loss,
                parts: Vec::new(),
            },
            aux: (),
        })
    }

    fn evaluate(
        &self,
        model: &M::InnerModule,
        _epoch: usize,
        device: &B::Device,
    ) -> Result<ClassifierEvaluation, TrainError> {
        Ok(evaluate(
            model,
            self.val,
            self.special,
            self.batch_size,
            device,
        ))
    }
}

/// The model of a run.
#[derive(Debug, Clone)]
pub enum RunModel {
    SingleStream(SingleStreamClassifierConfig),
    /// LXMERT, starting from a pretrained encoder when `pretrained` is set.
    Lxmert {
        config: LxmertClassifierConfig,
        pretrained: Option<EncoderWeights>,
    },
}

/// Where a pretrained LXMERT encoder comes from.
#[derive(Debug, Clone)]
pub enum EncoderWeights {
    /// `lxmert.safetensors` of a vislang pretraining run.
    Run(PathBuf),
    /// A Hugging Face checkpoint (released weights); a patch encoder starts fresh.
    Released(PathBuf),
}

/// Everything one run needs.
pub struct RunSpec<'a> {
    pub kind: ClassifierKind,
    pub model: RunModel,
    /// The shared budget with this run's seed.
    pub budget: Budget,
    pub dir: PathBuf,
    /// Where progress bars and epoch summaries are drawn.
    pub progress: &'a MultiProgress,
    pub feed: Feed,
}

/// Trains one classifier (resuming if its directory holds a partial run) and evaluates it.
pub fn train_run<B: AutodiffBackend>(
    spec: &RunSpec,
    train_split: &ClassificationSplit,
    val: &ClassificationSplit,
    special: SpecialIds,
    device: &B::Device,
) -> Result<RunResult, TrainError> {
    let run_dir = RunDir::new(&spec.dir)?;
    if let Some(result) = run_dir.finished()? {
        return Ok(result);
    }
    fn task<'a, M>(
        train: &'a ClassificationSplit,
        val: &'a ClassificationSplit,
        special: SpecialIds,
        batch_size: usize,
        dropout: f64,
    ) -> ClassifierTask<'a, M> {
        ClassifierTask {
            train,
            val,
            special,
            batch_size,
            dropout: dropout > 0.0,
            model: PhantomData,
        }
    }
    let batch_size = spec.budget.batch_size;
    let seed = spec.budget.seed;
    match &spec.model {
        RunModel::SingleStream(config) => {
            let model = seeded_init::<B, _>(seed, device, || config.init::<B>(device));
            let task = task(train_split, val, special, batch_size, config.dropout);
            let json = serde_json::to_vec_pretty(config).expect("configs serialise");
            train_classifier(spec, task, model, &json, &run_dir, device)
        }
        RunModel::Lxmert { config, pretrained } => {
            let mut model = seeded_init::<B, _>(seed, device, || config.init::<B>(device));
            match pretrained {
                Some(EncoderWeights::Run(path)) => {
                    model.lxmert = load_safetensors(model.lxmert, path)?;
                }
                Some(EncoderWeights::Released(path)) => {
                    model.lxmert = load_lxmert(model.lxmert, path)
                        .map_err(|e| TrainError::Config(e.to_string()))?
                        .model;
                }
                None => {}
            }
            let task = task(train_split, val, special, batch_size, config.lxmert.dropout);
            let json = serde_json::to_vec_pretty(config).expect("configs serialise");
            train_classifier(spec, task, model, &json, &run_dir, device)
        }
    }
}

fn train_classifier<B, M>(
    spec: &RunSpec,
    task: ClassifierTask<M>,
    model: M,
    config_json: &[u8],
    run_dir: &RunDir,
    device: &B::Device,
) -> Result<RunResult, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
    M::InnerModule: MultiLabelClassifier<B::InnerBackend>,
{
    let n_train = task.train.len();
    let display = RunDisplay {
        name: format!("{} seed {}", spec.kind.name(), spec.budget.seed),
        progress: spec.progress,
        feed: spec.feed,
    };
    let trained = train(&task, model, &spec.budget, run_dir, &display, device)?;
    let last = trained.last().eval.clone();
    let result = RunResult {
        model: spec.kind,
        seed: spec.budget.seed,
        map: last.map,
        micro_f1: last.micro_f1,
        n_params: trained.n_params,
        train_samples_per_second: trained.samples_per_second(n_train),
        history: trained.history,
    };
    save_safetensors(&trained.model, &spec.dir.join("model.safetensors"))?;
    write_atomic(&spec.dir.join("model-config.json"), config_json)?;
    let config: serde_json::Value = serde_json::from_slice(config_json).expect("configs are JSON");
    training_report(
        &format!("{} classifier, seed {}", spec.kind.name(), spec.budget.seed),
        &spec.dir,
        &serde_json::json!({ "model": config, "budget": spec.budget }),
        &result.history,
        None,
    )?;
    run_dir.finish(&result)?;
    Ok(result)
}
