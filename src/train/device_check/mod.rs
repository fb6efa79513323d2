//! Does a device compute what the CPU computes? Every family's training steps, evaluation and
//! (for DALL-E) KV-cached generation, run on a device under test and on a reference backend
//! from the same weights, batches and step seeds, compared number by number.
//!
//! This is how the GPU-style path is exercised on machines without a GPU: Burn's wgpu backend
//! on Mesa's software Vulkan runs the same CubeCL compiler, fusion, autotune and memory manager
//! as burn-cuda, so a device-placement, dtype or fusion bug in vislang shows up here as a
//! mismatch (or a panic). `examples/device_parity.rs` runs it against Flex; the tests run it
//! between the two CPU backends, and between f32 and mixed precision.
//!
//! Weights are initialised on the reference backend and copied to the device
//! ([`copy_weights`]), because each backend has its own random generator. For the same reason
//! nothing random may differ between the two runs: models have no dropout here, and the
//! VQ-VAE's dead-code re-seeding is off (its draw still runs; it just replaces no code).

use burn::module::AutodiffModule;
use burn::tensor::Tensor;

use crate::data::{prepare_data, DataConfig, SyntheticCocoConfig};
use crate::io::checkpoint::copy_weights;
use crate::nn::{AutodiffBackend, Precision};
use crate::train::classify::PreparedData;
use crate::train::engine::mixed_precision::MixedPrecision;
use crate::train::engine::{optimizer, step, step_batch, EpochEvaluation, TrainingTask};
use crate::train::vqa::QaData;
use crate::train::vqvae::{prepare_vqvae_data, VqVaeData, VqVaeDataConfig};
use crate::train::workloads::bench_vqvae;
use crate::train::RunPaths;
use crate::train::{Budget, TrainError};
use std::path::Path;

use families::{check_classifier, check_dalle, check_lxmert, check_vqvae};
use question_answering::check_question_answering;

mod families;
mod question_answering;

/// One compared quantity: the largest difference between device and reference, and what is
/// allowed.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub family: &'static str,
    pub quantity: String,
    /// `max |device - reference|` over the compared values.
    pub max_difference: f64,
    /// `tolerance * max(1, max |reference|)`.
    pub allowed: f64,
}

impl Comparison {
    fn new(
        family: &'static str,
        quantity: impl Into<String>,
        device: &[f64],
        reference: &[f64],
        tolerance: f64,
    ) -> Self {
        assert_eq!(device.len(), reference.len(), "compared different lengths");
        let max_difference = device
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            // A NaN on either side is a failure, not a small difference.
            .fold(0.0, |max: f64, d| {
                if d.is_nan() {
                    f64::INFINITY
                } else {
                    max.max(d)
                }
            });
        let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        Self {
            family,
            quantity: quantity.into(),
            max_difference,
            allowed: tolerance * scale,
        }
    }

    pub fn passed(&self) -> bool {
        self.max_difference <= self.allowed
    }

    /// A Markdown table row: family, quantity, difference, allowed, verdict.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2e} | {:.2e} | {} |",
            self.family,
            self.quantity,
            self.max_difference,
            self.allowed,
            if self.passed() { "ok" } else { "MISMATCH" }
        )
    }
}

/// A model family of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Classifier,
    Lxmert,
    Vqvae,
    Dalle,
    /// Fine-tuning for question answering on image pairs (NLVR2): both families' pair heads.
    Qa,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Classifier,
        Family::Lxmert,
        Family::Vqvae,
        Family::Dalle,
        Family::Qa,
    ];
}

/// What the check runs on, and how closely the results must agree.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// The families to check (all by default).
    pub families: Vec<Family>,
    /// Training steps per family.
    pub steps: usize,
    pub batch_size: usize,
    /// The device run's precision (the reference always runs f32).
    pub precision: Precision,
    /// Relative tolerance (see [`Comparison::allowed`]).
    pub tolerance: f64,
}

impl CheckSettings {
    /// Tolerances for an f32 device, and for bf16/f16 products against f32. Measured
    /// differences are far below them (see docs/gpus.md); they leave room for a
    /// different summation order and a few Adam steps, not for a wrong result.
    pub fn new(steps: usize, batch_size: usize, precision: Precision) -> Self {
        let tolerance = match precision {
            Precision::F32 => 2e-3,
            Precision::F16 => 2e-2,
            Precision::Bf16 => 5e-2,
        };
        Self {
            families: Family::ALL.to_vec(),
            steps,
            batch_size,
            precision,
            tolerance,
        }
    }
}

