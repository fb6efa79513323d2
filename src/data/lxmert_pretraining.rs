//! LXMERT pretraining batches: caption swapping for cross-modality matching, BERT's token
//! masking and region masking, drawn on the host from a seeded generator so a resumed epoch
//! draws the same masks.

use crate::nn::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::batch::image_batch;
use super::classification::ClassificationSplit;
use super::region_features::{RegionFeatureError, RegionFeatures};
use super::tokenizer::{SpecialIds, SPECIAL_TOKENS};
use crate::models::lxmert::{
    LxmertText, Objectives, PretrainingBatch, PretrainingVision, VisualRegions,
};

/// Masking rates (the paper's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskingConfig {
    /// Fraction of caption tokens chosen for the masked-LM loss.
    pub token_rate: f64,
    /// Of the chosen tokens: fraction replaced by `[MASK]` and by a random token (the rest
    /// stay unchanged).
    pub token_mask_share: f64,
    pub token_random_share: f64,
    /// Fraction of regions masked for masked object prediction.
    pub region_rate: f64,
    /// Fraction of pairs whose caption is swapped for another image's.
    pub mismatch_rate: f64,
    /// Chance that a token of a word naming an object category ([`BatchRecipe::object_tokens`])
    /// is chosen for the masked-LM loss, in place of `token_rate`. Most caption tokens
    /// ("a", "picture", "of") can be guessed from the text alone; an object word can only be
    /// read off the image, so choosing them more often makes masked LM teach the model to look
    /// (0 keeps BERT's uniform choice; older configs read as 0).
    #[serde(default)]
    pub object_word_rate: f64,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            token_rate: 0.15,
            token_mask_share: 0.8,
            token_random_share: 0.1,
            region_rate: 0.15,
            mismatch_rate: 0.5,
            object_word_rate: 0.0,
        }
    }
}

/// A masked caption: the ids the model reads and the targets of the chosen positions.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedTokens {
    pub ids: Vec<u32>,
    /// The original id at each chosen position, `None` elsewhere.
    pub targets: Vec<Option<u32>>,
}

/// BERT's masking: each token is chosen with `token_rate` (tokens in the sorted
/// `object_tokens` with `object_word_rate` when that is positive); a chosen token becomes
/// `[MASK]` (80%), a random non-special token (10%) or stays (10%). Special tokens are never
/// chosen.
pub fn mask_tokens(
    ids: &[u32],
    masking: &MaskingConfig,
    special: SpecialIds,
    vocab_size: usize,
    object_tokens: &[u32],
    rng: &mut StdRng,
) -> MaskedTokens {
    let first_word = SPECIAL_TOKENS.len() as u32;
    let mut out = MaskedTokens {
        ids: ids.to_vec(),
        targets: vec![None; ids.len()],
    };
    for (i, &id) in ids.iter().enumerate() {
        let rate = if masking.object_word_rate > 0.0 && object_tokens.binary_search(&id).is_ok() {
            masking.object_word_rate
        } else {
            masking.token_rate
        };
        if id < first_word || !rng.random_bool(rate) {
            continue;
        }
        out.targets[i] = Some(id);
        let roll: f64 = rng.random();
        if roll < masking.token_mask_share {
            out.ids[i] = special.mask;
        } else if roll < masking.token_mask_share + masking.token_random_share {
            out.ids[i] = rng.random_range(first_word..vocab_size as u32);
        }
    }
    out
}

/// The text half of a batch: which caption each image gets, masked.
struct TextPart<B: Backend> {
    text: LxmertText<B>,
    token_targets: Tensor<B, 2, Int>,
    token_weights: Tensor<B, 2>,
    matched: Vec<bool>,
}

/// Picks a caption per example (another example's with `mismatch_rate` when matching is on),
/// masks it and lays out `[CLS] caption [SEP]`.
fn text_part<B: Backend>(
    split: &ClassificationSplit,
    indices: &[usize],
    recipe: &BatchRecipe,
    rng: &mut StdRng,
    device: &B::Device,
) -> TextPart<B> {
    let (objectives, masking) = (recipe.objectives, &recipe.masking);
    let (special, vocab_size) = (recipe.special, recipe.vocab_size);
    let n_examples = split.len();
    let mut rows = Vec::with_capacity(indices.len());
    let mut matched = Vec::with_capacity(indices.len());
    for &index in indices {
        let swap = objectives.matching && n_examples > 1 && rng.random_bool(masking.mismatch_rate);
        let source = if swap {
            // Any other image: shift by 1..n so the source is never `index` itself.
            (index + rng.random_range(1..n_examples)) % n_examples
        } else {
            index
        };
        let captions = &split.examples[source].captions;
        let caption = &captions[rng.random_range(0..captions.len())];
        let masked = if objectives.masked_language {
            mask_tokens(
                caption,
                masking,
                special,
                vocab_size,
                &recipe.object_tokens,
                rng,
            )
        } else {
            MaskedTokens {
                ids: caption.clone(),
                targets: vec![None; caption.len()],
            }
        };
        rows.push(masked);
        matched.push(!swap);
    }
    let seq = rows.iter().map(|r| r.ids.len() + 2).max().unwrap_or(2);
    let batch = rows.len();
    let mut tokens = vec![special.pad as i64; batch * seq];
    let mut padding = vec![true; batch * seq];
    let mut targets = vec![0i64; batch * seq];
    let mut weights = vec![0f32; batch * seq];
    for (b, row) in rows.iter().enumerate() {
        let ids = std::iter::once(special.cls)
            .chain(row.ids.iter().copied())
            .chain(std::iter::once(special.sep));
        for (t, id) in ids.enumerate() {
            tokens[b * seq + t] = id as i64;
            padding[b * seq + t] = false;
        }
        for (t, target) in row.targets.iter().enumerate() {
            // Masked-LM counts only on matched pairs: a swapped caption has no image support.
            if let (Some(id), true) = (target, matched[b]) {
                targets[b * seq + t + 1] = *id as i64;
                weights[b * seq + t + 1] = 1.0;
            }
        }
    }
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens, [batch, seq]), device);
    TextPart {
        text: LxmertText {
            segments: tokens.zeros_like(),
            tokens,
            padding: Tensor::from_data(TensorData::new(padding, [batch, seq]), device),
        },
        token_targets: Tensor::from_data(TensorData::new(targets, [batch, seq]), device),
        token_weights: Tensor::from_data(TensorData::new(weights, [batch, seq]), device),
        matched,
    }
}

