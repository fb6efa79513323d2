//! A Hugging Face LXMERT model folder, as `save_pretrained` writes it and as
//! `unc-nlp/lxmert-base-uncased` ships: `config.json`, the weights (`model.safetensors` or
//! `pytorch_model.bin`) and the vocabulary (`tokenizer.json` or `vocab.txt`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::LxmertConfig;
use crate::io::checkpoint::{read_json, CheckpointError};

/// Weight files in the order they are looked for.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
/// Vocabulary files in the order they are looked for.
pub const VOCABULARY_FILES: [&str; 2] = ["tokenizer.json", "vocab.txt"];

/// Released LXMERT checkpoints that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HfFolderError {
    #[error("{path} has none of {WEIGHT_FILES:?}: not a Hugging Face model folder")]
    NoWeights { path: PathBuf },
    #[error("{path} has no config.json: a model folder needs it to size the model (or give the weights file itself and size the model with the --lxmert-* flags)")]
    NoConfig { path: PathBuf },
    #[error(transparent)]
    Read(#[from] CheckpointError),
    #[error("{path}: field {field}: {message}")]
    Field {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// The files of a checkpoint given as a folder or as a weights file alone.
#[derive(Debug, Clone)]
pub struct HfLxmertFiles {
    pub weights: PathBuf,
    /// `None` for a bare weights file.
    pub config: Option<PathBuf>,
    pub vocabulary: Option<PathBuf>,
}

impl HfLxmertFiles {
    /// Finds the files of `path`: a model folder, or a weights file.
    pub fn locate(path: &Path) -> Result<Self, HfFolderError> {
        if !path.is_dir() {
            return Ok(Self {
                weights: path.to_path_buf(),
                config: None,
                vocabulary: None,
            });
        }
        let first = |names: &[&str]| names.iter().map(|n| path.join(n)).find(|p| p.is_file());
        let weights = first(&WEIGHT_FILES).ok_or_else(|| HfFolderError::NoWeights {
            path: path.to_path_buf(),
        })?;
        let config = path.join("config.json");
        if !config.is_file() {
            return Err(HfFolderError::NoConfig {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            weights,
            config: Some(config),
            vocabulary: first(&VOCABULARY_FILES),
        })
    }
}

/// The fields of Hugging Face's `LxmertConfig` (`config.json`) that shape the model, with
/// its defaults (those of the released model). Fields vislang does not read are kept as
/// they are, so an exported folder round-trips them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfLxmertConfig {
    #[serde(default = "defaults::model_type")]
    pub model_type: String,
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "defaults::intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: String,
    #[serde(default = "defaults::dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "defaults::dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "defaults::l_layers")]
    pub l_layers: usize,
    #[serde(default = "defaults::x_layers")]
    pub x_layers: usize,
    #[serde(default = "defaults::r_layers")]
    pub r_layers: usize,
    #[serde(default = "defaults::visual_feat_dim")]
    pub visual_feat_dim: usize,
    #[serde(default = "defaults::visual_pos_dim")]
    pub visual_pos_dim: usize,
    #[serde(default = "defaults::num_object_labels")]
    pub num_object_labels: usize,
    #[serde(default = "defaults::num_attr_labels")]
    pub num_attr_labels: usize,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

mod defaults {
    pub fn model_type() -> String {
        "lxmert".into()
    }
    pub fn vocab_size() -> usize {
        30522
    }
    pub fn hidden_size() -> usize {
        768
    }
    pub fn num_attention_heads() -> usize {
        12
    }
    pub fn intermediate_size() -> usize {
        3072
    }
    pub fn hidden_act() -> String {
        "gelu".into()
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn max_position_embeddings() -> usize {
        512
    }
    pub fn type_vocab_size() -> usize {
        2
    }
    pub fn l_layers() -> usize {
        9
    }
    pub fn x_layers() -> usize {
        5
    }
    pub fn r_layers() -> usize {
        5
    }
    pub fn visual_feat_dim() -> usize {
        2048
    }
    pub fn visual_pos_dim() -> usize {
        4
    }
    pub fn num_object_labels() -> usize {
        1600
    }
    pub fn num_attr_labels() -> usize {
        400
    }
}

impl HfLxmertConfig {
    /// Reads and checks `config.json`: every field vislang cannot represent is named.
    pub fn read(path: &Path) -> Result<Self, HfFolderError> {
        let config: Self = read_json(path)?;
        let field = |field, message: String| {
            Err(HfFolderError::Field {
                path: path.to_path_buf(),
                field,
                message,
            })
        };
        if config.model_type != "lxmert" {
            return field(
                "model_type",
                format!("{:?}, expected \"lxmert\"", config.model_type),
            );
        }
        if config.hidden_act != "gelu" {
            return field(
                "hidden_act",
                format!("{:?}: vislang's LXMERT uses \"gelu\"", config.hidden_act),
            );
        }
        if config.visual_pos_dim != 4 {
            return field(
                "visual_pos_dim",
                format!(
                    "{}: vislang's boxes have 4 coordinates",
                    config.visual_pos_dim
                ),
            );
        }
        for (name, value) in [
            ("vocab_size", config.vocab_size),
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
            ("intermediate_size", config.intermediate_size),
            ("max_position_embeddings", config.max_position_embeddings),
            ("type_vocab_size", config.type_vocab_size),
            ("visual_feat_dim", config.visual_feat_dim),
        ] {
            if value == 0 {
                return field(name, "must be at least 1".into());
            }
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return field(
                "hidden_size",
                format!(
                    "{} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            );
        }
        for (name, p) in [
            ("hidden_dropout_prob", config.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                config.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return field(name, format!("{p} is not in [0, 1)"));
            }
        }
        Ok(config)
    }

    /// The encoder this config describes, reading region features of `visual_feat_dim`.
    pub fn lxmert_config(&self) -> LxmertConfig {
        LxmertConfig::new(self.vocab_size, self.visual_feat_dim)
            .with_d_model(self.hidden_size)
            .with_n_heads(self.num_attention_heads)
            .with_d_hidden(self.intermediate_size)
            .with_n_language_layers(self.l_layers)
            .with_n_object_layers(self.r_layers)
            .with_n_cross_layers(self.x_layers)
            .with_max_positions(self.max_position_embeddings)
            .with_n_segments(self.type_vocab_size)
            .with_dropout(self.hidden_dropout_prob)
    }

    /// The config of a vislang encoder, for an exported folder. `object_labels` and
    /// `attribute_labels` are the masked-object head's label counts, `object_head` whether
    /// the folder holds that head at all (Hugging Face builds it from these fields).
    pub fn from_lxmert(
        config: &LxmertConfig,
        object_head: bool,
        object_labels: Option<usize>,
        attribute_labels: Option<usize>,
    ) -> Self {
        let flag = serde_json::Value::Bool;
        let other = serde_json::Map::from_iter([
            (
                "architectures".to_string(),
                serde_json::json!(["LxmertForPreTraining"]),
            ),
            ("task_mask_lm".to_string(), flag(true)),
            ("task_matched".to_string(), flag(true)),
            ("task_obj_predict".to_string(), flag(object_head)),
            ("task_qa".to_string(), flag(false)),
            ("visual_feat_loss".to_string(), flag(object_head)),
            (
                "visual_obj_loss".to_string(),
                flag(object_head && object_labels.is_some()),
            ),
            (
                "visual_attr_loss".to_string(),
                flag(object_head && attribute_labels.is_some()),
            ),
        ]);
        Self {
            model_type: defaults::model_type(),
            vocab_size: config.vocab_size,
            hidden_size: config.d_model,
            num_attention_heads: config.n_heads,
            intermediate_size: config.d_hidden,
            hidden_act: defaults::hidden_act(),
            hidden_dropout_prob: config.dropout,
            attention_probs_dropout_prob: config.dropout,
            max_position_embeddings: config.max_positions,
            type_vocab_size: config.n_segments,
            l_layers: config.n_language_layers,
            x_layers: config.n_cross_layers,
            r_layers: config.n_object_layers,
            visual_feat_dim: config.d_feature,
            visual_pos_dim: 4,
            num_object_labels: object_labels.unwrap_or(defaults::num_object_labels()),
            num_attr_labels: attribute_labels.unwrap_or(defaults::num_attr_labels()),
            other,
        }
    }
}
