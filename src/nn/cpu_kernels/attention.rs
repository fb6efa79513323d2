//! Scaled dot-product attention one block of query rows at a time, forward and backward, never
//! holding more than one block's `[rows, seq_k]` scores.
//!
//! Why: the attention node kept its `[batch, heads, seq_q, seq_k]` probabilities for the
//! backward pass. For DALL-E at 320 positions that is 52 MB a layer, freshly mapped (and zeroed
//! by the kernel) every step, and half of it is the causal mask's zeros that softmax, both
//! matrix products and the backward still went through. Here, as in FlashAttention
//! (<https://arxiv.org/abs/2205.14135>), the forward keeps two numbers per query row (the max
//! and the log-sum of its softmax) and the backward recomputes each block's probabilities from
//! `q`, `k` and those. Each block of query rows multiplies only the keys from the first any of
//! its rows sees to the last, and each row's softmax runs only over its own seen keys: a
//! causal mask's upper triangle is skipped. A block's whole row of scores fits in cache, so
//! softmax is taken over the row at once rather than FlashAttention's running rescaling.
//!
//! The keys skipped are those whose bias is at most [`HIDDEN`], which `exp` turns into exactly
//! 0, so skipping them changes nothing but the order of the additions. A row that sees no key
//! at all takes every key, as the unblocked softmax did (uniform weights).

use rayon::prelude::*;

use std::ops::Range;

// The blocks' matrix products run on one thread (`SERIAL`): each rayon task is one whole
// problem.
use super::matmul::{gemm_f32, SERIAL};
use super::{exp, reductions, BiasRows};

/// Query rows per block: 32 leaves a causal mask's skipped share close to the full half
/// (1 − (n/32 + 1) / (2 n/32)), while each matrix product stays long enough to run at speed.
const BLOCK_ROWS: usize = 32;

/// A bias at or below this hides its key: `exp(score + bias − max)` is exactly 0 in `f32` for
/// any score of magnitude below 1e8 (vislang's masks add −1e9).
pub const HIDDEN: f32 = -1e8;

/// The sizes of one attention call: `q` is `[batch·heads, seq_q, d_key]`, `k` is
/// `[batch·heads, seq_k, d_key]`, `v` is `[batch·heads, seq_k, d_value]`, all contiguous.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSizes {
    /// Batch times heads: the independent attention problems.
    pub problems: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub d_key: usize,
    pub d_value: usize,
}

/// The inputs of one attention call: row-major slices of [`AttentionSizes`]' shapes, and the
/// bias broadcast to `[problems, seq_q, seq_k]` (row `p·seq_q + i` is query `i` of problem `p`).
pub struct AttentionInputs<'a> {
    pub sizes: AttentionSizes,
    pub query: &'a [f32],
    pub key: &'a [f32],
    pub value: &'a [f32],
    pub bias: &'a BiasRows<'a>,
    pub scale: f32,
}

/// The gradients [`attention_backward`] writes, zeroed by the caller, shaped as the inputs.
pub struct AttentionGradientsMut<'a> {
    pub query: &'a mut [f32],
    pub key: &'a mut [f32],
    pub value: &'a mut [f32],
}

/// One block of query rows of one problem: which rows, which keys any of them sees, and
/// which each row sees (from its first visible key to its last).
#[derive(Debug, Clone)]
struct Block {
    rows: Range<usize>,
    keys: Range<usize>,
    row_keys: Vec<Range<usize>>,
}

impl Block {
    /// The blocks of problem `problem`. A row that sees no key at all sees every key, as the
    /// unblocked softmax gave it (uniform weights).
    fn all(inputs: &AttentionInputs, problem: usize) -> Vec<Block> {
        let AttentionSizes { seq_q, seq_k, .. } = inputs.sizes;
        (0..seq_q.div_ceil(BLOCK_ROWS))
            .map(|b| {
                let rows = b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(seq_q);
                let row_keys: Vec<Range<usize>> = rows
                    .clone()
                    .map(|row| {
                        let bias = inputs.bias.row(problem * seq_q + row);
                        let first = bias.iter().position(|&b| b > HIDDEN);
                        let last = bias.iter().rposition(|&b| b > HIDDEN);
                        match (first, last) {
                            (Some(first), Some(last)) => first..last + 1,
                            _ => 0..seq_k,
                        }
                    })
                    .collect();
                let keys = row_keys.iter().fold(seq_k..0, |keys, row| {
                    keys.start.min(row.start)..keys.end.max(row.end)
                });
                Block {
                    rows,
                    keys,
                    row_keys,
                }
            })
            .collect()
    }

