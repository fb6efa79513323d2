//! Generates images from captions with a trained DALL-E-style decoder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vislang::backend::{run_on, BackendTask, DeviceSpec};
use vislang::cli::{absolute, exit_status, or_exit, SamplingArgs};
use vislang::inference::dalle::generate_images;
use vislang::inference::dalle::TrainedDalle;
use vislang::inference::dalle_eval::{rerank, Judge};
use vislang::inference::generation_output::{
    check_output_dir, write_generation, GenerationManifest,
};
use vislang::inference::ArtifactError;
use vislang::models::dalle::SamplingConfig;
use vislang::nn::{autocast, AutodiffBackend, Precision};

/// Generates images from captions: samples image tokens with the decoder (batched, with a
/// key/value cache), decodes them with the VQ-VAE, and writes one PNG grid per caption
/// (grid-NNN.png, NNN = the caption's line) plus every image on its own under images/
/// (NNN-SS.png, a flat folder that FID tools such as pytorch-fid or clean-fid read), and
/// manifest.json (each file's caption, the seed and sampling settings). The folder is replaced
/// whole, never mixed with an earlier run's images; one holding other files is refused.
///
/// With --rerank-with, more candidates are sampled and the joint classifier keeps the best
/// (grids and files in order of its score).
///
/// Example: generate --caption "a picture of a cat and a cup." --num 8
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// A caption (repeat for several).
    #[arg(long)]
    caption: Vec<String>,
    /// A text file with one caption per line (blank lines are skipped).
    #[arg(long)]
    captions: Option<PathBuf>,
    /// Images per caption, at least 1.
    #[arg(long, default_value_t = 8, value_parser = vislang::cli::range::at_least_one)]
    num: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Recompute the whole prefix at every step instead of using the key/value cache (same
    /// images, slower; for comparison).
    #[arg(long)]
    no_cache: bool,
    /// Rank candidates with this joint classifier run (e.g.
    /// runs/classify/runs/joint-seed0) and keep the --num best of --candidates per caption.
    #[arg(long)]
    rerank_with: Option<PathBuf>,
    /// Candidates sampled per caption when reranking [default: 4 x --num].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    candidates: Option<usize>,
    /// Images sampled together, at least 1.
    #[arg(long, default_value_t = 64, value_parser = vislang::cli::range::at_least_one)]
    batch_size: usize,
    /// The `train-dalle` output directory.
    #[arg(long, default_value = "runs/dalle")]
    dalle: PathBuf,
    /// The VQ-VAE directory [default: the one the decoder was trained with].
    #[arg(long)]
    vqvae: Option<PathBuf>,
    /// Where the PNGs go.
    #[arg(long, default_value = "runs/generate")]
    out: PathBuf,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Precision of the decoder's matrix products: f32, bf16 (cpu, cuda) or f16 (cpu, cuda,
    /// wgpu); sampling itself stays f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

struct Task {
    args: Args,
    captions: Vec<String>,
    sampling: SamplingConfig,
}

impl BackendTask for Task {
    type Output = Result<(), ArtifactError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        // Before any sampling: the folder must be new, empty or an earlier generate's.
        check_output_dir(&args.out)?;
        args.precision
            .check_supported::<B>(&device)
            .map_err(ArtifactError::Mismatch)?;
        let trained =
            TrainedDalle::<B::InnerBackend>::load(&args.dalle, args.vqvae.as_deref(), &device)?;
        for caption in &self.captions {
            for warning in trained.caption_warnings(caption)? {
                eprintln!("warning: {warning}");
            }
        }
        let sampling = SamplingConfig {
            use_cache: !args.no_cache,
            ..self.sampling.clone()
        };
        let ranker = match &args.rerank_with {
            Some(dir) => Some(Judge::<B::InnerBackend>::load_ranker(dir, &device)?),
            None => None,
        };
        let per_caption = match &ranker {
            Some(_) => args.candidates.unwrap_or(4 * args.num).max(args.num),
            None => args.num,
        };
        let size = trained.config.image_size;
        let started = Instant::now();
        let mut images = autocast(args.precision, || {
            generate_images(
                &trained,
                &self.captions,
                per_caption,
                &sampling,
                args.batch_size,
                &device,
            )
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let generated = images.iter().map(Vec::len).sum::<usize>();
        if let Some(ranker) = &ranker {
            images = rerank(ranker, &self.captions, images, size, args.num, &device)?;
        }
        let manifest = GenerationManifest {
            format: String::new(),
            dalle: absolute(args.dalle.clone()),
            sampling: sampling.clone(),
            batch_size: args.batch_size,
            precision: args.precision,
            candidates_per_caption: per_caption,
            reranked_with: args.rerank_with.clone().map(absolute),
            files: Vec::new(),
        };
        let manifest = write_generation(&args.out, &self.captions, &images, size, manifest)?;
        for file in manifest.files.iter().filter(|f| f.sample.is_none()) {
            println!(
                "{}: {:?}",
                args.out.join(&file.file).display(),
                file.caption
            );
        }
        let n = generated;
        let tokens = n * trained.config.model.n_image_tokens();
        println!(
            "{n} images in {seconds:.1}s ({:.1} images/s, {:.0} image tokens/s, {} cache)",
            n as f64 / seconds,
            tokens as f64 / seconds,
            if args.no_cache { "without" } else { "with" }
        );
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut captions = args.caption.clone();
    if let Some(path) = &args.captions {
        match std::fs::read_to_string(path) {
            Ok(text) => captions.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(String::from),
            ),
            Err(error) => {
                eprintln!(
                    "error: cannot read captions file {}: {error}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if captions.is_empty() {
        eprintln!("error: no captions; pass --caption \"...\" or --captions FILE");
        return ExitCode::FAILURE;
    }
    if args.num == 0 || args.batch_size == 0 {
        eprintln!("error: --num and --batch-size must be at least 1");
        return ExitCode::FAILURE;
    }
    let sampling = or_exit(args.sampling.config());
    let device = args.device;
    exit_status(run_on(
        device,
        Task {
            args,
            captions,
            sampling,
        },
    ))
}
