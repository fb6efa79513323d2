//! How often a generated image shows what its caption asks for, next to real images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::{run_on, BackendTask, DeviceSpec};
use vislang::cli::{exit_status, or_exit, SamplingArgs};
use vislang::data::{dataset_root, BadEntryPolicy, CocoDataset, CocoSplit, ImageCache};
use vislang::inference::dalle_eval::{evaluate_generation, ImageSetScore, Judge};
use vislang::inference::fid::InceptionNetwork;
use vislang::inference::read_artifact_json;
use vislang::io::checkpoint::write_atomic;
use vislang::models::dalle::SamplingConfig;
use vislang::nn::AutodiffBackend;
use vislang::train::dalle::evaluation::{GenerationOverSeeds, ScoreSpread};
use vislang::train::dalle::{prepare_dalle_data, DalleError, TrainDalleConfig, TrainedDalle};
use vislang::train::RunPaths;

/// Generates one image for each of the first N held-out captions of the synthetic set and asks
/// an image-only classifier (trained by `classify`) whether each object the caption names is
/// in it. Prints the rate over (caption, named object) pairs next to the same rate on the real
/// images (the ceiling), on the real images at the generator's resolution, and on their VQ-VAE
/// reconstructions; writes them to --out as JSON.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The `train-dalle` output directory.
    #[arg(long, default_value = "runs/dalle")]
    dalle: PathBuf,
    /// The VQ-VAE directory [default: the one the decoder was trained with].
    #[arg(long)]
    vqvae: Option<PathBuf>,
    /// The image-only classifier that judges: a `classify` output directory (its image-only
    /// run with the best held-out mAP) or one run, e.g. runs/classify/runs/image-only-seed1.
    #[arg(long, default_value = "runs/classify")]
    judge: PathBuf,
    /// How many held-out captions to check (the first N), at least 1.
    #[arg(long, default_value_t = 200, value_parser = vislang::cli::range::at_least_one)]
    num_captions: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Also rate the best of --candidates samples per caption, ranked by this joint
    /// classifier run (e.g. runs/classify/runs/joint-seed0).
    #[arg(long)]
    rerank_with: Option<PathBuf>,
    /// Samples per caption to rerank, at least 1.
    #[arg(long, default_value_t = 8, value_parser = vislang::cli::range::at_least_one)]
    candidates: usize,
    /// How many sampling seeds (--seed, --seed + 1, ...), at least 1; the generated rows are
    /// reported as mean ± std over them, and per seed in evaluation.json.
    #[arg(long, default_value_t = 3, value_parser = vislang::cli::range::at_least_one)]
    num_seeds: usize,
    /// pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth from
    /// github.com/mseitzer/pytorch-fid/releases, or a safetensors conversion of it): adds FID
    /// of the generated images and of the VQ-VAE's reconstructions against the real held-out
    /// images at the generator's resolution. Without it, FID is skipped.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Images sampled together, at least 1.
    #[arg(long, default_value_t = 64, value_parser = vislang::cli::range::at_least_one)]
    batch_size: usize,
    /// Where the synthetic dataset and image cache are.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Where evaluation.json (the rates) is written.
    #[arg(long, default_value = "runs/evaluate-dalle")]
    out: PathBuf,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

/// The largest share of `[UNK]` tokens the reranker may read in the held-out captions.
const MAX_RANKER_UNKNOWN: f64 = 0.05;

struct Task {
    args: Args,
    sampling: SamplingConfig,
}

