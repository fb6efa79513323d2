//! Matrix products on `f32` memory through the `gemm` crate (the one burn-flex multiplies
//! with), for the attention blocks, linear layers and convolutions.

use super::few_rows;

/// A matrix in a slice: `values[offset + i·row_stride + j·column_stride]` is entry `(i, j)`.
/// A transposed view is the same memory with the strides swapped. (Negative strides, a
/// flipped view, are left to the caller's fallback.)
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub values: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub columns: usize,
    pub row_stride: usize,
    pub column_stride: usize,
}

impl Matrix<'_> {
    /// Whether every entry lies inside `values` (the strides are not negative, so the last
    /// entry is the farthest).
    pub(super) fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.columns == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.columns - 1).checked_mul(self.column_stride))
            .and_then(|(down, across)| self.offset.checked_add(down)?.checked_add(across));
        last.is_some_and(|last| last < self.values.len())
    }

    fn pointer(&self) -> *const f32 {
        // In bounds: checked by the caller with `in_bounds`.
        self.values[self.offset..].as_ptr()
    }
}

/// `count` matrices of one shape in one slice, `stride` entries apart (a rank-3 tensor):
/// matrix `i` is `first` moved on by `i·stride`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixBatch<'a> {
    pub first: Matrix<'a>,
    pub count: usize,
    pub stride: usize,
}

impl<'a> MatrixBatch<'a> {
    pub(super) fn get(&self, i: usize) -> Matrix<'a> {
        Matrix {
            offset: self.first.offset + i * self.stride,
            ..self.first
        }
    }

    /// Whether every matrix lies inside the slice (the last one is the farthest).
    pub(super) fn in_bounds(&self) -> bool {
        let Some(last) = self.count.checked_sub(1) else {
            return true;
        };
        let offset = last
            .checked_mul(self.stride)
            .and_then(|moved| moved.checked_add(self.first.offset));
        offset.is_some_and(|offset| {
            Matrix {
                offset,
                ..self.first
            }
            .in_bounds()
        })
    }
}

/// Below this many multiply-adds a product runs on one thread (burn-flex's threshold).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// One thread (a caller that runs one product per rayon task).
pub(super) const SERIAL: gemm::Parallelism = gemm::Parallelism::None;

pub(super) fn parallelism_for(multiply_adds: usize) -> gemm::Parallelism {
    if multiply_adds >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        SERIAL
    }
}

/// `dst (+)= lhs · rhs`, `dst` row-major `[lhs.rows, rhs.columns]`.
///
/// # Safety
/// Both operands lie in their slices (`in_bounds`), their inner sizes agree, and `dst` has
/// room for the product and overlaps neither.
pub(super) unsafe fn product_into(
    dst: *mut f32,
    accumulate: bool,
    lhs: &Matrix,
    rhs: &Matrix,
    parallelism: gemm::Parallelism,
) {
    unsafe {
        gemm_f32(
            [lhs.rows, rhs.columns, lhs.columns],
            (dst, 1, rhs.columns),
            accumulate,
            (lhs.pointer(), lhs.column_stride, lhs.row_stride),
            (rhs.pointer(), rhs.column_stride, rhs.row_stride),
            1.0,
            parallelism,
        )
    }
}

/// `lhs · rhs`, plus `bias` on every row, as a new row-major `[lhs.rows, rhs.columns]`
/// buffer written once: it starts as the bias rows (or is left for `gemm` to fill), so no
/// zero-fill precedes the product. A left side of a few rows (a decoding step) goes to
/// [`few_rows`], which reads the right side in place instead of packing it.
///
/// # Panics
/// If the inner sizes differ, a matrix reaches outside its slice, or the bias is not
/// `rhs.columns` long.
pub fn matrix_product(lhs: &Matrix, rhs: &Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.columns, rhs.columns);
    assert_eq!(
        rhs.rows, k,
        "matrix product of [{m}, {k}] and [{}, {n}]",
        rhs.rows
    );
    assert!(
        lhs.in_bounds() && rhs.in_bounds(),
        "a matrix reaches outside its values"
    );
    let mut out = Vec::with_capacity(m * n);
    match bias {
        Some(bias) => {
            assert_eq!(bias.len(), n, "bias of {} for {n} columns", bias.len());
            for _ in 0..m {
                out.extend_from_slice(bias);
            }
        }
        // `gemm` does not add a product over no terms to an output it does not read.
        None if k == 0 => out.resize(m * n, 0.0),
        None => {}
    }
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    // SAFETY: both operands were checked to lie in their slices; `out` has room for `m x n`
    // row-major entries, and `gemm` writes every one of them (reading them first only when
    // they hold the bias). It is a fresh buffer, so it overlaps neither operand.
    unsafe {
        if few_rows::takes(lhs, rhs) {
            few_rows::product_into(
                out.as_mut_ptr(),
                bias.is_some(),
                lhs,
                rhs,
                m * n * k >= few_rows::PARALLEL_WORK,
            );
        } else {
            product_into(
                out.as_mut_ptr(),
                bias.is_some(),
                lhs,
                rhs,
                parallelism_for(m * n * k),
            );
        }
        out.set_len(m * n);
    }
    out
}

/// `dst = dst + beta·lhs·rhs` when `accumulate`, else `dst = beta·lhs·rhs`, for `f32`
/// operands given as (pointer, column stride, row stride). The attention blocks call it with
/// `Parallelism::None` (they run one problem per rayon task).
///
/// # Safety
/// Every pointer must address an `m x n` (dst), `m x k` (lhs) or `k x n` (rhs) matrix with the
/// given strides, `dst` must be writable and must not overlap the others.
pub(super) unsafe fn gemm_f32(
    [m, n, k]: [usize; 3],
    (dst, dst_cs, dst_rs): (*mut f32, usize, usize),
    accumulate: bool,
    (lhs, lhs_cs, lhs_rs): (*const f32, usize, usize),
    (rhs, rhs_cs, rhs_rs): (*const f32, usize, usize),
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    let [dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs] =
        [dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs].map(|stride| stride as isize);
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}
