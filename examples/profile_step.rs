//! Runs one family's training step (the engine's own, as `bench` times it) over and over on
//! the CPU, so that a profiler can see where a step's time goes:
//!
//! ```text
//! cargo build --release --example profile_step
//! perf record -g -- target/release/examples/profile_step --family dalle --seconds 20
//! perf report --no-children
//! ```
//!
//! The workloads are the bench's (`vislang::train::workloads`) on the device check's small
//! synthetic set; `--text-len` is DALL-E's caption length (24 or 256 in the bench).
//! `--family generation` repeats the bench's cached generation instead (the DALL-E decoder,
//! top-k 32, `--batch-size` images at a time; 16 in the bench).

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Autodiff;
use clap::Parser;
use vislang::backend::CpuBackend;
use vislang::models::classifier::{Modality, SingleStreamClassifier};
use vislang::models::dalle::generate;
use vislang::models::dalle::Dalle;
use vislang::models::lxmert::LxmertPretraining;
use vislang::train::classify::{model_config, ClassifyConfig};
use vislang::train::device_check::CheckData;
use vislang::train::engine::{StepTimer, TrainingTask};
use vislang::train::vqvae::TrainVqVaeConfig;
use vislang::train::workloads::{
    bench_dalle, classifier_task, large_classifier, large_dalle, large_pretraining_setup,
    large_vqvae, pretraining_setup, pretraining_task, vqvae_task, DalleWorkload,
    GenerationWorkload,
};
use vislang::train::Budget;

type Train = Autodiff<CpuBackend>;

#[derive(Parser, Debug)]
#[command(about = "Repeats one family's training step for a profiler")]
struct Args {
    #[arg(long, value_enum)]
    family: Workload,
    /// Examples per step.
    #[arg(long, default_value_t = 32, value_parser = vislang::cli::range::at_least_one)]
    batch_size: usize,
    /// DALL-E caption positions.
    #[arg(long, default_value_t = 24, value_parser = vislang::cli::range::at_least_one)]
    text_len: usize,
    /// How long to keep stepping after the warm-up (at least one round of 5 steps runs).
    #[arg(long, default_value_t = 10.0, value_parser = vislang::cli::range::positive)]
    seconds: f64,
    /// The sizes users train (`vislang::train::workloads::large_*`: DALL-E 8 x 512, the
    /// classifier 6 x 384, LXMERT 768 wide, the VQ-VAE at 128 px) instead of the presets.
    #[arg(long)]
    large: bool,
    /// Where the small synthetic set is generated.
    #[arg(long, default_value = "data/profile")]
    data_dir: PathBuf,
}

/// The device check's families, and DALL-E's cached generation.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Workload {
    Classifier,
    Lxmert,
    Vqvae,
    Dalle,
    Generation,
}

/// Runs `round` (which returns examples/s) once to warm up, then until `seconds` have
/// passed; prints the median.
fn repeat_rounds(
    seconds: f64,
    mut round: impl FnMut() -> Result<f64, String>,
) -> Result<(), String> {
    round()?;
    let started = Instant::now();
    let mut rates = Vec::new();
    loop {
        rates.push(round()?);
        if started.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{} rounds of 5 steps, median {:.1} examples/s",
        rates.len(),
        rates[rates.len() / 2]
    );
    Ok(())
}

/// The bench's cached generation: `batch` images per call, top-k 32, 5 calls a round.
fn repeat_generation(batch: usize, large: bool, seconds: f64) -> Result<(), String> {
    let device = Default::default();
    let config = if large {
        large_dalle(24)
    } else {
        bench_dalle(24)
    };
    let GenerationWorkload {
        config,
        texts,
        sampling,
    } = GenerationWorkload::with_config(config, batch, true);
    let model: Dalle<CpuBackend> = config.init(&device);
    repeat_rounds(seconds, || {
        let started = Instant::now();
        for _ in 0..5 {
            std::hint::black_box(generate(&model, &texts, &sampling, &device));
        }
        Ok((5 * batch) as f64 / started.elapsed().as_secs_f64())
    })
}

/// Warms up, then steps until `seconds` have passed; prints examples/s.
fn repeat<T: TrainingTask<Train> + Sync>(
    task: &T,
    model: T::Model,
    budget: &Budget,
    seconds: f64,
) -> Result<(), String> {
    let device = Default::default();
    let mut timer = StepTimer::new(task, model, budget, &device).map_err(|e| e.to_string())?;
    let step_error = |e: vislang::train::TrainError| e.to_string();
    repeat_rounds(seconds, || timer.examples_per_second(5).map_err(step_error))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Workload::Generation = args.family {
        return repeat_generation(args.batch_size, args.large, args.seconds);
    }
    let device = Default::default();
    let data = CheckData::prepare(&args.data_dir)?;
    match args.family {
        Workload::Classifier => {
            let config = if args.large {
                large_classifier(&data.classify)
            } else {
                model_config(
                    &ClassifyConfig::synthetic(),
                    Modality::Joint,
                    &data.classify,
                )
            };
            let model: SingleStreamClassifier<Train> = config.init(&device);
            let (task, budget) = classifier_task(&data.classify, args.batch_size);
            repeat(&task, model, &budget, args.seconds)
        }
        Workload::Lxmert => {
            let setup = if args.large {
                large_pretraining_setup
            } else {
                pretraining_setup
            };
            let (pretraining, config) = setup(&data.classify, args.batch_size);
            let model: LxmertPretraining<Train> = config.init(&device);
            let task = pretraining_task(&pretraining, &config, &data.classify);
            repeat(&task, model, &pretraining.budget, args.seconds)
        }
        Workload::Vqvae => {
            let out_dir = args.data_dir.join("unused");
            if args.large {
                let preset = large_vqvae();
                let images = CheckData::vqvae_images(preset.data.image_size, &args.data_dir)?;
                let model = preset.model.init::<Train>(&device);
                let (task, budget) = vqvae_task(&images, args.batch_size, &out_dir);
                return repeat(&task, model, &budget, args.seconds);
            }
            let model = TrainVqVaeConfig::synthetic().model.init::<Train>(&device);
            let (task, budget) = vqvae_task(&data.vqvae, args.batch_size, &out_dir);
            repeat(&task, model, &budget, args.seconds)
        }
        Workload::Dalle => {
            let config = if args.large {
                large_dalle(args.text_len)
            } else {
                bench_dalle(args.text_len)
            };
            let workload = DalleWorkload::with_config(config, args.batch_size);
            let model: Dalle<Train> = workload.config.init(&device);
            repeat(&workload.task(), model, &workload.budget, args.seconds)
        }
        Workload::Generation => unreachable!("handled above"),
    }
}
