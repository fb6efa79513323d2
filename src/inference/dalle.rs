//! A trained DALL-E-style decoder with its caption tokenizer and VQ-VAE: loading a
//! `train-dalle` directory and generating images from captions.

use std::path::{Path, PathBuf};

use crate::nn::Backend;
use serde::{Deserialize, Serialize};

use super::vqvae::{decode_codes, TrainedVqVae};
use super::ArtifactError;
use crate::data::{TextTokenizer, TokenizerError};
use crate::io::checkpoint::load_safetensors;
use crate::models::dalle::{generate, Dalle, DalleConfig, SamplingConfig};

/// What `dalle-config.json` holds: enough to rebuild the decoder and find its tokenizers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedDalleConfig {
    pub model: DalleConfig,
    pub vqvae_dir: PathBuf,
    pub vqvae_checkpoint: String,
    pub image_size: usize,
}

/// A trained decoder with its caption tokenizer and VQ-VAE, ready to generate.
pub struct TrainedDalle<B: Backend> {
    pub model: Dalle<B>,
    pub config: TrainedDalleConfig,
    pub bpe: TextTokenizer,
    pub vqvae: TrainedVqVae<B>,
}

impl<B: Backend> TrainedDalle<B> {
    /// Loads a `train-dalle` output directory and the VQ-VAE it was trained on (from
    /// `vqvae_dir`, or from the directory recorded at training time), refusing a VQ-VAE whose
    /// checkpoint is not the one the decoder learned.
    pub fn load(
        dir: &Path,
        vqvae_dir: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self, ArtifactError> {
        let config_path = dir.join("dalle-config.json");
        let config: TrainedDalleConfig =
            super::read_artifact_json(&config_path, "train-dalle", "--dalle")?;
        let model = load_safetensors(
            config.model.init::<B>(device),
            &dir.join("dalle.safetensors"),
        )?;
        let bpe = TextTokenizer::from_file(&dir.join("caption-bpe.json"))?;
        let vqvae_dir = vqvae_dir.unwrap_or(&config.vqvae_dir);
        let vqvae = TrainedVqVae::load(vqvae_dir, device)?;
        if vqvae.fingerprint != config.vqvae_checkpoint {
            return Err(ArtifactError::Mismatch(format!(
                "the VQ-VAE in {} (checkpoint {}) is not the one {} was trained on (checkpoint {}); pass the original with --vqvae",
                vqvae_dir.display(),
                vqvae.fingerprint,
                dir.display(),
                config.vqvae_checkpoint
            )));
        }
        Ok(Self {
            model,
            config,
            bpe,
            vqvae,
        })
    }

    /// What is lost of `caption` on its way into the stream, as warnings to show the user: the
    /// words this vocabulary splits or does not know, and the tokens past the text positions.
    pub fn caption_warnings(&self, caption: &str) -> Result<Vec<String>, TokenizerError> {
        let text_len = self.config.model.text_len;
        let coverage = self.bpe.coverage(caption, text_len)?;
        let mut warnings = Vec::new();
        if !coverage.unfamiliar_words.is_empty() {
            warnings.push(format!(
                "{caption:?}: not in the caption vocabulary as whole words, so the model saw them rarely or never: {}",
                coverage.unfamiliar_words.join(", ")
            ));
        }
        if coverage.dropped_tokens > 0 {
            warnings.push(format!(
                "{caption:?}: {} tokens beyond the model's {text_len} text positions are dropped",
                coverage.dropped_tokens
            ));
        }
        Ok(warnings)
    }

    /// The stream's text ids of a caption.
    pub fn text_ids(&self, caption: &str) -> Result<Vec<u32>, TokenizerError> {
        let ids = self.bpe.encode(caption, self.config.model.text_len)?;
        Ok(self.config.model.text_ids(&ids))
    }
}

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
