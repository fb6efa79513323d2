//! `bench --sections pytorch`: each family's training step (and DALL-E's cached generation)
//! next to the PyTorch reference in `experiments/reference/bench_reference.py`, at the same
//! shapes and parameter counts (asserted), in interleaved rounds: vislang, PyTorch with 1
//! thread, PyTorch with 2 threads, and again; the table shows medians and the ratio to the
//! faster PyTorch setting. The machines are shared and noisy, so only ratios measured in the
//! same rounds mean anything.
//!
//! Two sizes of every family: the presets (where each operation's fixed cost decides), and
//! the sizes users train (where the arithmetic decides). Each row states both sides' GFLOP/s
//! ([`vislang::train::workloads::flops`]) and their share of the machine's peak, measured first as the
//! faster side's plain matrix product.
//!
//! PyTorch runs in worker processes (one per thread setting) that keep their model between
//! rounds, as the vislang side keeps its model and optimizer ([`StepTimer`]), with OpenMP's
//! default settings, as a PyTorch user runs it. Peak memory is the resident set each side grew
//! by during its steps (Linux counters).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use serde_json::{json, Value};
use vislang::backend::DeviceSpec;
use vislang::models::classifier::Modality;
use vislang::models::classifier::{SingleStreamClassifier, SingleStreamClassifierConfig};
use vislang::models::dalle::{generate, Dalle, DalleConfig};
use vislang::models::lxmert::{LxmertPretraining, LxmertPretrainingConfig};
use vislang::nn::ops::linear_rows;
use vislang::nn::{autocast, AutodiffBackend, Precision};
use vislang::train::classify::{model_config, ClassifyConfig, PreparedData};
use vislang::train::engine::compute_threads::ComputeThreads;
use vislang::train::engine::{StepTimer, TrainingTask};
use vislang::train::lxmert_pretrain::PretrainLxmertConfig;
use vislang::train::vqvae::{TrainVqVaeConfig, VqVaeData};
use vislang::train::workloads::flops;
use vislang::train::workloads::{
    bench_dalle, bench_vqvae, classifier_task, large_classifier, large_dalle,
    large_pretraining_setup, large_vqvae, pretraining_setup, pretraining_task, vqvae_task,
    DalleWorkload, GenerationWorkload,
};
use vislang::train::Budget;

