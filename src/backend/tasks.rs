//! The experiments as [`BackendTask`]s whose CPU run is compiled here, once: [`Classify`],
//! each [`TrainingRun`] (the data-parallel ones as [`ReplicatedTask`]s), and the device check
//! [`CheckDevice`]. A binary runs one with
//! [`run_on`](super::run_on) or [`run_on_devices`](super::run_on_devices).
//!
//! Why here: a generic function is compiled in the crate that names its type arguments, and an
//! optimised build does not share those copies between crates. A task written in a binary
//! compiled the whole training stack (Burn's autodiff ops, the models, the engine) on the CPU
//! backend once per binary. These tasks override [`BackendTask::run_on_cpu`] (or
//! [`ReplicatedTask::run_on_cpu_replicas`]), a method of a concrete type and so compiled in
//! this crate; the binaries link to it. Their GPU-style runs stay generic: compiled only in
//! builds with the `cuda` or `wgpu` features, and only in the binaries that run them.
//!
//! The library's unit-test build leaves this module out (`#[cfg(not(test))]` in
//! `backend.rs`): no unit test runs it, and it would compile the training stack again.

use burn::backend::Autodiff;

use super::{BackendTask, CpuBackend, DeviceError, ReplicatedTask};
use crate::nn::AutodiffBackend;

use crate::train::classify::{
    run_classify, ClassifyConfig, ClassifyError, ClassifyReport, Schedule,
};
use crate::train::dalle::{
    train_dalle, with_vqvae_fingerprint, DalleError, DalleResult, TrainDalleConfig,
};
use crate::train::device_check::{check_families, CheckData, CheckSettings, Comparison};
use crate::train::engine::RunOptions;
use crate::train::lxmert_pretrain::{
    pretrain_lxmert, PretrainError, PretrainLxmertConfig, PretrainResult,
};
use crate::train::vqa::{run_finetune_vqa, FinetuneVqaConfig, FinetuneVqaReport};
use crate::train::vqvae::{train_vqvae, TrainVqVaeConfig, VqVaeError, VqVaeResult};
use crate::train::RunPaths;

/// The CPU run of a task, compiled in this crate: the same body as the trait's default.
macro_rules! compiled_here {
    () => {
        fn run_on_cpu(self, replicas: usize) -> Result<Self::Output, DeviceError> {
            self.run_replicated::<Autodiff<CpuBackend>>(vec![Default::default(); replicas])
        }
    };
}

/// The same for a [`ReplicatedTask`].
macro_rules! replicas_compiled_here {
    () => {
        fn run_on_cpu_replicas(self, replicas: usize) -> Self::Output {
            self.run_on_replicas::<Autodiff<CpuBackend>>(vec![Default::default(); replicas])
        }
    };
}

/// [`run_finetune_vqa`]: every row of the question-answering comparison, every seed.
pub struct FinetuneVqa<'a> {
    pub config: &'a FinetuneVqaConfig,
    pub paths: &'a RunPaths,
    pub schedule: Schedule,
}

impl BackendTask for FinetuneVqa<'_> {
    type Output = Result<FinetuneVqaReport, ClassifyError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        run_finetune_vqa::<B>(self.config, self.paths, &device, self.schedule)
    }

    compiled_here!();
}

/// [`run_classify`]: every model of the comparison, every seed.
pub struct Classify<'a> {
    pub config: &'a ClassifyConfig,
    pub paths: &'a RunPaths,
    pub schedule: Schedule,
}

impl BackendTask for Classify<'_> {
    type Output = Result<ClassifyReport, ClassifyError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        run_classify::<B>(self.config, self.paths, &device, self.schedule)
    }

    compiled_here!();
}

/// One training run of the experiment configured by `C`: [`train_vqvae`] (`TrainVqVaeConfig`),
/// and, data parallel over the devices it is given, [`pretrain_lxmert`]
/// (`PretrainLxmertConfig`) and [`train_dalle`] (`TrainDalleConfig`, with the VQ-VAE's
/// fingerprint filled in by [`with_vqvae_fingerprint`]).
pub struct TrainingRun<'a, C> {
    pub config: &'a C,
    pub paths: &'a RunPaths,
    pub options: RunOptions,
}

impl<'a, C> TrainingRun<'a, C> {
    pub fn new(config: &'a C, paths: &'a RunPaths, options: RunOptions) -> Self {
        Self {
            config,
            paths,
            options,
        }
    }
}

impl BackendTask for TrainingRun<'_, TrainVqVaeConfig> {
    type Output = Result<VqVaeResult, VqVaeError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        train_vqvae::<B>(self.config, self.paths, &device, self.options)
    }

    compiled_here!();
}

impl ReplicatedTask for TrainingRun<'_, PretrainLxmertConfig> {
    type Output = Result<PretrainResult, PretrainError>;

    fn run_on_replicas<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        pretrain_lxmert::<B>(self.config, self.paths, &devices, self.options)
    }

    replicas_compiled_here!();
}

impl ReplicatedTask for TrainingRun<'_, TrainDalleConfig> {
    type Output = Result<DalleResult, DalleError>;

    fn run_on_replicas<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        // After the device is known to work, as every other check of the run.
        let config = with_vqvae_fingerprint(self.config.clone())?;
        train_dalle::<B>(&config, self.paths, &devices, self.options)
    }

    replicas_compiled_here!();
}

/// [`check_families`]: every family on the device against the same run on the CPU backend.
pub struct CheckDevice<'a> {
    pub data: &'a CheckData,
    pub settings: &'a CheckSettings,
}

impl BackendTask for CheckDevice<'_> {
    type Output = Result<Vec<Comparison>, String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        self.settings.precision.check_supported::<B>(&device)?;
        let reference_device = Default::default();
        check_families::<Autodiff<CpuBackend>, B>(
            self.data,
            self.settings,
            &reference_device,
            &device,
        )
        .map_err(|e| e.to_string())
    }

    compiled_here!();
}
