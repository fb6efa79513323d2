//! Mixed precision: matrix products in bf16 or f16, everything else in f32.
//!
//! Burn 0.21 has no autocast, and making every tensor low precision
//! (`set_default_float_dtype`) is pure low-precision training: f16 diverges without master
//! weights and loss scaling. This module is the autocast half of real mixed precision, as in
//! PyTorch's `torch.autocast` (Micikevicius et al. 2018, <https://arxiv.org/abs/1710.03740>):
//!
//! - parameters stay f32 (the master weights), and so does the optimizer state;
//! - inside [`autocast`], the layers that carry the FLOPs ([`linear`], [`conv2d`],
//!   [`conv_transpose2d`]) cast their input and weights to the low precision, compute there, and
//!   cast the result back to f32. `Tensor::cast` is differentiable, so the backward pass runs
//!   the same products in low precision and hands f32 gradients to the f32 parameters;
//! - everything else (layer norms, softmax and the attention core, GELU, losses) stays f32, the
//!   ops whose sums and exponentials lose the most in 16 bits.
//!
//! With f16, small gradients underflow; the training engine scales the loss (see
//! `train::engine::mixed_precision`). bf16 has f32's range and needs no scaling.
//!
//! The setting is per thread, like PyTorch's, so parallel runs on other threads each keep
//! their own.

use std::cell::Cell;

use burn::module::Param;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::Linear;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use super::ops::linear_rows;
use super::Backend;

/// The precision of a run's matrix products (`--precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bfloat16 products (f32's range, 8 bits of mantissa): no loss scaling needed.
    Bf16,
    /// IEEE half products (5 exponent bits): trained with dynamic loss scaling.
    F16,
}

impl Precision {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The dtype matrix products run in, `None` for plain f32.
    pub fn compute_dtype(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// Whether gradients need loss scaling to survive this precision.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// Checks that backend `B` computes in this precision on `device`, with a message naming
    /// `--precision` and the backends that do.
    pub fn check_supported<B: Backend>(self, device: &B::Device) -> Result<(), String> {
        let Some(dtype) = self.compute_dtype() else {
            return Ok(());
        };
        if B::supports_dtype(device, DType::from(dtype)) {
            Ok(())
        } else {
            Err(format!(
                "--precision {} is not supported by this backend ({}) on {device:?}; use f32, or \
                 a backend that computes in it: bf16 on --device cpu (Flex) and cuda, f16 on \
                 cpu, cuda and wgpu with Vulkan",
                self.name(),
                B::name(device),
            ))
        }
    }
}

thread_local! {
    static COMPUTE_DTYPE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's matrix products in `precision`, then restores the previous
/// setting (also when `f` panics).
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<FloatDType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE_DTYPE.with(|cell| cell.set(self.0));
        }
    }
    let _restore = Restore(COMPUTE_DTYPE.with(|cell| cell.replace(precision.compute_dtype())));
    f()
}

/// The dtype this thread's matrix products run in, `None` outside [`autocast`] or in f32.
pub fn compute_dtype() -> Option<FloatDType> {
    COMPUTE_DTYPE.with(Cell::get)
}

/// `forward(x)` of `layer` as it is outside autocast; inside, of a copy of `layer` whose
/// weights are cast to the low precision, on `x` cast likewise, with the result cast back to
/// `x`'s dtype. The copy is made per call: a cast is differentiable, so gradients reach the
/// f32 weights.
fn mixed<B: Backend, L, const D: usize, const E: usize>(
    layer: &L,
    x: Tensor<B, D>,
    cast_layer: impl FnOnce(&L, FloatDType) -> L,
    forward: impl Fn(&L, Tensor<B, D>) -> Tensor<B, E>,
) -> Tensor<B, E> {
    match compute_dtype() {
        None => forward(layer, x),
        Some(dtype) => {
            let original = FloatDType::from(x.dtype());
            forward(&cast_layer(layer, dtype), x.cast(dtype)).cast(original)
        }
    }
}

fn cast_param<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    dtype: FloatDType,
) -> Param<Tensor<B, D>> {
    Param::initialized(param.id, param.val().cast(dtype))
}

fn cast_bias<B: Backend>(
    bias: &Option<Param<Tensor<B, 1>>>,
    dtype: FloatDType,
) -> Option<Param<Tensor<B, 1>>> {
    bias.as_ref().map(|bias| cast_param(bias, dtype))
}

