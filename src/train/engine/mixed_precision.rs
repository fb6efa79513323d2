//! The training half of mixed precision (the forward half is [`crate::nn::precision`]):
//! dynamic loss scaling for f16, as PyTorch's `GradScaler`.
//!
//! f16 gradients below 2^-24 flush to zero. The loss is multiplied by a large scale before the
//! backward pass so they stay representable, and the f32 gradients are divided by it again
//! before the optimizer sees them. When a scaled gradient overflows (inf or NaN), the step is
//! skipped and the scale halved; after `GROWTH_INTERVAL` clean steps in a row it doubles.
//! Checking for overflow reads one number from the device per step: the only per-step
//! synchronisation an f16 run adds (PyTorch's scaler does the same).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use crate::nn::{AutodiffBackend, Precision};

/// How a run computes its steps: the precision of its products and, in f16, its loss scale.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPrecision {
    pub precision: Precision,
    pub scaler: Option<LossScaler>,
}

impl MixedPrecision {
    /// A fresh run in `precision`.
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            scaler: LossScaler::for_precision(precision),
        }
    }
}

/// Start at 2^10, halve on overflow, double after 2000 clean steps. PyTorch starts at 2^16;
/// our losses sum several objectives, and LXMERT pretraining overflowed at 2^16 and 2^15 in
/// its first two steps (measured on Flex and on wgpu), which a short run cannot afford. 2^10
/// still lifts gradients down to 6e-11 above f16's smallest subnormal.
const INITIAL_SCALE: f64 = 1024.0;
const GROWTH_INTERVAL: usize = 2000;

/// A run's loss scale, saved with each epoch so a resumed run continues with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub clean_steps: usize,
    /// Steps skipped because a gradient overflowed, over the whole run.
    pub skipped_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: INITIAL_SCALE,
            clean_steps: 0,
            skipped_steps: 0,
        }
    }
}

impl LossScaler {
    /// The scaler a run in `precision` needs: `None` unless it computes in f16.
    pub fn for_precision(precision: Precision) -> Option<Self> {
        precision.needs_loss_scaling().then(Self::default)
    }

    /// Divides the gradients of the scaled loss by the scale. `None` when any of them is not
    /// finite: the caller skips the optimizer step, and the scale is halved.
    pub fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        grads: GradientsParams,
    ) -> Option<GradientsParams> {
        struct Unscale<B: AutodiffBackend> {
            grads: GradientsParams,
            factor: f64,
            /// Sum of every gradient: not finite iff some element is not.
            total: Option<Tensor<B::InnerBackend, 1>>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    let grad = grad.mul_scalar(self.factor);
                    let sum = grad.clone().sum();
                    self.total = Some(match self.total.take() {
                        Some(total) => total + sum,
                        None => sum,
                    });
                    self.grads.register(param.id, grad);
                }
            }
        }
        let mut unscale = Unscale::<B> {
            grads,
            factor: 1.0 / self.scale,
            total: None,
        };
        model.visit(&mut unscale);
        let finite = unscale
            .total
            .map(|total| total.into_scalar().elem::<f64>().is_finite())
            .unwrap_or(true);
        if finite {
            self.clean_steps += 1;
            if self.clean_steps == GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean_steps = 0;
            }
            Some(unscale.grads)
        } else {
            self.scale /= 2.0;
            self.clean_steps = 0;
            self.skipped_steps += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type B = Autodiff<Flex>;

    fn gradients(layer: &Linear<B>, loss_scale: f32) -> GradientsParams {
        let x = Tensor::<B, 2>::ones([2, 4], &Default::default());
        let loss = layer.forward(x).sum().mul_scalar(loss_scale);
        GradientsParams::from_grads(loss.backward(), layer)
    }

    #[test]
    fn gradients_come_back_unscaled() {
        let layer = LinearConfig::new(4, 3).init::<B>(&Default::default());
        let mut plain = gradients(&layer, 1.0);
        let mut scaler = LossScaler::default();
        let mut unscaled = scaler
            .unscale(&layer, gradients(&layer, scaler.scale as f32))
            .expect("finite");
        let id = layer.weight.id;
        let a = plain.remove::<Flex, 2>(id).unwrap();
        let b = unscaled.remove::<Flex, 2>(id).unwrap();
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::default());
        assert_eq!(scaler.clean_steps, 1);
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        let layer = LinearConfig::new(4, 3).init::<B>(&Default::default());
        let mut scaler = LossScaler::default();
        assert!(scaler
            .unscale(&layer, gradients(&layer, f32::INFINITY))
            .is_none());
        assert_eq!(scaler.scale, INITIAL_SCALE / 2.0);
        assert_eq!(scaler.skipped_steps, 1);
        scaler.clean_steps = GROWTH_INTERVAL - 1;
        assert!(scaler.unscale(&layer, gradients(&layer, 1.0)).is_some());
        assert_eq!(scaler.scale, INITIAL_SCALE);
    }
}
