//! The Fréchet distance between two sets of Inception features, in f64: each set summarised by
//! its mean and unbiased covariance, accumulated batch by batch so that a set of any size costs
//! `O(D²)` memory, never its images or its features.

use faer::{Mat, Side};

use super::FidError;

/// Mean and scatter (sum of outer products of the centred rows) of the feature rows seen so
/// far. Batches are merged with Chan, Golub and LeVeque's pairwise update, which stays
/// accurate where the textbook `E[x²] − E[x]²` would cancel.
#[derive(Debug, Clone)]
pub struct FeatureStatistics {
    count: usize,
    mean: Vec<f64>,
    scatter: Mat<f64>,
}

impl FeatureStatistics {
    /// No rows yet, of `dim` features each.
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0,
            mean: vec![0.0; dim],
            scatter: Mat::zeros(dim, dim),
        }
    }

    /// The width of the feature rows.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// How many rows the statistics cover.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The mean row.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Adds `rows`, row-major `[rows.len() / dim, dim]`.
    pub fn add(&mut self, rows: &[f32]) {
        let dim = self.dim();
        assert_eq!(rows.len() % dim, 0, "rows of {dim} features");
        let m = rows.len() / dim;
        if m == 0 {
            return;
        }
        let mut batch_mean = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            for (mean, &x) in batch_mean.iter_mut().zip(row) {
                *mean += x as f64;
            }
        }
        batch_mean.iter_mut().for_each(|v| *v /= m as f64);
        let centred = Mat::<f64>::from_fn(m, dim, |i, j| rows[i * dim + j] as f64 - batch_mean[j]);
        let batch_scatter = centred.transpose() * &centred;

        let (n, total) = (self.count as f64, (self.count + m) as f64);
        let delta: Vec<f64> = batch_mean
            .iter()
            .zip(&self.mean)
            .map(|(b, a)| b - a)
            .collect();
        let weight = n * m as f64 / total;
        self.scatter = &self.scatter
            + batch_scatter
            + Mat::<f64>::from_fn(dim, dim, |i, j| weight * delta[i] * delta[j]);
        for (mean, d) in self.mean.iter_mut().zip(&delta) {
            *mean += d * m as f64 / total;
        }
        self.count += m;
    }

    /// The unbiased covariance (divided by `count − 1`, as numpy's `cov` and pytorch-fid).
    pub fn covariance(&self) -> Mat<f64> {
        let scale = 1.0 / (self.count.max(2) - 1) as f64;
        Mat::from_fn(self.dim(), self.dim(), |i, j| self.scatter[(i, j)] * scale)
    }
}

