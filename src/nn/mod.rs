//! Transformer building blocks shared by every model family in vislang.

pub mod attention;
mod autodiff_ops;
pub mod backend;
mod cpu_kernels;
pub mod embeddings;
pub mod feed_forward;
mod flex_ops;
pub mod hf_export;
pub mod hf_weights;
pub mod layer_norm;
pub mod losses;
pub mod ops;
pub mod patch_encoder;
pub mod precision;
pub mod transformer;

pub use attention::{AttentionMask, KeyValueCache, MultiHeadAttention, MultiHeadAttentionConfig};
pub use backend::{AutodiffBackend, Backend};
pub use embeddings::{
    TextEmbeddings, TextEmbeddingsConfig, VisualEmbeddings, VisualEmbeddingsConfig,
};
pub use feed_forward::{FeedForward, FeedForwardConfig};
pub use hf_export::HfExport;
pub use hf_weights::{HfTensors, HfWeights, HfWeightsError};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use losses::{weighted_cross_entropy, weighted_smooth_l1};
pub use ops::{cross_entropy, gelu};
pub use patch_encoder::{PatchEncoder, PatchEncoderConfig, PatchRegions};
pub use precision::{autocast, Precision};
pub use transformer::{
    NormPlacement, TransformerEncoder, TransformerEncoderConfig, TransformerLayer,
    TransformerLayerConfig,
};
