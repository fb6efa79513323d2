//! Convolutions one image at a time, forward and backward, on `f32` memory.
//!
//! Why: as im2col + one product over the whole batch, a convolution materialised every
//! image's column matrix (`[batch, c·kh·kw, h·w]`, 9x its input for a 3x3 kernel) and kept
//! it for the backward pass, for every layer at once: the VQ-VAE's resident set grew 45 MiB
//! in a training step where PyTorch's grew 8. Here each thread builds one image's columns in
//! a buffer of its own, multiplies them, and reuses the buffer for its next image; the
//! backward rebuilds them from the input (a copy, cheap next to the product) instead of
//! keeping them.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::matmul::{parallelism_for, product_into, Matrix, MatrixBatch, SERIAL};
use super::{columns_to_image, image_to_columns, ConvGeometry};

/// Images summed into one partial weight gradient before the partials are added. A fixed
/// count, not one share per thread, so that the sum's order (and its rounding) does not
/// depend on the number of threads.
const IMAGES_PER_SHARE: usize = 4;

/// One image's column matrix as a [`Matrix`] over `columns` (`[c·kh·kw, oh·ow]` row-major).
fn columns_matrix<'a>(columns: &'a [f32], g: &ConvGeometry) -> Matrix<'a> {
    let [oh, ow] = g.output();
    Matrix {
        values: columns,
        offset: 0,
        rows: g.column_rows(),
        columns: oh * ow,
        row_stride: oh * ow,
        column_stride: 1,
    }
}

/// A 1x1 convolution of stride 1 without padding, whose column matrix is the image itself
/// (the VQ-VAE's residual blocks and code projection): no copy is needed.
fn is_pointwise(g: &ConvGeometry) -> bool {
    g.kernel == [1, 1] && g.stride == [1, 1] && g.padding == [0, 0]
}

/// Room for one image's columns (none for a pointwise convolution).
fn columns_buffer(g: &ConvGeometry) -> Vec<f32> {
    let [oh, ow] = g.output();
    let len = if is_pointwise(g) {
        0
    } else {
        g.column_rows() * oh * ow
    };
    vec![0.0; len]
}

/// One image's column matrix: the image itself for a pointwise convolution, else built in
/// `buffer` ([`columns_buffer`]).
fn image_columns<'a>(image: &'a [f32], g: &ConvGeometry, buffer: &'a mut [f32]) -> Matrix<'a> {
    if is_pointwise(g) {
        columns_matrix(image, g)
    } else {
        image_to_columns(image, g, buffer);
        columns_matrix(buffer, g)
    }
}

fn check_images(images: &[f32], g: &ConvGeometry) -> usize {
    let image_len = g.channels * g.input[0] * g.input[1];
    assert!(
        image_len > 0 && images.len().is_multiple_of(image_len),
        "{} values are not whole [{}, {}, {}] images",
        images.len(),
        g.channels,
        g.input[0],
        g.input[1]
    );
    images.len() / image_len
}

