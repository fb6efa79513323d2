//! The shared blocks in `vislang::nn`: shapes, masking, and gradient flow.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend as _;
use burn::tensor::{s, Bool, Int, Tensor, TensorData};
use vislang::nn::Backend;
use vislang::nn::*;
use vislang::train::engine::gradients::params_without_gradient;

type B = Flex;
type AB = Autodiff<Flex>;

/// Standard normal draws ([`crate::common::normal`]).
fn random<Bk: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Bk, D> {
    crate::common::normal(shape, 1.0, seed)
}

fn max_abs_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    (a - b)
        .abs()
        .max()
        .into_scalar()
        .to_string()
        .parse()
        .unwrap()
}

/// Reference attention written out with plain tensor ops: softmax(QK^T/sqrt(d) + mask) V.
fn naive_attention<B: Backend>(
    mha: &MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    ctx: Tensor<B, 3>,
    masked: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 3> {
    let [b, lq, d] = x.dims();
    let lk = ctx.dims()[1];
    let h = mha.n_heads();
    let split = |t: Tensor<B, 3>, l: usize| t.reshape([b, l, h, d / h]).swap_dims(1, 2);
    let q = split(mha.query.forward(x), lq);
    let k = split(mha.key.forward(ctx.clone()), lk);
    let v = split(mha.value.forward(ctx), lk);
    let mut scores = q.matmul(k.swap_dims(2, 3)) / ((d / h) as f64).sqrt();
    if let Some(m) = masked {
        scores = scores.mask_fill(m, -1e9);
    }
    let weights = burn::tensor::activation::softmax(scores, 3);
    let out = weights.matmul(v).swap_dims(1, 2).reshape([b, lq, d]);
    mha.output.forward(out)
}

#[test]
fn attention_matches_the_textbook_formula() {
    let device = Default::default();
    let mha = MultiHeadAttentionConfig::new(8, 2).init::<B>(&device);
    let x = random::<B, 3>([2, 5, 8], 1);
    let got = mha.forward(x.clone(), x.clone(), &AttentionMask::none());
    assert_eq!(got.dims(), [2, 5, 8]);
    assert!(max_abs_diff(got, naive_attention(&mha, x.clone(), x, None)) < 1e-5);
}

#[test]
fn cross_attention_accepts_a_context_of_another_width_and_length() {
    let device = Default::default();
    let mha = MultiHeadAttentionConfig::new(8, 2)
        .with_d_context(Some(6))
        .init::<B>(&device);
    let out = mha.forward(
        random([3, 4, 8], 1),
        random([3, 7, 6], 2),
        &AttentionMask::none(),
    );
    assert_eq!(out.dims(), [3, 4, 8]);
}

#[test]
fn padding_mask_hides_padded_keys() {
    let device = Default::default();
    let mha = MultiHeadAttentionConfig::new(8, 2).init::<B>(&device);
    let x = random::<B, 3>([2, 5, 8], 3);
    // Row 0: last two keys are padding; row 1: none.
    let padding = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(
            vec![
                false, false, false, true, true, false, false, false, false, false,
            ],
            [2, 5],
        ),
        &device,
    );
    let mask = AttentionMask::padding(padding.clone());
    let out = mha.forward(x.clone(), x.clone(), &mask);
    // Changing the padded keys (row 0, positions 3..5) changes nothing.
    let noise = random::<B, 3>([1, 2, 8], 4) * 10.0;
    let changed = x.clone().slice_assign([0..1, 3..5, 0..8], noise);
    let out_changed = mha.forward(x.clone(), changed, &mask);
    assert!(max_abs_diff(out.clone(), out_changed) < 1e-5);
    // And it equals the textbook formula with the same mask.
    let expanded = padding.reshape([2, 1, 1, 5]).expand([2, 2, 5, 5]);
    assert!(max_abs_diff(out, naive_attention(&mha, x.clone(), x, Some(expanded))) < 1e-5);
}

