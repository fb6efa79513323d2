//! Reading Hugging Face (PyTorch) checkpoints into the blocks of [`crate::nn`]: safetensors
//! files and PyTorch files (`pytorch_model.bin`: torch.save's zip format and the pre-1.6
//! pickle format, read with burn-store), told apart by their first bytes.
//!
//! A model walks its own modules and asks for each tensor by its Hugging Face name through
//! [`HfTensors`]; this reader converts (f32, f16, bf16 or f64; PyTorch's `[out, in]` linear
//! weights transposed to burn's `[in, out]`), checks shapes, and remembers what was asked
//! for. A name that is missing or of the wrong shape does not stop the walk: every problem is
//! collected, and [`HfWeights::finish`] reports them all at once together with the file's
//! tensors that nothing asked for, so one error lists every name at fault. The same walk
//! with [`super::hf_export::HfExport`] writes a model under those names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::nn::Backend;
use burn::module::Param;
use burn::nn::{Embedding, Linear};

use super::LayerNorm;
use burn::tensor::{DType, Tensor, TensorData};
use burn_store::pytorch::PytorchReader;
use burn_store::TensorSnapshot;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::attention::MultiHeadAttention;
use super::transformer::TransformerLayer;

/// A checkpoint that cannot be read or does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum HfWeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors or PyTorch checkpoint: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} does not fit the model:{details}")]
    Mismatch { path: PathBuf, details: String },
}

/// One walk over a model's tensors under Hugging Face names. [`HfWeights`] reads each tensor
/// into the module it is given; [`super::hf_export::HfExport`] records it for writing. A model
/// writes its name mapping once, generic over this trait, and gets both directions.
pub trait HfTensors {
    /// Prepends `prefix` to the names asked for from now on.
    fn set_prefix(&mut self, prefix: &str);

    /// The tensor `name` as it is stored in both layouts.
    fn param<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>>;

    /// A matrix that PyTorch stores transposed (`nn.Linear`'s `[out, in]`).
    fn transposed<B: Backend>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, 2>>,
    ) -> Param<Tensor<B, 2>>;

    /// `nn.Linear` at `name` (`name.weight` `[out, in]`, `name.bias`).
    fn linear<B: Backend>(&mut self, name: &str, mut linear: Linear<B>) -> Linear<B> {
        linear.weight = self.transposed(&format!("{name}.weight"), linear.weight);
        linear.bias = linear
            .bias
            .map(|bias| self.param(&format!("{name}.bias"), bias));
        linear
    }

    /// `nn.LayerNorm` at `name` (`name.weight`, `name.bias`).
    fn layer_norm<B: Backend>(&mut self, name: &str, mut norm: LayerNorm<B>) -> LayerNorm<B> {
        norm.gamma = self.param(&format!("{name}.weight"), norm.gamma);
        norm.beta = self.param(&format!("{name}.bias"), norm.beta);
        norm
    }

    /// `nn.Embedding` at `name` (`name.weight`).
    fn embedding<B: Backend>(&mut self, name: &str, mut embedding: Embedding<B>) -> Embedding<B> {
        embedding.weight = self.param(&format!("{name}.weight"), embedding.weight);
        embedding
    }

    /// BERT's attention (`{attention}.query|key|value`, output `{output}.dense`).
    fn attention<B: Backend>(
        &mut self,
        attention: &str,
        output: &str,
        mut module: MultiHeadAttention<B>,
    ) -> MultiHeadAttention<B> {
        module.query = self.linear(&format!("{attention}.query"), module.query);
        module.key = self.linear(&format!("{attention}.key"), module.key);
        module.value = self.linear(&format!("{attention}.value"), module.value);
        module.output = self.linear(&format!("{output}.dense"), module.output);
        module
    }

    /// A post-LN layer under BERT's names: `{attention}.self.*`, `{attention}.output.*`,
    /// `{intermediate}.dense`, `{output}.dense` and `{output}.LayerNorm`.
    fn bert_layer<B: Backend>(
        &mut self,
        attention: &str,
        intermediate: &str,
        output: &str,
        mut layer: TransformerLayer<B>,
    ) -> TransformerLayer<B> {
        layer.attention = self.attention(
            &format!("{attention}.self"),
            &format!("{attention}.output"),
            layer.attention,
        );
        layer.attention_norm = self.layer_norm(
            &format!("{attention}.output.LayerNorm"),
            layer.attention_norm,
        );
        layer.feed_forward.intermediate = self.linear(
            &format!("{intermediate}.dense"),
            layer.feed_forward.intermediate,
        );
        layer.feed_forward.output =
            self.linear(&format!("{output}.dense"), layer.feed_forward.output);
        layer.feed_forward_norm =
            self.layer_norm(&format!("{output}.LayerNorm"), layer.feed_forward_norm);
        layer
    }
}

