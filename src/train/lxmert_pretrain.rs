//! LXMERT pretraining (paper section 3): masked language modelling, masked object prediction
//! and cross-modality matching on image-caption pairs, each switchable, with per-epoch
//! checkpoints, held-out losses and loss curves.
//!
//! Images come from raw pixels through the model's patch encoder (no detector; masked patches
//! regress their quadrant colours) or from a converted LXMERT feature file (masked regions
//! regress their detector features and classify their detector object and attribute labels).
//!
//! A finished run directory holds `config.json`, `tokenizer.json`, `lxmert.safetensors` +
//! `lxmert-config.json` (the encoder, which `classify` fine-tunes), `pretraining.safetensors`
//! (with the heads), `result.json`, `curve-loss.png` (training), `curve-val-loss.png` (held-out)
//! and `curve-matching-accuracy.png`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use indicatif::MultiProgress;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::budget::Budget;
use super::engine::{
    seeded_init, train, EpochEvaluation, Losses, RunDisplay, StepOutput, TrainingTask,
};
use super::plots::{line_chart, line_chart_with_references, Reference, Series};
use super::report::training_report;
use super::run_dir::{EpochLog, RunDir};
use super::{RunPaths, TrainError};
use crate::data::lxmert_pretraining::{pixel_batch, region_batch, BatchRecipe, MaskingConfig};
use crate::data::{prepare_data, DataConfig, LoadError, PreparedData};
use crate::data::{ClassificationSplit, RegionFeatureError, RegionFeatures};
use crate::io::checkpoint::{save_safetensors, write_atomic, CheckpointError};
use crate::io::progress;
use crate::models::lxmert::{
    LxmertConfig, LxmertPretraining, LxmertPretrainingConfig, Objectives, PretrainingBatch,
    PretrainingLosses, PATCH_TARGET_WIDTH,
};
use crate::nn::PatchEncoderConfig;

/// LXMERT sizes of the presets, reading pixels; data-derived fields are placeholders until
/// [`fill_lxmert`] sets them.
pub mod lxmert_presets {
    use crate::models::lxmert::LxmertConfig;
    use crate::nn::PatchEncoderConfig;

    /// 2/1/1 layers of width 64 over 12-pixel patches: pretrains in minutes on a 2-core CPU.
    pub fn small() -> LxmertConfig {
        LxmertConfig::small(0, 64)
            .with_dropout(0.0)
            .with_pixels(Some(
                PatchEncoderConfig::new(48, 12, 64).with_stem_channels(16),
            ))
    }

    /// The released model: 9/5/5 layers, 768 wide, 12 heads; 32-pixel patches for pixels.
    pub fn base() -> LxmertConfig {
        LxmertConfig::new(0, 768).with_pixels(Some(
            PatchEncoderConfig::new(224, 32, 768).with_stem_channels(64),
        ))
    }
}

/// `template` with what the data fixes filled in: the vocabulary, the caption positions
/// (`max_text_len` + `[CLS]` and `[SEP]`), and either the image size of the patch encoder
/// (`image_size` `Some`) or the width of region features (pixels off).
pub fn fill_lxmert(
    template: &LxmertConfig,
    vocab_size: usize,
    max_text_len: usize,
    image_size: Option<usize>,
    region_features: usize,
) -> LxmertConfig {
    let mut config = template.clone();
    config.vocab_size = vocab_size;
    config.max_positions = max_text_len + 2;
    match (image_size, config.pixels.as_mut()) {
        (Some(size), Some(pixels)) => pixels.image_size = size,
        (Some(size), None) => {
            config.pixels = Some(PatchEncoderConfig::new(size, 16, config.d_feature));
        }
        (None, _) => {
            config.pixels = None;
            config.d_feature = region_features;
        }
    }
    config
}

/// Pretraining budgets.
pub mod budgets {
    use super::Budget;

    /// A 2-core CPU on the synthetic set: a few minutes.
    pub fn synthetic() -> Budget {
        Budget::new(6, 32, 1e-3)
    }

    /// LXMERT's schedule: 20 epochs of batch 256 at lr 1e-4.
    pub fn coco() -> Budget {
        Budget::new(20, 256, 1e-4)
    }
}

