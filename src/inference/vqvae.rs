//! A trained VQ-VAE as an image tokenizer: loading a `train-vqvae` directory, encoding image
//! splits into token files, and decoding code grids back into pixels.

use std::path::{Path, PathBuf};

use crate::nn::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ArtifactError;
use crate::data::{
    checkpoint_fingerprint, images_to_rgb, CocoSplit, DataError, ImageSplit, ImageTokens,
    TokenFileInfo,
};
use crate::io::checkpoint::load_safetensors;
use crate::models::vqvae::{VqVae, VqVaeConfig};

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
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, ArtifactError> {
        let config_path = dir.join("vqvae-config.json");
        let weights = dir.join("vqvae.safetensors");
        let config: TrainedVqVaeConfig =
            super::read_artifact_json(&config_path, "train-vqvae", "--vqvae")?;
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
            images: split.images_fingerprint.clone(),
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
