//! The backend traits vislang's models are generic over: burn's, plus the few fused ops whose
//! decomposed form was the bottleneck of a training step, each with a hand-written backward.
//!
//! - [`Backend::fused_attention`]. Under `Autodiff`, burn 0.21 runs attention as a chain of a
//!   dozen differentiable ops (matmul, scale, mask fills, a decomposed softmax, matmul), each
//!   keeping its own `[batch, heads, seq_q, seq_k]` tensor for the backward pass. One node
//!   instead ([`Backend::attention_training_forward`], [`Backend::attention_backward`]): by
//!   default the forward keeps only the attention probabilities (on the CPU, two numbers per
//!   query row, from which the block kernel recomputes them), and the backward is the
//!   textbook one,
//!
//!   ```text
//!   dV = Pᵀ dO      dP = dO Vᵀ      dS = P ⊙ (dP − rowsum(dP ⊙ P))
//!   dQ = dS K · s   dK = dSᵀ Q · s
//!   ```
//!
//!   Masks come in as one additive bias (0 or a large negative number), built once per
//!   forward by [`crate::nn::AttentionMask`] and broadcast over batch and heads. By default
//!   the probabilities and their backward are [`Backend::softmax_with_bias`] and
//!   [`Backend::softmax_backward`]; the CPU backend runs the whole node a block of query rows
//!   at a time, skipping the keys the mask hides. The heads are split and merged by
//!   [`Backend::swap_middle_dims`].
//! - [`Backend::gelu_exact`]: `x·Φ(x)` as one node (burn's autodiff records it as one too, but
//!   Flex evaluates it with a scalar `erf` per element).
//! - [`Backend::layer_norm_fused`]: layer normalisation as one node whose backward is one pass
//!   per row; burn's autodiff records it as about nine ops.
//! - [`Backend::cross_entropy`]: `−log softmax(logits)[target]` per row as one node that keeps
//!   each row's max and log-sum, with the backward `softmax − onehot`; burn records
//!   log-softmax and gather as six.
//! - [`Backend::conv2d_gemm`]: a convolution as a column matrix (im2col) and one matrix
//!   product, whose backward is two matrix products and the columns' adjoint (col2im):
//!   [`Backend::conv2d_weight_gradient`] and [`Backend::conv2d_input_gradient`]. On Flex,
//!   burn's convolution backward copied strided views element by element (a fifth of the
//!   classifier's step); backends opt in with [`Backend::CONV_AS_GEMM`]. The same for
//!   [`Backend::conv_transpose2d_gemm`], the adjoint. The node keeps its input, not its
//!   columns (9x the input for a 3x3 kernel), and Flex builds each image's columns in a
//!   buffer of the thread's own, forward and backward, so no `[batch, c·kh·kw, h·w]` tensor
//!   exists.
//!
//! - [`Backend::linear_rows`]: a linear layer on rows, `x · W + b`, as one node whose
//!   backward is two matrix products ([`Backend::matmul_2d`]) and the bias's column sums. On
//!   Flex each product is one `gemm` call into a buffer it writes once, the bias added by
//!   starting from it: burn-flex's matmul zero-fills its output and then copies it to
//!   realign it (together 9% of the joint classifier's step at batch 128), and the bias is a
//!   separate broadcast add.
//!
//! Every method has a default built from burn's ops, which every backend uses; the nodes are
//! in [`super::autodiff_ops`] (for `Autodiff<B>`), and the CPU backend's one-pass kernels in
//! [`super::flex_ops`].

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorMetadata;

pub use super::cpu_kernels::{AdamWStep, ConvGeometry};

