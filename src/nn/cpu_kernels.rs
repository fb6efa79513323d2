//! Row and element kernels for the CPU backend (Flex), on plain `f32` slices: exact GELU and
//! its derivative, softmax of attention scores plus a bias and its backward, row-wise
//! cross-entropy and its backward, and layer normalisation's backward.
//!
//! Why: Flex computes GELU with a scalar libm `erf` per element (forward and backward were
//! 15% of the classifier's training step), adds a `[1, 1, s, s]` or `[b, 1, 1, s]` attention
//! bias through its generic strided loop (13% of DALL-E's step) and runs softmax and
//! log-softmax as separate passes with a scalar `exp`. Here each is one pass over memory, with
//! `exp` and `erf` written as branch-free polynomials that the compiler vectorises (16 lanes
//! where the CPU has AVX-512, 8 where it has AVX2 and FMA, chosen at run time; 4 otherwise), and rows split
//! across rayon's threads.
//!
//! Accuracy (tests below, against `f64` references): `exp` within 3e-7 relative, `erf` within
//! 5e-7 absolute (the rational approximation Eigen, XLA and TVM use), GELU within 1e-6.

use rayon::prelude::*;

/// Elements per parallel task: below this, splitting costs more than it saves.
const CHUNK: usize = 16 * 1024;

/// Runs `work(task, piece)` over `out` cut into `chunk`-long pieces: on rayon's threads when
/// there is more than one piece, inline otherwise (handing one small task to the pool and
/// waiting for it costs more than the task, e.g. in a decoding step).
fn split_work(out: &mut [f32], chunk: usize, work: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() <= chunk {
        work(0, out)
    } else {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(task, piece)| work(task, piece));
    }
}

/// Runs `body` compiled for AVX-512 when the CPU has it, else for AVX2 + FMA when it has
/// those, else for the baseline. The same source serves every tier: the compiler vectorises
/// `body`'s loops to each tier's width (16, 8 or 4 lanes).
macro_rules! vectorised {
    ($body:ident($($arg:ident: $ty:ty),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            fn widest($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            fn wide($($arg: $ty),*) {
                $body($($arg),*)
            }
            use $crate::nn::cpu_kernels::{lanes, Lanes};
            match lanes() {
                // SAFETY: `lanes` checked the CPU for each tier's features.
                Lanes::Sixteen => return unsafe { widest($($arg),*) },
                Lanes::Eight => return unsafe { wide($($arg),*) },
                Lanes::Four => {}
            }
        }
        $body($($arg),*)
    }};
}

mod adamw;
mod attention;
mod convolution;
mod few_rows;
mod matmul;
mod reductions;
pub use adamw::{adamw_update, AdamWStep};
pub use attention::{
    attention_backward, attention_forward, AttentionGradientsMut, AttentionInputs, AttentionSizes,
    HIDDEN,
};
pub use convolution::{columns_to_images_of_products, convolution_weight_gradient, convolve};
pub use matmul::{matrix_product, Matrix, MatrixBatch};

/// The widest vectors this CPU computes in (f32 lanes).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    Sixteen,
    Eight,
    Four,
}

#[cfg(target_arch = "x86_64")]
fn lanes() -> Lanes {
    static LANES: std::sync::OnceLock<Lanes> = std::sync::OnceLock::new();
    *LANES.get_or_init(|| {
        use std::arch::is_x86_feature_detected as has;
        let wide = has!("avx2") && has!("fma");
        if wide && has!("avx512f") && has!("avx512vl") {
            Lanes::Sixteen
        } else if wide {
            Lanes::Eight
        } else {
            Lanes::Four
        }
    })
}

/// `e^x`, f32, by Cody-Waite range reduction and Cephes' degree-6 polynomial; 0 below
/// `-87.3` (where f32 underflows), `e^88.37` above 88.37 (callers here pass `x ≤ 0`).
/// Arithmetic and bit operations only, so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.3, 88.37);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * scale
    }
}