#[test]
fn causal_mask_hides_the_future() {
    let device = Default::default();
    let mha = MultiHeadAttentionConfig::new(8, 2).init::<B>(&device);
    let x = random::<B, 3>([1, 6, 8], 5);
    let out = mha.forward(x.clone(), x.clone(), &AttentionMask::causal(6, &device));
    let future = x
        .clone()
        .slice_assign([0..1, 4..6, 0..8], random([1, 2, 8], 6));
    let out_future = mha.forward(future.clone(), future, &AttentionMask::causal(6, &device));
    // Positions 0..4 cannot see positions 4..6.
    assert!(
        max_abs_diff(
            out.clone().slice([0..1, 0..4]),
            out_future.clone().slice([0..1, 0..4])
        ) < 1e-5
    );
    assert!(max_abs_diff(out.slice([0..1, 4..6]), out_future.slice([0..1, 4..6])) > 1e-3);
}

#[test]
fn pattern_mask_applies_to_every_batch_row() {
    let device = Default::default();
    let mha = MultiHeadAttentionConfig::new(8, 2).init::<B>(&device);
    let x = random::<B, 3>([2, 3, 8], 7);
    // Query 0 may not see key 2.
    let mut pattern = vec![false; 9];
    pattern[2] = true;
    let pattern = Tensor::<B, 2, Bool>::from_data(TensorData::new(pattern, [3, 3]), &device);
    let mask = AttentionMask::none().with_pattern(pattern.clone());
    let expanded = pattern.reshape([1, 1, 3, 3]).expand([2, 2, 3, 3]);
    let out = mha.forward(x.clone(), x.clone(), &mask);
    assert!(max_abs_diff(out, naive_attention(&mha, x.clone(), x, Some(expanded))) < 1e-5);
}

#[test]
fn post_and_pre_norm_layers_keep_shapes_and_differ() {
    let device = Default::default();
    let x = random::<B, 3>([2, 4, 8], 8);
    let mut outs = Vec::new();
    for norm in [NormPlacement::Post, NormPlacement::Pre] {
        B::seed(&device, 9);
        let layer = TransformerLayerConfig::new(8, 2, 16)
            .with_dropout(0.0)
            .with_norm(norm)
            .init::<B>(&device);
        let out = layer.forward(x.clone(), &AttentionMask::none());
        assert_eq!(out.dims(), [2, 4, 8]);
        outs.push(out);
    }
    // Post-LN output is normalised per position; pre-LN output is a raw residual sum.
    let post_mean = outs[0].clone().mean_dim(2).abs().max().into_scalar();
    assert!(post_mean < 1e-4, "post-LN mean {post_mean}");
    assert!(max_abs_diff(outs[0].clone(), outs[1].clone()) > 1e-3);
}

#[test]
fn gradients_reach_every_block_parameter() {
    let device = Default::default();
    for norm in [NormPlacement::Post, NormPlacement::Pre] {
        let encoder =
            TransformerEncoderConfig::new(2, TransformerLayerConfig::new(8, 2, 16).with_norm(norm))
                .init::<AB>(&device);
        let cross = MultiHeadAttentionConfig::new(8, 2)
            .with_d_context(Some(4))
            .init::<AB>(&device);
        let x = random::<AB, 3>([2, 3, 8], 10);
        let ctx = random::<AB, 3>([2, 5, 4], 11);
        let loss = (encoder.forward(x.clone(), &AttentionMask::none())
            + cross.forward(x, ctx, &AttentionMask::none()))
        .powi_scalar(2)
        .mean();
        let grads = loss.backward();
        assert_eq!(
            params_without_gradient(&encoder, &grads),
            Vec::<String>::new()
        );
        assert_eq!(
            params_without_gradient(&cross, &grads),
            Vec::<String>::new()
        );
    }
}

