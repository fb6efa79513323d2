//! Row reductions (max, sum of `exp`, dot product) as eight independent running values,
//! combined at the end.
//!
//! Why: a loop that adds into one `f32` must add in order, so the compiler keeps it scalar,
//! and with it the `exp` computed in the same loop: softmax over attention rows ran one lane
//! at a time. Eight accumulators are a fixed, thread-independent order of additions that the
//! compiler maps onto one 8-lane register (two 4-lane ones without AVX).

use super::exp;

const LANES: usize = 8;

/// `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`: the lanes added pairwise.
#[inline(always)]
fn sum_lanes(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// The largest entry (−∞ for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l].max(chunk[l]);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        lanes[l] = lanes[l].max(v);
    }
    lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Adds `x[i]` into lane `i mod 8`.
#[inline(always)]
fn accumulate(lanes: &mut [f32; LANES], x: &[f32]) {
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for l in 0..LANES {
            lanes[l] += chunk[l];
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        lanes[l] += v;
    }
}

/// The sum of the entries.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0; LANES];
    accumulate(&mut lanes, x);
    sum_lanes(lanes)
}

/// `x ← exp(x − shift)`, returning the sum of the new entries. Two passes: `exp` vectorises
/// as a plain loop over the entries, not inside the lane-wise accumulation.
#[inline(always)]
pub fn exp_in_place_sum(x: &mut [f32], shift: f32) -> f32 {
    for v in x.iter_mut() {
        *v = exp(*v - shift);
    }
    sum(x)
}

/// `Σ exp(x − shift)`, through a small buffer on the stack (see [`exp_in_place_sum`]).
#[inline(always)]
pub fn exp_sum(x: &[f32], shift: f32) -> f32 {
    const PIECE: usize = 16 * LANES;
    let mut buffer = [0.0; PIECE];
    let mut lanes = [0.0; LANES];
    for piece in x.chunks(PIECE) {
        let buffer = &mut buffer[..piece.len()];
        for (b, &v) in buffer.iter_mut().zip(piece) {
            *b = exp(v - shift);
        }
        accumulate(&mut lanes, buffer);
    }
    sum_lanes(lanes)
}

/// `Σ a ⊙ b` over the shorter length.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0; LANES];
    let (mut chunks_a, mut chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for l in 0..LANES {
            lanes[l] += ca[l] * cb[l];
        }
    }
    for (l, (&x, &y)) in chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .enumerate()
    {
        lanes[l] += x * y;
    }
    sum_lanes(lanes)
}
