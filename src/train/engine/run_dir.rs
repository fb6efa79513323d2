//! A run directory a researcher can rely on.
//!
//! While a run trains, its directory holds:
//! - `config.json`: the run's whole config; a later command resumes there only if it asks for
//!   the same one, and otherwise is told every field that differs;
//! - `checkpoint-epoch{N}.safetensors`, `optimizer-epoch{N}.mpk`: the state after epoch N,
//!   and `state.json`, written last, pointing at them with the per-epoch logs;
//! - `metrics.jsonl`: one line per step and one per evaluation, appended as training goes.
//!
//! Every file is written to a `.tmp` sibling and renamed. Committing an epoch removes older
//! epochs' files and stray `.tmp` files; [`RunDir::finish`] writes `result.json` and removes the
//! resume state, so a finished directory holds only final artifacts.

use std::fs;
use std::path::{Path, PathBuf};

use crate::nn::AutodiffBackend;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::store::ModuleSnapshot;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::io::checkpoint::{
    load_record, load_safetensors, read_json, save_record, save_safetensors, write_atomic,
    CheckpointError,
};
pub use crate::train::engine::config_diff::{config_differences, ConfigDifference};
pub use crate::train::engine::epoch_log::{EpochEvaluation, EpochLog, LossMeans};
use crate::train::engine::mixed_precision::LossScaler;
use crate::train::TrainError;

/// What `state.json` holds: the number of committed epochs and their logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState<E> {
    pub epochs_done: usize,
    pub history: Vec<EpochLog<E>>,
    /// The f16 loss scale reached (`None` in f32 and bf16 runs).
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
}

/// Whether `dir`, or a run directory up to `depth` levels below it (`classify`'s `runs/*`),
/// holds a committed epoch or a finished result.
fn holds_progress(dir: &Path, depth: usize) -> bool {
    if ["state.json", "result.json", "results.json"]
        .iter()
        .any(|name| dir.join(name).exists())
    {
        return true;
    }
    depth > 0
        && fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .any(|e| holds_progress(&e.path(), depth - 1))
        })
}

/// Runs `body`, the part of a command that writes into `dir`. When `body` fails while the
/// folders this command created on the way to `dir` (`dir` itself, or `runs/` for a first
/// `runs/classify`) hold nothing but the setup files written before training (bad data found
/// after the config was claimed, say), they are removed again: a failed command leaves no
/// half-made run directory behind. A folder that existed before, or that holds anything else
/// (metrics, a checkpoint, a non-finite-stop report), is never touched.
pub fn removed_on_early_failure<T, E>(
    dir: &Path,
    body: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    // The outermost folder of `dir`'s path that does not exist yet (`runs/` for a first
    // `runs/classify`): everything under it will have been made by this command.
    let mut created = None;
    let mut missing = Some(dir);
    while let Some(path) = missing.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        created = Some(path.to_path_buf());
        missing = path.parent();
    }
    let outcome = body();
    if let (Err(_), Some(created)) = (&outcome, created) {
        if holds_only_setup_files(&created) {
            let _ = fs::remove_dir_all(&created);
        }
    }
    outcome
}

/// Whether every file under `dir` is a config or a tokenizer (empty folders do not count).
fn holds_only_setup_files(dir: &Path) -> bool {
    const SETUP: [&str; 3] = ["config.json", "tokenizer.json", "caption-bpe.json"];
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|entry| {
            let path = entry.path();
            if path.is_dir() {
                holds_only_setup_files(&path)
            } else {
                SETUP.iter().any(|name| entry.file_name() == **name)
            }
        })
    })
}

/// Written when a run stops on a non-finite value; removed by its next committed epoch.
const STOPPED: &str = "stopped.json";

/// One run's directory.
pub struct RunDir {
    dir: PathBuf,
    /// For a claimed directory: the lock held on it while this process trains there.
    _lock: Option<fs::File>,
}

/// Locks `dir` for this process, so a second command on the same `--out` is refused instead of
/// both writing (and one cleaning up) the same files. The operating system releases the lock
/// when the process ends, even on a crash, so a stale lock never blocks a retry. Where a
/// directory cannot be opened or locked (some platforms and network filesystems) the run goes
/// on unlocked.
fn lock_dir(dir: &Path) -> Result<Option<fs::File>, TrainError> {
    let Ok(handle) = fs::File::open(dir) else {
        return Ok(None);
    };
    match handle.try_lock() {
        Ok(()) => Ok(Some(handle)),
        Err(fs::TryLockError::WouldBlock) => Err(TrainError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(_)) => Ok(None),
    }
}