/// The error function, f32: `x·α(x²)/β(x²)` on `[-4, 4]` (±1 beyond, where f32 erf is ±1).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_473_9e-2;
    x * p / q
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_body(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn gelu_backward_body(x: &[f32], grad: &[f32], out: &mut [f32]) {
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
        let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
        *o = g * (cdf + v * pdf);
    }
}

fn gelu_chunk(x: &[f32], out: &mut [f32]) {
    vectorised!(gelu_body(x: &[f32], out: &mut [f32]))
}

fn gelu_backward_chunk(x: &[f32], grad: &[f32], out: &mut [f32]) {
    vectorised!(gelu_backward_body(x: &[f32], grad: &[f32], out: &mut [f32]))
}

/// `out = x · Φ(x)` (exact, erf-based GELU, as PyTorch's default).
pub fn gelu(x: &[f32], out: &mut [f32]) {
    split_work(out, CHUNK, |task, out| {
        let start = task * CHUNK;
        gelu_chunk(&x[start..start + out.len()], out)
    });
}

/// `out = grad · (Φ(x) + x · φ(x))`, the derivative of [`gelu`] times the incoming gradient.
pub fn gelu_backward(x: &[f32], grad: &[f32], out: &mut [f32]) {
    split_work(out, CHUNK, |task, out| {
        let range = task * CHUNK..task * CHUNK + out.len();
        gelu_backward_chunk(&x[range.clone()], &grad[range], out)
    });
}

/// One row: `row = softmax(row + bias)`.
#[inline(always)]
fn softmax_row_body(row: &mut [f32], bias: &[f32]) {
    if !bias.is_empty() {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    let max = reductions::max(row);
    let sum = reductions::exp_in_place_sum(row, max);
    let inverse = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inverse;
    }
}

#[inline(always)]
fn softmax_rows_body(rows: &mut [f32], row_len: usize, first_row: usize, bias: &BiasRows) {
    for (i, row) in rows.chunks_exact_mut(row_len).enumerate() {
        softmax_row_body(row, bias.row(first_row + i));
    }
}

fn softmax_rows_chunk(rows: &mut [f32], row_len: usize, first_row: usize, bias: &BiasRows) {
    vectorised!(softmax_rows_body(
        rows: &mut [f32],
        row_len: usize,
        first_row: usize,
        bias: &BiasRows
    ))
}

/// Which bias row each score row adds: the scores are `[outer..., rows, row_len]` in row-major
/// order and the bias has the same rank, each dimension equal or 1 (broadcast).
#[derive(Debug, Clone)]
pub struct BiasRows<'a> {
    values: &'a [f32],
    /// Per leading dimension of the scores (all but the last): its size, and the bias's
    /// stride in rows (0 where the bias broadcasts).
    dims: Vec<(usize, usize)>,
    row_len: usize,
}

impl<'a> BiasRows<'a> {
    /// No bias.
    pub fn none() -> BiasRows<'static> {
        BiasRows {
            values: &[],
            dims: Vec::new(),
            row_len: 0,
        }
    }

    /// `bias` (contiguous, shape `bias_shape`) broadcast to `scores_shape`, or `None` if the
    /// shapes do not broadcast that way or the last dimensions differ.
    pub fn new(values: &'a [f32], bias_shape: &[usize], scores_shape: &[usize]) -> Option<Self> {
        let rank = scores_shape.len();
        if rank == 0 || bias_shape.len() != rank || bias_shape[rank - 1] != scores_shape[rank - 1] {
            return None;
        }
        if values.len() != bias_shape.iter().product::<usize>() {
            return None;
        }
        let row_len = scores_shape[rank - 1];
        let mut dims = vec![(0, 0); rank - 1];
        let mut stride = 1;
        for d in (0..rank - 1).rev() {
            let (size, bias_size) = (scores_shape[d], bias_shape[d]);
            if bias_size != size && bias_size != 1 {
                return None;
            }
            dims[d] = (size, if bias_size == 1 { 0 } else { stride });
            stride *= bias_size;
        }
        Some(Self {
            values,
            dims,
            row_len,
        })
    }

    /// The bias row that score row `row` adds (empty without a bias).
    #[inline(always)]
    fn row(&self, mut row: usize) -> &[f32] {
        if self.values.is_empty() {
            return &[];
        }
        let mut bias_row = 0;
        for &(size, stride) in self.dims.iter().rev() {
            bias_row += (row % size) * stride;
            row /= size;
        }
        &self.values[bias_row * self.row_len..(bias_row + 1) * self.row_len]
    }
}

