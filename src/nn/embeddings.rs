//! Input embeddings: BERT-style text embeddings and LXMERT-style visual embeddings.

use crate::nn::precision::linear;
use crate::nn::Backend;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig,
};

use super::{LayerNorm, LayerNormConfig};
use burn::tensor::{Int, Tensor};

/// Configuration of [`TextEmbeddings`].
#[derive(Config, Debug)]
pub struct TextEmbeddingsConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Longest position id + 1.
    pub max_positions: usize,
    /// Number of segment (token type) ids.
    #[config(default = 2)]
    pub n_segments: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Standard deviation of the initial tables: BERT's `initializer_range`. burn's default,
    /// N(0, 1), measurably slowed our from-scratch training.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl TextEmbeddingsConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TextEmbeddings<B> {
        let init = || Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        TextEmbeddings {
            token: EmbeddingConfig::new(self.vocab_size, self.d_model)
                .with_initializer(init())
                .init(device),
            position: EmbeddingConfig::new(self.max_positions, self.d_model)
                .with_initializer(init())
                .init(device),
            segment: EmbeddingConfig::new(self.n_segments, self.d_model)
                .with_initializer(init())
                .init(device),
            norm: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// `LayerNorm(token + position + segment)`, then dropout, as in BERT.
#[derive(Module, Debug)]
pub struct TextEmbeddings<B: Backend> {
    pub token: Embedding<B>,
    pub position: Embedding<B>,
    pub segment: Embedding<B>,
    pub norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> TextEmbeddings<B> {
    /// # Shapes
    /// - `tokens`, `segments`, `positions`: `[batch, seq]`
    /// - returns: `[batch, seq, d_model]`
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        segments: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let summed = self.token.forward(tokens)
            + self.position.forward(positions)
            + self.segment.forward(segments);
        self.dropout.forward(self.norm.forward(summed))
    }
}

/// Configuration of [`VisualEmbeddings`].
#[derive(Config, Debug)]
pub struct VisualEmbeddingsConfig {
    /// Width of each region feature (2048 for Faster R-CNN features).
    pub d_feature: usize,
    pub d_model: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
}

impl VisualEmbeddingsConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisualEmbeddings<B> {
        let norm = LayerNormConfig::new(self.d_model).with_epsilon(self.layer_norm_eps);
        VisualEmbeddings {
            feature: LinearConfig::new(self.d_feature, self.d_model).init(device),
            feature_norm: norm.init(device),
            box_position: LinearConfig::new(4, self.d_model).init(device),
            box_norm: norm.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// LXMERT's visual embedding: `(LN(W_f f) + LN(W_b box)) / 2`, then dropout
/// (<https://arxiv.org/abs/1908.07490>, section 2.1).
#[derive(Module, Debug)]
pub struct VisualEmbeddings<B: Backend> {
    pub feature: Linear<B>,
    pub feature_norm: LayerNorm<B>,
    pub box_position: Linear<B>,
    pub box_norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> VisualEmbeddings<B> {
    /// # Shapes
    /// - `features`: `[batch, regions, d_feature]`
    /// - `boxes`: `[batch, regions, 4]`, `(x1, y1, x2, y2)` divided by image width/height
    /// - returns: `[batch, regions, d_model]`
    pub fn forward(&self, features: Tensor<B, 3>, boxes: Tensor<B, 3>) -> Tensor<B, 3> {
        let features = self.feature_norm.forward(linear(&self.feature, features));
        let boxes = self.box_norm.forward(linear(&self.box_position, boxes));
        self.dropout.forward((features + boxes) / 2.0)
    }
}