/// Held while a backend's process-wide random generator is reseeded and drawn from (dropout,
/// dead-code re-seeding, sampling), and while a model is initialised, so that work on other
/// threads cannot draw in between and change the result of a seed.
pub static BACKEND_RANDOM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The inputs of one attention call, as its backward pass needs them.
#[derive(Debug, Clone)]
pub struct AttentionInputs<B: burn::tensor::backend::Backend> {
    /// `[batch, heads, seq_q, d_head]`
    pub query: FloatTensor<B>,
    /// `[batch, heads, seq_k, d_head]`
    pub key: FloatTensor<B>,
    /// `[batch, heads, seq_k, d_value]`
    pub value: FloatTensor<B>,
    /// Broadcastable to `[batch, heads, seq_q, seq_k]`.
    pub bias: Option<FloatTensor<B>>,
    pub scale: f64,
}

/// What [`Backend::attention_training_forward`] returns.
#[derive(Debug, Clone)]
pub struct AttentionForward<B: burn::tensor::backend::Backend> {
    /// `[batch, heads, seq_q, d_value]`
    pub output: FloatTensor<B>,
    pub saved: AttentionSaved<B>,
}

/// What the attention node keeps for its backward pass besides the inputs.
#[derive(Debug, Clone)]
pub enum AttentionSaved<B: burn::tensor::backend::Backend> {
    /// `[batch, heads, seq_q, seq_k]`: the generic backward reads them.
    Probabilities(FloatTensor<B>),
    /// `[batch, heads, seq_q, 2]`: each row's max and `log Σ exp(x − max)`, from which the
    /// CPU's block kernel recomputes the probabilities a block at a time.
    RowStatistics(FloatTensor<B>),
}

/// The gradients of one attention call's inputs, each shaped as its input.
#[derive(Debug, Clone)]
pub struct AttentionGradients<B: burn::tensor::backend::Backend> {
    pub query: FloatTensor<B>,
    pub key: FloatTensor<B>,
    pub value: FloatTensor<B>,
}

/// A parameter and its two AdamW moments after [`Backend::adamw_step`], each shaped as the
/// parameter.
#[derive(Debug, Clone)]
pub struct AdamWUpdate<B: burn::tensor::backend::Backend> {
    pub param: FloatTensor<B>,
    pub moment_1: FloatTensor<B>,
    pub moment_2: FloatTensor<B>,
}

/// A burn backend with vislang's fused ops.
pub trait Backend: burn::tensor::backend::Backend {
    /// `softmax(q kᵀ · scale + bias) v`.
    ///
    /// # Shapes
    /// - `inputs`: see [`AttentionInputs`] (bias batch and heads may be 1)
    /// - returns: `[batch, heads, seq_q, d_value]`
    fn fused_attention(inputs: AttentionInputs<Self>) -> FloatTensor<Self> {
        generic::fused_attention::<Self>(inputs)
    }

    /// [`Self::fused_attention`] under autodiff: the output, and what
    /// [`Self::attention_backward`] needs besides the inputs. By default that is the
    /// probabilities `[batch, heads, seq_q, seq_k]`; the CPU's block kernel keeps two numbers
    /// a row instead and recomputes them.
    fn attention_training_forward(inputs: AttentionInputs<Self>) -> AttentionForward<Self> {
        generic::attention_training_forward::<Self>(inputs)
    }

    /// The gradients of [`Self::fused_attention`] for the output's gradient `grad_out`
    /// (`[batch, heads, seq_q, d_head]`), given what [`Self::attention_training_forward`]
    /// `saved`:
    ///
    /// ```text
    /// dV = Pᵀ dO      dP = dO Vᵀ      dS = P ⊙ (dP − rowsum(dP ⊙ P))
    /// dQ = dS K · s   dK = dSᵀ Q · s
    /// ```
    fn attention_backward(
        inputs: AttentionInputs<Self>,
        saved: AttentionSaved<Self>,
        grad_out: FloatTensor<Self>,
    ) -> AttentionGradients<Self> {
        generic::attention_backward::<Self>(inputs, saved, grad_out)
    }

    /// `softmax(scores + bias)` over the last dimension: the attention probabilities.
    ///
    /// # Shapes
    /// - `scores`: `[batch, heads, seq_q, seq_k]`; `bias`: broadcastable to it
    /// - returns: the shape of `scores`
    fn softmax_with_bias(
        scores: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        generic::softmax_with_bias::<Self>(scores, bias)
    }

