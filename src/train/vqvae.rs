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

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::budget::Budget;
use super::engine::{
    seeded_init, train, EpochEvaluation, Losses, RunDisplay, StepOutput, TrainingTask,
};
use super::plots::{line_chart, line_chart_with_references, Reference, Series};
use super::report::training_report;
use super::run_dir::{EpochLog, RunDir};
use super::{RunPaths, TrainError};
use crate::data::{
    checkpoint_fingerprint, dataset_root, images_to_rgb, BadEntryPolicy, CocoSplit, DataError,
    ImageSplit, ImageTokensError, SyntheticCocoConfig, SyntheticError, IMAGE_MEAN, IMAGE_STD,
};
pub use crate::inference::vqvae::{
    decode_codes, decode_tokens, encode_split, token_file_path, TrainedVqVae, TrainedVqVaeConfig,
};
use crate::inference::ArtifactError;
use crate::io::checkpoint::{save_safetensors, write_atomic, CheckpointError};
use crate::io::image_grid::write_image_grid;
use crate::io::progress;
use crate::models::vqvae::{VqVae, VqVaeConfig};

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
    /// Trains in a few minutes on a 2-core CPU: the synthetic set at 32 px, 8x8 token grids
    /// (f = 4), 512 codes.
    pub fn synthetic() -> Self {
        Self {
            data: VqVaeDataConfig {
                coco_root: None,
                synthetic: SyntheticCocoConfig::default(),
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
                ..Budget::new(12, 32, 1e-3)
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

/// Held-out metrics of a VQ-VAE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqVaeEvaluation {
    /// MSE of normalised pixels.
    pub recon_loss: f64,
    /// On `[0, 1]` pixels, averaged over images.
    pub psnr: f64,
    /// `exp(entropy)` of the held-out code histogram: the effective number of codes in use.
    pub perplexity: f64,
    /// Fraction of the codebook that some held-out token uses.
    pub codes_used: f64,
}

impl EpochEvaluation for VqVaeEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("recon", self.recon_loss),
            ("PSNR", self.psnr),
            ("perplexity", self.perplexity),
            ("codes used", self.codes_used),
        ]
    }
}

/// `[1, 3, 1, 1]` channel constants, to move between normalised and `[0, 1]` pixels.
fn channel_constant<B: Backend>(values: [f32; 3], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values.to_vec(), [1, 3, 1, 1]), device)
}

/// Reconstruction loss, PSNR and codebook usage on every image of `split`.
pub fn evaluate_vqvae<B: Backend>(
    model: &VqVae<B>,
    split: &ImageSplit,
    batch_size: usize,
    device: &B::Device,
) -> VqVaeEvaluation {
    let n_codes = model.quantizer.n_codes();
    let (mean, std) = (
        channel_constant::<B>(IMAGE_MEAN, device),
        channel_constant::<B>(IMAGE_STD, device),
    );
    let mut recon_sum = 0.0;
    let mut psnr_sum = 0.0;
    let mut counts = Tensor::<B, 1>::zeros([n_codes], device);
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let images = split.batch::<B>(chunk, device);
        let output = model.forward(images.clone());
        let diff = output.reconstruction.clone() - images.clone();
        recon_sum += diff.powi_scalar(2).mean().into_scalar().elem::<f64>() * chunk.len() as f64;
        // PSNR on displayable pixels: de-normalise and clamp the reconstruction.
        let to_pixels = |x: Tensor<B, 4>| x * std.clone() + mean.clone();
        let error = to_pixels(output.reconstruction).clamp(0.0, 1.0) - to_pixels(images);
        let per_image_mse: Vec<f32> = error
            .powi_scalar(2)
            .flatten::<2>(1, 3)
            .mean_dim(1)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 data");
        psnr_sum += per_image_mse
            .iter()
            .map(|&mse| psnr(mse as f64))
            .sum::<f64>();
        let codes = output.codes.flatten::<1>(0, 2);
        counts = counts
            + codes
                .one_hot::<2>(n_codes)
                .float()
                .sum_dim(0)
                .reshape([n_codes]);
    }
    let counts: Vec<f32> = counts.into_data().convert::<f32>().to_vec().expect("f32");
    let (perplexity, codes_used) = codebook_usage(&counts);
    let n = split.len().max(1) as f64;
    VqVaeEvaluation {
        recon_loss: recon_sum / n,
        psnr: psnr_sum / n,
        perplexity,
        codes_used,
    }
}

/// Peak signal-to-noise ratio of pixels in `[0, 1]`, in dB (capped at 100 for exact copies).
pub fn psnr(mse: f64) -> f64 {
    (10.0 * (1.0 / mse.max(1e-10)).log10()).min(100.0)
}

/// `(perplexity, fraction of codes used)` of a code histogram.
pub fn codebook_usage(counts: &[f32]) -> (f64, f64) {
    let total: f64 = counts.iter().map(|&c| c as f64).sum();
    if total == 0.0 {
        return (0.0, 0.0);
    }
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.ln()
        })
        .sum();
    let used = counts.iter().filter(|&&c| c > 0.0).count();
    (entropy.exp(), used as f64 / counts.len() as f64)
}

