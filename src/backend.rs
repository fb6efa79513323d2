//! Backend and device selection: `--device cpu | cuda[:N] | wgpu[:N|:cpu]`, and
//! `--devices cpu,cpu | cuda:0,cuda:1` for data-parallel training.
//!
//! Experiments are written once, generic over the backend, as a [`BackendTask`]; [`run_on`]
//! picks the backend from the device the user asked for.

use std::fmt;
use std::str::FromStr;

use crate::nn::AutodiffBackend;
use burn::backend::Autodiff;

// Left out of the library's unit-test build: see the module header.
#[cfg(not(test))]
pub mod tasks;

/// The CPU backend. Flex was measured faster than NdArray on our training step (see
/// `cargo run --release --bin bench`); NdArray stays available as [`NdArrayBackend`].
pub type CpuBackend = burn::backend::Flex;
/// The alternative CPU backend, kept for comparison in the benchmark.
pub type NdArrayBackend = burn::backend::NdArray;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Wgpu(WgpuAdapter),
}

/// Which adapter `--device wgpu...` asks Burn's wgpu backend for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgpuAdapter {
    /// `wgpu`: the adapter wgpu ranks first (a discrete GPU if there is one).
    Default,
    /// `wgpu:N`: the N-th discrete GPU.
    Discrete(usize),
    /// `wgpu:cpu`: a software adapter (Mesa's lavapipe), for machines without a GPU.
    Software,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown =
            || format!("unknown device {s:?}; use cpu, cuda, cuda:N, wgpu, wgpu:N or wgpu:cpu");
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu(WgpuAdapter::Default)),
            "wgpu:cpu" => Ok(DeviceSpec::Wgpu(WgpuAdapter::Software)),
            _ => {
                if let Some(index) = s.strip_prefix("cuda:") {
                    index.parse().map(DeviceSpec::Cuda).map_err(|_| unknown())
                } else if let Some(index) = s.strip_prefix("wgpu:") {
                    let index = index.parse().map_err(|_| unknown())?;
                    Ok(DeviceSpec::Wgpu(WgpuAdapter::Discrete(index)))
                } else {
                    Err(unknown())
                }
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
            DeviceSpec::Wgpu(WgpuAdapter::Default) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(WgpuAdapter::Discrete(index)) => write!(f, "wgpu:{index}"),
            DeviceSpec::Wgpu(WgpuAdapter::Software) => write!(f, "wgpu:cpu"),
        }
    }
}

impl DeviceSpec {
    /// Whether the device runs kernels asynchronously from the host (a GPU-style backend):
    /// such devices run one training run at a time.
    pub fn is_accelerator(&self) -> bool {
        !matches!(self, DeviceSpec::Cpu)
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device {0} asks for CUDA, but this binary was built without CUDA support. Rebuild with `cargo build --release --features cuda` (set CUDARC_CUDA_VERSION, e.g. 13000 for CUDA 13.0, if nvcc is not installed)")]
    CudaNotCompiled(DeviceSpec),
    #[error("--devices names no device, or devices of different kinds ({0}); name one kind, e.g. cpu,cpu or cuda:0,cuda:1")]
    Mixed(String),
    #[error("this command trains on one device; --devices with several is for pretrain-lxmert and train-dalle")]
    NotReplicated,
    #[error("--device {0} asks for Burn's wgpu backend, but this binary was built without it. Rebuild with `cargo build --release --features wgpu` (a GPU with Vulkan, Metal or DirectX 12; without a GPU, `apt-get install mesa-vulkan-drivers` and --device wgpu:cpu)")]
    WgpuNotCompiled(DeviceSpec),
}

/// Work that runs on any training backend.
pub trait BackendTask: Sized {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;

    /// Runs on several devices of one backend at once (data parallel: see
    /// [`crate::train::engine::data_parallel`]). Tasks that train on one device only say so.
    fn run_replicated<B: AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Result<Self::Output, DeviceError> {
        match <[B::Device; 1]>::try_from(devices) {
            Ok([device]) => Ok(self.run::<B>(device)),
            Err(_) => Err(DeviceError::NotReplicated),
        }
    }

    /// Runs on `replicas` replicas of the CPU backend. Tasks defined in the library override
    /// this with the same body, which compiles their CPU run once, in the library, instead of
    /// in every binary that runs them (see [`crate::backend::tasks`]).
    fn run_on_cpu(self, replicas: usize) -> Result<Self::Output, DeviceError> {
        self.run_replicated::<Autodiff<CpuBackend>>(vec![Default::default(); replicas])
    }
}

/// Work that trains on one device or on several of one backend at once (data parallel).
pub trait ReplicatedTask: Sized {
    type Output;
    fn run_on_replicas<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;

    /// Runs on `replicas` replicas of the CPU backend; see [`BackendTask::run_on_cpu`].
    fn run_on_cpu_replicas(self, replicas: usize) -> Self::Output {
        self.run_on_replicas::<Autodiff<CpuBackend>>(vec![Default::default(); replicas])
    }
}

/// A [`ReplicatedTask`] as a [`BackendTask`], for [`run_on_devices`].
pub struct Replicated<T>(pub T);

impl<T: ReplicatedTask> BackendTask for Replicated<T> {
    type Output = T::Output;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        self.0.run_on_replicas::<B>(vec![device])
    }

    fn run_replicated<B: AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Result<Self::Output, DeviceError> {
        announce_replicas(devices.len());
        Ok(self.0.run_on_replicas::<B>(devices))
    }

