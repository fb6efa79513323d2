//! VQ-VAE image tokenizer (van den Oord et al. 2017, <https://arxiv.org/abs/1711.00937>): a
//! convolutional encoder downsamples an image by 4, 8 or 16 into a grid of vectors, each is
//! replaced by its nearest code, and a convolutional decoder reconstructs the image. The code
//! grid is the image's token sequence for the DALL-E-style decoder.
//!
//! The layout follows the paper's section 4.1: stride-2 4x4 convolutions down, a 3x3
//! convolution, residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv), a 1x1 projection to the code
//! width; the decoder mirrors it with stride-2 4x4 transposed convolutions.

use crate::nn::precision::{conv2d, conv_transpose2d};
use crate::nn::Backend;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor};

use super::quantizer::{VectorQuantizer, VectorQuantizerConfig};

/// Configuration of [`VqVae`].
#[derive(Config, Debug)]
pub struct VqVaeConfig {
    /// Downsampling factor of the encoder: 4, 8 or 16.
    pub downsample: usize,
    /// Codebook size.
    pub n_codes: usize,
    /// Width of each code.
    #[config(default = 64)]
    pub d_code: usize,
    /// Channels of the convolutional layers.
    #[config(default = 64)]
    pub hidden: usize,
    /// Residual blocks in the encoder and again in the decoder (2 in the paper).
    #[config(default = 2)]
    pub n_res_blocks: usize,
    #[config(default = 0.99)]
    pub decay: f64,
    #[config(default = 0.25)]
    pub commitment_weight: f64,
}

