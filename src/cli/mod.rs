//! Command-line pieces shared by the experiment binaries: where the data is, and how a run's
//! outcome becomes an exit status.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

mod lxmert;
pub use lxmert::{LayerCounts, LxmertArgs, ReleasedLxmert};

use crate::backend::{run_on_devices, BackendTask, DeviceList, DeviceSpec};
use crate::data::{CaptionLanguage, CaptionSource, SyntheticCocoConfig};
use crate::models::dalle::SamplingConfig;
use crate::nn::Precision;
use crate::train::engine::{Feed, RunOptions};
use crate::train::{Budget, RunPaths};

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
    #[arg(long, value_parser = crate::cli::range::at_least_one)]
    pub max_train_images: Option<usize>,
    /// Use only the first N held-out images (by id).
    #[arg(long, value_parser = crate::cli::range::at_least_one)]
    pub max_eval_images: Option<usize>,
    /// Skip and count bad entries (missing or corrupt images, unknown categories, empty
    /// captions) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Synthetic set: training images [default: 2000; 20000 in train-vqvae, and train-dalle
    /// takes its VQ-VAE's set].
    #[arg(long, value_parser = crate::cli::range::at_least_one)]
    pub synthetic_train: Option<usize>,
    /// Synthetic set: held-out images [default: 500].
    #[arg(long, value_parser = crate::cli::range::at_least_one)]
    pub synthetic_val: Option<usize>,
    /// Synthetic set: side of its JPEGs in pixels [default: 96]; 560 has COCO's pixel count
    /// (a typical COCO image is 640 x 480). Models read them at their own --image-size.
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=4096))]
    pub synthetic_image_size: Option<u32>,
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

    /// Makes `--coco-root` absolute: saved configs must name the same data from any working
    /// directory.
    pub fn absolutize(&mut self) {
        self.coco_root = self.coco_root.take().map(absolute);
    }

    /// Applies `--synthetic-train`, `--synthetic-val` and `--synthetic-image-size`.
    pub fn apply_to(&self, synthetic: &mut SyntheticCocoConfig) {
        synthetic.n_train = self.synthetic_train.unwrap_or(synthetic.n_train);
        synthetic.n_val = self.synthetic_val.unwrap_or(synthetic.n_val);
        synthetic.image_size = self.synthetic_image_size.unwrap_or(synthetic.image_size);
    }
}

/// Where the captions come from, for the binaries that read them (classify, pretrain-lxmert,
/// train-dalle; evaluate-dalle and generate use their run's).
#[derive(clap::Args, Debug, Clone)]
pub struct CaptionArgs {
    /// The language of the synthetic set's captions (the same images and objects, the captions
    /// written in that language). With --coco-root, a label for --captions-train/-val.
    #[arg(long, value_enum, default_value_t = CaptionLanguage::English)]
    pub caption_language: CaptionLanguage,
    /// A captions file in COCO's caption schema (a translated `captions_train2014.json`, say)
    /// to read instead of the training split's own; it gets the same checks.
    #[arg(long, value_parser = existing_file)]
    pub captions_train: Option<PathBuf>,
    /// As --captions-train, for the held-out split (`captions_val2014.json`).
    #[arg(long, value_parser = existing_file)]
    pub captions_val: Option<PathBuf>,
}

impl CaptionArgs {
    /// The caption source these options name (paths absolute), checked against the dataset.
    pub fn source(&self, coco_root: Option<&std::path::Path>) -> Result<CaptionSource, String> {
        let mut source = CaptionSource {
            language: self.caption_language,
            train_file: self.captions_train.clone(),
            val_file: self.captions_val.clone(),
        };
        source.absolutize();
        source.check(coco_root)?;
        Ok(source)
    }
}

/// A path that names an existing file, checked while parsing.
fn existing_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(format!("{value} is not a file")),
        Err(e) => Err(format!("cannot read {value}: {e}")),
    }
}