/// `layer.forward(x)`, computed in the autocast precision, as one matrix product over all
/// leading dimensions.
///
/// Why flattened: one GEMM instead of a batch of them, and it sidesteps a burn 0.21 fusion bug
/// on the CubeCL backends (wgpu, CUDA): an elementwise op fused into the input of a batched
/// matmul with one row per batch entry (`[b > 1, 1, d]`, every step of KV-cached decoding)
/// gives wrong values. `examples/device_parity.rs` found it; `the_same_from_the_key_value_cache`
/// in its report checks it.
///
/// # Shapes
/// - `x`: `[..., d_input]`
/// - returns: `[..., d_output]`
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let flat: Tensor<B, 2> = x.reshape([rows, dims[D - 1]]);
    let out = mixed(
        layer,
        flat,
        |layer, dtype| Linear {
            weight: cast_param(&layer.weight, dtype),
            bias: cast_bias(&layer.bias, dtype),
        },
        |layer, x| linear_rows(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val())),
    );
    dims[D - 1] = out.dims()[1];
    out.reshape(dims)
}

/// `layer.forward(x)`, computed in the autocast precision.
///
/// # Shapes
/// - `x`: `[batch, channels_in, height, width]`
/// - returns: `[batch, channels_out, height_out, width_out]`
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    mixed(
        layer,
        x,
        |layer, dtype| Conv2d {
            weight: cast_param(&layer.weight, dtype),
            bias: cast_bias(&layer.bias, dtype),
            padding: layer.padding.clone(),
            ..*layer
        },
        |layer, x| crate::nn::ops::conv2d(layer, x),
    )
}

/// `layer.forward(x)`, computed in the autocast precision.
///
/// # Shapes
/// - `x`: `[batch, channels_in, height, width]`
/// - returns: `[batch, channels_out, height_out, width_out]`
pub fn conv_transpose2d<B: Backend>(layer: &ConvTranspose2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    mixed(
        layer,
        x,
        |layer, dtype| ConvTranspose2d {
            weight: cast_param(&layer.weight, dtype),
            bias: cast_bias(&layer.bias, dtype),
            ..*layer
        },
        |layer, x| crate::nn::ops::conv_transpose2d(layer, x),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    type B = Autodiff<Flex>;

    #[test]
    fn an_unsupported_precision_is_refused_by_name() {
        let device = Default::default();
        assert!(Precision::Bf16.check_supported::<Flex>(&device).is_ok());
        assert!(Precision::F16.check_supported::<Flex>(&device).is_ok());
        let refused = Precision::Bf16
            .check_supported::<burn::backend::NdArray>(&Default::default())
            .unwrap_err();
        assert!(
            refused.starts_with("--precision bf16 is not supported"),
            "{refused}"
        );
        assert!(Precision::F32
            .check_supported::<burn::backend::NdArray>(&Default::default())
            .is_ok());
    }

    #[test]
    fn autocast_is_scoped_and_restored() {
        assert_eq!(compute_dtype(), None);
        autocast(Precision::Bf16, || {
            assert_eq!(compute_dtype(), Some(FloatDType::BF16));
            autocast(Precision::F32, || assert_eq!(compute_dtype(), None));
            assert_eq!(compute_dtype(), Some(FloatDType::BF16));
        });
        assert_eq!(compute_dtype(), None);
        let _ = std::panic::catch_unwind(|| autocast(Precision::F16, || panic!("inside")));
        assert_eq!(compute_dtype(), None);
    }

    /// Low-precision products stay within their rounding of the f32 result, come back as
    /// f32, and give the f32 weights f32 gradients close to the f32 ones.
    #[test]
    fn a_linear_layer_under_autocast_matches_f32_within_rounding() {
        let device = Default::default();
        let layer = LinearConfig::new(64, 32).init::<B>(&device);
        let x = Tensor::<B, 3>::random([4, 8, 64], Distribution::Normal(0.0, 1.0), &device);
        let run = |precision| {
            let y = autocast(precision, || linear(&layer, x.clone()));
            assert_eq!(y.dtype(), DType::F32);
            let grads = y.clone().powi_scalar(2).sum().backward();
            let weight_grad = layer.weight.val().grad(&grads).expect("weight gradient");
            assert_eq!(weight_grad.dtype(), DType::F32);
            (y.inner(), weight_grad)
        };
        let (y32, g32) = run(Precision::F32);
        for (precision, tolerance) in [(Precision::Bf16, 2e-2), (Precision::F16, 2e-3)] {
            let (y, g) = run(precision);
            let relative = |a: Tensor<Flex, 3>, b: Tensor<Flex, 3>| {
                let scale = b.clone().abs().max().into_scalar();
                (a - b).abs().max().into_scalar() / scale
            };
            let y_error = relative(y, y32.clone());
            let g_error = relative(g.unsqueeze(), g32.clone().unsqueeze());
            assert!(
                y_error < tolerance && y_error > 0.0,
                "{precision:?}: output error {y_error}"
            );
            assert!(
                g_error < 2.0 * tolerance,
                "{precision:?}: grad error {g_error}"
            );
        }
    }
}