/// The whole pretraining run, saved as `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainLxmertConfig {
    pub data: DataConfig,
    /// A feature file from `lxmert-features convert`; `None` reads pixels.
    pub features: Option<PathBuf>,
    /// The encoder; vocabulary, caption positions, image size and region-feature width are
    /// filled in from the data ([`PretrainLxmertConfig::model_config`]).
    pub model: LxmertConfig,
    pub objectives: Objectives,
    pub masking: MaskingConfig,
    pub budget: Budget,
}

impl PretrainLxmertConfig {
    /// The built-in synthetic set at the `classify` preset's image size and vocabulary.
    pub fn synthetic() -> Self {
        Self {
            data: DataConfig::synthetic(),
            features: None,
            model: lxmert_presets::small(),
            objectives: Objectives::ALL,
            masking: MaskingConfig::default(),
            budget: budgets::synthetic(),
        }
    }

    /// MSCOCO 2014 captions on a GPU: the base model, LXMERT's batch 256 and lr 1e-4.
    pub fn coco(root: PathBuf) -> Self {
        let mut config = Self::synthetic();
        config.data = DataConfig::coco(root);
        config.model = lxmert_presets::base();
        config.budget = budgets::coco();
        config
    }

    /// The pretraining model for `data` (and `features` when set).
    pub fn model_config(
        &self,
        vocab_size: usize,
        features: Option<&RegionFeatures>,
        n_object_labels: Option<usize>,
        n_attribute_labels: Option<usize>,
    ) -> LxmertPretrainingConfig {
        let max_text_len = self.data.max_text_len;
        match features {
            None => LxmertPretrainingConfig::new(
                fill_lxmert(
                    &self.model,
                    vocab_size,
                    max_text_len,
                    Some(self.data.image_size),
                    0,
                ),
                PATCH_TARGET_WIDTH,
            ),
            Some(features) => LxmertPretrainingConfig::new(
                fill_lxmert(
                    &self.model,
                    vocab_size,
                    max_text_len,
                    None,
                    features.d_feature(),
                ),
                features.d_feature(),
            )
            .with_n_object_labels(n_object_labels)
            .with_n_attribute_labels(n_attribute_labels),
        }
    }
}

/// Everything that can stop pretraining, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Features(#[from] RegionFeatureError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{0}")]
    Config(String),
}

/// Mean losses of one pass, per objective (`None` when switched off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveLosses {
    pub masked_language: Option<f64>,
    pub object_feature: Option<f64>,
    pub object_label: Option<f64>,
    pub object_attribute: Option<f64>,
    pub matching: Option<f64>,
    pub total: f64,
}

impl ObjectiveLosses {
    const NAMES: [&'static str; 5] = [
        "masked LM",
        "object feature",
        "object label",
        "object attribute",
        "matching",
    ];

    fn parts(&self) -> [Option<f64>; 5] {
        [
            self.masked_language,
            self.object_feature,
            self.object_label,
            self.object_attribute,
            self.matching,
        ]
    }
}

/// Sums of each objective's loss over the steps of a pass, kept on the device.
struct LossSums<B: Backend> {
    parts: [Option<Tensor<B, 1>>; 5],
    total: Option<Tensor<B, 1>>,
    steps: usize,
}

impl<B: Backend> LossSums<B> {
    fn new() -> Self {
        Self {
            parts: Default::default(),
            total: None,
            steps: 0,
        }
    }

    fn add(&mut self, losses: &PretrainingLosses<B>) {
        let new = [
            &losses.masked_language,
            &losses.object_feature,
            &losses.object_label,
            &losses.object_attribute,
            &losses.matching,
        ];
        let add = |sum: Option<Tensor<B, 1>>, value: Tensor<B, 1>| match sum {
            Some(sum) => sum + value,
            None => value,
        };
        for (sum, value) in self.parts.iter_mut().zip(new) {
            if let Some(value) = value {
                *sum = Some(add(sum.take(), value.clone()));
            }
        }
        self.total = Some(add(self.total.take(), losses.total.clone()));
        self.steps += 1;
    }

