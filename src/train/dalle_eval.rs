//! Does a generated image show what its caption asks for? On the synthetic set, where a caption
//! names objects by known words, an image-only classifier (trained by `classify`) checks each
//! named object in the image generated for the caption. The same check on the real image of
//! the caption is the ceiling.
//!
//! Rates are over (caption, named object) pairs: the fraction whose object the classifier finds
//! (probability above 0.5) in the image. Four images are checked per caption:
//! - **real**: the held-out image at the classifier's resolution (the ceiling);
//! - **real at the tokenizer's resolution**: the same image downscaled to the VQ-VAE's size and
//!   back (what any image of this pipeline can at best be);
//! - **VQ-VAE reconstruction**: the real image's tokens decoded (the tokenizer's loss);
//! - **generated**: sampled from the caption.

use std::path::Path;

use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use super::checkpoint::load_safetensors;
use super::dalle::{DalleError, DalleSplit, TrainedDalle};
use super::dalle_generate::generate_images;
use super::vqvae::decode_codes;
use crate::data::{
    image_batch, mentioned_categories, CocoCategory, DataError, ImageCache, TextBatch, IMAGE_MEAN,
    IMAGE_STD,
};
use crate::models::classifier::{SingleStreamClassifier, SingleStreamClassifierConfig};
use crate::models::dalle::SamplingConfig;

/// The classifier that checks the images.
pub struct Judge<B: Backend> {
    pub model: SingleStreamClassifier<B>,
    pub image_size: usize,
}

impl<B: Backend> Judge<B> {
    /// Loads a `classify` run directory (`model.safetensors`, `model-config.json`), e.g.
    /// `runs/classify/runs/image-only-seed0`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, DalleError> {
        let config_path = dir.join("model-config.json");
        let bytes = std::fs::read(&config_path).map_err(|source| DataError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: SingleStreamClassifierConfig =
            serde_json::from_slice(&bytes).map_err(|e| DalleError::Corrupt {
                path: config_path,
                message: e.to_string(),
            })?;
        let image_size = config.image_size;
        let model = load_safetensors(config.init::<B>(device), &dir.join("model.safetensors"))?;
        Ok(Self { model, image_size })
    }

    /// Label probabilities of `[size, size, 3]` RGB images of any size (resized to the
    /// classifier's).
    pub fn probabilities(
        &self,
        images: &[Vec<u8>],
        size: usize,
        device: &B::Device,
    ) -> Vec<Vec<f32>> {
        let target = self.image_size as u32;
        let plane = self.image_size * self.image_size;
        let mut values = Vec::with_capacity(images.len() * 3 * plane);
        for pixels in images {
            let image = image::RgbImage::from_raw(size as u32, size as u32, pixels.clone())
                .expect("size * size * 3 bytes");
            let resized = image::imageops::resize(&image, target, target, FilterType::Triangle);
            let mut channels = vec![0f32; 3 * plane];
            for (p, rgb) in resized.pixels().enumerate() {
                for c in 0..3 {
                    channels[c * plane + p] =
                        (rgb[c] as f32 / 255.0 - IMAGE_MEAN[c]) / IMAGE_STD[c];
                }
            }
            values.extend(channels);
        }
        let n = images.len();
        let tensor = burn::tensor::Tensor::<B, 4>::from_data(
            burn::tensor::TensorData::new(values, [n, 3, self.image_size, self.image_size]),
            device,
        );
        self.classify(tensor, device)
    }

    fn classify(&self, images: burn::tensor::Tensor<B, 4>, device: &B::Device) -> Vec<Vec<f32>> {
        let n = images.dims()[0];
        let empty: Vec<&[u32]> = vec![&[]; n];
        let text = TextBatch::from_sequences(&empty, None, 0, device);
        let probabilities = sigmoid(self.model.forward(images, text).logits);
        let n_labels = probabilities.dims()[1];
        let values: Vec<f32> = probabilities
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        values.chunks(n_labels).map(<[_]>::to_vec).collect()
    }
}

