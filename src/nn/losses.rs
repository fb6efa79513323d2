//! Losses over masked positions, shared by the pretraining objectives.

use crate::nn::{cross_entropy, Backend};
use burn::tensor::{Int, Tensor};

/// Cross-entropy averaged over the positions with weight 1 (weights are 0 or 1). Targets at
/// zero-weight positions are ignored and may hold any valid class, e.g. 0.
///
/// # Shapes
/// - `logits`: `[n, classes]`, `targets`: `[n]`, `weights`: `[n]`
/// - returns: `[1]` (0 when no position counts)
pub fn weighted_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    weights: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let nll = cross_entropy(logits, targets); // [n]
    let count = weights.clone().sum().clamp_min(1.0);
    (nll * weights).sum() / count
}

/// Smooth-L1 (Huber with delta 1) summed over the last dimension, averaged over the rows with
/// weight 1.
///
/// # Shapes
/// - `predicted`, `target`: `[n, d]`, `weights`: `[n]`
/// - returns: `[1]`
pub fn weighted_smooth_l1<B: Backend>(
    predicted: Tensor<B, 2>,
    target: Tensor<B, 2>,
    weights: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let diff = (predicted - target).abs();
    let quadratic = diff.clone().clamp_max(1.0);
    // 0.5 q^2 + (|d| - q): quadratic below 1, linear above.
    let per_value = quadratic.clone().powi_scalar(2) * 0.5 + (diff - quadratic);
    let per_row = per_value.sum_dim(1).squeeze_dim::<1>(1); // [n]
    let count = weights.clone().sum().clamp_min(1.0);
    (per_row * weights).sum() / count
}
