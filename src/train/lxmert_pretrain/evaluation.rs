//! Held-out pretraining losses per objective, matching accuracy, and the loss curves.

use std::path::Path;

use crate::nn::Backend;
use burn::tensor::{ElementConversion, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::io::checkpoint::CheckpointError;
use crate::models::lxmert::{LxmertPretraining, Objectives, PretrainingBatch, PretrainingLosses};
use crate::train::engine::run_dir::{EpochEvaluation, EpochLog};
use crate::train::report::plots::{line_chart, line_chart_with_references, Reference, Series};
use crate::train::TrainError;

/// Mean losses of one pass, per objective (`None` when switched off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveLosses {
    pub masked_language: Option<f64>,
    pub object_feature: Option<f64>,
    pub object_label: Option<f64>,
    pub object_attribute: Option<f64>,
    pub matching: Option<f64>,
    /// Absent from results written before the objective existed.
    #[serde(default)]
    pub contrastive: Option<f64>,
    pub total: f64,
}

impl ObjectiveLosses {
    pub const NAMES: [&'static str; 6] = [
        "masked LM",
        "object feature",
        "object label",
        "object attribute",
        "matching",
        "contrastive",
    ];

    pub fn parts(&self) -> [Option<f64>; 6] {
        [
            self.masked_language,
            self.object_feature,
            self.object_label,
            self.object_attribute,
            self.matching,
            self.contrastive,
        ]
    }
}

/// Sums of each objective's loss over the steps of a pass, kept on the device.
struct LossSums<B: Backend> {
    parts: [Option<Tensor<B, 1>>; 6],
    total: Option<Tensor<B, 1>>,
    steps: usize,
}

impl<B: Backend> LossSums<B> {
    fn new() -> Self {
        Self {
            parts: Default::default(),
            total: None,
            steps: 0,
        }
    }

    fn add(&mut self, losses: &PretrainingLosses<B>) {
        let new = [
            &losses.masked_language,
            &losses.object_feature,
            &losses.object_label,
            &losses.object_attribute,
            &losses.matching,
            &losses.contrastive,
        ];
        let add = |sum: Option<Tensor<B, 1>>, value: Tensor<B, 1>| match sum {
            Some(sum) => sum + value,
            None => value,
        };
        for (sum, value) in self.parts.iter_mut().zip(new) {
            if let Some(value) = value {
                *sum = Some(add(sum.take(), value.clone()));
            }
        }
        self.total = Some(add(self.total.take(), losses.total.clone()));
        self.steps += 1;
    }

    fn means(self) -> ObjectiveLosses {
        let n = self.steps.max(1) as f64;
        let mean = |t: Option<Tensor<B, 1>>| t.map(|t| t.into_scalar().elem::<f64>() / n);
        let [a, b, c, d, e, f] = self.parts;
        ObjectiveLosses {
            masked_language: mean(a),
            object_feature: mean(b),
            object_label: mean(c),
            object_attribute: mean(d),
            matching: mean(e),
            contrastive: mean(f),
            total: mean(self.total).unwrap_or(0.0),
        }
    }
}

/// Held-out numbers of one pretraining epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainEvaluation {
    pub losses: ObjectiveLosses,
    /// Held-out accuracy of the matching head on half-swapped pairs (chance: 0.5).
    pub matching_accuracy: Option<f64>,
}

impl EpochEvaluation for PretrainEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut metrics: Vec<(&'static str, f64)> = vec![("loss", self.losses.total)];
        metrics.extend(
            ObjectiveLosses::NAMES
                .iter()
                .zip(self.losses.parts())
                .filter_map(|(name, value)| value.map(|v| (*name, v))),
        );
        if let Some(accuracy) = self.matching_accuracy {
            metrics.push(("matching accuracy", accuracy));
        }
        metrics
    }

    fn continuous_metrics(&self) -> Vec<(&'static str, f64)> {
        let mut metrics = self.metrics();
        metrics.retain(|(name, _)| *name != "matching accuracy");
        metrics
    }
}

/// Held-out losses with masks drawn from a fixed seed (the same every epoch), and the matching
/// head's accuracy.
///
/// `batch` draws the held-out batch of the given example indices.
pub(super) fn evaluate_pretraining<B: Backend>(
    model: &LxmertPretraining<B>,
    n_val: usize,
    batch_size: usize,
    objectives: Objectives,
    mut batch: impl FnMut(&[usize], &mut StdRng) -> Result<PretrainingBatch<B>, TrainError>,
) -> Result<PretrainEvaluation, TrainError> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0e7a);
    let mut sums = LossSums::<B>::new();
    // Counts stay on the device until the end: one read for the whole split.
    let (mut correct, mut total) = (None::<Tensor<B, 1>>, 0usize);
    let indices: Vec<usize> = (0..n_val).collect();
    for chunk in indices.chunks(batch_size) {
        let losses = model.losses(batch(chunk, &mut rng)?, objectives);
        if let Some(hits) = &losses.matching_correct {
            correct = Some(match correct {
                Some(sum) => sum + hits.clone(),
                None => hits.clone(),
            });
            total += chunk.len();
        }
        sums.add(&losses);
    }
    let correct = correct.map_or(0, |sum| sum.into_scalar().elem::<f64>() as usize);
    Ok(PretrainEvaluation {
        losses: sums.means(),
        matching_accuracy: objectives
            .matching
            .then(|| correct as f64 / total.max(1) as f64),
    })
}

pub(super) fn write_curves(
    out_dir: &Path,
    history: &[EpochLog<PretrainEvaluation>],
) -> Result<(), CheckpointError> {
    type Pick = fn(&EpochLog<PretrainEvaluation>) -> [Option<f64>; 6];
    let splits: [(&str, &str, Pick); 2] = [
        ("curve-loss.png", "training", |h| {
            ObjectiveLosses::NAMES.map(|name| h.train.get(name))
        }),
        ("curve-val-loss.png", "held-out", |h| h.eval.losses.parts()),
    ];
    for (file, split, pick) in splits {
        let series: Vec<Series> = ObjectiveLosses::NAMES
            .iter()
            .enumerate()
            .map(|(index, name)| Series {
                name: name.to_string(),
                points: history
                    .iter()
                    .filter_map(|h| pick(h)[index].map(|v| (h.epoch as f64, v)))
                    .collect(),
                color: index,
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        line_chart(
            &out_dir.join(file),
            &format!("LXMERT pretraining: {split} loss per objective"),
            "epoch",
            "loss",
            &series,
        )?;
    }
    let accuracy: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|h| h.eval.matching_accuracy.map(|a| (h.epoch as f64, a)))
        .collect();
    if !accuracy.is_empty() {
        line_chart_with_references(
            &out_dir.join("curve-matching-accuracy.png"),
            "Held-out image-text matching accuracy",
            "epoch",
            "accuracy",
            &[Series {
                name: "matching".into(),
                points: accuracy,
                color: 0,
            }],
            &[Reference {
                name: "chance".into(),
                y: 0.5,
            }],
        )?;
    }
    Ok(())
}
