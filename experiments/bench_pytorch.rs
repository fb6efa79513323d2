//! `bench --against-pytorch`: each family's training step (and DALL-E's cached generation)
//! next to the PyTorch reference in `experiments/reference/bench_reference.py`, at the same
//! shapes and parameter counts (asserted), in interleaved rounds: vislang, PyTorch with 1
//! thread, PyTorch with 2 threads, and again; the table shows medians and the ratio to the
//! faster PyTorch setting. The machines are shared and noisy, so only ratios measured in the
//! same rounds mean anything.
//!
//! PyTorch runs in worker processes (one per thread setting) that keep their model between
//! rounds, as the vislang side keeps its model and optimizer ([`StepTimer`]). Peak memory is
//! the resident set each side grew by during its steps (Linux counters).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use burn::module::Module;
use serde_json::{json, Value};
use vislang::backend::DeviceSpec;
use vislang::models::classifier::{Modality, SingleStreamClassifier};
use vislang::models::dalle::{generate, Dalle};
use vislang::models::lxmert::LxmertPretraining;
use vislang::nn::{autocast, AutodiffBackend, Precision};
use vislang::train::classify::{model_config, ClassifyConfig, PreparedData};
use vislang::train::engine::StepTimer;
use vislang::train::vqvae::VqVaeData;
use vislang::train::Budget;

use crate::bench_lxmert::with_peak_memory;
use vislang::train::workloads::{
    bench_vqvae, classifier_task, pretraining_setup, pretraining_task, vqvae_task, DalleWorkload,
    GenerationWorkload,
};

/// Where and how both sides run: `--device` (cpu or cuda[:N], the same device for PyTorch) and
/// `--precision` (torch.autocast for PyTorch).
#[derive(Debug, Clone)]
pub struct Target {
    /// PyTorch's name of the device: `cpu`, `cuda:N`.
    pub torch_device: String,
    pub precision: Precision,
}

impl Target {
    /// The target of `--device`, or why PyTorch has no counterpart.
    pub fn new(device: DeviceSpec, precision: Precision) -> Result<Self, String> {
        let torch_device = match device {
            DeviceSpec::Cpu => "cpu".to_string(),
            DeviceSpec::Cuda(index) => format!("cuda:{index}"),
            DeviceSpec::Wgpu(_) => {
                return Err(
                    "the pytorch section runs on cpu or cuda: PyTorch has no wgpu device".into(),
                )
            }
        };
        Ok(Self {
            torch_device,
            precision,
        })
    }

    fn on_gpu(&self) -> bool {
        self.torch_device != "cpu"
    }

    /// PyTorch's thread settings: 1 and 2 on the CPU (the faster counts), one worker on a GPU.
    fn thread_counts(&self) -> &'static [usize] {
        if self.on_gpu() {
            &[1]
        } else {
            &[1, 2]
        }
    }
}

const SCRIPT: &str = "experiments/reference/bench_reference.py";

/// A Python with torch, or why there is none and how to get one.
pub fn find_python() -> Result<PathBuf, String> {
    let python = std::env::var_os("VISLANG_PYTHON").map_or("python3".into(), PathBuf::from);
    let probe = Command::new(&python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("PyTorch {version} ({})", python.display());
            Ok(python)
        }
        _ => Err(format!(
            "--against-pytorch needs a Python with torch: `{}` could not import it. Install it \
             with `pip install torch` (CPU wheels work; about 1 GB), or point VISLANG_PYTHON \
             at a Python that has it.",
            python.display()
        )),
    }
}

/// One PyTorch worker process.
struct Reference {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    params: usize,
    /// The GPU's name as PyTorch reports it, or `cpu`.
    device_name: String,
}