/// In place over rows of length `row_len`: `softmax(scores + bias)`.
pub fn softmax_rows(scores: &mut [f32], row_len: usize, bias: &BiasRows) {
    let rows_per_task = (CHUNK / row_len.max(1)).max(1);
    split_work(scores, rows_per_task * row_len, |task, rows| {
        softmax_rows_chunk(rows, row_len, task * rows_per_task, bias)
    });
}

#[inline(always)]
fn softmax_backward_body(p: &[f32], grad: &mut [f32], row_len: usize) {
    for (p, g) in p.chunks_exact(row_len).zip(grad.chunks_exact_mut(row_len)) {
        let dot = reductions::dot(p, g);
        for (&p, g) in p.iter().zip(g.iter_mut()) {
            *g = p * (*g - dot);
        }
    }
}

fn softmax_backward_chunk(p: &[f32], grad: &mut [f32], row_len: usize) {
    vectorised!(softmax_backward_body(p: &[f32], grad: &mut [f32], row_len: usize))
}

/// In place over rows: the gradient of softmax's input from its output `p` and the gradient
/// of its output, `grad ← p ⊙ (grad − Σ grad ⊙ p)`.
pub fn softmax_backward(p: &[f32], grad: &mut [f32], row_len: usize) {
    let per_task = (CHUNK / row_len.max(1)).max(1) * row_len;
    split_work(grad, per_task, |task, grad| {
        let start = task * per_task;
        softmax_backward_chunk(&p[start..start + grad.len()], grad, row_len)
    });
}

#[inline(always)]
fn row_statistics_body(logits: &[f32], row_len: usize, out: &mut [f32]) {
    for (row, out) in logits.chunks_exact(row_len).zip(out.chunks_exact_mut(2)) {
        let max = reductions::max(row);
        let sum = reductions::exp_sum(row, max);
        out[0] = max;
        out[1] = sum.ln();
    }
}

fn row_statistics_chunk(logits: &[f32], row_len: usize, out: &mut [f32]) {
    vectorised!(row_statistics_body(logits: &[f32], row_len: usize, out: &mut [f32]))
}

/// Per row of length `row_len`: `out[2i] = max_j x_ij` and `out[2i + 1] = log Σ_j exp(x_ij −
/// max)`. Kept apart rather than summed into the log-sum-exp: `x − lse` would lose the low
/// bits of a large `lse`, while `(x − max) − log_sum` is exact to f32's precision.
pub fn row_statistics(logits: &[f32], row_len: usize, out: &mut [f32]) {
    let rows_per_task = (CHUNK / row_len.max(1)).max(1);
    split_work(out, 2 * rows_per_task, |task, out| {
        let start = task * rows_per_task * row_len;
        let logits = &logits[start..start + out.len() / 2 * row_len];
        row_statistics_chunk(logits, row_len, out)
    });
}

#[inline(always)]
fn cross_entropy_backward_body(
    logits: &[f32],
    row_len: usize,
    statistics: &[f32],
    targets: &[usize],
    grad: &[f32],
    out: &mut [f32],
) {
    let rows = logits
        .chunks_exact(row_len)
        .zip(out.chunks_exact_mut(row_len));
    for (i, (row, out)) in rows.enumerate() {
        let (max, log_sum, g) = (statistics[2 * i], statistics[2 * i + 1], grad[i]);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = g * exp((v - max) - log_sum);
        }
        out[targets[i]] -= g;
    }
}

