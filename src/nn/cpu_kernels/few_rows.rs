//! Products whose left side has only a few rows: a decoding step's `[batch, d_in] ·
//! [d_in, d_out]`, one row per sequence.
//!
//! Why: `gemm` packs the right-hand side into its panel layout before multiplying, which pays
//! off when many rows share each packed panel. With 16 rows it does not: packing a 512 x 2048
//! weight reads and writes 8 MB for 34 MFLOP of arithmetic, and `gemm` reached 31-36 GFLOP/s
//! on such products (2-core AMD EPYC, FP32 peak about 190), so DALL-E's cached generation at
//! 8 x 512 ran below PyTorch's. Here the weight is read in place, row by row, by a kernel that
//! keeps a tile of `ROWS x 16` sums in registers, and the columns are split across threads.
//!
//! Every output entry is one sum over the inner index in order, fused multiply-adds from zero
//! (then `+ dst` when accumulating), whichever tile, task or thread computes it: the result does
//! not depend on the number of threads.

use rayon::prelude::*;

use super::matmul::Matrix;

/// At most this many left-hand rows take this path (beyond it `gemm`'s packing pays off).
pub(super) const MOST_ROWS: usize = 32;
/// Columns per register tile: two 8-lane vectors.
const COLUMNS: usize = 16;
/// Rows per register tile: 6 x 2 vector sums, two weight vectors and a broadcast fill 15 of
/// AVX2's 16 vector registers, and 12 independent sums cover the fused multiply-add's latency.
const ROWS: usize = 6;
/// Products of fewer multiply-adds run on one thread: measured on DALL-E's generation at
/// 2 x 64, where splitting its largest products cost 5-9% of the step.
pub(super) const PARALLEL_WORK: usize = 1 << 20;
/// Multiply-adds per parallel task, at least (smaller tasks cost more to hand out than they
/// save).
const TASK_WORK: usize = 256 * 1024;

/// Whether [`product_into`] takes these operands: a few rows, a right-hand side with
/// contiguous rows, and a CPU with AVX2 and FMA.
pub(super) fn takes(lhs: &Matrix, rhs: &Matrix) -> bool {
    lhs.rows <= MOST_ROWS && rhs.column_stride == 1 && rhs.columns >= COLUMNS && has_fma()
}

#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    super::lanes() != super::Lanes::Four
}

#[cfg(not(target_arch = "x86_64"))]
fn has_fma() -> bool {
    false
}

/// Where the output lives: row-major `[rows, columns]` at `pointer`, shared by the tasks, each
/// of which writes its own columns.
#[derive(Clone, Copy)]
struct Output {
    pointer: *mut f32,
    columns: usize,
}

// SAFETY: tasks write disjoint column ranges of the output (see `product_into`).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

/// `dst (+)= lhs · rhs`, `dst` row-major `[lhs.rows, rhs.columns]`, on rayon's threads when
/// `parallel` and the product is large enough to split.
///
/// # Safety
/// [`takes`] holds, both operands lie in their slices, their inner sizes agree, and `dst` has
/// room for the product and overlaps neither.
pub(super) unsafe fn product_into(
    dst: *mut f32,
    accumulate: bool,
    lhs: &Matrix,
    rhs: &Matrix,
    parallel: bool,
) {
    let output = Output {
        pointer: dst,
        columns: rhs.columns,
    };
    let tiles = rhs.columns.div_ceil(COLUMNS);
    let tile_work = lhs.rows * lhs.columns * COLUMNS;
    let tiles_per_task = TASK_WORK.div_ceil(tile_work.max(1)).max(1);
    // SAFETY (both arms): each call writes the columns of its own tiles only.
    let columns_of = |tile: usize| tile * COLUMNS..((tile + 1) * COLUMNS).min(rhs.columns);
    if parallel && tiles > tiles_per_task {
        (0..tiles)
            .into_par_iter()
            .with_min_len(tiles_per_task)
            .for_each(|tile| unsafe {
                columns_into(output, accumulate, lhs, rhs, columns_of(tile))
            });
    } else {
        let all = 0..rhs.columns;
        unsafe { columns_into(output, accumulate, lhs, rhs, all) }
    }
}

