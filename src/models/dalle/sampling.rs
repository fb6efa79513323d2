//! Sampling image tokens from the decoder: batched, with a key/value cache, temperature,
//! top-k, top-p (nucleus) and classifier-free guidance.
//!
//! Guidance (Ho & Salimans 2022, <https://arxiv.org/abs/2207.12598>) runs every caption a second
//! time with the null caption (all pads, which training shows the model with probability
//! `caption_dropout`) and samples from `uncond + g * (cond - uncond)`; `g = 1` is plain
//! conditional sampling.

use crate::nn::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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
    /// `evaluate-dalle` and the sample grids of `train-dalle`): top-k 32, temperature 1,
    /// guidance 3, seed 0.
    pub fn recommended() -> Self {
        Self {
            top_k: Some(32),
            guidance: 3.0,
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

/// Picks one code from `logits` (one row of image logits).
fn choose(logits: &[f32], config: &SamplingConfig, rng: &mut StdRng) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0
    };
    if config.greedy {
        return argmax();
    }
    // Candidates by decreasing logit (ties: lower code first, as in argmax).
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if let Some(k) = config.top_k {
        order.truncate(k.max(1));
    }
    let temperature = config.temperature.max(1e-6);
    let max = logits[order[0]] as f64;
    let mut weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / temperature).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= sum);
    if let Some(p) = config.top_p {
        let mut cumulative = 0.0;
        let keep = weights
            .iter()
            .position(|&w| {
                cumulative += w;
                cumulative >= p
            })
            .map_or(weights.len(), |i| i + 1);
        order.truncate(keep);
        weights.truncate(keep);
        let sum: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    let mut draw = rng.random::<f64>();
    for (&code, &w) in order.iter().zip(&weights) {
        if draw < w {
            return code;
        }
        draw -= w;
    }
    *order.last().expect("at least one candidate")
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
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut codes = vec![Vec::with_capacity(n_tokens); n];
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
        let values: Vec<f32> = last.into_data().convert::<f32>().to_vec().expect("f32");
        let chosen: Vec<usize> = values
            .chunks(n_codes)
            .map(|row| choose(row, config, &mut rng))
            .collect();
        for (image, &code) in codes.iter_mut().zip(&chosen) {
            image.push(code);
        }
        if step + 1 == n_tokens {
            break;
        }
        // Guided rows feed the same token to their conditional and unconditional copies.
        let next: Vec<i64> = (0..batch)
            .map(|row| (offset + chosen[row % n]) as i64)
            .collect();
        let next = Tensor::<B, 2, Int>::from_data(TensorData::new(next, [batch, 1]), device);
        logits = if config.use_cache {
            model.forward_cached(next, &mut state)
        } else {
            input = Tensor::cat(vec![input, next], 1);
            model.forward_input(input.clone())
        };
    }
    codes
}