/// Where a safetensors tensor lies in the mapped file.
struct MappedEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range of the data within the file.
    range: std::ops::Range<usize>,
}

/// The tensors of an open checkpoint, in either file format.
enum Source {
    Safetensors {
        map: Mmap,
        entries: BTreeMap<String, MappedEntry>,
    },
    /// Read lazily: a tensor's bytes are read from the archive when it is asked for.
    Pytorch(BTreeMap<String, TensorSnapshot>),
}

/// An open checkpoint; see the module documentation.
pub struct HfWeights {
    path: PathBuf,
    source: Source,
    /// Prepended to every requested name (e.g. `lxmert.` in a pretraining checkpoint).
    prefix: String,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

/// Which reader a checkpoint needs, from its first bytes: a safetensors file starts with its
/// header's length (little-endian u64) and the header's `{`; a PyTorch file is a zip archive
/// (torch.save since PyTorch 1.6) or a pickle (`0x80` and the protocol: earlier torch.save).
fn is_pytorch_file(path: &Path) -> std::io::Result<bool> {
    let mut start = [0u8; 9];
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    let n = file.read(&mut start)?;
    let header = u64::from_le_bytes(start[..8].try_into().expect("8 bytes"));
    let safetensors = n == 9 && start[8] == b'{' && header.saturating_add(8) <= length;
    let pytorch =
        start.starts_with(b"PK\x03\x04") || (start[0] == 0x80 && (2..=5).contains(&start[1]));
    Ok(!safetensors && pytorch)
}

impl HfWeights {
    /// Opens `path`: a safetensors file (memory-mapped) or a PyTorch file, and indexes its
    /// tensors.
    pub fn open(path: &Path) -> Result<Self, HfWeightsError> {
        let io = |source| HfWeightsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let source = if is_pytorch_file(path).map_err(io)? {
            Self::open_pytorch(path)?
        } else {
            Self::open_safetensors(path)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            source,
            prefix: String::new(),
            used: BTreeSet::new(),
            problems: Vec::new(),
        })
    }

