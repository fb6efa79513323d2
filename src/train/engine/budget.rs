//! The optimisation budget shared by every family.

use serde::{Deserialize, Serialize};

use crate::nn::Precision;
use crate::train::TrainError;

/// Epochs, batch, AdamW and the warm-up/cosine schedule, and the run's seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after the warm-up.
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup_fraction: f64,
    /// The cosine decay ends at `learning_rate * final_lr_ratio`.
    pub final_lr_ratio: f64,
    /// Gradients are clipped to this global L2 norm, if set.
    pub grad_clip: Option<f64>,
    /// Seeds initialisation, shuffling and every random draw of the run.
    pub seed: u64,
    /// The precision of the matrix products (mixed precision: weights and optimizer stay f32).
    /// Configs written before it existed trained in f32.
    #[serde(default)]
    pub precision: Precision,
}

impl Budget {
    /// The defaults of our CPU presets: AdamW at 1e-3, weight decay 0.01, 10% warm-up,
    /// decay to 5% of the peak, gradients clipped to norm 1.
    pub fn new(epochs: usize, batch_size: usize, learning_rate: f64) -> Self {
        Self {
            epochs,
            batch_size,
            learning_rate,
            weight_decay: 0.01,
            warmup_fraction: 0.1,
            final_lr_ratio: 0.05,
            grad_clip: Some(1.0),
            seed: 0,
            precision: Precision::F32,
        }
    }

    /// Checks every field's range, naming the command-line option that sets it.
    pub fn validate(&self) -> Result<(), TrainError> {
        let fail = |message: String| Err(TrainError::Config(message));
        if self.epochs == 0 {
            return fail("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return fail("--batch-size must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return fail(format!(
                "--lr must be a positive number, not {}",
                self.learning_rate
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return fail(format!(
                "--weight-decay must be 0 or more, not {}",
                self.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return fail(format!(
                "--warmup must be in [0, 1), not {}",
                self.warmup_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.final_lr_ratio) {
            return fail(format!(
                "the final learning-rate ratio must be in [0, 1], not {}",
                self.final_lr_ratio
            ));
        }
        if let Some(clip) = self.grad_clip {
            if !(clip.is_finite() && clip > 0.0) {
                return fail(format!("--grad-clip must be positive, not {clip}"));
            }
        }
        Ok(())
    }
}
