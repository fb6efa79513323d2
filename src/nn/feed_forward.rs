//! Position-wise feed-forward block: `Linear -> GELU -> Linear`.

use crate::nn::gelu;
use crate::nn::precision::linear;
use crate::nn::Backend;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;

/// Configuration of [`FeedForward`].
#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    /// Input and output width.
    pub d_model: usize,
    /// Hidden width (BERT uses `4 * d_model`).
    pub d_hidden: usize,
}

impl FeedForwardConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeedForward<B> {
        FeedForward {
            intermediate: LinearConfig::new(self.d_model, self.d_hidden).init(device),
            output: LinearConfig::new(self.d_hidden, self.d_model).init(device),
        }
    }
}

/// Two linear layers with a GELU between them.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub intermediate: Linear<B>,
    pub output: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - returns: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear(&self.output, gelu(linear(&self.intermediate, x)))
    }
}
