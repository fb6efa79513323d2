//! Trained models as their run directories leave them: the VQ-VAE as an image tokenizer, the
//! DALL-E decoder as a generator, and the classifiers that judge and rerank generated images.
//! Nothing here trains; `generate` and `image-tokens` use this layer only.

pub mod dalle;
pub mod dalle_eval;
pub mod fid;
pub mod generation_output;
pub mod lxmert_export;
pub mod vqvae;

use crate::data::{DataError, TokenizerError};
use crate::io::checkpoint::CheckpointError;
use std::path::{Path, PathBuf};

/// A trained artifact that cannot be loaded or used, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path} does not exist: it is written by `{made_by}` when a run finishes. Run that first, or point {flag} at a finished run's output directory")]
    NotTrained {
        path: PathBuf,
        made_by: &'static str,
        flag: &'static str,
    },
    /// An output folder that cannot be used as asked.
    #[error("{0}")]
    Output(String),
    /// Two artifacts that do not belong together, or a classifier of the wrong kind.
    #[error("{0}")]
    Mismatch(String),
}

/// Reads a trained artifact's JSON config; when it does not exist, the error names the
/// command that makes it and the flag that points at it (the usual first mistake is running
/// `generate` before `train-dalle`).
pub fn read_artifact_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    made_by: &'static str,
    flag: &'static str,
) -> Result<T, ArtifactError> {
    if !path.exists() {
        return Err(ArtifactError::NotTrained {
            path: path.to_path_buf(),
            made_by,
            flag,
        });
    }
    Ok(crate::io::checkpoint::read_json(path)?)
}
