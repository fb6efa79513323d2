//! Pretrains the LXMERT-style two-stream encoder.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::backend::tasks::TrainingRun;
use vislang::backend::Replicated;
use vislang::cli::{
    absolute, or_exit, parse_with_presets, run_and_report, BudgetArgs, CaptionArgs, DataArgs,
    DevicesArgs, LxmertArgs,
};
use vislang::train::engine::EpochEvaluation;
use vislang::train::lxmert_pretrain::{
    budgets, stages_text, PretrainLxmertConfig, PretrainResult, PretrainStage,
};
use vislang::train::RunPaths;

/// Pretrains LXMERT (language encoder, object-relationship encoder, cross-modality encoder
/// with one cross-attention used in both directions) in stages, each with its own objectives
/// and learning-rate schedule, each starting from the encoder of the one before: masked
/// language modelling (15% of tokens: 80% [MASK], 10% random, 10% kept), masked object
/// prediction (15% of regions), cross-modality matching (half the captions swapped for another
/// image's), and vislang's image-text contrastive alignment of the two unimodal encoders
/// (ALBEF's "align before fuse").
///
/// With no arguments it pretrains a small model (2/1/1 layers, 64 wide) on raw pixels of the
/// built-in synthetic COCO-format set in a few minutes on a CPU: contrastive alone for 10
/// epochs, then matching + contrastive for 10 (LXMERT's own three objectives leave matching at
/// chance there; see docs/lxmert.md). Masked patches regress their quadrant colours. --features
/// reads detector regions from a file made by `lxmert-features convert` (LXMERT's TSV
/// release) instead; masked regions then regress their features and classify their detector
/// object and attribute labels. --coco-root selects the base model (9/5/5 layers, 768 wide)
/// and LXMERT's own recipe (its three objectives, 20 epochs) for a GPU;
/// --lxmert-layers/-width/-heads/-ffn size it, and --lxmert-weights starts from released
/// weights (e.g. unc-nlp/lxmert-base-uncased's pytorch_model.bin), which `export-lxmert`
/// writes back in Hugging Face's layout.
///
/// --out receives config.json, tokenizer.json, per-epoch checkpoints (an interrupted run
/// resumes when the same command is repeated; with several stages each has its own
/// stage-<k>/ directory), curve-loss.png (training), curve-val-loss.png (held-out),
/// curve-matching-accuracy.png, and when done lxmert.safetensors + lxmert-config.json (the
/// encoder), pretraining.safetensors (with heads) and result.json.
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
    /// Where checkpoints, curves and the pretrained encoder are written.
    #[arg(long, default_value = "runs/lxmert-pretraining")]
    out: PathBuf,
    #[command(flatten)]
    devices: DevicesArgs,
    /// Region features converted by `lxmert-features convert`; every image must be in it.
    #[arg(long)]
    features: Option<PathBuf>,
    /// The stages, run one after another, each OBJECTIVES:EPOCHS with objectives from
    /// masked-lm, masked-objects, matching, contrastive joined by + (lxmert: the first three)
    /// [default: contrastive:10,matching+contrastive:20 synthetic, lxmert:20 COCO]. --epochs
    /// sets every stage's epochs.
    #[arg(long, value_delimiter = ',', value_name = "STAGES")]
    stages: Option<Vec<PretrainStage>>,
    /// Chance that a token of a word naming an object category is chosen for masked LM, in
    /// [0, 1] (other tokens: BERT's 0.15); 0 is BERT's uniform choice [default: 0].
    #[arg(long, value_parser = vislang::cli::range::probability)]
    object_word_rate: Option<f64>,
    /// Model input size in pixels [default: 48 synthetic, 224 COCO].
    #[arg(long, value_parser = vislang::cli::range::at_least_one)]
    image_size: Option<usize>,
    /// Use an existing tokenizer.json instead of training WordPiece on the captions (use the
    /// same one as `classify --tokenizer` to fine-tune there).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Seed of initialisation, shuffling and masking.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hide progress bars (epoch summaries are still printed).
    #[arg(long)]
    quiet: bool,
}

/// The held-out metrics after the last epoch, the speed, and where the files are.
fn print_summary(result: &PretrainResult, paths: &RunPaths) {
    if let Some(last) = result.history.last() {
        let metrics = last.eval.metrics_text(3);
        println!("held-out after epoch {}: {metrics}", last.epoch);
    }
    println!(
        "{} parameters, {:.0} samples/s; encoder, curves and checkpoints: {}",
        result.n_params,
        result.samples_per_second,
        paths.out_dir.display()
    );
}

fn main() -> ExitCode {
    let mut args: Args = parse_with_presets(&budgets::synthetic(), &budgets::coco());
    args.data.absolutize();
    args.tokenizer = args.tokenizer.map(absolute);
    args.features = args.features.map(absolute);
    let mut config = match &args.data.coco_root {
        Some(root) => PretrainLxmertConfig::coco(root.clone()),
        None => PretrainLxmertConfig::synthetic(),
    };
    config.features = args.features;
    if let Some(stages) = args.stages {
        config.stages = stages;
    }
    if let Some(epochs) = args.budget.epochs {
        config
            .stages
            .iter_mut()
            .for_each(|stage| stage.epochs = epochs);
    }
    config.masking.object_word_rate = args
        .object_word_rate
        .unwrap_or(config.masking.object_word_rate);
    args.budget.apply_to(&mut config.budget);
    config.budget.seed = args.seed;
    let released = or_exit(args.lxmert.released());
    or_exit(args.lxmert.apply_sizes(&mut config.model));
    let d = &mut config.data;
    d.image_size = args.image_size.unwrap_or(d.image_size);
    d.tokenizer = args.tokenizer;
    if let Some(released) = released {
        config.weights = Some(or_exit(released.apply(&mut config.model, d)));
    }
    d.max_train_images = args.data.max_train_images;
    d.max_eval_images = args.data.max_eval_images;
    d.skip_bad = args.data.skip_bad;
    d.captions = or_exit(args.captions.source(args.data.coco_root.as_deref()));
    args.data.apply_to(&mut d.synthetic);

    eprintln!(
        "stages: {}",
        stages_text(&config.stages).replace(',', ", then ")
    );
    let paths = args.data.paths(args.out);
    let options = args.budget.run_options(args.quiet);
    let task = Replicated(TrainingRun::new(&config, &paths, options));
    run_and_report(&args.devices.list(), task, |run| {
        print_summary(&run, &paths)
    })
}
