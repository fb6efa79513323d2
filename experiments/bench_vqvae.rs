//! The VQ-VAE part of `bench`: training and tokenization throughput per backend, and the PSNR
//! the synthetic preset reaches.

use std::time::Instant;

use burn::backend::Autodiff;
use std::path::Path;

use vislang::backend::{CpuBackend, NdArrayBackend};
use vislang::nn::{AutodiffBackend, Backend};
use vislang::train::engine::{examples_per_second, RunOptions};
use vislang::train::vqvae::{encode_split, train_vqvae, VqVaeData};
use vislang::train::workloads::{bench_vqvae, vqvae_task};
use vislang::train::RunPaths;

/// Training images/s of the synthetic preset's model: the engine's own step.
pub fn train_throughput<B: AutodiffBackend>(
    data: &VqVaeData,
    batch_size: usize,
    steps: usize,
    device: &B::Device,
) -> f64 {
    let (task, budget) = vqvae_task(data, batch_size, Path::new("unused"));
    let model = bench_vqvae().model.init::<B>(device);
    examples_per_second(&task, model, &budget, 3, steps, device).expect("bench step")
}

/// Images/s of encoding the whole held-out split into tokens (an untrained model costs the
/// same as a trained one).
pub fn tokenize_throughput<B: Backend>(data: &VqVaeData, device: &B::Device) -> f64 {
    let model = bench_vqvae().model.init::<B>(device);
    let _ = encode_split(&model, &data.val, "", 128, device); // warm-up
    let started = Instant::now();
    let tokens = encode_split(&model, &data.val, "", 128, device);
    tokens.len() as f64 / started.elapsed().as_secs_f64()
}

/// Runs the section; `gpu` (training and tokenization images/s measured on `--device`) adds a
/// column.
pub fn run(data: &VqVaeData, paths: &RunPaths, steps: usize, gpu: Option<(f64, f64)>) {
    let config = bench_vqvae();
    let batch = config.training.batch_size;
    say!(
        "\n## VQ-VAE, the bench configuration ({} px, f = {}, {} codes, batch {batch}, {steps} steps after warm-up)",
        config.data.image_size, config.model.downsample, config.model.n_codes
    );
    let flex_train =
        train_throughput::<Autodiff<CpuBackend>>(data, batch, steps, &Default::default());
    let ndarray_train =
        train_throughput::<Autodiff<NdArrayBackend>>(data, batch, steps, &Default::default());
    let flex_tokens = tokenize_throughput::<CpuBackend>(data, &Default::default());
    let ndarray_tokens = tokenize_throughput::<NdArrayBackend>(data, &Default::default());
    say!(
        "| | flex images/s | ndarray images/s | flex / ndarray |{}",
        if gpu.is_some() {
            " gpu images/s | gpu / flex |"
        } else {
            ""
        }
    );
    say!(
        "|---|---|---|---|{}",
        if gpu.is_some() { "---|---|" } else { "" }
    );
    let row = |name: &str, flex: f64, ndarray: f64, gpu: Option<f64>| {
        let gpu = gpu.map_or(String::new(), |rate| {
            format!(" {rate:.0} | {:.1} |", rate / flex)
        });
        say!(
            "| {name} | {flex:.0} | {ndarray:.0} | {:.2} |{gpu}",
            flex / ndarray
        );
    };
    row("training", flex_train, ndarray_train, gpu.map(|g| g.0));
    row(
        "tokenization",
        flex_tokens,
        ndarray_tokens,
        gpu.map(|g| g.1),
    );

    // The full preset, trained from scratch in a scratch directory.
    let out_dir = std::env::temp_dir().join(format!("vislang-bench-vqvae-{}", std::process::id()));
    let paths = RunPaths {
        out_dir: out_dir.clone(),
        ..paths.clone()
    };
    let started = Instant::now();
    let result = train_vqvae::<Autodiff<CpuBackend>>(
        &config,
        &paths,
        &Default::default(),
        RunOptions::default(),
    )
    .expect("VQ-VAE training");
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out_dir);
    let last = &result.final_epoch;
    say!(
        "\nfull synthetic preset on flex ({} epochs, {:.0} s including evaluation and tokenization):",
        config.training.epochs, seconds
    );
    say!(
        "held-out PSNR {:.2} dB vs {:.2} dB for the mean-image reference (+{:.2} dB); perplexity {:.1}; codes used {:.0}%",
        last.eval.psnr,
        result.mean_image_psnr,
        last.eval.psnr - result.mean_image_psnr,
        last.eval.perplexity,
        100.0 * last.eval.codes_used
    );
}
