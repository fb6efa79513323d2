//! A COCO split prepared for multi-label classification: cached pixels, tokenized captions and
//! multi-hot labels, served as tensor batches.

use std::path::Path;

use crate::nn::Backend;
use burn::tensor::{Tensor, TensorData};

use super::batch::image_batch;
use super::coco::CocoDataset;
use super::error::{BadEntryPolicy, DataError, SkipReport};
use super::image_cache::ImageCache;
use super::tokenizer::{SpecialIds, TextTokenizer, TokenizerError};
use crate::models::TextBatch;

/// One image with its captions (as token ids) and labels.
#[derive(Debug, Clone)]
pub struct ClassificationExample {
    pub image_id: u64,
    /// Token ids of each caption, without special tokens, truncated to the maximum length.
    pub captions: Vec<Vec<u32>>,
    /// Indices of the categories present, ascending (the multi-hot target's ones). Kept
    /// sparse: a split's examples stay in memory, and a dense row would be 320 bytes per
    /// image at COCO's 80 categories.
    pub categories: Vec<u32>,
}

/// A batch for the classifier.
#[derive(Debug, Clone)]
pub struct ClassificationBatch<B: Backend> {
    /// `[batch, 3, size, size]` normalised pixels.
    pub images: Tensor<B, 4>,
    /// Captions, each ending with `[SEP]`.
    pub text: TextBatch<B>,
    /// `[batch, n_labels]` multi-hot targets.
    pub labels: Tensor<B, 2>,
}

/// Errors while preparing a split.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// A split ready for training or evaluation.
pub struct ClassificationSplit {
    pub examples: Vec<ClassificationExample>,
    pub cache: ImageCache,
    pub n_labels: usize,
    /// Entries left out under [`BadEntryPolicy::Skip`], from the annotations and the images.
    pub skipped: SkipReport,
}

impl ClassificationSplit {
    /// Decodes (or maps the cache of) the split's images and tokenizes its captions. With
    /// `max_images`, only the first that many images (by id) are used.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        mut dataset: CocoDataset,
        tokenizer: &TextTokenizer,
        image_size: usize,
        max_text_len: usize,
        max_images: Option<usize>,
        cache_dir: &Path,
        policy: BadEntryPolicy,
        show_progress: bool,
    ) -> Result<Self, PrepareError> {
        if let Some(max) = max_images {
            dataset.images.truncate(max);
        }
        let (cache, image_report) =
            ImageCache::open_or_build(&dataset, image_size, cache_dir, policy, show_progress)?;
        let n_labels = dataset.categories.len();
        let mut skipped = std::mem::take(&mut dataset.skipped);
        skipped.merge(image_report);
        let mut examples = Vec::with_capacity(dataset.images.len());
        for image in dataset
            .images
            .iter()
            .filter(|image| cache.contains(image.id))
        {
            let captions = image
                .captions
                .iter()
                .map(|caption| tokenizer.encode(caption, max_text_len))
                .collect::<Result<Vec<_>, _>>()?;
            let mut categories: Vec<u32> =
                image.objects.iter().map(|o| o.category as u32).collect();
            categories.sort_unstable();
            categories.dedup();
            examples.push(ClassificationExample {
                image_id: image.id,
                captions,
                categories,
            });
        }
        Ok(Self {
            examples,
            cache,
            n_labels,
            skipped,
        })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The batch of `indices`, using caption `caption_choice[i]` (modulo the number of
    /// captions) of example `indices[i]`.
    pub fn batch<B: Backend>(
        &self,
        indices: &[usize],
        caption_choice: &[usize],
        special: SpecialIds,
        device: &B::Device,
    ) -> ClassificationBatch<B> {
        let examples: Vec<&ClassificationExample> =
            indices.iter().map(|&i| &self.examples[i]).collect();
        let image_ids: Vec<u64> = examples.iter().map(|e| e.image_id).collect();
        let captions: Vec<&[u32]> = examples
            .iter()
            .zip(caption_choice)
            .map(|(e, &c)| e.captions[c % e.captions.len()].as_slice())
            .collect();
        let mut labels = vec![0.0f32; examples.len() * self.n_labels];
        for (row, example) in labels.chunks_mut(self.n_labels).zip(&examples) {
            for &category in &example.categories {
                row[category as usize] = 1.0;
            }
        }
        ClassificationBatch {
            images: image_batch(&self.cache, &image_ids, device),
            text: TextBatch::from_sequences(&captions, Some(special.sep), special.pad, device),
            labels: Tensor::from_data(
                TensorData::new(labels, [examples.len(), self.n_labels]),
                device,
            ),
        }
    }
}
