//! Question answering about images: the single-stream model on the question alone, the image
//! alone and both, and LXMERT with its answer head from scratch and after pretraining.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::tasks::FinetuneVqa;
use vislang::backend::DeviceSpec;
use vislang::cli::{
    absolute, or_exit, parse_with_presets, run_and_report, BudgetArgs, CaptionArgs, DataArgs,
    LxmertArgs,
};
use vislang::data::vqa::QaTask;
use vislang::train::classify::{ClassifierKind, Schedule};
use vislang::train::vqa::{comparisons, results_table, FinetuneVqaConfig, FinetuneVqaReport};
use vislang::train::RunPaths;

/// Fine-tunes question-answering models on VQA v2's, GQA's or NLVR2's files (--task), or
/// with no arguments on the built-in question set (counting, colour, shape, presence and
/// position questions about the synthetic scenes, written into --data-dir on first use in the
/// task's layout), and prints the task's accuracy (VQA accuracy for VQA v2) overall and per
/// question type as mean ± std over seeds, next to the answer prior. Every run writes its
/// checkpoints, metrics.jsonl, report.html and its predictions in the official submission
/// format under --out; the same command again resumes an interrupted experiment.
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
    /// The task: VQA v2 (ten human answers, VQA accuracy), GQA's balanced questions (one
    /// answer, exact-match accuracy) or NLVR2 (a statement about two images, true or false).
    #[arg(long, value_enum, default_value = "vqa")]
    task: QaTask,
    /// The folder of the task's official files: for vqa (with --coco-root)
    /// v2_OpenEnded_mscoco_{train,val}2014_questions.json and
    /// v2_mscoco_{train,val}2014_annotations.json; for gqa {train,val}_balanced_questions.json;
    /// for nlvr2 train.json and dev.json. Without it the built-in question set is written into
    /// --data-dir in the task's layout.
    #[arg(long, value_name = "DIR")]
    questions: Option<PathBuf>,
    /// With --task gqa or nlvr2 and --questions: the folder of the task's images (GQA's
    /// images/, NLVR2's images/ with train/ and dev/), each found by its name anywhere below.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Fine-tune the lxmert-pretrained row from this finished `pretrain-lxmert --out`
    /// directory instead of pretraining here. Its model size, image size and caption length
    /// must be this experiment's; its tokenizer.json becomes the experiment's tokenizer.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["pretraining_epochs", "lxmert_weights"])]
    lxmert_encoder: Option<PathBuf>,
    /// Answers that are the most common answer of fewer training questions are left out of
    /// the vocabulary [default: 1 synthetic, 9 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    min_answer_count: Option<usize>,
    /// Where results, charts and checkpoints are written.
    #[arg(long, default_value = "runs/finetune-vqa")]
    out: PathBuf,
    /// cpu, cuda[:N] or wgpu[:N|:cpu] (cuda and wgpu need a build with --features cuda or wgpu).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Which models: the single-stream model on the question only (text-only), the image only
    /// or both, and LXMERT from scratch and after pretraining on the training split's captions.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ClassifierKind::ALL.to_vec())]
    models: Vec<ClassifierKind>,
    /// Seeds; every model is trained once per seed [default: 0,1,2].
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Epochs of every stage of LXMERT's pretraining.
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    pretraining_epochs: Option<usize>,
    /// Model input size in pixels [default: 48 synthetic, 224 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    image_size: Option<usize>,
    /// Runs trained at once, each on its own thread [default: CPU cores on cpu, 1 on cuda].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    jobs: Option<usize>,
    /// Hide progress bars (epoch summaries are still printed).
    #[arg(long)]
    quiet: bool,
}

fn print_summary(report: &FinetuneVqaReport, paths: &RunPaths) {
    println!("\n{}", results_table(report));
    for comparison in comparisons(report) {
        println!("{comparison}");
    }
    println!(
        "results, charts and checkpoints: {}",
        paths.out_dir.display()
    );
}

fn main() -> ExitCode {
    let mut args: Args = parse_with_presets(
        &FinetuneVqaConfig::synthetic().experiment.training,
        &FinetuneVqaConfig::coco(PathBuf::new(), None)
            .experiment
            .training,
    );
    args.data.absolutize();
    args.questions = args.questions.map(absolute);
    args.images = args.images.map(absolute);
    args.lxmert_encoder = args.lxmert_encoder.map(absolute);
    let released = or_exit(args.lxmert.released());
    let mut config = match &args.data.coco_root {
        Some(root) => FinetuneVqaConfig::coco(root.clone(), args.questions.clone()),
        None => FinetuneVqaConfig::synthetic(),
    };
    if args.task == QaTask::Vqa && args.questions.is_some() && args.data.coco_root.is_none() {
        eprintln!("error: --questions with --task vqa is for VQA v2 on MSCOCO (--coco-root); the built-in set writes its own");
        return ExitCode::from(2);
    }
    if args.images.is_some() && (args.task == QaTask::Vqa || args.questions.is_none()) {
        eprintln!("error: --images is for --task gqa or nlvr2 with --questions (VQA v2 reads --coco-root's images, the built-in set its own)");
        return ExitCode::from(2);
    }
    if args.lxmert_encoder.is_some() && !args.models.contains(&ClassifierKind::LxmertPretrained) {
        eprintln!(
            "error: --lxmert-encoder is for the lxmert-pretrained row, which --models leaves out"
        );
        return ExitCode::from(2);
    }
    config.task = args.task;
    config.questions = args.questions.clone();
    config.images = args.images.clone();
    if let Some(count) = args.min_answer_count {
        config.min_answer_count = count;
    }
    let experiment = &mut config.experiment;
    experiment.models = args.models.clone();
    if let Some(epochs) = args.pretraining_epochs {
        experiment
            .lxmert
            .stages
            .iter_mut()
            .for_each(|s| s.epochs = epochs);
    }
    experiment.lxmert.pretraining.precision = args.budget.precision;
    if let Some(seeds) = args.seeds {
        experiment.seeds = seeds;
    }
    args.budget.apply_to(&mut experiment.training);
    or_exit(args.lxmert.apply_sizes(&mut experiment.lxmert.model));
    experiment.lxmert.encoder = args.lxmert_encoder.clone();
    let d = &mut experiment.data;
    d.image_size = args.image_size.unwrap_or(d.image_size);
    // The pretrained encoder's embeddings index its own vocabulary.
    d.tokenizer = args
        .lxmert_encoder
        .as_ref()
        .map(|dir| dir.join("tokenizer.json"));
    if let Some(released) = released {
        if !experiment
            .models
            .contains(&ClassifierKind::LxmertPretrained)
        {
            eprintln!("error: --lxmert-weights is for the lxmert-pretrained row, which --models leaves out");
            return ExitCode::from(2);
        }
        experiment.lxmert.weights = Some(or_exit(released.apply(&mut experiment.lxmert.model, d)));
    }
    d.max_train_images = args.data.max_train_images;
    d.max_eval_images = args.data.max_eval_images;
    d.skip_bad = args.data.skip_bad;
    d.captions = or_exit(args.captions.source(args.data.coco_root.as_deref()));
    args.data.apply_to(&mut d.synthetic);

    let paths = args.data.paths(args.out);
    let cores = vislang::train::engine::compute_threads::cores();
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
    let task = FinetuneVqa {
        config: &config,
        paths: &paths,
        schedule,
    };
    run_and_report(&[args.device], task, |report| {
        print_summary(&report, &paths)
    })
}