    /// Row `i` of `scores` (`rows x keys.len()`), split into the part before the keys it
    /// sees, those keys, and the part after, with the bias of those keys.
    fn row<'s>(
        &self,
        scores: &'s mut [f32],
        i: usize,
        inputs: &'s AttentionInputs,
        problem: usize,
    ) -> RowParts<'s> {
        let width = self.keys.len();
        let row = &mut scores[i * width..(i + 1) * width];
        let seen = self.row_keys[i].start - self.keys.start..self.row_keys[i].end - self.keys.start;
        let bias = inputs
            .bias
            .row(problem * inputs.sizes.seq_q + self.rows.start + i);
        let bias = if bias.is_empty() {
            bias
        } else {
            &bias[self.row_keys[i].clone()]
        };
        let (head, rest) = row.split_at_mut(seen.start);
        let (seen, tail) = rest.split_at_mut(seen.len());
        RowParts {
            hidden: [head, tail],
            seen,
            bias,
        }
    }
}

/// Each problem's blocks, computed once per distinct bias: every head of an example shares
/// its bias, and a causal mask is shared by the whole batch.
struct ProblemBlocks {
    distinct: Vec<Vec<Block>>,
    /// Index into `distinct`, per problem.
    of_problem: Vec<usize>,
}

impl ProblemBlocks {
    fn new(inputs: &AttentionInputs) -> Self {
        let AttentionSizes {
            problems, seq_q, ..
        } = inputs.sizes;
        // Problem p's row i reads bias row `first(p) + i · stride`, with the stride the same
        // for every problem: problems whose first bias rows are the same slice share them all.
        let first_row = |p: usize| inputs.bias.row(p * seq_q).as_ptr();
        let mut firsts: Vec<(*const f32, usize)> = Vec::new();
        let mut distinct = Vec::new();
        let of_problem = (0..problems)
            .map(|p| {
                let first = first_row(p);
                match firsts.iter().find(|(f, _)| *f == first) {
                    Some(&(_, index)) => index,
                    None => {
                        firsts.push((first, distinct.len()));
                        distinct.push(Block::all(inputs, p));
                        distinct.len() - 1
                    }
                }
            })
            .collect();
        Self {
            distinct,
            of_problem,
        }
    }

    fn of(&self, problem: usize) -> &[Block] {
        &self.distinct[self.of_problem[problem]]
    }
}

struct RowParts<'s> {
    hidden: [&'s mut [f32]; 2],
    seen: &'s mut [f32],
    bias: &'s [f32],
}

impl RowParts<'_> {
    /// Zeroes the hidden keys and adds the bias to the seen ones.
    #[inline(always)]
    fn add_bias(&mut self) {
        for hidden in &mut self.hidden {
            hidden.fill(0.0);
        }
        if !self.bias.is_empty() {
            for (v, &b) in self.seen.iter_mut().zip(self.bias) {
                *v += b;
            }
        }
    }
}

/// Softmax of each row of `scores` (`rows x keys.len()`) plus its bias, and each row's
/// statistics (max, log of the sum of `exp(x − max)`) into `statistics`.
#[inline(always)]
fn block_softmax(
    scores: &mut [f32],
    inputs: &AttentionInputs,
    problem: usize,
    block: &Block,
    statistics: &mut [f32],
) {
    for i in 0..block.rows.len() {
        let mut row = block.row(scores, i, inputs, problem);
        row.add_bias();
        let max = reductions::max(row.seen);
        let sum = reductions::exp_in_place_sum(row.seen, max);
        let inverse = 1.0 / sum;
        for v in row.seen.iter_mut() {
            *v *= inverse;
        }
        statistics[2 * i] = max;
        statistics[2 * i + 1] = sum.ln();
    }
}

/// The probabilities of each row again from the forward's statistics:
/// `exp((x + bias − max) − log_sum)`.
#[inline(always)]
fn block_softmax_again(
    scores: &mut [f32],
    inputs: &AttentionInputs,
    problem: usize,
    block: &Block,
    statistics: &[f32],
) {
    for i in 0..block.rows.len() {
        let mut row = block.row(scores, i, inputs, problem);
        row.add_bias();
        let (max, log_sum) = (statistics[2 * i], statistics[2 * i + 1]);
        for v in row.seen.iter_mut() {
            *v = exp((*v - max) - log_sum);
        }
    }
}

