//! Turning examples into tensors: normalised image batches and padded caption batches.

use crate::nn::Backend;
use burn::tensor::{Tensor, TensorData};

use super::image_cache::ImageCache;

/// ImageNet channel statistics, the usual normalisation for COCO images.
pub const IMAGE_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGE_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `[batch, 3, size, size]` normalised pixels from cached `[size, size, 3]` bytes.
pub fn image_batch<B: Backend>(
    cache: &ImageCache,
    image_ids: &[u64],
    device: &B::Device,
) -> Tensor<B, 4> {
    let size = cache.image_size();
    let plane = size * size;
    let mut values = vec![0f32; image_ids.len() * 3 * plane];
    for (b, &id) in image_ids.iter().enumerate() {
        let pixels = cache
            .get(id)
            .unwrap_or_else(|| panic!("image {id} is not in the cache {}", cache.path().display()));
        let out = &mut values[b * 3 * plane..(b + 1) * 3 * plane];
        for (p, rgb) in pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + p] = (rgb[c] as f32 / 255.0 - IMAGE_MEAN[c]) / IMAGE_STD[c];
            }
        }
    }
    Tensor::from_data(
        TensorData::new(values, [image_ids.len(), 3, size, size]),
        device,
    )
}

/// The inverse of [`image_batch`]: RGB bytes (`[size, size, 3]` each) from normalised
/// `[batch, 3, size, size]` tensors, clamped to the displayable range.
pub fn images_to_rgb<B: Backend>(images: Tensor<B, 4>) -> Vec<Vec<u8>> {
    let [batch, _, h, w] = images.dims();
    let plane = h * w;
    let values: Vec<f32> = images
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data");
    (0..batch)
        .map(|b| {
            let image = &values[b * 3 * plane..(b + 1) * 3 * plane];
            (0..plane)
                .flat_map(|p| {
                    (0..3).map(move |c| {
                        let v = image[c * plane + p] * IMAGE_STD[c] + IMAGE_MEAN[c];
                        (v * 255.0).round().clamp(0.0, 255.0) as u8
                    })
                })
                .collect()
        })
        .collect()
}

/// `[batch, n]` float tensor from rows of equal length.
pub fn float_rows<B: Backend>(rows: &[&[f32]], device: &B::Device) -> Tensor<B, 2> {
    let width = rows.first().map_or(0, |r| r.len());
    let values: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(values, [rows.len(), width]), device)
}
