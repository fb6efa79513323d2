//! Tensor-level entry points to [`Backend`]'s fused ops, as the models call them.

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::PaddingConfig2d;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};

use super::backend::ConvGeometry;
use super::Backend;

/// `layer.forward(x)`: as [`conv2d_as_gemm`] on backends that choose it
/// ([`Backend::CONV_AS_GEMM`]) for f32 inputs with symmetric padding, dilation 1 and one
/// group; burn's convolution otherwise.
///
/// # Shapes
/// - `x`: `[batch, channels_in, height, width]`
/// - returns: `[batch, channels_out, height_out, width_out]`
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, channels, height, width] = x.dims();
    let padding = match layer.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    };
    let weight = layer.weight.val();
    let simple = layer.dilation == [1, 1] && layer.groups == 1;
    let f32s = x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    match padding {
        Some(padding) if B::CONV_AS_GEMM && simple && f32s => {
            let geometry = ConvGeometry {
                channels,
                input: [height, width],
                kernel: layer.kernel_size,
                stride: layer.stride,
                padding,
            };
            conv2d_as_gemm(x, weight, layer.bias.as_ref().map(|b| b.val()), geometry)
        }
        _ => layer.forward(x),
    }
}

/// `layer.forward(x)`: as [`conv_transpose2d_as_gemm`] on backends that choose it
/// ([`Backend::CONV_AS_GEMM`]) for f32 inputs with dilation 1, one group and an output padding
/// below the stride; burn's transposed convolution otherwise.
///
/// # Shapes
/// - `x`: `[batch, channels_in, height, width]`
/// - returns: `[batch, channels_out, height_out, width_out]`
pub fn conv_transpose2d<B: Backend>(layer: &ConvTranspose2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, height, width] = x.dims();
    let weight = layer.weight.val();
    let simple = layer.dilation == [1, 1]
        && layer.groups == 1
        && (0..2).all(|d| layer.padding_out[d] < layer.stride[d]);
    let f32s = x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    if !(B::CONV_AS_GEMM && simple && f32s) {
        return layer.forward(x);
    }
    let input = [height, width];
    let geometry = ConvGeometry {
        channels: weight.dims()[1],
        input: [0, 1].map(|d| {
            (input[d] - 1) * layer.stride[d] + layer.kernel_size[d] + layer.padding_out[d]
                - 2 * layer.padding[d]
        }),
        kernel: layer.kernel_size,
        stride: layer.stride,
        padding: layer.padding,
    };
    conv_transpose2d_as_gemm(x, weight, layer.bias.as_ref().map(|b| b.val()), geometry)
}

/// A transposed convolution as one matrix product and col2im, on any backend, as one graph
/// node; plus the bias. `geometry` describes the convolution it is the adjoint of: its
/// `input` is this output's size.
///
/// # Shapes
/// - `x`: `[batch, channels_in, h, w]` with `(h, w) = geometry.output()`
/// - `weight`: `[channels_in, geometry.channels, kernel_h, kernel_w]`, `bias`: `[channels_out]`
/// - returns: `[batch, geometry.channels, geometry.input[0], geometry.input[1]]`
pub fn conv_transpose2d_as_gemm<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    geometry: ConvGeometry,
) -> Tensor<B, 4> {
    gemm_with_bias(B::conv_transpose2d_gemm, x, weight, bias, geometry)
}

/// A convolution as one matrix product over its column matrix (im2col), on any backend, as
/// one graph node; plus the bias.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]` (as `geometry` says)
/// - `weight`: `[out_channels, channels, kernel_h, kernel_w]`, `bias`: `[out_channels]`
/// - returns: `[batch, out_channels, out_h, out_w]`
pub fn conv2d_as_gemm<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    geometry: ConvGeometry,
) -> Tensor<B, 4> {
    gemm_with_bias(B::conv2d_gemm, x, weight, bias, geometry)
}

/// `op(x, weight)` on the primitives, then the per-channel bias.
fn gemm_with_bias<B: Backend>(
    op: fn(FloatTensor<B>, FloatTensor<B>, ConvGeometry) -> FloatTensor<B>,
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    geometry: ConvGeometry,
) -> Tensor<B, 4> {
    let out = op(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        geometry,
    );
    let out = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(out));
    match bias {
        Some(bias) => add_channel_bias(out, bias),
        None => out,
    }
}

/// `x + bias` per channel, as one value per `[batch · channel]` row: a shape the CPU backend
/// adds in one vectorised pass (a `[1, c, 1, 1]` bias took its element-by-element strided
/// path, a tenth of the VQ-VAE's step).
fn add_channel_bias<B: Backend>(x: Tensor<B, 4>, bias: Tensor<B, 1>) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let rows = bias
        .reshape([1, channels])
        .repeat_dim(0, batch)
        .reshape([batch * channels, 1]);
    (x.reshape([batch * channels, height * width]) + rows).reshape([batch, channels, height, width])
}

/// `x · weight + bias` on rows (a linear layer), as one op and one graph node
/// ([`Backend::linear_rows`]).
///
/// # Shapes
/// - `x`: `[rows, d_input]`; `weight`: `[d_input, d_output]`; `bias`: `[d_output]`
/// - returns: `[rows, d_output]`
pub fn linear_rows<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let out = B::linear_rows(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.map(|bias| bias.into_primitive().tensor()),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Exact GELU, `x·Φ(x)` (PyTorch's default `nn.GELU()`), as one op and one graph node.
///
/// # Shapes
/// - `x`: any; returns the same shape
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = x.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::gelu_exact(x)))
}

/// The `k`-th largest entry of each row (`k` from 1), as [`Backend::kth_largest`]: top-k
/// sampling's threshold.
///
/// # Shapes
/// - `x`: `[rows, n]`, `1 <= k <= n`; returns `[rows, 1]`
pub fn kth_largest<B: Backend>(x: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let x = x.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::kth_largest(x, k)))
}

/// `[a, b, c, d]` → `[a, c, b, d]`, contiguous (attention's head split and merge), as one op
/// and one graph node.
pub fn swap_middle_dims<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = x.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::swap_middle_dims(x)))
}

/// Per-row cross-entropy `−log softmax(logits)[i, targets[i]]`, as one op and one graph node
/// (burn's `log_softmax` + `gather` record six).
///
/// # Shapes
/// - `logits`: `[n, classes]`, `targets`: `[n]` (each in `0..classes`)
/// - returns: `[n]`
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let logits = logits.into_primitive().tensor();
    let nll = B::cross_entropy(logits, targets.into_primitive());
    Tensor::from_primitive(TensorPrimitive::Float(nll))
}
