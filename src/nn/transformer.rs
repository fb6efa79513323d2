//! Transformer layers and stacks in the two LayerNorm placements the model families need:
//! post-LayerNorm as in BERT and LXMERT (<https://arxiv.org/abs/1810.04805>), and pre-LayerNorm
//! as in GPT-2 (<https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf>).

use crate::nn::Backend;
use crate::nn::{LayerNorm, LayerNormConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::attention::{
    AttentionMask, KeyValueCache, MultiHeadAttention, MultiHeadAttentionConfig,
};
use super::feed_forward::{FeedForward, FeedForwardConfig};

/// Where the LayerNorm sits relative to each residual branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormPlacement {
    /// `x = LN(x + f(x))`: BERT, LXMERT. Checkpoint-compatible with those models.
    Post,
    /// `x = x + f(LN(x))`: GPT-2, DALL-E. Trains stably without warm-up tricks in deep stacks.
    Pre,
}

/// Configuration of one [`TransformerLayer`].
#[derive(Config, Debug)]
pub struct TransformerLayerConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub d_hidden: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    /// BERT and LXMERT use 1e-12; burn's default is 1e-5.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    #[config(default = "NormPlacement::Post")]
    pub norm: NormPlacement,
}

impl TransformerLayerConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerLayer<B> {
        let layer_norm = LayerNormConfig::new(self.d_model).with_epsilon(self.layer_norm_eps);
        TransformerLayer {
            attention: MultiHeadAttentionConfig::new(self.d_model, self.n_heads).init(device),
            attention_norm: layer_norm.init(device),
            feed_forward: FeedForwardConfig::new(self.d_model, self.d_hidden).init(device),
            feed_forward_norm: layer_norm.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            norm: self.norm,
        }
    }
}

/// Self-attention followed by a feed-forward block, each with a residual connection.
#[derive(Module, Debug)]
pub struct TransformerLayer<B: Backend> {
    pub attention: MultiHeadAttention<B>,
    pub attention_norm: LayerNorm<B>,
    pub feed_forward: FeedForward<B>,
    pub feed_forward_norm: LayerNorm<B>,
    dropout: Dropout,
    #[module(skip)]
    norm: NormPlacement,
}

impl<B: Backend> TransformerLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - returns: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        match self.norm {
            NormPlacement::Post => {
                let attended = self.attention.forward(x.clone(), x.clone(), mask);
                let x = self
                    .attention_norm
                    .forward(x + self.dropout.forward(attended));
                let transformed = self.feed_forward.forward(x.clone());
                self.feed_forward_norm
                    .forward(x + self.dropout.forward(transformed))
            }
            NormPlacement::Pre => {
                let normed = self.attention_norm.forward(x.clone());
                let attended = self.attention.forward(normed.clone(), normed, mask);
                let x = x + self.dropout.forward(attended);
                let transformed = self
                    .feed_forward
                    .forward(self.feed_forward_norm.forward(x.clone()));
                x + self.dropout.forward(transformed)
            }
        }
    }
}

impl<B: Backend> TransformerLayer<B> {
    /// [`TransformerLayer::forward`] for new positions after those in `cache` (pre-LN only: the
    /// autoregressive decoders are pre-LN). See [`MultiHeadAttention::forward_cached`].
    ///
    /// # Shapes
    /// - `x_new`: `[batch, n_new, d_model]`
    /// - `mask.pattern`: `[n_new, cached + n_new]`
    /// - returns: `[batch, n_new, d_model]`
    pub fn forward_cached(
        &self,
        x_new: Tensor<B, 3>,
        cache: &mut KeyValueCache<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        assert_eq!(
            self.norm,
            NormPlacement::Pre,
            "cached decoding is implemented for pre-LN layers"
        );
        let normed = self.attention_norm.forward(x_new.clone());
        let x = x_new
            + self
                .dropout
                .forward(self.attention.forward_cached(normed, cache, mask));
        let transformed = self
            .feed_forward
            .forward(self.feed_forward_norm.forward(x.clone()));
        x + self.dropout.forward(transformed)
    }
}

/// Configuration of a [`TransformerEncoder`]: `n_layers` identical layers.
#[derive(Config, Debug)]
pub struct TransformerEncoderConfig {
    pub n_layers: usize,
    pub layer: TransformerLayerConfig,
}

impl TransformerEncoderConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerEncoder<B> {
        TransformerEncoder {
            layers: (0..self.n_layers)
                .map(|_| self.layer.init(device))
                .collect(),
        }
    }
}

/// A stack of [`TransformerLayer`]s sharing one mask.
#[derive(Module, Debug)]
pub struct TransformerEncoder<B: Backend> {
    pub layers: Vec<TransformerLayer<B>>,
}

impl<B: Backend> TransformerEncoder<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - returns: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        self.layers
            .iter()
            .fold(x, |hidden, layer| layer.forward(hidden, mask))
    }
}
