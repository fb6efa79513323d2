//! Attention masks of the DALL-E decoder: causal everywhere, and optionally the paper's sparse
//! row, column and convolutional patterns among image tokens (Ramesh et al. 2021,
//! <https://arxiv.org/abs/2102.12092>, appendix B.1).
//!
//! Masks are over input positions: `0` is [BOS], `1..=text_len` the text tokens, and
//! `text_len + 1 + k` image token `k` (row-major in the `rows x cols` grid). Every position sees
//! [BOS] and the text before it; the sparse patterns only thin out which earlier *image*
//! positions an image position sees:
//! - **row**: the previous `cols` image positions (a band as wide as one row, in raster order);
//! - **column**: earlier image positions in the same column;
//! - **convolutional**: earlier image positions within a `kernel x kernel` window around it.
//!
//! Each image position always sees itself, so no row of a mask is empty.

use crate::nn::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which image positions an image position may attend to (besides text and causality).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageAttention {
    /// Every earlier image position.
    Dense,
    /// The previous `cols` image positions.
    Row,
    /// Earlier image positions in the same column.
    Column,
    /// Earlier image positions within a `kernel x kernel` window.
    Convolutional { kernel: usize },
}

/// How attention is laid out over the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionLayout {
    /// Dense causal attention in every layer.
    Dense,
    /// DALL-E's layout: row, column, row, row, ... repeating, with a convolutional mask in the
    /// last layer.
    Sparse { conv_kernel: usize },
}

impl AttentionLayout {
    /// The pattern of layer `layer` out of `n_layers`.
    pub fn layer(&self, layer: usize, n_layers: usize) -> ImageAttention {
        match *self {
            AttentionLayout::Dense => ImageAttention::Dense,
            AttentionLayout::Sparse { conv_kernel } if layer + 1 == n_layers => {
                ImageAttention::Convolutional {
                    kernel: conv_kernel,
                }
            }
            AttentionLayout::Sparse { .. } if layer % 4 == 1 => ImageAttention::Column,
            AttentionLayout::Sparse { .. } => ImageAttention::Row,
        }
    }
}

/// Whether input position `query` may attend to input position `key`.
pub fn visible(
    pattern: ImageAttention,
    text_len: usize,
    grid: [usize; 2],
    query: usize,
    key: usize,
) -> bool {
    if key > query {
        return false;
    }
    let first_image = text_len + 1;
    if key < first_image || query < first_image {
        return true;
    }
    let (q, k) = (query - first_image, key - first_image);
    let cols = grid[1];
    match pattern {
        ImageAttention::Dense => true,
        ImageAttention::Row => q - k < cols,
        ImageAttention::Column => (q - k).is_multiple_of(cols),
        ImageAttention::Convolutional { kernel } => {
            let half = kernel / 2;
            let (qr, qc, kr, kc) = (q / cols, q % cols, k / cols, k % cols);
            qr - kr <= half && qc.abs_diff(kc) <= half
        }
    }
}

/// `[len, len]` mask, `true` where the pair is masked, for sequences of `len` input positions.
pub fn attention_mask<B: Backend>(
    pattern: ImageAttention,
    text_len: usize,
    grid: [usize; 2],
    len: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let masked: Vec<bool> = (0..len * len)
        .map(|i| !visible(pattern, text_len, grid, i / len, i % len))
        .collect();
    Tensor::from_data(TensorData::new(masked, [len, len]), device)
}