/// Columns `columns` of every output row.
///
/// # Safety
/// As for [`product_into`]; no other task writes these columns.
unsafe fn columns_into(
    output: Output,
    accumulate: bool,
    lhs: &Matrix,
    rhs: &Matrix,
    columns: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `takes` checked for AVX2 and FMA.
    unsafe {
        fma::columns_into(output, accumulate, lhs, rhs, columns)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (output, accumulate, lhs, rhs, columns);
        unreachable!("`takes` is false off x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Matrix, Output, COLUMNS, ROWS};

    /// # Safety
    /// As for [`super::columns_into`], on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns_into(
        output: Output,
        accumulate: bool,
        lhs: &Matrix,
        rhs: &Matrix,
        columns: Range<usize>,
    ) {
        let full_end = columns.start + (columns.len() / COLUMNS) * COLUMNS;
        for column in (columns.start..full_end).step_by(COLUMNS) {
            let mut row = 0;
            while row + ROWS <= lhs.rows {
                unsafe { tile::<ROWS>(output, accumulate, lhs, rhs, row, column) };
                row += ROWS;
            }
            unsafe {
                match lhs.rows - row {
                    0 => {}
                    1 => tile::<1>(output, accumulate, lhs, rhs, row, column),
                    2 => tile::<2>(output, accumulate, lhs, rhs, row, column),
                    3 => tile::<3>(output, accumulate, lhs, rhs, row, column),
                    4 => tile::<4>(output, accumulate, lhs, rhs, row, column),
                    _ => tile::<5>(output, accumulate, lhs, rhs, row, column),
                }
            }
        }
        // The last columns, fewer than a tile: the same fused sums, one entry at a time.
        for row in 0..lhs.rows {
            for column in full_end..columns.end {
                let mut sum = 0.0f32;
                for inner in 0..lhs.columns {
                    let x =
                        lhs.values[lhs.offset + row * lhs.row_stride + inner * lhs.column_stride];
                    let w = rhs.values[rhs.offset + inner * rhs.row_stride + column];
                    sum = x.mul_add(w, sum);
                }
                let out = unsafe { &mut *output.pointer.add(row * output.columns + column) };
                *out = if accumulate { *out + sum } else { sum };
            }
        }
    }

    /// Rows `row..row + R`, columns `column..column + 16`.
    ///
    /// # Safety
    /// As for [`columns_into`]; those rows and columns exist.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(
        output: Output,
        accumulate: bool,
        lhs: &Matrix,
        rhs: &Matrix,
        row: usize,
        column: usize,
    ) {
        unsafe {
            let x = lhs.values.as_ptr().add(lhs.offset + row * lhs.row_stride);
            let w = rhs.values.as_ptr().add(rhs.offset + column);
            let mut sums = [[_mm256_setzero_ps(); 2]; R];
            for inner in 0..lhs.columns {
                let weights = w.add(inner * rhs.row_stride);
                let low = _mm256_loadu_ps(weights);
                let high = _mm256_loadu_ps(weights.add(8));
                let x = x.add(inner * lhs.column_stride);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*x.add(r * lhs.row_stride));
                    sum[0] = _mm256_fmadd_ps(xv, low, sum[0]);
                    sum[1] = _mm256_fmadd_ps(xv, high, sum[1]);
                }
            }
            for (r, [low, high]) in sums.into_iter().enumerate() {
                let out = output.pointer.add((row + r) * output.columns + column);
                let (low, high) = if accumulate {
                    (
                        _mm256_add_ps(_mm256_loadu_ps(out), low),
                        _mm256_add_ps(_mm256_loadu_ps(out.add(8)), high),
                    )
                } else {
                    (low, high)
                };
                _mm256_storeu_ps(out, low);
                _mm256_storeu_ps(out.add(8), high);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::matmul::matrix_product;
    use super::*;

    fn values(count: usize, seed: u32) -> Vec<f32> {
        (0..count)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// A row-major `rows x columns` matrix at `offset` in `values`.
    fn row_major(values: &[f32], offset: usize, rows: usize, columns: usize) -> Matrix<'_> {
        Matrix {
            values,
            offset,
            rows,
            columns,
            row_stride: columns,
            column_stride: 1,
        }
    }

    fn reference(lhs: &Matrix, rhs: &Matrix, bias: Option<&[f32]>) -> Vec<f64> {
        let mut out = vec![0.0; lhs.rows * rhs.columns];
        for i in 0..lhs.rows {
            for j in 0..rhs.columns {
                let mut sum = bias.map_or(0.0, |b| b[j] as f64);
                for p in 0..lhs.columns {
                    let x = lhs.values[lhs.offset + i * lhs.row_stride + p * lhs.column_stride];
                    let w = rhs.values[rhs.offset + p * rhs.row_stride + j * rhs.column_stride];
                    sum += x as f64 * w as f64;
                }
                out[i * rhs.columns + j] = sum;
            }
        }
        out
    }

    /// Row counts around the tile height, column counts with and without a partial tile, a
    /// transposed left side, with and without a bias; against an f64 sum.
    #[test]
    fn few_row_products_match_an_f64_sum() {
        if !has_fma() {
            eprintln!("no AVX2 + FMA here: the few-rows kernel is not used");
            return;
        }
        for (m, k, n) in [
            (1, 7, 16),
            (5, 64, 37),
            (6, 300, 48),
            (16, 512, 2048),
            (32, 33, 100),
        ] {
            for transposed in [false, true] {
                let x = values(m * k + 3, 1);
                let w = values(k * n + 5, 2);
                let bias = values(n, 3);
                let lhs = if transposed {
                    Matrix {
                        values: &x,
                        offset: 3,
                        rows: m,
                        columns: k,
                        row_stride: 1,
                        column_stride: m,
                    }
                } else {
                    row_major(&x, 3, m, k)
                };
                let rhs = row_major(&w, 5, k, n);
                assert!(takes(&lhs, &rhs));
                for bias in [None, Some(bias.as_slice())] {
                    let got = matrix_product(&lhs, &rhs, bias);
                    let want = reference(&lhs, &rhs, bias);
                    for (index, (g, w)) in got.iter().zip(&want).enumerate() {
                        let tolerance = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                        assert!(
                            (*g as f64 - w).abs() <= tolerance,
                            "({m}, {k}, {n}) transposed {transposed} entry {index}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// The parallel split gives the bits of the serial one.
    #[test]
    fn threads_do_not_change_the_bits() {
        if !has_fma() {
            return;
        }
        let (m, k, n) = (16, 512, 1000);
        let (x, w) = (values(m * k, 4), values(k * n, 5));
        let lhs = row_major(&x, 0, m, k);
        let rhs = row_major(&w, 0, k, n);
        let run = |parallel| {
            let mut out = vec![0.0f32; m * n];
            unsafe { product_into(out.as_mut_ptr(), false, &lhs, &rhs, parallel) };
            out
        };
        let serial = run(false);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let parallel = pool.install(|| run(true));
        assert!(serial
            .iter()
            .zip(&parallel)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
