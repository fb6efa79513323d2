//! Generating images from captions: sampling in batches, then decoding with the VQ-VAE.

use burn::tensor::backend::Backend;

use super::dalle::TrainedDalle;
use super::vqvae::decode_codes;
use crate::data::TokenizerError;
use crate::models::dalle::{generate, SamplingConfig};

/// `num` images per caption, as `[size, size, 3]` RGB bytes, sampled `batch_size` at a time.
/// Batch `i` samples with seed `sampling.seed + i`, so results depend on the batch size but
/// are reproducible for a given one.
pub fn generate_images<B: Backend>(
    trained: &TrainedDalle<B>,
    captions: &[String],
    num: usize,
    sampling: &SamplingConfig,
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<Vec<Vec<u8>>>, TokenizerError> {
    let texts = captions
        .iter()
        .map(|caption| trained.text_ids(caption))
        .collect::<Result<Vec<_>, _>>()?;
    let jobs: Vec<&Vec<u32>> = texts
        .iter()
        .flat_map(|text| std::iter::repeat_n(text, num))
        .collect();
    let mut images = Vec::with_capacity(jobs.len());
    for (i, chunk) in jobs.chunks(batch_size.max(1)).enumerate() {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|t| (*t).clone()).collect();
        let config = SamplingConfig {
            seed: sampling.seed.wrapping_add(i as u64),
            ..sampling.clone()
        };
        let codes = generate(&trained.model, &batch, &config, device);
        images.extend(decode_codes(
            &trained.vqvae.model,
            &codes,
            trained.config.model.grid,
            device,
        ));
    }
    Ok(images.chunks(num).map(<[_]>::to_vec).collect())
}
