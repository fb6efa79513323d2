//! The backend traits vislang's models are generic over: burn's, plus one fused attention op
//! with a hand-written backward.
//!
//! Why: under `Autodiff`, burn 0.21 runs attention as a chain of a dozen differentiable ops
//! (matmul, scale, mask fills, a decomposed softmax, matmul), each keeping its own
//! `[batch, heads, seq_q, seq_k]` tensor for the backward pass and each differentiated on its
//! own. [`Backend::fused_attention`] records one node instead: the forward keeps only the
//! attention probabilities, and the backward is the textbook one,
//!
//! ```text
//! dV = Pᵀ dO      dP = dO Vᵀ      dS = P ⊙ (dP − rowsum(dP ⊙ P))
//! dQ = dS K · s   dK = dSᵀ Q · s
//! ```
//!
//! Masks come in as one additive bias (0 or a large negative number), built once per forward
//! by [`crate::nn::AttentionMask`] and broadcast over batch and heads.
//!
//! Every backend implements [`Backend`] with the default method (burn's own `attention` op,
//! fused on Flex and on CubeCL backends); `Autodiff<B>` overrides it with the custom node.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::TensorMetadata;

/// Held while a backend's process-wide random generator is reseeded and drawn from (dropout,
/// dead-code re-seeding, sampling), and while a model is initialised, so that work on other
/// threads cannot draw in between and change the result of a seed.
pub static BACKEND_RANDOM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A burn backend with vislang's fused ops.
pub trait Backend: burn::tensor::backend::Backend {
    /// `softmax(q kᵀ · scale + bias) v`.
    ///
    /// # Shapes
    /// - `query`: `[batch, heads, seq_q, d_head]`; `key`, `value`: `[batch, heads, seq_k, d_head]`
    /// - `bias`: broadcastable to `[batch, heads, seq_q, seq_k]` (batch and heads may be 1)
    /// - returns: `[batch, heads, seq_q, d_head]`
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let bias = bias.map(|bias| {
            // burn's op takes a bias of the scores' full shape.
            let [batch, heads, seq_q, _] = query.shape().dims::<4>();
            let seq_k = key.shape().dims::<4>()[2];
            Self::float_expand(bias, [batch, heads, seq_q, seq_k].into())
        });
        let options = AttentionModuleOptions {
            scale: Some(scale),
            ..Default::default()
        };
        Self::attention(query, key, value, None, bias, options)
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

impl Backend for burn::backend::Flex {}
impl Backend for burn::backend::NdArray {}
#[cfg(feature = "cuda")]
impl Backend for burn_cuda::Cuda {}
#[cfg(feature = "wgpu")]
impl Backend for burn::backend::Wgpu {}

/// `P = softmax(q kᵀ · scale + bias)` on a plain backend.
fn probabilities<B: burn::tensor::backend::Backend>(
    query: FloatTensor<B>,
    key: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    scale: f64,
) -> FloatTensor<B> {
    let scores = B::float_matmul(
        B::float_mul_scalar(query, scale.into()),
        B::float_transpose(key),
    );
    let scores = match bias {
        Some(bias) => B::float_add(scores, bias),
        None => scores,
    };
    B::softmax(scores, 3)
}

#[derive(Debug)]
struct FusedAttention;

/// What the backward pass needs: the inputs and the probabilities.
#[derive(Debug, Clone)]
struct AttentionState<B: burn::tensor::backend::Backend> {
    query: FloatTensor<B>,
    key: FloatTensor<B>,
    value: FloatTensor<B>,
    probabilities: FloatTensor<B>,
    scale: f64,
}

impl<B: Backend> Backward<B, 3> for FusedAttention {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let AttentionState {
            query,
            key,
            value,
            probabilities,
            scale,
        } = ops.state;
        let grad_out = grads.consume::<B>(&ops.node); // [b, h, sq, d]
        let [query_node, key_node, value_node] = ops.parents;
        if let Some(node) = value_node {
            let grad = B::float_matmul(B::float_transpose(probabilities.clone()), grad_out.clone());
            grads.register::<B>(node.id, grad);
        }
        if query_node.is_none() && key_node.is_none() {
            return;
        }
        let grad_p = B::float_matmul(grad_out, B::float_transpose(value)); // [b, h, sq, sk]
        let row = B::float_sum_dim(B::float_mul(grad_p.clone(), probabilities.clone()), 3);
        let grad_scores = B::float_mul(probabilities, B::float_sub(grad_p, row));
        if let Some(node) = query_node {
            let grad = B::float_matmul(grad_scores.clone(), key);
            grads.register::<B>(node.id, B::float_mul_scalar(grad, scale.into()));
        }
        if let Some(node) = key_node {
            let grad = B::float_matmul(B::float_transpose(grad_scores), query);
            grads.register::<B>(node.id, B::float_mul_scalar(grad, scale.into()));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> Backend for Autodiff<B, C> {
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        scale: f64,
    ) -> FloatTensor<Self> {
        // The bias is a constant (a mask); no gradient flows into it.
        let bias = bias.map(|bias| bias.primitive);
        match FusedAttention
            .prepare::<C>([query.node.clone(), key.node.clone(), value.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let probabilities =
                    probabilities::<B>(query.primitive.clone(), key.primitive.clone(), bias, scale);
                let output = B::float_matmul(probabilities.clone(), value.primitive.clone());
                let state = AttentionState {
                    query: query.primitive,
                    key: key.primitive,
                    value: value.primitive,
                    probabilities,
                    scale,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(
                query.primitive,
                key.primitive,
                value.primitive,
                bias,
                scale,
            )),
        }
    }
}
