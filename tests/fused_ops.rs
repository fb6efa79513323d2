//! The fused ops (`vislang::nn::Backend`) against burn's unfused versions: values and
//! gradients, on Flex (one-pass CPU kernels) and NdArray (the generic versions), within 1e-5
//! (sums over many rows: within 1e-5 of their largest entry); layer normalisation and the
//! attention node (Flex: the block kernel) against f64.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::Param;
use burn::tensor::activation::{gelu as burn_gelu, log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};
use vislang::nn::backend::AttentionInputs;
use vislang::nn::{cross_entropy, gelu, Backend};

use crate::common::normal as random;

fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b)
        .abs()
        .max()
        .into_scalar()
        .to_string()
        .parse()
        .unwrap()
}

fn gelu_matches_burns<B: Backend>() {
    type A<B> = Autodiff<B>;
    let x = random::<A<B>, 2>([37, 300], 3.0, 1).require_grad();
    let weights = random::<A<B>, 2>([37, 300], 1.0, 2);
    let grads = (gelu(x.clone()) * weights.clone()).sum().backward();
    let fused = (gelu(x.clone()).inner(), x.grad(&grads).unwrap());
    let x = x.detach().require_grad();
    let grads = (burn_gelu(x.clone()) * weights).sum().backward();
    let reference = (burn_gelu(x.clone()).inner(), x.grad(&grads).unwrap());
    let value = max_abs_diff(fused.0, reference.0);
    let gradient = max_abs_diff(fused.1, reference.1);
    assert!(
        value < 1e-5,
        "{}: values differ by {value}",
        B::name(&Default::default())
    );
    assert!(gradient < 1e-5, "gradients differ by {gradient}");
}

#[test]
fn gelu_node_matches_burns_gelu_on_both_cpu_backends() {
    gelu_matches_burns::<Flex>();
    gelu_matches_burns::<NdArray>();
}

fn linear_matches_burns<B: Backend>() {
    type A<B> = Autodiff<B>;
    use vislang::nn::ops::linear_rows;
    // (rows, d_input, d_output, bias, input read through a transposed view): a small layer,
    // one without bias, one whose input is a strided view, and one large enough for the CPU
    // product to split across threads.
    let cases = [
        (37, 24, 19, true, false),
        (5, 16, 8, false, false),
        (23, 12, 7, true, true),
        (300, 256, 128, true, false),
    ];
    for (case, (rows, d_input, d_output, with_bias, transposed)) in cases.into_iter().enumerate() {
        let seed = 10 * case as u64;
        let x = if transposed {
            random::<A<B>, 2>([d_input, rows], 1.0, seed).require_grad()
        } else {
            random::<A<B>, 2>([rows, d_input], 1.0, seed).require_grad()
        };
        let input = |x: &Tensor<A<B>, 2>| {
            if transposed {
                x.clone().transpose()
            } else {
                x.clone()
            }
        };
        let w = random::<A<B>, 2>([d_input, d_output], 0.3, seed + 1).require_grad();
        let b = with_bias.then(|| random::<A<B>, 1>([d_output], 0.3, seed + 2).require_grad());
        let ours = linear_rows(input(&x), w.clone(), b.clone());
        let product = input(&x).matmul(w.clone());
        let reference = match &b {
            Some(b) => product + b.clone().unsqueeze_dim(0),
            None => product,
        };
        let weights = random::<A<B>, 2>([rows, d_output], 1.0, seed + 3);
        let grads_of = |out: Tensor<A<B>, 2>| {
            let grads = (out * weights.clone()).sum().backward();
            let mut all = vec![
                x.grad(&grads).unwrap().flatten::<1>(0, 1),
                w.grad(&grads).unwrap().flatten::<1>(0, 1),
            ];
            all.extend(b.as_ref().map(|b| b.grad(&grads).unwrap()));
            all
        };
        let value = max_abs_diff(ours.clone().inner(), reference.clone().inner());
        assert!(
            value < 1e-4,
            "{}: case {case}: values differ by {value}",
            B::name(&Default::default())
        );
        let (ours, reference) = (grads_of(ours), grads_of(reference));
        assert_eq!(ours.len(), reference.len());
        for (i, (a, b)) in ours.into_iter().zip(reference).enumerate() {
            let scale = b
                .clone()
                .abs()
                .max()
                .into_scalar()
                .to_string()
                .parse::<f32>()
                .unwrap();
            let diff = max_abs_diff(a, b);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "case {case}: gradient {i} differs by {diff} (largest entry {scale})"
            );
        }
    }
}

