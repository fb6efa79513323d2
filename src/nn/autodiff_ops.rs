//! [`Backend`] for `Autodiff<B>`: the fused ops as single graph nodes with hand-written
//! backward passes, each computed by the inner backend's own (possibly fused) version.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorMetadata;

use super::backend::{generic, AttentionInputs, AttentionSaved, ConvGeometry};
use super::Backend;

#[derive(Debug)]
struct FusedAttention;

/// What the backward pass needs: the inputs, and what the backend's forward saved.
#[derive(Debug, Clone)]
struct AttentionState<B: burn::tensor::backend::Backend> {
    inputs: AttentionInputs<B>,
    saved: AttentionSaved<B>,
}

impl<B: Backend> Backward<B, 3> for FusedAttention {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let AttentionState { inputs, saved } = ops.state;
        let grad_out = grads.consume::<B>(&ops.node); // [b, h, sq, d]
        let computed = B::attention_backward(inputs, saved, grad_out);
        let [query_node, key_node, value_node] = ops.parents;
        for (node, grad) in [
            (query_node, computed.query),
            (key_node, computed.key),
            (value_node, computed.value),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct LinearRows;

/// Parents `[x, weight]` or `[x, weight, bias]`.
impl<B: Backend, const N: usize> Backward<B, N> for LinearRows {
    /// The input and the weight.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node); // [rows, d_output]
        let (x, weight) = ops.state;
        let mut parents = ops.parents.into_iter();
        let (x_node, weight_node, bias_node) = (
            parents.next().flatten(),
            parents.next().flatten(),
            parents.next().flatten(),
        );
        if let Some(node) = bias_node {
            grads.register::<B>(node.id, generic::column_sums::<B>(grad.clone()));
        }
        if let Some(node) = weight_node {
            let d_weight = B::matmul_2d(B::float_transpose(x), grad.clone());
            grads.register::<B>(node.id, d_weight);
        }
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::matmul_2d(grad, B::float_transpose(weight)));
        }
    }
}

#[derive(Debug)]
struct Gelu;

impl<B: Backend> Backward<B, 1> for Gelu {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::gelu_exact_backward(ops.state, grad));
        }
    }
}

#[derive(Debug)]
struct LayerNorm;

impl<B: Backend> Backward<B, 3> for LayerNorm {
    /// The input, the scale and epsilon (the shift does not enter the gradients).
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, epsilon) = ops.state;
        let gradients = B::layer_norm_backward(x, gamma, grad, epsilon);
        for (node, gradient) in ops.parents.into_iter().zip(gradients) {
            if let Some(node) = node {
                grads.register::<B>(node.id, gradient);
            }
        }
    }
}

#[derive(Debug)]
struct CrossEntropy;

/// The logits, each row's statistics (max and log-sum) and the targets.
#[derive(Debug, Clone)]
struct CrossEntropyState<B: burn::tensor::backend::Backend> {
    logits: FloatTensor<B>,
    statistics: FloatTensor<B>,
    targets: IntTensor<B>,
}

impl<B: Backend> Backward<B, 1> for CrossEntropy {
    type State = CrossEntropyState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node); // [n]
        if let [Some(node)] = ops.parents {
            let CrossEntropyState {
                logits,
                statistics,
                targets,
            } = ops.state;
            let grad = B::cross_entropy_backward(logits, statistics, targets, grad);
            grads.register::<B>(node.id, grad);
        }
    }
}

#[derive(Debug)]
struct Conv2dGemm;

/// The input (`[b, ci, h, w]`), the weights and the geometry: the backward rebuilds the
/// columns from the input rather than keeping them (9x the input for a 3x3 kernel).
#[derive(Debug, Clone)]
struct ConvState<B: burn::tensor::backend::Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    geometry: ConvGeometry,
}

impl<B: Backend> Backward<B, 2> for Conv2dGemm {
    type State = ConvState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ConvState {
            x,
            weight,
            geometry,
        } = ops.state;
        let grad = grads.consume::<B>(&ops.node); // [b, co, oh, ow]
        let [batch, out_channels, out_h, out_w] = grad.shape().dims::<4>();
        let grad = B::float_reshape(grad, [batch, out_channels, out_h * out_w].into());
        let [x_node, weight_node] = ops.parents;
        if let Some(node) = weight_node {
            // dW = Σ_b dY_b · im2col(x_b)ᵀ
            let summed = B::conv2d_weight_gradient(grad.clone(), x, geometry); // [co, K]
            grads.register::<B>(node.id, B::float_reshape(summed, weight.shape()));
        }
        if let Some(node) = x_node {
            // dx_b = col2im(Wᵀ · dY_b)
            let weight = B::float_reshape(weight, [out_channels, geometry.column_rows()].into());
            grads.register::<B>(node.id, B::conv2d_input_gradient(weight, grad, geometry));
        }
    }
}

