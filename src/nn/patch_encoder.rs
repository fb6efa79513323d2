//! Detector-free visual regions: a small convolutional stem that turns raw pixels into a grid of
//! patch features, each with the box of the cell it covers. Replaces the Faster R-CNN region
//! extractor of LXMERT/ViLBERT (as in ViLT, <https://arxiv.org/abs/2102.03334>, and Pixel-BERT),
//! so the same [`super::VisualEmbeddings`] consume either source.

use crate::nn::gelu;
use crate::nn::precision::conv2d;
use crate::nn::Backend;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::{Tensor, TensorData};

/// Configuration of [`PatchEncoder`].
#[derive(Config, Debug)]
pub struct PatchEncoderConfig {
    /// Side of the square input image, in pixels.
    pub image_size: usize,
    /// Side of one patch (region), in pixels; a multiple of 4 that divides `image_size`.
    pub patch_size: usize,
    /// Width of the convolutional stem.
    #[config(default = 32)]
    pub stem_channels: usize,
    /// Width of each output region feature.
    pub d_feature: usize,
}

impl PatchEncoderConfig {
    /// Number of regions (patches) per image.
    pub fn n_regions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> PatchEncoder<B> {
        assert!(
            self.patch_size.is_multiple_of(4) && self.image_size.is_multiple_of(self.patch_size),
            "patch_size {} must be a multiple of 4 that divides image_size {}",
            self.patch_size,
            self.image_size
        );
        let c = self.stem_channels;
        let downsample = |channels: [usize; 2]| {
            Conv2dConfig::new(channels, [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let rest = self.patch_size / 4;
        PatchEncoder {
            stem1: downsample([3, c]),
            stem2: downsample([c, c]),
            patchify: Conv2dConfig::new([c, self.d_feature], [rest, rest])
                .with_stride([rest, rest])
                .init(device),
            grid: self.image_size / self.patch_size,
        }
    }
}

/// Region features from pixels: two stride-2 3x3 convolutions, then a patchifying convolution.
#[derive(Module, Debug)]
pub struct PatchEncoder<B: Backend> {
    pub stem1: Conv2d<B>,
    pub stem2: Conv2d<B>,
    pub patchify: Conv2d<B>,
    grid: usize,
}

/// What [`PatchEncoder::forward`] returns: region-like features and their boxes.
#[derive(Debug, Clone)]
pub struct PatchRegions<B: Backend> {
    /// `[batch, regions, d_feature]`, regions in row-major grid order.
    pub features: Tensor<B, 3>,
    /// `[batch, regions, 4]`: `(x1, y1, x2, y2)` of each cell, divided by the image side.
    pub boxes: Tensor<B, 3>,
}

impl<B: Backend> PatchEncoder<B> {
    /// # Shapes
    /// - `images`: `[batch, 3, image_size, image_size]`, normalised pixels
    /// - returns: features `[batch, grid*grid, d_feature]`, boxes `[batch, grid*grid, 4]`
    pub fn forward(&self, images: Tensor<B, 4>) -> PatchRegions<B> {
        let batch = images.dims()[0];
        let x = gelu(conv2d(&self.stem1, images)); // [b, c, s/2, s/2]
        let x = gelu(conv2d(&self.stem2, x)); // [b, c, s/4, s/4]
        let x = conv2d(&self.patchify, x); // [b, d_feature, grid, grid]
        let [_, d_feature, gh, gw] = x.dims();
        let features = x.reshape([batch, d_feature, gh * gw]).swap_dims(1, 2);
        let boxes = self
            .grid_boxes(&features.device())
            .unsqueeze::<3>()
            .expand([batch, gh * gw, 4]);
        PatchRegions { features, boxes }
    }

    /// The normalised box of every grid cell, `[grid*grid, 4]`.
    fn grid_boxes(&self, device: &B::Device) -> Tensor<B, 2> {
        let g = self.grid;
        let step = 1.0 / g as f32;
        let values: Vec<f32> = (0..g * g)
            .flat_map(|cell| {
                let (row, col) = ((cell / g) as f32, (cell % g) as f32);
                [
                    col * step,
                    row * step,
                    (col + 1.0) * step,
                    (row + 1.0) * step,
                ]
            })
            .collect();
        Tensor::from_data(TensorData::new(values, [g * g, 4]), device)
    }
}