/// The data every family's check trains on.
pub struct CheckData {
    pub classify: PreparedData,
    pub vqvae: VqVaeData,
    /// The built-in NLVR2 statements about the same images.
    pub qa: QaData,
}

impl CheckData {
    /// A small synthetic set (48 training and 16 held-out images) generated under `data_dir`,
    /// prepared as `classify`, `train-vqvae` and `finetune-vqa --task nlvr2` prepare theirs.
    pub fn prepare(data_dir: &Path) -> Result<Self, String> {
        let classify = DataConfig {
            synthetic: Self::synthetic(),
            ..DataConfig::synthetic()
        };
        Ok(Self {
            classify: prepare_data(&classify, &Self::paths(data_dir), false)
                .map_err(|e| e.to_string())?,
            vqvae: Self::vqvae_images(bench_vqvae().data.image_size, data_dir)?,
            qa: question_answering::prepare(data_dir)?,
        })
    }

    /// The same synthetic images for the VQ-VAE, at `image_size` pixels.
    pub fn vqvae_images(image_size: usize, data_dir: &Path) -> Result<VqVaeData, String> {
        let vqvae = VqVaeDataConfig {
            synthetic: Self::synthetic(),
            image_size,
            ..bench_vqvae().data
        };
        prepare_vqvae_data(&vqvae, &Self::paths(data_dir), false).map_err(|e| e.to_string())
    }

    fn synthetic() -> SyntheticCocoConfig {
        SyntheticCocoConfig {
            n_train: 48,
            n_val: 16,
            ..SyntheticCocoConfig::default()
        }
    }

    fn paths(data_dir: &Path) -> RunPaths {
        RunPaths {
            out_dir: data_dir.join("tokenizer"),
            data_dir: data_dir.to_path_buf(),
            cache_dir: data_dir.join("cache"),
        }
    }
}

pub(super) fn floats<B: burn::tensor::backend::Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 data")
}

/// `steps` engine steps on `task` from `model`: the per-step total and part losses (read once
/// at the end), the steps f16 loss scaling skipped, and the trained model.
pub(super) fn train_steps<B: AutodiffBackend, T: TrainingTask<B>>(
    task: &T,
    mut model: T::Model,
    budget: &Budget,
    precision: Precision,
    steps: usize,
    device: &B::Device,
) -> Result<(Vec<f64>, usize, T::Model), TrainError> {
    let mut optimizer = optimizer::<B, T::Model>(budget);
    let mut mixed = MixedPrecision::new(precision);
    let n = task.n_train();
    let mut losses = Vec::new();
    for s in 0..steps {
        let indices: Vec<usize> = (0..budget.batch_size)
            .map(|i| (s * budget.batch_size + i) % n)
            .collect();
        let batch = step_batch::<B, T>(task, &indices, s as u64, device)?;
        let (stepped, step_losses) = step::<B, T>(
            task,
            model,
            &mut optimizer,
            &mut mixed,
            batch,
            s as u64,
            budget.learning_rate,
            device,
            None,
        )?;
        model = stepped;
        losses.push(step_losses.total);
        losses.extend(step_losses.parts.into_iter().map(|(_, value)| value));
    }
    let skipped = mixed.scaler.map_or(0, |scaler| scaler.skipped_steps);
    Ok((floats(Tensor::cat(losses, 0)), skipped, model))
}

/// The inference module of task `T`'s model.
type Trained<B, T> = <<T as TrainingTask<B>>::Model as AutodiffModule<B>>::InnerModule;
/// One set of trained weights on the reference backend and on the device.
type TrainedPair<R, B, TR, TB> = (Trained<R, TR>, Trained<B, TB>);

