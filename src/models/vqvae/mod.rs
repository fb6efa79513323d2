//! VQ-VAE image tokenizer (issue #4; the model and quantizer so far, see the session notes).

mod model;
mod quantizer;

pub use model::{VqVae, VqVaeConfig, VqVaeOutput};
pub use quantizer::{Quantized, VectorQuantizer, VectorQuantizerConfig};
