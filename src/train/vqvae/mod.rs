//! Training the VQ-VAE image tokenizer, with per-epoch checkpoints, metrics (reconstruction
//! loss, PSNR, codebook perplexity and usage), curves and reconstruction grids; at the end the
//! splits are encoded into image-token files for the DALL-E stage.
//!
//! An output directory holds:
//! - `config.json`: the run's [`TrainVqVaeConfig`] (a later run there resumes only if equal);
//! - `reconstructions/epoch-NNN.png`: held-out inputs (odd rows) above their reconstructions;
//! - `curve-loss.png`, `curve-psnr.png`, `curve-perplexity.png`, `curve-codes-used.png`;
//! - when done: `vqvae.safetensors`, `vqvae-config.json`, `result.json` and
//!   `tokens-<split>.safetensors` for both splits.

pub(super) mod evaluation;

use std::path::{Path, PathBuf};

use crate::nn::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::data::image_cache::CHUNK;
use crate::data::{
    checkpoint_fingerprint, dataset_root, BadEntryPolicy, CocoSplit, DataError, ImageSplit,
    ImageTokensError, SyntheticCocoConfig, SyntheticError,
};
pub use crate::inference::vqvae::{
    decode_codes, decode_tokens, encode_split, token_file_path, TrainedVqVae, TrainedVqVaeConfig,
};
use crate::inference::ArtifactError;
use crate::io::checkpoint::{save_safetensors, write_atomic, CheckpointError};
use crate::io::progress;
use crate::models::vqvae::{VqVae, VqVaeConfig};
use crate::train::engine::budget::Budget;
use crate::train::engine::memory::MemoryNeed;
use crate::train::engine::run_dir::{EpochLog, RunDir};
use crate::train::engine::{
    seeded_init, train, Losses, RunDisplay, RunOptions, StepOutput, TrainingTask,
};
use crate::train::report::training_report;
pub use crate::train::vqvae::evaluation::{
    codebook_usage, evaluate_vqvae, mean_image_psnr, psnr, VqVaeEvaluation,
};
use crate::train::vqvae::evaluation::{write_curves, write_reconstructions};
use crate::train::{RunPaths, TrainError};

/// Training images of the synthetic set that the generator presets (`train-vqvae`,
/// `train-dalle`) use; the classifiers' default set has 2,000.
pub const GENERATOR_TRAIN_IMAGES: usize = 20_000;

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqVaeDataConfig {
    /// MSCOCO 2014 in the official layout; `None` uses the built-in synthetic set.
    pub coco_root: Option<PathBuf>,
    pub synthetic: SyntheticCocoConfig,
    /// Side of the square images, in pixels (a multiple of the downsampling factor).
    pub image_size: usize,
    pub max_train_images: Option<usize>,
    pub max_eval_images: Option<usize>,
    pub skip_bad: bool,
}

/// A whole `train-vqvae` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainVqVaeConfig {
    pub data: VqVaeDataConfig,
    pub model: VqVaeConfig,
    pub training: Budget,
}

impl TrainVqVaeConfig {
    /// Trains in about 9 minutes on a 2-core CPU: 20,000 synthetic images (the generator's
    /// set: 10x the classifiers', so the DALL-E decoder does not memorise it) at 32 px, 8x8
    /// token grids (f = 4) of 512 codes, 15 epochs. Reconstructions keep what the image-only
    /// classifier finds in the real images: 81-83% after 4 epochs, 88-92% after 10 (moved by
    /// rounding alone between builds), so 15 leave a margin above 90%. 48 px (12x12 grids)
    /// keeps objects better still but makes the decoder's sequences 1.9x longer, and within
    /// the same time the 48 px decoder followed captions less well (docs/text-to-image.md,
    /// "The trade-off at 32 px").
    pub fn synthetic() -> Self {
        Self {
            data: VqVaeDataConfig {
                coco_root: None,
                synthetic: SyntheticCocoConfig {
                    n_train: GENERATOR_TRAIN_IMAGES,
                    ..SyntheticCocoConfig::default()
                },
                image_size: 32,
                max_train_images: None,
                max_eval_images: None,
                skip_bad: false,
            },
            model: VqVaeConfig::new(4, 512)
                .with_d_code(32)
                .with_hidden(64)
                .with_n_res_blocks(1),
            training: Budget {
                weight_decay: 0.0,
                warmup_fraction: 0.05,
                final_lr_ratio: 0.1,
                grad_clip: None,
                ..Budget::new(15, 32, 1e-3)
            },
        }
    }

    /// A starting point for MSCOCO 2014 on a GPU: 128 px images as 16x16 grids of 1024 codes
    /// (f = 8, the VQGAN codebook size); `--image-size 256` gives DALL-E's 32x32 grids.
    pub fn coco(root: PathBuf) -> Self {
        let mut config = Self::synthetic();
        config.data.coco_root = Some(root);
        config.data.image_size = 128;
        config.model = VqVaeConfig::new(8, 1024)
            .with_d_code(64)
            .with_hidden(128)
            .with_n_res_blocks(2);
        config.training.epochs = 10;
        config.training.batch_size = 64;
        config.training.learning_rate = 3e-4;
        config
    }
}

