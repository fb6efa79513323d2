//! Vector quantizer with an exponential-moving-average codebook.
//!
//! Codes are the nearest codebook vectors; gradients pass straight through the quantisation
//! to the encoder, and a commitment loss keeps encoder outputs near their codes. The codebook
//! itself gets no gradient: it follows EMAs of the encoder outputs assigned to each code
//! (van den Oord et al. 2017, <https://arxiv.org/abs/1711.00937>, appendix A.1). Codes that
//! fall out of use are re-seeded from recent encoder outputs (as in Jukebox,
//! <https://arxiv.org/abs/2005.00341>).

use crate::nn::Backend;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Distribution, Int, Tensor};

/// Configuration of [`VectorQuantizer`].
#[derive(Config, Debug)]
pub struct VectorQuantizerConfig {
    /// Codebook size K.
    pub n_codes: usize,
    /// Width of each code.
    pub d_code: usize,
    /// EMA decay of the codebook statistics.
    #[config(default = 0.99)]
    pub decay: f64,
    /// Laplace smoothing of the code counts.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the commitment loss (0.25 in the paper).
    #[config(default = 0.25)]
    pub commitment_weight: f64,
    /// A code whose EMA count drops below this is re-seeded from an encoder output. Counts
    /// start at 1, so with the default every code unused in the first batch restarts at a real
    /// encoder output: a data-dependent initialisation (Jukebox uses the same threshold).
    #[config(default = 1.0)]
    pub dead_threshold: f64,
}

impl VectorQuantizerConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> VectorQuantizer<B> {
        let codebook = Tensor::<B, 2>::random(
            [self.n_codes, self.d_code],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        VectorQuantizer {
            codebook: frozen(codebook.clone()),
            cluster_size: frozen(Tensor::ones([self.n_codes], device)),
            embed_sum: frozen(codebook),
            decay: self.decay,
            epsilon: self.epsilon,
            commitment_weight: self.commitment_weight,
            dead_threshold: self.dead_threshold,
        }
    }
}

/// A tensor the optimizer must leave alone (it has no gradient).
fn frozen<B: Backend, const D: usize>(value: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(value).set_require_grad(false)
}

/// Replaces a parameter's value, keeping its id (so checkpoints and optimizers still match).
fn replaced<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    value: Tensor<B, D>,
) -> Param<Tensor<B, D>> {
    Param::initialized(param.id, value.detach()).set_require_grad(false)
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct VectorQuantizer<B: Backend> {
    /// `[K, d_code]`, the code vectors.
    pub codebook: Param<Tensor<B, 2>>,
    /// `[K]`, EMA of how many encoder outputs each code received.
    pub cluster_size: Param<Tensor<B, 1>>,
    /// `[K, d_code]`, EMA of the sum of the encoder outputs each code received.
    pub embed_sum: Param<Tensor<B, 2>>,
    decay: f64,
    epsilon: f64,
    commitment_weight: f64,
    dead_threshold: f64,
}

/// What [`VectorQuantizer::forward`] returns.
#[derive(Debug, Clone)]
pub struct Quantized<B: Backend> {
    /// `[n, d_code]`: the codes' vectors in the forward pass, the encoder output's gradient in
    /// the backward pass (straight-through estimator).
    pub quantized: Tensor<B, 2>,
    /// `[n]`, index of the nearest code of each input.
    pub codes: Tensor<B, 1, Int>,
    /// `[1]`, `commitment_weight * mean ||z - sg(e)||^2`.
    pub commitment_loss: Tensor<B, 1>,
}

impl<B: Backend> VectorQuantizer<B> {
    pub fn n_codes(&self) -> usize {
        self.codebook.dims()[0]
    }

    /// Index of the nearest code (squared Euclidean distance) of every row of `z`.
    ///
    /// # Shapes
    /// - `z`: `[n, d_code]`
    /// - returns: `[n]`
    pub fn nearest_codes(&self, z: Tensor<B, 2>) -> Tensor<B, 1, Int> {
        let codebook = self.codebook.val().detach(); // [K, d]
        let n = z.dims()[0];
        // ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is the same for every code.
        let cross = z.detach().matmul(codebook.clone().transpose()); // [n, K]
        let code_norms = codebook.powi_scalar(2).sum_dim(1).transpose(); // [1, K]
        (code_norms - cross * 2.0).argmin(1).reshape([n])
    }

    /// Quantises `z`.
    ///
    /// # Shapes
    /// - `z`: `[n, d_code]`
    /// - returns: quantized `[n, d_code]`, codes `[n]`, commitment loss `[1]`
    pub fn forward(&self, z: Tensor<B, 2>) -> Quantized<B> {
        let codes = self.nearest_codes(z.clone());
        let code_vectors = self.lookup(codes.clone()); // [n, d]
        let commitment_loss =
            (z.clone() - code_vectors.clone()).powi_scalar(2).mean() * self.commitment_weight;
        let quantized = z.clone() + (code_vectors - z).detach();
        Quantized {
            quantized,
            codes,
            commitment_loss,
        }
    }

    /// The vectors of `codes`.
    ///
    /// # Shapes
    /// - `codes`: `[n]`
    /// - returns: `[n, d_code]`
    pub fn lookup(&self, codes: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.codebook.val().detach().select(0, codes)
    }

    /// One EMA step of the codebook towards the encoder outputs `z` assigned to `codes`, then
    /// re-seeding of dead codes from random rows of `z`.
    ///
    /// # Shapes
    /// - `z`: `[n, d_code]` (the encoder outputs of the last forward pass)
    /// - `codes`: `[n]`
    pub fn ema_update(self, z: Tensor<B, 2>, codes: Tensor<B, 1, Int>) -> Self {
        let [n, _] = z.dims();
        let k = self.n_codes();
        let z = z.detach();
        let assignment = codes.one_hot::<2>(k).float(); // [n, K]
        let counts = assignment.clone().sum_dim(0).reshape([k]); // [K]
        let sums = assignment.transpose().matmul(z.clone()); // [K, d]
        let (keep, take) = (self.decay, 1.0 - self.decay);
        let cluster_size = self.cluster_size.val() * keep + counts * take;
        let embed_sum = self.embed_sum.val() * keep + sums * take;
        // Laplace smoothing keeps empty clusters from dividing by zero.
        let total = cluster_size.clone().sum();
        let smoothed = (cluster_size.clone() + self.epsilon)
            / (total.clone() + self.epsilon * k as f64)
            * total;
        let codebook = embed_sum.clone() / smoothed.unsqueeze_dim(1);

        // Dead codes restart at random encoder outputs, with a count of one.
        let device = z.device();
        let dead = cluster_size.clone().lower_elem(self.dead_threshold); // [K]
        let picks = Tensor::<B, 1>::random([k], Distribution::Uniform(0.0, n as f64), &device)
            .int()
            .clamp(0, n as i64 - 1);
        let seeds = z.select(0, picks); // [K, d]
        let dead_rows = dead.clone().unsqueeze_dim::<2>(1).expand(seeds.dims());
        let codebook = codebook.mask_where(dead_rows.clone(), seeds.clone());
        let embed_sum = embed_sum.mask_where(dead_rows, seeds);
        let cluster_size = cluster_size.mask_fill(dead, 1.0);

        Self {
            codebook: replaced(&self.codebook, codebook),
            cluster_size: replaced(&self.cluster_size, cluster_size),
            embed_sum: replaced(&self.embed_sum, embed_sum),
            ..self
        }
    }
}
