//! The bottom layer every other module may use: atomic file writes, JSON and checkpoint files,
//! and progress bars on the terminal.

pub mod checkpoint;
pub mod font;
pub mod image_grid;
pub mod progress;

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
