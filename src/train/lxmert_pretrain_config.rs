//! What a pretraining run is: the data, the encoder's config (presets, and the data-derived
//! fields filled in), the objectives, the masking and the budget. Saved as `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::budget::Budget;
use crate::data::lxmert_pretraining::MaskingConfig;
use crate::data::{DataConfig, RegionFeatures};
use crate::models::lxmert::{
    LxmertConfig, LxmertPretrainingConfig, Objectives, PATCH_TARGET_WIDTH,
};
use crate::nn::PatchEncoderConfig;

/// LXMERT sizes of the presets, reading pixels; data-derived fields are placeholders until
/// [`fill_lxmert`] sets them.
pub mod lxmert_presets {
    use crate::models::lxmert::LxmertConfig;
    use crate::nn::PatchEncoderConfig;

    /// 2/1/1 layers of width 64 over 12-pixel patches: pretrains in minutes on a 2-core CPU.
    pub fn small() -> LxmertConfig {
        LxmertConfig::small(0, 64)
            .with_dropout(0.0)
            .with_pixels(Some(
                PatchEncoderConfig::new(48, 12, 64).with_stem_channels(16),
            ))
    }

    /// The released model: 9/5/5 layers, 768 wide, 12 heads; 32-pixel patches for pixels.
    pub fn base() -> LxmertConfig {
        LxmertConfig::new(0, 768).with_pixels(Some(
            PatchEncoderConfig::new(224, 32, 768).with_stem_channels(64),
        ))
    }
}

/// `template` with what the data fixes filled in: the vocabulary, the caption positions
/// (`max_text_len` + `[CLS]` and `[SEP]`), and either the image size of the patch encoder
/// (`image_size` `Some`) or the width of region features (pixels off). With `released`
/// (the template is a released checkpoint's) the vocabulary and positions stay the
/// checkpoint's.
pub fn fill_lxmert(
    template: &LxmertConfig,
    vocab_size: usize,
    max_text_len: usize,
    image_size: Option<usize>,
    region_features: usize,
    released: bool,
) -> LxmertConfig {
    let mut config = template.clone();
    if !released {
        config.vocab_size = vocab_size;
        config.max_positions = max_text_len + 2;
    }
    match (image_size, config.pixels.as_mut()) {
        (Some(size), Some(pixels)) => pixels.image_size = size,
        (Some(size), None) => {
            config.pixels = Some(PatchEncoderConfig::new(size, 16, config.d_feature));
        }
        (None, _) => {
            config.pixels = None;
            config.d_feature = region_features;
        }
    }
    config
}

/// Pretraining budgets.
pub mod budgets {
    use super::Budget;

    /// A 2-core CPU on the synthetic set: a few minutes.
    pub fn synthetic() -> Budget {
        Budget::new(6, 32, 1e-3)
    }

    /// LXMERT's schedule: 20 epochs of batch 256 at lr 1e-4.
    pub fn coco() -> Budget {
        Budget::new(20, 256, 1e-4)
    }
}

/// The whole pretraining run, saved as `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainLxmertConfig {
    pub data: DataConfig,
    /// A feature file from `lxmert-features convert`; `None` reads pixels.
    pub features: Option<PathBuf>,
    /// The encoder; vocabulary, caption positions, image size and region-feature width are
    /// filled in from the data ([`PretrainLxmertConfig::model_config`]).
    pub model: LxmertConfig,
    /// Released weights the run starts from (a Hugging Face `LxmertForPreTraining` or
    /// `LxmertModel` file); `model` is then sized by the folder's `config.json`, and its
    /// vocabulary and positions are the checkpoint's, not the data's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    pub objectives: Objectives,
    pub masking: MaskingConfig,
    pub budget: Budget,
}

impl PretrainLxmertConfig {
    /// The built-in synthetic set at the `classify` preset's image size and vocabulary.
    pub fn synthetic() -> Self {
        Self {
            data: DataConfig::synthetic(),
            features: None,
            model: lxmert_presets::small(),
            weights: None,
            objectives: Objectives::LXMERT,
            masking: MaskingConfig::default(),
            budget: budgets::synthetic(),
        }
    }

    /// MSCOCO 2014 captions on a GPU: the base model, LXMERT's batch 256 and lr 1e-4.
    pub fn coco(root: PathBuf) -> Self {
        let mut config = Self::synthetic();
        config.data = DataConfig::coco(root);
        config.model = lxmert_presets::base();
        config.budget = budgets::coco();
        config
    }

    /// The pretraining model for `data` (and `features` when set), with contrastive
    /// projections when that objective is on.
    pub fn model_config(
        &self,
        vocab_size: usize,
        features: Option<&RegionFeatures>,
        n_object_labels: Option<usize>,
        n_attribute_labels: Option<usize>,
    ) -> LxmertPretrainingConfig {
        let max_text_len = self.data.max_text_len;
        let config = match features {
            None => LxmertPretrainingConfig::new(
                fill_lxmert(
                    &self.model,
                    vocab_size,
                    max_text_len,
                    Some(self.data.image_size),
                    0,
                    self.weights.is_some(),
                ),
                PATCH_TARGET_WIDTH,
            ),
            Some(features) => LxmertPretrainingConfig::new(
                fill_lxmert(
                    &self.model,
                    vocab_size,
                    max_text_len,
                    None,
                    features.d_feature(),
                    self.weights.is_some(),
                ),
                features.d_feature(),
            )
            .with_n_object_labels(n_object_labels)
            .with_n_attribute_labels(n_attribute_labels),
        };
        config.with_contrastive(self.objectives.contrastive)
    }
}
