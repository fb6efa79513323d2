//! Writes LXMERT in Hugging Face's layout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::CpuBackend;
use vislang::inference::lxmert_export::{export_checkpoint, export_run};

/// Writes a pretrained LXMERT as a Hugging Face model folder (config.json, model.safetensors,
/// tokenizer.json, vocab.txt) that `LxmertForPreTraining.from_pretrained(FOLDER)` loads.
///
/// --run takes a finished `pretrain-lxmert --out` folder. --from takes any Hugging Face LXMERT
/// checkpoint (a folder, or pytorch_model.bin with config.json beside it) and rewrites it as
/// safetensors: a PyTorch file read once, mapped thereafter.
///
/// A model that reads pixels keeps its patch encoder in vislang-patch-encoder.safetensors;
/// its masked-object head (patch colours, not features) has no place in Hugging Face's
/// model and is left out.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// A finished `pretrain-lxmert --out` folder.
    #[arg(long, required_unless_present = "from", conflicts_with = "from")]
    run: Option<PathBuf>,
    /// A Hugging Face LXMERT model folder or weights file.
    #[arg(long)]
    from: Option<PathBuf>,
    /// The folder to write; it must not exist or be empty (nothing is overwritten).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let device = Default::default();
    let exported = match (&args.run, &args.from) {
        (Some(run), _) => export_run::<CpuBackend>(run, &args.out, &device),
        (None, Some(from)) => export_checkpoint::<CpuBackend>(from, &args.out, &device),
        (None, None) => unreachable!("clap requires --run or --from"),
    };
    match exported {
        Ok(summary) => {
            println!(
                "{} tensors under Hugging Face names -> {}",
                summary.tensors,
                args.out.display()
            );
            for file in &summary.files {
                println!("  {}", file.display());
            }
            for part in &summary.left_out {
                println!("left out: {part}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