#[test]
fn linear_node_matches_matmul_plus_bias_on_both_cpu_backends() {
    linear_matches_burns::<Flex>();
    linear_matches_burns::<NdArray>();
}

fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

/// Values and logits' gradient of `Σ w_i · −log softmax(logits_i)[t_i]`, in f64.
fn cross_entropy_f64(
    logits: &[f64],
    classes: usize,
    targets: &[usize],
    w: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut values = Vec::new();
    let mut grad = Vec::new();
    for (i, row) in logits.chunks(classes).enumerate() {
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        values.push(lse - row[targets[i]]);
        for (j, v) in row.iter().enumerate() {
            let onehot = if j == targets[i] { 1.0 } else { 0.0 };
            grad.push(w[i] * ((v - lse).exp() - onehot));
        }
    }
    (values, grad)
}

fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

fn cross_entropy_matches_log_softmax_gather<B: Backend>() {
    type A<B> = Autodiff<B>;
    let device = Default::default();
    let (n, classes) = (70, 531);
    // Spread 20: rows with a dominant logit and rows that are nearly flat.
    let logits = random::<A<B>, 2>([n, classes], 20.0, 3).require_grad();
    let targets: Vec<usize> = (0..n).map(|i| (i * 97) % classes).collect();
    let target_ids: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let target_ids = Tensor::<A<B>, 1, Int>::from_data(TensorData::new(target_ids, [n]), &device);
    let weights = random::<A<B>, 1>([n], 1.0, 4);
    let (exact_values, exact_grad) = cross_entropy_f64(
        &floats(logits.clone()),
        classes,
        &targets,
        &floats(weights.clone()),
    );

    let nll = cross_entropy(logits.clone(), target_ids.clone());
    let grads = (nll.clone() * weights.clone()).sum().backward();
    let fused = (floats(nll), floats(logits.grad(&grads).unwrap()));

    let logits = logits.detach().require_grad();
    let nll = log_softmax(logits.clone(), 1)
        .gather(1, target_ids.reshape([n, 1]))
        .reshape([n])
        .neg();
    let grads = (nll.clone() * weights).sum().backward();
    let burn = (floats(nll), floats(logits.grad(&grads).unwrap()));

    let name = B::name(&device);
    // Losses here reach ~100: f32 keeps about 1e-5 of that.
    let value = largest_difference(&fused.0, &exact_values);
    assert!(value < 1e-4, "{name}: losses differ from f64 by {value}");
    // The fused gradient is at least as close to f64 as burn's log_softmax + gather.
    let gradient = largest_difference(&fused.1, &exact_grad);
    let burn_gradient = largest_difference(&burn.1, &exact_grad);
    assert!(
        gradient < 1e-5 && gradient <= burn_gradient.max(1e-6),
        "{name}: gradient differs from f64 by {gradient} (burn's by {burn_gradient})"
    );
    let burn_value = largest_difference(&burn.0, &exact_values);
    assert!(
        burn_value < 1e-4,
        "{name}: burn's losses differ from f64 by {burn_value}"
    );
}

#[test]
fn cross_entropy_node_matches_log_softmax_and_gather_on_both_cpu_backends() {
    cross_entropy_matches_log_softmax_gather::<Flex>();
    cross_entropy_matches_log_softmax_gather::<NdArray>();
}

fn softmax_with_bias<B: Backend>(scores: Tensor<B, 4>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let scores = scores.into_primitive().tensor();
    let bias = bias.map(|bias| bias.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(B::softmax_with_bias(scores, bias)))
}

