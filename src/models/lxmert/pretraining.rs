//! LXMERT's pretraining heads and objectives (paper section 3.1): masked language modelling,
//! masked object prediction (feature regression and label classification) and cross-modality
//! matching. Head names and layouts follow Hugging Face's `LxmertForPreTraining`, so its
//! checkpoints load into [`LxmertPretraining`] (see [`super::hf`]).

use crate::nn::gelu;
use crate::nn::precision::linear;
use crate::nn::Backend;
use crate::nn::{LayerNorm, LayerNormConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::model::{Lxmert, LxmertConfig, LxmertText, VisualRegions};
use crate::nn::{weighted_cross_entropy, weighted_smooth_l1};

/// Which objectives contribute to the loss; each can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objectives {
    pub masked_language: bool,
    pub masked_objects: bool,
    pub matching: bool,
    /// Image-text contrastive alignment of the two unimodal encoders ("align before fuse",
    /// ALBEF, Li et al. 2021, <https://arxiv.org/abs/2107.07651>): not one of LXMERT's own
    /// objectives; configs written before it existed read as off.
    #[serde(default)]
    pub contrastive: bool,
}

impl Objectives {
    /// LXMERT's own three objectives (the contrastive one off).
    pub const LXMERT: Objectives = Objectives {
        masked_language: true,
        masked_objects: true,
        matching: true,
        contrastive: false,
    };

    pub fn any(&self) -> bool {
        self.masked_language || self.masked_objects || self.matching || self.contrastive
    }
}

/// Configuration of [`LxmertPretraining`].
#[derive(Config, Debug)]
pub struct LxmertPretrainingConfig {
    pub lxmert: LxmertConfig,
    /// Width of the regression target of a masked region: `d_feature` for detector features,
    /// or [`PATCH_TARGET_WIDTH`] for pixels (see [`patch_colour_targets`]).
    pub d_region_target: usize,
    /// Detector object classes (1600 for LXMERT's Visual Genome detector); `None`: no object
    /// label loss.
    #[config(default = "None")]
    pub n_object_labels: Option<usize>,
    /// Detector attribute classes (400); `None`: no attribute loss.
    #[config(default = "None")]
    pub n_attribute_labels: Option<usize>,
    /// Projections for the image-text contrastive objective ([`Objectives::contrastive`]);
    /// configs written before it existed read as without.
    #[config(default = false)]
    pub contrastive: bool,
}

/// Regression target width of a pixel patch: the mean colour of each of its four quadrants.
pub const PATCH_TARGET_WIDTH: usize = 12;

impl LxmertPretrainingConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> LxmertPretraining<B> {
        let d = self.lxmert.d_model;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.lxmert.layer_norm_eps)
                .init(device)
        };
        LxmertPretraining {
            lxmert: self.lxmert.init(device),
            language_head: MaskedLanguageHead {
                transform: LinearConfig::new(d, d).init(device),
                norm: norm(),
                bias: Param::from_tensor(Tensor::zeros([self.lxmert.vocab_size], device)),
            },
            object_head: MaskedObjectHead {
                transform: LinearConfig::new(d, d).init(device),
                norm: norm(),
                feature: LinearConfig::new(d, self.d_region_target).init(device),
                objects: self
                    .n_object_labels
                    .map(|n| LinearConfig::new(d, n).init(device)),
                attributes: self
                    .n_attribute_labels
                    .map(|n| LinearConfig::new(d, n).init(device)),
            },
            matching_head: LinearConfig::new(d, 2).init(device),
            contrastive_head: self.contrastive.then(|| ContrastiveHead {
                text: LinearConfig::new(d, d).init(device),
                image: LinearConfig::new(d, d).init(device),
            }),
        }
    }
}

/// Temperature of the contrastive objective's softmax over cosine similarities (ALBEF's
/// initial value; fixed, so a run has no learnable scale to blow up).
pub const CONTRASTIVE_TEMPERATURE: f64 = 0.07;

/// Projections of the unimodal summaries into the space where the contrastive objective
/// compares them (ALBEF's `vision_proj` / `text_proj`).
#[derive(Module, Debug)]
pub struct ContrastiveHead<B: Backend> {
    pub text: Linear<B>,
    pub image: Linear<B>,
}

impl<B: Backend> ContrastiveHead<B> {
    /// Cosine similarities of every caption with every image, divided by the temperature.
    ///
    /// # Shapes
    /// - `text_summary`, `image_summary`: `[batch, d_model]` ([`super::UnimodalSummaries`])
    /// - returns: `[batch (captions), batch (images)]`
    pub fn similarities(
        &self,
        text_summary: Tensor<B, 2>,
        image_summary: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let unit = |x: Tensor<B, 2>| {
            let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-6);
            x / norm
        };
        let text = unit(linear(&self.text, text_summary));
        let image = unit(linear(&self.image, image_summary));
        text.matmul(image.transpose()) / CONTRASTIVE_TEMPERATURE
    }
}

