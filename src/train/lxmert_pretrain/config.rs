//! What a pretraining run is: the data, the encoder's config (presets, and the data-derived
//! fields filled in), its stages (objectives and epochs), the masking and the budget. Saved
//! as `config.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::lxmert_pretraining::MaskingConfig;
use crate::data::{DataConfig, RegionFeatures};
use crate::models::lxmert::{
    LxmertConfig, LxmertPretrainingConfig, Objectives, PATCH_TARGET_WIDTH,
};
use crate::nn::PatchEncoderConfig;
use crate::train::engine::budget::Budget;

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

/// One stage of a pretraining: its objectives, trained for `epochs` under a learning-rate
/// schedule of its own. A later stage starts from the encoder the stage before it trained,
/// with fresh heads (the heads belong to the objectives).
///
/// Written `OBJECTIVES:EPOCHS`, the objectives joined by `+` from `masked-lm`,
/// `masked-objects`, `matching` and `contrastive` (`lxmert` is the first three): e.g.
/// `contrastive:10` or `lxmert:20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PretrainStage {
    pub objectives: Objectives,
    pub epochs: usize,
}

/// Objective names of [`PretrainStage`]'s written form, in [`Objectives`]' order.
const OBJECTIVE_NAMES: [&str; 4] = ["masked-lm", "masked-objects", "matching", "contrastive"];

impl PretrainStage {
    pub fn new(objectives: Objectives, epochs: usize) -> Self {
        Self { objectives, epochs }
    }

    fn flags(objectives: &mut Objectives) -> [&mut bool; 4] {
        [
            &mut objectives.masked_language,
            &mut objectives.masked_objects,
            &mut objectives.matching,
            &mut objectives.contrastive,
        ]
    }
}

impl std::fmt::Display for PretrainStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut objectives = self.objectives;
        let names: Vec<&str> = OBJECTIVE_NAMES
            .iter()
            .zip(Self::flags(&mut objectives))
            .filter(|(_, on)| **on)
            .map(|(name, _)| *name)
            .collect();
        write!(f, "{}:{}", names.join("+"), self.epochs)
    }
}

impl std::str::FromStr for PretrainStage {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (names, epochs) = text.rsplit_once(':').ok_or_else(|| {
            format!("'{text}' is not OBJECTIVES:EPOCHS (e.g. contrastive:10 or lxmert:20)")
        })?;
        let epochs: usize = epochs
            .parse()
            .ok()
            .filter(|&e| e >= 1)
            .ok_or_else(|| format!("'{epochs}' in '{text}' is not a number of epochs >= 1"))?;
        let mut objectives = Objectives {
            masked_language: false,
            masked_objects: false,
            matching: false,
            contrastive: false,
        };
        for name in names.split('+') {
            if name == "lxmert" {
                objectives.masked_language = true;
                objectives.masked_objects = true;
                objectives.matching = true;
                continue;
            }
            let index = OBJECTIVE_NAMES
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| {
                    format!(
                        "unknown objective '{name}' in '{text}' (known: {}, lxmert)",
                        OBJECTIVE_NAMES.join(", ")
                    )
                })?;
            *Self::flags(&mut objectives)[index] = true;
        }
        Ok(Self { objectives, epochs })
    }
}

/// Pretraining stages.
pub mod stage_presets {
    use super::PretrainStage;
    use crate::models::lxmert::Objectives;

    /// The synthetic set: the image-text contrastive objective alone until the two unimodal
    /// encoders agree, then matching on top of it. LXMERT's own three objectives from scratch
    /// leave matching at chance here, and masked LM and masked objects undo the alignment in
    /// either stage (measured: docs/lxmert.md). The second stage runs 20 epochs: with 10,
    /// held-out matching ended at 0.77-0.85 over three seeds, with 20 at 0.83-0.88.
    pub fn synthetic() -> Vec<PretrainStage> {
        let contrastive = Objectives {
            masked_language: false,
            masked_objects: false,
            matching: false,
            contrastive: true,
        };
        let matching = Objectives {
            matching: true,
            ..contrastive
        };
        vec![
            PretrainStage::new(contrastive, 10),
            PretrainStage::new(matching, 20),
        ]
    }

    /// LXMERT's own recipe: its three objectives for 20 epochs.
    pub fn coco() -> Vec<PretrainStage> {
        vec![PretrainStage::new(Objectives::LXMERT, 20)]
    }
}

/// `stages` as written on the command line: `contrastive:10,matching+contrastive:20`.
pub fn stages_text(stages: &[PretrainStage]) -> String {
    let parts: Vec<String> = stages.iter().map(|s| s.to_string()).collect();
    parts.join(",")
}

/// Pretraining budgets.
pub mod budgets {
    use super::Budget;

    /// A 2-core CPU on the synthetic set: a few minutes. `epochs` is what each of the
    /// preset's stages runs (see [`super::stage_presets`]).
    pub fn synthetic() -> Budget {
        Budget::new(10, 32, 1e-3)
    }

    /// LXMERT's schedule: 20 epochs of batch 256 at lr 1e-4 (one stage).
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
    /// Run one after another, each from the encoder of the one before.
    pub stages: Vec<PretrainStage>,
    pub masking: MaskingConfig,
    /// Batch size, learning rate, seed, ... of every stage; its `epochs` is replaced by each
    /// stage's.
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
            stages: stage_presets::synthetic(),
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
        config.stages = stage_presets::coco();
        config
    }

    /// The budget of `stage`: this run's, for the stage's epochs.
    pub fn stage_budget(&self, stage: &PretrainStage) -> Budget {
        Budget {
            epochs: stage.epochs,
            ..self.budget.clone()
        }
    }

    /// The pretraining model for `data` (and `features` when set), with contrastive
    /// projections when `objectives` has that objective.
    pub fn model_config(
        &self,
        objectives: Objectives,
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
        config.with_contrastive(objectives.contrastive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_read_back_what_they_write() {
        for stages in [stage_presets::synthetic(), stage_presets::coco()] {
            let text = stages_text(&stages);
            let parsed: Vec<PretrainStage> = text.split(',').map(|s| s.parse().unwrap()).collect();
            assert_eq!(parsed, stages, "{text}");
        }
        assert_eq!(
            stages_text(&stage_presets::synthetic()),
            "contrastive:10,matching+contrastive:20"
        );
        let lxmert: PretrainStage = "lxmert:20".parse().unwrap();
        assert_eq!(lxmert, PretrainStage::new(Objectives::LXMERT, 20));
        assert_eq!(lxmert.to_string(), "masked-lm+masked-objects+matching:20");
        let mixed: PretrainStage = "contrastive+masked-lm:3".parse().unwrap();
        assert!(mixed.objectives.contrastive && mixed.objectives.masked_language);
        assert!(!mixed.objectives.matching && !mixed.objectives.masked_objects);
    }
}