    fn means(self) -> ObjectiveLosses {
        let n = self.steps.max(1) as f64;
        let mean = |t: Option<Tensor<B, 1>>| t.map(|t| t.into_scalar().elem::<f64>() / n);
        let [a, b, c, d, e] = self.parts;
        ObjectiveLosses {
            masked_language: mean(a),
            object_feature: mean(b),
            object_label: mean(c),
            object_attribute: mean(d),
            matching: mean(e),
            total: mean(self.total).unwrap_or(0.0),
        }
    }
}

/// Held-out numbers of one pretraining epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainEvaluation {
    pub losses: ObjectiveLosses,
    /// Held-out accuracy of the matching head on half-swapped pairs (chance: 0.5).
    pub matching_accuracy: Option<f64>,
}

impl EpochEvaluation for PretrainEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut metrics: Vec<(&'static str, f64)> = vec![("loss", self.losses.total)];
        metrics.extend(
            ObjectiveLosses::NAMES
                .iter()
                .zip(self.losses.parts())
                .filter_map(|(name, value)| value.map(|v| (*name, v))),
        );
        if let Some(accuracy) = self.matching_accuracy {
            metrics.push(("matching accuracy", accuracy));
        }
        metrics
    }
}

/// What `result.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainResult {
    pub n_params: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub samples_per_second: f64,
    pub history: Vec<EpochLog<PretrainEvaluation>>,
}

/// Where the images come from.
#[derive(Clone, Copy)]
pub enum PretrainingImages<'a> {
    Pixels,
    Regions(&'a RegionFeatures),
}

/// Detector label counts of a feature file: largest id + 1 of objects and attributes.
fn label_counts(features: &RegionFeatures, split: &ClassificationSplit) -> (usize, usize) {
    let ids: Vec<u64> = split.examples.iter().map(|e| e.image_id).collect();
    let mut max = (-1i64, -1i64);
    for chunk in ids.chunks(256) {
        if let Ok(batch) = features.batch::<burn::backend::NdArray>(chunk, &Default::default()) {
            max.0 = max.0.max(batch.objects.max().into_scalar());
            max.1 = max.1.max(batch.attributes.max().into_scalar());
        }
    }
    ((max.0 + 1).max(1) as usize, (max.1 + 1).max(1) as usize)
}

/// Pretraining as a task of the engine.
pub struct PretrainTask<'a> {
    config: &'a PretrainLxmertConfig,
    data: &'a PreparedData,
    images: PretrainingImages<'a>,
    n_regions: usize,
    recipe: BatchRecipe,
    out_dir: &'a Path,
}

impl<'a> PretrainTask<'a> {
    /// The task of pretraining `model_config` under `config` on `data`, writing charts to
    /// `out_dir`.
    pub fn new(
        config: &'a PretrainLxmertConfig,
        model_config: &LxmertPretrainingConfig,
        data: &'a PreparedData,
        images: PretrainingImages<'a>,
        out_dir: &'a Path,
    ) -> Self {
        Self {
            config,
            data,
            images,
            n_regions: model_config
                .lxmert
                .pixels
                .as_ref()
                .map_or(0, PatchEncoderConfig::n_regions),
            recipe: BatchRecipe {
                objectives: config.objectives,
                masking: config.masking,
                special: data.tokenizer.special,
                vocab_size: data.tokenizer.vocab_size(),
            },
            out_dir,
        }
    }

    fn batch<B: Backend>(
        &self,
        split: &ClassificationSplit,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<PretrainingBatch<B>, TrainError> {
        match self.images {
            PretrainingImages::Pixels => Ok(pixel_batch(
                split,
                indices,
                self.n_regions,
                &self.recipe,
                rng,
                device,
            )),
            PretrainingImages::Regions(features) => {
                region_batch(split, features, indices, &self.recipe, rng, device)
                    .map_err(|e| TrainError::Task(Box::new(e)))
            }
        }
    }
}

impl<B: AutodiffBackend> TrainingTask<B> for PretrainTask<'_> {
    type Model = LxmertPretraining<B>;
    type Aux = ();
    type Evaluation = PretrainEvaluation;

    fn n_train(&self) -> usize {
        self.data.train.len()
    }

    fn uses_backend_random(&self) -> bool {
        self.config.model.dropout > 0.0
    }