#[test]
fn attention_softmax_takes_every_bias_shape_and_strided_scores() {
    let scores = random::<Flex, 4>([3, 2, 6, 7], 2.0, 5);
    let masked = |shape: [usize; 4], seed| {
        let bias = random::<Flex, 4>(shape, 1.0, seed);
        // Mask about a third of the entries with a large negative number, as AttentionMask does.
        bias.clone().greater_elem(0.5).float() * -1e9 + bias
    };
    for bias in [
        None,
        Some(masked([1, 1, 6, 7], 6)), // causal / sparse pattern
        Some(masked([3, 1, 1, 7], 7)), // padding
        Some(masked([3, 1, 6, 7], 8)), // padding and pattern
        Some(masked([3, 2, 6, 7], 9)), // full
    ] {
        let reference = softmax(
            match &bias {
                Some(bias) => scores.clone() + bias.clone(),
                None => scores.clone(),
            },
            3,
        );
        let fused = softmax_with_bias(scores.clone(), bias.clone());
        let diff = max_abs_diff(fused, reference.clone());
        assert!(
            diff < 1e-6,
            "bias {:?}: differs by {diff}",
            bias.map(|b| b.dims())
        );
    }
    // Scores that are a strided view (a transpose), as the kernel copies them first.
    let strided = scores.clone().swap_dims(2, 3);
    let diff = max_abs_diff(
        softmax_with_bias(strided.clone(), None),
        softmax(strided, 3),
    );
    assert!(diff < 1e-6, "strided scores differ by {diff}");
}

fn conv_matches_burns<B: Backend>() {
    type A<B> = Autodiff<B>;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use vislang::nn::backend::ConvGeometry;
    use vislang::nn::ops::conv2d_as_gemm;
    // (channels in, out, input [h, w], kernel, stride, padding): the patch encoder's stems
    // and patchify convolution, odd sizes that leave a stride remainder, stride 1 (the
    // VQ-VAE's 3x3 convolutions), and a kernel wider than the image, whose outer columns
    // read only padding.
    // Batches of 1 (the product threads itself), 9 (the weight gradient's partial sums of 4
    // images, and a remainder) and others (images in parallel).
    let cases = [
        (3, 16, [24, 24], [3, 3], [2, 2], [1, 1], 3),
        (16, 16, [12, 12], [3, 3], [2, 2], [1, 1], 1),
        (16, 8, [6, 6], [3, 3], [3, 3], [0, 0], 9),
        (2, 5, [11, 10], [3, 2], [2, 3], [1, 2], 3),
        (4, 6, [7, 9], [3, 3], [1, 1], [1, 1], 5),
        (3, 4, [6, 5], [5, 5], [1, 1], [2, 2], 2),
        (2, 3, [2, 2], [5, 5], [1, 1], [2, 2], 3),
        // Pointwise (1x1, stride 1, no padding): the image is its own column matrix.
        (6, 5, [5, 7], [1, 1], [1, 1], [0, 0], 4),
        (6, 5, [5, 7], [1, 1], [1, 1], [0, 0], 1),
    ];
    for (seed, (c_in, c_out, input, kernel, stride, padding, batch)) in
        cases.into_iter().enumerate()
    {
        let seed = 10 * seed as u64;
        let x = random::<A<B>, 4>([batch, c_in, input[0], input[1]], 1.0, seed).require_grad();
        let w =
            random::<A<B>, 4>([c_out, c_in, kernel[0], kernel[1]], 0.3, seed + 1).require_grad();
        let b = random::<A<B>, 1>([c_out], 0.3, seed + 2).require_grad();
        let geometry = ConvGeometry {
            channels: c_in,
            input,
            kernel,
            stride,
            padding,
        };
        let ours = conv2d_as_gemm(x.clone(), w.clone(), Some(b.clone()), geometry);
        let options = ConvOptions::new(stride, padding, [1, 1], 1);
        let reference = burn_conv2d(x.clone(), w.clone(), Some(b.clone()), options);
        assert_eq!(ours.dims(), reference.dims());
        let weights = random::<A<B>, 4>(ours.dims(), 1.0, seed + 3);
        let grads_of = |out: Tensor<A<B>, 4>| {
            let grads = (out * weights.clone()).sum().backward();
            [
                x.grad(&grads).unwrap().flatten::<1>(0, 3),
                w.grad(&grads).unwrap().flatten::<1>(0, 3),
                b.grad(&grads).unwrap(),
            ]
        };
        let value = max_abs_diff(ours.clone().inner(), reference.clone().inner());
        assert!(
            value < 1e-5,
            "{}: case {seed}: values differ by {value}",
            B::name(&Default::default())
        );
        for (i, (a, b)) in grads_of(ours)
            .into_iter()
            .zip(grads_of(reference))
            .enumerate()
        {
            let diff = max_abs_diff(a, b);
            assert!(diff < 1e-4, "case {seed}: gradient {i} differs by {diff}");
        }
    }
}