/// Everything that can stop a run, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum VqVaeError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Tokens(#[from] ImageTokensError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{0}")]
    Config(String),
}

/// What `result.json` holds. Reconstruction losses are MSEs of normalised pixels (what is
/// optimised); PSNR is on `[0, 1]` pixels, averaged over images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VqVaeResult {
    pub device: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub n_params: usize,
    /// PSNR of predicting every held-out image as the mean training image: the floor a
    /// tokenizer must clear to carry any information about the image.
    pub mean_image_psnr: f64,
    pub final_epoch: EpochLog<VqVaeEvaluation>,
    pub train_images_per_second: f64,
    pub history: Vec<EpochLog<VqVaeEvaluation>>,
}

/// Both splits of a run's data.
pub struct VqVaeData {
    pub train: ImageSplit,
    pub val: ImageSplit,
}

/// The synthetic set the `train-vqvae` run in `dir` trained on (from its `config.json`), so a
/// later stage pairs the run's token files with the same images by default; `None` when `dir`
/// holds no readable run config or the run used MSCOCO.
pub fn synthetic_set_of_run(dir: &Path) -> Option<SyntheticCocoConfig> {
    let config: TrainVqVaeConfig =
        crate::io::checkpoint::read_json(&dir.join("config.json")).ok()?;
    config
        .data
        .coco_root
        .is_none()
        .then_some(config.data.synthetic)
}

/// Loads (or generates) the images and maps their caches.
pub fn prepare_vqvae_data(
    config: &VqVaeDataConfig,
    paths: &RunPaths,
    show_progress: bool,
) -> Result<VqVaeData, VqVaeError> {
    let root = dataset_root(
        config.coco_root.as_deref(),
        &config.synthetic,
        &paths.data_dir,
    )?;
    let policy = BadEntryPolicy::skipping(config.skip_bad);
    let prepare = |split, max_images| {
        ImageSplit::prepare(
            &root,
            split,
            config.image_size,
            max_images,
            &paths.cache_dir,
            policy,
            show_progress,
        )
    };
    let train = prepare(CocoSplit::Train2014, config.max_train_images)?;
    let val = prepare(CocoSplit::Val2014, config.max_eval_images)?;
    for line in train.skipped.summary().iter().chain(&val.skipped.summary()) {
        eprintln!("skipped {line}");
    }
    if train.is_empty() || val.is_empty() {
        return Err(VqVaeError::Config(format!(
            "no usable images under {} ({} train, {} val)",
            root.display(),
            train.len(),
            val.len()
        )));
    }
    Ok(VqVaeData { train, val })
}

fn check_config(config: &TrainVqVaeConfig) -> Result<(), VqVaeError> {
    let f = config.model.downsample;
    if !matches!(f, 4 | 8 | 16) {
        return Err(VqVaeError::Config(format!(
            "--downsample must be 4, 8 or 16, not {f}"
        )));
    }
    if !config.data.image_size.is_multiple_of(f) || config.data.image_size == 0 {
        return Err(VqVaeError::Config(format!(
            "--image-size ({} px) must be a positive multiple of the downsampling factor {f}",
            config.data.image_size
        )));
    }
    // One code carries no information (and leaves dead-code re-seeding nothing to choose from).
    if config.model.n_codes < 2 || config.model.n_codes > u16::MAX as usize + 1 {
        return Err(VqVaeError::Config(format!(
            "--codes must be between 2 and 65536 (token files store u16), not {}",
            config.model.n_codes
        )));
    }
    config.training.validate()?;
    let size = config.data.image_size;
    // The input batch, its reconstruction and the error between them, at least.
    MemoryNeed::new()
        .image_cache(config.data.max_train_images.unwrap_or(CHUNK), size)
        .convolutions(
            "VQ-VAE input and output",
            config.training.batch_size,
            3,
            size,
            3,
        )
        .check("--image-size or --batch-size")
        .map_err(VqVaeError::Config)
}

/// The VQ-VAE as a task of the engine: reconstruction MSE plus commitment loss, then the EMA
/// codebook update after each optimizer step.
pub struct VqVaeTask<'a> {
    pub data: &'a VqVaeData,
    /// PSNR of the mean training image, the reference line of the PSNR chart.
    pub mean_image_psnr: f64,
    /// Of the held-out evaluation.
    pub batch_size: usize,
    /// Where reconstruction grids and charts go.
    pub out_dir: &'a Path,
}

