//! Benchmarks: the data pipeline (cache vs JPEG decoding), classifier training throughput,
//! LXMERT pretraining and fine-tuning throughput with peak memory, the VQ-VAE (training and tokenization throughput, PSNR reached) and the DALL-E decoder
//! (training tokens/s, generation with and without the cache) on the CPU backends (Flex vs
//! NdArray) and, with `--device cuda|wgpu`, on that GPU (a build with `--features cuda` or `wgpu`).

/// What the bench prints, kept for `--markdown` as it is printed.
static PRINTED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// `println!` that also keeps the line for `--markdown`.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        let mut printed = crate::PRINTED.lock().unwrap_or_else(|p| p.into_inner());
        printed.push_str(&line);
        printed.push('\n');
    }};
}

mod bench_dalle;
mod bench_growth;
mod bench_lxmert;
mod bench_pytorch;
mod bench_vqvae;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::store::ModuleSnapshot;
use clap::Parser;
use vislang::backend::{run_on, BackendTask, CpuBackend, DeviceSpec, NdArrayBackend};
use vislang::data::{
    dataset_root, image_batch, preprocess_image, BadEntryPolicy, ClassificationSplit, CocoDataset,
    CocoSplit, ImageCache, SyntheticCocoConfig, TextTokenizer,
};
use vislang::models::classifier::{Modality, MultiLabelClassifier};
use vislang::nn::{AutodiffBackend, Precision};
use vislang::train::classify::{model_config, ClassifyConfig, PreparedData};
use vislang::train::engine::examples_per_second;
use vislang::train::report::machine;
use vislang::train::vqvae::{prepare_vqvae_data, VqVaeData};
use vislang::train::workloads::{bench_vqvae, classifier_task, large_vqvae};
use vislang::train::RunPaths;

/// Prints throughput numbers for the data pipeline and classifier training, with the machine
/// named, and ratios against a reference measured in the same run.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Where the synthetic dataset and cache live.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Timed training steps per configuration (after warm-up steps).
    #[arg(long, default_value_t = 20, value_parser = vislang::cli::range::at_least_one)]
    steps: usize,
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_values_t = vec![32, 64], value_parser = vislang::cli::range::at_least_one)]
    batch_sizes: Vec<usize>,
    /// cpu times the two CPU backends; cuda[:N] or wgpu[:N|:cpu] also times that device (needs
    /// a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Precision of vislang's steps in the `pytorch` section (PyTorch runs the same under
    /// torch.autocast): f32, bf16 or f16.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Interleaved rounds of the `pytorch` section.
    #[arg(long, default_value_t = 5, value_parser = vislang::cli::range::at_least_one)]
    rounds: usize,
    /// Which sections to run. `pytorch` (not run unless named) times every family next to
    /// the PyTorch reference in experiments/reference/bench_reference.py; it needs a Python
    /// with torch (VISLANG_PYTHON, else python3).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![Section::Data, Section::Classifier, Section::Lxmert, Section::Vqvae, Section::Dalle])]
    sections: Vec<Section>,
    /// Training-set sizes of the `growth` section (each a synthetic set of COCO-sized JPEGs,
    /// about 78 KB each, kept under <data-dir>/growth/).
    #[arg(long, value_delimiter = ',', default_values_t = vec![2_000, 20_000, 100_000], value_parser = vislang::cli::range::at_least_one)]
    growth_images: Vec<usize>,
    /// Also write what is printed to this Markdown file, under one line naming the machine,
    /// the date and the revision (replacing the file: a re-measurement replaces the table).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Measures one size of the `growth` section in this process (the section runs each
    /// size in a fresh process this way).
    #[arg(long, hide = true)]
    growth_one: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Section {
    /// JPEG decoding vs the image cache.
    Data,
    /// Classifier training samples/s per modality.
    Classifier,
    /// LXMERT pretraining and fine-tuning samples/s and peak memory, next to the joint
    /// single-stream classifier.
    Lxmert,
    /// VQ-VAE training and tokenization images/s, and the PSNR of the full synthetic preset.
    Vqvae,
    /// DALL-E decoder training tokens/s, and generation with and without the cache.
    Dalle,
    /// Every family next to PyTorch, interleaved, with ratios.
    Pytorch,
    /// How the data pipeline's costs grow from 2k to 100k COCO-sized images (not run
    /// unless named: it generates up to 7.6 GB of JPEGs and builds 15 GB caches).
    Growth,
}