/// `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½`, the Fréchet distance of two Gaussians
/// (Heusel et al. 2017).
///
/// pytorch-fid takes `tr (Σ₁Σ₂)^½` from scipy's `sqrtm` of the (non-symmetric) product. Here
/// it is `Σᵢ √λᵢ` over the eigenvalues of the symmetric `Σ₁^½ Σ₂ Σ₁^½`, which are those of
/// `Σ₁Σ₂`: two symmetric eigendecompositions, which stay real and exact on the rank-deficient
/// covariances of sets smaller than the feature width, where `sqrtm` warns that it may be
/// inaccurate. Eigenvalues below zero are rounding and count as zero.
pub fn frechet_distance(a: &FeatureStatistics, b: &FeatureStatistics) -> Result<f64, FidError> {
    for (name, set) in [("first", a), ("second", b)] {
        if set.count < 2 {
            return Err(FidError::Input(format!(
                "the {name} image set has {} image(s); FID needs at least 2 per set (a covariance)",
                set.count
            )));
        }
    }
    if a.dim() != b.dim() {
        return Err(FidError::Input(format!(
            "feature widths differ: {} and {}",
            a.dim(),
            b.dim()
        )));
    }
    let (sigma_a, sigma_b) = (a.covariance(), b.covariance());
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();

    let eigen = sigma_a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| FidError::Input(format!("eigendecomposition of Σ₁ failed: {e:?}")))?;
    let mut scaled = eigen.U().to_owned();
    let values = eigen.S().column_vector();
    for j in 0..scaled.ncols() {
        let root = values[j].max(0.0).sqrt();
        scaled.col_mut(j).iter_mut().for_each(|v| *v *= root);
    }
    let sqrt_a = &scaled * eigen.U().transpose();
    let product = &sqrt_a * &sigma_b * &sqrt_a;
    let symmetric = Mat::<f64>::from_fn(product.nrows(), product.ncols(), |i, j| {
        0.5 * (product[(i, j)] + product[(j, i)])
    });
    let lambdas = symmetric
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| FidError::Input(format!("eigenvalues of Σ₁^½Σ₂Σ₁^½ failed: {e:?}")))?;
    let trace_sqrt: f64 = lambdas.iter().map(|l| l.max(0.0).sqrt()).sum();
    Ok(mean_term + trace(&sigma_a) + trace(&sigma_b) - 2.0 * trace_sqrt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statistics_of(rows: &[Vec<f32>], batch: usize) -> FeatureStatistics {
        let mut stats = FeatureStatistics::new(rows[0].len());
        for chunk in rows.chunks(batch) {
            stats.add(&chunk.concat());
        }
        stats
    }

    #[test]
    fn batched_statistics_equal_the_two_pass_formula() {
        let rows: Vec<Vec<f32>> = (0..11)
            .map(|i| {
                (0..3)
                    .map(|j| ((i * 7 + j * 5) % 13) as f32 + 1e3)
                    .collect()
            })
            .collect();
        let stats = statistics_of(&rows, 4);
        let n = rows.len() as f64;
        for j in 0..3 {
            let mean = rows.iter().map(|r| r[j] as f64).sum::<f64>() / n;
            assert!((stats.mean()[j] - mean).abs() < 1e-9);
            for k in 0..3 {
                let mean_k = rows.iter().map(|r| r[k] as f64).sum::<f64>() / n;
                let cov = rows
                    .iter()
                    .map(|r| (r[j] as f64 - mean) * (r[k] as f64 - mean_k))
                    .sum::<f64>()
                    / (n - 1.0);
                assert!((stats.covariance()[(j, k)] - cov).abs() < 1e-9, "{j} {k}");
            }
        }
    }

    #[test]
    fn gaussians_with_known_distance() {
        // Diagonal covariances: FID = Σ (μ₁ − μ₂)² + Σ (σ₁ − σ₂)² per dimension.
        let a: Vec<Vec<f32>> = [[-1.0, -2.0], [1.0, 2.0], [-1.0, 2.0], [1.0, -2.0]]
            .iter()
            .map(|r| r.to_vec())
            .collect();
        let b: Vec<Vec<f32>> = a.iter().map(|r| vec![3.0 * r[0] + 5.0, r[1]]).collect();
        let (sa, sb) = (statistics_of(&a, 3), statistics_of(&b, 3));
        // Per dimension, variance 4/3 and 16/3 (a), 12 and 16/3 (b).
        let (s1, s2) = ((4.0f64 / 3.0).sqrt(), 12.0f64.sqrt());
        let expected = 25.0 + (s1 - s2).powi(2);
        let fid = frechet_distance(&sa, &sb).unwrap();
        assert!((fid - expected).abs() < 1e-9, "{fid} vs {expected}");
        assert!(frechet_distance(&sa, &sa).unwrap().abs() < 1e-9);
    }

    #[test]
    fn one_image_is_not_a_distribution() {
        let one = statistics_of(&[vec![1.0, 2.0]], 1);
        let two = statistics_of(&[vec![1.0, 2.0], vec![2.0, 1.0]], 1);
        let err = frechet_distance(&one, &two).unwrap_err().to_string();
        assert!(err.contains("at least 2"), "{err}");
    }
}
