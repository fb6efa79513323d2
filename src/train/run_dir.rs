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
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::store::ModuleSnapshot;
use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::io::checkpoint::{
    load_record, load_safetensors, read_json, save_record, save_safetensors, write_atomic,
    CheckpointError,
};

/// Held-out numbers of one epoch, in the order they are shown. Each must be finite.
pub trait EpochEvaluation: Clone + Serialize + DeserializeOwned {
    fn metrics(&self) -> Vec<(&'static str, f64)>;
}

/// Mean training losses of an epoch, by name ("total" first), kept in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossMeans(pub Vec<(String, f64)>);

impl LossMeans {
    /// The mean of the part called `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl Serialize for LossMeans {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LossMeans {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = LossMeans;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of loss names to numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LossMeans, A::Error> {
                let mut parts = Vec::new();
                while let Some(entry) = map.next_entry::<String, f64>()? {
                    parts.push(entry);
                }
                Ok(LossMeans(parts))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// One epoch of any family: its training losses and the family's held-out evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog<E> {
    pub epoch: usize,
    /// Optimisation steps done after this epoch.
    pub steps: usize,
    /// The learning rate of the epoch's last step.
    pub learning_rate: f64,
    pub train: LossMeans,
    pub eval: E,
    pub train_seconds: f64,
    pub samples_per_second: f64,
}

impl<E: EpochEvaluation> EpochLog<E> {
    /// One line: training losses, held-out metrics, time.
    pub fn summary(&self) -> String {
        let train: Vec<String> = self
            .train
            .0
            .iter()
            .map(|(name, value)| format!("{name} {value:.4}"))
            .collect();
        let eval: Vec<String> = self
            .eval
            .metrics()
            .iter()
            .map(|(name, value)| format!("{name} {value:.4}"))
            .collect();
        format!(
            "train {}; held-out {} ({:.1}s, {:.0} samples/s)",
            train.join(", "),
            eval.join(", "),
            self.train_seconds,
            self.samples_per_second
        )
    }
}

/// What `state.json` holds: the number of committed epochs and their logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState<E> {
    pub epochs_done: usize,
    pub history: Vec<EpochLog<E>>,
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

/// Written when a run stops on a non-finite value; removed by its next committed epoch.
const STOPPED: &str = "stopped.json";

/// One run's directory.
pub struct RunDir {
    dir: PathBuf,
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
        let run = Self::new(dir)?;
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

    /// Records why the run stopped (a non-finite value), so that the next command here may
    /// change the learning rate and continue from the last good epoch.
    pub fn mark_stopped(&self, reason: &str) -> Result<(), TrainError> {
        write_atomic(
            &self.dir.join(STOPPED),
            &serde_json::to_vec_pretty(&serde_json::json!({ "reason": reason }))
                .expect("serialises"),
        )?;
        Ok(())
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

/// A field whose value differs between a saved config and the one asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDifference {
    /// Dotted path, e.g. `training.epochs`.
    pub field: String,
    pub there: String,
    pub here: String,
}

impl std::fmt::Display for ConfigDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} there, {} here",
            self.field, self.there, self.here
        )
    }
}

/// Every leaf field where `there` and `here` differ (missing fields show as `absent`).
pub fn config_differences(
    there: &serde_json::Value,
    here: &serde_json::Value,
) -> Vec<ConfigDifference> {
    fn walk(
        path: &str,
        there: Option<&serde_json::Value>,
        here: Option<&serde_json::Value>,
        out: &mut Vec<ConfigDifference>,
    ) {
        use serde_json::Value;
        match (there, here) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&child, a.get(key), b.get(key), out);
                }
            }
            (a, b) if a == b => {}
            (a, b) => {
                let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
                out.push(ConfigDifference {
                    field: path.to_string(),
                    there: show(a),
                    here: show(b),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk("", Some(there), Some(here), &mut out);
    out
}

/// `metrics.jsonl`: one JSON object per line, appended while a run trains, so a long run can
/// be watched and plotted. Step lines: `{"kind":"step","epoch","step","lr","seconds",
/// "losses":{...}}`; evaluation lines: `{"kind":"eval","epoch","step","train":{...},
/// "eval":{...},"train_seconds"}`.
pub struct MetricsLog {
    file: fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the run's log for appending, first dropping lines past `committed_steps` (left by
    /// an epoch that was interrupted and will run again).
    pub fn open(run: &RunDir, committed_steps: usize) -> Result<Self, TrainError> {
        let path = run.dir.join("metrics.jsonl");
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
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_leaf() {
        let there = serde_json::json!({"training": {"epochs": 8, "lr": 0.001}, "seeds": [0, 1]});
        let here =
            serde_json::json!({"training": {"epochs": 12, "lr": 0.001}, "seeds": [0], "new": true});
        let found: Vec<String> = config_differences(&there, &here)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            vec![
                "new: absent there, true here",
                "seeds: [0,1] there, [0] here",
                "training.epochs: 8 there, 12 here"
            ]
        );
    }

    #[test]
    fn loss_means_keep_their_order_through_json() {
        let means = LossMeans(vec![
            ("total".into(), 0.1 + 0.2),
            ("b".into(), 1e-300),
            ("a".into(), 3.0),
        ]);
        let json = serde_json::to_string(&means).unwrap();
        assert_eq!(serde_json::from_str::<LossMeans>(&json).unwrap(), means);
    }
}