impl Reference {
    fn start(
        python: &PathBuf,
        family: &str,
        threads: usize,
        config: &Value,
        target: &Target,
    ) -> Result<Self, String> {
        if !std::path::Path::new(SCRIPT).is_file() {
            return Err(format!(
                "{SCRIPT} not found: run the bench from the repository root"
            ));
        }
        let mut child = Command::new(python)
            .args([SCRIPT, family, &threads.to_string(), &config.to_string()])
            .args([&target.torch_device, target.precision.name()])
            // OpenMP's default spin-waiting collapses 2-thread runs on a loaded 2-core machine.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        let mut reference = Self {
            child,
            input,
            output,
            params: 0,
            device_name: String::new(),
        };
        let ready = reference.read_line()?;
        reference.params = ready["params"].as_u64().unwrap_or(0) as usize;
        reference.device_name = ready["device_name"].as_str().unwrap_or("?").to_string();
        Ok(reference)
    }

    fn read_line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .map_err(|e| format!("reading the PyTorch worker: {e}"))?;
        if line.is_empty() {
            let status = self.child.wait().map_err(|e| e.to_string())?;
            return Err(format!(
                "the PyTorch worker ended ({status}); its error is above"
            ));
        }
        serde_json::from_str(&line).map_err(|e| format!("the PyTorch worker printed {line:?}: {e}"))
    }

    /// (examples/s, peak MiB grown) of `steps` steps.
    fn measure(&mut self, steps: usize) -> Result<(f64, Option<f64>), String> {
        writeln!(self.input, "{steps}")
            .map_err(|e| format!("writing to the PyTorch worker: {e}"))?;
        let reply = self.read_line()?;
        Ok((
            reply["examples_per_second"].as_f64().unwrap_or(f64::NAN),
            reply["peak_mib"].as_f64(),
        ))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Medians of one workload's interleaved rounds.
struct Row {
    vislang: f64,
    /// One median per PyTorch thread setting.
    torch: Vec<f64>,
    memory: (Option<f64>, Option<f64>),
}

/// What every comparison shares.
struct Setup<'a> {
    python: &'a PathBuf,
    target: &'a Target,
    rounds: usize,
}

/// Runs `rounds` interleaved rounds of `steps` steps: vislang (`vislang(steps)` gives
/// examples/s), then each PyTorch worker. Fails if the parameter counts differ.
fn compare(
    setup: &Setup,
    family: &str,
    config: Value,
    vislang_params: usize,
    steps: usize,
    vislang: &mut dyn FnMut(usize) -> f64,
) -> Result<Row, String> {
    let mut workers = setup
        .target
        .thread_counts()
        .iter()
        .map(|&threads| Reference::start(setup.python, family, threads, &config, setup.target))
        .collect::<Result<Vec<_>, _>>()?;
    if setup.target.on_gpu() {
        println!("<!-- {family}: PyTorch on {} -->", workers[0].device_name);
    }
    if workers[0].params != vislang_params {
        return Err(format!(
            "{family}: the PyTorch reference has {} parameters, vislang {vislang_params}; the \
             comparison would not be like for like (config {config})",
            workers[0].params
        ));
    }
    vislang(steps.div_ceil(2)); // warm-up beyond the timer's first steps
    let (mut ours, mut theirs) = (Vec::new(), vec![Vec::new(); workers.len()]);
    let (mut our_peak, mut their_peak) = (None::<f64>, None::<f64>);
    for _ in 0..setup.rounds {
        let (rate, memory) = with_peak_memory(|| vislang(steps));
        ours.push(rate);
        if let Some((peak, before)) = memory {
            our_peak = Some(our_peak.unwrap_or(0.0).max(peak - before));
        }
        for (worker, rates) in workers.iter_mut().zip(&mut theirs) {
            let (rate, peak) = worker.measure(steps)?;
            rates.push(rate);
            if let Some(peak) = peak {
                their_peak = Some(their_peak.unwrap_or(0.0).max(peak));
            }
        }
    }
    Ok(Row {
        vislang: median(&mut ours),
        torch: theirs.iter_mut().map(|rates| median(rates)).collect(),
        memory: (our_peak, their_peak),
    })
}

fn print_row(name: &str, row: &Row) {
    println!("{}", table_row(name, row));
}

/// A table row: the workload, vislang's rate, each PyTorch setting's, the ratio to the fastest
/// PyTorch setting (bold) and the peak memory of both sides.
fn table_row(name: &str, row: &Row) -> String {
    let best = row.torch.iter().copied().fold(f64::NAN, f64::max);
    let mib = |m: Option<f64>| m.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    let torch: String = row.torch.iter().map(|r| format!(" {r:.0} |")).collect();
    format!(
        "| {name} | {:.0} |{torch} **{:.2}** | {} / {} |",
        row.vislang,
        row.vislang / best,
        mib(row.memory.0),
        mib(row.memory.1),
    )
}

/// The table's header for `target`.
fn table_header(target: &Target) -> String {
    let (columns, rule) = if target.on_gpu() {
        (format!(" PyTorch on {} /s |", target.torch_device), "---|")
    } else {
        (
            " PyTorch 1 thread /s | PyTorch 2 threads /s |".to_string(),
            "---|---|",
        )
    };
    format!(
        "| workload | vislang /s |{columns} vislang / best PyTorch | peak MiB grown, vislang / PyTorch |\n|---|---|{rule}---|---|"
    )
}

