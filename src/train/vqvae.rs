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

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    assign_stable_param_ids, claim_run_dir, load_safetensors, read_json, save_safetensors,
    write_atomic, CheckpointError,
};
use super::epoch_checkpoints::{epoch_seed, EpochCheckpoints, RunState};
use super::image_grid::write_image_grid;
use super::plots::{line_chart, Series};
use super::progress;
use super::schedule::WarmupCosine;
use super::RunPaths;
use crate::data::{
    checkpoint_fingerprint, dataset_root, images_to_rgb, BadEntryPolicy, CocoSplit, DataError,
    ImageSplit, ImageTokens, ImageTokensError, SyntheticCocoConfig, SyntheticError, TokenFileInfo,
    IMAGE_MEAN, IMAGE_STD,
};
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

/// The optimisation budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqVaeTrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate of Adam.
    pub learning_rate: f64,
    pub warmup_fraction: f64,
    /// Global L2 norm the gradients are clipped to, if any.
    pub grad_clip: Option<f64>,
    pub seed: u64,
}

/// A whole `train-vqvae` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainVqVaeConfig {
    pub data: VqVaeDataConfig,
    pub model: VqVaeConfig,
    pub training: VqVaeTrainingConfig,
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
            training: VqVaeTrainingConfig {
                epochs: 12,
                batch_size: 32,
                learning_rate: 1e-3,
                warmup_fraction: 0.05,
                grad_clip: None,
                seed: 0,
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
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the training loss became {value} in epoch {epoch}; lower --lr or check the data. The checkpoint of the previous epoch is kept")]
    NonFiniteLoss { epoch: usize, value: f64 },
}

/// Metrics after one epoch. Reconstruction losses are MSEs of normalised pixels (what is
/// optimised); `val_psnr` is on `[0, 1]` pixels, averaged over images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqVaeEpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub train_recon_loss: f64,
    pub train_commitment_loss: f64,
    pub val_recon_loss: f64,
    pub val_psnr: f64,
    /// `exp(entropy)` of the held-out code histogram: the effective number of codes in use.
    pub val_perplexity: f64,
    /// Fraction of the codebook that some held-out token uses.
    pub val_codes_used: f64,
    pub train_seconds: f64,
}

/// What `result.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VqVaeResult {
    pub device: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub n_params: usize,
    /// PSNR of predicting every held-out image as the mean training image: the floor a
    /// tokenizer must clear to carry any information about the image.
    pub mean_image_psnr: f64,
    pub final_epoch: VqVaeEpochLog,
    pub train_images_per_second: f64,
    pub history: Vec<VqVaeEpochLog>,
}

/// What `vqvae-config.json` holds: enough to rebuild the model and use it as a tokenizer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedVqVaeConfig {
    pub image_size: usize,
    pub model: VqVaeConfig,
}

/// A trained tokenizer loaded from a `train-vqvae` output directory.
pub struct TrainedVqVae<B: Backend> {
    pub model: VqVae<B>,
    pub config: TrainedVqVaeConfig,
    /// [`checkpoint_fingerprint`] of `vqvae.safetensors`: token files record it.
    pub fingerprint: String,
}

impl<B: Backend> TrainedVqVae<B> {
    /// Loads `vqvae.safetensors` and `vqvae-config.json` from `dir`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, VqVaeError> {
        let config_path = dir.join("vqvae-config.json");
        let weights = dir.join("vqvae.safetensors");
        let config: TrainedVqVaeConfig = read_json(&config_path)?;
        let model = load_safetensors(config.model.init::<B>(device), &weights)?;
        let fingerprint = checkpoint_fingerprint(&weights).map_err(|source| DataError::Io {
            path: weights.clone(),
            source,
        })?;
        Ok(Self {
            model,
            config,
            fingerprint,
        })
    }
}