    fn run_on_cpu(self, replicas: usize) -> Result<Self::Output, DeviceError> {
        announce_replicas(replicas);
        Ok(self.0.run_on_cpu_replicas(replicas))
    }
}

fn announce_replicas(replicas: usize) {
    if replicas > 1 {
        eprintln!("data parallel: {replicas} replicas");
    }
}

/// Runs `task` with one replica on each device of `specs`, which must all be of one kind.
pub fn run_on_devices<T: BackendTask>(
    specs: &[DeviceSpec],
    task: T,
) -> Result<T::Output, DeviceError> {
    match specs {
        [] => Err(DeviceError::Mixed(String::new())),
        [spec] => run_on(*spec, task),
        [first, ..] => match first {
            DeviceSpec::Cpu if specs.iter().all(|s| *s == DeviceSpec::Cpu) => {
                task.run_on_cpu(specs.len())
            }
            DeviceSpec::Cuda(_) if specs.iter().all(|s| matches!(s, DeviceSpec::Cuda(_))) => {
                run_replicated_on_cuda(specs, task)
            }
            _ => Err(DeviceError::Mixed(
                specs
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            )),
        },
    }
}

/// A comma-separated device list, `cpu,cpu` or `cuda:0,cuda:1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(pub Vec<DeviceSpec>);

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .map(DeviceList)
    }
}

#[cfg(feature = "cuda")]
fn run_replicated_on_cuda<T: BackendTask>(
    specs: &[DeviceSpec],
    task: T,
) -> Result<T::Output, DeviceError> {
    let devices = specs
        .iter()
        .map(|s| match s {
            DeviceSpec::Cuda(index) => burn_cuda::CudaDevice::new(*index),
            _ => unreachable!("checked: every device is CUDA"),
        })
        .collect();
    task.run_replicated::<Autodiff<burn_cuda::Cuda>>(devices)
}

#[cfg(not(feature = "cuda"))]
fn run_replicated_on_cuda<T: BackendTask>(
    specs: &[DeviceSpec],
    _: T,
) -> Result<T::Output, DeviceError> {
    Err(DeviceError::CudaNotCompiled(specs[0]))
}

/// Runs `task` on the backend behind `spec`.
pub fn run_on<T: BackendTask>(spec: DeviceSpec, task: T) -> Result<T::Output, DeviceError> {
    match spec {
        DeviceSpec::Cpu => task.run_on_cpu(1),
        DeviceSpec::Cuda(index) => run_on_cuda(index, task, spec),
        DeviceSpec::Wgpu(adapter) => run_on_wgpu(adapter, task, spec),
    }
}

/// The wgpu backend vislang runs on: f32 floats, i32 integers, fused, and autotuned with the
/// `wgpu` feature (not with `wgpu-untuned`).
#[cfg(any(feature = "wgpu", feature = "wgpu-untuned"))]
pub type WgpuBackend = burn::backend::Wgpu;

/// The wgpu device behind an adapter choice.
#[cfg(any(feature = "wgpu", feature = "wgpu-untuned"))]
pub fn wgpu_device(adapter: WgpuAdapter) -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    match adapter {
        WgpuAdapter::Default => WgpuDevice::DefaultDevice,
        WgpuAdapter::Discrete(index) => WgpuDevice::DiscreteGpu(index),
        WgpuAdapter::Software => WgpuDevice::Cpu,
    }
}

#[cfg(any(feature = "wgpu", feature = "wgpu-untuned"))]
fn run_on_wgpu<T: BackendTask>(
    adapter: WgpuAdapter,
    task: T,
    _: DeviceSpec,
) -> Result<T::Output, DeviceError> {
    Ok(task.run::<Autodiff<WgpuBackend>>(wgpu_device(adapter)))
}

#[cfg(not(any(feature = "wgpu", feature = "wgpu-untuned")))]
fn run_on_wgpu<T: BackendTask>(
    _: WgpuAdapter,
    _: T,
    spec: DeviceSpec,
) -> Result<T::Output, DeviceError> {
    Err(DeviceError::WgpuNotCompiled(spec))
}

#[cfg(feature = "cuda")]
fn run_on_cuda<T: BackendTask>(
    index: usize,
    task: T,
    _: DeviceSpec,
) -> Result<T::Output, DeviceError> {
    let device = burn_cuda::CudaDevice::new(index);
    Ok(task.run::<Autodiff<burn_cuda::Cuda>>(device))
}

#[cfg(not(feature = "cuda"))]
fn run_on_cuda<T: BackendTask>(_: usize, _: T, spec: DeviceSpec) -> Result<T::Output, DeviceError> {
    Err(DeviceError::CudaNotCompiled(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("wgpu".parse(), Ok(DeviceSpec::Wgpu(WgpuAdapter::Default)));
        assert_eq!(
            "wgpu:1".parse(),
            Ok(DeviceSpec::Wgpu(WgpuAdapter::Discrete(1)))
        );
        assert_eq!(
            "wgpu:cpu".parse(),
            Ok(DeviceSpec::Wgpu(WgpuAdapter::Software))
        );
        for spec in ["cpu", "cuda:3", "wgpu", "wgpu:1", "wgpu:cpu"] {
            assert_eq!(spec.parse::<DeviceSpec>().unwrap().to_string(), spec);
        }
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("wgpu:x".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}