/// `path` relative to the working directory made absolute (without resolving links), so a
/// config that records it still names the same file when read from elsewhere.
pub fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// The value of a command-line check, or the process ends with its message (exit status 1):
/// for checks that run before any work starts.
pub fn or_exit<T>(checked: Result<T, String>) -> T {
    checked.unwrap_or_else(|message| {
        eprintln!("error: {message}");
        std::process::exit(1)
    })
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

/// Runs `task` with one replica on each of `devices`, prints `summary` of its result, and
/// gives the process's exit status (see [`exit_status`]).
pub fn run_and_report<T, R, E>(devices: &[DeviceSpec], task: T, summary: impl FnOnce(R)) -> ExitCode
where
    T: BackendTask<Output = Result<R, E>>,
    E: Display,
{
    exit_status(run_on_devices(devices, task).map(|run| run.map(summary)))
}

/// `--device`, or `--devices` for data parallel training.
#[derive(clap::Args, Debug, Clone)]
pub struct DevicesArgs {
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Data parallel: one replica per device, each taking a shard of every batch, gradients
    /// summed by Burn's collective engine (e.g. cuda:0,cuda:1; cpu,cpu runs replicas on
    /// threads). Replaces --device.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<DeviceList>,
}

impl DevicesArgs {
    /// The devices to train on: `--devices`, else `--device` alone.
    pub fn list(&self) -> Vec<DeviceSpec> {
        self.devices
            .as_ref()
            .map_or_else(|| vec![self.device], |list| list.0.clone())
    }
}

/// The training budget's options, the same in every training binary. Unset options keep the
/// preset's value; [`parse_with_presets`] writes each binary's preset values into `--help`.
#[derive(clap::Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Training epochs.
    #[arg(long, value_parser = crate::cli::range::at_least_one)]
    pub epochs: Option<usize>,
    /// Examples per optimisation step.
    #[arg(long, value_parser = crate::cli::range::at_least_one)]
    pub batch_size: Option<usize>,
    /// Peak learning rate of AdamW, reached after the warm-up.
    #[arg(long, value_parser = crate::cli::range::positive)]
    pub lr: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[arg(long, value_parser = crate::cli::range::non_negative)]
    pub weight_decay: Option<f64>,
    /// Fraction of all steps spent warming the learning rate up, in [0, 1).
    #[arg(long, value_parser = crate::cli::range::fraction_below_one)]
    pub warmup: Option<f64>,
    /// Clip gradients to this global L2 norm (0 turns clipping off).
    #[arg(long, value_parser = crate::cli::range::non_negative)]
    pub grad_clip: Option<f64>,
    /// Precision of the matrix products: f32, or mixed precision with bf16 (cpu, cuda) or f16
    /// (cpu, cuda, wgpu; with loss scaling) products and f32 weights and optimizer state.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Steps between reads of the training loss from the device into metrics.jsonl (each
    /// read is one device synchronisation).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_every: u64,
    /// Threads making batches ahead of each step (pixels from the image cache, caption
    /// choice, masking) into a bounded queue; each epoch logs how long training waited for
    /// them. One keeps a CPU run fed (the step itself needs the cores); a GPU consuming
    /// thousands of images/s wants more (see docs/data.md, "At COCO's size"); 0 makes each
    /// batch inside the training loop.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub loader_threads: u64,
    /// Threads each training run's tensor ops run on, in a pool of the run's own (0: one per
    /// core; in `classify`, the cores shared out between the runs trained at once). Does not
    /// change results.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub threads: u64,
}

impl BudgetArgs {
    /// Overrides the preset's fields with the options given.
    pub fn apply_to(&self, budget: &mut Budget) {
        budget.epochs = self.epochs.unwrap_or(budget.epochs);
        budget.batch_size = self.batch_size.unwrap_or(budget.batch_size);
        budget.learning_rate = self.lr.unwrap_or(budget.learning_rate);
        budget.weight_decay = self.weight_decay.unwrap_or(budget.weight_decay);
        budget.warmup_fraction = self.warmup.unwrap_or(budget.warmup_fraction);
        if let Some(clip) = self.grad_clip {
            budget.grad_clip = (clip != 0.0).then_some(clip);
        }
        budget.precision = self.precision;
    }

    /// How the engine reads losses and gets batches.
    pub fn feed(&self) -> Feed {
        Feed {
            log_every: self.log_every as usize,
            loader_threads: self.loader_threads as usize,
            compute_threads: self.threads as usize,
        }
    }

    /// How a run is fed, and shown unless `quiet`.
    pub fn run_options(&self, quiet: bool) -> RunOptions {
        RunOptions {
            show_progress: !quiet,
            feed: self.feed(),
        }
    }
}

