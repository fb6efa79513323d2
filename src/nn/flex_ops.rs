//! [`Backend`] for the CPU backend (Flex): the fused ops as one pass each over `f32` memory
//! ([`super::cpu_kernels`]). Other dtypes (bf16/f16 storage) and bias shapes the kernels do
//! not take fall back to the generic versions.

use std::borrow::Cow;

use burn::backend::Flex;
use burn::tensor::ops::{ActivationOps, FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use burn_flex::FlexTensor;

use super::backend::{
    generic, AdamWStep, AdamWUpdate, AttentionForward, AttentionGradients, AttentionInputs,
    AttentionSaved,
};
use super::cpu_kernels::{self, AttentionSizes, BiasRows, ConvGeometry, LayerNormRows};
use super::Backend;

fn is_f32(tensor: &FlexTensor) -> bool {
    tensor.dtype() == DType::F32
}

/// An `f32` tensor as one contiguous, uniquely owned buffer at offset 0, to write in place (a
/// copy only if it is strided, offset, narrowed or shared).
fn owned(tensor: FlexTensor) -> FlexTensor {
    let n = tensor.layout().num_elements();
    let whole =
        tensor.layout().contiguous_offsets() == Some((0, n)) && tensor.storage::<f32>().len() == n;
    if whole && tensor.is_unique() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

/// An `f32` tensor's values in row-major order, borrowed when contiguous.
fn values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
    match tensor.layout().contiguous_offsets() {
        Some((start, end)) => Cow::Borrowed(&tensor.storage::<f32>()[start..end]),
        None => Cow::Owned(tensor.to_contiguous().storage::<f32>().to_vec()),
    }
}

fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn last_dim(shape: &Shape) -> usize {
    shape[shape.num_dims() - 1]
}

/// Integer targets as indices, checked against the number of classes.
fn indices(targets: IntTensor<Flex>, classes: usize) -> Vec<usize> {
    let targets = targets.into_data().convert::<i64>();
    let targets = targets.as_slice::<i64>().expect("i64 after convert");
    targets
        .iter()
        .map(|&t| {
            assert!(
                (0..classes as i64).contains(&t),
                "cross-entropy target {t} is outside 0..{classes}"
            );
            t as usize
        })
        .collect()
}

/// Runs `kernel` on an attention call's inputs as `f32` slices, or returns `None` where the
/// block kernel does not take them (another dtype, shapes that do not line up, a bias that
/// does not broadcast row by row).
fn with_attention_slices<R>(
    inputs: &AttentionInputs<Flex>,
    kernel: impl FnOnce(&cpu_kernels::AttentionInputs) -> R,
) -> Option<R> {
    let AttentionInputs {
        query,
        key,
        value,
        bias,
        scale,
    } = inputs;
    let all_f32 = [query, key, value].into_iter().all(is_f32) && bias.as_ref().is_none_or(is_f32);
    let ranks = [query, key, value].map(|t| t.shape().num_dims());
    if !all_f32 || ranks != [4; 3] {
        return None;
    }
    let [batch, heads, seq_q, d_key] = query.shape().dims::<4>();
    let [key_batch, key_heads, seq_k, key_d] = key.shape().dims::<4>();
    let [value_batch, value_heads, value_seq, d_value] = value.shape().dims::<4>();
    if [key_batch, key_heads, key_d] != [batch, heads, d_key]
        || [value_batch, value_heads, value_seq] != [batch, heads, seq_k]
    {
        return None;
    }
    let bias_values = bias.as_ref().map(values);
    let bias_rows = match (bias, &bias_values) {
        (Some(bias), Some(values)) => {
            BiasRows::new(values, &bias.shape(), &[batch, heads, seq_q, seq_k])?
        }
        _ => BiasRows::none(),
    };
    let (query, key, value) = (values(query), values(key), values(value));
    Some(kernel(&cpu_kernels::AttentionInputs {
        sizes: AttentionSizes {
            problems: batch * heads,
            seq_q,
            seq_k,
            d_key,
            d_value,
        },
        query: &query,
        key: &key,
        value: &value,
        bias: &bias_rows,
        scale: *scale as f32,
    }))
}

/// The block kernel's forward ([`cpu_kernels::attention_forward`]): the output and the rows'
/// statistics, if the kernel takes the inputs.
fn block_attention(inputs: &AttentionInputs<Flex>) -> Option<(FlexTensor, FlexTensor)> {
    with_attention_slices(inputs, |slices| {
        let AttentionSizes { seq_q, d_value, .. } = slices.sizes;
        let [batch, heads, ..] = inputs.query.shape().dims::<4>();
        let mut out = vec![0.0; batch * heads * seq_q * d_value];
        let mut statistics = vec![0.0; batch * heads * seq_q * 2];
        cpu_kernels::attention_forward(slices, &mut out, &mut statistics);
        (
            from_vec(out, Shape::new([batch, heads, seq_q, d_value])),
            from_vec(statistics, Shape::new([batch, heads, seq_q, 2])),
        )
    })
}

/// The last two dimensions of a rank-`rank` `f32` tensor as a [`cpu_kernels::Matrix`] over its
/// storage, starting at its first entry (any strides that are not negative).
fn trailing_matrix(tensor: &FlexTensor, rank: usize) -> Option<cpu_kernels::Matrix<'_>> {
    let layout = tensor.layout();
    if !is_f32(tensor) || layout.num_dims() != rank {
        return None;
    }
    let (shape, strides) = (layout.shape(), layout.strides());
    Some(cpu_kernels::Matrix {
        values: tensor.storage::<f32>(),
        offset: layout.start_offset(),
        rows: shape[rank - 2],
        columns: shape[rank - 1],
        row_stride: usize::try_from(strides[rank - 2]).ok()?,
        column_stride: usize::try_from(strides[rank - 1]).ok()?,
    })
}

