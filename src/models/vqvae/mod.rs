//! VQ-VAE image tokenizer: model and quantizer; training is in `crate::train::vqvae`.

mod model;
mod quantizer;

pub use model::{ResidualBlock, VqVae, VqVaeConfig, VqVaeOutput};
pub use quantizer::{Quantized, VectorQuantizer, VectorQuantizerConfig};
