//! LXMERT's options in `pretrain-lxmert` and `classify`: the model's size, or released
//! weights that size it.

use std::path::PathBuf;

use crate::data::DataConfig;
use crate::models::lxmert::hf_folder::{HfLxmertConfig, HfLxmertFiles};
use crate::models::lxmert::LxmertConfig;

/// Released weights and the LXMERT size flags (which the weights' config.json replaces).
#[derive(clap::Args, Debug, Clone)]
pub struct LxmertArgs {
    /// Start from released LXMERT weights: a Hugging Face model folder (config.json,
    /// pytorch_model.bin or model.safetensors, vocab.txt or tokenizer.json), such as a
    /// download of unc-nlp/lxmert-base-uncased, or its weights file with config.json beside
    /// it. The folder's config.json sizes the model and its vocabulary becomes the tokenizer
    /// (unless --tokenizer is given). Pixels go through a new patch encoder; pretrain-lxmert's
    /// --features must have the checkpoint's feature width.
    #[arg(long, value_parser = existing_path)]
    pub lxmert_weights: Option<PathBuf>,
    /// Layers of the language, object-relationship and cross-modality encoders, as L,R,X
    /// [default: 2,1,1 synthetic, 9,5,5 COCO].
    #[arg(long, value_parser = layer_counts, conflicts_with = "lxmert_weights")]
    pub lxmert_layers: Option<LayerCounts>,
    /// Hidden width [default: 64 synthetic, 768 COCO].
    #[arg(long, value_parser = super::range::at_least_one, conflicts_with = "lxmert_weights")]
    pub lxmert_width: Option<usize>,
    /// Attention heads; must divide the width [default: 4 synthetic, 12 COCO].
    #[arg(long, value_parser = super::range::at_least_one, conflicts_with = "lxmert_weights")]
    pub lxmert_heads: Option<usize>,
    /// Feed-forward width [default: 4 x width].
    #[arg(long, value_parser = super::range::at_least_one, conflicts_with = "lxmert_weights")]
    pub lxmert_ffn: Option<usize>,
}

/// A file or folder that exists, checked while parsing.
fn existing_path(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(path),
        Err(e) => Err(format!("cannot read {value}: {e}")),
    }
}

/// Layers per encoder, `L,R,X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCounts {
    pub language: usize,
    pub object: usize,
    pub cross: usize,
}

fn layer_counts(text: &str) -> Result<LayerCounts, String> {
    let counts: Vec<usize> = text
        .split(',')
        .map(|n| n.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{text:?} is not three layer counts L,R,X (e.g. 9,5,5)"))?;
    match counts[..] {
        [language, object, cross] if language > 0 && object > 0 && cross > 0 => Ok(LayerCounts {
            language,
            object,
            cross,
        }),
        _ => Err(format!(
            "{text:?} is not three layer counts of at least 1, L,R,X (e.g. 9,5,5)"
        )),
    }
}

/// A released checkpoint, read and checked while parsing.
#[derive(Debug, Clone)]
pub struct ReleasedLxmert {
    pub files: HfLxmertFiles,
    pub config: HfLxmertConfig,
}

impl ReleasedLxmert {
    /// Makes a run start from this checkpoint: `model` becomes the checkpoint's encoder
    /// (keeping `model`'s way of reading pixels, its patch size and stem, at the checkpoint's
    /// feature width), the data's tokenizer its vocabulary unless one was given, and captions
    /// no longer than its positions hold. Returns the weights file.
    pub fn apply(
        &self,
        model: &mut LxmertConfig,
        data: &mut DataConfig,
    ) -> Result<PathBuf, String> {
        let mut released = self.config.lxmert_config();
        released.pixels = model.pixels.clone().map(|mut pixels| {
            pixels.d_feature = self.config.visual_feat_dim;
            pixels
        });
        *model = released;
        data.tokenizer = data.tokenizer.take().or(self.files.vocabulary.clone());
        if data.tokenizer.is_none() {
            return Err(format!(
                "--lxmert-weights {} has no vocab.txt or tokenizer.json beside it: give the checkpoint's vocabulary as --tokenizer",
                self.files.weights.display()
            ));
        }
        // `[CLS]` and `[SEP]` take two positions.
        let longest = match self.config.max_position_embeddings.checked_sub(2) {
            Some(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "--lxmert-weights: max_position_embeddings {} leaves no room for a caption",
                    self.config.max_position_embeddings
                ))
            }
        };
        if data.max_text_len > longest {
            eprintln!(
                "captions cut to {longest} tokens: the checkpoint has {} positions",
                longest + 2
            );
            data.max_text_len = longest;
        }
        Ok(self.files.weights.clone())
    }
}

impl LxmertArgs {
    /// The checkpoint --lxmert-weights names (paths absolute), with its config read and
    /// checked.
    pub fn released(&self) -> Result<Option<ReleasedLxmert>, String> {
        let Some(path) = &self.lxmert_weights else {
            return Ok(None);
        };
        let path = super::absolute(path.clone());
        if !path.exists() {
            return Err(format!(
                "--lxmert-weights {}: no such file or folder",
                path.display()
            ));
        }
        let mut files =
            HfLxmertFiles::locate(&path).map_err(|e| format!("--lxmert-weights: {e}"))?;
        if files.config.is_none() {
            // A weights file: its folder holds the rest.
            let folder = path.parent().unwrap_or(&path);
            let weights = files.weights.clone();
            files = HfLxmertFiles::locate(folder).map_err(|e| format!("--lxmert-weights: {e}"))?;
            files.weights = weights;
        }
        let config_path = files.config.as_ref().expect("located with a config");
        let config =
            HfLxmertConfig::read(config_path).map_err(|e| format!("--lxmert-weights: {e}"))?;
        Ok(Some(ReleasedLxmert { files, config }))
    }

    /// `model` with the size flags applied, checked.
    pub fn apply_sizes(&self, model: &mut LxmertConfig) -> Result<(), String> {
        if let Some(layers) = self.lxmert_layers {
            model.n_language_layers = layers.language;
            model.n_object_layers = layers.object;
            model.n_cross_layers = layers.cross;
        }
        if let Some(width) = self.lxmert_width {
            model.d_model = width;
            model.d_hidden = 4 * width;
        }
        model.n_heads = self.lxmert_heads.unwrap_or(model.n_heads);
        model.d_hidden = self.lxmert_ffn.unwrap_or(model.d_hidden);
        if !model.d_model.is_multiple_of(model.n_heads) {
            return Err(format!(
                "--lxmert-heads {} does not divide the width {} (--lxmert-width)",
                model.n_heads, model.d_model
            ));
        }
        Ok(())
    }
}