#[test]
fn conv_as_one_matrix_product_matches_burns_convolution_on_both_cpu_backends() {
    conv_matches_burns::<Flex>();
    conv_matches_burns::<NdArray>();
}

/// The weight gradient sums fixed groups of images in a fixed order, so the number of
/// threads does not change a convolution's gradients (nor, through them, a VQ-VAE's training).
#[test]
fn conv_gradients_do_not_depend_on_the_number_of_threads() {
    type A = Autodiff<Flex>;
    use vislang::nn::backend::ConvGeometry;
    use vislang::nn::ops::{conv2d_as_gemm, conv_transpose2d_as_gemm};
    let geometry = ConvGeometry {
        channels: 8,
        input: [12, 12],
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let gradients = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let x = random::<A, 4>([11, 8, 12, 12], 1.0, 1).require_grad();
            let w = random::<A, 4>([16, 8, 3, 3], 0.3, 2).require_grad();
            let w_t = random::<A, 4>([16, 8, 3, 3], 0.3, 3).require_grad();
            let y = conv2d_as_gemm(x.clone(), w.clone(), None, geometry);
            // Back to 8 channels through the transposed convolution, its adjoint.
            let z = conv_transpose2d_as_gemm(y, w_t.clone(), None, geometry);
            let grads = (z.clone() * z).sum().backward();
            [x.grad(&grads), w.grad(&grads), w_t.grad(&grads)]
                .map(|g| g.unwrap().into_data().to_vec::<f32>().unwrap())
        })
    };
    let one = gradients(1);
    for threads in [2, 3] {
        assert!(one == gradients(threads), "{threads} threads");
    }
}

fn conv_transpose_matches_burns<B: Backend>() {
    type A<B> = Autodiff<B>;
    use burn::tensor::module::conv_transpose2d as burn_conv_transpose2d;
    use burn::tensor::ops::ConvTransposeOptions;
    use vislang::nn::backend::ConvGeometry;
    use vislang::nn::ops::conv_transpose2d_as_gemm;
    // (channels in, out, input [h, w], kernel, stride, padding, padding_out): the VQ-VAE
    // decoder's upsampling, and odd sizes with an output padding.
    let cases = [
        (32, 16, [8, 8], [4, 4], [2, 2], [1, 1], [0, 0], 9),
        (3, 5, [5, 4], [3, 2], [2, 3], [1, 0], [1, 2], 3),
        (8, 4, [4, 4], [4, 4], [2, 2], [1, 1], [0, 0], 1),
        (8, 4, [4, 4], [1, 1], [1, 1], [0, 0], [0, 0], 6),
    ];
    for (seed, (c_in, c_out, input, kernel, stride, padding, padding_out, batch)) in
        cases.into_iter().enumerate()
    {
        let seed = 100 + 10 * seed as u64;
        let x = random::<A<B>, 4>([batch, c_in, input[0], input[1]], 1.0, seed).require_grad();
        let w =
            random::<A<B>, 4>([c_in, c_out, kernel[0], kernel[1]], 0.3, seed + 1).require_grad();
        let b = random::<A<B>, 1>([c_out], 0.3, seed + 2).require_grad();
        let options = ConvTransposeOptions::new(stride, padding, padding_out, [1, 1], 1);
        let reference = burn_conv_transpose2d(x.clone(), w.clone(), Some(b.clone()), options);
        let [_, _, height, width] = reference.dims();
        let geometry = ConvGeometry {
            channels: c_out,
            input: [height, width],
            kernel,
            stride,
            padding,
        };
        assert_eq!(geometry.output(), input);
        let ours = conv_transpose2d_as_gemm(x.clone(), w.clone(), Some(b.clone()), geometry);
        let weights = random::<A<B>, 4>(ours.dims(), 1.0, seed + 3);
        let grads_of = |out: Tensor<A<B>, 4>| {
            let grads = (out * weights.clone()).sum().backward();
            [
                x.grad(&grads).unwrap().flatten::<1>(0, 3),
                w.grad(&grads).unwrap().flatten::<1>(0, 3),
                b.grad(&grads).unwrap(),
            ]
        };
        let value = max_abs_diff(ours.clone().inner(), reference.clone().inner());
        assert!(
            value < 1e-5,
            "{}: case {seed}: values differ by {value}",
            B::name(&Default::default())
        );
        for (i, (a, b)) in grads_of(ours)
            .into_iter()
            .zip(grads_of(reference))
            .enumerate()
        {
            let diff = max_abs_diff(a, b);
            assert!(diff < 1e-4, "case {seed}: gradient {i} differs by {diff}");
        }
    }
}

