//! Training: checkpoints, metrics, schedules, progress, plots and the experiment loops.

pub mod checkpoint;
pub mod classifier_run;
pub mod classify;
pub mod dalle;
pub mod dalle_eval;
pub mod dalle_generate;
pub mod epoch_checkpoints;
pub mod gradients;
pub mod image_grid;
pub mod lxmert_pretrain;
pub mod metrics;
pub mod plots;
pub mod pretrained_encoder;
pub mod progress;
pub mod schedule;
pub mod vqvae;

use std::path::PathBuf;

/// Where an experiment reads and writes.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// Results, charts and checkpoints.
    pub out_dir: PathBuf,
    /// Where the synthetic set is generated.
    pub data_dir: PathBuf,
    /// Where preprocessed images are cached.
    pub cache_dir: PathBuf,
}
