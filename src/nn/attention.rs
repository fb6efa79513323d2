//! Multi-head scaled dot-product attention, the one attention implementation in vislang.
//!
//! The same module serves as self-attention (`query_input == context`) and as cross-attention
//! (queries from one stream, keys and values from another), as in "Attention Is All You Need"
//! (<https://arxiv.org/abs/1706.03762>). Masking is described by [`AttentionMask`]; the score
//! computation itself is burn's fused `attention` op, so backends with a flash kernel use it.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

/// Configuration of [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Width of the query stream.
    pub d_model: usize,
    /// Number of attention heads; must divide `d_model`.
    pub n_heads: usize,
    /// Width of the key/value stream (cross-attention); `None` means `d_model`.
    #[config(default = "None")]
    pub d_context: Option<usize>,
}

impl MultiHeadAttentionConfig {
    /// Builds the module. Panics only on a programming error (heads not dividing the width).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadAttention<B> {
        assert!(
            self.d_model.is_multiple_of(self.n_heads),
            "d_model {} is not divisible by n_heads {}",
            self.d_model,
            self.n_heads
        );
        let d_context = self.d_context.unwrap_or(self.d_model);
        MultiHeadAttention {
            query: LinearConfig::new(self.d_model, self.d_model).init(device),
            key: LinearConfig::new(d_context, self.d_model).init(device),
            value: LinearConfig::new(d_context, self.d_model).init(device),
            output: LinearConfig::new(self.d_model, self.d_model).init(device),
            n_heads: self.n_heads,
        }
    }
}

/// Multi-head attention with separate query, key, value and output projections.
#[derive(Module, Debug)]
pub struct MultiHeadAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub output: Linear<B>,
    n_heads: usize,
}

/// Which query/key pairs may not attend to each other.
///
/// All parts combine: a pair is masked if any part masks it.
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    /// `[batch, seq_k]`, `true` where the key is padding.
    pub key_padding: Option<Tensor<B, 2, Bool>>,
    /// Query `i` may only see keys `j <= i` (autoregressive decoding).
    pub causal: bool,
    /// `[seq_q, seq_k]`, `true` where the pair is masked; shared by the whole batch
    /// (e.g. DALL-E's row / column / convolutional sparse patterns).
    pub pattern: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> Default for AttentionMask<B> {
    fn default() -> Self {
        Self::none()
    }
}

impl<B: Backend> AttentionMask<B> {
    /// Every query sees every key.
    pub fn none() -> Self {
        Self {
            key_padding: None,
            causal: false,
            pattern: None,
        }
    }

    /// Masks the keys where `key_padding` (`[batch, seq_k]`) is `true`.
    pub fn padding(key_padding: Tensor<B, 2, Bool>) -> Self {
        Self {
            key_padding: Some(key_padding),
            ..Self::none()
        }
    }

    /// Lower-triangular mask for autoregressive decoding.
    pub fn causal() -> Self {
        Self {
            causal: true,
            ..Self::none()
        }
    }

    /// Adds a batch-shared `[seq_q, seq_k]` pattern.
    pub fn with_pattern(mut self, pattern: Tensor<B, 2, Bool>) -> Self {
        self.pattern = Some(pattern);
        self
    }

    /// Combines padding and pattern into the `[batch, heads, seq_q, seq_k]` boolean mask that
    /// the fused attention op takes. Causality is passed separately so kernels can exploit it.
    fn expand(
        &self,
        batch: usize,
        heads: usize,
        seq_q: usize,
        seq_k: usize,
    ) -> Option<Tensor<B, 4, Bool>> {
        let padding = self.key_padding.clone().map(|padding| {
            // [batch, seq_k] -> [batch, heads, seq_q, seq_k]
            padding
                .reshape([batch, 1, 1, seq_k])
                .expand([batch, heads, seq_q, seq_k])
        });
        let pattern = self.pattern.clone().map(|pattern| {
            // [seq_q, seq_k] -> [batch, heads, seq_q, seq_k]
            pattern
                .reshape([1, 1, seq_q, seq_k])
                .expand([batch, heads, seq_q, seq_k])
        });
        match (padding, pattern) {
            (Some(a), Some(b)) => Some(a.bool_or(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The keys and values of the positions decoded so far, so that each new position costs one
/// position of work instead of a recomputation of the prefix.
#[derive(Debug, Clone)]
pub struct KeyValueCache<B: Backend> {
    /// `[batch, heads, cached, d_head]` each.
    keys_values: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> Default for KeyValueCache<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> KeyValueCache<B> {
    pub fn new() -> Self {
        Self { keys_values: None }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.keys_values.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> MultiHeadAttention<B> {
    /// Self-attention of new positions appended after the cached ones: their keys and values
    /// join `cache`, and their queries attend to every cached and new position that `mask`
    /// leaves visible. Causality is the caller's to express in `mask.pattern`, because only the
    /// caller knows the absolute positions.
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
        let [batch, n_new, d_model] = x_new.dims();
        let q = self.split_heads(self.query.forward(x_new.clone())); // [b, h, n_new, d_head]
        let k_new = self.split_heads(self.key.forward(x_new.clone()));
        let v_new = self.split_heads(self.value.forward(x_new));
        let (k, v) = match cache.keys_values.take() {
            Some((k, v)) => (
                Tensor::cat(vec![k, k_new], 2), // [b, h, cached + n_new, d_head]
                Tensor::cat(vec![v, v_new], 2),
            ),
            None => (k_new, v_new),
        };
        cache.keys_values = Some((k.clone(), v.clone()));
        let seq_k = k.dims()[2];
        let options = AttentionModuleOptions {
            is_causal: mask.causal,
            ..Default::default()
        };
        let mask = mask.expand(batch, self.n_heads, n_new, seq_k);
        let heads = attention(q, k, v, mask, None, options); // [b, h, n_new, d_head]
        let merged = heads.swap_dims(1, 2).reshape([batch, n_new, d_model]);
        self.output.forward(merged)
    }

    /// Attends from `query_input` to `context`.
    ///
    /// # Shapes
    /// - `query_input`: `[batch, seq_q, d_model]`
    /// - `context`: `[batch, seq_k, d_context]` (pass the same tensor for self-attention)
    /// - returns: `[batch, seq_q, d_model]`
    pub fn forward(
        &self,
        query_input: Tensor<B, 3>,
        context: Tensor<B, 3>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let [batch, seq_q, d_model] = query_input.dims();
        let seq_k = context.dims()[1];
        let q = self.split_heads(self.query.forward(query_input)); // [b, h, seq_q, d_head]
        let k = self.split_heads(self.key.forward(context.clone())); // [b, h, seq_k, d_head]
        let v = self.split_heads(self.value.forward(context)); // [b, h, seq_k, d_head]
        let options = AttentionModuleOptions {
            is_causal: mask.causal,
            ..Default::default()
        };
        let mask = mask.expand(batch, self.n_heads, seq_q, seq_k);
        let heads = attention(q, k, v, mask, None, options); // [b, h, seq_q, d_head]
        let merged = heads.swap_dims(1, 2).reshape([batch, seq_q, d_model]);
        self.output.forward(merged)
    }

    /// Number of heads.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// `[batch, seq, d_model]` -> `[batch, heads, seq, d_head]`
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, seq, d_model] = x.dims();
        x.reshape([batch, seq, self.n_heads, d_model / self.n_heads])
            .swap_dims(1, 2)
    }
}
