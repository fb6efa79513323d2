//! Training: checkpoints, metrics, schedules, progress, plots and the experiment loops.

pub mod checkpoint;
pub mod classifier_run;
pub mod classify;
pub mod gradients;
pub mod metrics;
pub mod plots;
pub mod progress;
pub mod schedule;
