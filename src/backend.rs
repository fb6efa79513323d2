//! Backend and device selection: `--device cpu | cuda[:N]`.
//!
//! Experiments are written once, generic over the backend, as a [`BackendTask`]; [`run_on`]
//! picks the backend from the device the user asked for.

use std::fmt;
use std::str::FromStr;

use crate::nn::AutodiffBackend;
use burn::backend::Autodiff;

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
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(DeviceSpec::Cuda(index)),
                _ => Err(format!("unknown device {s:?}; use cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device {0} asks for CUDA, but this binary was built without CUDA support. Rebuild with `cargo build --release --features cuda` (set CUDARC_CUDA_VERSION, e.g. 13000 for CUDA 13.0, if nvcc is not installed)")]
    CudaNotCompiled(DeviceSpec),
}

/// Work that runs on any training backend.
pub trait BackendTask {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the backend behind `spec`.
pub fn run_on<T: BackendTask>(spec: DeviceSpec, task: T) -> Result<T::Output, DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok(task.run::<Autodiff<CpuBackend>>(Default::default())),
        DeviceSpec::Cuda(index) => run_on_cuda(index, task, spec),
    }
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
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}
