//! Trains the VQ-VAE image tokenizer and encodes the dataset into image-token files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::tasks::TrainingRun;
use vislang::backend::DeviceSpec;
use vislang::cli::{parse_with_presets, run_and_report, BudgetArgs, DataArgs};
use vislang::train::vqvae::{TrainVqVaeConfig, VqVaeResult};
use vislang::train::RunPaths;

/// Trains a VQ-VAE image tokenizer (convolutional encoder, EMA codebook with dead-code
/// re-seeding, convolutional decoder) and encodes both splits into image-token grids.
///
/// With no arguments it trains on a 20,000-image built-in synthetic COCO-format set at 32 px
/// (8x8 tokens, 512 codes) in about 10 minutes on a 2-core CPU. --coco-root switches to
/// MSCOCO 2014 with a GPU-sized preset (128 px, 16x16 tokens, 1024 codes).
///
/// --out receives: reconstructions/epoch-NNN.png (held-out inputs above their
/// reconstructions), curve-loss.png, curve-psnr.png, curve-perplexity.png,
/// curve-codes-used.png, and when done vqvae.safetensors + vqvae-config.json, result.json and
/// tokens-train2014.safetensors / tokens-val2014.safetensors (the input of the DALL-E stage).
/// Running the same command again resumes an interrupted run from its last epoch.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Where checkpoints, charts, grids and token files are written.
    #[arg(long, default_value = "runs/vqvae")]
    out: PathBuf,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Image side in pixels, a multiple of --downsample [default: 32 synthetic, 128 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    image_size: Option<usize>,
    /// Downsampling factor: 4, 8 or 16 [default: 4 synthetic, 8 COCO].
    #[arg(long)]
    downsample: Option<usize>,
    /// Codebook size K, at most 65536 [default: 512 synthetic, 1024 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    codes: Option<usize>,
    /// Width of each code vector [default: 32 synthetic, 64 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    code_dim: Option<usize>,
    /// Channels of the convolutions [default: 64 synthetic, 128 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    hidden: Option<usize>,
    /// Seed of initialisation, shuffling and codebook re-seeding.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hide progress bars (epoch summaries are still printed).
    #[arg(long)]
    quiet: bool,
}

/// The run's held-out quality and speed, and where its files are.
fn print_summary(result: &VqVaeResult, config: &TrainVqVaeConfig, paths: &RunPaths) {
    let last = &result.final_epoch;
    println!(
        "held-out PSNR {:.2} dB (mean-image baseline {:.2} dB), reconstruction MSE {:.4}, perplexity {:.1}, codes used {:.0}% of {}",
        last.eval.psnr,
        result.mean_image_psnr,
        last.eval.recon_loss,
        last.eval.perplexity,
        100.0 * last.eval.codes_used,
        config.model.n_codes
    );
    println!(
        "{} training images/s; tokenizer, charts and token files: {}",
        result.train_images_per_second.round(),
        paths.out_dir.display()
    );
}

fn main() -> ExitCode {
    let mut args: Args = parse_with_presets(
        &TrainVqVaeConfig::synthetic().training,
        &TrainVqVaeConfig::coco(PathBuf::new()).training,
    );
    args.data.absolutize();
    let mut config = match &args.data.coco_root {
        Some(root) => TrainVqVaeConfig::coco(root.clone()),
        None => TrainVqVaeConfig::synthetic(),
    };
    let d = &mut config.data;
    d.image_size = args.image_size.unwrap_or(d.image_size);
    d.max_train_images = args.data.max_train_images;
    d.max_eval_images = args.data.max_eval_images;
    d.skip_bad = args.data.skip_bad;
    args.data.apply_to(&mut d.synthetic);
    let m = &mut config.model;
    m.downsample = args.downsample.unwrap_or(m.downsample);
    m.n_codes = args.codes.unwrap_or(m.n_codes);
    m.d_code = args.code_dim.unwrap_or(m.d_code);
    m.hidden = args.hidden.unwrap_or(m.hidden);
    args.budget.apply_to(&mut config.training);
    config.training.seed = args.seed;

    let paths = args.data.paths(args.out);
    let task = TrainingRun::new(&config, &paths, args.budget.run_options(args.quiet));
    run_and_report(&[args.device], task, |result| {
        print_summary(&result, &config, &paths)
    })
}