#[derive(Debug)]
struct ConvTranspose2dGemm;

impl<B: Backend> Backward<B, 2> for ConvTranspose2dGemm {
    type State = ConvState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ConvState {
            x,
            weight,
            geometry,
        } = ops.state;
        // The forward pass was col2im(Wᵀ · x_b), so the output's gradient enters through
        // its adjoint, im2col.
        let grad = grads.consume::<B>(&ops.node); // [b, co, H, W]
        let [batch, channels_in, height, width] = x.shape().dims::<4>();
        let [x_node, weight_node] = ops.parents;
        if let Some(node) = weight_node {
            // dW = Σ_b x_b · im2col(dY_b)ᵀ
            let x = B::float_reshape(x, [batch, channels_in, height * width].into());
            let summed = B::conv2d_weight_gradient(x, grad.clone(), geometry); // [ci, K]
            grads.register::<B>(node.id, B::float_reshape(summed, weight.shape()));
        }
        if let Some(node) = x_node {
            // dx_b = W · im2col(dY_b): the convolution of dY with W as `[ci, co, kh, kw]`.
            grads.register::<B>(node.id, B::conv2d_gemm(grad, weight, geometry));
        }
    }
}

#[derive(Debug)]
struct SwapMiddleDims;

impl<B: Backend> Backward<B, 1> for SwapMiddleDims {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::swap_middle_dims(grad));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> Backend for Autodiff<B, C> {
    fn fused_attention(inputs: AttentionInputs<Self>) -> FloatTensor<Self> {
        let AttentionInputs {
            query,
            key,
            value,
            bias,
            scale,
        } = inputs;
        let inner = AttentionInputs {
            query: query.primitive,
            key: key.primitive,
            value: value.primitive,
            // The bias is a constant (a mask); no gradient flows into it.
            bias: bias.map(|bias| bias.primitive),
            scale,
        };
        match FusedAttention
            .prepare::<C>([query.node, key.node, value.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let forward = B::attention_training_forward(inner.clone());
                let state = AttentionState {
                    inputs: inner,
                    saved: forward.saved,
                };
                prep.finish(state, forward.output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(inner)),
        }
    }

    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let state = (x.primitive.clone(), weight.primitive.clone());
        let output = B::linear_rows(
            x.primitive,
            weight.primitive,
            bias.clone().map(|b| b.primitive),
        );
        match bias {
            Some(bias) => match LinearRows
                .prepare::<C>([x.node, weight.node, bias.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, output),
                OpsKind::UnTracked(prep) => prep.finish(output),
            },
            None => match LinearRows
                .prepare::<C>([x.node, weight.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, output),
                OpsKind::UnTracked(prep) => prep.finish(output),
            },
        }
    }

    const CONV_AS_GEMM: bool = B::CONV_AS_GEMM;

    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        match Conv2dGemm
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output =
                    B::conv2d_gemm(x.primitive.clone(), weight.primitive.clone(), geometry);
                let state = ConvState {
                    x: x.primitive,
                    weight: weight.primitive,
                    geometry,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d_gemm(x.primitive, weight.primitive, geometry))
            }
        }
    }

    fn conv_transpose2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        match ConvTranspose2dGemm
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::conv_transpose2d_gemm(
                    x.primitive.clone(),
                    weight.primitive.clone(),
                    geometry,
                );
                let state = ConvState {
                    x: x.primitive,
                    weight: weight.primitive,
                    geometry,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_transpose2d_gemm(
                x.primitive,
                weight.primitive,
                geometry,
            )),
        }
    }

    fn swap_middle_dims(x: FloatTensor<Self>) -> FloatTensor<Self> {
        SwapMiddleDims
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateless(B::swap_middle_dims(x.primitive))
    }

    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match Gelu
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::gelu_exact(x.primitive.clone());
                prep.finish(x.primitive, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_exact(x.primitive)),
        }
    }

    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        match LayerNorm
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output = B::layer_norm_fused(
                    x.primitive.clone(),
                    gamma.primitive.clone(),
                    beta.primitive,
                    epsilon,
                );
                prep.finish((x.primitive, gamma.primitive, epsilon), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_norm_fused(
                x.primitive,
                gamma.primitive,
                beta.primitive,
                epsilon,
            )),
        }
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        match CrossEntropy
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (nll, statistics) =
                    B::cross_entropy_forward(logits.primitive.clone(), targets.clone());
                let state = CrossEntropyState {
                    logits: logits.primitive,
                    statistics,
                    targets,
                };
                prep.finish(state, nll)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::cross_entropy_forward(logits.primitive, targets).0)
            }
        }
    }
}