/// Training samples/s of one modality at one batch size: the engine's own step.
fn train_throughput<B: AutodiffBackend>(
    data: &PreparedData,
    modality: Modality,
    batch_size: usize,
    steps: usize,
    device: &B::Device,
) -> f64 {
    let config = ClassifyConfig::synthetic();
    let model = model_config(&config, modality, data).init::<B>(device);
    classifier_throughput(model, data, batch_size, steps, device)
}

/// Samples/s of the engine's training step on classifier `model`, at the preset's budget.
pub fn classifier_throughput<B, M>(
    model: M,
    data: &PreparedData,
    batch_size: usize,
    steps: usize,
    device: &B::Device,
) -> f64
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
    M::InnerModule: MultiLabelClassifier<B::InnerBackend>,
{
    let (task, budget) = classifier_task(data, batch_size);
    examples_per_second(&task, model, &budget, 3, steps, device).expect("bench step")
}

fn main() {
    let args = Args::parse();
    let python = if args.sections.contains(&Section::Pytorch) {
        match bench_pytorch::find_python() {
            Ok(python) => Some(python),
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    if let Some(n_train) = args.growth_one {
        if let Err(message) = bench_growth::run_one(n_train, args.steps, &args.data_dir) {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(path) = &args.markdown {
        if let Err(message) = check_markdown_path(path) {
            eprintln!("error: --markdown {}: {message}", path.display());
            std::process::exit(2);
        }
    }
    say!("machine: {}", machine());
    let synthetic = SyntheticCocoConfig::default();
    let root = dataset_root(None, &synthetic, &args.data_dir).unwrap_or_else(|error| {
        eprintln!("error: {error}");
        std::process::exit(1)
    });
    let cache_dir = args.data_dir.join("cache");
    let gpu = args.device.is_accelerator().then_some(args.device);
    if args.sections.contains(&Section::Data) {
        data_section(&root, &cache_dir);
    }
    if args.sections.contains(&Section::Classifier) || args.sections.contains(&Section::Lxmert) {
        let data = classifier_data(&root, &cache_dir);
        if args.sections.contains(&Section::Classifier) {
            classifier_section(&args, &data, gpu);
        }
        if args.sections.contains(&Section::Lxmert) {
            let measure = |batch_size: usize| {
                let device = gpu.expect("only called with a GPU");
                let work = GpuWork::Lxmert {
                    data: &data,
                    batch_size,
                    steps: args.steps,
                };
                let rates = on_gpu(device, work);
                (rates[0], rates[1])
            };
            let measure: Option<&dyn Fn(usize) -> (f64, f64)> = gpu.map(|_| &measure as _);
            bench_lxmert::run(&data, &args.batch_sizes, args.steps, measure);
        }
    }
    let paths = RunPaths {
        out_dir: args.data_dir.join("unused"),
        data_dir: args.data_dir.clone(),
        cache_dir: cache_dir.clone(),
    };
    let vqvae_data =
        || prepare_vqvae_data(&bench_vqvae().data, &paths, false).expect("VQ-VAE data");
    if args.sections.contains(&Section::Vqvae) {
        let data = vqvae_data();
        let gpu_rates = gpu.map(|device| {
            let rates = on_gpu(
                device,
                GpuWork::Vqvae {
                    data: &data,
                    steps: args.steps,
                },
            );
            (rates[0], rates[1])
        });
        bench_vqvae::run(&data, &paths, args.steps, gpu_rates);
    }
    if args.sections.contains(&Section::Dalle) {
        bench_dalle::run(args.steps);
    }
    if let Some(python) = python {
        let section = PytorchSection {
            python,
            data: classifier_data(&root, &cache_dir),
            vqvae_data: [
                vqvae_data(),
                prepare_vqvae_data(&large_vqvae().data, &paths, false).expect("VQ-VAE data"),
            ],
            rounds: args.rounds,
            steps: args.steps,
            target: bench_pytorch::Target::new(args.device, args.precision).unwrap_or_else(
                |message| {
                    eprintln!("error: {message}");
                    std::process::exit(2)
                },
            ),
        };
        let outcome = run_on(args.device, section).unwrap_or_else(|error| {
            eprintln!("error: {error}");
            std::process::exit(2)
        });
        if let Err(message) = outcome {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
    if args.sections.contains(&Section::Growth) {
        if let Err(message) = bench_growth::run(&args.growth_images, args.steps, &args.data_dir) {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
    if let Some(path) = &args.markdown {
        if let Err(error) = write_markdown(path) {
            eprintln!("error: --markdown {}: {error}", path.display());
            std::process::exit(1);
        }
        println!("tables written to {}", path.display());
    }
}

/// The `pytorch` section on the `--device` backend.
struct PytorchSection {
    python: PathBuf,
    data: PreparedData,
    /// The preset's images and the same at the large VQ-VAE's size.
    vqvae_data: [VqVaeData; 2],
    rounds: usize,
    steps: usize,
    target: bench_pytorch::Target,
}

impl BackendTask for PytorchSection {
    type Output = Result<(), String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        self.target.precision.check_supported::<B>(&device)?;
        bench_pytorch::run::<B>(
            &self.python,
            &self.data,
            [&self.vqvae_data[0], &self.vqvae_data[1]],
            (self.rounds, self.steps),
            &self.target,
            &device,
        )
    }
}

/// Data pipeline: decoding JPEGs vs reading the cache, both into normalised batches.
fn data_section(root: &Path, cache_dir: &Path) {
    let size = ClassifyConfig::synthetic().data.image_size;
    let dataset =
        CocoDataset::load(root, CocoSplit::Train2014, BadEntryPolicy::Fail).expect("dataset");
    let n = dataset.images.len().min(1000);
    let started = Instant::now();
    for image in &dataset.images[..n] {
        std::hint::black_box(preprocess_image(&image.path, size).expect("decodes"));
    }
    let decode_rate = n as f64 / started.elapsed().as_secs_f64();
    let (cache, _) =
        ImageCache::open_or_build(&dataset, size, cache_dir, BadEntryPolicy::Fail, false)
            .expect("cache");
    let ids: Vec<u64> = dataset.images.iter().map(|i| i.id).collect();
    let started = Instant::now();
    let mut served = 0;
    for _ in 0..5 {
        for chunk in ids.chunks(64) {
            std::hint::black_box(image_batch::<CpuBackend>(
                &cache,
                chunk,
                &Default::default(),
            ));
            served += chunk.len();
        }
    }
    let cache_rate = served as f64 / started.elapsed().as_secs_f64();
    say!("\n## data pipeline ({size}px, {} images)", ids.len());
    say!("decode JPEG + resize + crop (1 thread): {decode_rate:>10.0} images/s");
    say!(
        "cache -> normalised batch tensor:       {cache_rate:>10.0} images/s ({:.1}x decoding)",
        cache_rate / decode_rate
    );
}

/// The synthetic set prepared as `classify` prepares it, whole.
fn classifier_data(root: &Path, cache_dir: &Path) -> PreparedData {
    let config = ClassifyConfig::synthetic();
    let size = config.data.image_size;
    let dataset =
        CocoDataset::load(root, CocoSplit::Train2014, BadEntryPolicy::Fail).expect("dataset");
    let tokenizer = TextTokenizer::train_wordpiece(dataset.all_captions(), config.data.vocab_size)
        .expect("tokenizer");
    let prepare = |dataset| {
        ClassificationSplit::prepare(
            dataset,
            &tokenizer,
            size,
            config.data.max_text_len,
            None,
            cache_dir,
            BadEntryPolicy::Fail,
            false,
        )
        .expect("split")
    };
    // The whole split, so one cache serves every section and run.
    let train = prepare(dataset);
    let val = prepare(
        CocoDataset::load(root, CocoSplit::Val2014, BadEntryPolicy::Fail).expect("dataset"),
    );
    PreparedData {
        train,
        val,
        tokenizer,
        skipped: Default::default(),
        // Pretraining is timed with BERT's uniform masking.
        object_tokens: Vec::new(),
    }
}

/// Classifier training samples/s per modality and batch size.
fn classifier_section(args: &Args, data: &PreparedData, gpu: Option<DeviceSpec>) {
    say!(
        "\n## classifier training, synthetic preset ({} steps after warm-up)",
        args.steps
    );
    say!(
        "| modality | batch | flex samples/s | ndarray samples/s | flex / ndarray |{}",
        if gpu.is_some() {
            " gpu samples/s | gpu / flex |"
        } else {
            ""
        }
    );
    say!(
        "|---|---|---|---|---|{}",
        if gpu.is_some() { "---|---|" } else { "" }
    );
    for &batch_size in &args.batch_sizes {
        for modality in Modality::ALL {
            let flex = train_throughput::<Autodiff<CpuBackend>>(
                data,
                modality,
                batch_size,
                args.steps,
                &Default::default(),
            );
            let ndarray = train_throughput::<Autodiff<NdArrayBackend>>(
                data,
                modality,
                batch_size,
                args.steps,
                &Default::default(),
            );
            let gpu = match gpu {
                Some(device) => {
                    let work = GpuWork::Classifier {
                        data,
                        modality,
                        batch_size,
                        steps: args.steps,
                    };
                    let rate = on_gpu(device, work)[0];
                    format!(" {rate:.0} | {:.1} |", rate / flex)
                }
                None => String::new(),
            };
            say!(
                "| {} | {batch_size} | {flex:.0} | {ndarray:.0} | {:.2} |{gpu}",
                modality.name(),
                flex / ndarray
            );
        }
    }
}

/// A measurement on the GPU-style device `--device` names (cuda or wgpu).
enum GpuWork<'a> {
    /// Classifier training samples/s.
    Classifier {
        data: &'a PreparedData,
        modality: Modality,
        batch_size: usize,
        steps: usize,
    },
    /// VQ-VAE (training, tokenization) images/s.
    Vqvae { data: &'a VqVaeData, steps: usize },
    /// LXMERT (pretraining, fine-tuning) samples/s.
    Lxmert {
        data: &'a PreparedData,
        batch_size: usize,
        steps: usize,
    },
}

impl BackendTask for GpuWork<'_> {
    type Output = Vec<f64>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Vec<f64> {
        match self {
            GpuWork::Classifier {
                data,
                modality,
                batch_size,
                steps,
            } => vec![train_throughput::<B>(
                data, modality, batch_size, steps, &device,
            )],
            GpuWork::Vqvae { data, steps } => {
                let batch = bench_vqvae().training.batch_size;
                vec![
                    bench_vqvae::train_throughput::<B>(data, batch, steps, &device),
                    bench_vqvae::tokenize_throughput::<B::InnerBackend>(data, &device),
                ]
            }
            GpuWork::Lxmert {
                data,
                batch_size,
                steps,
            } => vec![
                bench_lxmert::pretraining_throughput::<B>(data, batch_size, steps, &device),
                bench_lxmert::finetuning_throughput::<B>(data, None, batch_size, steps, &device),
            ],
        }
    }
}

/// Runs `work` on `device`, or ends the process with the reason it cannot.
fn on_gpu(device: DeviceSpec, work: GpuWork) -> Vec<f64> {
    run_on(device, work).unwrap_or_else(|error| {
        eprintln!("error: {error}");
        std::process::exit(2)
    })
}

/// Refuses a `--markdown` path that cannot be written, before anything is measured.
fn check_markdown_path(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a directory; name a file".into());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !parent.is_dir() {
            return Err(format!("its folder {} does not exist", parent.display()));
        }
    }
    Ok(())
}

/// What was printed, as Markdown under the line naming the machine, date and revision: tables
/// and headings as they are, every other line as a list item.
fn write_markdown(path: &Path) -> Result<(), vislang::io::checkpoint::CheckpointError> {
    let printed = PRINTED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut markdown = format!(
        "# vislang bench\n\n{}\n\n",
        vislang::train::report::provenance()
    );
    for line in printed.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('|') || trimmed.starts_with('#') {
            markdown.push_str(line);
        } else {
            markdown.push_str("- ");
            markdown.push_str(trimmed);
        }
        markdown.push('\n');
    }
    vislang::io::checkpoint::write_atomic(path, markdown.as_bytes())
}
