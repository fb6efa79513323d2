//! Reading Hugging Face (PyTorch) safetensors checkpoints into the blocks of [`crate::nn`].
//!
//! A model walks its own modules and asks for each tensor by its Hugging Face name; this reader
//! converts (f32, f16 or bf16; PyTorch's `[out, in]` linear weights transposed to burn's
//! `[in, out]`), checks shapes, and remembers what was asked for. A name that is missing or of
//! the wrong shape does not stop the walk: every problem is collected, and [`HfWeights::finish`]
//! reports them all at once together with the file's tensors that nothing asked for, so one
//! error lists every name at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::nn::Backend;
use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::{Tensor, TensorData};
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
    #[error("{path} is not a safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} does not fit the model:{details}")]
    Mismatch { path: PathBuf, details: String },
}

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range of the data within the file.
    range: std::ops::Range<usize>,
}

/// An open checkpoint; see the module documentation.
pub struct HfWeights {
    path: PathBuf,
    map: Mmap,
    entries: BTreeMap<String, Entry>,
    /// Prepended to every requested name (e.g. `lxmert.` in a pretraining checkpoint).
    prefix: String,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl HfWeights {
    /// Memory-maps `path` and indexes its tensors.
    pub fn open(path: &Path) -> Result<Self, HfWeightsError> {
        let io = |source| HfWeightsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only, and checkpoints are not modified while a model loads.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let tensors = SafeTensors::deserialize(&map).map_err(|e| HfWeightsError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = map.as_ptr() as usize;
        let entries = tensors
            .iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                let entry = Entry {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    range: start..start + view.data().len(),
                };
                (name.to_string(), entry)
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            entries,
            prefix: String::new(),
            used: BTreeSet::new(),
            problems: Vec::new(),
        })
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the file has `name` (without the prefix).
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Prepends `prefix` to the names asked for from now on.
    pub fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    /// The values of `name` (after the prefix) as f32, if present with shape `expected`;
    /// otherwise the problem is recorded and `None` returned.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Option<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let Some(entry) = self.entries.get(&full) else {
            self.problems.push(format!("{full}: missing from the file"));
            return None;
        };
        self.used.insert(full.clone());
        if entry.shape != expected {
            self.problems.push(format!(
                "{full}: shape {:?} in the file, {:?} expected",
                entry.shape, expected
            ));
            return None;
        }
        let bytes = &self.map[entry.range.clone()];
        let values = match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                self.problems.push(format!(
                    "{full}: dtype {other:?}, expected F32, F16 or BF16"
                ));
                return None;
            }
        };
        Some(values)
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

    /// `nn.Linear` at `name` (`name.weight` `[out, in]`, `name.bias`).
    pub fn linear<B: Backend>(&mut self, name: &str, mut linear: Linear<B>) -> Linear<B> {
        let weight = linear.weight.val();
        let [d_in, d_out] = weight.dims();
        if let Some(tensor) =
            self.tensor::<B, 2>(&format!("{name}.weight"), [d_out, d_in], &weight.device())
        {
            linear.weight = Param::from_tensor(tensor.transpose());
        }
        linear.bias = linear
            .bias
            .map(|bias| self.param(&format!("{name}.bias"), bias));
        linear
    }

    /// `nn.LayerNorm` at `name` (`name.weight`, `name.bias`).
    pub fn layer_norm<B: Backend>(&mut self, name: &str, mut norm: LayerNorm<B>) -> LayerNorm<B> {
        norm.gamma = self.param(&format!("{name}.weight"), norm.gamma);
        norm.beta = norm
            .beta
            .map(|beta| self.param(&format!("{name}.bias"), beta));
        norm
    }

    /// `nn.Embedding` at `name` (`name.weight`).
    pub fn embedding<B: Backend>(
        &mut self,
        name: &str,
        mut embedding: Embedding<B>,
    ) -> Embedding<B> {
        embedding.weight = self.param(&format!("{name}.weight"), embedding.weight);
        embedding
    }

    /// BERT's attention (`{attention}.query|key|value`, output `{output}.dense`).
    pub fn attention<B: Backend>(
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
    pub fn bert_layer<B: Backend>(
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

    /// Ends the load. Fails listing every missing, misshapen or unexpected tensor; tensors
    /// under `skipped_prefixes` (heads the caller chose not to load) are not unexpected and are
    /// returned by name.
    pub fn finish(self, skipped_prefixes: &[&str]) -> Result<Vec<String>, HfWeightsError> {
        let mut skipped = Vec::new();
        let mut details: String = self.problems.iter().map(|p| format!("\n  {p}")).collect();
        for name in self.entries.keys().filter(|n| !self.used.contains(*n)) {
            if skipped_prefixes.iter().any(|p| name.starts_with(p)) {
                skipped.push(name.clone());
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