    /// The gradient of softmax's input from its output `p` and the output's gradient:
    /// `p ⊙ (grad − rowsum(grad ⊙ p))`, rows along the last dimension.
    fn softmax_backward(p: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::softmax_backward::<Self>(p, grad)
    }

    /// The `k`-th largest entry of each row (`k` from 1): top-k sampling's threshold. burn's
    /// `topk` sorts every row in full, a third of cached generation's time on the CPU.
    ///
    /// # Shapes
    /// - `x`: `[rows, n]`, `1 <= k <= n`; returns `[rows, 1]`
    fn kth_largest(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        generic::kth_largest::<Self>(x, k)
    }

    /// `[a, b, c, d]` → `[a, c, b, d]`, laid out contiguously: attention's head split
    /// (`[batch, seq, heads, d_head]` → `[batch, heads, seq, d_head]`) and merge. A plain
    /// swap is a strided view that the next reshape, forward or backward, copies element by
    /// element on the CPU backend; this copies `d`-long runs once, and its backward is itself.
    fn swap_middle_dims(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_swap_dims(x, 1, 2)
    }

    /// Exact GELU, `x·Φ(x) = x/2 · (1 + erf(x/√2))`, as PyTorch's default `nn.GELU()`.
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `grad · (Φ(x) + x·φ(x))`: the gradient of [`Self::gelu_exact`] at `x`.
    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }

    /// `x · weight + bias`: a linear layer applied to each row.
    ///
    /// # Shapes
    /// - `x`: `[rows, d_input]`; `weight`: `[d_input, d_output]`; `bias`: `[d_output]`
    /// - returns: `[rows, d_output]`
    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        generic::linear_rows::<Self>(x, weight, bias)
    }

    /// `lhs · rhs` for two matrices; either may be a transposed view.
    ///
    /// # Shapes
    /// - `lhs`: `[m, k]`, `rhs`: `[k, n]`; returns `[m, n]`
    fn matmul_2d(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// Whether [`crate::nn::ops::conv2d`] runs convolutions as [`Self::conv2d_gemm`] (chosen
    /// by measurement per backend) rather than burn's convolution.
    const CONV_AS_GEMM: bool = false;

    /// The convolution of `x` with `weight` (no bias, dilation 1, one group) as one matrix
    /// product per image, the weights against the image's column matrix (im2col).
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]` (as `geometry` says)
    /// - `weight`: `[out_channels, channels, kernel_h, kernel_w]`
    /// - returns: `[batch, out_channels, out_h, out_w]`
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        generic::conv2d_gemm::<Self>(x, weight, geometry)
    }

    /// A convolution's weight gradient, `Σ_b rows[b] · im2col(x_b)ᵀ` (`rows` the output's
    /// gradient); with `rows` a transposed convolution's input and `x` its output's gradient,
    /// that one's.
    ///
    /// # Shapes
    /// - `rows`: `[batch, m, out_h·out_w]`; `x`: `[batch, channels, height, width]`
    /// - returns: `[m, channels·kernel_h·kernel_w]`
    fn conv2d_weight_gradient(
        rows: FloatTensor<Self>,
        x: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        generic::conv2d_weight_gradient::<Self>(rows, x, geometry)
    }

    /// col2im(`weightᵀ · rows[b]`) for every image: a convolution's input gradient (`rows`
    /// its output's gradient), or a transposed convolution (`rows` its input).
    ///
    /// # Shapes
    /// - `weight`: `[m, channels·kernel_h·kernel_w]`; `rows`: `[batch, m, out_h·out_w]`
    /// - returns: `[batch, channels, height, width]`
    fn conv2d_input_gradient(
        weight: FloatTensor<Self>,
        rows: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        generic::conv2d_input_gradient::<Self>(weight, rows, geometry)
    }

    /// The transposed convolution of `x` with `weight` (no bias, dilation 1, one group): the
    /// convolution's input gradient ([`Self::conv2d_input_gradient`]) with `x` as the
    /// output's gradient, for the geometry `geometry` describes (its `input` is the output's
    /// size, its `channels` the output channels).
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, h, w]`, `(h, w) = geometry.output()`
    /// - `weight`: `[channels_in, geometry.channels, kernel_h, kernel_w]`
    /// - returns: `[batch, geometry.channels, geometry.input[0], geometry.input[1]]`
    fn conv_transpose2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let [batch, channels_in, height, width] = x.shape().dims::<4>();
        let x = Self::float_reshape(x, [batch, channels_in, height * width].into());
        let weight = Self::float_reshape(weight, [channels_in, geometry.column_rows()].into());
        Self::conv2d_input_gradient(weight, x, geometry)
    }

    /// Layer normalisation over the last dimension, `(x − mean) / sqrt(var + ε) · γ + β` with
    /// the biased variance (PyTorch's `nn.LayerNorm`).
    ///
    /// # Shapes
    /// - `x`: `[..., d]`; `gamma`, `beta`: `[d]`
    /// - returns: the shape of `x`
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), epsilon)
    }

    /// The gradients of [`Self::layer_norm_fused`] at `x` for the output's gradient `grad`:
    /// `(dx, dγ, dβ)`. With `x̂ = (x − mean) · r`, `r = 1 / sqrt(var + ε)` and `g = grad ⊙ γ`
    /// per row, `dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))`; `dγ` sums `grad ⊙ x̂` and `dβ`
    /// sums `grad` over the rows.
    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3] {
        generic::layer_norm_backward::<Self>(x, gamma, grad, epsilon)
    }

    /// Per-row cross-entropy `−log softmax(logits)[i, targets[i]]`.
    ///
    /// # Shapes
    /// - `logits`: `[n, classes]`, `targets`: `[n]` (each in `0..classes`)
    /// - returns: `[n]`
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        Self::cross_entropy_forward(logits, targets).0
    }

    /// [`Self::cross_entropy`] and what its backward needs of each row: `[n, 2]` statistics,
    /// the row's max and `log Σ exp(logits − max)` (kept apart: `logits − lse` would lose the
    /// low bits of a large log-sum-exp).
    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        generic::cross_entropy_forward::<Self>(logits, targets)
    }

    /// The logits' gradient of [`Self::cross_entropy`] times `grad` (`[n]`), from the rows'
    /// `statistics` (`[n, 2]`, see [`Self::cross_entropy_forward`]):
    /// `grad[i] · (softmax(logits[i]) − onehot(targets[i]))`.
    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::cross_entropy_backward::<Self>(logits, statistics, targets, grad)
    }

    /// One AdamW step (see [`AdamWStep`]) on `param` for the gradient `grad`, from the
    /// moments of the steps before (zeros before the first):
    ///
    /// ```text
    /// m = m·β₁ + g·(1 − β₁)          v = v·β₂ + g²·(1 − β₂)
    /// p = p·(1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
    /// ```
    ///
    /// # Shapes
    /// - `param`, `grad`, `moment_1`, `moment_2`: one shape
    /// - returns: each of [`AdamWUpdate`]'s tensors in that shape
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: &AdamWStep,
    ) -> AdamWUpdate<Self> {
        generic::adamw_step::<Self>(param, grad, moment_1, moment_2, step)
    }
}