#[test]
fn transposed_conv_as_one_matrix_product_matches_burns_on_both_cpu_backends() {
    conv_transpose_matches_burns::<Flex>();
    conv_transpose_matches_burns::<NdArray>();
}

/// Top-k sampling's threshold against burn's `topk`: random rows, rows of ties, rows masked
/// to −∞ in part, and k at both ends.
#[test]
fn kth_largest_matches_burns_topk() {
    use vislang::nn::ops::kth_largest;
    let (rows, n) = (9, 517);
    let x = random::<Flex, 2>([rows, n], 3.0, 7);
    // Rows 3-5 hold only 5 distinct values (ties across the k-th); rows 6-8 are −∞ past 40.
    let ties = (x.clone().slice([3..6, 0..n]) * 2.0)
        .round()
        .clamp(-2.0, 2.0);
    let x = x.slice_assign([3..6, 0..n], ties);
    let masked = Tensor::<Flex, 2>::full([3, n - 40], f32::NEG_INFINITY, &Default::default());
    let x = x.slice_assign([6..9, 40..n], masked);
    // (burn's topk takes k below the row length.)
    for k in [1, 2, 32, 40, 41, 300, n - 1] {
        let ours = kth_largest(x.clone(), k);
        let reference = x.clone().topk(k, 1).narrow(1, k - 1, 1);
        assert_eq!(
            ours.into_data().to_vec::<f32>().unwrap(),
            reference.into_data().to_vec::<f32>().unwrap(),
            "k = {k}"
        );
    }
}

fn swap_matches_burns<B: Backend>() {
    type A<B> = Autodiff<B>;
    use vislang::nn::ops::swap_middle_dims;
    let x = random::<A<B>, 4>([3, 5, 4, 6], 1.0, 200).require_grad();
    let weights = random::<A<B>, 4>([3, 4, 5, 6], 1.0, 201);
    let ours = swap_middle_dims(x.clone());
    let reference = x.clone().swap_dims(1, 2);
    assert_eq!(ours.dims(), [3, 4, 5, 6]);
    assert_eq!(
        max_abs_diff(ours.clone().inner(), reference.clone().inner()),
        0.0
    );
    let grad_of = |out: Tensor<A<B>, 4>| {
        let grads = (out.reshape([3, 4, 30]) * weights.clone().reshape([3, 4, 30]))
            .sum()
            .backward();
        x.grad(&grads).unwrap()
    };
    assert_eq!(max_abs_diff(grad_of(ours), grad_of(reference)), 0.0);
}

#[test]
fn head_swap_matches_swap_dims_on_both_cpu_backends() {
    swap_matches_burns::<Flex>();
    swap_matches_burns::<NdArray>();
}

/// `[output, dx, dγ, dβ]` of `Σ w ⊙ LN(x)` in f64, rows of `gamma.len()`.
fn layer_norm_f64(x: &[f64], gamma: &[f64], beta: &[f64], w: &[f64]) -> [Vec<f64>; 4] {
    let d = gamma.len();
    let [mut out, mut dx] = [Vec::new(), Vec::new()];
    let [mut d_gamma, mut d_beta] = [vec![0.0; d], vec![0.0; d]];
    for (x, w) in x.chunks(d).zip(w.chunks(d)) {
        let mean = x.iter().sum::<f64>() / d as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + 1e-5).sqrt();
        let normalized: Vec<f64> = x.iter().map(|v| (v - mean) * r).collect();
        let scaled: Vec<f64> = (0..d).map(|i| w[i] * gamma[i]).collect();
        let mean_scaled = scaled.iter().sum::<f64>() / d as f64;
        let projection = (0..d).map(|i| scaled[i] * normalized[i]).sum::<f64>() / d as f64;
        for i in 0..d {
            out.push(normalized[i] * gamma[i] + beta[i]);
            dx.push(r * (scaled[i] - mean_scaled - normalized[i] * projection));
            d_gamma[i] += w[i] * normalized[i];
            d_beta[i] += w[i];
        }
    }
    [out, dx, d_gamma, d_beta]
}