/// Mean padded caption width of the batches the bench times (captions are padded to the
/// longest in the batch, plus `[SEP]`), so the reference reads as many positions.
fn mean_text_width(data: &PreparedData, batch: usize, n_batches: usize) -> usize {
    let examples = &data.train.examples;
    let widths: Vec<usize> = (0..n_batches)
        .map(|k| {
            (0..batch)
                .map(|i| &examples[(k * batch + i) % examples.len()])
                .map(|e| e.captions.iter().map(Vec::len).max().unwrap_or(0) + 1)
                .max()
                .unwrap_or(1)
        })
        .collect();
    (widths.iter().sum::<usize>() as f64 / widths.len() as f64).round() as usize
}

/// Runs the side-by-side section on `device` (backend `Train`) and prints its table.
pub fn run<Train: AutodiffBackend>(
    python: &PathBuf,
    data: &PreparedData,
    vqvae_data: &VqVaeData,
    (rounds, steps): (usize, usize),
    target: &Target,
    device: &Train::Device,
) -> Result<(), String> {
    let precision = target.precision;
    println!(
        "\n## vislang ({}, {}) next to PyTorch ({}), same shapes and parameter counts, {rounds} interleaved rounds of {steps} steps, medians",
        Train::name(device),
        precision.name(),
        target.torch_device,
    );
    println!("{}", table_header(target));
    let setup = Setup {
        python,
        target,
        rounds,
    };
    let training = ClassifyConfig::synthetic().training;

    for batch in [32, 8, 128] {
        let config = model_config(&ClassifyConfig::synthetic(), Modality::Joint, data);
        let model: SingleStreamClassifier<Train> = config.init(device);
        let params = model.num_params();
        let mut json = serde_json::to_value(&config).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["text_len"] = json!(mean_text_width(data, batch, 10));
        json["weight_decay"] = json!(training.weight_decay);
        json["grad_clip"] = json!(training.grad_clip);
        let (task, mut budget) = classifier_task(data, batch);
        budget.precision = precision;
        let mut timer = StepTimer::new(&task, model, &budget, device).map_err(|e| e.to_string())?;
        timer.examples_per_second(3).map_err(|e| e.to_string())?;
        let row = compare(&setup, "classifier", json, params, steps, &mut |n| {
            timer.examples_per_second(n).expect("bench step")
        })?;
        print_row(&format!("joint classifier, batch {batch} (samples)"), &row);
    }

    {
        let (pretraining, config) = pretraining_setup(data, 32);
        let model: LxmertPretraining<Train> = config.init(device);
        let params = model.num_params();
        let lxmert = &config.lxmert;
        let pixels = lxmert.pixels.as_ref().expect("the preset reads pixels");
        let json = json!({
            "batch_size": 32,
            "text_len": mean_text_width(data, 32, 10) + 1,
            "vocab_size": lxmert.vocab_size, "max_positions": lxmert.max_positions,
            "d_model": lxmert.d_model, "n_heads": lxmert.n_heads, "d_hidden": lxmert.d_hidden,
            "n_language_layers": lxmert.n_language_layers,
            "n_object_layers": lxmert.n_object_layers, "n_cross_layers": lxmert.n_cross_layers,
            "d_feature": lxmert.d_feature, "image_size": pixels.image_size,
            "patch_size": pixels.patch_size, "stem_channels": pixels.stem_channels,
            "d_region_target": config.d_region_target,
            "weight_decay": pretraining.budget.weight_decay,
            "grad_clip": pretraining.budget.grad_clip,
        });
        let task = pretraining_task(&pretraining, &config, data);
        let budget = Budget {
            precision,
            ..pretraining.budget.clone()
        };
        let mut timer = StepTimer::new(&task, model, &budget, device).map_err(|e| e.to_string())?;
        timer.examples_per_second(3).map_err(|e| e.to_string())?;
        let row = compare(&setup, "lxmert", json, params, steps, &mut |n| {
            timer.examples_per_second(n).expect("bench step")
        })?;
        print_row("LXMERT small pretraining, batch 32 (samples)", &row);
    }

    {
        let preset = bench_vqvae();
        let batch = preset.training.batch_size;
        let model = preset.model.init::<Train>(device);
        let params = model.num_params();
        let mut json = serde_json::to_value(&preset.model).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["image_size"] = json!(preset.data.image_size);
        json["weight_decay"] = json!(preset.training.weight_decay);
        json["grad_clip"] = json!(preset.training.grad_clip);
        let (task, mut budget) = vqvae_task(vqvae_data, batch, Path::new("unused"));
        budget.precision = precision;
        let mut timer = StepTimer::new(&task, model, &budget, device).map_err(|e| e.to_string())?;
        timer.examples_per_second(3).map_err(|e| e.to_string())?;
        let row = compare(&setup, "vqvae", json, params, steps, &mut |n| {
            timer.examples_per_second(n).expect("bench step")
        })?;
        let name = format!(
            "VQ-VAE {} px, batch {batch} (images)",
            preset.data.image_size
        );
        print_row(&name, &row);
    }

    for text_len in [24, 256] {
        let workload = DalleWorkload::new(text_len, 32);
        let model: Dalle<Train> = workload.config.init(device);
        let params = model.num_params();
        let positions = workload.config.seq_len();
        let mut json = serde_json::to_value(&workload.config).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(32);
        json["weight_decay"] = json!(workload.budget.weight_decay);
        json["grad_clip"] = json!(workload.budget.grad_clip);
        let task = workload.task();
        let budget = Budget {
            precision,
            ..workload.budget.clone()
        };
        let mut timer = StepTimer::new(&task, model, &budget, device).map_err(|e| e.to_string())?;
        timer.examples_per_second(2).map_err(|e| e.to_string())?;
        let row = compare(&setup, "dalle", json, params, steps, &mut |n| {
            timer.examples_per_second(n).expect("bench step")
        })?;
        print_row(
            &format!("DALL-E training, {positions} positions, batch 32 (sequences)"),
            &row,
        );
    }

    {
        let batch = 16;
        let GenerationWorkload {
            config,
            texts,
            sampling,
        } = GenerationWorkload::new(batch, true);
        let model: Dalle<Train::InnerBackend> = config.init(device);
        let params = model.num_params();
        let mut json = serde_json::to_value(&config).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["top_k"] = json!(32);
        let generate = |model, texts, sampling| {
            autocast(precision, || generate(model, texts, sampling, device))
        };
        generate(&model, &texts, &sampling);
        let row = compare(&setup, "generation", json, params, 1, &mut |n| {
            let started = Instant::now();
            for _ in 0..n {
                std::hint::black_box(generate(&model, &texts, &sampling));
            }
            (n * batch) as f64 / started.elapsed().as_secs_f64()
        })?;
        print_row(
            "DALL-E generation, KV cache, top-k 32, batch 16 (images)",
            &row,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            vislang: 120.0,
            torch: vec![100.0, 300.0],
            memory: (Some(12.0), None),
        }
    }

    #[test]
    fn cpu_report_has_both_thread_settings_and_the_ratio_to_the_faster() {
        let target = Target::new(DeviceSpec::Cpu, Precision::F32).unwrap();
        let header = table_header(&target);
        assert!(header.contains("PyTorch 1 thread /s | PyTorch 2 threads /s"));
        let columns = |line: &str| line.matches('|').count();
        let (title, rule) = header.split_once('\n').unwrap();
        let line = table_row("w", &row());
        assert_eq!(columns(title), columns(rule));
        assert_eq!(columns(title), columns(&line));
        assert!(line.contains("**0.40**"), "{line}");
        assert!(line.contains("12 / n/a"), "{line}");
    }

    #[test]
    fn gpu_report_names_the_device_and_has_one_pytorch_column() {
        let target = Target::new(DeviceSpec::Cuda(1), Precision::Bf16).unwrap();
        assert_eq!(target.torch_device, "cuda:1");
        assert_eq!(target.thread_counts(), &[1]);
        let header = table_header(&target);
        assert!(header.contains("PyTorch on cuda:1 /s"));
        let gpu_row = Row {
            torch: vec![60.0],
            ..row()
        };
        let line = table_row("w", &gpu_row);
        let (title, _) = header.split_once('\n').unwrap();
        assert_eq!(title.matches('|').count(), line.matches('|').count());
        assert!(line.contains("**2.00**"), "{line}");
        let wgpu = DeviceSpec::Wgpu(vislang::backend::WgpuAdapter::Software);
        assert!(Target::new(wgpu, Precision::F32).is_err());
    }
}
