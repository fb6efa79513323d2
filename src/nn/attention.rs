//! Multi-head scaled dot-product attention, the one attention implementation in vislang.
//!
//! The same module serves as self-attention (`query_input == context`) and as cross-attention
//! (queries from one stream, keys and values from another), as in "Attention Is All You Need"
//! (<https://arxiv.org/abs/1706.03762>). Masking is described by [`AttentionMask`], an additive
//! bias; the score computation is one fused node with its own backward
//! ([`super::backend::Backend::fused_attention`]).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};

use super::backend::{AttentionInputs, Backend};
use super::ops::swap_middle_dims;
use super::precision::linear;

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

/// Added to the scores of masked query/key pairs: exp() of it is exactly 0 in f32, and two of
/// them still add up to a finite number.
const MASKED: f32 = -1e9;
// The CPU kernel skips keys whose bias is at most HIDDEN; masked pairs must be among them.
const _: () = assert!(MASKED <= super::cpu_kernels::HIDDEN);

/// Which query/key pairs may not attend to each other, as the additive bias the fused
/// attention op takes: 0 where a pair is visible, [`MASKED`] where it is not.
///
/// Built once per forward pass and shared by every layer. Parts combine: a pair is masked if
/// any part masks it.
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    /// `[batch | 1, 1, seq_q | 1, seq_k]`; `None` when every query sees every key.
    bias: Option<Tensor<B, 4>>,
}

impl<B: Backend> Default for AttentionMask<B> {
    fn default() -> Self {
        Self::none()
    }
}

impl<B: Backend> AttentionMask<B> {
    /// Every query sees every key.
    pub fn none() -> Self {
        Self { bias: None }
    }

    /// Masks the keys where `key_padding` (`[batch, seq_k]`) is `true`.
    pub fn padding(key_padding: Tensor<B, 2, Bool>) -> Self {
        let [batch, seq_k] = key_padding.dims();
        let bias = key_padding
            .float()
            .mul_scalar(MASKED)
            .reshape([batch, 1, 1, seq_k]);
        Self { bias: Some(bias) }
    }

    /// Lower-triangular mask over `len` positions, for autoregressive decoding.
    pub fn causal(len: usize, device: &B::Device) -> Self {
        let values: Vec<f32> = (0..len * len)
            .map(|i| if i % len > i / len { MASKED } else { 0.0 })
            .collect();
        let bias = Tensor::<B, 2>::from_data(TensorData::new(values, [len, len]), device);
        Self {
            bias: Some(bias.reshape([1, 1, len, len])),
        }
    }

    /// Adds a batch-shared `[seq_q, seq_k]` pattern, `true` where the pair is masked (e.g.
    /// DALL-E's row / column / convolutional sparse patterns).
    pub fn with_pattern(self, pattern: Tensor<B, 2, Bool>) -> Self {
        let [seq_q, seq_k] = pattern.dims();
        let pattern = pattern
            .float()
            .mul_scalar(MASKED)
            .reshape([1, 1, seq_q, seq_k]);
        let bias = match self.bias {
            Some(bias) => bias + pattern, // broadcasts to [batch | 1, 1, seq_q, seq_k]
            None => pattern,
        };
        Self { bias: Some(bias) }
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
        let q = self.split_heads(linear(&self.query, x_new.clone())); // [b, h, n_new, d_head]
        let k_new = self.split_heads(linear(&self.key, x_new.clone()));
        let v_new = self.split_heads(linear(&self.value, x_new));
        let (k, v) = match cache.keys_values.take() {
            Some((k, v)) => (
                Tensor::cat(vec![k, k_new], 2), // [b, h, cached + n_new, d_head]
                Tensor::cat(vec![v, v_new], 2),
            ),
            None => (k_new, v_new),
        };
        cache.keys_values = Some((k.clone(), v.clone()));
        let heads = self.attend(q, k, v, mask); // [b, h, n_new, d_head]
        let merged = swap_middle_dims(heads).reshape([batch, n_new, d_model]);
        linear(&self.output, merged)
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
        let q = self.split_heads(linear(&self.query, query_input)); // [b, h, seq_q, d_head]
        let k = self.split_heads(linear(&self.key, context.clone())); // [b, h, seq_k, d_head]
        let v = self.split_heads(linear(&self.value, context)); // [b, h, seq_k, d_head]
        let heads = self.attend(q, k, v, mask); // [b, h, seq_q, d_head]
        let merged = swap_middle_dims(heads).reshape([batch, seq_q, d_model]);
        linear(&self.output, merged)
    }

    /// `softmax(q kᵀ / sqrt(d_head) + mask) v` as one fused node (see [`super::backend`]).
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 4> {
        let scale = 1.0 / (q.dims()[3] as f64).sqrt();
        let inputs = AttentionInputs {
            query: q.into_primitive().tensor(),
            key: k.into_primitive().tensor(),
            value: v.into_primitive().tensor(),
            bias: mask.bias.clone().map(|bias| bias.into_primitive().tensor()),
            scale,
        };
        Tensor::from_primitive(TensorPrimitive::Float(B::fused_attention(inputs)))
    }

    /// Number of heads.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// `[batch, seq, d_model]` -> `[batch, heads, seq, d_head]`
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, seq, d_model] = x.dims();
        swap_middle_dims(x.reshape([batch, seq, self.n_heads, d_model / self.n_heads]))
    }
}