use crate::bench_lxmert::with_peak_memory;

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
            say!("PyTorch {version} ({})", python.display());
            Ok(python)
        }
        _ => Err(format!(
            "--sections pytorch needs a Python with torch: `{}` could not import it. Install \
             it with `pip install torch` (CPU wheels work; about 1 GB), or point VISLANG_PYTHON \
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
        if !Path::new(SCRIPT).is_file() {
            return Err(format!(
                "{SCRIPT} not found: run the bench from the repository root"
            ));
        }
        let mut child = Command::new(python)
            .args([SCRIPT, family, &threads.to_string(), &config.to_string()])
            .args([&target.torch_device, target.precision.name()])
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

/// The largest of `values` (NaN when there are none).
fn fastest(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// Medians of one workload's interleaved rounds.
struct Row {
    vislang: f64,
    /// One median per PyTorch thread setting.
    torch: Vec<f64>,
    /// The fastest single round of vislang, and of PyTorch at any thread setting.
    fastest: (f64, f64),
    memory: (Option<f64>, Option<f64>),
}

impl Row {
    fn best_torch(&self) -> f64 {
        fastest(&self.torch)
    }

    /// The fastest round of either side: a peak is what the machine can do, and other work on
    /// a shared machine only pulls rounds down, so a median of them reads low.
    fn peak_rate(&self) -> f64 {
        self.fastest.0.max(self.fastest.1)
    }
}

/// What every comparison shares.
struct Setup<'a> {
    python: &'a PathBuf,
    target: &'a Target,
    rounds: usize,
    /// The most steps one measurement takes.
    max_steps: usize,
}

/// How long one side's measurement should last: long enough to average a few steps of the
/// large workloads, short enough for five rounds of every row to stay within minutes.
const MEASUREMENT_SECONDS: f64 = 4.0;

/// One row of the comparison: what the reference builds, and how to count its work.
struct Workload {
    name: String,
    family: &'static str,
    /// The reference's config (shapes, batch, optimizer settings).
    config: Value,
    params: usize,
    examples_per_step: usize,
    /// Floating-point operations per example ([`flops`]); `None` where not counted.
    flops_per_example: Option<f64>,
}

/// Runs `rounds` interleaved rounds of `workload`: vislang (`vislang(steps)` gives
/// examples/s), then each PyTorch worker, every side the same number of steps. Fails if the
/// parameter counts differ.
fn compare(
    setup: &Setup,
    workload: &Workload,
    vislang: &mut dyn FnMut(usize) -> f64,
) -> Result<Row, String> {
    // Warm-up beyond the timer's first steps; it also says how many steps fill a measurement.
    let rate = vislang(1);
    let seconds_per_step = workload.examples_per_step as f64 / rate;
    let steps =
        ((MEASUREMENT_SECONDS / seconds_per_step).round() as usize).clamp(1, setup.max_steps);
    let mut config = workload.config.clone();
    config["warmup"] = json!(steps.clamp(1, 3));
    let mut workers = setup
        .target
        .thread_counts()
        .iter()
        .map(|&threads| {
            Reference::start(
                setup.python,
                workload.family,
                threads,
                &config,
                setup.target,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if setup.target.on_gpu() {
        say!(
            "<!-- {}: PyTorch on {} -->",
            workload.family,
            workers[0].device_name
        );
    }
    if workers[0].params != workload.params {
        return Err(format!(
            "{}: the PyTorch reference has {} parameters, vislang {}; the comparison would \
             not be like for like (config {config})",
            workload.name, workers[0].params, workload.params
        ));
    }
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
        fastest: (fastest(&ours), fastest(&theirs.concat())),
        vislang: median(&mut ours),
        torch: theirs.iter_mut().map(|rates| median(rates)).collect(),
        memory: (our_peak, their_peak),
    })
}

/// A rate with the digits that matter at its size.
fn rate(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

/// A table row: the workload, vislang's rate, each PyTorch setting's, the ratio to the fastest
/// PyTorch setting (bold), both sides' GFLOP/s and share of `peak` (GFLOP/s), and the peak
/// memory of both sides.
fn table_row(name: &str, row: &Row, flops_per_example: Option<f64>, peak: Option<f64>) -> String {
    let best = row.best_torch();
    let mib = |m: Option<f64>| m.map_or("n/a".to_string(), |m| format!("{m:.0}"));
    let torch: String = row
        .torch
        .iter()
        .map(|&r| format!(" {} |", rate(r)))
        .collect();
    let (gflops, share) = match flops_per_example {
        Some(flops) => {
            let [ours, theirs] = [row.vislang, best].map(|r| r * flops / 1e9);
            let share = match peak {
                Some(peak) => format!(
                    "{:.0}% / {:.0}%",
                    100.0 * ours / peak,
                    100.0 * theirs / peak
                ),
                None => "n/a".into(),
            };
            (format!("{ours:.1} / {theirs:.1}"), share)
        }
        None => ("n/a".into(), "n/a".into()),
    };
    format!(
        "| {name} | {} |{torch} **{:.2}** | {gflops} | {share} | {} / {} |",
        rate(row.vislang),
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
        "| workload | vislang /s |{columns} vislang / best PyTorch | GFLOP/s, vislang / PyTorch | share of peak | peak MiB grown, vislang / PyTorch |\n|---|---|{rule}---|---|---|---|"
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

/// The side of the square matrices the peak is measured on.
const PEAK_SIZE: usize = 2048;

/// The machine's empirical FP32 peak: a plain `PEAK_SIZE`³ matrix product on both sides,
/// interleaved; prints each side's GFLOP/s and returns the fastest.
fn measure_peak<Train: AutodiffBackend>(
    setup: &Setup,
    device: &Train::Device,
) -> Result<f64, String> {
    type Inner<T> = <T as burn::tensor::backend::AutodiffBackend>::InnerBackend;
    let n = PEAK_SIZE;
    let lhs = Tensor::<Inner<Train>, 2>::random([n, n], Distribution::Default, device);
    let rhs = Tensor::<Inner<Train>, 2>::random([n, n], Distribution::Default, device);
    let threads = ComputeThreads::new(0).map_err(|e| e.to_string())?;
    let mut products_per_second = |count: usize| {
        threads.run(|| {
            let started = Instant::now();
            let mut last = None;
            for _ in 0..count {
                last = Some(linear_rows(lhs.clone(), rhs.clone(), None));
            }
            // Reading one entry waits for queued work (asynchronous GPU backends).
            let _ = last.map(|p| p.slice([0..1, 0..1]).into_data());
            count as f64 / started.elapsed().as_secs_f64()
        })
    };
    let workload = Workload {
        name: format!("matrix product {n} x {n} x {n}"),
        family: "matmul",
        config: json!({ "size": n }),
        params: 0,
        examples_per_step: 1,
        flops_per_example: Some(2.0 * (n * n * n) as f64),
    };
    let row = compare(setup, &workload, &mut products_per_second)?;
    let gflops = |products: f64| products * workload.flops_per_example.unwrap() / 1e9;
    let torch: Vec<String> = row
        .torch
        .iter()
        .map(|&r| format!("{:.1}", gflops(r)))
        .collect();
    let peak = gflops(row.peak_rate());
    say!(
        "FP32 peak, measured: the fastest round of either side's plain {n} x {n} x {n} matrix \
         product (medians: vislang {:.1} GFLOP/s; PyTorch {} GFLOP/s at {} threads): \
         **{peak:.1} GFLOP/s**",
        gflops(row.vislang),
        torch.join(" and "),
        setup
            .target
            .thread_counts()
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
    );
    Ok(peak)
}

/// The section's shared inputs and settings.
struct Section<'a, Train: AutodiffBackend> {
    setup: Setup<'a>,
    data: &'a PreparedData,
    precision: Precision,
    peak: Option<f64>,
    device: &'a Train::Device,
}

impl<Train: AutodiffBackend> Section<'_, Train> {
    /// Compares the engine's training step of `task` on `model` with the reference's and prints
    /// the row.
    fn training<T>(
        &self,
        workload: Workload,
        task: &T,
        model: T::Model,
        budget: &Budget,
    ) -> Result<(), String>
    where
        T: TrainingTask<Train> + Sync,
        T::Model: Send,
    {
        let budget = Budget {
            precision: self.precision,
            ..budget.clone()
        };
        let mut timer =
            StepTimer::new(task, model, &budget, self.device).map_err(|e| e.to_string())?;
        timer.examples_per_second(1).map_err(|e| e.to_string())?;
        let row = compare(&self.setup, &workload, &mut |n| {
            timer.examples_per_second(n).expect("bench step")
        })?;
        self.print(&workload, &row);
        Ok(())
    }

    fn print(&self, workload: &Workload, row: &Row) {
        say!(
            "{}",
            table_row(&workload.name, row, workload.flops_per_example, self.peak)
        );
    }

    fn classifier(
        &self,
        name: &str,
        config: SingleStreamClassifierConfig,
        batch: usize,
    ) -> Result<(), String> {
        let model: SingleStreamClassifier<Train> = config.init(self.device);
        let (task, budget) = classifier_task(self.data, batch);
        let text_width = mean_text_width(self.data, batch, 10);
        let mut json = serde_json::to_value(&config).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["text_len"] = json!(text_width);
        json["weight_decay"] = json!(budget.weight_decay);
        json["grad_clip"] = json!(budget.grad_clip);
        let workload = Workload {
            name: format!("{name}, batch {batch} (samples)"),
            family: "classifier",
            config: json,
            params: model.num_params(),
            examples_per_step: batch,
            flops_per_example: Some(flops::classifier_training(&config, text_width)),
        };
        self.training(workload, &task, model, &budget)
    }

    fn lxmert(
        &self,
        name: &str,
        (pretraining, config): (PretrainLxmertConfig, LxmertPretrainingConfig),
    ) -> Result<(), String> {
        let batch = pretraining.budget.batch_size;
        let model: LxmertPretraining<Train> = config.init(self.device);
        let lxmert = &config.lxmert;
        let pixels = lxmert.pixels.as_ref().expect("the preset reads pixels");
        let text_len = mean_text_width(self.data, batch, 10) + 1;
        let json = json!({
            "batch_size": batch,
            "text_len": text_len,
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
        let workload = Workload {
            name: format!("{name}, batch {batch} (samples)"),
            family: "lxmert",
            config: json,
            params: model.num_params(),
            examples_per_step: batch,
            flops_per_example: Some(flops::lxmert_pretraining(&config, text_len)),
        };
        let task = pretraining_task(&pretraining, &config, self.data);
        self.training(workload, &task, model, &pretraining.budget)
    }

    fn vqvae(
        &self,
        preset: TrainVqVaeConfig,
        images: &VqVaeData,
        batch: usize,
    ) -> Result<(), String> {
        let model = preset.model.init::<Train>(self.device);
        let size = preset.data.image_size;
        let mut json = serde_json::to_value(&preset.model).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["image_size"] = json!(size);
        json["weight_decay"] = json!(preset.training.weight_decay);
        json["grad_clip"] = json!(preset.training.grad_clip);
        let workload = Workload {
            name: format!(
                "VQ-VAE {size} px, {} channels, batch {batch} (images)",
                preset.model.hidden
            ),
            family: "vqvae",
            config: json,
            params: model.num_params(),
            examples_per_step: batch,
            flops_per_example: Some(flops::vqvae_training(&preset.model, size)),
        };
        let (task, budget) = vqvae_task(images, batch, Path::new("unused"));
        self.training(workload, &task, model, &budget)
    }

    fn dalle(&self, name: &str, config: DalleConfig, batch: usize) -> Result<(), String> {
        let model: Dalle<Train> = config.init(self.device);
        let workload = DalleWorkload::with_config(config, batch);
        let mut json = serde_json::to_value(&workload.config).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["weight_decay"] = json!(workload.budget.weight_decay);
        json["grad_clip"] = json!(workload.budget.grad_clip);
        let row = Workload {
            name: format!(
                "{name}, {} positions, batch {batch} (sequences)",
                workload.config.seq_len()
            ),
            family: "dalle",
            config: json,
            params: model.num_params(),
            examples_per_step: batch,
            flops_per_example: Some(flops::dalle_training(&workload.config)),
        };
        self.training(row, &workload.task(), model, &workload.budget)
    }

    fn generation(&self, name: &str, config: DalleConfig, batch: usize) -> Result<(), String> {
        let GenerationWorkload {
            config,
            texts,
            sampling,
        } = GenerationWorkload::with_config(config, batch, true);
        let model: Dalle<Train::InnerBackend> = config.init(self.device);
        let mut json = serde_json::to_value(&config).map_err(|e| e.to_string())?;
        json["batch_size"] = json!(batch);
        json["top_k"] = json!(sampling.top_k);
        let workload = Workload {
            name: format!("{name}, KV cache, top-k 32, batch {batch} (images)"),
            family: "generation",
            config: json,
            params: model.num_params(),
            examples_per_step: batch,
            flops_per_example: Some(flops::dalle_generation(&config)),
        };
        let precision = self.precision;
        let generate = || {
            autocast(precision, || {
                generate(&model, &texts, &sampling, self.device)
            })
        };
        // The compute pool a training run would use, as the training rows have.
        let threads = ComputeThreads::new(0).map_err(|e| e.to_string())?;
        threads.run(|| std::hint::black_box(generate()));
        let row = compare(&self.setup, &workload, &mut |n| {
            threads.run(|| {
                let started = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(generate());
                }
                (n * batch) as f64 / started.elapsed().as_secs_f64()
            })
        })?;
        self.print(&workload, &row);
        Ok(())
    }
}

/// Runs the side-by-side section on `device` (backend `Train`) and prints its tables: the
/// peak, the presets, and the sizes users train. `vqvae_data` holds the preset's images and
/// the same images at the large VQ-VAE's size.
pub fn run<Train: AutodiffBackend>(
    python: &PathBuf,
    data: &PreparedData,
    vqvae_data: [&VqVaeData; 2],
    (rounds, max_steps): (usize, usize),
    target: &Target,
    device: &Train::Device,
) -> Result<(), String> {
    say!(
        "\n## vislang ({}, {}) next to PyTorch ({}), same shapes and parameter counts, {rounds} interleaved rounds, medians",
        Train::name(device),
        target.precision.name(),
        target.torch_device,
    );
    let setup = Setup {
        python,
        target,
        rounds,
        max_steps,
    };
    // The peak is an f32 product's; under autocast it is not the yardstick of the rows.
    let peak = match target.precision {
        Precision::F32 => Some(measure_peak::<Train>(&setup, device)?),
        _ => None,
    };
    let section = Section::<Train> {
        setup,
        data,
        precision: target.precision,
        peak,
        device,
    };
    say!(
        "\nEach side steps for about {MEASUREMENT_SECONDS} s per round (the same steps on both); \
         GFLOP/s count the matrix products from the shapes (vislang::train::workloads::flops: 2·m·k·n \
         each, a training step three times its forward products, causal attention half its \
         pairs), the share is of the peak above, and PyTorch's figures are its faster \
         setting's.\n"
    );
    say!("### The presets\n");
    say!("{}", table_header(target));
    let preset = model_config(&ClassifyConfig::synthetic(), Modality::Joint, data);
    for batch in [32, 8, 128] {
        section.classifier("joint classifier", preset.clone(), batch)?;
    }
    section.lxmert("LXMERT small pretraining", pretraining_setup(data, 32))?;
    let tiny_vqvae = bench_vqvae();
    let batch = tiny_vqvae.training.batch_size;
    section.vqvae(tiny_vqvae, vqvae_data[0], batch)?;
    for text_len in [24, 256] {
        section.dalle("DALL-E 2 x 64", bench_dalle(text_len), 32)?;
    }
    section.generation("DALL-E 2 x 64 generation", bench_dalle(24), 16)?;

    say!("\n### The sizes users train\n");
    say!("{}", table_header(target));
    section.classifier("joint classifier 6 x 384", large_classifier(data), 32)?;
    section.lxmert(
        "LXMERT 2/1/1 x 768 pretraining",
        large_pretraining_setup(data, 32),
    )?;
    section.vqvae(large_vqvae(), vqvae_data[1], 16)?;
    section.dalle("DALL-E 8 x 512", large_dalle(24), 16)?;
    section.dalle("DALL-E 8 x 512", large_dalle(256), 8)?;
    section.generation("DALL-E 8 x 512 generation", large_dalle(24), 16)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            vislang: 120.0,
            torch: vec![100.0, 300.0],
            fastest: (130.0, 320.0),
            memory: (Some(12.0), None),
        }
    }

    #[test]
    fn cpu_report_has_both_thread_settings_the_ratio_to_the_faster_and_the_flops() {
        let target = Target::new(DeviceSpec::Cpu, Precision::F32).unwrap();
        let header = table_header(&target);
        assert!(header.contains("PyTorch 1 thread /s | PyTorch 2 threads /s"));
        let columns = |line: &str| line.matches('|').count();
        let (title, rule) = header.split_once('\n').unwrap();
        let line = table_row("w", &row(), Some(1e9), Some(600.0));
        assert_eq!(columns(title), columns(rule));
        assert_eq!(columns(title), columns(&line));
        assert!(line.contains("**0.40**"), "{line}");
        assert!(line.contains("| 120.0 / 300.0 | 20% / 50% |"), "{line}");
        assert!(line.contains("12 / n/a"), "{line}");
        let uncounted = table_row("w", &row(), None, Some(600.0));
        assert!(uncounted.contains("| n/a | n/a |"), "{uncounted}");
    }

    #[test]
    fn the_peak_is_the_fastest_round_not_a_median() {
        assert_eq!(row().peak_rate(), 320.0);
        let ours_faster = Row {
            fastest: (400.0, 320.0),
            ..row()
        };
        assert_eq!(ours_faster.peak_rate(), 400.0);
    }

    #[test]
    fn rates_keep_the_digits_that_matter() {
        assert_eq!(rate(1933.4), "1933");
        assert_eq!(rate(12.46), "12.5");
        assert_eq!(rate(1.7049), "1.70");
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
        let line = table_row("w", &gpu_row, Some(1e9), None);
        let (title, _) = header.split_once('\n').unwrap();
        assert_eq!(title.matches('|').count(), line.matches('|').count());
        assert!(line.contains("**2.00**"), "{line}");
        let wgpu = DeviceSpec::Wgpu(vislang::backend::WgpuAdapter::Software);
        assert!(Target::new(wgpu, Precision::F32).is_err());
    }
}
