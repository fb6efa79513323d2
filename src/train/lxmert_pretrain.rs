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
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use indicatif::MultiProgress;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    assign_stable_param_ids, claim_run_dir, save_safetensors, write_atomic, CheckpointError,
};
use super::classify::{prepare_data, ClassifyConfig, ClassifyError, DataConfig, PreparedData};
use super::epoch_checkpoints::{epoch_seed, EpochCheckpoints, RunState};
use super::plots::{line_chart, Series};
use super::progress;
use super::schedule::WarmupCosine;
use super::RunPaths;
use crate::data::lxmert_pretraining::{pixel_batch, region_batch, BatchRecipe, MaskingConfig};
use crate::data::{ClassificationSplit, RegionFeatureError, RegionFeatures};
use crate::models::lxmert::{
    LxmertConfig, LxmertPretraining, LxmertPretrainingConfig, Objectives, PretrainingBatch,
    PretrainingLosses, PATCH_TARGET_WIDTH,
};
use crate::nn::PatchEncoderConfig;

/// The size of an LXMERT model, apart from what the data fixes (vocabulary, feature width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LxmertSize {
    pub d_model: usize,
    pub n_heads: usize,
    pub d_hidden: usize,
    pub n_language_layers: usize,
    pub n_object_layers: usize,
    pub n_cross_layers: usize,
    /// Pixel input: side of one patch, width of the stem and of each patch feature.
    pub patch_size: usize,
    pub stem_channels: usize,
    pub d_feature: usize,
    pub dropout: f64,
}

impl LxmertSize {
    /// 2/1/1 layers of width 64: pretrains in minutes on a 2-core CPU.
    pub fn small() -> Self {
        Self {
            d_model: 64,
            n_heads: 4,
            d_hidden: 256,
            n_language_layers: 2,
            n_object_layers: 1,
            n_cross_layers: 1,
            patch_size: 12,
            stem_channels: 16,
            d_feature: 64,
            dropout: 0.0,
        }
    }

    /// The released model: 9/5/5 layers, 768 wide, 12 heads; 32-pixel patches for pixels.
    pub fn base() -> Self {
        Self {
            d_model: 768,
            n_heads: 12,
            d_hidden: 3072,
            n_language_layers: 9,
            n_object_layers: 5,
            n_cross_layers: 5,
            patch_size: 32,
            stem_channels: 64,
            d_feature: 768,
            dropout: 0.1,
        }
    }

    /// The model config: reading pixels of `image_size` (`Some`) or region features of width
    /// `region_features` (`image_size` `None`).
    pub fn config(
        &self,
        vocab_size: usize,
        image_size: Option<usize>,
        region_features: usize,
        max_positions: usize,
    ) -> LxmertConfig {
        let d_feature = if image_size.is_some() {
            self.d_feature
        } else {
            region_features
        };
        LxmertConfig::new(vocab_size, d_feature)
            .with_d_model(self.d_model)
            .with_n_heads(self.n_heads)
            .with_d_hidden(self.d_hidden)
            .with_n_language_layers(self.n_language_layers)
            .with_n_object_layers(self.n_object_layers)
            .with_n_cross_layers(self.n_cross_layers)
            .with_max_positions(max_positions)
            .with_dropout(self.dropout)
            .with_pixels(image_size.map(|size| {
                PatchEncoderConfig::new(size, self.patch_size, self.d_feature)
                    .with_stem_channels(self.stem_channels)
            }))
    }
}

/// The optimisation budget of pretraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainingBudget {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_fraction: f64,
    pub grad_clip: f64,
    pub seed: u64,
}

impl PretrainingBudget {
    /// A 2-core CPU on the synthetic set: a few minutes.
    pub fn synthetic() -> Self {
        Self {
            epochs: 6,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 0.01,
            warmup_fraction: 0.1,
            grad_clip: 1.0,
            seed: 0,
        }
    }

