//! Trained models as their run directories leave them: the VQ-VAE as an image tokenizer, the
//! DALL-E decoder as a generator, and the classifiers that judge and rerank generated images.
//! Nothing here trains; `generate` and `image-tokens` use this layer only.

pub mod dalle;
pub mod dalle_eval;
pub mod vqvae;

use crate::data::{DataError, TokenizerError};
use crate::io::checkpoint::CheckpointError;

/// A trained artifact that cannot be loaded or used, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Two artifacts that do not belong together, or a classifier of the wrong kind.
    #[error("{0}")]
    Mismatch(String),
}
