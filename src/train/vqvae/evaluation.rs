//! The VQ-VAE's held-out metrics: reconstruction loss, PSNR, codebook perplexity and usage, and
//! the mean-image PSNR a tokenizer must clear.

use crate::nn::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use std::path::Path;

use crate::data::images_to_rgb;
use crate::data::{ImageSplit, IMAGE_MEAN, IMAGE_STD};
use crate::io::checkpoint::CheckpointError;
use crate::io::image_grid::{write_image_grid, GridRow};
use crate::models::vqvae::VqVae;
use crate::train::engine::run_dir::{EpochEvaluation, EpochLog};
use crate::train::report::plots::{line_chart, line_chart_with_references, Reference, Series};

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

    fn continuous_metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("recon", self.recon_loss), ("PSNR", self.psnr)]
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
    // Everything stays on the device until the end: one read per quantity for the split.
    let mut recon_sum = Tensor::<B, 1>::zeros([1], device);
    let mut per_image_mse = Vec::new();
    let mut counts = Tensor::<B, 1>::zeros([n_codes], device);
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let images = split.batch::<B>(chunk, device);
        let output = model.forward(images.clone());
        let diff = output.reconstruction.clone() - images.clone();
        recon_sum = recon_sum + diff.powi_scalar(2).mean() * chunk.len() as f64;
        // PSNR on displayable pixels: de-normalise and clamp the reconstruction.
        let to_pixels = |x: Tensor<B, 4>| x * std.clone() + mean.clone();
        let error = to_pixels(output.reconstruction).clamp(0.0, 1.0) - to_pixels(images);
        per_image_mse.push(
            error
                .powi_scalar(2)
                .flatten::<2>(1, 3)
                .mean_dim(1)
                .flatten::<1>(0, 1),
        );
        let codes = output.codes.flatten::<1>(0, 2);
        counts = counts
            + codes
                .one_hot::<2>(n_codes)
                .float()
                .sum_dim(0)
                .reshape([n_codes]);
    }
    let counts: Vec<f32> = counts.into_data().convert::<f32>().to_vec().expect("f32");
    let recon_sum = recon_sum.into_scalar().elem::<f64>();
    let psnr_sum: f64 = if per_image_mse.is_empty() {
        0.0
    } else {
        Tensor::cat(per_image_mse, 0)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("f64 data")
            .iter()
            .map(|&mse| psnr(mse))
            .sum()
    };
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

/// A grid of held-out images (the row labelled 'held-out input') above their reconstructions.
pub fn write_reconstructions<B: Backend>(
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
        &[
            GridRow::new("held-out input", images_to_rgb(images)),
            GridRow::new("reconstruction", images_to_rgb(reconstructions)),
        ],
        size,
        scale,
    )
}

pub fn write_curves(
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