/// BERT's masked-LM head: `LN(gelu(W h))`, then the word embeddings (tied) plus a bias.
#[derive(Module, Debug)]
pub struct MaskedLanguageHead<B: Backend> {
    pub transform: Linear<B>,
    pub norm: LayerNorm<B>,
    /// `[vocab]`
    pub bias: Param<Tensor<B, 1>>,
}

/// LXMERT's object head: `LN(gelu(W h))`, then a regression of the region feature and
/// classifiers over detector labels.
#[derive(Module, Debug)]
pub struct MaskedObjectHead<B: Backend> {
    pub transform: Linear<B>,
    pub norm: LayerNorm<B>,
    pub feature: Linear<B>,
    pub objects: Option<Linear<B>>,
    pub attributes: Option<Linear<B>>,
}

/// What the model sees of an image during pretraining.
#[derive(Debug, Clone)]
pub enum PretrainingVision<B: Backend> {
    /// `[batch, 3, size, size]` normalised pixels, read by the model's patch encoder.
    Pixels(Tensor<B, 4>),
    /// Detector regions.
    Regions(VisualRegions<B>),
}

/// One pretraining batch, masks and targets drawn (see `crate::data::lxmert_pretraining`).
#[derive(Debug, Clone)]
pub struct PretrainingBatch<B: Backend> {
    /// Captions with 15% of tokens masked; half the pairs have another image's caption.
    pub text: LxmertText<B>,
    /// `[batch, seq]` the original ids at masked positions (0 elsewhere).
    pub token_targets: Tensor<B, 2, Int>,
    /// `[batch, seq]` 1 where the masked-LM loss counts (masked tokens of matched pairs).
    pub token_weights: Tensor<B, 2>,
    pub vision: PretrainingVision<B>,
    /// `[batch, regions]`, `true` where a region's feature is replaced by zeros.
    pub region_masked: Tensor<B, 2, Bool>,
    /// `[batch, regions]` 1 where the masked-object losses count.
    pub region_weights: Tensor<B, 2>,
    /// `[batch, regions]` detector object label of each region, -1 where unknown.
    pub object_labels: Option<Tensor<B, 2, Int>>,
    /// `[batch, regions]` detector attribute label of each region, -1 where unknown.
    pub attribute_labels: Option<Tensor<B, 2, Int>>,
    /// `[batch]` 1 where the caption belongs to the image, 0 where it was swapped.
    pub matched: Tensor<B, 1, Int>,
}

/// The losses of one batch; `None` for objectives that are switched off or have no targets.
#[derive(Debug, Clone)]
pub struct PretrainingLosses<B: Backend> {
    pub masked_language: Option<Tensor<B, 1>>,
    pub object_feature: Option<Tensor<B, 1>>,
    pub object_label: Option<Tensor<B, 1>>,
    pub object_attribute: Option<Tensor<B, 1>>,
    pub matching: Option<Tensor<B, 1>>,
    pub contrastive: Option<Tensor<B, 1>>,
    /// `[1]` the number of pairs the matching head classifies correctly (not a loss).
    pub matching_correct: Option<Tensor<B, 1>>,
    /// The sum of the losses.
    pub total: Tensor<B, 1>,
}

/// [`Lxmert`] with the three pretraining heads.
#[derive(Module, Debug)]
pub struct LxmertPretraining<B: Backend> {
    pub lxmert: Lxmert<B>,
    pub language_head: MaskedLanguageHead<B>,
    pub object_head: MaskedObjectHead<B>,
    /// Cross-modality matching on the pooled output (Hugging Face: `cls.seq_relationship`).
    pub matching_head: Linear<B>,
    /// vislang's addition (not in Hugging Face's checkpoints), present when the config asks
    /// for it: see [`Objectives::contrastive`].
    pub contrastive_head: Option<ContrastiveHead<B>>,
}

/// The regression target of each patch of a pixel grid: the mean colour of its four
/// quadrants (as ViLT's masked patch prediction regresses mean colours; regressing the patch
/// encoder's own features would let both sides collapse to a constant).
///
/// # Shapes
/// - `images`: `[batch, 3, size, size]`, `grid` patches per side
/// - returns: `[batch, grid*grid, 12]`
pub fn patch_colour_targets<B: Backend>(images: Tensor<B, 4>, grid: usize) -> Tensor<B, 3> {
    let [batch, channels, size, _] = images.dims();
    let half = size / grid / 2;
    let pooled = avg_pool2d(images, [half, half], [half, half], [0, 0], true, false); // [b, 3, 2g, 2g]
    pooled
        .reshape([batch, channels, grid, 2, grid, 2])
        .permute([0, 2, 4, 1, 3, 5]) // [b, g, g, 3, 2, 2]
        .reshape([batch, grid * grid, channels * 4])
}