/// A rank-2 `f32` tensor as a [`cpu_kernels::Matrix`].
fn matrix(tensor: &FlexTensor) -> Option<cpu_kernels::Matrix<'_>> {
    trailing_matrix(tensor, 2)
}

/// A rank-3 `f32` tensor as a [`cpu_kernels::MatrixBatch`] over its storage.
fn matrix_batch(tensor: &FlexTensor) -> Option<cpu_kernels::MatrixBatch<'_>> {
    Some(cpu_kernels::MatrixBatch {
        first: trailing_matrix(tensor, 3)?,
        count: tensor.shape()[0],
        stride: usize::try_from(tensor.layout().strides()[0]).ok()?,
    })
}

/// `lhs · rhs (+ bias)` by [`cpu_kernels::matrix_product`], or `None` for operands it does
/// not take (another dtype or rank, sizes that do not line up).
fn matrix_product(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    let (a, b) = (matrix(lhs)?, matrix(rhs)?);
    let bias = match bias {
        Some(bias) if !is_f32(bias) || bias.shape().as_slice() != [b.columns] => return None,
        Some(bias) => Some(values(bias)),
        None => None,
    };
    if a.columns != b.rows {
        return None;
    }
    let product = cpu_kernels::matrix_product(&a, &b, bias.as_deref());
    Some(from_vec(product, [a.rows, b.columns].into()))
}

/// The batch size of `x` if it is `f32` images of the shape `geometry` describes.
fn conv_images(x: &FlexTensor, geometry: &ConvGeometry) -> Option<usize> {
    let shape = x.shape();
    let fits = shape.num_dims() == 4
        && shape[1..] == [geometry.channels, geometry.input[0], geometry.input[1]];
    (is_f32(x) && fits).then_some(shape[0])
}

impl Backend for Flex {
    /// One block of query rows at a time, skipping the keys the mask hides block by block
    /// (see [`cpu_kernels::attention_forward`]).
    fn fused_attention(inputs: AttentionInputs<Self>) -> FloatTensor<Self> {
        match block_attention(&inputs) {
            Some((output, _)) => output,
            None => generic::fused_attention::<Self>(inputs),
        }
    }

    /// Keeps two numbers a row instead of the probabilities: the backward recomputes them
    /// block by block, so training holds no `[batch, heads, seq_q, seq_k]` tensor.
    fn attention_training_forward(inputs: AttentionInputs<Self>) -> AttentionForward<Self> {
        match block_attention(&inputs) {
            Some((output, statistics)) => AttentionForward {
                output,
                saved: AttentionSaved::RowStatistics(statistics),
            },
            None => generic::attention_training_forward::<Self>(inputs),
        }
    }