/// The rates, each over the same (caption, named object) pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationEvaluation {
    pub captions: usize,
    pub named_objects: usize,
    pub real: f64,
    pub real_at_tokenizer_resolution: f64,
    pub vqvae_reconstruction: f64,
    pub generated: f64,
    pub sampling: SamplingConfig,
}

/// Checks `n_captions` held-out captions (the first caption of each of the first images).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_generation<B: Backend>(
    trained: &TrainedDalle<B>,
    judge: &Judge<B>,
    val: &DalleSplit,
    categories: &[CocoCategory],
    real_cache: &ImageCache,
    n_captions: usize,
    sampling: &SamplingConfig,
    batch_size: usize,
    device: &B::Device,
) -> Result<GenerationEvaluation, DalleError> {
    let examples: Vec<_> = val
        .examples
        .iter()
        .filter(|e| !mentioned_categories(&e.raw_captions[0]).is_empty())
        .filter(|e| real_cache.contains(e.image_id))
        .take(n_captions)
        .collect();
    let captions: Vec<String> = examples.iter().map(|e| e.raw_captions[0].clone()).collect();
    // Label index of each named object of each caption.
    let named: Vec<Vec<usize>> = captions
        .iter()
        .map(|caption| {
            mentioned_categories(caption)
                .into_iter()
                .filter_map(|id| categories.iter().position(|c| c.id == id as u64))
                .collect()
        })
        .collect();
    let named_objects: usize = named.iter().map(Vec::len).sum();
    let rate = |probabilities: &[Vec<f32>]| -> f64 {
        let found: usize = probabilities
            .iter()
            .zip(&named)
            .map(|(p, labels)| labels.iter().filter(|&&l| p[l] > 0.5).count())
            .sum();
        found as f64 / named_objects.max(1) as f64
    };

    let size = trained.config.image_size;
    let mut real = Vec::new();
    let mut real_low = Vec::new();
    let mut reconstructed = Vec::new();
    for chunk in examples.chunks(batch_size.max(1)) {
        let ids: Vec<u64> = chunk.iter().map(|e| e.image_id).collect();
        real.extend(judge.classify(image_batch(real_cache, &ids, device), device));
        let low: Vec<Vec<u8>> = ids
            .iter()
            .map(|&id| {
                downscale(
                    real_cache.get(id).expect("cached"),
                    real_cache.image_size(),
                    size,
                )
            })
            .collect();
        real_low.extend(judge.probabilities(&low, size, device));
        let grids: Vec<Vec<usize>> = chunk
            .iter()
            .map(|e| e.codes.iter().map(|&c| c as usize).collect())
            .collect();
        let decoded = decode_codes(
            &trained.vqvae.model,
            &grids,
            trained.config.model.grid,
            device,
        );
        reconstructed.extend(judge.probabilities(&decoded, size, device));
    }
    let generated_images: Vec<Vec<u8>> =
        generate_images(trained, &captions, 1, sampling, batch_size, device)?
            .into_iter()
            .flatten()
            .collect();
    let generated = judge.probabilities(&generated_images, size, device);
    Ok(GenerationEvaluation {
        captions: captions.len(),
        named_objects,
        real: rate(&real),
        real_at_tokenizer_resolution: rate(&real_low),
        vqvae_reconstruction: rate(&reconstructed),
        generated: rate(&generated),
        sampling: sampling.clone(),
    })
}

/// Resizes `[from, from, 3]` RGB bytes to `[to, to, 3]`.
fn downscale(pixels: &[u8], from: usize, to: usize) -> Vec<u8> {
    let image = image::RgbImage::from_raw(from as u32, from as u32, pixels.to_vec())
        .expect("from * from * 3 bytes");
    image::imageops::resize(&image, to as u32, to as u32, FilterType::Triangle).into_raw()
}