/// The convolution `weight · im2col(image)` of every image, as a new row-major
/// `[batch, weight.rows, oh·ow]` buffer written once.
///
/// # Panics
/// If `images` is not whole images, `weight.columns` is not `c·kh·kw`, or the weight reaches
/// outside its slice.
pub fn convolve(weight: &Matrix, images: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let batch = check_images(images, g);
    let image_len = images.len() / batch.max(1);
    let [oh, ow] = g.output();
    let (m, k, p) = (weight.rows, g.column_rows(), oh * ow);
    assert_eq!(
        weight.columns, k,
        "weights of [{m}, {}] for {k} column rows",
        weight.columns
    );
    assert!(weight.in_bounds(), "the weights reach outside their values");
    let len = batch * m * p;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let write = |buffer: &mut Vec<f32>, i: usize, dst: &mut [MaybeUninit<f32>], parallelism| {
        let columns = image_columns(&images[i * image_len..(i + 1) * image_len], g, buffer);
        // SAFETY: the weights were checked to lie in their slice and to have `k` columns;
        // `columns` holds `k x p` entries; `dst` is this image's `m x p` entries of the fresh
        // buffer, all of which `gemm` writes.
        unsafe {
            product_into(
                dst.as_mut_ptr().cast(),
                false,
                weight,
                &columns,
                parallelism,
            )
        }
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if batch == 1 {
        write(&mut columns_buffer(g), 0, spare, parallelism_for(m * k * p));
    } else {
        spare.par_chunks_mut(m * p).enumerate().for_each_init(
            || columns_buffer(g),
            |buffer, (i, dst)| write(buffer, i, dst, SERIAL),
        );
    }
    // SAFETY: every image's product was written.
    unsafe { out.set_len(len) };
    out
}

/// The weight gradient `Σ_b rows[b] · im2col(image_b)ᵀ`, `[rows.first.rows, c·kh·kw]`
/// row-major (with `rows` the output's gradient, a convolution's; with `rows` the input, a
/// transposed convolution's, whose `images` are then its output's gradient).
///
/// # Panics
/// If `images` is not whole images, the batch sizes differ, `rows` is not `[·, oh·ow]`, or a
/// matrix reaches outside its slice.
pub fn convolution_weight_gradient(
    rows: &MatrixBatch,
    images: &[f32],
    g: &ConvGeometry,
) -> Vec<f32> {
    let batch = check_images(images, g);
    let image_len = images.len() / batch.max(1);
    let [oh, ow] = g.output();
    let (m, k, p) = (rows.first.rows, g.column_rows(), oh * ow);
    assert!(
        rows.count == batch && rows.first.columns == p,
        "weight gradient of [{}, {m}, {}] against {batch} images' [{k}, {p}] columns",
        rows.count,
        rows.first.columns
    );
    assert!(rows.in_bounds(), "a matrix reaches outside its values");
    // (`gemm` would not write a product over no terms.)
    if batch == 0 || m * k == 0 || p == 0 {
        return vec![0.0; m * k];
    }
    let shares = batch.div_ceil(IMAGES_PER_SHARE);
    let parallelism = if shares == 1 {
        parallelism_for(m * k * p * batch)
    } else {
        SERIAL
    };
    let share = |s: usize| {
        let mut buffer = columns_buffer(g);
        let mut sum = Vec::with_capacity(m * k);
        let first = s * IMAGES_PER_SHARE;
        for i in first..(first + IMAGES_PER_SHARE).min(batch) {
            let columns =
                image_columns(&images[i * image_len..(i + 1) * image_len], g, &mut buffer);
            // The columns transposed: the same memory with the strides swapped.
            let columns_t = Matrix {
                rows: p,
                columns: k,
                row_stride: 1,
                column_stride: p,
                ..columns
            };
            // SAFETY: `rows` was checked to lie in its slice with `p` columns; the columns
            // hold `k x p` entries; `sum` has room for `m x k`, which the share's first
            // product writes and the rest add to.
            unsafe {
                product_into(
                    sum.as_mut_ptr(),
                    i > first,
                    &rows.get(i),
                    &columns_t,
                    parallelism,
                )
            };
        }
        // SAFETY: written by the share's first product (a share holds at least one image).
        unsafe { sum.set_len(m * k) };
        sum
    };
    let mut sums: Vec<Vec<f32>> = (0..shares).into_par_iter().map(share).collect();
    let mut total = sums.remove(0);
    for sum in sums {
        total.iter_mut().zip(sum).for_each(|(t, s)| *t += s);
    }
    total
}

/// col2im(`weight_t · rows[b]`) for every image, `[batch, c, h, w]` row-major: a
/// convolution's input gradient (`weight_t` its weights transposed, `rows` its output's
/// gradient), or a transposed convolution (`rows` its input).
///
/// # Panics
/// If `weight_t` is not `[c·kh·kw, m]` for `rows` of `[·, m, oh·ow]`, or a matrix reaches
/// outside its slice.
pub fn columns_to_images_of_products(
    weight_t: &Matrix,
    rows: &MatrixBatch,
    g: &ConvGeometry,
) -> Vec<f32> {
    let [oh, ow] = g.output();
    let (k, m, p) = (g.column_rows(), weight_t.columns, oh * ow);
    assert!(
        weight_t.rows == k && rows.first.rows == m && rows.first.columns == p,
        "col2im of [{}, {}] · [{}, {}, {}] for [{k}, {p}] columns",
        weight_t.rows,
        weight_t.columns,
        rows.count,
        rows.first.rows,
        rows.first.columns
    );
    assert!(
        weight_t.in_bounds() && rows.in_bounds(),
        "a matrix reaches outside its values"
    );
    let image_len = g.channels * g.input[0] * g.input[1];
    let mut images = vec![0.0; rows.count * image_len];
    if images.is_empty() {
        return images;
    }
    let write = |buffer: &mut Vec<f32>, i: usize, image: &mut [f32], parallelism| {
        // A pointwise convolution's columns are its image: the product goes straight there.
        let pointwise = is_pointwise(g);
        let columns = if pointwise {
            &mut *image
        } else {
            &mut buffer[..]
        };
        // SAFETY: both operands were checked above; `columns` has room for `k x p` entries,
        // all of which `gemm` writes.
        unsafe {
            product_into(
                columns.as_mut_ptr(),
                false,
                weight_t,
                &rows.get(i),
                parallelism,
            )
        };
        if !pointwise {
            columns_to_image(buffer, g, image);
        }
    };
    if rows.count == 1 {
        write(
            &mut columns_buffer(g),
            0,
            &mut images,
            parallelism_for(m * k * p),
        );
    } else {
        images.par_chunks_mut(image_len).enumerate().for_each_init(
            || columns_buffer(g),
            |buffer, (i, image)| write(buffer, i, image, SERIAL),
        );
    }
    images
}