/// Held-out metrics of a VQ-VAE.
#[derive(Debug, Clone)]
pub struct VqVaeEvaluation {
    pub recon_loss: f64,
    pub psnr: f64,
    pub perplexity: f64,
    pub codes_used: f64,
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
            "the downsampling factor must be 4, 8 or 16, not {f}"
        )));
    }
    if !config.data.image_size.is_multiple_of(f) || config.data.image_size == 0 {
        return Err(VqVaeError::Config(format!(
            "the image size ({} px) must be a positive multiple of the downsampling factor {f}",
            config.data.image_size
        )));
    }
    if config.model.n_codes == 0 || config.model.n_codes > u16::MAX as usize + 1 {
        return Err(VqVaeError::Config(format!(
            "the codebook size must be between 1 and 65536 (token files store u16), not {}",
            config.model.n_codes
        )));
    }
    if config.training.batch_size == 0 || config.training.epochs == 0 {
        return Err(VqVaeError::Config(
            "--epochs and --batch-size must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Trains the tokenizer (resuming a partial run in `paths.out_dir`), writes its checkpoint,
/// metrics and charts, and encodes both splits into token files.
pub fn train_vqvae<B: AutodiffBackend>(
    config: &TrainVqVaeConfig,
    paths: &RunPaths,
    device: &B::Device,
    show_progress: bool,
) -> Result<VqVaeResult, VqVaeError> {
    check_config(config)?;
    claim_run_dir(&paths.out_dir, config)?;
    let data = prepare_vqvae_data(&config.data, paths, show_progress)?;
    let result_path = paths.out_dir.join("result.json");
    if let Ok(bytes) = fs::read(&result_path) {
        return serde_json::from_slice(&bytes).map_err(|e| VqVaeError::Corrupt {
            path: result_path,
            message: e.to_string(),
        });
    }
    let training = &config.training;
    B::seed(device, training.seed);
    let model: VqVae<B> = assign_stable_param_ids(config.model.init(device));
    let n_params = model.num_params();
    let optimizer = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_grad_clipping(
            training
                .grad_clip
                .map(|norm| GradientClippingConfig::Norm(norm as f32)),
        )
        .init::<B, VqVae<B>>();
    let checkpoints = EpochCheckpoints::new(&paths.out_dir);
    let (mut model, mut optimizer, state) =
        checkpoints.resume::<B, _, _, VqVaeEpochLog>(model, optimizer, device)?;
    let mut history = state.history;
    let multi = progress::multi(show_progress);
    if state.epochs_done > 0 {
        progress::println(
            &multi,
            &format!("resuming after epoch {}", state.epochs_done),
        );
    }

    let train = &data.train;
    let steps_per_epoch = train.len().div_ceil(training.batch_size);
    let total_steps = steps_per_epoch * training.epochs;
    let schedule = WarmupCosine::new(
        training.learning_rate,
        total_steps,
        training.warmup_fraction,
        0.1,
    );
    // The same held-out images in every epoch's reconstruction grid.
    let shown: Vec<usize> = (0..data.val.len().min(8)).collect();
    for epoch in state.epochs_done..training.epochs {
        // The backend seed drives the re-seeding of dead codes.
        let epoch_seed = epoch_seed(training.seed, epoch);
        B::seed(device, epoch_seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(epoch_seed));

        let bar = progress::bar_in(
            &multi,
            steps_per_epoch as u64,
            &format!("epoch {}/{}", epoch + 1, training.epochs),
        );
        let started = Instant::now();
        let mut recon_sum = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut commitment_sum = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut lr = schedule.at(0);
        for (step_in_epoch, chunk) in order.chunks(training.batch_size).enumerate() {
            lr = schedule.at(epoch * steps_per_epoch + step_in_epoch);
            let images = train.batch::<B>(chunk, device);
            let output = model.forward(images.clone());
            let recon_loss = (output.reconstruction - images).powi_scalar(2).mean();
            recon_sum = recon_sum + recon_loss.clone().inner();
            commitment_sum = commitment_sum + output.commitment_loss.clone().inner();
            let loss = recon_loss + output.commitment_loss;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(lr, model, grads);
            // The codebook follows the encoder outputs of this batch (it has no gradient).
            model = model.ema_update(output.latents, output.codes);
            bar.inc(1);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        multi.remove(&bar);
        let steps = steps_per_epoch as f64;
        let train_recon_loss = recon_sum.into_scalar().elem::<f64>() / steps;
        let train_commitment_loss = commitment_sum.into_scalar().elem::<f64>() / steps;
        if !(train_recon_loss + train_commitment_loss).is_finite() {
            return Err(VqVaeError::NonFiniteLoss {
                epoch: epoch + 1,
                value: train_recon_loss + train_commitment_loss,
            });
        }
        let valid = model.valid();
        let eval = evaluate_vqvae(&valid, &data.val, training.batch_size, device);
        let log = VqVaeEpochLog {
            epoch: epoch + 1,
            steps: (epoch + 1) * steps_per_epoch,
            learning_rate: lr,
            train_recon_loss,
            train_commitment_loss,
            val_recon_loss: eval.recon_loss,
            val_psnr: eval.psnr,
            val_perplexity: eval.perplexity,
            val_codes_used: eval.codes_used,
            train_seconds,
        };
        progress::println(&multi, &format!(
            "epoch {}/{}: train recon {:.4}, commitment {:.4}; val recon {:.4}, PSNR {:.2} dB, perplexity {:.1}, codes used {:.0}% ({:.1}s, {:.0} images/s)",
            log.epoch, training.epochs, log.train_recon_loss, log.train_commitment_loss,
            log.val_recon_loss, log.val_psnr, log.val_perplexity, 100.0 * log.val_codes_used,
            train_seconds, train.len() as f64 / train_seconds
        ));
        history.push(log);
        write_reconstructions(
            &valid,
            &data.val,
            &shown,
            &paths
                .out_dir
                .join("reconstructions")
                .join(format!("epoch-{:03}.png", epoch + 1)),
            device,
        )?;
        write_curves(&history, &paths.out_dir)?;
        checkpoints.commit::<B, _, _, _>(
            &model,
            &optimizer,
            &RunState {
                epochs_done: epoch + 1,
                history: history.clone(),
            },
        )?;
    }

    let model = model.valid();
    let weights = paths.out_dir.join("vqvae.safetensors");
    save_safetensors(&model, &weights)?;
    let trained = TrainedVqVaeConfig {
        image_size: config.data.image_size,
        model: config.model.clone(),
    };
    write_atomic(
        &paths.out_dir.join("vqvae-config.json"),
        &serde_json::to_vec_pretty(&trained).expect("config serialises"),
    )?;
    let fingerprint = checkpoint_fingerprint(&weights).map_err(|source| DataError::Io {
        path: weights.clone(),
        source,
    })?;
    for split in [&data.train, &data.val] {
        let tokens = encode_split(&model, split, &fingerprint, 4 * training.batch_size, device);
        tokens.save(&token_file_path(&paths.out_dir, split.split))?;
    }

    let final_epoch = history.last().cloned().expect("at least one epoch");
    let seconds: f64 = history.iter().map(|h| h.train_seconds).sum();
    let result = VqVaeResult {
        device: format!("{device:?}"),
        train_images: train.len(),
        eval_images: data.val.len(),
        n_params,
        mean_image_psnr: mean_image_psnr(&data.train, &data.val),
        final_epoch,
        train_images_per_second: (train.len() * history.len()) as f64 / seconds.max(1e-9),
        history,
    };
    write_atomic(
        &result_path,
        &serde_json::to_vec_pretty(&result).expect("result serialises"),
    )?;
    checkpoints.finish(training.epochs);
    Ok(result)
}

/// `<dir>/tokens-<split>.safetensors`.
pub fn token_file_path(dir: &Path, split: CocoSplit) -> PathBuf {
    dir.join(format!("tokens-{}.safetensors", split.name()))
}

/// Encodes every image of `split` into its code grid.
pub fn encode_split<B: Backend>(
    model: &VqVae<B>,
    split: &ImageSplit,
    checkpoint: &str,
    batch_size: usize,
    device: &B::Device,
) -> ImageTokens {
    let size = split.image_size();
    let f = model.downsample();
    let mut codes = Vec::with_capacity(split.len() * (size / f).pow(2));
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let grid = model.encode(split.batch::<B>(chunk, device)); // [b, gh, gw]
        let values: Vec<i64> = grid.into_data().convert::<i64>().to_vec().expect("ints");
        codes.extend(values.into_iter().map(|c| c as u16));
    }
    ImageTokens {
        info: TokenFileInfo {
            split: split.split.name().to_string(),
            image_size: size,
            grid: [size / f, size / f],
            n_codes: model.quantizer.n_codes(),
            vqvae_checkpoint: checkpoint.to_string(),
            images: split.cache.fingerprint().to_string(),
        },
        image_ids: split.image_ids.clone(),
        codes,
    }
}

/// Decodes the images at `indices` of a token file into `[size, size, 3]` RGB bytes.
pub fn decode_tokens<B: Backend>(
    model: &VqVae<B>,
    tokens: &ImageTokens,
    indices: &[usize],
    device: &B::Device,
) -> Vec<Vec<u8>> {
    let grids: Vec<Vec<usize>> = indices
        .iter()
        .map(|&i| tokens.image(i).iter().map(|&c| c as usize).collect())
        .collect();
    decode_codes(model, &grids, tokens.info.grid, device)
}

/// Decodes row-major code grids of shape `grid` into `[size, size, 3]` RGB bytes.
pub fn decode_codes<B: Backend>(
    model: &VqVae<B>,
    grids: &[Vec<usize>],
    grid: [usize; 2],
    device: &B::Device,
) -> Vec<Vec<u8>> {
    if grids.is_empty() {
        return Vec::new();
    }
    let values: Vec<i64> = grids.iter().flatten().map(|&c| c as i64).collect();
    let codes = Tensor::<B, 3, Int>::from_data(
        TensorData::new(values, [grids.len(), grid[0], grid[1]]),
        device,
    );
    images_to_rgb(model.decode(codes))
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

fn write_curves(history: &[VqVaeEpochLog], dir: &Path) -> Result<(), CheckpointError> {
    let series = |name: &str, color: usize, value: fn(&VqVaeEpochLog) -> f64| Series {
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
            series("train", 0, |h| h.train_recon_loss),
            series("held-out", 1, |h| h.val_recon_loss),
        ],
    )?;
    line_chart(
        &dir.join("curve-psnr.png"),
        "Held-out PSNR",
        "epoch",
        "PSNR (dB)",
        &[series("held-out", 1, |h| h.val_psnr)],
    )?;
    line_chart(
        &dir.join("curve-perplexity.png"),
        "Codebook perplexity (held-out tokens)",
        "epoch",
        "perplexity",
        &[series("held-out", 1, |h| h.val_perplexity)],
    )?;
    line_chart(
        &dir.join("curve-codes-used.png"),
        "Fraction of codes used (held-out tokens)",
        "epoch",
        "fraction",
        &[series("held-out", 1, |h| h.val_codes_used)],
    )
}
