//! Caption-image pairs for the DALL-E decoder: each image's captions as BPE ids next to its
//! VQ-VAE token grid.

use crate::nn::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::{CocoDataset, ImageTokens, TextTokenizer, TokenizerError};
use crate::models::dalle::DalleConfig;

/// One image: its captions as BPE ids and its token grid.
#[derive(Debug, Clone)]
pub struct DalleExample {
    pub image_id: u64,
    pub captions: Vec<Vec<u32>>,
    pub raw_captions: Vec<String>,
    pub codes: Vec<u16>,
}

/// The examples of one split.
pub struct DalleSplit {
    pub examples: Vec<DalleExample>,
}

impl DalleSplit {
    /// Pairs the captions of `split` with the image tokens of `tokens`; images without tokens
    /// (skipped when the tokens were made) are left out.
    pub fn prepare(
        dataset: &CocoDataset,
        tokens: &ImageTokens,
        bpe: &TextTokenizer,
        text_len: usize,
    ) -> Result<Self, TokenizerError> {
        let index = tokens.index_by_id();
        let mut examples = Vec::with_capacity(tokens.len());
        for image in &dataset.images {
            let Some(&i) = index.get(&image.id) else {
                continue;
            };
            let captions = image
                .captions
                .iter()
                .map(|caption| bpe.encode(caption, text_len))
                .collect::<Result<Vec<_>, _>>()?;
            examples.push(DalleExample {
                image_id: image.id,
                captions,
                raw_captions: image.captions.clone(),
                codes: tokens.image(i).to_vec(),
            });
        }
        Ok(Self { examples })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Text ids `[batch, text_len]` and codes `[batch, n_image_tokens]` of `indices`, with
    /// caption `caption_choice[i]` (modulo the number of captions) or, where `null[i]`, the
    /// null caption.
    pub fn batch<B: Backend>(
        &self,
        config: &DalleConfig,
        indices: &[usize],
        caption_choice: &[usize],
        null: &[bool],
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let n = indices.len();
        let mut text = Vec::with_capacity(n * config.text_len);
        let mut codes = Vec::with_capacity(n * config.n_image_tokens());
        for (j, &i) in indices.iter().enumerate() {
            let example = &self.examples[i];
            let caption: &[u32] = if null[j] {
                &[]
            } else {
                &example.captions[caption_choice[j] % example.captions.len()]
            };
            text.extend(config.text_ids(caption).into_iter().map(|t| t as i64));
            codes.extend(example.codes.iter().map(|&c| c as i64));
        }
        (
            Tensor::from_data(TensorData::new(text, [n, config.text_len]), device),
            Tensor::from_data(TensorData::new(codes, [n, config.n_image_tokens()]), device),
        )
    }
}