impl BackendTask for Task {
    type Output = Result<(), DalleError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        let config: TrainDalleConfig =
            read_artifact_json(&args.dalle.join("config.json"), "train-dalle", "--dalle")?;
        if config.data.coco_root.is_some() {
            return Err(DalleError::Config(
                "this check needs the synthetic set, whose captions name objects by known words; for MSCOCO, score the PNGs that `generate` writes against your held-out images with `fid`".into(),
            ));
        }
        let trained =
            TrainedDalle::<B::InnerBackend>::load(&args.dalle, args.vqvae.as_deref(), &device)?;
        let judge = Judge::<B::InnerBackend>::load_judge(&args.judge, &device)?;
        let inception = match &args.inception {
            Some(path) => Some(
                InceptionNetwork::<B::InnerBackend>::load(path, &device)
                    .map_err(|e| DalleError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let ranker = match &args.rerank_with {
            Some(dir) => Some(Judge::<B::InnerBackend>::load_ranker(dir, &device)?),
            None => None,
        };
        let paths = RunPaths {
            out_dir: args.dalle.clone(),
            data_dir: args.data_dir.clone(),
            cache_dir: args.data_dir.join("cache"),
        };
        let data = prepare_dalle_data(&config.data, config.model.text_len, &paths)?;
        if let Some(ranker) = &ranker {
            let captions = data.val.examples.iter().map(|e| e.raw_captions[0].as_str());
            let rate = ranker.unknown_token_rate(captions)?;
            if rate > MAX_RANKER_UNKNOWN {
                return Err(DalleError::Config(format!(
                    "--rerank-with {}: its vocabulary reads {:.0}% of the held-out captions' tokens as [UNK], so it cannot rank by caption; rerank with a joint classifier trained on captions in the same language (`classify {}`)",
                    ranker.dir.display(),
                    100.0 * rate,
                    config.data.captions.options()
                )));
            }
        }
        let root = dataset_root(None, &config.data.synthetic, &args.data_dir)?;
        let val = CocoDataset::load(&root, CocoSplit::Val2014, BadEntryPolicy::Fail)?;
        let (cache, _) = ImageCache::open_or_build(
            &val,
            judge.image_size,
            &paths.cache_dir,
            BadEntryPolicy::Fail,
            true,
        )?;
        let per_seed = (0..args.num_seeds as u64)
            .map(|k| {
                let sampling = SamplingConfig {
                    seed: self.sampling.seed.wrapping_add(k),
                    ..self.sampling.clone()
                };
                evaluate_generation(
                    &trained,
                    &judge,
                    &data.val,
                    &val.categories,
                    &cache,
                    args.num_captions,
                    &sampling,
                    ranker.as_ref().map(|r| (r, args.candidates)),
                    inception.as_ref(),
                    args.batch_size,
                    &device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let evaluation = GenerationOverSeeds::of(per_seed);
        println!(
            "{} held-out captions naming {} objects, one image each; judged by the image-only classifier {}; generated rows: mean ± std over sampling seeds {:?}",
            evaluation.reference.captions, evaluation.reference.named_objects, evaluation.reference.judge, evaluation.seeds
        );
        println!("| images | named objects found | unnamed objects per image |\n|---|---|---|");
        let row = |name: &str, score: &ImageSetScore| {
            println!(
                "| {name} | {:.3} | {:.2} |",
                score.named_found, score.unnamed_per_image
            )
        };
        let spread_row = |name: &str, spread: &ScoreSpread| {
            let (found, unnamed) = (spread.named_found, spread.unnamed_per_image);
            println!(
                "| {name} | {:.3} ± {:.3} | {:.2} ± {:.2} |",
                found.mean, found.std, unnamed.mean, unnamed.std
            )
        };
        row("real (ceiling)", &evaluation.reference.real);
        row(
            &format!("real, at the generator's {} px", trained.config.image_size),
            &evaluation.reference.real_at_tokenizer_resolution,
        );
        row(
            "VQ-VAE reconstructions",
            &evaluation.reference.vqvae_reconstruction,
        );
        spread_row("generated", &evaluation.generated);
        if let Some(spread) = &evaluation.generated_reranked {
            spread_row(
                &format!(
                    "generated, best of {} by the joint classifier",
                    evaluation.candidates
                ),
                spread,
            );
        }
        let quality = evaluation.reference.vqvae_reconstruction_quality;
        println!(
            "VQ-VAE reconstructions against the real images at {} px: SSIM {}, PSNR {:.2} dB",
            trained.config.image_size,
            quality
                .ssim
                .map_or("n/a (images under 11 px)".into(), |v| format!("{v:.4}")),
            quality.psnr_db
        );
        match (&evaluation.generated_fid, &evaluation.reference.vqvae_reconstruction_fid) {
            (Some(generated), Some(reconstruction)) => {
                println!(
                    "FID against the real images at {} px: generated {:.2} ± {:.2} (over seeds), VQ-VAE reconstructions {:.2}",
                    trained.config.image_size, generated.mean, generated.std, reconstruction.fid
                );
                for line in reconstruction.protocol.lines() {
                    println!("  {line}");
                }
            }
            _ => println!("FID: skipped (no --inception FILE; it takes pytorch-fid's pt_inception-2015-12-05 weights)"),
        }
        write_atomic(
            &args.out.join("evaluation.json"),
            &serde_json::to_vec_pretty(&evaluation).expect("evaluation serialises"),
        )?;
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.num_captions == 0 || args.candidates == 0 || args.batch_size == 0 || args.num_seeds == 0
    {
        eprintln!(
            "error: --num-captions, --candidates, --num-seeds and --batch-size must be at least 1"
        );
        return ExitCode::FAILURE;
    }
    let sampling = or_exit(args.sampling.config());
    let device = args.device;
    exit_status(run_on(device, Task { args, sampling }))
}