    /// LXMERT's schedule: 20 epochs of batch 256 at lr 1e-4.
    pub fn coco() -> Self {
        Self {
            epochs: 20,
            batch_size: 256,
            learning_rate: 1e-4,
            ..Self::synthetic()
        }
    }
}

/// The whole pretraining run, saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainLxmertConfig {
    pub data: DataConfig,
    /// A feature file from `lxmert-features convert`; `None` reads pixels.
    pub features: Option<PathBuf>,
    pub model: LxmertSize,
    pub objectives: Objectives,
    pub masking: MaskingConfig,
    pub budget: PretrainingBudget,
}

impl PretrainLxmertConfig {
    /// The built-in synthetic set at the `classify` preset's image size and vocabulary.
    pub fn synthetic() -> Self {
        Self {
            data: ClassifyConfig::synthetic().data,
            features: None,
            model: LxmertSize::small(),
            objectives: Objectives::ALL,
            masking: MaskingConfig::default(),
            budget: PretrainingBudget::synthetic(),
        }
    }

    /// MSCOCO 2014 captions on a GPU: the base model, LXMERT's batch 256 and lr 1e-4.
    pub fn coco(root: PathBuf) -> Self {
        let mut config = Self::synthetic();
        config.data = ClassifyConfig::coco(root).data;
        config.model = LxmertSize::base();
        config.budget = PretrainingBudget::coco();
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
        let max_positions = self.data.max_text_len + 2;
        match features {
            None => LxmertPretrainingConfig::new(
                self.model
                    .config(vocab_size, Some(self.data.image_size), 0, max_positions),
                PATCH_TARGET_WIDTH,
            ),
            Some(features) => LxmertPretrainingConfig::new(
                self.model
                    .config(vocab_size, None, features.d_feature(), max_positions),
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
    Prepare(#[from] ClassifyError),
    #[error(transparent)]
    Features(#[from] RegionFeatureError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Config(String),
    #[error("the pretraining loss became {value} in epoch {epoch} ({objective}); lower --lr or check the data. The checkpoint of the previous epoch is kept")]
    NonFiniteLoss {
        epoch: usize,
        objective: &'static str,
        value: f64,
    },
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

    fn summary(&self) -> String {
        let parts: Vec<String> = Self::NAMES
            .iter()
            .zip(self.parts())
            .filter_map(|(name, v)| v.map(|v| format!("{name} {v:.3}")))
            .collect();
        format!("{:.3} ({})", self.total, parts.join(", "))
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

/// One epoch's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainEpochLog {
    pub epoch: usize,
    pub learning_rate: f64,
    pub train: ObjectiveLosses,
    pub val: ObjectiveLosses,
    /// Held-out accuracy of the matching head on half-swapped pairs (chance: 0.5).
    pub val_matching_accuracy: Option<f64>,
    pub train_seconds: f64,
    pub samples_per_second: f64,
}

/// What `result.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainResult {
    pub n_params: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub samples_per_second: f64,
    pub history: Vec<PretrainEpochLog>,
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

/// Pretrains on prepared data into `out_dir` (resuming a partial run there). Used by the
/// `pretrain-lxmert` binary and by `classify` for its pretrained LXMERT row.
pub fn pretrain_on<B: AutodiffBackend>(
    config: &PretrainLxmertConfig,
    data: &PreparedData,
    images: PretrainingImages,
    out_dir: &Path,
    device: &B::Device,
    multi: &MultiProgress,
) -> Result<PretrainResult, PretrainError> {
    let result_path = out_dir.join("result.json");
    if result_path.exists() {
        return Ok(super::checkpoint::read_json(&result_path)?);
    }
    let budget = &config.budget;
    if budget.epochs == 0 || budget.batch_size == 0 {
        return Err(PretrainError::Config(
            "epochs and batch size must be at least 1".into(),
        ));
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
    let n_regions = model_config
        .lxmert
        .pixels
        .as_ref()
        .map_or(0, PatchEncoderConfig::n_regions);
    let recipe = BatchRecipe {
        objectives: config.objectives,
        masking: config.masking,
        special: data.tokenizer.special,
        vocab_size: data.tokenizer.vocab_size(),
    };
    let make_batch = |split: &ClassificationSplit,
                      indices: &[usize],
                      rng: &mut StdRng|
     -> Result<PretrainingBatch<B>, RegionFeatureError> {
        match images {
            PretrainingImages::Pixels => {
                Ok(pixel_batch(split, indices, n_regions, &recipe, rng, device))
            }
            PretrainingImages::Regions(features) => {
                region_batch(split, features, indices, &recipe, rng, device)
            }
        }
    };

    B::seed(device, budget.seed);
    let model: LxmertPretraining<B> = assign_stable_param_ids(model_config.init(device));
    let n_params = model.num_params();
    let optimizer = AdamWConfig::new()
        .with_weight_decay(budget.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(budget.grad_clip as f32)))
        .init::<B, LxmertPretraining<B>>();
    let checkpoints = EpochCheckpoints::new(out_dir);
    let (mut model, mut optimizer, state) =
        checkpoints.resume::<B, _, _, PretrainEpochLog>(model, optimizer, device)?;
    let mut history = state.history;
    if state.epochs_done > 0 {
        progress::println(
            multi,
            &format!(
                "[lxmert pretraining] resuming after epoch {}",
                state.epochs_done
            ),
        );
    }

    let train = &data.train;
    let steps_per_epoch = train.len().div_ceil(budget.batch_size);
    let schedule = WarmupCosine::new(
        budget.learning_rate,
        steps_per_epoch * budget.epochs,
        budget.warmup_fraction,
        0.05,
    );
    for epoch in state.epochs_done..budget.epochs {
        let seed = epoch_seed(budget.seed, epoch);
        B::seed(device, seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let bar = progress::bar_in(
            multi,
            steps_per_epoch as u64,
            &format!("lxmert pretraining epoch {}/{}", epoch + 1, budget.epochs),
        );
        let started = Instant::now();
        let mut sums = LossSums::<B::InnerBackend>::new();
        let mut lr = schedule.at(0);
        for (step, chunk) in order.chunks(budget.batch_size).enumerate() {
            lr = schedule.at(epoch * steps_per_epoch + step);
            let batch = make_batch(train, chunk, &mut rng)?;
            let losses = model.losses(batch, config.objectives);
            sums.add(&inner_losses(&losses));
            let grads = GradientsParams::from_grads(losses.total.backward(), &model);
            model = optimizer.step(lr, model, grads);
            bar.inc(1);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        multi.remove(&bar);
        let train_losses = sums.means();
        for (name, value) in ObjectiveLosses::NAMES
            .iter()
            .zip(train_losses.parts())
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .chain(std::iter::once((&"total", train_losses.total)))
        {
            if !value.is_finite() {
                return Err(PretrainError::NonFiniteLoss {
                    epoch: epoch + 1,
                    objective: name,
                    value,
                });
            }
        }
        let (val, val_matching_accuracy) = evaluate_pretraining(
            &model.valid(),
            config,
            &data.val,
            images,
            n_regions,
            &recipe,
            device,
        )?;
        let log = PretrainEpochLog {
            epoch: epoch + 1,
            learning_rate: lr,
            train: train_losses,
            val,
            val_matching_accuracy,
            train_seconds,
            samples_per_second: train.len() as f64 / train_seconds.max(1e-9),
        };
        progress::println(
            multi,
            &format!(
                "[lxmert pretraining] epoch {}/{}: train {}; held-out {}{} ({:.1}s, {:.0} samples/s)",
                log.epoch,
                budget.epochs,
                log.train.summary(),
                log.val.summary(),
                log.val_matching_accuracy
                    .map_or(String::new(), |a| format!(", matching accuracy {a:.3}")),
                train_seconds,
                log.samples_per_second
            ),
        );
        history.push(log);
        checkpoints.commit::<B, _, _, _>(
            &model,
            &optimizer,
            &RunState {
                epochs_done: epoch + 1,
                history: history.clone(),
            },
        )?;
        write_curves(out_dir, &history)?;
    }

    let seconds: f64 = history.iter().map(|h| h.train_seconds).sum();
    let result = PretrainResult {
        n_params,
        train_images: train.len(),
        val_images: data.val.len(),
        samples_per_second: (train.len() * history.len()) as f64 / seconds.max(1e-9),
        history,
    };
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
    write_atomic(
        &result_path,
        &serde_json::to_vec_pretty(&result).expect("result serialises"),
    )?;
    checkpoints.finish(budget.epochs);
    Ok(result)
}

fn inner_losses<B: AutodiffBackend>(
    losses: &PretrainingLosses<B>,
) -> PretrainingLosses<B::InnerBackend> {
    let inner = |t: &Option<Tensor<B, 1>>| t.clone().map(|t| t.inner());
    PretrainingLosses {
        masked_language: inner(&losses.masked_language),
        object_feature: inner(&losses.object_feature),
        object_label: inner(&losses.object_label),
        object_attribute: inner(&losses.object_attribute),
        matching: inner(&losses.matching),
        matching_correct: losses.matching_correct.clone().map(|t| t.inner()),
        total: losses.total.clone().inner(),
    }
}

/// Held-out losses with masks drawn from a fixed seed (the same every epoch), and the matching
/// head's accuracy.
fn evaluate_pretraining<B: Backend>(
    model: &LxmertPretraining<B>,
    config: &PretrainLxmertConfig,
    val: &ClassificationSplit,
    images: PretrainingImages,
    n_regions: usize,
    recipe: &BatchRecipe,
    device: &B::Device,
) -> Result<(ObjectiveLosses, Option<f64>), RegionFeatureError> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0e7a);
    let mut sums = LossSums::<B>::new();
    let (mut correct, mut total) = (0usize, 0usize);
    let indices: Vec<usize> = (0..val.len()).collect();
    for chunk in indices.chunks(config.budget.batch_size) {
        let batch = match images {
            PretrainingImages::Pixels => {
                pixel_batch(val, chunk, n_regions, recipe, &mut rng, device)
            }
            PretrainingImages::Regions(features) => {
                region_batch(val, features, chunk, recipe, &mut rng, device)?
            }
        };
        let losses = model.losses(batch, config.objectives);
        if let Some(hits) = &losses.matching_correct {
            correct += hits.clone().into_scalar().elem::<f64>() as usize;
            total += chunk.len();
        }
        sums.add(&losses);
    }
    let accuracy = config
        .objectives
        .matching
        .then(|| correct as f64 / total.max(1) as f64);
    Ok((sums.means(), accuracy))
}

fn write_curves(out_dir: &Path, history: &[PretrainEpochLog]) -> Result<(), CheckpointError> {
    type Pick = fn(&PretrainEpochLog) -> [Option<f64>; 5];
    let splits: [(&str, &str, Pick); 2] = [
        ("curve-loss.png", "training", |h| h.train.parts()),
        ("curve-val-loss.png", "held-out", |h| h.val.parts()),
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
        .filter_map(|h| h.val_matching_accuracy.map(|a| (h.epoch as f64, a)))
        .collect();
    if !accuracy.is_empty() {
        line_chart(
            &out_dir.join("curve-matching-accuracy.png"),
            "Held-out image-text matching accuracy (chance 0.5)",
            "epoch",
            "accuracy",
            &[Series {
                name: "matching".into(),
                points: accuracy,
                color: 0,
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
) -> Result<PretrainResult, PretrainError> {
    std::fs::create_dir_all(&paths.out_dir).map_err(|source| CheckpointError::Io {
        path: paths.out_dir.clone(),
        source,
    })?;
    claim_run_dir(&paths.out_dir, config)?;
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
    pretrain_on::<B>(config, &data, images, &paths.out_dir, device, &multi)
}
