//! Region feature files for LXMERT: convert the original release's TSVs into one memory-mapped
//! safetensors file, or write box features for the built-in synthetic set.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vislang::cli::DataArgs;
use vislang::data::region_features::write_box_feature_tsv;
use vislang::data::{
    convert_tsv, dataset_root, BadEntryPolicy, CocoDataset, CocoSplit, RegionFeatures,
    SyntheticCocoConfig,
};

/// Prepares detector region features for `pretrain-lxmert --features`.
///
/// `convert` reads LXMERT's base64 TSV files (fields img_id, img_h, img_w, objects_id,
/// objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features; e.g. train2014_obj36.tsv and
/// val2014_obj36.tsv) and writes one safetensors file that training memory-maps, so data
/// loaders share one copy through the page cache instead of each holding the features in RAM.
/// Boxes are divided by the image width and height.
///
/// `boxes` writes such a TSV for a COCO-format dataset from its annotated boxes (a stand-in for
/// a detector: 4x4 RGB box crops as features, categories as object labels), so the feature path
/// runs on the built-in synthetic set.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert TSV feature files into one safetensors feature file.
    Convert {
        /// TSV files to convert (repeat for several).
        #[arg(long, required = true)]
        tsv: Vec<PathBuf>,
        /// The safetensors file to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Write an LXMERT-format TSV from a dataset's annotated boxes (both splits).
    Boxes {
        #[command(flatten)]
        data: DataArgs,
        /// The TSV file to write.
        #[arg(long, default_value = "data/synthetic-boxes.tsv")]
        output: PathBuf,
    },
}

fn run(args: Args) -> Result<(), String> {
    match args.command {
        Command::Convert { tsv, output: out } => {
            let summary = convert_tsv(&tsv, &out).map_err(|e| e.to_string())?;
            let opened = RegionFeatures::open(&out).map_err(|e| e.to_string())?;
            println!(
                "wrote {}: {} images, up to {} boxes of {} features each ({} readable)",
                out.display(),
                summary.images,
                summary.max_boxes,
                summary.d_feature,
                opened.len()
            );
        }
        Command::Boxes { data, output: out } => {
            let mut synthetic = SyntheticCocoConfig::default();
            data.apply_to(&mut synthetic);
            let root = dataset_root(data.coco_root.as_deref(), &synthetic, &data.data_dir)
                .map_err(|e| e.to_string())?;
            let policy = BadEntryPolicy::skipping(data.skip_bad);
            let load = |split| CocoDataset::load(&root, split, policy).map_err(|e| e.to_string());
            let (train, val) = (load(CocoSplit::Train2014)?, load(CocoSplit::Val2014)?);
            let rows = write_box_feature_tsv(&[&train, &val], &out).map_err(|e| e.to_string())?;
            println!("wrote {} ({rows} images)", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