/// The default versions of [`Backend`]'s ops, built from burn's; also what a backend's own
/// version falls back to for inputs its kernels do not take.
pub(crate) mod generic {
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::{
        AttentionModuleOptions, ConvTransposeOptions, FloatTensor, IntTensor, UnfoldOptions,
    };
    use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorMetadata, TensorPrimitive};

    use super::{
        AdamWStep, AdamWUpdate, AttentionForward, AttentionGradients, AttentionInputs,
        AttentionSaved, ConvGeometry,
    };

    fn float<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(x))
    }

    fn primitive<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
        x.into_primitive().tensor()
    }

    pub fn softmax_with_bias<B: Backend>(
        scores: FloatTensor<B>,
        bias: Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        let scores = match bias {
            Some(bias) => B::float_add(scores, bias),
            None => scores,
        };
        let last = scores.shape().num_dims() - 1;
        B::softmax(scores, last)
    }

    pub fn softmax_backward<B: Backend>(p: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
        let last = p.shape().num_dims() - 1;
        let row = B::float_sum_dim(B::float_mul(grad.clone(), p.clone()), last);
        B::float_mul(p, B::float_sub(grad, row))
    }

    pub fn linear_rows<B: Backend>(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        let out = B::float_matmul(x, weight);
        match bias {
            Some(bias) => {
                let d_output = bias.shape()[0];
                B::float_add(out, B::float_reshape(bias, [1, d_output].into()))
            }
            None => out,
        }
    }

    pub fn kth_largest<B: Backend>(x: FloatTensor<B>, k: usize) -> FloatTensor<B> {
        let x = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x));
        x.topk(k, 1).narrow(1, k - 1, 1).into_primitive().tensor()
    }

    /// `[rows, n]` → `[n]`: the sum of the rows (a bias's gradient).
    pub fn column_sums<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        let n = x.shape()[1];
        B::float_reshape(B::float_sum_dim(x, 0), [n].into())
    }

    /// burn's attention op, with the bias expanded to the scores' shape as it requires.
    pub fn fused_attention<B: Backend>(inputs: AttentionInputs<B>) -> FloatTensor<B> {
        let [batch, heads, seq_q, _] = inputs.query.shape().dims::<4>();
        let seq_k = inputs.key.shape().dims::<4>()[2];
        let bias = inputs
            .bias
            .map(|bias| B::float_expand(bias, [batch, heads, seq_q, seq_k].into()));
        let options = AttentionModuleOptions {
            scale: Some(inputs.scale),
            ..Default::default()
        };
        B::attention(inputs.query, inputs.key, inputs.value, None, bias, options)
    }

    /// `P = softmax(q kᵀ · scale + bias)`.
    fn attention_probabilities<B: super::Backend>(inputs: &AttentionInputs<B>) -> FloatTensor<B> {
        let scores = B::float_matmul(
            B::float_mul_scalar(inputs.query.clone(), inputs.scale.into()),
            B::float_transpose(inputs.key.clone()),
        );
        B::softmax_with_bias(scores, inputs.bias.clone())
    }

    /// The output `P v`, keeping the probabilities `P` for the backward pass.
    pub fn attention_training_forward<B: super::Backend>(
        inputs: AttentionInputs<B>,
    ) -> AttentionForward<B> {
        let probabilities = attention_probabilities::<B>(&inputs);
        AttentionForward {
            output: B::float_matmul(probabilities.clone(), inputs.value),
            saved: AttentionSaved::Probabilities(probabilities),
        }
    }

    /// The textbook backward from the kept probabilities (recomputed if none were kept).
    pub fn attention_backward<B: super::Backend>(
        inputs: AttentionInputs<B>,
        saved: AttentionSaved<B>,
        grad_out: FloatTensor<B>,
    ) -> AttentionGradients<B> {
        let probabilities = match saved {
            AttentionSaved::Probabilities(probabilities) => probabilities,
            AttentionSaved::RowStatistics(_) => attention_probabilities::<B>(&inputs),
        };
        let AttentionInputs {
            query,
            key,
            value,
            scale,
            ..
        } = inputs;
        let grad_value =
            B::float_matmul(B::float_transpose(probabilities.clone()), grad_out.clone());
        let grad_p = B::float_matmul(grad_out, B::float_transpose(value)); // [b, h, sq, sk]
        let grad_scores = B::softmax_backward(probabilities, grad_p);
        let grad_query = B::float_matmul(grad_scores.clone(), key);
        let grad_key = B::float_matmul(B::float_transpose(grad_scores), query);
        AttentionGradients {
            query: B::float_mul_scalar(grad_query, scale.into()),
            key: B::float_mul_scalar(grad_key, scale.into()),
            value: grad_value,
        }
    }

    pub fn conv2d_gemm<B: super::Backend>(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        geometry: ConvGeometry,
    ) -> FloatTensor<B> {
        let batch = x.shape()[0];
        let out_channels = weight.shape()[0];
        let [out_h, out_w] = geometry.output();
        let columns = conv2d_columns::<B>(x, geometry); // [b, K, P]
        let weight = B::float_reshape(weight, [1, out_channels, geometry.column_rows()].into());
        let out = B::float_matmul(weight, columns); // [b, co, P]
        B::float_reshape(out, [batch, out_channels, out_h, out_w].into())
    }

    pub fn conv2d_weight_gradient<B: super::Backend>(
        rows: FloatTensor<B>,
        x: FloatTensor<B>,
        geometry: ConvGeometry,
    ) -> FloatTensor<B> {
        let m = rows.shape()[1];
        let columns = B::float_transpose(conv2d_columns::<B>(x, geometry)); // [b, P, K]
        let summed = B::float_sum_dim(B::float_matmul(rows, columns), 0);
        B::float_reshape(summed, [m, geometry.column_rows()].into())
    }

    pub fn conv2d_input_gradient<B: super::Backend>(
        weight: FloatTensor<B>,
        rows: FloatTensor<B>,
        geometry: ConvGeometry,
    ) -> FloatTensor<B> {
        let [m, k] = weight.shape().dims::<2>();
        let weight = B::float_reshape(B::float_transpose(weight), [1, k, m].into());
        let columns = B::float_matmul(weight, rows); // [b, K, P]
        conv2d_columns_backward::<B>(columns, geometry)
    }

    fn conv2d_columns<B: Backend>(x: FloatTensor<B>, g: ConvGeometry) -> FloatTensor<B> {
        B::unfold4d(x, g.kernel, UnfoldOptions::new(g.stride, g.padding, [1, 1]))
    }

    /// col2im as the transposed convolution with the identity kernel (im2col is the
    /// convolution with it).
    fn conv2d_columns_backward<B: Backend>(
        columns: FloatTensor<B>,
        g: ConvGeometry,
    ) -> FloatTensor<B> {
        let batch = columns.shape()[0];
        let [out_h, out_w] = g.output();
        let rows = g.column_rows();
        let device = B::float_device(&columns);
        let identity = Tensor::<B, 2>::eye(rows, &device)
            .reshape([rows, g.channels, g.kernel[0], g.kernel[1]])
            .cast(columns.dtype());
        let columns = B::float_reshape(columns, [batch, rows, out_h, out_w].into());
        // What the last stride step leaves over, so that the output has the input's size.
        let padding_out =
            [0, 1].map(|d| (g.input[d] + 2 * g.padding[d] - g.kernel[d]) % g.stride[d]);
        let options = ConvTransposeOptions::new(g.stride, g.padding, padding_out, [1, 1], 1);
        B::conv_transpose2d(columns, primitive(identity), None, options)
    }

    pub fn layer_norm_backward<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        grad: FloatTensor<B>,
        epsilon: f64,
    ) -> [FloatTensor<B>; 3] {
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let rows = shape.num_elements() / d.max(1);
        let x = float::<B, 2>(x).reshape([rows, d]);
        let grad = float::<B, 2>(grad).reshape([rows, d]);
        let gamma = float::<B, 1>(gamma).reshape([1, d]);
        let centered = x.clone() - x.mean_dim(1);
        let variance = centered.clone().square().mean_dim(1);
        let std = (variance + epsilon).sqrt();
        let normalized = centered / std.clone();
        let d_beta = grad.clone().sum_dim(0).reshape([d]);
        let d_gamma = (grad.clone() * normalized.clone()).sum_dim(0).reshape([d]);
        let scaled = grad * gamma;
        let mean_scaled = scaled.clone().mean_dim(1);
        let mean_projection = (scaled.clone() * normalized.clone()).mean_dim(1);
        let d_x = (scaled - mean_scaled - normalized * mean_projection) / std;
        [
            B::float_reshape(primitive(d_x), shape),
            primitive(d_gamma),
            primitive(d_beta),
        ]
    }

    pub fn cross_entropy_forward<B: Backend>(
        logits: FloatTensor<B>,
        targets: IntTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let logits = float::<B, 2>(logits);
        let targets = Tensor::<B, 1, Int>::from_primitive(targets);
        let [n, _] = logits.dims();
        let max = logits.clone().max_dim(1); // [n, 1]
        let log_sum = (logits.clone() - max.clone()).exp().sum_dim(1).log();
        let picked = logits.gather(1, targets.reshape([n, 1]));
        let nll = ((max.clone() - picked) + log_sum.clone()).reshape([n]);
        (
            primitive(nll),
            primitive(Tensor::cat(vec![max, log_sum], 1)),
        )
    }

    pub fn cross_entropy_backward<B: Backend>(
        logits: FloatTensor<B>,
        statistics: FloatTensor<B>,
        targets: IntTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let logits = float::<B, 2>(logits);
        let [n, _] = logits.dims();
        let statistics = float::<B, 2>(statistics);
        let max = statistics.clone().slice([0..n, 0..1]);
        let log_sum = statistics.slice([0..n, 1..2]);
        let grad = float::<B, 1>(grad).reshape([n, 1]);
        let targets = Tensor::<B, 1, Int>::from_primitive(targets).reshape([n, 1]);
        let softmax = ((logits.clone() - max) - log_sum).exp() * grad.clone();
        let onehot = logits
            .zeros_like()
            .scatter(1, targets, grad, IndexingUpdateOp::Add);
        primitive(softmax - onehot)
    }

    /// burn's `AdamW` arithmetic, op for op, as tensor ops (one pass each).
    pub fn adamw_step<B: Backend>(
        param: FloatTensor<B>,
        grad: FloatTensor<B>,
        moment_1: FloatTensor<B>,
        moment_2: FloatTensor<B>,
        step: &AdamWStep,
    ) -> AdamWUpdate<B> {
        let shape = param.shape();
        let n = shape.num_elements();
        let [param, grad, moment_1, moment_2] = [param, grad, moment_1, moment_2]
            .map(|x| float::<B, 1>(B::float_reshape(x, [n].into())));
        let moment_1 =
            moment_1.mul_scalar(step.beta_1) + grad.clone().mul_scalar(1.0 - step.beta_1);
        let moment_2 =
            moment_2.mul_scalar(step.beta_2) + grad.square().mul_scalar(1.0 - step.beta_2);
        let (correction_1, correction_2) = step.bias_corrections();
        let delta = moment_1.clone().div_scalar(correction_1)
            / (moment_2.clone().div_scalar(correction_2).sqrt() + step.epsilon);
        let param = match step.decay_keep() {
            Some(keep) => param.mul_scalar(keep),
            None => param,
        };
        let param = param - delta.mul_scalar(step.learning_rate as f32);
        let [param, moment_1, moment_2] =
            [param, moment_1, moment_2].map(|x| B::float_reshape(primitive(x), shape.clone()));
        AdamWUpdate {
            param,
            moment_1,
            moment_2,
        }
    }
}

/// A training backend whose inner backend is a vislang [`Backend`] too.
pub trait AutodiffBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: Backend> + Backend
{
}

impl<T> AutodiffBackend for T where
    T: burn::tensor::backend::AutodiffBackend<InnerBackend: Backend> + Backend
{
}

impl Backend for burn::backend::NdArray {}
#[cfg(feature = "cuda")]
impl Backend for burn_cuda::Cuda {}
#[cfg(any(feature = "wgpu", feature = "wgpu-untuned"))]
impl Backend for burn::backend::Wgpu {}
