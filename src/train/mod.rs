//! Training: one [`engine`] that every family is a task of, run directories, metrics,
//! schedules, plots, and the experiments built on them.

pub mod batch_loader;
pub mod budget;
pub mod classifier_run;
pub mod classify;
mod classify_config;
mod classify_report;
pub mod compute_threads;
mod config_diff;
pub mod dalle;
mod dalle_data;
pub mod dalle_evaluation;
pub mod data_parallel;
pub mod device_check;
pub mod engine;
mod epoch_log;
pub mod flops;
pub mod gradients;
pub mod lxmert_pretrain;
mod lxmert_pretrain_config;
mod lxmert_pretrain_eval;
mod lxmert_pretrain_stages;
mod lxmert_pretrain_task;
pub mod memory;
pub mod metrics;
mod metrics_log;
pub mod mixed_precision;
mod parallel_runs;
pub mod plots;
pub mod pretrained_encoder;
pub mod report;
pub mod run_dir;
pub mod schedule;
mod step_log;
pub mod vqvae;
mod vqvae_eval;
mod weights_check;
pub mod workloads;

use std::path::PathBuf;

pub use crate::io::RunPaths;
pub use budget::Budget;
pub use engine::{train, TrainingTask};
pub use run_dir::RunDir;

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