    fn attention_backward(
        inputs: AttentionInputs<Self>,
        saved: AttentionSaved<Self>,
        grad_out: FloatTensor<Self>,
    ) -> AttentionGradients<Self> {
        let [batch, heads, seq_q, _] = inputs.query.shape().dims::<4>();
        let statistics = match &saved {
            AttentionSaved::RowStatistics(statistics) => statistics,
            AttentionSaved::Probabilities(_) => {
                return generic::attention_backward::<Self>(inputs, saved, grad_out)
            }
        };
        let fits = is_f32(&grad_out)
            && grad_out.shape().num_dims() == 4
            && grad_out.shape().dims::<4>()[..3] == [batch, heads, seq_q];
        let computed = fits.then(|| {
            let grad_values = values(&grad_out);
            let statistics = values(statistics);
            with_attention_slices(&inputs, |slices| {
                let mut query = vec![0.0; slices.query.len()];
                let mut key = vec![0.0; slices.key.len()];
                let mut value = vec![0.0; slices.value.len()];
                let grads = cpu_kernels::AttentionGradientsMut {
                    query: &mut query,
                    key: &mut key,
                    value: &mut value,
                };
                cpu_kernels::attention_backward(slices, &statistics, &grad_values, grads);
                AttentionGradients {
                    query: from_vec(query, inputs.query.shape()),
                    key: from_vec(key, inputs.key.shape()),
                    value: from_vec(value, inputs.value.shape()),
                }
            })
        });
        match computed.flatten() {
            Some(grads) => grads,
            None => generic::attention_backward::<Self>(inputs, saved, grad_out),
        }
    }

    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        match matrix_product(&x, &weight, bias.as_ref()) {
            Some(out) => out,
            None => generic::linear_rows::<Self>(x, weight, bias),
        }
    }

    fn matmul_2d(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        match matrix_product(&lhs, &rhs, None) {
            Some(out) => out,
            None => Self::float_matmul(lhs, rhs),
        }
    }

    /// Measured on the patch encoder's convolutions (3 and 16 channels, 3x3 stride 2): burn's
    /// direct convolution and its backward's strided copies took a fifth of the classifier's
    /// step.
    const CONV_AS_GEMM: bool = true;

    /// Each image's columns built in a buffer of the thread's own and multiplied there
    /// ([`cpu_kernels::convolve`]).
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let out_channels = weight.shape()[0];
        let Some(batch) = conv_images(&x, &geometry).filter(|_| is_f32(&weight)) else {
            return generic::conv2d_gemm::<Self>(x, weight, geometry);
        };
        let weight = Self::float_reshape(weight, [out_channels, geometry.column_rows()].into());
        let weight = matrix(&weight).expect("a rank-2 f32 tensor");
        let out = cpu_kernels::convolve(&weight, &values(&x), &geometry);
        let [out_h, out_w] = geometry.output();
        from_vec(out, [batch, out_channels, out_h, out_w].into())
    }

    fn conv2d_weight_gradient(
        rows: FloatTensor<Self>,
        x: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let gradient =
            conv_images(&x, &geometry)
                .zip(matrix_batch(&rows))
                .map(|(_, rows_batch)| {
                    let m = rows_batch.first.rows;
                    let values = cpu_kernels::convolution_weight_gradient(
                        &rows_batch,
                        &values(&x),
                        &geometry,
                    );
                    from_vec(values, [m, geometry.column_rows()].into())
                });
        gradient.unwrap_or_else(|| generic::conv2d_weight_gradient::<Self>(rows, x, geometry))
    }

    fn conv2d_input_gradient(
        weight: FloatTensor<Self>,
        rows: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let weight_t = Self::float_transpose(weight.clone());
        let images = matrix(&weight_t)
            .zip(matrix_batch(&rows))
            .map(|(w, rows_batch)| {
                let values = cpu_kernels::columns_to_images_of_products(&w, &rows_batch, &geometry);
                let [h, w] = geometry.input;
                from_vec(values, [rows_batch.count, geometry.channels, h, w].into())
            });
        images.unwrap_or_else(|| generic::conv2d_input_gradient::<Self>(weight, rows, geometry))
    }

    fn softmax_with_bias(
        scores: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        if !is_f32(&scores) || bias.as_ref().is_some_and(|bias| !is_f32(bias)) {
            return generic::softmax_with_bias::<Self>(scores, bias);
        }
        let shape = scores.shape();
        let bias_values = bias.as_ref().map(values);
        let rows = match (&bias, &bias_values) {
            (Some(bias), Some(values)) => match BiasRows::new(values, &bias.shape(), &shape) {
                Some(rows) => rows,
                None => return generic::softmax_with_bias::<Self>(scores, Some(bias.clone())),
            },
            _ => BiasRows::none(),
        };
        let mut scores = owned(scores);
        cpu_kernels::softmax_rows(scores.storage_mut::<f32>(), last_dim(&shape), &rows);
        scores
    }

    fn softmax_backward(p: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&p) || !is_f32(&grad) || p.shape() != grad.shape() {
            return generic::softmax_backward::<Self>(p, grad);
        }
        let row_len = last_dim(&p.shape());
        let mut grad = owned(grad);
        cpu_kernels::softmax_backward(&values(&p), grad.storage_mut::<f32>(), row_len);
        grad
    }

    /// By selection ([`cpu_kernels::kth_largest_per_row`]), not a sort.
    fn kth_largest(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        let shape = x.shape();
        if !is_f32(&x) || shape.num_dims() != 2 || !(1..=shape[1]).contains(&k) {
            return generic::kth_largest::<Self>(x, k);
        }
        let [rows, n] = shape.dims::<2>();
        let kth = cpu_kernels::kth_largest_per_row(&values(&x), n, k);
        from_vec(kth, Shape::new([rows, 1]))
    }

    fn swap_middle_dims(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&x) {
            return Self::float_swap_dims(x, 1, 2);
        }
        let [a, b, c, d] = x.shape().dims::<4>();
        if b == 1 || c == 1 {
            // Nothing moves (one decoding step's query): a reshape of the same memory.
            return Self::float_reshape(x, Shape::new([a, c, b, d]));
        }
        let mut out = vec![0.0; a * b * c * d];
        cpu_kernels::swap_middle_dims(&values(&x), [a, b, c, d], &mut out);
        from_vec(out, Shape::new([a, c, b, d]))
    }

    /// In place on the parameter and the moments when Flex holds them alone (as the optimizer
    /// does), one pass over the four.
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: &AdamWStep,
    ) -> AdamWUpdate<Self> {
        let shape = param.shape();
        let all_f32 = [&param, &grad, &moment_1, &moment_2]
            .iter()
            .all(|x| is_f32(x));
        let same_shape = [&grad, &moment_1, &moment_2]
            .iter()
            .all(|x| x.shape() == shape);
        if !all_f32 || !same_shape {
            return generic::adamw_step::<Self>(param, grad, moment_1, moment_2, step);
        }
        let [mut param, mut moment_1, mut moment_2] = [param, moment_1, moment_2].map(owned);
        cpu_kernels::adamw_update(
            param.storage_mut::<f32>(),
            &values(&grad),
            moment_1.storage_mut::<f32>(),
            moment_2.storage_mut::<f32>(),
            step,
        );
        AdamWUpdate {
            param,
            moment_1,
            moment_2,
        }
    }

    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&x) {
            return Self::gelu(x);
        }
        let mut out = vec![0.0; x.layout().num_elements()];
        cpu_kernels::gelu(&values(&x), &mut out);
        from_vec(out, x.shape())
    }

    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&x) || !is_f32(&grad) || x.shape() != grad.shape() {
            return Self::gelu_backward(x, grad);
        }
        let mut out = vec![0.0; x.layout().num_elements()];
        cpu_kernels::gelu_backward(&values(&x), &values(&grad), &mut out);
        from_vec(out, x.shape())
    }

    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3] {
        let shape = x.shape();
        let d = last_dim(&shape);
        let fits = gamma.shape().num_elements() == d && grad.shape() == shape && d > 0;
        if !is_f32(&x) || !is_f32(&gamma) || !is_f32(&grad) || !fits {
            return generic::layer_norm_backward::<Self>(x, gamma, grad, epsilon);
        }
        let mut d_x = vec![0.0; shape.num_elements()];
        let mut d_gamma_beta = vec![0.0; 2 * d];
        let (x, grad, gamma) = (values(&x), values(&grad), values(&gamma));
        let rows = LayerNormRows {
            x: &x,
            grad: &grad,
            gamma: &gamma,
            epsilon: epsilon as f32,
        };
        cpu_kernels::layer_norm_backward(&rows, &mut d_x, &mut d_gamma_beta);
        let d_beta = d_gamma_beta.split_off(d);
        [
            from_vec(d_x, shape),
            from_vec(d_gamma_beta, Shape::new([d])),
            from_vec(d_beta, Shape::new([d])),
        ]
    }

    fn cross_entropy_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !is_f32(&logits) {
            return generic::cross_entropy_forward::<Self>(logits, targets);
        }
        let [n, classes] = logits.shape().dims::<2>();
        let targets = indices(targets, classes);
        let logits = values(&logits);
        let mut statistics = vec![0.0; 2 * n];
        cpu_kernels::row_statistics(&logits, classes, &mut statistics);
        // (max − x_t) + log_sum: both terms exact to f32 precision.
        let nll = (0..n)
            .map(|i| (statistics[2 * i] - logits[i * classes + targets[i]]) + statistics[2 * i + 1])
            .collect();
        (
            from_vec(nll, Shape::new([n])),
            from_vec(statistics, Shape::new([n, 2])),
        )
    }

    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        statistics: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !is_f32(&logits) || !is_f32(&statistics) || !is_f32(&grad) {
            return generic::cross_entropy_backward::<Self>(logits, statistics, targets, grad);
        }
        let shape = logits.shape();
        let [_, classes] = shape.dims::<2>();
        let targets = indices(targets, classes);
        let mut out = vec![0.0; shape.num_elements()];
        cpu_kernels::cross_entropy_backward(
            &values(&logits),
            classes,
            &values(&statistics),
            &targets,
            &values(&grad),
            &mut out,
        );
        from_vec(out, shape)
    }
}