/// `grad ← p ⊙ (grad − Σ grad ⊙ p)` over each row's seen keys (0 elsewhere, where p is 0).
#[inline(always)]
fn block_softmax_backward(p: &[f32], grad: &mut [f32], block: &Block) {
    let width = block.keys.len();
    for (i, seen) in block.row_keys.iter().enumerate() {
        let seen =
            i * width + seen.start - block.keys.start..i * width + seen.end - block.keys.start;
        grad[i * width..seen.start].fill(0.0);
        grad[seen.end..(i + 1) * width].fill(0.0);
        let (p, grad) = (&p[seen.clone()], &mut grad[seen]);
        let dot = reductions::dot(p, grad);
        for (&p, g) in p.iter().zip(grad.iter_mut()) {
            *g = p * (*g - dot);
        }
    }
}

fn block_softmax_chunk(
    scores: &mut [f32],
    inputs: &AttentionInputs,
    problem: usize,
    block: &Block,
    statistics: &mut [f32],
) {
    vectorised!(block_softmax(
        scores: &mut [f32],
        inputs: &AttentionInputs,
        problem: usize,
        block: &Block,
        statistics: &mut [f32]
    ))
}

fn block_softmax_again_chunk(
    scores: &mut [f32],
    inputs: &AttentionInputs,
    problem: usize,
    block: &Block,
    statistics: &[f32],
) {
    vectorised!(block_softmax_again(
        scores: &mut [f32],
        inputs: &AttentionInputs,
        problem: usize,
        block: &Block,
        statistics: &[f32]
    ))
}

fn block_softmax_backward_chunk(p: &[f32], grad: &mut [f32], block: &Block) {
    vectorised!(block_softmax_backward(p: &[f32], grad: &mut [f32], block: &Block))
}

/// One block's scores `q kᵀ · scale` into `scores` (`rows x keys`).
fn block_scores(scores: &mut [f32], inputs: &AttentionInputs, problem: usize, block: &Block) {
    let AttentionSizes {
        seq_q,
        seq_k,
        d_key,
        ..
    } = inputs.sizes;
    let (m, n) = (block.rows.len(), block.keys.len());
    let q = &inputs.query[(problem * seq_q + block.rows.start) * d_key..][..m * d_key];
    let k = &inputs.key[(problem * seq_k + block.keys.start) * d_key..][..n * d_key];
    // SAFETY: q is m x d_key and k n x d_key row-major (read as kᵀ: column stride d_key);
    // scores holds m x n.
    unsafe {
        gemm_f32(
            [m, n, d_key],
            (scores.as_mut_ptr(), 1, n),
            false,
            (q.as_ptr(), 1, d_key),
            (k.as_ptr(), d_key, 1),
            inputs.scale,
            SERIAL,
        );
    }
}

/// Checks every slice's length against the sizes: the inputs, the statistics
/// (`[problems, seq_q, 2]`) and the output or its gradient (`[problems, seq_q, d_value]`).
fn check(inputs: &AttentionInputs, statistics: &[f32], output: &[f32]) {
    let AttentionSizes {
        problems,
        seq_q,
        seq_k,
        d_key,
        d_value,
    } = inputs.sizes;
    assert_eq!(inputs.query.len(), problems * seq_q * d_key, "query size");
    assert_eq!(inputs.key.len(), problems * seq_k * d_key, "key size");
    assert_eq!(inputs.value.len(), problems * seq_k * d_value, "value size");
    assert_eq!(statistics.len(), problems * seq_q * 2, "statistics size");
    assert_eq!(output.len(), problems * seq_q * d_value, "output size");
}

/// `out = softmax(q kᵀ · scale + bias) v`, `[problems, seq_q, d_value]`, and each row's max
/// and log-sum into `statistics` (`[problems, seq_q, 2]`) for [`attention_backward`].
pub fn attention_forward(inputs: &AttentionInputs, out: &mut [f32], statistics: &mut [f32]) {
    check(inputs, statistics, out);
    let AttentionSizes {
        seq_q,
        seq_k,
        d_value,
        ..
    } = inputs.sizes;
    if out.is_empty() {
        return;
    }
    let blocks = ProblemBlocks::new(inputs);
    out.par_chunks_mut(seq_q * d_value)
        .zip(statistics.par_chunks_mut(seq_q * 2))
        .enumerate()
        .for_each(|(problem, (out, statistics))| {
            let mut scores = Vec::new();
            for block in blocks.of(problem) {
                let (m, n) = (block.rows.len(), block.keys.len());
                scores.resize(m * n, 0.0);
                block_scores(&mut scores, inputs, problem, block);
                let stats = &mut statistics[block.rows.start * 2..block.rows.end * 2];
                block_softmax_chunk(&mut scores, inputs, problem, block, stats);
                let v = &inputs.value[(problem * seq_k + block.keys.start) * d_value..];
                let o = &mut out[block.rows.start * d_value..][..m * d_value];
                // SAFETY: scores is m x n, v's rows n x d_value, o m x d_value.
                unsafe {
                    gemm_f32(
                        [m, d_value, n],
                        (o.as_mut_ptr(), 1, d_value),
                        false,
                        (scores.as_ptr(), 1, n),
                        (v.as_ptr(), 1, d_value),
                        1.0,
                        SERIAL,
                    );
                }
            }
        });
}