/// Region masks: each real region is masked with `region_rate`; the losses count on masked
/// regions of matched pairs.
fn region_masks<B: Backend>(
    real: &[Vec<bool>],
    matched: &[bool],
    objectives: Objectives,
    masking: &MaskingConfig,
    rng: &mut StdRng,
    device: &B::Device,
) -> (Tensor<B, 2, Bool>, Tensor<B, 2>) {
    let (batch, regions) = (real.len(), real.first().map_or(0, Vec::len));
    let mut masked = vec![false; batch * regions];
    let mut weights = vec![0f32; batch * regions];
    if objectives.masked_objects {
        for b in 0..batch {
            for r in 0..regions {
                if real[b][r] && rng.random_bool(masking.region_rate) {
                    masked[b * regions + r] = true;
                    weights[b * regions + r] = if matched[b] { 1.0 } else { 0.0 };
                }
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(masked, [batch, regions]), device),
        Tensor::from_data(TensorData::new(weights, [batch, regions]), device),
    )
}

fn matched_tensor<B: Backend>(matched: &[bool], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = matched.iter().map(|&m| m as i64).collect();
    Tensor::from_data(TensorData::new(values, [matched.len()]), device)
}

/// What pretraining needs to build batches, apart from the data.
#[derive(Debug, Clone)]
pub struct BatchRecipe {
    pub objectives: Objectives,
    pub masking: MaskingConfig,
    pub special: SpecialIds,
    pub vocab_size: usize,
    /// Sorted ids of the tokens of words that name object categories
    /// ([`object_tokens`]).
    pub object_tokens: Vec<u32>,
}

/// The sorted, distinct token ids of `words` under `tokenizer` (every piece of each word).
pub fn object_tokens(
    tokenizer: &super::TextTokenizer,
    words: &[String],
) -> Result<Vec<u32>, super::TokenizerError> {
    let first_word = SPECIAL_TOKENS.len() as u32;
    let mut ids = Vec::new();
    for word in words {
        ids.extend(
            tokenizer
                .encode(word, 16)?
                .into_iter()
                .filter(|&id| id >= first_word),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// A batch of raw images (the model's patch encoder makes `n_regions` regions of each).
pub fn pixel_batch<B: Backend>(
    split: &ClassificationSplit,
    indices: &[usize],
    n_regions: usize,
    recipe: &BatchRecipe,
    rng: &mut StdRng,
    device: &B::Device,
) -> PretrainingBatch<B> {
    let text = text_part::<B>(split, indices, recipe, rng, device);
    let vision = PretrainingVision::Pixels(image_batch(
        &split.cache,
        &image_ids(split, indices),
        device,
    ));
    let real = vec![vec![true; n_regions]; indices.len()];
    assemble(text, vision, &real, None, recipe, rng, device)
}

/// A batch of detector regions read from `features` (which must hold every image).
pub fn region_batch<B: Backend>(
    split: &ClassificationSplit,
    features: &RegionFeatures,
    indices: &[usize],
    recipe: &BatchRecipe,
    rng: &mut StdRng,
    device: &B::Device,
) -> Result<PretrainingBatch<B>, RegionFeatureError> {
    let text = text_part::<B>(split, indices, recipe, rng, device);
    let regions = features.batch::<B>(&image_ids(split, indices), device)?;
    let padding: Vec<bool> = regions
        .padding
        .clone()
        .into_data()
        .to_vec()
        .expect("bool data");
    let real: Vec<Vec<bool>> = padding
        .chunks(features.max_boxes())
        .map(|row| row.iter().map(|p| !p).collect())
        .collect();
    let vision = PretrainingVision::Regions(VisualRegions {
        features: regions.features,
        boxes: regions.boxes,
        padding: Some(regions.padding),
    });
    let labels = Some((regions.objects, regions.attributes));
    Ok(assemble(text, vision, &real, labels, recipe, rng, device))
}

fn image_ids(split: &ClassificationSplit, indices: &[usize]) -> Vec<u64> {
    indices
        .iter()
        .map(|&i| split.examples[i].image_id)
        .collect()
}

/// Draws the region masks (after the captions, so both sources draw in the same order) and
/// puts the batch together; `labels` are the detector's object and attribute ids.
#[allow(clippy::too_many_arguments)]
fn assemble<B: Backend>(
    text: TextPart<B>,
    vision: PretrainingVision<B>,
    real: &[Vec<bool>],
    labels: Option<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)>,
    recipe: &BatchRecipe,
    rng: &mut StdRng,
    device: &B::Device,
) -> PretrainingBatch<B> {
    let (region_masked, region_weights) = region_masks::<B>(
        real,
        &text.matched,
        recipe.objectives,
        &recipe.masking,
        rng,
        device,
    );
    let (object_labels, attribute_labels) = labels.unzip();
    PretrainingBatch {
        text: text.text,
        token_targets: text.token_targets,
        token_weights: text.token_weights,
        vision,
        region_masked,
        region_weights,
        object_labels,
        attribute_labels,
        matched: matched_tensor(&text.matched, device),
    }
}
