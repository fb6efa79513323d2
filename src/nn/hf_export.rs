//! Writing a model under Hugging Face parameter names: the same walk that reads a checkpoint
//! ([`HfTensors`]), recording each tensor in PyTorch's layout (linear weights `[out, in]`)
//! for a safetensors file that `from_pretrained` loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::Tensor;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::hf_weights::HfTensors;
use crate::io::checkpoint::{write_atomic, CheckpointError};
use crate::nn::Backend;

/// Tensors recorded under Hugging Face names, f32, in PyTorch's layout.
#[derive(Default)]
pub struct HfExport {
    prefix: String,
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl HfExport {
    pub fn new() -> Self {
        Self::default()
    }

    fn record<B: Backend, const D: usize>(&mut self, name: &str, tensor: Tensor<B, D>) {
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32");
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .insert(format!("{}{name}", self.prefix), (shape, bytes));
    }

    /// The recorded names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Writes the tensors as a safetensors file with `{"format": "pt"}` metadata, as
    /// `save_pretrained` does (to a temporary file first, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let format = |message: String| CheckpointError::Format {
            path: PathBuf::from(path),
            message,
        };
        let views = self
            .tensors
            .iter()
            .map(|(name, (shape, bytes))| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|view| (name.clone(), view))
                    .map_err(|e| format(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = Some(std::collections::HashMap::from([(
            "format".to_string(),
            "pt".to_string(),
        )]));
        let bytes = safetensors::serialize(views, metadata).map_err(|e| format(e.to_string()))?;
        write_atomic(path, &bytes)
    }
}

impl HfTensors for HfExport {
    fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    fn param<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        self.record(name, param.val());
        param
    }

    fn transposed<B: Backend>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, 2>>,
    ) -> Param<Tensor<B, 2>> {
        self.record(name, param.val().transpose());
        param
    }
}