#[test]
fn embeddings_and_patch_encoder_shapes_and_gradients() {
    let device = Default::default();
    let text = TextEmbeddingsConfig::new(30, 8, 10).init::<AB>(&device);
    let tokens = Tensor::<AB, 2, Int>::from_data([[1, 2, 3], [4, 5, 0]], &device);
    let segments = Tensor::<AB, 2, Int>::from_data([[0, 0, 1], [0, 1, 1]], &device);
    let positions = Tensor::<AB, 2, Int>::from_data([[0, 1, 2], [0, 1, 2]], &device);
    let embedded = text.forward(tokens, segments, positions);
    assert_eq!(embedded.dims(), [2, 3, 8]);

    let patches = PatchEncoderConfig::new(16, 8, 6)
        .with_stem_channels(4)
        .init::<AB>(&device);
    let regions = patches.forward(random([2, 3, 16, 16], 12));
    assert_eq!(regions.features.dims(), [2, 4, 6]);
    assert_eq!(regions.boxes.dims(), [2, 4, 4]);
    // Boxes tile the unit square in row-major order.
    let boxes: Vec<f32> = regions
        .boxes
        .clone()
        .slice(s![0..1])
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(
        boxes,
        vec![0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 1.0, 0.5, 0.0, 0.5, 0.5, 1.0, 0.5, 0.5, 1.0, 1.0]
    );

    let visual = VisualEmbeddingsConfig::new(6, 8).init::<AB>(&device);
    let v = visual.forward(regions.features, regions.boxes);
    assert_eq!(v.dims(), [2, 4, 8]);
    let loss = (v.powi_scalar(2).mean() + embedded.powi_scalar(3).mean()) * 1.0;
    let grads = loss.backward();
    // Token 0..5 rows of the embedding table are used; the gradient check is per tensor.
    assert_eq!(params_without_gradient(&text, &grads), Vec::<String>::new());
    assert_eq!(
        params_without_gradient(&patches, &grads),
        Vec::<String>::new()
    );
    assert_eq!(
        params_without_gradient(&visual, &grads),
        Vec::<String>::new()
    );
}

/// The fused attention node's hand-written backward (src/nn/backend.rs) against autodiff
/// through the textbook formula, with padding and a pattern mask: every gradient (the input,
/// the context, all four projections) within 1e-5 (f32 rounding).
#[test]
fn fused_attention_gradients_match_the_textbook_formula() {
    let device = Default::default();
    let mha = MultiHeadAttentionConfig::new(8, 2).init::<AB>(&device);
    let x = random::<AB, 3>([2, 5, 8], 11).require_grad();
    let ctx = random::<AB, 3>([2, 4, 8], 12).require_grad();
    let weights = random::<AB, 3>([2, 5, 8], 13);
    let padding = Tensor::<AB, 2, Bool>::from_data(
        TensorData::new(
            vec![false, false, false, true, false, false, true, true],
            [2, 4],
        ),
        &device,
    );
    let mut pattern = vec![false; 20];
    pattern[1] = true; // query 0 may not see key 1
    let pattern = Tensor::<AB, 2, Bool>::from_data(TensorData::new(pattern, [5, 4]), &device);
    let mask = AttentionMask::padding(padding.clone()).with_pattern(pattern.clone());
    let expanded = padding
        .reshape([2, 1, 1, 4])
        .expand([2, 2, 5, 4])
        .bool_or(pattern.reshape([1, 1, 5, 4]).expand([2, 2, 5, 4]));

    let gradients = |out: Tensor<AB, 3>| {
        let grads = (out * weights.clone()).sum().backward();
        let grad = |t: &Tensor<AB, 2>| t.grad(&grads).expect("a gradient");
        vec![
            x.grad(&grads).expect("x").reshape([10, 8]),
            ctx.grad(&grads).expect("ctx").reshape([8, 8]),
            grad(&mha.query.weight.val()),
            grad(&mha.key.weight.val()),
            grad(&mha.value.weight.val()),
            grad(&mha.output.weight.val()),
        ]
    };
    let fused = gradients(mha.forward(x.clone(), ctx.clone(), &mask));
    let textbook = gradients(naive_attention(
        &mha,
        x.clone(),
        ctx.clone(),
        Some(expanded),
    ));
    for (i, (a, b)) in fused.into_iter().zip(textbook).enumerate() {
        let diff = max_abs_diff(a, b);
        assert!(diff < 1e-5, "gradient {i} differs by {diff}");
    }
}
