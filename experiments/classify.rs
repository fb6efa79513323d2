//! Image-only vs text-only vs joint multi-label classification on COCO-format data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::tasks::Classify;
use vislang::backend::DeviceSpec;
use vislang::cli::{
    absolute, or_exit, parse_with_presets, run_and_report, BudgetArgs, CaptionArgs, DataArgs,
    LxmertArgs,
};
use vislang::train::classify::{
    joint_margin, pretraining_gain, results_table, ClassifierKind, ClassifyConfig, ClassifyReport,
    Schedule,
};
use vislang::train::lxmert_pretrain::PretrainStage;
use vislang::train::RunPaths;

/// Trains image-only, text-only and joint single-stream classifiers ([CLS] img [SEP] text [SEP])
/// and the two-stream LXMERT, from scratch and after pretraining, with the same budget and
/// seeds; evaluates them on the held-out split, and prints mAP and micro-F1 as mean ± std over
/// seeds.
///
/// With no arguments it runs on the built-in synthetic COCO-format dataset (generated into
/// --data-dir on first use) and finishes in a few minutes on a 2-core CPU. Results, charts,
/// the tokenizer and per-run checkpoints go to --out; running the same command again resumes
/// an interrupted experiment.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    captions: CaptionArgs,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    lxmert: LxmertArgs,
    /// Where results, charts and checkpoints are written.
    #[arg(long, default_value = "runs/classify")]
    out: PathBuf,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Which models to train: the single-stream classifier on image-only, text-only or joint
    /// input, and LXMERT from scratch and fine-tuned after pretraining (--pretraining-stages)
    /// on the training split.
    #[arg(long, alias = "modalities", value_enum, value_delimiter = ',', default_values_t = ClassifierKind::ALL.to_vec())]
    models: Vec<ClassifierKind>,
    /// The pretraining before the lxmert-pretrained row, stage after stage, each
    /// OBJECTIVES:EPOCHS with objectives from masked-lm, masked-objects, matching,
    /// contrastive joined by + (lxmert: the first three) [default:
    /// contrastive:10,matching+contrastive:20 synthetic, lxmert:20 COCO].
    #[arg(long, value_delimiter = ',', value_name = "STAGES")]
    pretraining_stages: Option<Vec<PretrainStage>>,
    /// Epochs of every pretraining stage (a shorter or longer run of the same stages).
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    pretraining_epochs: Option<usize>,
    /// Fine-tune the lxmert-pretrained row from this finished `pretrain-lxmert --out`
    /// directory instead of pretraining here. Its model size, image size and caption length
    /// must be this experiment's; its tokenizer.json becomes the experiment's tokenizer
    /// unless --tokenizer names one (which must then have the same vocabulary).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["pretraining_stages", "pretraining_epochs", "lxmert_weights"])]
    lxmert_encoder: Option<PathBuf>,
    /// Seeds; every model is trained once per seed [default: 0,1,2,3,4 synthetic, 0,1,2 COCO].
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Model input size in pixels [default: 48 synthetic, 224 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    image_size: Option<usize>,
    /// Use an existing tokenizer.json (e.g. bert-base-uncased's) instead of training WordPiece.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Runs trained at once, each on its own thread [default: CPU cores on cpu, 1 on cuda].
    /// The CPU backend keeps about one core busy for these small models, so parallel runs
    /// finish sooner.
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    jobs: Option<usize>,
    /// Hide progress bars (epoch summaries are still printed).
    #[arg(long)]
    quiet: bool,
}

/// The results table, the two headline differences, and where the files are.
fn print_summary(report: &ClassifyReport, paths: &RunPaths) {
    println!("\n{}", results_table(report));
    if let Some((margin, spread)) = joint_margin(report) {
        println!(
            "joint minus best unimodal mAP: {margin:+.4} (largest std across seeds: {spread:.4})"
        );
    }
    if let Some((gain, spread)) = pretraining_gain(report) {
        println!("LXMERT pretrained minus from scratch mAP: {gain:+.4} (larger std across seeds: {spread:.4})");
    }
    println!(
        "results, charts and checkpoints: {}",
        paths.out_dir.display()
    );
}

fn main() -> ExitCode {
    let mut args: Args = parse_with_presets(
        &ClassifyConfig::synthetic().training,
        &ClassifyConfig::coco(PathBuf::new()).training,
    );
    args.data.absolutize();
    args.tokenizer = args.tokenizer.map(absolute);
    args.lxmert_encoder = args.lxmert_encoder.map(absolute);
    let released = or_exit(args.lxmert.released());
    let mut config = match &args.data.coco_root {
        Some(root) => ClassifyConfig::coco(root.clone()),
        None => ClassifyConfig::synthetic(),
    };
    config.models = args.models.clone();
    let setup = &mut config.lxmert;
    if let Some(stages) = args.pretraining_stages {
        setup.stages = stages;
    }
    if let Some(epochs) = args.pretraining_epochs {
        setup
            .stages
            .iter_mut()
            .for_each(|stage| stage.epochs = epochs);
    }
    // The lxmert-pretrained row's pretraining runs in the same precision as every row.
    setup.pretraining.precision = args.budget.precision;
    if let Some(seeds) = args.seeds {
        config.seeds = seeds;
    }
    args.budget.apply_to(&mut config.training);
    let d = &mut config.data;
    d.image_size = args.image_size.unwrap_or(d.image_size);
    d.tokenizer = args.tokenizer.or_else(|| {
        // The pretrained encoder's embeddings index its own vocabulary.
        args.lxmert_encoder
            .as_ref()
            .map(|dir| dir.join("tokenizer.json"))
    });
    if args.lxmert_encoder.is_some() && !config.models.contains(&ClassifierKind::LxmertPretrained) {
        eprintln!(
            "error: --lxmert-encoder is for the lxmert-pretrained row, which --models leaves out"
        );
        return ExitCode::from(2);
    }
    config.lxmert.encoder = args.lxmert_encoder;
    or_exit(args.lxmert.apply_sizes(&mut config.lxmert.model));
    if let Some(released) = released {
        if !config.models.contains(&ClassifierKind::LxmertPretrained) {
            eprintln!(
                "error: --lxmert-weights is for the lxmert-pretrained row, which --models leaves out"
            );
            return ExitCode::from(2);
        }
        // Both LXMERT rows get the checkpoint's size; the pretrained one its weights, and every
        // row its vocabulary (unless --tokenizer is given).
        config.lxmert.weights = Some(or_exit(released.apply(&mut config.lxmert.model, d)));
    }
    d.max_train_images = args.data.max_train_images;
    d.max_eval_images = args.data.max_eval_images;
    d.skip_bad = args.data.skip_bad;
    d.captions = or_exit(args.captions.source(args.data.coco_root.as_deref()));
    args.data.apply_to(&mut d.synthetic);

    let paths = args.data.paths(args.out);
    let cores = vislang::train::engine::compute_threads::cores();
    // One run at a time on a GPU-style device: its queue is already the parallelism.
    let jobs = args.jobs.unwrap_or(if args.device.is_accelerator() {
        1
    } else {
        cores
    });
    let schedule = Schedule {
        jobs,
        show_progress: !args.quiet,
        feed: args.budget.feed(),
    };
    let task = Classify {
        config: &config,
        paths: &paths,
        schedule,
    };
    run_and_report(&[args.device], task, |report| {
        print_summary(&report, &paths)
    })
}