/// The gradients of [`attention_forward`] for the output's gradient `grad_out`, with each
/// block's probabilities recomputed from the forward's `statistics`:
///
/// ```text
/// dV += Pᵀ dO    dP = dO Vᵀ    dS = P ⊙ (dP − rowsum(dP ⊙ P))
/// dQ = dS K · s  dK += dSᵀ Q · s
/// ```
pub fn attention_backward(
    inputs: &AttentionInputs,
    statistics: &[f32],
    grad_out: &[f32],
    grads: AttentionGradientsMut,
) {
    check(inputs, statistics, grad_out);
    let AttentionSizes {
        seq_q,
        seq_k,
        d_key,
        d_value,
        ..
    } = inputs.sizes;
    assert_eq!(grads.query.len(), inputs.query.len(), "query gradient size");
    assert_eq!(grads.key.len(), inputs.key.len(), "key gradient size");
    assert_eq!(grads.value.len(), inputs.value.len(), "value gradient size");
    if grads.query.is_empty() || seq_k == 0 {
        return;
    }
    let blocks = ProblemBlocks::new(inputs);
    grads
        .query
        .par_chunks_mut(seq_q * d_key)
        .zip(grads.key.par_chunks_mut(seq_k * d_key))
        .zip(grads.value.par_chunks_mut(seq_k * d_value))
        .enumerate()
        .for_each(|(problem, ((dq, dk), dv))| {
            let (mut p, mut dp) = (Vec::new(), Vec::new());
            let q = &inputs.query[problem * seq_q * d_key..];
            let k = &inputs.key[problem * seq_k * d_key..];
            let v = &inputs.value[problem * seq_k * d_value..];
            let d_o = &grad_out[problem * seq_q * d_value..];
            let statistics = &statistics[problem * seq_q * 2..];
            for block in blocks.of(problem) {
                let (m, n) = (block.rows.len(), block.keys.len());
                let (r0, k0) = (block.rows.start, block.keys.start);
                p.resize(m * n, 0.0);
                dp.resize(m * n, 0.0);
                block_scores(&mut p, inputs, problem, block);
                let stats = &statistics[r0 * 2..block.rows.end * 2];
                block_softmax_again_chunk(&mut p, inputs, problem, block, stats);
                let d_o = d_o[r0 * d_value..].as_ptr();
                let q = q[r0 * d_key..].as_ptr();
                let (k, v) = (k[k0 * d_key..].as_ptr(), v[k0 * d_value..].as_ptr());
                let (dq, dk, dv) = (
                    dq[r0 * d_key..].as_mut_ptr(),
                    dk[k0 * d_key..].as_mut_ptr(),
                    dv[k0 * d_value..].as_mut_ptr(),
                );
                // SAFETY (all four products): p and dp are m x n row-major (read transposed
                // with column stride n); d_o, q, dq point at the block's m rows and k, v, dk,
                // dv at its n keys, within their row-major matrices.
                unsafe {
                    // dV[keys] += Pᵀ dO
                    let (p_t, d_o) = ((p.as_ptr(), n, 1), (d_o, 1, d_value));
                    gemm_f32(
                        [n, d_value, m],
                        (dv, 1, d_value),
                        true,
                        p_t,
                        d_o,
                        1.0,
                        SERIAL,
                    );
                    // dP = dO Vᵀ
                    let v_t = (v, d_value, 1);
                    gemm_f32(
                        [m, n, d_value],
                        (dp.as_mut_ptr(), 1, n),
                        false,
                        d_o,
                        v_t,
                        1.0,
                        SERIAL,
                    );
                }
                block_softmax_backward_chunk(&p, &mut dp, block);
                unsafe {
                    // dQ = dS K · s
                    let (ds, k) = ((dp.as_ptr(), 1, n), (k, 1, d_key));
                    gemm_f32(
                        [m, d_key, n],
                        (dq, 1, d_key),
                        false,
                        ds,
                        k,
                        inputs.scale,
                        SERIAL,
                    );
                    // dK[keys] += dSᵀ Q · s
                    let (ds_t, q) = ((dp.as_ptr(), n, 1), (q, 1, d_key));
                    gemm_f32(
                        [n, d_key, m],
                        (dk, 1, d_key),
                        true,
                        ds_t,
                        q,
                        inputs.scale,
                        SERIAL,
                    );
                }
            }
        });
}
