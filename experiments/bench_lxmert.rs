//! The LXMERT part of `bench`, next to the classifier: pretraining samples/s (all three
//! objectives) and fine-tuning samples/s of the synthetic preset's model, with the peak memory
//! of each measurement, on both CPU backends and on the `--device` GPU (cuda or wgpu) if given.
//!
//! Peak memory on the CPU is the process's peak resident set (`VmHWM`), reset before each
//! measurement through `/proc/self/clear_refs` (Linux), so it covers that workload alone plus
//! what the process already held (the dataset cache maps, the binary), which is reported too.

use burn::backend::Autodiff;
use vislang::backend::{CpuBackend, NdArrayBackend};
use vislang::models::classifier::Modality;
use vislang::models::lxmert::LxmertPretraining;
use vislang::nn::AutodiffBackend;
use vislang::train::classify::{lxmert_config, model_config, ClassifyConfig, PreparedData};
use vislang::train::engine::examples_per_second;
use vislang::train::workloads::{pretraining_setup, pretraining_task};

use crate::classifier_throughput;

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `work` with the peak-RSS counter reset; returns its result, the peak (MiB) and the
/// resident set before it started (MiB). `None` where Linux's counters are unavailable.
pub fn with_peak_memory<T>(work: impl FnOnce() -> T) -> (T, Option<(f64, f64)>) {
    let before = status_kib("VmRSS:");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let value = work();
    let peak = status_kib("VmHWM:");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let memory = match (reset, before, peak) {
        (true, Some(before), Some(peak)) => Some((mib(peak), mib(before))),
        _ => None,
    };
    (value, memory)
}

/// Samples/s of `steps` timed pretraining steps (after warm-up) at `batch_size`: the
/// engine's own step.
pub fn pretraining_throughput<B: AutodiffBackend>(
    data: &PreparedData,
    batch_size: usize,
    steps: usize,
    device: &B::Device,
) -> f64 {
    let (pretraining, config) = pretraining_setup(data, batch_size);
    let model: LxmertPretraining<B> = config.init(device);
    let task = pretraining_task(&pretraining, &config, data);
    examples_per_second(&task, model, &pretraining.budget, 3, steps, device).expect("bench step")
}

/// Samples/s of classifier fine-tuning steps: LXMERT, or a single-stream `modality`.
pub fn finetuning_throughput<B: AutodiffBackend>(
    data: &PreparedData,
    single_stream: Option<Modality>,
    batch_size: usize,
    steps: usize,
    device: &B::Device,
) -> f64 {
    let config = ClassifyConfig::synthetic();
    match single_stream {
        Some(modality) => {
            let model = model_config(&config, modality, data).init::<B>(device);
            classifier_throughput(model, data, batch_size, steps, device)
        }
        None => {
            let model = lxmert_config(&config, data).init::<B>(device);
            classifier_throughput(model, data, batch_size, steps, device)
        }
    }
}

fn both_cpu_backends(
    measure_flex: impl FnOnce() -> f64,
    measure_ndarray: impl FnOnce() -> f64,
) -> (f64, f64, Option<(f64, f64)>) {
    let (flex, memory) = with_peak_memory(measure_flex);
    let ndarray = measure_ndarray();
    (flex, ndarray, memory)
}

/// Prints the LXMERT table. `gpu`, when given, measures (pretraining, fine-tuning) samples/s
/// on a GPU at a batch size.
pub fn run(
    data: &PreparedData,
    batch_sizes: &[usize],
    steps: usize,
    gpu: Option<&dyn Fn(usize) -> (f64, f64)>,
) {
    let gpu_column = gpu.is_some();
    say!(
        "\n## LXMERT (synthetic preset: 2/1/1 layers, 64 wide, 16 patches), next to the single-stream joint classifier ({steps} steps after warm-up)"
    );
    say!(
        "| workload | batch | flex samples/s | ndarray samples/s | flex / ndarray | flex peak RSS MiB (held before) |{}",
        if gpu_column { " gpu samples/s | gpu / flex |" } else { "" }
    );
    say!(
        "|---|---|---|---|---|---|{}",
        if gpu_column { "---|---|" } else { "" }
    );
    let print_row =
        |name: &str, batch: usize, measured: (f64, f64, Option<(f64, f64)>), gpu: Option<f64>| {
            let (flex, ndarray, memory) = measured;
            let memory = memory.map_or("n/a".to_string(), |(peak, before)| {
                format!("{peak:.0} ({before:.0})")
            });
            let gpu = match (gpu_column, gpu) {
                (true, Some(rate)) => format!(" {rate:.0} | {:.1} |", rate / flex),
                (true, None) => " - | - |".to_string(),
                (false, _) => String::new(),
            };
            say!(
                "| {name} | {batch} | {flex:.0} | {ndarray:.0} | {:.2} | {memory} |{gpu}",
                flex / ndarray
            );
        };
    type Flex = Autodiff<CpuBackend>;
    type NdArray = Autodiff<NdArrayBackend>;
    let (cpu, nd) = (Default::default(), Default::default());
    for &batch in batch_sizes {
        let gpu = gpu.map(|measure| measure(batch));
        print_row(
            "lxmert pretraining (MLM + masked patches + matching)",
            batch,
            both_cpu_backends(
                || pretraining_throughput::<Flex>(data, batch, steps, &cpu),
                || pretraining_throughput::<NdArray>(data, batch, steps, &nd),
            ),
            gpu.map(|g| g.0),
        );
        print_row(
            "lxmert fine-tuning (classifier)",
            batch,
            both_cpu_backends(
                || finetuning_throughput::<Flex>(data, None, batch, steps, &cpu),
                || finetuning_throughput::<NdArray>(data, None, batch, steps, &nd),
            ),
            gpu.map(|g| g.1),
        );
        let joint = Some(Modality::Joint);
        print_row(
            "single-stream joint (classifier)",
            batch,
            both_cpu_backends(
                || finetuning_throughput::<Flex>(data, joint, batch, steps, &cpu),
                || finetuning_throughput::<NdArray>(data, joint, batch, steps, &nd),
            ),
            None,
        );
    }
}
