//! Checkpoints: model weights as safetensors, optimizer state as a burn record, both written to
//! a temporary file and renamed so an interrupted write never leaves a half checkpoint.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::store::{ApplyError, ModuleSnapshot, SafetensorsStore};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A checkpoint that cannot be written or read, naming the file and the tensors at fault.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable checkpoint: {message}")]
    Format { path: PathBuf, message: String },
    #[error("checkpoint {path} does not fit the model:{details}")]
    Mismatch { path: PathBuf, details: String },
    #[error("{dir} holds a run with a different config ({dir}/config.json); choose another --out to start a new one, or repeat the original arguments to resume")]
    OtherRun { dir: PathBuf },
}

/// Reads a JSON file (a saved config or result) into `T`, naming the file on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    serde_json::from_slice(&read(path)?).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Claims `dir` for a run with `config`: a fresh directory gets `config.json`; an existing one
/// must hold the same config (then the run resumes there), so one run never overwrites another.
pub fn claim_run_dir<C>(dir: &Path, config: &C) -> Result<(), CheckpointError>
where
    C: serde::Serialize,
{
    let path = dir.join("config.json");
    let wanted = serde_json::to_value(config).expect("config serialises");
    match fs::read(&path) {
        Ok(existing) => {
            let existing: serde_json::Value =
                serde_json::from_slice(&existing).map_err(|e| CheckpointError::Format {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if existing != wanted {
                return Err(CheckpointError::OtherRun {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => write_atomic(
            &path,
            &serde_json::to_vec_pretty(&wanted).expect("config serialises"),
        ),
        Err(source) => Err(CheckpointError::Io { path, source }),
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Gives every parameter an id derived from its position in the module (1, 2, 3, ...).
///
/// Optimizer state is keyed by parameter id, and freshly initialised modules get random ids; with
/// stable ids, optimizer state saved by one process applies to the same model built by another.
pub fn assign_stable_param_ids<B: Backend, M: Module<B>>(module: M) -> M {
    struct StableIds(u64);
    impl<B: Backend> ModuleMapper<B> for StableIds {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (_, tensor, mapper) = param.consume();
            self.0 += 1;
            Param::from_mapped_value(ParamId::from(self.0), tensor, mapper)
        }
    }
    module.map(&mut StableIds(0))
}

/// Saves a module's parameters as a safetensors file, named by their module paths.
pub fn save_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    path: &Path,
) -> Result<(), CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut store = SafetensorsStore::from_bytes(None);
    module
        .save_into(&mut store)
        .map_err(|e| format(e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| format(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Loads a safetensors file into `module`. Every module tensor must be present with the right
/// shape and every file tensor must be used; otherwise the error lists each offending name.
pub fn load_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    mut module: M,
    path: &Path,
) -> Result<M, CheckpointError> {
    let bytes = read(path)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .validate(false)
        .allow_partial(true);
    let result = module
        .load_from(&mut store)
        .map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut details = String::new();
    for error in &result.errors {
        details += &match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "\n  {path}: shape {:?} in the file, {:?} in the model",
                found, expected
            ),
            other => format!("\n  {other:?}"),
        };
    }
    for (name, _) in &result.missing {
        details += &format!("\n  {name}: missing from the file");
    }
    for name in &result.unused {
        details += &format!("\n  {name}: in the file but not in the model");
    }
    if details.is_empty() {
        Ok(module)
    } else {
        Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            details,
        })
    }
}

type StateRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Saves any burn record (optimizer state) to `path`.
pub fn save_record<B: Backend, R: Record<B>>(
    record: R,
    path: &Path,
) -> Result<(), CheckpointError> {
    let bytes = Recorder::<B>::record(&StateRecorder::default(), record, ()).map_err(|e| {
        CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    write_atomic(path, &bytes)
}

/// Loads a record written by [`save_record`].
pub fn load_record<B: Backend, R: Record<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<R, CheckpointError> {
    let bytes = read(path)?;
    Recorder::<B>::load(&StateRecorder::default(), bytes, device).map_err(|e| {
        CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}
