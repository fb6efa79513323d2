//! Multi-label classification metrics and summary statistics.

use serde::{Deserialize, Serialize};

/// Average precision of one label: the mean, over positive examples, of the precision at the
/// rank where each positive is retrieved (non-interpolated, as scikit-learn's
/// `average_precision_score` without ties). `None` when the label has no positive example.
pub fn average_precision(scores: &[f32], positives: &[bool]) -> Option<f64> {
    let n_positive = positives.iter().filter(|&&p| p).count();
    if n_positive == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        if positives[i] {
            hits += 1;
            sum += hits as f64 / (rank + 1) as f64;
        }
    }
    Some(sum / n_positive as f64)
}

/// Mean average precision over the labels that have at least one positive example.
///
/// `scores` and `labels` are row-major `[n_examples, n_labels]`.
pub fn mean_average_precision(scores: &[f32], labels: &[f32], n_labels: usize) -> f64 {
    let n = scores.len() / n_labels;
    let aps: Vec<f64> = (0..n_labels)
        .filter_map(|l| {
            let column: Vec<f32> = (0..n).map(|i| scores[i * n_labels + l]).collect();
            let positive: Vec<bool> = (0..n).map(|i| labels[i * n_labels + l] > 0.5).collect();
            average_precision(&column, &positive)
        })
        .collect();
    if aps.is_empty() {
        0.0
    } else {
        aps.iter().sum::<f64>() / aps.len() as f64
    }
}

/// Micro-averaged F1 over all (example, label) pairs, predicting a label when its probability
/// is at least `threshold`.
pub fn micro_f1(probabilities: &[f32], labels: &[f32], threshold: f32) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&p, &y) in probabilities.iter().zip(labels) {
        match (p >= threshold, y > 0.5) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    if tp == 0 {
        return 0.0;
    }
    2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
}

/// Mean and sample standard deviation (n - 1); the deviation is 0 for fewer than two values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n.max(1.0);
        let std = if values.len() < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Self { mean, std }
    }
}

impl std::fmt::Display for MeanStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} ± {:.4}", self.mean, self.std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_by_hand() {
        // Ranked: pos, neg, pos, neg -> (1/1 + 2/3) / 2.
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.1], &[true, false, true, false]).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn map_skips_labels_without_positives() {
        // Two examples, three labels; label 2 is never positive and must not count.
        let labels = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let perfect = [0.9, 0.1, 0.0, 0.1, 0.9, 0.0];
        assert!((mean_average_precision(&perfect, &labels, 3) - 1.0).abs() < 1e-12);
        // Label 1 now ranks its negative first: AP 1/2, so mAP (1 + 1/2) / 2.
        let flipped = [0.9, 0.9, 0.0, 0.1, 0.1, 0.0];
        assert!((mean_average_precision(&flipped, &labels, 3) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn micro_f1_by_hand() {
        // tp = 2, fp = 1, fn = 1 -> 4 / 6.
        let f1 = micro_f1(&[0.9, 0.8, 0.6, 0.2], &[1.0, 1.0, 0.0, 1.0], 0.5);
        assert!((f1 - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn mean_std_is_sample_std() {
        let s = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
    }
}
