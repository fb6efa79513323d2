//! Sampling image tokens from the decoder: batched, with a key/value cache, temperature,
//! top-k, top-p (nucleus) and classifier-free guidance.
//!
//! Guidance (Ho & Salimans 2022, <https://arxiv.org/abs/2207.12598>) runs every caption a second
//! time with the null caption (all pads, which training shows the model with probability
//! `caption_dropout`) and samples from `uncond + g * (cond - uncond)`; `g = 1` is plain
//! conditional sampling.

use crate::nn::backend::BACKEND_RANDOM;
use crate::nn::ops::kth_largest;
use crate::nn::Backend;
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::model::Dalle;

/// How tokens are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Logits are divided by this before top-k / top-p.
    pub temperature: f64,
    /// Keep only the k most likely codes.
    pub top_k: Option<usize>,
    /// Keep the smallest set of codes whose probability reaches p.
    pub top_p: Option<f64>,
    /// Classifier-free guidance scale; 1 disables it.
    pub guidance: f64,
    pub seed: u64,
    /// Always take the most likely code (ignores temperature, top-k, top-p and seed).
    pub greedy: bool,
    /// Reuse keys and values of earlier positions; `false` recomputes the prefix at every step
    /// (for comparison: the results are the same).
    pub use_cache: bool,
}

impl SamplingConfig {
    /// The settings every command samples with unless told otherwise (`generate`,
    /// `evaluate-dalle` and the sample grids of `train-dalle`): the full distribution (no
    /// top-k or top-p), temperature 1, guidance 10, seed 0.
    ///
    /// Chosen by measurement (docs/text-to-image.md): objects are a few tokens among many
    /// background tokens, each object code individually rare, so top-k 32 cut most of them and
    /// left bare backgrounds (a named object found in 0.19 of images against 0.28 without it);
    /// guidance 3 -> 10 raised that to 0.48 while the objects the caption does not name stayed
    /// at the real images' count.
    pub fn recommended() -> Self {
        Self {
            guidance: 10.0,
            ..Self::default()
        }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            guidance: 1.0,
            seed: 0,
            greedy: false,
            use_cache: true,
        }
    }
}

/// Picks one code per row of `logits` (`[rows, n_codes]`), on the device: the result
/// (`[rows, 1]`) feeds the next step without a round trip through the host.
///
/// Sampling is the Gumbel-max trick, `argmax(logits / T + g)` with `g = -ln(-ln u)` and `u`
/// uniform from the backend's generator: the same distribution as drawing from
/// `softmax(logits / T)`, with only elementwise ops and an argmax. Top-k keeps the codes whose
/// logit is at least the k-th largest (codes tied with it are kept too); top-p keeps, in order
/// of decreasing probability, the codes before the running total reaches p and the one that
/// reaches it.
pub fn choose_codes<B: Backend>(
    logits: Tensor<B, 2>,
    config: &SamplingConfig,
) -> Tensor<B, 2, Int> {
    if config.greedy {
        return logits.argmax(1);
    }
    let [rows, n_codes] = logits.dims();
    let device = logits.device();
    let mut logits = logits / config.temperature.max(1e-6);
    if let Some(k) = config.top_k.filter(|&k| k < n_codes) {
        let kth = kth_largest(logits.clone(), k.max(1));
        let below = logits.clone().lower(kth.expand([rows, n_codes]));
        logits = logits.mask_fill(below, f32::NEG_INFINITY);
    }
    if let Some(p) = config.top_p.filter(|&p| p < 1.0) {
        let (sorted, order) = logits.clone().sort_descending_with_indices(1);
        let probabilities = softmax(sorted, 1);
        let before = probabilities.clone().cumsum(1) - probabilities;
        // Back to code order: `order` is a permutation of each row.
        let outside_sorted = before.greater_equal_elem(p).float();
        let outside = Tensor::<B, 2>::zeros([rows, n_codes], &device)
            .scatter(1, order, outside_sorted, IndexingUpdateOp::Add)
            .greater_elem(0.5);
        logits = logits.mask_fill(outside, f32::NEG_INFINITY);
    }
    let uniform = Tensor::<B, 2>::random(
        [rows, n_codes],
        Distribution::Uniform(f32::MIN_POSITIVE as f64, 1.0),
        &device,
    );
    let gumbel = uniform.log().neg().log().neg();
    (logits + gumbel).argmax(1)
}

/// Samples the image codes of one image per entry of `texts`.
///
/// # Shapes
/// - `texts`: `n` rows of `text_len` stream ids ([`super::DalleConfig::text_ids`])
/// - returns: `n` rows of `n_image_tokens` codes (row-major grids)
pub fn generate<B: Backend>(
    model: &Dalle<B>,
    texts: &[Vec<u32>],
    config: &SamplingConfig,
    device: &B::Device,
) -> Vec<Vec<usize>> {
    let c = &model.config;
    let n = texts.len();
    let guided = config.guidance != 1.0;
    let null = c.text_ids(&[]);
    let rows: Vec<&[u32]> = texts
        .iter()
        .map(Vec::as_slice)
        .chain(std::iter::repeat_n(
            null.as_slice(),
            if guided { n } else { 0 },
        ))
        .collect();
    let batch = rows.len();
    let prefix: Vec<i64> = rows
        .iter()
        .flat_map(|row| std::iter::once(c.bos_id() as i64).chain(row.iter().map(|&t| t as i64)))
        .collect();
    let mut input =
        Tensor::<B, 2, Int>::from_data(TensorData::new(prefix, [batch, 1 + c.text_len]), device);
    let (offset, n_codes, n_tokens) = (c.image_offset(), c.n_image_codes, c.n_image_tokens());
    let mut state = model.start(device);
    // The draws come from the backend's generator, seeded here and held for the whole batch so
    // that nothing else draws in between.
    let _random = BACKEND_RANDOM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, config.seed);
    let mut chosen_steps: Vec<Tensor<B, 2, Int>> = Vec::with_capacity(n_tokens);
    let mut logits = if config.use_cache {
        model.forward_cached(input.clone(), &mut state)
    } else {
        model.forward_input(input.clone())
    };
    for step in 0..n_tokens {
        // The image logits of the last position: [batch, n_codes].
        let len = logits.dims()[1];
        let last = logits
            .slice([0..batch, len - 1..len, offset..offset + n_codes])
            .reshape([batch, n_codes]);
        let last = if guided {
            let conditional = last.clone().narrow(0, 0, n);
            let unconditional = last.narrow(0, n, batch - n);
            unconditional.clone() + (conditional - unconditional) * config.guidance
        } else {
            last
        };
        let chosen = choose_codes(last, config); // [n, 1], stays on the device
        chosen_steps.push(chosen.clone());
        if step + 1 == n_tokens {
            break;
        }
        // Guided rows feed the same token to their conditional and unconditional copies.
        let next = if guided {
            Tensor::cat(vec![chosen.clone(), chosen], 0)
        } else {
            chosen
        } + offset as i64;
        logits = if config.use_cache {
            model.forward_cached(next, &mut state)
        } else {
            input = Tensor::cat(vec![input, next], 1);
            model.forward_input(input.clone())
        };
    }
    // The one read of the batch.
    let codes: Vec<i64> = Tensor::cat(chosen_steps, 1)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("i64 codes");
    codes
        .chunks(n_tokens)
        .map(|row| row.iter().map(|&code| code as usize).collect())
        .collect()
}