    fn loss(
        &self,
        model: &LxmertPretraining<B>,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let batch = self.batch::<B>(&self.data.train, indices, rng, device)?;
        let losses = model.losses(batch, self.config.objectives);
        let parts = ObjectiveLosses::NAMES
            .iter()
            .zip([
                losses.masked_language,
                losses.object_feature,
                losses.object_label,
                losses.object_attribute,
                losses.matching,
            ])
            .filter_map(|(name, value)| value.map(|v| (*name, v)))
            .collect();
        Ok(StepOutput {
            losses: Losses {
                total: losses.total,
                parts,
            },
            aux: (),
        })
    }

    fn evaluate(
        &self,
        model: &LxmertPretraining<B::InnerBackend>,
        _epoch: usize,
        device: &B::Device,
    ) -> Result<PretrainEvaluation, TrainError> {
        evaluate_pretraining(self, model, device)
    }

    fn charts(&self, history: &[EpochLog<PretrainEvaluation>]) -> Result<(), TrainError> {
        Ok(write_curves(self.out_dir, history)?)
    }
}

/// Pretrains on prepared data into `out_dir` (resuming a partial run there). Used by the
/// `pretrain-lxmert` binary and by `classify` for its pretrained LXMERT row.
pub fn pretrain_on<B: AutodiffBackend>(
    config: &PretrainLxmertConfig,
    data: &PreparedData,
    images: PretrainingImages,
    out_dir: &Path,
    device: &B::Device,
    multi: &MultiProgress,
    log_every: usize,
) -> Result<PretrainResult, PretrainError> {
    let run_dir = RunDir::new(out_dir)?;
    if let Some(result) = run_dir.finished()? {
        return Ok(result);
    }
    if !config.objectives.any() {
        return Err(PretrainError::Config(
            "every objective is switched off; keep at least one of masked LM, masked objects and matching".into(),
        ));
    }
    let model_config = match images {
        PretrainingImages::Pixels => {
            config.model_config(data.tokenizer.vocab_size(), None, None, None)
        }
        PretrainingImages::Regions(features) => {
            let (objects, attributes) = label_counts(features, &data.train);
            config.model_config(
                data.tokenizer.vocab_size(),
                Some(features),
                Some(objects),
                Some(attributes),
            )
        }
    };
    let task = PretrainTask::new(config, &model_config, data, images, out_dir);
    let model: LxmertPretraining<B> =
        seeded_init::<B, _>(config.budget.seed, device, || model_config.init(device));
    let display = RunDisplay {
        name: "lxmert pretraining".into(),
        progress: multi,
        log_every,
    };
    let trained = train(&task, model, &config.budget, &run_dir, &display, device)?;
    let result = PretrainResult {
        n_params: trained.n_params,
        train_images: data.train.len(),
        val_images: data.val.len(),
        samples_per_second: trained.samples_per_second(data.train.len()),
        history: trained.history,
    };
    let model = trained.model;
    save_safetensors(&model.lxmert, &out_dir.join("lxmert.safetensors"))?;
    write_atomic(
        &out_dir.join("lxmert-config.json"),
        &serde_json::to_vec_pretty(&model_config.lxmert).expect("config serialises"),
    )?;
    save_safetensors(&model, &out_dir.join("pretraining.safetensors"))?;
    write_atomic(
        &out_dir.join("pretraining-config.json"),
        &serde_json::to_vec_pretty(&model_config).expect("config serialises"),
    )?;
    training_report("LXMERT pretraining", out_dir, config, &result.history, None)?;
    run_dir.finish(&result)?;
    Ok(result)
}

/// Held-out losses with masks drawn from a fixed seed (the same every epoch), and the matching
/// head's accuracy.
fn evaluate_pretraining<B: Backend>(
    task: &PretrainTask,
    model: &LxmertPretraining<B>,
    device: &B::Device,
) -> Result<PretrainEvaluation, TrainError> {
    let val = &task.data.val;
    let mut rng = StdRng::seed_from_u64(0x5eed_0e7a);
    let mut sums = LossSums::<B>::new();
    let (mut correct, mut total) = (0usize, 0usize);
    let indices: Vec<usize> = (0..val.len()).collect();
    for chunk in indices.chunks(task.config.budget.batch_size) {
        let batch = task.batch::<B>(val, chunk, &mut rng, device)?;
        let losses = model.losses(batch, task.config.objectives);
        if let Some(hits) = &losses.matching_correct {
            correct += hits.clone().into_scalar().elem::<f64>() as usize;
            total += chunk.len();
        }
        sums.add(&losses);
    }
    Ok(PretrainEvaluation {
        losses: sums.means(),
        matching_accuracy: task
            .config
            .objectives
            .matching
            .then(|| correct as f64 / total.max(1) as f64),
    })
}

