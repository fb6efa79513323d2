//! Files: atomic writes, JSON, model weights as safetensors and optimizer state as a burn
//! record, all written to a temporary file and renamed so an interrupted write never leaves a
//! half file.

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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable checkpoint: {message}")]
    Format { path: PathBuf, message: String },
    #[error("checkpoint {path} does not fit the model:{details}")]
    Mismatch { path: PathBuf, details: String },
}

/// Reads a JSON file (a saved config or result) into `T`, naming the file on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    serde_json::from_slice(&read(path)?).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Write {
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

pub fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    fs::read(path).map_err(|source| CheckpointError::Read {
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
    write_atomic(path, &safetensors_bytes(module, path)?)
}

/// A module's parameters as the bytes of a safetensors file (`path` names it in errors).
fn safetensors_bytes<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    path: &Path,
) -> Result<Vec<u8>, CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut store = SafetensorsStore::from_bytes(None);
    module
        .save_into(&mut store)
        .map_err(|e| format(e.to_string()))?;
    store.get_bytes().map_err(|e| format(e.to_string()))
}

/// `into` with the parameters of `from`, which may live on another backend: a model
/// initialised on the CPU moves to a GPU-style device this way, so one seed gives the same
/// weights everywhere. Both must have the same structure.
pub fn copy_weights<B1, B2, M1, M2>(from: &M1, into: M2) -> Result<M2, CheckpointError>
where
    B1: Backend,
    B2: Backend,
    M1: ModuleSnapshot<B1>,
    M2: ModuleSnapshot<B2>,
{
    let source = Path::new("<weights in memory>");
    apply_safetensors(into, safetensors_bytes(from, source)?, source)
}

/// Loads a safetensors file into `module`. Every module tensor must be present with the right
/// shape and every file tensor must be used; otherwise the error lists each offending name.
pub fn load_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    module: M,
    path: &Path,
) -> Result<M, CheckpointError> {
    apply_safetensors(module, read(path)?, path)
}

/// Loads the safetensors file `bytes` (read from `path`) into `module`, as
/// [`load_safetensors`].
fn apply_safetensors<B: Backend, M: ModuleSnapshot<B>>(
    mut module: M,
    bytes: Vec<u8>,
    path: &Path,
) -> Result<M, CheckpointError> {
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
