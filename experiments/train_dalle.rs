//! Trains the DALL-E-style decoder on the image tokens of a trained VQ-VAE.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::tasks::TrainingRun;
use vislang::backend::Replicated;
use vislang::cli::{
    absolute, or_exit, parse_with_presets, run_and_report, BudgetArgs, CaptionArgs, DataArgs,
    DevicesArgs,
};
use vislang::models::dalle::AttentionLayout;
use vislang::train::dalle::{DalleResult, TrainDalleConfig};
use vislang::train::vqvae::synthetic_set_of_run;
use vislang::train::RunPaths;

/// Trains a DALL-E-style decoder: one causal pre-LayerNorm transformer over [BOS], BPE text
/// tokens (256 positions in DALL-E, each padded with its own pad id) and the image tokens of a VQ-VAE grid, with
/// the loss (CE_text + 7 CE_image) / 8 and caption dropout for classifier-free guidance.
///
/// It reads the token files that `train-vqvae` wrote into --vqvae (run that first) and the
/// captions of the same dataset (by default the synthetic set the VQ-VAE was trained on). With
/// no arguments: a 0.7M-parameter decoder (24 text positions) that trains in about 10 minutes
/// on a 2-core CPU. With --coco-root: a ~100M-parameter decoder with DALL-E's sparse attention
/// layout, sized for a GPU.
///
/// --out receives caption-bpe.json, curve-loss.png (text and image cross-entropy),
/// samples/epoch-NNN.png (per row: a held-out image as the VQ-VAE reconstructs it, then samples
/// for its caption), and when done dalle.safetensors, dalle-config.json and result.json. Running
/// the same command again resumes an interrupted run. Then: `generate --caption "..."`.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The `train-vqvae` output directory (its token files and checkpoint).
    #[arg(long, default_value = "runs/vqvae")]
    vqvae: PathBuf,
    /// The captions' dataset; the token files must come from the same images.
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    captions: CaptionArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Where checkpoints, curves and samples are written.
    #[arg(long, default_value = "runs/dalle")]
    out: PathBuf,
    #[command(flatten)]
    devices: DevicesArgs,
    /// Text positions in the stream [default: 24 synthetic (its captions are short), 256 COCO
    /// (DALL-E)].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    text_len: Option<usize>,
    /// BPE vocabulary size [default: 256 synthetic (128 with --caption-language ko: nouns
    /// and particles as separate tokens), 16384 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    bpe_vocab: Option<usize>,
    /// Use an existing BPE tokenizer.json (e.g. another run's caption-bpe.json) instead of
    /// training one on the captions.
    #[arg(long, alias = "bpe")]
    tokenizer: Option<PathBuf>,
    /// Model width [default: 128 synthetic, 768 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    d_model: Option<usize>,
    /// Attention heads [default: 4 synthetic, 12 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    heads: Option<usize>,
    /// Transformer layers [default: 4 synthetic, 12 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    layers: Option<usize>,
    /// DALL-E's sparse attention (row, column, row, row, ..., convolutional in the last
    /// layer) with this kernel, instead of dense causal attention [default: dense synthetic,
    /// 11 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    sparse_kernel: Option<usize>,
    /// Dense causal attention even for the COCO preset.
    #[arg(long, conflicts_with = "sparse_kernel")]
    dense: bool,
    /// Probability of replacing a caption with the null caption during training, in [0, 1]
    /// [default: 0.1].
    #[arg(long, value_parser = vislang::cli::range::probability)]
    caption_dropout: Option<f64>,
    /// Seed of initialisation, shuffling, caption choice and caption dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hide progress bars (epoch summaries are still printed).
    #[arg(long)]
    quiet: bool,
}

/// The run's held-out losses and speed, and where its files are.
fn print_summary(result: &DalleResult, paths: &RunPaths) {
    let last = &result.final_epoch;
    println!(
        "held-out cross-entropy: text {:.3}, image {:.3} nats/token ({} parameters, {:.0} training tokens/s)",
        last.eval.text_loss, last.eval.image_loss, result.n_params, result.train_tokens_per_second
    );
    println!("decoder, curves and samples: {}", paths.out_dir.display());
}

fn main() -> ExitCode {
    let mut args: Args = parse_with_presets(
        &TrainDalleConfig::synthetic(PathBuf::new()).training,
        &TrainDalleConfig::coco(PathBuf::new(), PathBuf::new()).training,
    );
    args.data.absolutize();
    args.tokenizer = args.tokenizer.map(absolute);
    args.vqvae = absolute(args.vqvae);
    let mut config = match &args.data.coco_root {
        Some(root) => TrainDalleConfig::coco(root.clone(), args.vqvae.clone()),
        None => TrainDalleConfig::synthetic(args.vqvae.clone()),
    };
    let d = &mut config.data;
    d.skip_bad = args.data.skip_bad;
    d.captions = or_exit(args.captions.source(args.data.coco_root.as_deref()));
    if args.data.coco_root.is_none() {
        d.bpe_vocab = TrainDalleConfig::synthetic_bpe_vocab(d.captions.language);
    }
    d.bpe_vocab = args.bpe_vocab.unwrap_or(d.bpe_vocab);
    d.bpe = args.tokenizer;
    d.max_train_images = args.data.max_train_images;
    d.max_eval_images = args.data.max_eval_images;
    // The images the VQ-VAE's token files were made from, unless told otherwise.
    if args.data.coco_root.is_none() {
        if let Some(set) = synthetic_set_of_run(&args.vqvae) {
            d.synthetic = set;
        }
    }
    args.data.apply_to(&mut d.synthetic);
    let m = &mut config.model;
    m.text_len = args.text_len.unwrap_or(m.text_len);
    m.d_model = args.d_model.unwrap_or(m.d_model);
    m.n_heads = args.heads.unwrap_or(m.n_heads);
    m.n_layers = args.layers.unwrap_or(m.n_layers);
    if let Some(conv_kernel) = args.sparse_kernel {
        m.attention = AttentionLayout::Sparse { conv_kernel };
    }
    if args.dense {
        m.attention = AttentionLayout::Dense;
    }
    args.budget.apply_to(&mut config.training);
    config.training.seed = args.seed;
    config.caption_dropout = args.caption_dropout.unwrap_or(config.caption_dropout);
    let paths = args.data.paths(args.out);
    let options = args.budget.run_options(args.quiet);
    let task = Replicated(TrainingRun::new(&config, &paths, options));
    run_and_report(&args.devices.list(), task, |run| {
        print_summary(&run, &paths)
    })
}
