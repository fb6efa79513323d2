//! The images of one split, preprocessed and cached, without captions or labels: what an image
//! tokenizer trains on and encodes.

use std::path::Path;

use crate::nn::Backend;
use burn::tensor::Tensor;

use super::batch::image_batch;
use super::coco::{CocoDataset, CocoImage, CocoSplit};
use super::error::{BadEntryPolicy, DataError, SkipReport};
use super::image_cache::{source_images_fingerprint, ImageCache};

/// See the module documentation.
pub struct ImageSplit {
    pub split: CocoSplit,
    pub cache: ImageCache,
    /// The usable images, by id, in dataset order.
    pub image_ids: Vec<u64>,
    /// [`source_images_fingerprint`] of the usable images: what token files record, so a
    /// reader can tell that the files they were made from are still the ones on disk.
    pub images_fingerprint: String,
    /// Entries left out under [`BadEntryPolicy::Skip`].
    pub skipped: SkipReport,
}

impl ImageSplit {
    /// Loads the split's annotations under `root` and maps (building it if needed) its image
    /// cache at `image_size` pixels. With `max_images`, only the first that many images (by id)
    /// are used.
    pub fn prepare(
        root: &Path,
        split: CocoSplit,
        image_size: usize,
        max_images: Option<usize>,
        cache_dir: &Path,
        policy: BadEntryPolicy,
        show_progress: bool,
    ) -> Result<Self, DataError> {
        let mut dataset = CocoDataset::load(root, split, policy)?;
        if let Some(max) = max_images {
            dataset.images.truncate(max);
        }
        let (cache, image_report) =
            ImageCache::open_or_build(&dataset, image_size, cache_dir, policy, show_progress)?;
        let mut skipped = std::mem::take(&mut dataset.skipped);
        skipped.merge(image_report);
        let usable: Vec<&CocoImage> = dataset
            .images
            .iter()
            .filter(|image| cache.contains(image.id))
            .collect();
        Ok(Self {
            split,
            cache,
            image_ids: usable.iter().map(|image| image.id).collect(),
            images_fingerprint: source_images_fingerprint(usable),
            skipped,
        })
    }

    pub fn len(&self) -> usize {
        self.image_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }

    pub fn image_size(&self) -> usize {
        self.cache.image_size()
    }

    /// Normalised pixels of the images at `indices` (positions in `image_ids`).
    ///
    /// # Shapes
    /// - returns: `[indices.len(), 3, image_size, image_size]`
    pub fn batch<B: Backend>(&self, indices: &[usize], device: &B::Device) -> Tensor<B, 4> {
        let ids: Vec<u64> = indices.iter().map(|&i| self.image_ids[i]).collect();
        image_batch(&self.cache, &ids, device)
    }
}
