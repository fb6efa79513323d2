//! Training: one [`engine`] that every family is a task of (the loop, run directories,
//! schedules, data loading, devices and precision), the [`report`]s and charts they share, and
//! a folder per family's task: [`classify`] (the headline experiment), [`lxmert_pretrain`],
//! [`vqvae`] and [`dalle`]. [`workloads`] are the presets' tasks as `bench` times them, and
//! [`device_check`] runs them on two backends to compare.

pub mod classify;
pub mod dalle;
pub mod device_check;
pub mod engine;
pub mod lxmert_pretrain;
pub mod report;
pub mod vqa;
pub mod vqvae;
pub mod workloads;

use std::path::PathBuf;

pub use crate::io::RunPaths;
pub use engine::budget::Budget;
pub use engine::run_dir::RunDir;
pub use engine::{train, TrainingTask};

use crate::io::checkpoint::CheckpointError;

/// Everything that can stop a training run, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Config(String),
    #[error("another process is training in {dir} right now; wait for it to finish, or choose another --out", dir = dir.display())]
    Busy { dir: PathBuf },
    #[error("{dir} holds a run with a different config ({dir}/config.json):\n  {differences}\n{hint}", dir = dir.display())]
    OtherRun {
        dir: PathBuf,
        /// One line per differing field: "training.epochs: 8 there, 12 here".
        differences: String,
        hint: &'static str,
    },
    #[error("{run}: the {objective} became {value} at step {step} (epoch {epoch}). The run stopped before committing that epoch and kept its last good checkpoint: the same command retries from it, and the same command with a lower --lr continues from it at that rate (in classify, whose rows share one --lr, use a new --out for that)")]
    NonFinite {
        run: String,
        epoch: usize,
        step: usize,
        objective: String,
        value: f64,
    },
    #[error("{path} does not fit this experiment: {message}", path = path.display())]
    Incompatible { path: PathBuf, message: String },
    /// A family's own error (data, features, tokens), raised inside a task.
    #[error(transparent)]
    Task(Box<dyn std::error::Error + Send + Sync>),
}