fn write_curves(
    out_dir: &Path,
    history: &[EpochLog<PretrainEvaluation>],
) -> Result<(), CheckpointError> {
    type Pick = fn(&EpochLog<PretrainEvaluation>) -> [Option<f64>; 5];
    let splits: [(&str, &str, Pick); 2] = [
        ("curve-loss.png", "training", |h| {
            ObjectiveLosses::NAMES.map(|name| h.train.get(name))
        }),
        ("curve-val-loss.png", "held-out", |h| h.eval.losses.parts()),
    ];
    for (file, split, pick) in splits {
        let series: Vec<Series> = ObjectiveLosses::NAMES
            .iter()
            .enumerate()
            .map(|(index, name)| Series {
                name: name.to_string(),
                points: history
                    .iter()
                    .filter_map(|h| pick(h)[index].map(|v| (h.epoch as f64, v)))
                    .collect(),
                color: index,
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        line_chart(
            &out_dir.join(file),
            &format!("LXMERT pretraining: {split} loss per objective"),
            "epoch",
            "loss",
            &series,
        )?;
    }
    let accuracy: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|h| h.eval.matching_accuracy.map(|a| (h.epoch as f64, a)))
        .collect();
    if !accuracy.is_empty() {
        line_chart_with_references(
            &out_dir.join("curve-matching-accuracy.png"),
            "Held-out image-text matching accuracy",
            "epoch",
            "accuracy",
            &[Series {
                name: "matching".into(),
                points: accuracy,
                color: 0,
            }],
            &[Reference {
                name: "chance".into(),
                y: 0.5,
            }],
        )?;
    }
    Ok(())
}

/// Prepares the data (generating the synthetic set when no COCO root is given), claims the
/// output directory and pretrains.
pub fn pretrain_lxmert<B: AutodiffBackend>(
    config: &PretrainLxmertConfig,
    paths: &RunPaths,
    device: &B::Device,
    show_progress: bool,
    log_every: usize,
) -> Result<PretrainResult, PretrainError> {
    config.budget.validate()?;
    if config.features.is_none() {
        let size = config.data.image_size;
        if let Some(patch) = config.model.pixels.as_ref().map(|p| p.patch_size) {
            if size == 0 || !size.is_multiple_of(patch) {
                return Err(PretrainError::Config(format!(
                    "--image-size {size} must be a positive multiple of the patch size {patch}"
                )));
            }
        }
    }
    RunDir::claim(&paths.out_dir, config, &["tokenizer.json"])?;
    let data = prepare_data(&config.data, paths, show_progress)?;
    for line in data.skipped.summary() {
        eprintln!("skipped {line}");
    }
    let features = config
        .features
        .as_deref()
        .map(RegionFeatures::open)
        .transpose()?;
    if let Some(features) = &features {
        for split in [&data.train, &data.val] {
            features.check_covers(split.examples.iter().map(|e| e.image_id))?;
        }
    }
    eprintln!(
        "data: {} train / {} held-out images, vocabulary {}, {}",
        data.train.len(),
        data.val.len(),
        data.tokenizer.vocab_size(),
        match &features {
            Some(f) => format!(
                "region features from {} ({} boxes x {})",
                f.path().display(),
                f.max_boxes(),
                f.d_feature()
            ),
            None => "regions from pixels (patch encoder)".into(),
        }
    );
    let images = match &features {
        Some(f) => PretrainingImages::Regions(f),
        None => PretrainingImages::Pixels,
    };
    let multi = progress::multi(show_progress);
    pretrain_on::<B>(
        config,
        &data,
        images,
        &paths.out_dir,
        device,
        &multi,
        log_every,
    )
}