/// [`vislang::nn::LayerNorm`] (one node) against [`layer_norm_f64`]: output and `dx` within
/// 1e-5, `dγ` and `dβ` (sums over every row) within 1e-5 of their largest entry. (Burn's own
/// `LayerNorm` misses this on NdArray, by 3.4e-4 in `dx` at the first shape: NdArray's
/// reciprocal is approximate, which the generic backward avoids by dividing.)
fn layer_norm_matches_f64<B: Backend>(shape: [usize; 3]) {
    type A<B> = Autodiff<B>;
    let d = shape[2];
    // An offset and a scale far from 0 and 1, as activations have them.
    let x = random::<A<B>, 3>(shape, 3.0, 11).add_scalar(2.5);
    let weights = random::<A<B>, 3>(shape, 1.0, 12);
    let gamma = random::<A<B>, 1>([d], 0.5, 13).add_scalar(1.0);
    let beta = random::<A<B>, 1>([d], 0.5, 14);
    let expected = layer_norm_f64(
        &floats(x.clone()),
        &floats(gamma.clone()),
        &floats(beta.clone()),
        &floats(weights.clone()),
    );
    let norm = vislang::nn::LayerNorm {
        gamma: Param::from_tensor(gamma),
        beta: Param::from_tensor(beta),
        epsilon: 1e-5,
    };
    let x = x.require_grad();
    let output = norm.forward(x.clone());
    let grads = (output.clone() * weights).sum().backward();
    let got = [
        floats(output),
        floats(x.grad(&grads).unwrap()),
        floats(norm.gamma.grad(&grads).unwrap()),
        floats(norm.beta.grad(&grads).unwrap()),
    ];
    let name = B::name(&Default::default());
    for (k, what) in ["output", "dx", "dγ", "dβ"].iter().enumerate() {
        let scale = match k {
            0 | 1 => 1.0,
            _ => expected[k].iter().fold(1.0f64, |m, v| m.max(v.abs())),
        };
        let difference = largest_difference(&got[k], &expected[k]);
        assert!(
            difference < 1e-5 * scale,
            "{name} {shape:?}: {what} differs from f64 by {difference} (scale {scale})"
        );
    }
}

#[test]
fn layer_norm_node_matches_f64_on_both_cpu_backends() {
    // One block of rows, and several (the CPU kernel sums dγ and dβ per block).
    for shape in [[3, 37, 96], [4, 100, 96], [2, 5, 768]] {
        layer_norm_matches_f64::<Flex>(shape);
        layer_norm_matches_f64::<NdArray>(shape);
    }
}

