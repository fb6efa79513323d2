//! Per-epoch resume state of a training run, shared by every training loop.
//!
//! While a run trains, its directory holds:
//! - `checkpoint-epoch{N}.safetensors`, `optimizer-epoch{N}.mpk`: the state after epoch N;
//! - `state.json`: which epoch is complete and the per-epoch logs so far. It is written last, so
//!   it only ever points at a checkpoint that is fully on disk.
//!
//! When the run finishes, [`EpochCheckpoints::finish`] removes all three.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::store::ModuleSnapshot;
use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    load_record, load_safetensors, save_record, save_safetensors, write_atomic, CheckpointError,
};

/// The seed of one epoch's shuffling and random draws, derived from the run's seed, so that an
/// epoch run after resuming draws exactly what it would have drawn without the interruption.
pub fn epoch_seed(run_seed: u64, epoch: usize) -> u64 {
    run_seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)
}

/// What `state.json` holds: the number of finished epochs and one log entry per epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState<Log> {
    pub epochs_done: usize,
    pub history: Vec<Log>,
}

impl<Log> Default for RunState<Log> {
    fn default() -> Self {
        Self {
            epochs_done: 0,
            history: Vec::new(),
        }
    }
}

/// The resume files of one run directory.
pub struct EpochCheckpoints {
    dir: PathBuf,
}

impl EpochCheckpoints {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn paths(&self, epoch: usize) -> (PathBuf, PathBuf) {
        (
            self.dir
                .join(format!("checkpoint-epoch{epoch}.safetensors")),
            self.dir.join(format!("optimizer-epoch{epoch}.mpk")),
        )
    }

    /// Loads the last committed epoch into `model` and `optimizer`; a directory without
    /// `state.json` gives them back unchanged with an empty state.
    pub fn resume<B, M, O, Log>(
        &self,
        model: M,
        optimizer: O,
        device: &B::Device,
    ) -> Result<(M, O, RunState<Log>), CheckpointError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + ModuleSnapshot<B>,
        O: Optimizer<M, B>,
        Log: DeserializeOwned,
    {
        let state_path = self.state_path();
        let bytes = match fs::read(&state_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((model, optimizer, RunState::default()))
            }
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: state_path,
                    source,
                })
            }
        };
        let state: RunState<Log> =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Format {
                path: state_path,
                message: e.to_string(),
            })?;
        let (model_path, optimizer_path) = self.paths(state.epochs_done);
        let model = load_safetensors(model, &model_path)?;
        let optimizer = optimizer.load_record(load_record::<B, _>(&optimizer_path, device)?);
        Ok((model, optimizer, state))
    }

    /// Commits an epoch: weights and optimizer first, then the state that points at them; then
    /// the previous epoch's files go.
    pub fn commit<B, M, O, Log>(
        &self,
        model: &M,
        optimizer: &O,
        state: &RunState<Log>,
    ) -> Result<(), CheckpointError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + ModuleSnapshot<B>,
        O: Optimizer<M, B>,
        Log: Serialize,
    {
        let (model_path, optimizer_path) = self.paths(state.epochs_done);
        save_safetensors(model, &model_path)?;
        save_record::<B, _>(optimizer.to_record(), &optimizer_path)?;
        write_atomic(
            &self.state_path(),
            &serde_json::to_vec_pretty(state).expect("state serialises"),
        )?;
        if state.epochs_done > 0 {
            let (old_model, old_optimizer) = self.paths(state.epochs_done - 1);
            let _ = fs::remove_file(old_model);
            let _ = fs::remove_file(old_optimizer);
        }
        Ok(())
    }

    /// Removes the resume state once the run's final outputs are written.
    pub fn finish(&self, epochs_done: usize) {
        let (model_path, optimizer_path) = self.paths(epochs_done);
        let _ = fs::remove_file(model_path);
        let _ = fs::remove_file(optimizer_path);
        let _ = fs::remove_file(self.state_path());
    }
}
