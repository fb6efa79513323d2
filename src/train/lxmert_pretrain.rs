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

use std::path::Path;

use crate::nn::{AutodiffBackend, Backend};
use indicatif::MultiProgress;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::engine::{seeded_init, train_on, Feed, Losses, RunDisplay, StepOutput, TrainingTask};
pub use super::lxmert_pretrain_config::{
    budgets, fill_lxmert, lxmert_presets, PretrainLxmertConfig,
};
use super::lxmert_pretrain_eval::{evaluate_pretraining, write_curves};
pub use super::lxmert_pretrain_eval::{ObjectiveLosses, PretrainEvaluation};
use super::memory::MemoryNeed;
use super::report::training_report;
use super::run_dir::{EpochLog, RunDir};
use super::{RunPaths, TrainError};
use crate::data::image_cache::CHUNK;
use crate::data::lxmert_pretraining::{pixel_batch, region_batch, BatchRecipe};
use crate::data::{prepare_data, LoadError, PreparedData};
use crate::data::{ClassificationSplit, RegionFeatureError, RegionFeatures};
use crate::io::checkpoint::{save_safetensors, write_atomic, CheckpointError};
use crate::io::progress;
use crate::models::lxmert::hf::load_lxmert_pretraining;
use crate::models::lxmert::{LxmertPretraining, LxmertPretrainingConfig, PretrainingBatch};
use crate::nn::HfWeightsError;
use crate::nn::PatchEncoderConfig;

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
    #[error(transparent)]
    Weights(#[from] HfWeightsError),
    #[error("{0}")]
    Config(String),
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
                object_tokens: data.object_tokens.clone(),
            },
            out_dir,
        }
    }

    fn split_batch<B: Backend>(
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

    type Batch = PretrainingBatch<B>;

    fn batch(
        &self,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<PretrainingBatch<B>, TrainError> {
        self.split_batch::<B>(&self.data.train, indices, rng, device)
    }

    fn loss(
        &self,
        model: &LxmertPretraining<B>,
        batch: PretrainingBatch<B>,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let losses = model.losses(batch, self.config.objectives);
        let parts = ObjectiveLosses::NAMES
            .iter()
            .zip([
                losses.masked_language,
                losses.object_feature,
                losses.object_label,
                losses.object_attribute,
                losses.matching,
                losses.contrastive,
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
        let val = &self.data.val;
        evaluate_pretraining(
            model,
            val.len(),
            self.config.budget.batch_size,
            self.config.objectives,
            |indices, rng| self.split_batch::<B::InnerBackend>(val, indices, rng, device),
        )
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
    devices: &[B::Device],
    multi: &MultiProgress,
    feed: Feed,
) -> Result<PretrainResult, PretrainError> {
    let device = &devices[0];
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
    let mut model: LxmertPretraining<B> =
        seeded_init::<B, _>(config.budget.seed, device, || model_config.init(device));
    if let Some(weights) = &config.weights {
        if data.tokenizer.vocab_size() != model_config.lxmert.vocab_size {
            return Err(PretrainError::Config(format!(
                "the tokenizer has {} entries but {} was trained with {}: give the checkpoint's vocabulary (its folder's vocab.txt or tokenizer.json) as --tokenizer",
                data.tokenizer.vocab_size(),
                weights.display(),
                model_config.lxmert.vocab_size
            )));
        }
        let load = load_lxmert_pretraining(model, weights)?;
        eprintln!("{}", load.summary(weights));
        model = load.model;
    }
    let display = RunDisplay {
        name: "lxmert pretraining".into(),
        progress: multi,
        feed,
    };
    let trained = train_on(&task, model, &config.budget, &run_dir, &display, devices)?;
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

/// Prepares the data (generating the synthetic set when no COCO root is given), claims the
/// output directory and pretrains.
pub fn pretrain_lxmert<B: AutodiffBackend>(
    config: &PretrainLxmertConfig,
    paths: &RunPaths,
    devices: &[B::Device],
    show_progress: bool,
    feed: Feed,
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
    if let (None, Some(pixels)) = (&config.features, &config.model.pixels) {
        let (size, m) = (config.data.image_size, &config.model);
        MemoryNeed::new()
            .image_cache(config.data.max_train_images.unwrap_or(CHUNK), size)
            .transformer(
                "LXMERT object stream",
                config.budget.batch_size,
                (size / pixels.patch_size).pow(2),
                m.n_heads,
                m.d_hidden,
                m.n_object_layers + 2 * m.n_cross_layers,
            )
            .check("--image-size or --batch-size")
            .map_err(PretrainError::Config)?;
    }
    // Everything below writes into the run directory; a failure before the first epoch
    // removes what it made (see `removed_on_early_failure`).
    super::run_dir::removed_on_early_failure(
        &paths.out_dir,
        || -> Result<PretrainResult, PretrainError> {
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
                if let (Some(weights), false) = (
                    &config.weights,
                    features.d_feature() == config.model.d_feature,
                ) {
                    return Err(PretrainError::Config(format!(
                        "{} holds {}-wide region features, but {} reads {}-wide ones (visual_feat_dim)",
                        features.path().display(),
                        features.d_feature(),
                        weights.display(),
                        config.model.d_feature
                    )));
                }
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
            pretrain_on::<B>(config, &data, images, &paths.out_dir, devices, &multi, feed)
        },
    )
}