    fn open_safetensors(path: &Path) -> Result<Source, HfWeightsError> {
        let io = |source| HfWeightsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only, and checkpoints are not modified while a model loads.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let tensors = SafeTensors::deserialize(&map).map_err(|e| HfWeightsError::Format {
            path: path.to_path_buf(),
            message: format!("read as safetensors: {e}"),
        })?;
        let base = map.as_ptr() as usize;
        let entries = tensors
            .iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                let entry = MappedEntry {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    range: start..start + view.data().len(),
                };
                (name.to_string(), entry)
            })
            .collect();
        Ok(Source::Safetensors { map, entries })
    }

    fn open_pytorch(path: &Path) -> Result<Source, HfWeightsError> {
        let format = |message: String| HfWeightsError::Format {
            path: path.to_path_buf(),
            message: format!("read as a PyTorch file: {message}"),
        };
        // burn-store's pickle reader may panic on a damaged archive; that is an error here.
        let read = std::panic::catch_unwind(|| PytorchReader::new(path));
        let reader = match read {
            Ok(Ok(reader)) => reader,
            Ok(Err(e)) => return Err(format(e.to_string())),
            Err(_) => return Err(format("the archive is damaged".into())),
        };
        Ok(Source::Pytorch(reader.into_tensors().into_iter().collect()))
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.source {
            Source::Safetensors { entries, .. } => Box::new(entries.keys().map(String::as_str)),
            Source::Pytorch(tensors) => Box::new(tensors.keys().map(String::as_str)),
        }
    }

    /// Whether the file has `name` (without the prefix).
    pub fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    /// The shape of `name` (without the prefix) in the file.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.source {
            Source::Safetensors { entries, .. } => entries.get(name).map(|e| e.shape.clone()),
            Source::Pytorch(tensors) => tensors.get(name).map(|t| t.shape.to_vec()),
        }
    }

    /// The values of `full` as f32, or what is wrong with them.
    fn values(&self, full: &str) -> Result<Vec<f32>, String> {
        match &self.source {
            Source::Safetensors { map, entries } => {
                let entry = &entries[full];
                let bytes = &map[entry.range.clone()];
                match entry.dtype {
                    Dtype::F32 => Ok(bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect()),
                    Dtype::F16 => Ok(bytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect()),
                    Dtype::BF16 => Ok(bytes
                        .chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect()),
                    other => Err(format!("dtype {other:?}, expected F32, F16 or BF16")),
                }
            }
            Source::Pytorch(tensors) => {
                let snapshot = &tensors[full];
                if !matches!(
                    snapshot.dtype,
                    DType::F32 | DType::F16 | DType::BF16 | DType::F64
                ) {
                    return Err(format!(
                        "dtype {:?}, expected F32, F16, BF16 or F64",
                        snapshot.dtype
                    ));
                }
                let data = snapshot
                    .to_data()
                    .map_err(|e| format!("cannot read its data: {e}"))?;
                data.convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| format!("cannot read its data: {e:?}"))
            }
        }
    }

    /// The values of `name` (after the prefix) as f32, if present with shape `expected`;
    /// otherwise the problem is recorded and `None` returned.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Option<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let Some(shape) = self.shape(&full) else {
            self.problems.push(format!("{full}: missing from the file"));
            return None;
        };
        self.used.insert(full.clone());
        if shape != expected {
            self.problems.push(format!(
                "{full}: shape {shape:?} in the file, {expected:?} expected"
            ));
            return None;
        }
        match self.values(&full) {
            Ok(values) => Some(values),
            Err(problem) => {
                self.problems.push(format!("{full}: {problem}"));
                None
            }
        }
    }

    /// Like [`HfWeights::take`], as a tensor on `device`.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Option<Tensor<B, D>> {
        self.take(name, &shape)
            .map(|values| Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Marks every tensor under `prefix` (after the current prefix) as deliberately left out:
    /// [`HfWeights::finish`] returns them with the skipped ones.
    pub fn skip(&mut self, prefix: &str) -> Vec<String> {
        let full = format!("{}{prefix}", self.prefix);
        let names: Vec<String> = self
            .names()
            .filter(|n| n.starts_with(&full))
            .map(str::to_string)
            .collect();
        self.used.extend(names.iter().cloned());
        names
    }

    /// Ends the load. Fails listing every missing, misshapen or unexpected tensor; tensors
    /// under `skipped_prefixes` (heads the caller chose not to load) are not unexpected and are
    /// returned by name.
    pub fn finish(self, skipped_prefixes: &[&str]) -> Result<Vec<String>, HfWeightsError> {
        let mut skipped = Vec::new();
        let mut details: String = self.problems.iter().map(|p| format!("\n  {p}")).collect();
        for name in self.names().filter(|n| !self.used.contains(*n)) {
            if skipped_prefixes.iter().any(|p| name.starts_with(p)) {
                skipped.push(name.to_string());
            } else {
                details += &format!("\n  {name}: in the file but not in the model (unexpected)");
            }
        }
        if details.is_empty() {
            Ok(skipped)
        } else {
            Err(HfWeightsError::Mismatch {
                path: self.path,
                details,
            })
        }
    }
}

impl HfTensors for HfWeights {
    fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    /// Replaces `param` by `name` when it is present with the same shape.
    fn param<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let value = param.val();
        match self.tensor::<B, D>(name, value.dims(), &value.device()) {
            Some(tensor) => Param::from_tensor(tensor),
            None => param,
        }
    }

    fn transposed<B: Backend>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, 2>>,
    ) -> Param<Tensor<B, 2>> {
        let value = param.val();
        let [rows, cols] = value.dims();
        match self.tensor::<B, 2>(name, [cols, rows], &value.device()) {
            Some(tensor) => Param::from_tensor(tensor.transpose()),
            None => param,
        }
    }
}
