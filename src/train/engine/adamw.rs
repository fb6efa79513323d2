//! The optimizer every family trains with: AdamW (Loshchilov & Hutter, 2019), burn's
//! arithmetic and state, with each parameter's step one fused pass
//! ([`Backend::adamw_step`]) instead of burn's fifteen tensor ops.
//!
//! The state is burn's [`AdamWState`], so optimizer checkpoints read and write as before.

use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::{Tensor, TensorPrimitive};

use crate::nn::backend::AdamWStep;
use crate::nn::Backend;

/// AdamW's hyperparameters besides the learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl FusedAdamW {
    /// PyTorch's and burn's betas (0.9, 0.999) and PyTorch's epsilon (1e-8), with
    /// `weight_decay`.
    pub fn new(weight_decay: f32) -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay,
        }
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        // Zero moments before the first step give burn's first-step moments exactly
        // (`0·β + g·(1 − β)` is `g·(1 − β)`).
        let (time, moment_1, moment_2) = match state {
            Some(state) => (
                state.momentum.time + 1,
                state.momentum.moment_1,
                state.momentum.moment_2,
            ),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let step = AdamWStep {
            learning_rate: lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time,
        };
        let [tensor, grad, moment_1, moment_2] =
            [tensor, grad, moment_1, moment_2].map(|x| x.into_primitive().tensor());
        let update = B::adamw_step(tensor, grad, moment_1, moment_2, &step);
        let [param, moment_1, moment_2] = [update.param, update.moment_1, update.moment_2]
            .map(|x| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x)));
        let momentum = AdaptiveMomentumState::new(time, moment_1, moment_2);
        (param, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::AdamWConfig;
    use burn::tensor::{Distribution, Tensor};

    /// Six steps of [`FusedAdamW`] against burn's `AdamW` from one start, with changing
    /// gradients and learning rates, on backend `B`. Both compute the same f32 ops in the same
    /// order, so they agree to the last few bits; 1e-6 relative allows a backend's division
    /// by a scalar to be a multiplication by its inverse.
    fn matches_burn<B: Backend>(weight_decay: f32) {
        let device = Default::default();
        let burn_adamw = AdamWConfig::new()
            .with_weight_decay(weight_decay)
            .with_epsilon(1e-8)
            .build();
        let fused = FusedAdamW::new(weight_decay);
        // Over four chunks, so that the parallel split and the remainder are both covered.
        let start = Tensor::<B, 2>::random([300, 230], Distribution::Normal(0.0, 1.0), &device);
        let (mut ours, mut theirs) = (start.clone(), start);
        let (mut our_state, mut their_state) = (None, None);
        for step in 0..6 {
            let grad = Tensor::<B, 2>::random([300, 230], Distribution::Normal(0.0, 0.1), &device);
            let lr = 1e-3 * (step + 1) as f64;
            (ours, our_state) =
                SimpleOptimizer::<B>::step(&fused, lr, ours, grad.clone(), our_state);
            (theirs, their_state) = burn_adamw.step(lr, theirs, grad, their_state);
        }
        let scale = theirs.clone().abs().max().into_scalar().to_f32_lossy();
        let gap = (ours.clone() - theirs.clone())
            .abs()
            .max()
            .into_scalar()
            .to_f32_lossy();
        assert!(
            gap <= 1e-6 * scale,
            "parameters differ by {gap} (scale {scale})"
        );
        let (ours, theirs) = (our_state.unwrap().momentum, their_state.unwrap().momentum);
        assert_eq!(ours.time, theirs.time);
        for (name, a, b) in [
            ("first moment", ours.moment_1, theirs.moment_1),
            ("second moment", ours.moment_2, theirs.moment_2),
        ] {
            let scale = b.clone().abs().max().into_scalar().to_f32_lossy();
            let gap = (a - b).abs().max().into_scalar().to_f32_lossy();
            assert!(
                gap <= 1e-6 * scale,
                "{name}s differ by {gap} (scale {scale})"
            );
        }
    }

    trait Lossy {
        fn to_f32_lossy(self) -> f32;
    }
    impl<E: burn::tensor::ElementConversion> Lossy for E {
        fn to_f32_lossy(self) -> f32 {
            self.elem()
        }
    }

    #[test]
    fn the_fused_cpu_step_is_burns_adamw() {
        matches_burn::<burn::backend::Flex>(0.01);
        matches_burn::<burn::backend::Flex>(0.0);
    }

    #[test]
    fn the_generic_step_is_burns_adamw() {
        matches_burn::<burn::backend::NdArray>(0.01);
    }
}
