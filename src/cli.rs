//! Command-line pieces shared by the experiment binaries: where the data is, and how a run's
//! outcome becomes an exit status.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::data::SyntheticCocoConfig;
use crate::train::RunPaths;

/// The dataset options every experiment takes.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// MSCOCO 2014 root (annotations/, train2014/, val2014/). Without it: the synthetic set.
    #[arg(long)]
    pub coco_root: Option<PathBuf>,
    /// Where the synthetic dataset is generated.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Where preprocessed images are cached [default: <data-dir>/cache].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Use only the first N training images (by id).
    #[arg(long)]
    pub max_train_images: Option<usize>,
    /// Use only the first N held-out images (by id).
    #[arg(long)]
    pub max_eval_images: Option<usize>,
    /// Skip and count bad entries (missing or corrupt images, unknown categories, empty
    /// captions) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Synthetic set: training images [default: 2000].
    #[arg(long)]
    pub synthetic_train: Option<usize>,
    /// Synthetic set: held-out images [default: 500].
    #[arg(long)]
    pub synthetic_val: Option<usize>,
}

impl DataArgs {
    /// The run's paths, writing to `out_dir`.
    pub fn paths(&self, out_dir: PathBuf) -> RunPaths {
        RunPaths {
            out_dir,
            data_dir: self.data_dir.clone(),
            cache_dir: self
                .cache_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("cache")),
        }
    }

    /// Applies `--synthetic-train` and `--synthetic-val`.
    pub fn apply_to(&self, synthetic: &mut SyntheticCocoConfig) {
        synthetic.n_train = self.synthetic_train.unwrap_or(synthetic.n_train);
        synthetic.n_val = self.synthetic_val.unwrap_or(synthetic.n_val);
    }
}

/// Prints a failed run's error (no backtrace: every error names its file, field or tensor)
/// and turns the outcome into the process exit status. `outer` is the device selection,
/// `inner` the run itself.
pub fn exit_status<E: Display, F: Display>(outcome: Result<Result<(), E>, F>) -> ExitCode {
    let error = match outcome {
        Ok(Ok(())) => return ExitCode::SUCCESS,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