impl<B: AutodiffBackend> TrainingTask<B> for VqVaeTask<'_> {
    type Model = VqVae<B>;
    type Aux = (Tensor<B, 2>, Tensor<B, 3, Int>);
    type Evaluation = VqVaeEvaluation;

    fn n_train(&self) -> usize {
        self.data.train.len()
    }

    /// The codebook update re-seeds dead codes from randomly chosen encoder outputs.
    fn uses_backend_random(&self) -> bool {
        true
    }

    type Batch = Tensor<B, 4>;

    fn batch(
        &self,
        indices: &[usize],
        _rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, TrainError> {
        Ok(self.data.train.batch::<B>(indices, device))
    }

    fn loss(
        &self,
        model: &VqVae<B>,
        images: Tensor<B, 4>,
    ) -> Result<StepOutput<B, Self::Aux>, TrainError> {
        let output = model.forward(images.clone());
        let reconstruction = (output.reconstruction - images).powi_scalar(2).mean();
        Ok(StepOutput {
            losses: Losses {
                total: reconstruction.clone() + output.commitment_loss.clone(),
                parts: vec![
                    ("reconstruction", reconstruction),
                    ("commitment", output.commitment_loss),
                ],
            },
            aux: (output.latents, output.codes),
        })
    }

    /// The codebook follows the encoder outputs of this batch (it has no gradient).
    /// The EMA codebook update reads the step's latents: one shard's on each replica.
    fn supports_data_parallel(&self) -> bool {
        false
    }

    fn after_step(&self, model: VqVae<B>, (latents, codes): Self::Aux) -> VqVae<B> {
        model.ema_update(latents, codes)
    }

    fn evaluate(
        &self,
        model: &VqVae<B::InnerBackend>,
        epoch: usize,
        device: &B::Device,
    ) -> Result<VqVaeEvaluation, TrainError> {
        let evaluation = evaluate_vqvae(model, &self.data.val, self.batch_size, device);
        // The same held-out images in every epoch's reconstruction grid.
        let shown: Vec<usize> = (0..self.data.val.len().min(8)).collect();
        let path = self
            .out_dir
            .join("reconstructions")
            .join(format!("epoch-{epoch:03}.png"));
        write_reconstructions(model, &self.data.val, &shown, &path, device)?;
        Ok(evaluation)
    }

    fn charts(&self, history: &[EpochLog<VqVaeEvaluation>]) -> Result<(), TrainError> {
        Ok(write_curves(history, self.mean_image_psnr, self.out_dir)?)
    }
}

/// Trains the tokenizer (resuming a partial run in `paths.out_dir`), writes its checkpoint,
/// metrics and charts, and encodes both splits into token files.
pub fn train_vqvae<B: AutodiffBackend>(
    config: &TrainVqVaeConfig,
    paths: &RunPaths,
    device: &B::Device,
    options: RunOptions,
) -> Result<VqVaeResult, VqVaeError> {
    check_config(config)?;
    // Everything below writes into the run directory; a failure before the first epoch
    // removes what it made (see `removed_on_early_failure`).
    crate::train::engine::run_dir::removed_on_early_failure(
        &paths.out_dir,
        || -> Result<VqVaeResult, VqVaeError> {
            let run_dir = RunDir::claim(&paths.out_dir, config, &[])?;
            if let Some(result) = run_dir.finished()? {
                return Ok(result);
            }
            let data = prepare_vqvae_data(&config.data, paths, options.show_progress)?;
            let budget = &config.training;
            let model: VqVae<B> =
                seeded_init::<B, _>(budget.seed, device, || config.model.init(device));
            let mean_image_psnr = mean_image_psnr(&data.train, &data.val);
            let task = VqVaeTask {
                data: &data,
                mean_image_psnr,
                batch_size: budget.batch_size,
                out_dir: &paths.out_dir,
            };
            let multi = progress::multi(options.show_progress);
            let display = RunDisplay {
                name: "vqvae".into(),
                progress: &multi,
                feed: options.feed,
            };
            let trained = train(&task, model, budget, &run_dir, &display, device)?;
            let train_images_per_second = trained.samples_per_second(data.train.len());
            let model = trained.model;
            let weights = paths.out_dir.join("vqvae.safetensors");
            save_safetensors(&model, &weights)?;
            let trained_config = TrainedVqVaeConfig {
                image_size: config.data.image_size,
                model: config.model.clone(),
            };
            write_atomic(
                &paths.out_dir.join("vqvae-config.json"),
                &serde_json::to_vec_pretty(&trained_config).expect("config serialises"),
            )?;
            let fingerprint = checkpoint_fingerprint(&weights).map_err(|source| DataError::Io {
                path: weights.clone(),
                source,
            })?;
            for split in [&data.train, &data.val] {
                let tokens =
                    encode_split(&model, split, &fingerprint, 4 * budget.batch_size, device);
                tokens.save(&token_file_path(&paths.out_dir, split.split))?;
            }
            let history = trained.history;
            let result = VqVaeResult {
                device: format!("{device:?}"),
                train_images: data.train.len(),
                eval_images: data.val.len(),
                n_params: trained.n_params,
                mean_image_psnr,
                final_epoch: history.last().cloned().expect("at least one epoch"),
                train_images_per_second,
                history,
            };
            training_report(
            "VQ-VAE image tokenizer",
            &paths.out_dir,
            config,
            &result.history,
            Some((
                &paths.out_dir.join("reconstructions"),
                vec![format!(
                    "Rows 1 and 3: held-out inputs; rows 2 and 4: their reconstructions. Held-out PSNR {:.2} dB against {:.2} dB for the mean training image.",
                    result.final_epoch.eval.psnr, result.mean_image_psnr
                )],
            )),
        )?;
            run_dir.finish(&result)?;
            Ok(result)
        },
    )
}