impl<B: Backend> LxmertPretraining<B> {
    /// Masked-LM logits over the vocabulary.
    ///
    /// # Shapes
    /// - `language`: `[batch, seq, d_model]`
    /// - returns: `[batch, seq, vocab]`
    pub fn language_logits(&self, language: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, d_model] = language.dims();
        let head = &self.language_head;
        let hidden = head.norm.forward(gelu(linear(&head.transform, language)));
        let words = self.lxmert.text_embeddings.token.weight.val(); // [vocab, d]
        let vocab = words.dims()[0];
        let logits = hidden
            .reshape([batch * seq, d_model])
            .matmul(words.transpose())
            + head.bias.val().unsqueeze::<2>();
        logits.reshape([batch, seq, vocab])
    }

    /// Cross-modality matching logits (index 1 = matched).
    ///
    /// # Shapes
    /// - `pooled`: `[batch, d_model]`
    /// - returns: `[batch, 2]`
    pub fn matching_logits(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        linear(&self.matching_head, pooled)
    }

    /// The losses of `batch` under `objectives`.
    ///
    /// # Shapes
    /// See [`PretrainingBatch`]; every loss is `[1]`.
    pub fn losses(
        &self,
        batch: PretrainingBatch<B>,
        objectives: Objectives,
    ) -> PretrainingLosses<B> {
        let (regions, feature_targets) = match batch.vision {
            PretrainingVision::Pixels(images) => {
                let regions = self.lxmert.regions_of(images.clone());
                let grid = (regions.features.dims()[1] as f64).sqrt().round() as usize;
                (regions, patch_colour_targets(images, grid))
            }
            PretrainingVision::Regions(regions) => {
                let targets = regions.features.clone();
                (regions, targets)
            }
        };
        // Masked regions are zeroed before the visual embedding, as in LXMERT.
        let [batch_size, n_regions, d_feature] = regions.features.dims();
        let masked = batch
            .region_masked
            .clone()
            .unsqueeze_dim::<3>(2)
            .expand([batch_size, n_regions, d_feature]);
        let regions = VisualRegions {
            features: regions.features.mask_fill(masked, 0.0),
            ..regions
        };
        let head = self
            .contrastive_head
            .as_ref()
            .filter(|_| objectives.contrastive);
        let output = match head {
            Some(_) => self.lxmert.forward_with_summaries(batch.text, regions),
            None => self.lxmert.forward(batch.text, regions),
        };

        let masked_language = objectives.masked_language.then(|| {
            let logits = self.language_logits(output.language.clone());
            let [b, s, vocab] = logits.dims();
            weighted_cross_entropy(
                logits.reshape([b * s, vocab]),
                batch.token_targets.reshape([b * s]),
                batch.token_weights.reshape([b * s]),
            )
        });

        let (mut object_feature, mut object_label, mut object_attribute) = (None, None, None);
        if objectives.masked_objects {
            let head = &self.object_head;
            let d_model = output.vision.dims()[2];
            let rows = batch_size * n_regions;
            let hidden = head
                .norm
                .forward(gelu(linear(&head.transform, output.vision.clone())))
                .reshape([rows, d_model]);
            let weights = batch.region_weights.reshape([rows]);
            let d_target = feature_targets.dims()[2];
            object_feature = Some(weighted_smooth_l1(
                linear(&head.feature, hidden.clone()),
                feature_targets.reshape([rows, d_target]).detach(),
                weights.clone(),
            ));
            let classify = |layer: &Option<Linear<B>>, labels: Option<Tensor<B, 2, Int>>| {
                let (layer, labels) = (layer.as_ref()?, labels?.reshape([rows]));
                let known = labels.clone().greater_equal_elem(0).float() * weights.clone();
                Some(weighted_cross_entropy(
                    linear(layer, hidden.clone()),
                    labels.clamp_min(0),
                    known,
                ))
            };
            object_label = classify(&head.objects, batch.object_labels);
            object_attribute = classify(&head.attributes, batch.attribute_labels);
        }

        let device = batch.matched.device();
        // Each matched pair's caption against every image of the batch, and each matched
        // image against every caption (swapped ones included, as extra negatives).
        let contrastive = head.zip(output.summaries).map(|(head, summaries)| {
            let similarities = head.similarities(summaries.text, summaries.image);
            let n = similarities.dims()[0];
            let own = Tensor::<B, 1, Int>::arange(0..n as i64, &device);
            let weights = batch.matched.clone().float();
            let text_to_image =
                weighted_cross_entropy(similarities.clone(), own.clone(), weights.clone());
            let image_to_text = weighted_cross_entropy(similarities.transpose(), own, weights);
            (text_to_image + image_to_text) / 2.0
        });
        let (matching, matching_correct) = if objectives.matching {
            let logits = self.matching_logits(output.pooled);
            let n = logits.dims()[0];
            let correct = logits
                .clone()
                .argmax(1)
                .squeeze_dim::<1>(1)
                .equal(batch.matched.clone())
                .float()
                .sum();
            let loss = weighted_cross_entropy(logits, batch.matched, Tensor::ones([n], &device));
            (Some(loss), Some(correct.detach()))
        } else {
            (None, None)
        };

        let parts = [
            &masked_language,
            &object_feature,
            &object_label,
            &object_attribute,
            &matching,
            &contrastive,
        ];
        let total = parts
            .into_iter()
            .flatten()
            .cloned()
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1], &device));
        PretrainingLosses {
            masked_language,
            object_feature,
            object_label,
            object_attribute,
            matching,
            contrastive,
            matching_correct,
            total,
        }
    }
}
