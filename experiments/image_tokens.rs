//! Encodes a dataset split into image tokens with a trained VQ-VAE, or decodes token files back
//! into images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vislang::backend::{run_on, BackendTask, DeviceSpec};
use vislang::cli::exit_status;
use vislang::data::{CocoSplit, ImageTokens, TokenExpectation};
use vislang::inference::read_artifact_json;
use vislang::io::image_grid::{write_image_grid, write_png, GridRow};
use vislang::nn::AutodiffBackend;
use vislang::train::vqvae::{
    decode_tokens, encode_split, prepare_vqvae_data, token_file_path, TrainVqVaeConfig,
    TrainedVqVae, VqVaeError,
};
use vislang::train::RunPaths;

/// Image-token files: every image of a split as a grid of VQ-VAE codes, stored with its image
/// id (safetensors: `codes` u16 [n, h, w], `image_ids` i64 [n], and metadata naming the VQ-VAE
/// checkpoint, image size and source images).
///
/// `train-vqvae` already writes both splits' token files; `encode` re-encodes (for example
/// another dataset root), `decode` turns tokens back into PNGs. A token file made by another
/// VQ-VAE checkpoint or at another image size is refused with an error naming the field.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// The `train-vqvae` output directory (vqvae.safetensors, vqvae-config.json, config.json).
    #[arg(long, global = true, default_value = "runs/vqvae")]
    vqvae: PathBuf,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceSpec,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Split {
    Train2014,
    Val2014,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encodes one split of the dataset the VQ-VAE was trained on (or of --coco-root).
    Encode {
        #[arg(long, value_enum, default_value = "val2014")]
        split: Split,
        /// MSCOCO 2014 root to encode instead of the VQ-VAE's training data.
        #[arg(long)]
        coco_root: Option<PathBuf>,
        /// Where the synthetic dataset is generated.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Where preprocessed images are cached [default: <data-dir>/cache].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Token file to write [default: <vqvae>/tokens-<split>.safetensors].
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 128, value_parser = vislang::cli::range::at_least_one)]
        batch_size: usize,
    },
    /// Decodes images of a token file into PNGs (<image id>.png) and a grid.png.
    Decode {
        /// The token file.
        tokens: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "runs/decoded")]
        out: PathBuf,
        /// Decode only the first N images.
        #[arg(long, default_value_t = 64, value_parser = vislang::cli::range::at_least_one)]
        limit: usize,
    },
}

struct Task {
    args: Args,
}

impl BackendTask for Task {
    type Output = Result<(), VqVaeError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let vqvae = TrainedVqVae::<B::InnerBackend>::load(&args.vqvae, &device)?;
        match args.command {
            Command::Encode {
                split,
                coco_root,
                data_dir,
                cache_dir,
                out,
                batch_size,
            } => {
                let mut config: TrainVqVaeConfig =
                    read_artifact_json(&args.vqvae.join("config.json"), "train-vqvae", "--vqvae")?;
                if coco_root.is_some() {
                    config.data.coco_root = coco_root;
                    config.data.max_train_images = None;
                    config.data.max_eval_images = None;
                }
                let paths = RunPaths {
                    cache_dir: cache_dir.unwrap_or_else(|| data_dir.join("cache")),
                    data_dir,
                    out_dir: args.vqvae.clone(),
                };
                let data = prepare_vqvae_data(&config.data, &paths, true)?;
                let (split, name) = match split {
                    Split::Train2014 => (&data.train, CocoSplit::Train2014),
                    Split::Val2014 => (&data.val, CocoSplit::Val2014),
                };
                let started = std::time::Instant::now();
                let tokens =
                    encode_split(&vqvae.model, split, &vqvae.fingerprint, batch_size, &device);
                let seconds = started.elapsed().as_secs_f64();
                let out = out.unwrap_or_else(|| token_file_path(&args.vqvae, name));
                tokens.save(&out)?;
                println!(
                    "{} images as {}x{} tokens -> {} ({:.0} images/s)",
                    tokens.len(),
                    tokens.info.grid[0],
                    tokens.info.grid[1],
                    out.display(),
                    tokens.len() as f64 / seconds.max(1e-9)
                );
            }
            Command::Decode { tokens, out, limit } => {
                let tokens = ImageTokens::load_expecting(
                    &tokens,
                    &TokenExpectation {
                        vqvae_checkpoint: vqvae.fingerprint.clone(),
                        image_size: vqvae.config.image_size,
                        n_codes: vqvae.config.model.n_codes,
                    },
                )?;
                let indices: Vec<usize> = (0..tokens.len().min(limit)).collect();
                let size = tokens.info.image_size;
                let mut images = Vec::with_capacity(indices.len());
                for chunk in indices.chunks(64) {
                    images.extend(decode_tokens(&vqvae.model, &tokens, chunk, &device));
                }
                for (&i, pixels) in indices.iter().zip(&images) {
                    let path = out.join(format!("{}.png", tokens.image_ids[i]));
                    write_png(&path, pixels, size, 1)?;
                }
                let rows: Vec<GridRow> = indices
                    .chunks(8)
                    .zip(images.chunks(8))
                    .map(|(ids, row)| {
                        let ids: Vec<String> = ids
                            .iter()
                            .map(|&i| tokens.image_ids[i].to_string())
                            .collect();
                        GridRow::new(format!("image ids {}", ids.join(", ")), row.to_vec())
                    })
                    .collect();
                write_image_grid(
                    &out.join("grid.png"),
                    &rows,
                    size,
                    (128 / size).max(1) as u32,
                )?;
                println!("{} images -> {}", images.len(), out.display());
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let device = args.device;
    exit_status(run_on(device, Task { args }))
}
