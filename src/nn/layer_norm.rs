//! Layer normalisation over the last dimension, as PyTorch's `nn.LayerNorm`:
//! `(x − mean) / sqrt(var + ε) · γ + β` with the biased variance.
//!
//! Why not burn's `LayerNorm`: under `Autodiff`, burn 0.21 records it as about nine ops (mean,
//! subtraction, square, mean, add, square root, division, scale, shift), each keeping a tensor
//! of the input's size for the backward pass, and its epsilon is private, so a fused op
//! cannot be called with it. Here it is one node ([`Backend::layer_norm_fused`]) whose
//! backward is one pass per row ([`Backend::layer_norm_backward`]). The parameters are
//! burn's (`gamma`, `beta`), so checkpoints name them as before.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Tensor, TensorPrimitive};

use super::Backend;

/// A [`LayerNorm`] over `d_model` features.
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    pub d_model: usize,
    /// Added to the variance before the square root (PyTorch's default; BERT uses 1e-12).
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl LayerNormConfig {
    /// `γ = 1`, `β = 0`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: Initializer::Zeros.init([self.d_model], device),
            epsilon: self.epsilon,
        }
    }
}

/// Layer normalisation with a learned scale and shift.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[d_model]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift, `[d_model]`.
    pub beta: Param<Tensor<B, 1>>,
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// # Shapes
    /// - `x`: `[..., d_model]`
    /// - returns: the shape of `x`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let normalized = B::layer_norm_fused(
            x.into_primitive().tensor(),
            self.gamma.val().into_primitive().tensor(),
            self.beta.val().into_primitive().tensor(),
            self.epsilon,
        );
        Tensor::from_primitive(TensorPrimitive::Float(normalized))
    }
}
