//! Runs every family on a GPU-style device and on the CPU (Flex) from the same weights and
//! batches, and checks that they compute the same thing: training losses, held-out metrics,
//! logits, answer logits on image pairs and KV-cached greedy generation
//! ([`vislang::train::device_check`]).
//!
//! ```text
//! # CI, without a GPU (Mesa's software Vulkan; apt-get install mesa-vulkan-drivers), without
//! # autotune (compiling every candidate kernel on software Vulkan is most of the time):
//! cargo run --release --features wgpu-untuned --example device_parity -- --device wgpu:cpu
//! # f16 mixed precision on the device against the f32 CPU run:
//! cargo run --release --features wgpu-untuned --example device_parity -- --device wgpu:cpu --precision f16
//! # a user with a GPU, autotuned:
//! cargo run --release --features wgpu --example device_parity -- --device wgpu
//! # a user with an NVIDIA GPU:
//! cargo run --release --features cuda --example device_parity -- --device cuda
//! ```
//!
//! An example rather than a binary: only this one target instantiates the training stack on
//! the wgpu backend, which is what costs compile time (see docs/gpus.md).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vislang::backend::tasks::CheckDevice;
use vislang::backend::{run_on, DeviceSpec};
use vislang::nn::Precision;
use vislang::train::device_check::{CheckData, CheckSettings, Family};

#[derive(Parser, Debug)]
#[command(about = "Checks that a device computes what the CPU computes, family by family")]
struct Args {
    /// The device under test: wgpu, wgpu:N, wgpu:cpu, cuda or cuda:N.
    #[arg(long)]
    device: DeviceSpec,
    /// Precision of the device's run (the CPU reference runs f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Training steps per family.
    #[arg(long, default_value_t = 3, value_parser = vislang::cli::range::at_least_one)]
    steps: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 4, value_parser = vislang::cli::range::at_least_one)]
    batch_size: usize,
    /// Only these families (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    family: Vec<Family>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.device.is_accelerator() {
        eprintln!("error: --device {} is the reference itself; name a GPU-style device (wgpu, wgpu:cpu, cuda)", args.device);
        return ExitCode::from(2);
    }
    let scratch =
        std::env::temp_dir().join(format!("vislang-device-parity-{}", std::process::id()));
    let data = CheckData::prepare(&scratch);
    let outcome = data.map(|data| {
        let started = Instant::now();
        let mut settings = CheckSettings::new(args.steps, args.batch_size, args.precision);
        if !args.family.is_empty() {
            settings.families = args.family.clone();
        }
        let check = CheckDevice {
            data: &data,
            settings: &settings,
        };
        (run_on(args.device, check), started.elapsed())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let (comparisons, seconds) = match outcome {
        Ok((Ok(Ok(comparisons)), elapsed)) => (comparisons, elapsed.as_secs_f64()),
        Ok((Ok(Err(message)), _)) | Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
        Ok((Err(error), _)) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // Which kernels ran: with autotune the fastest candidate per shape, without it CubeCL's
    // default (the `wgpu-untuned` build CI uses; a CUDA build is always autotuned).
    let kernels = if cfg!(any(feature = "wgpu", feature = "cuda")) {
        "autotuned"
    } else {
        "default kernels"
    };
    println!(
        "## --device {} ({}, {kernels}) against cpu (Flex, f32): {} steps of batch {} per family, {seconds:.0} s",
        args.device,
        args.precision.name(),
        args.steps,
        args.batch_size
    );
    println!("| family | compared | max difference | allowed | |");
    println!("|---|---|---|---|---|");
    for comparison in &comparisons {
        println!("{}", comparison.row());
    }
    let failed = comparisons.iter().filter(|c| !c.passed()).count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} comparisons differ beyond the tolerance",
            comparisons.len()
        );
        ExitCode::FAILURE
    } else {
        println!("all {} comparisons agree", comparisons.len());
        ExitCode::SUCCESS
    }
}