fn cross_entropy_backward_chunk(
    logits: &[f32],
    row_len: usize,
    statistics: &[f32],
    targets: &[usize],
    grad: &[f32],
    out: &mut [f32],
) {
    vectorised!(cross_entropy_backward_body(
        logits: &[f32],
        row_len: usize,
        statistics: &[f32],
        targets: &[usize],
        grad: &[f32],
        out: &mut [f32],
    ))
}

/// The gradient of `−log softmax(logits)[i, targets[i]]` times `grad[i]` with respect to the
/// logits, `grad[i] · (softmax(logits[i]) − onehot(targets[i]))`, from the rows'
/// [`row_statistics`].
pub fn cross_entropy_backward(
    logits: &[f32],
    row_len: usize,
    statistics: &[f32],
    targets: &[usize],
    grad: &[f32],
    out: &mut [f32],
) {
    let rows_per_task = (CHUNK / row_len.max(1)).max(1);
    let per_task = rows_per_task * row_len;
    split_work(out, per_task, |task, out| {
        let rows = task * rows_per_task..(task * rows_per_task + out.len() / row_len);
        cross_entropy_backward_chunk(
            &logits[rows.start * row_len..rows.end * row_len],
            row_len,
            &statistics[2 * rows.start..2 * rows.end],
            &targets[rows.clone()],
            &grad[rows],
            out,
        )
    });
}

/// What layer normalisation's backward reads: its input and the output's gradient (rows of
/// `gamma.len()`), the scale and epsilon.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormRows<'a> {
    pub x: &'a [f32],
    pub grad: &'a [f32],
    pub gamma: &'a [f32],
    pub epsilon: f32,
}

impl<'a> LayerNormRows<'a> {
    /// The same, for the entries `range` of `x` and `grad` (whole rows).
    fn entries(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            x: &self.x[range.clone()],
            grad: &self.grad[range],
            ..*self
        }
    }
}

/// Over `rows`: `dx` as [`layer_norm_backward`] says, and the rows' contributions to `dγ` and
/// `dβ` added to `sums` (`[dγ, dβ]`, `2 · d` long).
#[inline(always)]
fn layer_norm_backward_body(rows: &LayerNormRows, dx: &mut [f32], sums: &mut [f32]) {
    let LayerNormRows {
        x,
        grad,
        gamma,
        epsilon,
    } = *rows;
    let d = gamma.len();
    let inverse_d = 1.0 / d as f32;
    let (d_gamma, d_beta) = sums.split_at_mut(d);
    let rows = x.chunks_exact(d).zip(grad.chunks_exact(d));
    for ((x, grad), dx) in rows.zip(dx.chunks_exact_mut(d)) {
        let mean = x.iter().fold(0.0, |s, &v| s + v) * inverse_d;
        let variance = x.iter().fold(0.0, |s, &v| s + (v - mean) * (v - mean)) * inverse_d;
        let inverse_std = 1.0 / (variance + epsilon).sqrt();
        // dx holds x̂ until the row's two means are known.
        let (mut sum_scaled, mut sum_projection) = (0.0, 0.0);
        for i in 0..d {
            let normalized = (x[i] - mean) * inverse_std;
            let scaled = grad[i] * gamma[i];
            sum_scaled += scaled;
            sum_projection += scaled * normalized;
            d_gamma[i] += grad[i] * normalized;
            d_beta[i] += grad[i];
            dx[i] = normalized;
        }
        let (mean_scaled, mean_projection) = (sum_scaled * inverse_d, sum_projection * inverse_d);
        for i in 0..d {
            dx[i] = inverse_std * (grad[i] * gamma[i] - mean_scaled - dx[i] * mean_projection);
        }
    }
}