/// A deterministic pseudo-random vector in `[-scale, scale)`.
fn uniform(len: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Whether example `b`'s query `i` may not see key `j`.
type MaskRule = fn(usize, usize, usize) -> bool;

/// One attention call's sizes and mask, `[problems = batch·heads]` rows of `seq_q` queries.
struct AttentionCase {
    name: &'static str,
    batch: usize,
    heads: usize,
    seq_q: usize,
    seq_k: usize,
    d_key: usize,
    d_value: usize,
    /// `(shape, is the pair masked)` of a `[batch | 1, 1, seq_q | 1, seq_k]` bias.
    mask: Option<([usize; 4], MaskRule)>,
}

impl AttentionCase {
    fn bias(&self) -> Option<(Vec<f64>, [usize; 4])> {
        let (shape, masked) = self.mask?;
        let mut values = Vec::new();
        for b in 0..shape[0] {
            for i in 0..shape[2] {
                for j in 0..shape[3] {
                    values.push(if masked(b, i, j) { -1e9 } else { 0.0 });
                }
            }
        }
        Some((values, shape))
    }

    /// The bias entry of problem `(b, ·)`, query `i`, key `j`.
    fn bias_at(&self, bias: &Option<(Vec<f64>, [usize; 4])>, b: usize, i: usize, j: usize) -> f64 {
        match bias {
            None => 0.0,
            Some((values, [bb, _, bq, bk])) => {
                let (b, i) = (if *bb == 1 { 0 } else { b }, if *bq == 1 { 0 } else { i });
                values[(b * bq + i) * bk + j]
            }
        }
    }
}

/// Output and `(dq, dk, dv)` of `Σ softmax(q kᵀ · s + bias) v ⊙ w` in f64.
fn attention_f64(
    case: &AttentionCase,
    [q, k, v, w]: [&[f64]; 4],
    bias: &Option<(Vec<f64>, [usize; 4])>,
) -> [Vec<f64>; 4] {
    let (sq, sk, dk, dv) = (case.seq_q, case.seq_k, case.d_key, case.d_value);
    let scale = 1.0 / (dk as f64).sqrt();
    let problems = case.batch * case.heads;
    let mut out = vec![0.0; problems * sq * dv];
    let (mut gq, mut gk, mut gv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for p in 0..problems {
        let b = p / case.heads;
        let (q, k, v) = (&q[p * sq * dk..], &k[p * sk * dk..], &v[p * sk * dv..]);
        for i in 0..sq {
            let scores: Vec<f64> = (0..sk)
                .map(|j| {
                    let dot: f64 = (0..dk).map(|c| q[i * dk + c] * k[j * dk + c]).sum();
                    dot * scale + case.bias_at(bias, b, i, j)
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            let probs: Vec<f64> = exps.iter().map(|e| e / total).collect();
            let w = &w[(p * sq + i) * dv..][..dv];
            let grad_p: Vec<f64> = (0..sk)
                .map(|j| (0..dv).map(|c| w[c] * v[j * dv + c]).sum())
                .collect();
            let dot: f64 = (0..sk).map(|j| grad_p[j] * probs[j]).sum();
            for j in 0..sk {
                let grad_score = probs[j] * (grad_p[j] - dot) * scale;
                for c in 0..dv {
                    out[(p * sq + i) * dv + c] += probs[j] * v[j * dv + c];
                    gv[(p * sk + j) * dv + c] += probs[j] * w[c];
                }
                for c in 0..dk {
                    gq[(p * sq + i) * dk + c] += grad_score * k[j * dk + c];
                    gk[(p * sk + j) * dk + c] += grad_score * q[i * dk + c];
                }
            }
        }
    }
    [out, gq, gk, gv]
}

/// The attention node's output and gradients on backend `B` for the case's inputs.
fn attention_node<B: Backend>(
    case: &AttentionCase,
    [q, k, v, w]: [&[f64]; 4],
    bias: &Option<(Vec<f64>, [usize; 4])>,
) -> [Vec<f64>; 4] {
    type A<B> = Autodiff<B>;
    let device = Default::default();
    let tensor = |values: &[f64], shape: [usize; 4]| {
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::<A<B>, 4>::from_data(TensorData::new(values, shape), &device)
    };
    let (b, h, sq, sk) = (case.batch, case.heads, case.seq_q, case.seq_k);
    let q = tensor(q, [b, h, sq, case.d_key]).require_grad();
    let k = tensor(k, [b, h, sk, case.d_key]).require_grad();
    let v = tensor(v, [b, h, sk, case.d_value]).require_grad();
    let w = tensor(w, [b, h, sq, case.d_value]);
    let bias = bias.as_ref().map(|(values, shape)| tensor(values, *shape));
    let inputs = AttentionInputs {
        query: q.clone().into_primitive().tensor(),
        key: k.clone().into_primitive().tensor(),
        value: v.clone().into_primitive().tensor(),
        bias: bias.map(|bias| bias.into_primitive().tensor()),
        scale: 1.0 / (case.d_key as f64).sqrt(),
    };
    let out =
        Tensor::<A<B>, 4>::from_primitive(TensorPrimitive::Float(A::<B>::fused_attention(inputs)));
    let grads = (out.clone() * w).sum().backward();
    [
        floats(out.inner()),
        floats(q.grad(&grads).unwrap()),
        floats(k.grad(&grads).unwrap()),
        floats(v.grad(&grads).unwrap()),
    ]
}

fn attention_inputs(case: &AttentionCase) -> [Vec<f64>; 4] {
    let problems = case.batch * case.heads;
    [
        uniform(problems * case.seq_q * case.d_key, 2.0, 1),
        uniform(problems * case.seq_k * case.d_key, 2.0, 2),
        uniform(problems * case.seq_k * case.d_value, 1.0, 3),
        uniform(problems * case.seq_q * case.d_value, 1.0, 4),
    ]
}

fn attention_cases() -> Vec<AttentionCase> {
    let case = |name, seq_q, seq_k, d_value, mask| AttentionCase {
        name,
        batch: 2,
        heads: 3,
        seq_q,
        seq_k,
        d_key: 8,
        d_value,
        mask,
    };
    vec![
        case("no mask", 70, 70, 8, None),
        // 70 rows: blocks of 32, 32 and 6, each seeing a longer prefix.
        case("causal", 70, 70, 8, Some(([1, 1, 70, 70], |_, i, j| j > i))),
        case(
            "causal, d_value 5",
            70,
            70,
            5,
            Some(([1, 1, 70, 70], |_, i, j| j > i)),
        ),
        // A band: later blocks' first visible key is past 0.
        case(
            "band",
            70,
            70,
            8,
            Some(([1, 1, 70, 70], |_, i, j| j > i || j + 12 < i)),
        ),
        case(
            "padding",
            70,
            70,
            8,
            Some(([2, 1, 1, 70], |b, _, j| b == 1 && j >= 50)),
        ),
        case(
            "padding and causal",
            70,
            70,
            8,
            Some(([2, 1, 70, 70], |b, i, j| j > i || (b == 0 && j % 3 == 1))),
        ),
        // Cross-attention, and a decoding step's few queries over a longer cache.
        case(
            "cross pattern",
            5,
            70,
            8,
            Some(([1, 1, 5, 70], |_, i, j| (i + j) % 4 == 0)),
        ),
        case(
            "cached step",
            1,
            40,
            8,
            Some(([1, 1, 1, 40], |_, _, j| j > 37)),
        ),
    ]
}

fn block_attention_matches_f64<B: Backend>() {
    for case in attention_cases() {
        let inputs = attention_inputs(&case);
        let inputs = [&inputs[0][..], &inputs[1], &inputs[2], &inputs[3]];
        let bias = case.bias();
        let reference = attention_f64(&case, inputs, &bias);
        let node = attention_node::<B>(&case, inputs, &bias);
        for (what, (node, reference)) in ["output", "dq", "dk", "dv"]
            .iter()
            .zip(node.iter().zip(&reference))
        {
            let diff = largest_difference(node, reference);
            assert!(
                diff < 1e-5,
                "{}, {}: {what} differs from f64 by {diff}",
                B::name(&Default::default()),
                case.name
            );
        }
    }
}

#[test]
fn attention_node_matches_f64_on_both_cpu_backends() {
    block_attention_matches_f64::<Flex>();
    block_attention_matches_f64::<NdArray>();
}

/// A query that sees no key at all attends uniformly on both backends (burn's softmax of equal
/// scores), rather than the block kernel skipping its row.
#[test]
fn attention_rows_that_see_no_key_agree_between_cpu_backends() {
    let case = AttentionCase {
        name: "all keys of the second example padded",
        batch: 2,
        heads: 2,
        seq_q: 40,
        seq_k: 40,
        d_key: 8,
        d_value: 8,
        mask: Some(([2, 1, 40, 40], |b, i, j| b == 1 || j > i)),
    };
    let inputs = attention_inputs(&case);
    let inputs = [&inputs[0][..], &inputs[1], &inputs[2], &inputs[3]];
    let bias = case.bias();
    let flex = attention_node::<Flex>(&case, inputs, &bias);
    let ndarray = attention_node::<NdArray>(&case, inputs, &bias);
    for (what, (a, b)) in ["output", "dq", "dk", "dv"]
        .iter()
        .zip(flex.iter().zip(&ndarray))
    {
        let diff = largest_difference(a, b);
        assert!(diff < 1e-5, "{}: {what} differs by {diff}", case.name);
    }
}