impl RunDir {
    /// A run directory whose config is kept by a parent (the runs of `classify`).
    pub fn new(dir: &Path) -> Result<Self, TrainError> {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: None,
        })
    }

    /// Claims `dir` for a run with `config`. A fresh directory gets `config.json`. An existing
    /// one must hold the same config, and then the run resumes there; otherwise the error names
    /// every differing field. A directory whose earlier run never committed an epoch holds
    /// nothing worth keeping: its config and the `derived` files made from it (tokenizers) are
    /// replaced, so a command that failed early never blocks the corrected one.
    pub fn claim<C: Serialize>(
        dir: &Path,
        config: &C,
        derived: &[&str],
    ) -> Result<Self, TrainError> {
        let mut run = Self::new(dir)?;
        run._lock = lock_dir(dir)?;
        let path = dir.join("config.json");
        let wanted = serde_json::to_value(config).expect("configs serialise");
        if path.exists() {
            let existing: serde_json::Value = read_json(&path)?;
            let differences = config_differences(&existing, &wanted);
            if differences.is_empty() {
                run.remove_temporaries();
                return Ok(run);
            }
            let finished = ["result.json", "results.json"]
                .iter()
                .any(|name| dir.join(name).exists());
            let started = finished || holds_progress(dir, 2);
            let only_learning_rate = differences
                .iter()
                .all(|d| d.field.rsplit('.').next() == Some("learning_rate"));
            if only_learning_rate && !finished && dir.join(STOPPED).exists() {
                // A run stopped by a non-finite value continues at the new learning rate.
                write_atomic(
                    &path,
                    &serde_json::to_vec_pretty(&wanted).expect("configs serialise"),
                )?;
                run.remove_temporaries();
                return Ok(run);
            }
            if started {
                let only_epochs = differences
                    .iter()
                    .all(|d| d.field.rsplit('.').next() == Some("epochs"));
                let hint = if finished && only_epochs {
                    "That run is finished, and its learning-rate schedule decayed over its own number of epochs, so it cannot be extended to the same result as a longer run: choose a new --out for the longer run."
                } else {
                    "Repeat the original arguments to resume it, or choose another --out to start a new run."
                };
                let list: Vec<String> = differences.iter().map(|d| d.to_string()).collect();
                return Err(TrainError::OtherRun {
                    dir: dir.to_path_buf(),
                    differences: list.join("\n  "),
                    hint,
                });
            }
            for name in derived {
                let _ = fs::remove_file(dir.join(name));
            }
            let _ = fs::remove_file(dir.join("metrics.jsonl"));
        }
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&wanted).expect("configs serialise"),
        )?;
        run.remove_temporaries();
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The result of a finished run in this directory, if there is one.
    pub fn finished<R: DeserializeOwned>(&self) -> Result<Option<R>, TrainError> {
        let path = self.dir.join("result.json");
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(read_json(&path)?))
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn epoch_files(&self, epoch: usize) -> [PathBuf; 2] {
        [
            self.dir
                .join(format!("checkpoint-epoch{epoch}.safetensors")),
            self.dir.join(format!("optimizer-epoch{epoch}.mpk")),
        ]
    }

    /// Loads the last committed epoch into `model` and `optimizer`; without `state.json` they
    /// come back unchanged with an empty state.
    pub fn resume<B, M, O, E>(
        &self,
        model: M,
        optimizer: O,
        device: &B::Device,
    ) -> Result<(M, O, RunState<E>), TrainError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + ModuleSnapshot<B>,
        O: Optimizer<M, B>,
        E: DeserializeOwned,
    {
        let state_path = self.state_path();
        if !state_path.exists() {
            return Ok((
                model,
                optimizer,
                RunState {
                    epochs_done: 0,
                    history: Vec::new(),
                    loss_scaler: None,
                },
            ));
        }
        let state: RunState<E> = read_json(&state_path)?;
        let [model_path, optimizer_path] = self.epoch_files(state.epochs_done);
        let model = load_safetensors(model, &model_path)?;
        let optimizer = optimizer.load_record(load_record::<B, _>(&optimizer_path, device)?);
        Ok((model, optimizer, state))
    }

    /// Commits an epoch: weights and optimizer first, then the state that points at them; then
    /// every other epoch's files and stray temporaries go.
    pub fn commit<B, M, O, E>(
        &self,
        model: &M,
        optimizer: &O,
        state: &RunState<E>,
    ) -> Result<(), TrainError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + ModuleSnapshot<B>,
        O: Optimizer<M, B>,
        E: Serialize,
    {
        let [model_path, optimizer_path] = self.epoch_files(state.epochs_done);
        save_safetensors(model, &model_path)?;
        save_record::<B, _>(optimizer.to_record(), &optimizer_path)?;
        write_atomic(
            &self.state_path(),
            &serde_json::to_vec_pretty(state).expect("state serialises"),
        )?;
        self.remove_resume_files(Some(state.epochs_done));
        let _ = fs::remove_file(self.dir.join(STOPPED));
        Ok(())
    }

    /// Passes `error` through; a non-finite one is first recorded in `stopped.json`, so that
    /// the next command here may lower the learning rate and continue from the last good epoch.
    /// (Failing to record it leaves the run resumable with its own learning rate.)
    pub fn stopped(&self, error: TrainError) -> TrainError {
        if matches!(error, TrainError::NonFinite { .. }) {
            let reason = serde_json::json!({ "reason": error.to_string() });
            let _ = write_atomic(
                &self.dir.join(STOPPED),
                &serde_json::to_vec_pretty(&reason).expect("serialises"),
            );
        }
        error
    }

    /// Writes `result.json` (which marks the run finished) and removes the resume state.
    pub fn finish<R: Serialize>(&self, result: &R) -> Result<(), TrainError> {
        write_atomic(
            &self.dir.join("result.json"),
            &serde_json::to_vec_pretty(result).expect("results serialise"),
        )?;
        let _ = fs::remove_file(self.state_path());
        self.remove_resume_files(None);
        Ok(())
    }

    /// Removes epoch checkpoints other than `keep`'s, and `.tmp` files.
    fn remove_resume_files(&self, keep: Option<usize>) {
        let kept = keep.map(|epoch| self.epoch_files(epoch));
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let resume_file = (name.starts_with("checkpoint-epoch")
                && name.ends_with(".safetensors"))
                || (name.starts_with("optimizer-epoch") && name.ends_with(".mpk"))
                || name.ends_with(".tmp");
            if resume_file && !kept.as_ref().is_some_and(|k| k.contains(&path)) {
                let _ = fs::remove_file(&path);
            }
        }
    }

    fn remove_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_failure_removes_only_the_folders_it_created() {
        let base = std::env::temp_dir().join(format!("vislang-run-dir-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        let dir = base.join("runs/classify");
        let failed: Result<(), ()> = removed_on_early_failure(&dir, || {
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("config.json"), b"{}").unwrap();
            Err(())
        });
        assert!(failed.is_err());
        assert!(
            !base.join("runs").exists(),
            "runs/ and runs/classify removed"
        );
        // Anything beyond setup files stays, and so does a folder that existed.
        let kept: Result<(), ()> = removed_on_early_failure(&dir, || {
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("metrics.jsonl"), b"{}").unwrap();
            Err(())
        });
        assert!(kept.is_err() && dir.join("metrics.jsonl").exists());
        fs::remove_file(dir.join("metrics.jsonl")).unwrap();
        let existed: Result<(), ()> = removed_on_early_failure(&dir, || {
            fs::write(dir.join("config.json"), b"{}").unwrap();
            Err(())
        });
        assert!(existed.is_err() && dir.join("config.json").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_second_claim_on_a_directory_in_use_is_refused_until_the_first_ends() {
        let dir = std::env::temp_dir().join(format!("vislang-run-lock-{}", std::process::id()));
        let config = serde_json::json!({"epochs": 1});
        let first = RunDir::claim(&dir, &config, &[]).unwrap();
        match RunDir::claim(&dir, &config, &[]) {
            Err(TrainError::Busy { dir: busy }) => assert_eq!(busy, dir),
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        drop(first);
        let again = RunDir::claim(&dir, &config, &[]);
        assert!(again.is_ok(), "the lock is released with the run");
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}
