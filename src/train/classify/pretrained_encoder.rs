//! An LXMERT encoder pretrained by `pretrain-lxmert`, checked before `classify` fine-tunes it:
//! the architecture must be the one the experiment builds and the vocabulary the one it reads,
//! or the checkpoint would load into the wrong shapes or read the wrong ids.

use std::path::{Path, PathBuf};

use crate::data::TextTokenizer;
use crate::io::checkpoint::read_json;
use crate::models::lxmert::LxmertConfig;
use crate::train::engine::run_dir::config_differences;
use crate::train::lxmert_pretrain::PretrainResult;
use crate::train::TrainError;

/// A `pretrain-lxmert --out` directory that passed [`PretrainedEncoder::open`].
#[derive(Debug, Clone)]
pub struct PretrainedEncoder {
    /// `lxmert.safetensors`: the encoder without its pretraining heads.
    pub weights: PathBuf,
    /// The run's `result.json`, when it has one.
    pub result: Option<PretrainResult>,
}

/// Config fields that may differ: dropout is a training setting, not part of the weights.
const FREE_FIELDS: [&str; 1] = ["dropout"];

impl PretrainedEncoder {
    /// Checks `dir/lxmert-config.json` against `expected` and `dir/tokenizer.json` against
    /// `tokenizer`; errors name the file and every field or token that disagrees.
    pub fn open(
        dir: &Path,
        expected: &LxmertConfig,
        tokenizer: &TextTokenizer,
    ) -> Result<Self, TrainError> {
        let config_path = dir.join("lxmert-config.json");
        let found: LxmertConfig = read_json(&config_path)?;
        let differences = architecture_differences(&found, expected);
        if !differences.is_empty() {
            return Err(TrainError::Incompatible {
                path: config_path,
                message: format!(
                    "{} (pretrain with the same model size, --image-size and caption length as this experiment)",
                    differences.join("; ")
                ),
            });
        }

        let tokenizer_path = dir.join("tokenizer.json");
        let pretraining_tokenizer =
            TextTokenizer::from_file(&tokenizer_path).map_err(|e| TrainError::Task(Box::new(e)))?;
        let tokens = pretraining_tokenizer.vocabulary_differences(tokenizer);
        if !tokens.is_empty() {
            let shown: Vec<&str> = tokens.iter().take(8).map(String::as_str).collect();
            return Err(TrainError::Incompatible {
                path: tokenizer_path.clone(),
                message: format!(
                    "{} tokens have other ids than in this experiment's tokenizer (e.g. {}); pass --tokenizer {} with a fresh --out",
                    tokens.len(),
                    shown.join(", "),
                    tokenizer_path.display()
                ),
            });
        }

        let weights = dir.join("lxmert.safetensors");
        if !weights.is_file() {
            return Err(TrainError::Incompatible {
                path: weights,
                message: "missing: the pretraining has not finished (rerun pretrain-lxmert with the same --out to resume it)".into(),
            });
        }
        let result_path = dir.join("result.json");
        let result = if result_path.exists() {
            Some(read_json(&result_path)?)
        } else {
            None
        };
        Ok(Self { weights, result })
    }
}

/// `field: X there, Y here` for each field of the two configs that differs, except
/// [`FREE_FIELDS`].
fn architecture_differences(found: &LxmertConfig, expected: &LxmertConfig) -> Vec<String> {
    let json = |config: &LxmertConfig| serde_json::to_value(config).expect("configs serialise");
    config_differences(&json(found), &json(expected))
        .into_iter()
        .filter(|d| !FREE_FIELDS.contains(&d.field.as_str()))
        .map(|d| d.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field_and_ignore_dropout() {
        let expected = LxmertConfig::small(100, 32);
        let same_but_dropout = LxmertConfig::small(100, 32).with_dropout(0.3);
        assert!(architecture_differences(&same_but_dropout, &expected).is_empty());

        let found = LxmertConfig::small(120, 32).with_n_cross_layers(3);
        let differences = architecture_differences(&found, &expected);
        assert_eq!(
            differences,
            vec![
                "n_cross_layers: 3 there, 1 here".to_string(),
                "vocab_size: 120 there, 100 here".to_string(),
            ]
        );
    }
}