impl VqVaeConfig {
    /// The number of stride-2 stages: log2 of the downsampling factor.
    fn stages(&self) -> usize {
        assert!(
            matches!(self.downsample, 4 | 8 | 16),
            "downsample must be 4, 8 or 16, not {}",
            self.downsample
        );
        self.downsample.trailing_zeros() as usize
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> VqVae<B> {
        let h = self.hidden;
        let stages = self.stages();
        let same = |channels: [usize; 2], kernel: usize| {
            Conv2dConfig::new(channels, [kernel, kernel])
                .with_padding(PaddingConfig2d::Explicit(
                    kernel / 2,
                    kernel / 2,
                    kernel / 2,
                    kernel / 2,
                ))
                .init(device)
        };
        let down = |channels: [usize; 2]| {
            Conv2dConfig::new(channels, [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let up = |channels: [usize; 2]| {
            ConvTranspose2dConfig::new(channels, [4, 4])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .init(device)
        };
        let residual_stack = || {
            (0..self.n_res_blocks)
                .map(|_| ResidualBlock {
                    conv3: same([h, h], 3),
                    conv1: same([h, h], 1),
                })
                .collect()
        };
        VqVae {
            encoder_down: (0..stages)
                .map(|i| down([if i == 0 { 3 } else { h }, h]))
                .collect(),
            encoder_mix: same([h, h], 3),
            encoder_res: residual_stack(),
            encoder_out: same([h, self.d_code], 1),
            quantizer: VectorQuantizerConfig::new(self.n_codes, self.d_code)
                .with_decay(self.decay)
                .with_commitment_weight(self.commitment_weight)
                .init(device),
            decoder_in: same([self.d_code, h], 3),
            decoder_res: residual_stack(),
            decoder_up: (0..stages)
                .map(|i| up([h, if i + 1 == stages { 3 } else { h }]))
                .collect(),
        }
    }
}

/// `x + conv1x1(relu(conv3x3(relu(x))))`, the paper's residual block.
#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    pub conv3: Conv2d<B>,
    pub conv1: Conv2d<B>,
}

impl<B: Backend> ResidualBlock<B> {
    /// # Shapes
    /// - `x`: `[batch, hidden, h, w]`; returns the same shape.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = conv2d(&self.conv1, relu(conv2d(&self.conv3, relu(x.clone()))));
        x + y
    }
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct VqVae<B: Backend> {
    pub encoder_down: Vec<Conv2d<B>>,
    pub encoder_mix: Conv2d<B>,
    pub encoder_res: Vec<ResidualBlock<B>>,
    pub encoder_out: Conv2d<B>,
    pub quantizer: VectorQuantizer<B>,
    pub decoder_in: Conv2d<B>,
    pub decoder_res: Vec<ResidualBlock<B>>,
    pub decoder_up: Vec<ConvTranspose2d<B>>,
}

/// What [`VqVae::forward`] returns.
#[derive(Debug, Clone)]
pub struct VqVaeOutput<B: Backend> {
    /// `[batch, 3, height, width]`
    pub reconstruction: Tensor<B, 4>,
    /// `[batch, height / f, width / f]` code indices.
    pub codes: Tensor<B, 3, Int>,
    /// `[batch * grid, d_code]` encoder outputs before quantisation, for the EMA update.
    pub latents: Tensor<B, 2>,
    /// `[1]`
    pub commitment_loss: Tensor<B, 1>,
}

impl<B: Backend> VqVae<B> {
    /// Encoder outputs before quantisation.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]` (height and width divisible by f)
    /// - returns: `[batch, d_code, height / f, width / f]`
    pub fn encode_latents(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self
            .encoder_down
            .iter()
            .fold(images, |x, conv| relu(conv2d(conv, x)));
        let x = conv2d(&self.encoder_mix, x);
        let x = self.encoder_res.iter().fold(x, |x, block| block.forward(x));
        conv2d(&self.encoder_out, relu(x))
    }

    /// Reconstructs images from quantised latents.
    ///
    /// # Shapes
    /// - `quantized`: `[batch, d_code, gh, gw]`
    /// - returns: `[batch, 3, gh * f, gw * f]`
    pub fn decode_latents(&self, quantized: Tensor<B, 4>) -> Tensor<B, 4> {
        let last = self.decoder_up.len() - 1;
        let x = conv2d(&self.decoder_in, quantized);
        let x = relu(self.decoder_res.iter().fold(x, |x, block| block.forward(x)));
        self.decoder_up.iter().enumerate().fold(x, |x, (i, conv)| {
            let y = conv_transpose2d(conv, x);
            if i == last {
                y
            } else {
                relu(y)
            }
        })
    }

    /// One EMA step of the codebook towards the latents of the last forward pass; call it after
    /// each optimizer step (see [`VectorQuantizer::ema_update`]).
    ///
    /// # Shapes
    /// - `latents`: `[n, d_code]` ([`VqVaeOutput::latents`])
    /// - `codes`: `[batch, gh, gw]` ([`VqVaeOutput::codes`]), with `batch * gh * gw = n`
    pub fn ema_update(mut self, latents: Tensor<B, 2>, codes: Tensor<B, 3, Int>) -> Self {
        let n = latents.dims()[0];
        self.quantizer = self.quantizer.ema_update(latents, codes.reshape([n]));
        self
    }

    /// The downsampling factor f: images of `h x w` become `h/f x w/f` code grids.
    pub fn downsample(&self) -> usize {
        1 << self.encoder_down.len()
    }

    /// Encodes, quantises and decodes.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - returns: see [`VqVaeOutput`]
    pub fn forward(&self, images: Tensor<B, 4>) -> VqVaeOutput<B> {
        let latents = self.encode_latents(images); // [b, d, gh, gw]
        let [batch, d, gh, gw] = latents.dims();
        let flat = latents.permute([0, 2, 3, 1]).reshape([batch * gh * gw, d]);
        let quantized = self.quantizer.forward(flat.clone());
        let grid = quantized
            .quantized
            .reshape([batch, gh, gw, d])
            .permute([0, 3, 1, 2]);
        VqVaeOutput {
            reconstruction: self.decode_latents(grid),
            codes: quantized.codes.reshape([batch, gh, gw]),
            latents: flat,
            commitment_loss: quantized.commitment_loss,
        }
    }

    /// Image tokens: the code grid of each image.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - returns: `[batch, height / f, width / f]`
    pub fn encode(&self, images: Tensor<B, 4>) -> Tensor<B, 3, Int> {
        let latents = self.encode_latents(images);
        let [batch, d, gh, gw] = latents.dims();
        let flat = latents.permute([0, 2, 3, 1]).reshape([batch * gh * gw, d]);
        self.quantizer.nearest_codes(flat).reshape([batch, gh, gw])
    }

    /// Images from code grids.
    ///
    /// # Shapes
    /// - `codes`: `[batch, gh, gw]`
    /// - returns: `[batch, 3, gh * f, gw * f]`
    pub fn decode(&self, codes: Tensor<B, 3, Int>) -> Tensor<B, 4> {
        let [batch, gh, gw] = codes.dims();
        let vectors = self.quantizer.lookup(codes.reshape([batch * gh * gw])); // [n, d]
        let d = vectors.dims()[1];
        self.decode_latents(vectors.reshape([batch, gh, gw, d]).permute([0, 3, 1, 2]))
    }
}