/// PSNR of predicting every image of `val` as the mean image of `train`.
pub fn mean_image_psnr(train: &ImageSplit, val: &ImageSplit) -> f64 {
    let n_bytes = train.image_size() * train.image_size() * 3;
    let mut mean = vec![0f64; n_bytes];
    for &id in &train.image_ids {
        let pixels = train.cache.get(id).expect("listed images are cached");
        for (m, &p) in mean.iter_mut().zip(pixels) {
            *m += p as f64 / 255.0;
        }
    }
    mean.iter_mut()
        .for_each(|m| *m /= train.len().max(1) as f64);
    let total: f64 = val
        .image_ids
        .iter()
        .map(|&id| {
            let pixels = val.cache.get(id).expect("listed images are cached");
            let mse = pixels
                .iter()
                .zip(&mean)
                .map(|(&p, &m)| (p as f64 / 255.0 - m).powi(2))
                .sum::<f64>()
                / n_bytes as f64;
            psnr(mse)
        })
        .sum();
    total / val.len().max(1) as f64
}

/// Both splits of a run's data.
pub struct VqVaeData {
    pub train: ImageSplit,
    pub val: ImageSplit,
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
    if config.model.n_codes == 0 || config.model.n_codes > u16::MAX as usize + 1 {
        return Err(VqVaeError::Config(format!(
            "--codes must be between 1 and 65536 (token files store u16), not {}",
            config.model.n_codes
        )));
    }
    config.training.validate()?;
    Ok(())
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

    fn loss(
        &self,
        model: &VqVae<B>,
        indices: &[usize],
        _rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<StepOutput<B, Self::Aux>, TrainError> {
        let images = self.data.train.batch::<B>(indices, device);
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
    show_progress: bool,
    log_every: usize,
) -> Result<VqVaeResult, VqVaeError> {
    check_config(config)?;
    let run_dir = RunDir::claim(&paths.out_dir, config, &[])?;
    if let Some(result) = run_dir.finished()? {
        return Ok(result);
    }
    let data = prepare_vqvae_data(&config.data, paths, show_progress)?;
    let budget = &config.training;
    let model: VqVae<B> = seeded_init::<B, _>(budget.seed, device, || config.model.init(device));
    let mean_image_psnr = mean_image_psnr(&data.train, &data.val);
    let task = VqVaeTask {
        data: &data,
        mean_image_psnr,
        batch_size: budget.batch_size,
        out_dir: &paths.out_dir,
    };
    let multi = progress::multi(show_progress);
    let display = RunDisplay {
        name: "vqvae".into(),
        progress: &multi,
        log_every,
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
        let tokens = encode_split(&model, split, &fingerprint, 4 * budget.batch_size, device);
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
}

/// A grid of held-out images (odd rows) above their reconstructions (even rows).
fn write_reconstructions<B: Backend>(
    model: &VqVae<B>,
    val: &ImageSplit,
    shown: &[usize],
    path: &Path,
    device: &B::Device,
) -> Result<(), CheckpointError> {
    let images = val.batch::<B>(shown, device);
    let reconstructions = model.forward(images.clone()).reconstruction;
    let size = val.image_size();
    let scale = (128 / size).max(1) as u32;
    write_image_grid(
        path,
        &[images_to_rgb(images), images_to_rgb(reconstructions)],
        size,
        scale,
    )
}

fn write_curves(
    history: &[EpochLog<VqVaeEvaluation>],
    mean_image_psnr: f64,
    dir: &Path,
) -> Result<(), CheckpointError> {
    let series = |name: &str, color: usize, value: fn(&EpochLog<VqVaeEvaluation>) -> f64| Series {
        name: name.to_string(),
        points: history.iter().map(|h| (h.epoch as f64, value(h))).collect(),
        color,
    };
    line_chart(
        &dir.join("curve-loss.png"),
        "VQ-VAE reconstruction loss (MSE, normalised pixels)",
        "epoch",
        "MSE",
        &[
            series("train", 0, |h| {
                h.train.get("reconstruction").unwrap_or(f64::NAN)
            }),
            series("held-out", 1, |h| h.eval.recon_loss),
        ],
    )?;
    line_chart_with_references(
        &dir.join("curve-psnr.png"),
        "Held-out PSNR",
        "epoch",
        "PSNR (dB)",
        &[series("held-out", 1, |h| h.eval.psnr)],
        &[Reference {
            name: "mean training image".into(),
            y: mean_image_psnr,
        }],
    )?;
    line_chart(
        &dir.join("curve-perplexity.png"),
        "Codebook perplexity (held-out tokens)",
        "epoch",
        "perplexity",
        &[series("held-out", 1, |h| h.eval.perplexity)],
    )?;
    line_chart(
        &dir.join("curve-codes-used.png"),
        "Fraction of codes used (held-out tokens)",
        "epoch",
        "fraction",
        &[series("held-out", 1, |h| h.eval.codes_used)],
    )
}
