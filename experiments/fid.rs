//! FID between two folders of images, as pytorch-fid computes it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::{run_on, BackendTask, DeviceSpec};
use vislang::cli::exit_status;
use vislang::inference::fid::{folder_fid, FidError, InceptionNetwork};
use vislang::io::checkpoint::write_atomic;
use vislang::nn::AutodiffBackend;

/// Prints the Fréchet Inception Distance between the PNG and JPEG images of two folders (e.g.
/// the real held-out images and the PNGs that `generate` writes), with the protocol that
/// makes it comparable: image counts, resize, and the Inception weights' checksum.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The first folder (e.g. real images).
    first: PathBuf,
    /// The second folder (e.g. generated images).
    second: PathBuf,
    /// pytorch-fid's Inception weights, pt_inception-2015-12-05-6726825d.pth (from
    /// github.com/mseitzer/pytorch-fid/releases), or a safetensors conversion of it.
    #[arg(long)]
    inception: PathBuf,
    /// Images through the network at once, at least 1.
    #[arg(long, default_value_t = 50, value_parser = vislang::cli::range::at_least_one)]
    batch_size: usize,
    /// Also write the score and its protocol to this JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

impl BackendTask for Args {
    type Output = Result<(), FidError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let network = InceptionNetwork::<B::InnerBackend>::load(&self.inception, &device)?;
        let score = folder_fid(
            &network,
            &self.first,
            &self.second,
            self.batch_size,
            &device,
        )?;
        println!(
            "FID {:.4} between {} and {}",
            score.fid,
            self.first.display(),
            self.second.display()
        );
        for line in score.protocol.lines() {
            println!("  {line}");
        }
        if let Some(out) = &self.out {
            let json = serde_json::to_vec_pretty(&score).expect("a score serialises");
            write_atomic(out, &json)?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let device = args.device;
    exit_status(run_on(device, args))
}
