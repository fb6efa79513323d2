//! LXMERT pretraining (paper section 3), in stages: masked language modelling, masked object
//! prediction, cross-modality matching and image-text contrastive alignment on image-caption
//! pairs, with per-epoch checkpoints, held-out losses and loss curves.
//!
//! Images come from raw pixels through the model's patch encoder (no detector; masked patches
//! regress their quadrant colours) or from a converted LXMERT feature file (masked regions
//! regress their detector features and classify their detector object and attribute labels).
//!
//! A finished run directory holds `config.json`, `tokenizer.json`, `lxmert.safetensors` +
//! `lxmert-config.json` (the encoder, which `classify` fine-tunes), `pretraining.safetensors`
//! (with the heads), `result.json`, `curve-loss.png` (training), `curve-val-loss.png` (held-out)
//! and `curve-matching-accuracy.png`; with several stages, `stage-<k>/` each.
//!
//! The run's config is [`crate::train::lxmert_pretrain::config`], its stages
//! [`crate::train::lxmert_pretrain::stages`], one stage's engine task [`crate::train::lxmert_pretrain::task`].

pub(super) mod config;
pub(super) mod evaluation;
pub(super) mod stages;
pub(super) mod task;

use std::path::Path;

use crate::nn::AutodiffBackend;
use indicatif::MultiProgress;

use crate::data::image_cache::CHUNK;
use crate::data::RegionFeatures;
use crate::data::{prepare_data, PreparedData};
use crate::io::progress;
use crate::train::engine::memory::MemoryNeed;
use crate::train::engine::run_dir::RunDir;
use crate::train::engine::{Feed, RunOptions};
pub use crate::train::lxmert_pretrain::config::{
    budgets, fill_lxmert, lxmert_presets, stage_presets, stages_text, PretrainLxmertConfig,
    PretrainStage,
};
pub use crate::train::lxmert_pretrain::evaluation::{ObjectiveLosses, PretrainEvaluation};
use crate::train::lxmert_pretrain::stages::StagedPretraining;
pub use crate::train::lxmert_pretrain::task::{
    PretrainError, PretrainResult, PretrainTask, PretrainingImages,
};
use crate::train::RunPaths;
/// Pretrains on prepared data into `out_dir` (resuming a partial run there), stage after
/// stage ([`crate::train::lxmert_pretrain::stages`]). Used by the `pretrain-lxmert` binary and by
/// `classify` for its pretrained LXMERT row.
pub fn pretrain_on<B: AutodiffBackend>(
    config: &PretrainLxmertConfig,
    data: &PreparedData,
    images: PretrainingImages,
    out_dir: &Path,
    devices: &[B::Device],
    multi: &MultiProgress,
    feed: Feed,
) -> Result<PretrainResult, PretrainError> {
    let pretraining = StagedPretraining::<B> {
        config,
        data,
        images,
        devices,
        multi,
        feed,
    };
    pretraining.run(out_dir)
}

/// Prepares the data (generating the synthetic set when no COCO root is given), claims the
/// output directory and pretrains.
pub fn pretrain_lxmert<B: AutodiffBackend>(
    config: &PretrainLxmertConfig,
    paths: &RunPaths,
    devices: &[B::Device],
    options: RunOptions,
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
    crate::train::engine::run_dir::removed_on_early_failure(
        &paths.out_dir,
        || -> Result<PretrainResult, PretrainError> {
            RunDir::claim(&paths.out_dir, config, &["tokenizer.json"])?;
            let data = prepare_data(&config.data, paths, options.show_progress)?;
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
            let multi = progress::multi(options.show_progress);
            pretrain_on::<B>(
                config,
                &data,
                images,
                &paths.out_dir,
                devices,
                &multi,
                options.feed,
            )
        },
    )
}