fn layer_norm_backward_chunk(rows: &LayerNormRows, dx: &mut [f32], sums: &mut [f32]) {
    vectorised!(layer_norm_backward_body(
        rows: &LayerNormRows,
        dx: &mut [f32],
        sums: &mut [f32]
    ))
}

/// Layer normalisation's backward over rows of `d = gamma.len()`: with `x̂ = (x − mean) · r`,
/// `r = 1 / sqrt(var + ε)` and `g = grad ⊙ γ`, `dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))`
/// per row; `dγ = Σ grad ⊙ x̂` and `dβ = Σ grad` over the rows, written to `d_gamma_beta`
/// (`[dγ, dβ]`). Row blocks of a fixed size run in parallel and their sums are added in
/// block order, so the result does not depend on the number of threads.
pub fn layer_norm_backward(input: &LayerNormRows, dx: &mut [f32], d_gamma_beta: &mut [f32]) {
    let d = input.gamma.len();
    let per_task = (CHUNK / d.max(1)).max(1) * d;
    let block = |task: usize, dx: &mut [f32]| {
        let start = task * per_task;
        let mut sums = vec![0.0; 2 * d];
        layer_norm_backward_chunk(&input.entries(start..start + dx.len()), dx, &mut sums);
        sums
    };
    let blocks: Vec<Vec<f32>> = if dx.len() <= per_task {
        vec![block(0, dx)]
    } else {
        dx.par_chunks_mut(per_task)
            .enumerate()
            .map(|(task, dx)| block(task, dx))
            .collect()
    };
    d_gamma_beta.fill(0.0);
    for sums in blocks {
        for (total, part) in d_gamma_beta.iter_mut().zip(sums) {
            *total += part;
        }
    }
}

/// A 2-D convolution's geometry: input `[channels, height, width]` per image, square-free
/// kernel, stride and symmetric zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub channels: usize,
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl ConvGeometry {
    /// `[height, width]` of the output.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| (self.input[d] + 2 * self.padding[d] - self.kernel[d]) / self.stride[d] + 1)
    }

    /// Rows of one image's column matrix: `channels · kernel_h · kernel_w`.
    pub fn column_rows(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// For column row `(ky, ·)` and output row `oy`, the input row it reads (if inside).
    #[inline(always)]
    fn input_row(&self, ky: usize, oy: usize) -> Option<usize> {
        (oy * self.stride[0] + ky)
            .checked_sub(self.padding[0])
            .filter(|&iy| iy < self.input[0])
    }

    /// For kernel column `kx`: the output columns `ox` whose input column
    /// `ox · stride + kx − padding` lies inside the image, and the input column of the first.
    /// The others read the zero padding.
    #[inline(always)]
    fn inside_columns(&self, kx: usize) -> (std::ops::Range<usize>, usize) {
        let (stride, padding, width) = (self.stride[1], self.padding[1], self.input[1]);
        let first = padding.saturating_sub(kx).div_ceil(stride);
        let end = (width + padding)
            .saturating_sub(kx)
            .div_ceil(stride)
            .min(self.output()[1]);
        let end = end.max(first);
        (first..end, (first * stride + kx).saturating_sub(padding))
    }
}

