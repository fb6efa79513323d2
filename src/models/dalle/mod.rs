//! DALL-E-style text-to-image generation: the decoder, its attention masks, and sampling.

mod masks;
mod model;
mod sampling;

pub use masks::{attention_mask, visible, AttentionLayout, ImageAttention};
pub use model::{Dalle, DalleConfig, DalleLoss, DecoderState};
pub use sampling::{choose_codes, generate, SamplingConfig};
