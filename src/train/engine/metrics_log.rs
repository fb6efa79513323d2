//! `metrics.jsonl`, the run's step-by-step log.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::io::checkpoint::{write_atomic, CheckpointError};
use crate::train::engine::epoch_log::{EpochEvaluation, EpochLog};
use crate::train::TrainError;

/// `metrics.jsonl`: one JSON object per line, appended while a run trains, so a long run can
/// be watched and plotted. Step lines: `{"kind":"step","epoch","step","lr","seconds",
/// "losses":{...}}`; evaluation lines: `{"kind":"eval","epoch","step","train":{...},
/// "eval":{...},"train_seconds","data_wait_seconds"}`.
pub struct MetricsLog {
    file: fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the run's log for appending, first dropping lines past `committed_steps` (left by
    /// an epoch that was interrupted and will run again).
    pub fn open(run_dir: &Path, committed_steps: usize) -> Result<Self, TrainError> {
        let path = run_dir.join("metrics.jsonl");
        let write_error = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        if let Ok(text) = fs::read_to_string(&path) {
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|step| step as usize <= committed_steps)
                })
                .flat_map(|line| [line, "\n"])
                .collect();
            write_atomic(&path, kept.as_bytes())?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(write_error)?;
        Ok(Self { file, path })
    }

    fn write_line(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        let mut line = serde_json::to_vec(&value).expect("metrics serialise");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|source| CheckpointError::Write {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    /// One training step's losses (all finite: checked before).
    pub fn step(
        &mut self,
        epoch: usize,
        step: usize,
        lr: f64,
        seconds: f64,
        losses: &[(&str, f64)],
    ) -> Result<(), TrainError> {
        let losses: serde_json::Map<String, serde_json::Value> = losses
            .iter()
            .map(|(name, value)| (name.to_string(), (*value).into()))
            .collect();
        self.write_line(serde_json::json!({
            "kind": "step", "epoch": epoch, "step": step, "lr": lr, "seconds": seconds,
            "losses": losses,
        }))
    }

    /// An epoch's evaluation.
    pub fn evaluation<E: EpochEvaluation>(&mut self, log: &EpochLog<E>) -> Result<(), TrainError> {
        let eval: serde_json::Map<String, serde_json::Value> = log
            .eval
            .metrics()
            .iter()
            .map(|(name, value)| (name.to_string(), (*value).into()))
            .collect();
        self.write_line(serde_json::json!({
            "kind": "eval", "epoch": log.epoch, "step": log.steps, "lr": log.learning_rate,
            "train": log.train, "eval": eval, "train_seconds": log.train_seconds,
            "data_wait_seconds": log.data_wait_seconds,
        }))
    }
}