/// Runs `task` on both backends from `reference_model`'s weights and compares the step losses;
/// then evaluates the device's trained weights on both backends and compares the held-out
/// metrics that are continuous in the outputs ([`EpochEvaluation::continuous_metrics`]: a
/// threshold metric such as micro-F1 flips by one example's worth for a logit that rounding
/// moves across the threshold). Returns those weights on both backends (inference modules)
/// for further comparisons.
///
/// Evaluation compares one set of weights because Adam amplifies rounding: a parameter whose
/// gradient is near zero moves by about the learning rate in a direction the rounding decides,
/// so two correct backends' weights drift apart by that much after a few steps (their losses
/// do not).
#[allow(clippy::too_many_arguments)]
pub(super) fn compare_training<R, B, TR, TB>(
    family: &'static str,
    (reference_task, device_task): (&TR, &TB),
    (reference_model, device_model): (TR::Model, TB::Model),
    budget: &Budget,
    settings: &CheckSettings,
    (reference_device, device): (&R::Device, &B::Device),
    out: &mut Vec<Comparison>,
) -> Result<TrainedPair<R, B, TR, TB>, TrainError>
where
    R: AutodiffBackend,
    B: AutodiffBackend,
    TR: TrainingTask<R>,
    TB: TrainingTask<B>,
{
    let device_model = copy_weights(&reference_model, device_model)?;
    let untrained = reference_model.clone();
    let (reference_losses, _, _) = train_steps(
        reference_task,
        reference_model,
        budget,
        Precision::F32,
        settings.steps,
        reference_device,
    )?;
    let (device_losses, skipped, device_model) = train_steps(
        device_task,
        device_model,
        budget,
        settings.precision,
        settings.steps,
        device,
    )?;
    out.push(Comparison::new(
        family,
        format!(
            "training losses, {} steps (total and parts){}",
            settings.steps,
            match skipped {
                0 => String::new(),
                n => format!("; {n} skipped by f16 loss scaling"),
            }
        ),
        &device_losses,
        &reference_losses,
        settings.tolerance,
    ));
    let (device_model, reference_model) = (
        device_model.valid(),
        copy_weights(&device_model, untrained)?.valid(),
    );
    let reference_eval = reference_task.evaluate(&reference_model, 1, reference_device)?;
    let device_eval = crate::nn::autocast(settings.precision, || {
        device_task.evaluate(&device_model, 1, device)
    })?;
    let (names, reference_values): (Vec<&str>, Vec<f64>) =
        reference_eval.continuous_metrics().into_iter().unzip();
    let device_values: Vec<f64> = device_eval
        .continuous_metrics()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    out.push(Comparison::new(
        family,
        format!("held-out {}", names.join(", ")),
        &device_values,
        &reference_values,
        settings.tolerance,
    ));
    Ok((reference_model, device_model))
}

/// Every family on device `B` against reference `R`: the joint classifier, LXMERT
/// pretraining, the VQ-VAE and the DALL-E decoder (training, evaluation, logits, KV-cached
/// greedy generation), and both families fine-tuned on image pairs.
pub fn check_families<R: AutodiffBackend, B: AutodiffBackend>(
    data: &CheckData,
    settings: &CheckSettings,
    reference_device: &R::Device,
    device: &B::Device,
) -> Result<Vec<Comparison>, TrainError> {
    let devices = (reference_device, device);
    let mut out = Vec::new();

    if settings.families.contains(&Family::Classifier) {
        check_classifier::<R, B>(data, settings, devices, &mut out)?;
    }
    if settings.families.contains(&Family::Lxmert) {
        check_lxmert::<R, B>(data, settings, devices, &mut out)?;
    }
    if settings.families.contains(&Family::Vqvae) {
        check_vqvae::<R, B>(data, settings, devices, &mut out)?;
    }
    if settings.families.contains(&Family::Dalle) {
        check_dalle::<R, B>(settings, devices, &mut out)?;
    }
    if settings.families.contains(&Family::Qa) {
        check_question_answering::<R, B>(&data.qa, settings, devices, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_judged_relative_to_the_reference_and_nan_fails() {
        let reference = [10.0, -2.0, 0.5];
        let close = Comparison::new("f", "q", &[10.01, -2.0, 0.5], &reference, 2e-3);
        assert!(close.passed(), "{}", close.row()); // 0.01 <= 2e-3 * 10
        let far = Comparison::new("f", "q", &[10.03, -2.0, 0.5], &reference, 2e-3);
        assert!(!far.passed() && far.row().contains("MISMATCH"));
        let nan = Comparison::new("f", "q", &[10.0, f64::NAN, 0.5], &reference, 2e-3);
        assert!(!nan.passed());
        // Small references are judged against 1, not against themselves.
        let small = Comparison::new("f", "q", &[1e-3], &[0.0], 2e-3);
        assert!(small.passed());
    }
}
