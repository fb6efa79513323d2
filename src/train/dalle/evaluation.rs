//! The DALL-E decoder's held-out cross-entropies, its per-epoch sample grids and loss curve,
//! and `evaluate-dalle`'s scores summarised over sampling seeds.

use std::path::Path;

use crate::nn::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::DalleSplit;
use crate::inference::dalle_eval::{GenerationEvaluation, ImageSetScore, ReferenceScores};
use crate::io::checkpoint::CheckpointError;
use crate::io::image_grid::{write_image_grid, GridRow};
use crate::models::dalle::{generate, Dalle, SamplingConfig};
use crate::train::engine::run_dir::{EpochEvaluation, EpochLog};
use crate::train::report::metrics::MeanStd;
use crate::train::report::plots::{line_chart, Series};
use crate::train::vqvae::{decode_codes, TrainedVqVae};

/// Held-out cross-entropies after an epoch, in nats per token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleEvaluation {
    pub text_loss: f64,
    pub image_loss: f64,
}

impl EpochEvaluation for DalleEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("text CE", self.text_loss), ("image CE", self.image_loss)]
    }
}

/// Mean text and image cross-entropy over every example of `split` (first caption each).
pub fn evaluate_dalle<B: Backend>(
    model: &Dalle<B>,
    split: &DalleSplit,
    batch_size: usize,
    device: &B::Device,
) -> DalleEvaluation {
    // Sums stay on the device: one read for the whole split.
    let mut sums = Tensor::<B, 1>::zeros([2], device);
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let zeros = vec![0; chunk.len()];
        let keep = vec![false; chunk.len()];
        let (t, codes) = split.batch::<B>(&model.config, chunk, &zeros, &keep, device);
        let loss = model.losses(t, codes);
        sums = sums + Tensor::cat(vec![loss.text, loss.image], 0) * chunk.len() as f64;
    }
    let n = split.len().max(1) as f64;
    let sums: Vec<f64> = sums
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64 data");
    DalleEvaluation {
        text_loss: sums[0] / n,
        image_loss: sums[1] / n,
    }
}

/// Held-out examples whose samples are drawn every epoch.
pub const SHOWN_CAPTIONS: usize = 4;
pub const SAMPLES_PER_CAPTION: usize = 6;

/// One row per shown held-out caption, labelled with it: the real image (as the VQ-VAE
/// reconstructs it), then samples.
pub fn write_samples<B: Backend>(
    model: &Dalle<B>,
    vqvae: &TrainedVqVae<B>,
    val: &DalleSplit,
    path: &Path,
    device: &B::Device,
) -> Result<(), CheckpointError> {
    let shown = &val.examples[..val.len().min(SHOWN_CAPTIONS)];
    let texts: Vec<Vec<u32>> = shown
        .iter()
        .flat_map(|example| {
            std::iter::repeat_n(
                model.config.text_ids(&example.captions[0]),
                SAMPLES_PER_CAPTION,
            )
        })
        .collect();
    let sampling = SamplingConfig::recommended();
    let codes = generate(model, &texts, &sampling, device);
    let generated = decode_codes(&vqvae.model, &codes, model.config.grid, device);
    let real = decode_codes(
        &vqvae.model,
        &shown
            .iter()
            .map(|e| e.codes.iter().map(|&c| c as usize).collect())
            .collect::<Vec<_>>(),
        model.config.grid,
        device,
    );
    let rows: Vec<GridRow> = real
        .into_iter()
        .zip(generated.chunks(SAMPLES_PER_CAPTION))
        .zip(shown)
        .map(|((real, samples), example)| {
            let images = std::iter::once(real)
                .chain(samples.iter().cloned())
                .collect();
            let caption = example.raw_captions.first().map_or("", String::as_str);
            GridRow::new(
                format!("held-out image (VQ-VAE), then samples: {caption}"),
                images,
            )
        })
        .collect();
    let size = vqvae.config.image_size;
    write_image_grid(path, &rows, size, (96 / size).max(1) as u32)
}

pub fn write_loss_curve(
    history: &[EpochLog<DalleEvaluation>],
    dir: &Path,
) -> Result<(), CheckpointError> {
    let series = |name: &str, color: usize, value: fn(&EpochLog<DalleEvaluation>) -> f64| Series {
        name: name.to_string(),
        points: history.iter().map(|h| (h.epoch as f64, value(h))).collect(),
        color,
    };
    line_chart(
        &dir.join("curve-loss.png"),
        "DALL-E decoder cross-entropy (nats per token)",
        "epoch",
        "cross-entropy",
        &[
            series("text, train", 0, |h| {
                h.train.get("text").unwrap_or(f64::NAN)
            }),
            series("text, held-out", 1, |h| h.eval.text_loss),
            series("image, train", 2, |h| {
                h.train.get("image").unwrap_or(f64::NAN)
            }),
            series("image, held-out", 3, |h| h.eval.image_loss),
        ],
    )
}

/// `evaluate-dalle` over several sampling seeds: the real-image rows once (they do not depend
/// on the seed), the generated rows as mean ± std over the seeds, and every seed's own scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationOverSeeds {
    #[serde(flatten)]
    pub reference: ReferenceScores,
    pub generated: ScoreSpread,
    pub generated_reranked: Option<ScoreSpread>,
    /// FID of the generated images over seeds (with `--inception`).
    pub generated_fid: Option<MeanStd>,
    pub candidates: usize,
    pub seeds: Vec<u64>,
    pub per_seed: Vec<GenerationEvaluation>,
}

/// Mean ± sample standard deviation of each score over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreSpread {
    pub named_found: MeanStd,
    pub unnamed_per_image: MeanStd,
}

impl ScoreSpread {
    fn of(scores: &[ImageSetScore]) -> Self {
        let values = |f: fn(&ImageSetScore) -> f64| scores.iter().map(f).collect::<Vec<_>>();
        Self {
            named_found: MeanStd::of(&values(|s| s.named_found)),
            unnamed_per_image: MeanStd::of(&values(|s| s.unnamed_per_image)),
        }
    }
}

impl GenerationOverSeeds {
    /// Summarises one evaluation per seed (at least one) of the same decoder and captions.
    pub fn of(per_seed: Vec<GenerationEvaluation>) -> Self {
        let first = per_seed.first().expect("at least one seed").clone();
        let reranked: Option<Vec<ImageSetScore>> =
            per_seed.iter().map(|e| e.generated_reranked).collect();
        Self {
            reference: first.reference,
            generated: ScoreSpread::of(&per_seed.iter().map(|e| e.generated).collect::<Vec<_>>()),
            generated_reranked: reranked.map(|scores| ScoreSpread::of(&scores)),
            generated_fid: per_seed
                .iter()
                .map(|e| e.generated_fid.as_ref().map(|s| s.fid))
                .collect::<Option<Vec<f64>>>()
                .map(|fids| MeanStd::of(&fids)),
            candidates: first.candidates,
            seeds: per_seed.iter().map(|e| e.sampling.seed).collect(),
            per_seed,
        }
    }
}
