//! One pretraining stage as a task of the engine: batches (pixels or region features, masked
//! and swapped per the stage's objectives), the summed loss of the objectives, the held-out
//! evaluation; and what a run returns or stops with.

use crate::nn::{AutodiffBackend, Backend};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::data::lxmert_pretraining::{pixel_batch, region_batch, BatchRecipe};
use crate::data::{ClassificationSplit, RegionFeatureError, RegionFeatures};
use crate::data::{LoadError, PreparedData};
use crate::io::checkpoint::CheckpointError;
use crate::models::lxmert::{
    LxmertPretraining, LxmertPretrainingConfig, Objectives, PretrainingBatch,
};
use crate::nn::HfWeightsError;
use crate::nn::PatchEncoderConfig;
use crate::train::engine::run_dir::EpochLog;
use crate::train::engine::{Losses, StepOutput, TrainingTask};
use crate::train::lxmert_pretrain::config::PretrainLxmertConfig;
use crate::train::lxmert_pretrain::evaluation::{evaluate_pretraining, write_curves};
use crate::train::lxmert_pretrain::evaluation::{ObjectiveLosses, PretrainEvaluation};
use crate::train::TrainError;

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
    /// Every epoch of every stage, numbered on through the stages.
    pub history: Vec<EpochLog<PretrainEvaluation>>,
    /// The stages as run (`contrastive:10`, ...); results written before stages existed
    /// read as one unnamed stage.
    #[serde(default)]
    pub stages: Vec<String>,
}

/// Where the images come from.
#[derive(Clone, Copy)]
pub enum PretrainingImages<'a> {
    Pixels,
    Regions(&'a RegionFeatures),
}

/// Detector label counts of a feature file: largest id + 1 of objects and attributes.
pub(super) fn label_counts(
    features: &RegionFeatures,
    split: &ClassificationSplit,
) -> (usize, usize) {
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
    /// The objectives of the stage being trained.
    objectives: Objectives,
    data: &'a PreparedData,
    images: PretrainingImages<'a>,
    n_regions: usize,
    recipe: BatchRecipe,
    out_dir: &'a Path,
}

impl<'a> PretrainTask<'a> {
    /// The task of pretraining `model_config` with `objectives` under `config` on `data`,
    /// writing charts to `out_dir`.
    pub fn new(
        config: &'a PretrainLxmertConfig,
        objectives: Objectives,
        model_config: &LxmertPretrainingConfig,
        data: &'a PreparedData,
        images: PretrainingImages<'a>,
        out_dir: &'a Path,
    ) -> Self {
        Self {
            config,
            objectives,
            data,
            images,
            n_regions: model_config
                .lxmert
                .pixels
                .as_ref()
                .map_or(0, PatchEncoderConfig::n_regions),
            recipe: BatchRecipe {
                objectives,
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
        let losses = model.losses(batch, self.objectives);
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
            self.objectives,
            |indices, rng| self.split_batch::<B::InnerBackend>(val, indices, rng, device),
        )
    }

    fn charts(&self, history: &[EpochLog<PretrainEvaluation>]) -> Result<(), TrainError> {
        Ok(write_curves(self.out_dir, history)?)
    }
}