/// Parses `A`, with the `--help` of each budget option showing the values of the synthetic
/// and the COCO preset.
pub fn parse_with_presets<A: clap::Parser>(synthetic: &Budget, coco: &Budget) -> A {
    let presets =
        |f: fn(&Budget) -> String| format!("{} synthetic, {} COCO", f(synthetic), f(coco));
    let clip = |b: &Budget| b.grad_clip.map_or("0 (off)".into(), |c| c.to_string());
    let defaults = [
        ("epochs", presets(|b| b.epochs.to_string())),
        ("batch_size", presets(|b| b.batch_size.to_string())),
        ("lr", presets(|b| b.learning_rate.to_string())),
        ("weight_decay", presets(|b| b.weight_decay.to_string())),
        ("warmup", presets(|b| b.warmup_fraction.to_string())),
        (
            "grad_clip",
            format!("{} synthetic, {} COCO", clip(synthetic), clip(coco)),
        ),
    ];
    let mut command = A::command();
    for (id, values) in defaults {
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {values}]"))
        });
    }
    let matches = command.get_matches();
    A::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// How image tokens are sampled, the same options and defaults in `generate` and
/// `evaluate-dalle` (and in the sample grids of `train-dalle`): see
/// [`SamplingConfig::recommended`].
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sample only from the k most likely image tokens (0 turns the filter off).
    #[arg(long, default_value_t = SamplingConfig::recommended().top_k.unwrap_or(0))]
    pub top_k: usize,
    /// Sample only from the most likely tokens whose probability adds up to p, in (0, 1]
    /// [default: off].
    #[arg(long, value_parser = crate::cli::range::nucleus)]
    pub top_p: Option<f64>,
    /// Softmax temperature, positive (lower: more conservative).
    #[arg(long, default_value_t = SamplingConfig::recommended().temperature, value_parser = crate::cli::range::positive)]
    pub temperature: f64,
    /// Classifier-free guidance scale, at least 0: 1 is off; higher follows the caption more
    /// closely (on the synthetic set 10 did best of 1-20 with few extra objects; above it
    /// named objects repeat).
    #[arg(long, default_value_t = SamplingConfig::recommended().guidance, value_parser = crate::cli::range::non_negative)]
    pub guidance: f64,
    /// Always take the most likely token (deterministic; ignores the options above).
    #[arg(long)]
    pub greedy: bool,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampling config, or an error naming the option out of range.
    pub fn config(&self) -> Result<SamplingConfig, String> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "--temperature must be a positive number, not {}",
                self.temperature
            ));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return Err(format!(
                "--guidance must be a number of at least 0, not {}",
                self.guidance
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("--top-p must be in (0, 1], not {p}"));
            }
        }
        Ok(SamplingConfig {
            temperature: self.temperature,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: self.top_p,
            guidance: self.guidance,
            seed: self.seed,
            greedy: self.greedy,
            use_cache: true,
        })
    }
}

/// Option-value parsers: out-of-range values are refused while parsing, before anything runs or
/// is written, with clap's message naming the option (`invalid value '0' for '--epochs'`).
pub mod range {
    fn number<T: std::str::FromStr>(text: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        text.parse::<T>().map_err(|e| e.to_string())
    }

    /// A count of at least 1.
    pub fn at_least_one(text: &str) -> Result<usize, String> {
        match number::<usize>(text)? {
            0 => Err("must be at least 1".into()),
            n => Ok(n),
        }
    }

    /// A finite number above 0.
    pub fn positive(text: &str) -> Result<f64, String> {
        let x = number::<f64>(text)?;
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err("must be a finite number above 0".into())
        }
    }

    /// A finite number of at least 0.
    pub fn non_negative(text: &str) -> Result<f64, String> {
        let x = number::<f64>(text)?;
        if x.is_finite() && x >= 0.0 {
            Ok(x)
        } else {
            Err("must be a finite number of at least 0".into())
        }
    }

    /// A probability, in [0, 1].
    pub fn probability(text: &str) -> Result<f64, String> {
        let x = number::<f64>(text)?;
        if (0.0..=1.0).contains(&x) {
            Ok(x)
        } else {
            Err("must be in [0, 1]".into())
        }
    }

    /// A fraction below 1, in [0, 1).
    pub fn fraction_below_one(text: &str) -> Result<f64, String> {
        let x = number::<f64>(text)?;
        if (0.0..1.0).contains(&x) {
            Ok(x)
        } else {
            Err("must be in [0, 1)".into())
        }
    }

    /// A nucleus mass, in (0, 1].
    pub fn nucleus(text: &str) -> Result<f64, String> {
        let x = number::<f64>(text)?;
        if x > 0.0 && x <= 1.0 {
            Ok(x)
        } else {
            Err("must be in (0, 1]".into())
        }
    }
}
