//! The committed LXMERT fixture (tests/fixtures/lxmert, written by its make_fixture.py): its
//! files, its model's config, its inputs and reference outputs.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use vislang::models::lxmert::hf_folder::HfLxmertConfig;
use vislang::models::lxmert::{LxmertConfig, LxmertPretraining, LxmertText, VisualRegions};

pub type B = Flex;

/// Largest absolute difference allowed against the PyTorch float32 outputs.
pub const TOLERANCE: f32 = 1e-4;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lxmert")
        .join(name)
}

/// The tiny model of the fixture, as written in its config.json (read as a model folder's).
pub fn tiny_config() -> LxmertConfig {
    HfLxmertConfig::read(&fixture("config.json"))
        .unwrap()
        .lxmert_config()
}

pub struct Io {
    bytes: Vec<u8>,
}

impl Io {
    pub fn load() -> Self {
        Self {
            bytes: std::fs::read(fixture("lxmert-io.safetensors")).unwrap(),
        }
    }

    pub fn raw(&self, name: &str) -> (Vec<usize>, Dtype, Vec<u8>) {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(name).unwrap();
        (view.shape().to_vec(), view.dtype(), view.data().to_vec())
    }

    pub fn float<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let (shape, dtype, data) = self.raw(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        let values: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let shape: [usize; D] = shape.try_into().unwrap();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    pub fn int(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, dtype, data) = self.raw(name);
        assert_eq!(dtype, Dtype::I64, "{name}");
        let values = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, values)
    }

    pub fn int2(&self, name: &str) -> Tensor<B, 2, Int> {
        let (shape, values) = self.int(name);
        Tensor::from_data(
            TensorData::new(values, [shape[0], shape[1]]),
            &Default::default(),
        )
    }

    /// Hugging Face masks are 1 = attend; ours are `true` = padding.
    pub fn padding(&self, name: &str) -> Tensor<B, 2, Bool> {
        let (shape, values) = self.int(name);
        let padding: Vec<bool> = values.iter().map(|&v| v == 0).collect();
        Tensor::from_data(
            TensorData::new(padding, [shape[0], shape[1]]),
            &Default::default(),
        )
    }

    pub fn inputs(&self) -> (LxmertText<B>, VisualRegions<B>) {
        (
            LxmertText {
                tokens: self.int2("input_ids"),
                segments: self.int2("token_type_ids"),
                padding: self.padding("attention_mask"),
            },
            VisualRegions {
                features: self.float("visual_feats"),
                boxes: self.float("visual_pos"),
                padding: Some(self.padding("visual_attention_mask")),
            },
        )
    }
}

pub fn assert_close<const D: usize>(name: &str, actual: Tensor<B, D>, expected: Tensor<B, D>) {
    assert_eq!(actual.dims(), expected.dims(), "{name}: shape");
    let max_diff: f32 = (actual - expected).abs().max().into_scalar();
    assert!(
        max_diff <= TOLERANCE,
        "{name}: max |rust - pytorch| = {max_diff:e} > {TOLERANCE:e}"
    );
}

/// The pretraining model's encoder outputs and head logits on the fixture's inputs are its
/// reference outputs.
pub fn assert_reproduces_fixture(model: &LxmertPretraining<B>) {
    let io = Io::load();
    let (text, regions) = io.inputs();
    let output = model.lxmert.forward(text, regions);
    assert_close(
        "language_output",
        output.language.clone(),
        io.float("language_output"),
    );
    assert_close("vision_output", output.vision, io.float("vision_output"));
    assert_close(
        "pooled_output",
        output.pooled.clone(),
        io.float("pooled_output"),
    );
    assert_close(
        "prediction_logits",
        model.language_logits(output.language),
        io.float("prediction_logits"),
    );
    assert_close(
        "cross_relationship_score",
        model.matching_logits(output.pooled),
        io.float("cross_relationship_score"),
    );
}