/// One image's column matrix (im2col): `columns[(c·kh + ky)·kw + kx][oy·ow + ox] =
/// image[c][oy·sy + ky − py][ox·sx + kx − px]`, 0 in the padding. With the weights as
/// `[out_channels, c·kh·kw]`, the convolution is one matrix product.
fn image_to_columns(image: &[f32], g: &ConvGeometry, columns: &mut [f32]) {
    let [oh, ow] = g.output();
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let stride = g.stride[1];
    for c in 0..g.channels {
        let plane = &image[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                let out = &mut columns[row * oh * ow..(row + 1) * oh * ow];
                // Whole runs instead of a bounds check per entry: zeros where the kernel
                // reads the padding, then a copy (stride 1) or a strided read.
                let (inside, first) = g.inside_columns(kx);
                for oy in 0..oh {
                    let out = &mut out[oy * ow..(oy + 1) * ow];
                    let Some(iy) = g.input_row(ky, oy).filter(|_| !inside.is_empty()) else {
                        out.fill(0.0);
                        continue;
                    };
                    out[..inside.start].fill(0.0);
                    out[inside.end..].fill(0.0);
                    let source = &plane[iy * w + first..(iy + 1) * w];
                    let out = &mut out[inside.clone()];
                    if stride == 1 {
                        out.copy_from_slice(&source[..out.len()]);
                    } else {
                        for (o, &v) in out.iter_mut().zip(source.iter().step_by(stride)) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`image_to_columns`] (col2im): every column entry added back to the input
/// position it was read from.
fn columns_to_image(columns: &[f32], g: &ConvGeometry, image: &mut [f32]) {
    let [oh, ow] = g.output();
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let stride = g.stride[1];
    image.fill(0.0);
    for c in 0..g.channels {
        let plane = &mut image[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                let column = &columns[row * oh * ow..(row + 1) * oh * ow];
                let (inside, first) = g.inside_columns(kx);
                if inside.is_empty() {
                    continue;
                }
                for oy in 0..oh {
                    let Some(iy) = g.input_row(ky, oy) else {
                        continue;
                    };
                    let values = &column[oy * ow + inside.start..oy * ow + inside.end];
                    let target = &mut plane[iy * w + first..(iy + 1) * w];
                    for (t, &v) in target.iter_mut().step_by(stride).zip(values) {
                        *t += v;
                    }
                }
            }
        }
    }
}

/// The `k`-th largest entry (`k` from 1) of each `n`-long row of `x`, in `total_cmp` order
/// (a sort's), by selection: top-k sampling's threshold without sorting the row.
pub fn kth_largest_per_row(x: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!((1..=n).contains(&k), "the {k}-th largest of {n} entries");
    let mut row_copy = Vec::with_capacity(n);
    x.chunks(n)
        .map(|row| {
            row_copy.clear();
            row_copy.extend_from_slice(row);
            *row_copy
                .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a))
                .1
        })
        .collect()
}

/// `out[a][c][b][:] = x[a][b][c][:]` for `x` of shape `[outer, rows, cols, inner]`: swaps the
/// middle two dimensions by copying `inner`-long runs (attention's head split and merge).
pub fn swap_middle_dims(x: &[f32], [outer, rows, cols, inner]: [usize; 4], out: &mut [f32]) {
    let plane = rows * cols * inner;
    debug_assert_eq!(out.len(), outer * plane);
    let swap_plane = |(out, x): (&mut [f32], &[f32])| {
        for c in 0..cols {
            for r in 0..rows {
                let from = (r * cols + c) * inner;
                let to = (c * rows + r) * inner;
                out[to..to + inner].copy_from_slice(&x[from..from + inner]);
            }
        }
    };
    if out.len() < CHUNK {
        // Small (a decoding step): threads would cost more than the copy.
        out.chunks_mut(plane)
            .zip(x.chunks(plane))
            .for_each(swap_plane);
    } else {
        split_work(out, plane, |i, out| {
            swap_plane((out, &x[i * plane..(i + 1) * plane]))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 1e-4)
    }

    #[test]
    fn exp_is_within_3e_7_relative_of_f64() {
        let mut worst = 0.0f64;
        for x in grid().map(|x| x * 4.35).chain([-87.0, 88.3, -0.0, 1e-30]) {
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn erf_is_within_5e_7_of_f64() {
        let mut worst = 0.0f64;
        for x in grid().chain([-10.0, 10.0]) {
            worst = worst.max((erf(x) as f64 - libm_erf(x as f64)).abs());
        }
        assert!(worst < 5e-7, "worst absolute error {worst:e}");
    }

    /// erf in f64 from its Taylor series (|x| ≤ 3) and continued fraction of erfc beyond.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + ...)))
            let a = x.abs();
            let mut fraction = 0.0;
            for k in (1..60).rev() {
                fraction = (k as f64 / 2.0) / (a + fraction);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction);
            return x.signum() * (1.0 - erfc);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_and_its_derivative_are_within_1e_6_of_f64() {
        let x: Vec<f32> = grid().map(|x| x * 0.5).collect();
        let grad: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 3) as f32).collect();
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu(&x, &mut y);
        gelu_backward(&x, &grad, &mut dx);
        for i in 0..x.len() {
            let v = x[i] as f64;
            let cdf = 0.5 * (1.0 + libm_erf(v / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (y[i] as f64 - v * cdf).abs() < 1e-6 * (1.0 + v.abs()),
                "gelu({v})"
            );
            let expected = grad[i] as f64 * (cdf + v * pdf);
            assert!(
                (dx[i] as f64 - expected).abs() < 1e-6 * (1.0 + expected.abs()),
                "gelu'({v})"
            );
        }
    }

    #[test]
    fn columns_to_image_is_the_adjoint_of_image_to_columns() {
        // <im2col(x), y> == <x, col2im(y)> for random x, y: what the backward pass relies on.
        let g = ConvGeometry {
            channels: 3,
            input: [7, 6],
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 1],
        };
        let [oh, ow] = g.output();
        assert_eq!([oh, ow], [4, 7]);
        let x: Vec<f32> = (0..2 * 3 * 7 * 6)
            .map(|i| ((i * 37) % 17) as f32 - 8.0)
            .collect();
        let y: Vec<f32> = (0..2 * g.column_rows() * oh * ow)
            .map(|i| ((i * 11) % 13) as f32 - 6.0)
            .collect();
        let (image_len, columns_len) = (x.len() / 2, y.len() / 2);
        let mut columns = vec![0.0; y.len()];
        let mut back = vec![0.0; x.len()];
        for i in 0..2 {
            let (images, cols) = (
                i * image_len..(i + 1) * image_len,
                i * columns_len..(i + 1) * columns_len,
            );
            image_to_columns(&x[images.clone()], &g, &mut columns[cols.clone()]);
            columns_to_image(&y[cols], &g, &mut back[images]);
        }
        let left: f64 = columns.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
        let right: f64 = x.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
        assert_eq!(left, right);
        // One entry by hand: image 1, channel 2, ky 1, kx 0, output (1, 0) reads input (2, -1),
        // in the padding; output (1, 1) reads input (2, 0).
        let row = (2 * 3 + 1) * 2;
        let base = (g.column_rows() + row) * oh * ow;
        assert_eq!(columns[base + ow], 0.0);
        assert_eq!(columns[base + ow + 1], x[(3 + 2) * 42 + 2 * 6]);
    }

    #[test]
    fn softmax_rows_adds_a_broadcast_bias_row_by_row() {
        // scores [2, 3, 2, 4], bias [2, 1, 1, 4] (a padding-like bias).
        let shape = [2, 3, 2, 4];
        let n: usize = shape.iter().product();
        let scores: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let bias: Vec<f32> = (0..8)
            .map(|i| if i % 3 == 0 { -1e9 } else { 0.1 * i as f32 })
            .collect();
        let rows = BiasRows::new(&bias, &[2, 1, 1, 4], &shape).expect("broadcastable");
        let mut out = scores.clone();
        softmax_rows(&mut out, 4, &rows);
        for r in 0..n / 4 {
            let b = r / 6; // batch index of row r
            let logits: Vec<f64> = (0..4)
                .map(|j| scores[r * 4 + j] as f64 + bias[b * 4 + j] as f64)
                .collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = logits.iter().map(|v| (v - max).exp()).sum();
            for j in 0..4 {
                let expected = (logits[j] - max).exp() / sum;
                assert!((out[r * 4 + j] as f64 - expected).abs() < 1e-6);
            }
        }
        assert!(BiasRows::new(&bias, &[2, 1, 1, 4], &[3, 3, 2, 4]).is_none());
    }
}
