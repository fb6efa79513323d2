//! Trains the DALL-E-style decoder on the image tokens of a trained VQ-VAE.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use vislang::backend::{run_on, BackendTask, DeviceSpec};
use vislang::cli::exit_status;
use vislang::models::dalle::AttentionLayout;
use vislang::train::dalle::{train_dalle, with_vqvae_fingerprint, DalleError, TrainDalleConfig};
use vislang::train::RunPaths;

/// Trains a DALL-E-style decoder: one causal pre-LayerNorm transformer over [BOS], BPE text
/// tokens (256 positions in DALL-E, each padded with its own pad id) and the image tokens of a VQ-VAE grid, with
/// the loss (CE_text + 7 CE_image) / 8 and caption dropout for classifier-free guidance.
///
/// It reads the token files that `train-vqvae` wrote into --vqvae (run that first) and the
/// captions of the same dataset. With no arguments: the built-in synthetic set and a small
/// decoder (24 text positions) that trains in minutes on a CPU. With --coco-root: a ~100M-parameter decoder with
/// DALL-E's sparse attention layout, sized for a GPU.
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
    /// MSCOCO 2014 root, for the captions; the token files must come from the same images.
    #[arg(long)]
    coco_root: Option<PathBuf>,
    /// Where the synthetic dataset is (generated if missing).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Where checkpoints, curves and samples are written.
    #[arg(long, default_value = "runs/dalle")]
    out: PathBuf,
    /// cpu, cuda or cuda:N (CUDA needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Text positions in the stream [default: 24 synthetic (its captions are short), 256 COCO
    /// (DALL-E)].
    #[arg(long)]
    text_len: Option<usize>,
    /// BPE vocabulary size [default: 256 synthetic, 16384 COCO].
    #[arg(long)]
    bpe_vocab: Option<usize>,
    /// Use an existing caption-bpe.json (e.g. another run's) instead of training BPE.
    #[arg(long)]
    bpe: Option<PathBuf>,
    /// Model width [default: 64 synthetic, 768 COCO].
    #[arg(long)]
    d_model: Option<usize>,
    /// Attention heads [default: 4 synthetic, 12 COCO].
    #[arg(long)]
    heads: Option<usize>,
    /// Transformer layers [default: 2 synthetic, 12 COCO].
    #[arg(long)]
    layers: Option<usize>,
    /// DALL-E's sparse attention (row, column, row, row, ..., convolutional in the last
    /// layer) with this kernel, instead of dense causal attention [default: dense synthetic,
    /// 11 COCO].
    #[arg(long)]
    sparse_kernel: Option<usize>,
    /// Dense causal attention even for the COCO preset.
    #[arg(long, conflicts_with = "sparse_kernel")]
    dense: bool,
    /// Training epochs [default: 6 synthetic, 20 COCO].
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size [default: 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate of AdamW [default: 2e-3 synthetic, 3e-4 COCO].
    #[arg(long)]
    lr: Option<f64>,
    /// Probability of replacing a caption with the null caption during training.
    #[arg(long)]
    caption_dropout: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip and count bad caption entries instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Synthetic set: training images (must match the set the VQ-VAE encoded).
    #[arg(long)]
    synthetic_train: Option<usize>,
    /// Synthetic set: held-out images (must match the set the VQ-VAE encoded).
    #[arg(long)]
    synthetic_val: Option<usize>,
    /// Hide progress bars (epoch summaries are still printed).
    #[arg(long)]
    quiet: bool,
}

struct Train {
    config: TrainDalleConfig,
    paths: RunPaths,
    show_progress: bool,
}

impl BackendTask for Train {
    type Output = Result<(), DalleError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let config = with_vqvae_fingerprint(self.config)?;
        let result = train_dalle::<B>(&config, &self.paths, &device, self.show_progress)?;
        let last = &result.final_epoch;
        println!(
            "held-out cross-entropy: text {:.3}, image {:.3} nats/token ({} parameters, {:.0} training tokens/s)",
            last.val_text_loss, last.val_image_loss, result.n_params, last.train_tokens_per_second
        );
        println!(
            "decoder, curves and samples: {}",
            self.paths.out_dir.display()
        );
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match &args.coco_root {
        Some(root) => TrainDalleConfig::coco(root.clone(), args.vqvae.clone()),
        None => TrainDalleConfig::synthetic(args.vqvae.clone()),
    };
    let d = &mut config.data;
    d.text_len = args.text_len.unwrap_or(d.text_len);
    d.bpe_vocab = args.bpe_vocab.unwrap_or(d.bpe_vocab);
    d.skip_bad = args.skip_bad;
    d.bpe = args.bpe;
    d.synthetic.n_train = args.synthetic_train.unwrap_or(d.synthetic.n_train);
    d.synthetic.n_val = args.synthetic_val.unwrap_or(d.synthetic.n_val);
    let m = &mut config.model;
    m.d_model = args.d_model.unwrap_or(m.d_model);
    m.n_heads = args.heads.unwrap_or(m.n_heads);
    m.n_layers = args.layers.unwrap_or(m.n_layers);
    if let Some(conv_kernel) = args.sparse_kernel {
        m.attention = AttentionLayout::Sparse { conv_kernel };
    }
    if args.dense {
        m.attention = AttentionLayout::Dense;
    }
    let t = &mut config.training;
    t.epochs = args.epochs.unwrap_or(t.epochs);
    t.batch_size = args.batch_size.unwrap_or(t.batch_size);
    t.learning_rate = args.lr.unwrap_or(t.learning_rate);
    t.caption_dropout = args.caption_dropout.unwrap_or(t.caption_dropout);
    t.seed = args.seed;
    let task = Train {
        config,
        paths: RunPaths {
            cache_dir: args.data_dir.join("cache"),
            data_dir: args.data_dir,
            out_dir: args.out,
        },
        show_progress: !args.quiet,
    };
    exit_status(run_on(args.device, task))
}
