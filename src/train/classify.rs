//! The headline experiment: image-only, text-only and joint classifiers trained with the same
//! budget and seeds, evaluated on the held-out split, and compared as mean ± std over seeds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::checkpoint::{claim_run_dir, write_atomic, CheckpointError};
use super::classifier_run::{train_run, RunResult, RunSpec};
use super::metrics::MeanStd;
use super::plots::{grouped_bar_chart, line_chart, Bar, BarGroup, Series};
use super::RunPaths;
use crate::data::{
    dataset_root, BadEntryPolicy, ClassificationSplit, CocoDataset, CocoSplit, DataError,
    PrepareError, SkipReport, SyntheticCocoConfig, SyntheticError, TextTokenizer, TokenizerError,
};
use crate::models::classifier::{Modality, SingleStreamClassifierConfig};

/// Where the images and captions come from, and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// MSCOCO 2014 in the official layout; `None` uses the built-in synthetic set.
    pub coco_root: Option<PathBuf>,
    pub synthetic: SyntheticCocoConfig,
    /// Side of the square model input, in pixels.
    pub image_size: usize,
    /// Longest caption in tokens (longer ones are truncated).
    pub max_text_len: usize,
    /// Size of the WordPiece vocabulary trained on the training captions.
    pub vocab_size: usize,
    /// An existing `tokenizer.json` to use instead of training one.
    pub tokenizer: Option<PathBuf>,
    pub max_train_images: Option<usize>,
    pub max_eval_images: Option<usize>,
    /// Skip and count bad entries instead of failing.
    pub skip_bad: bool,
}

/// The classifier's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSize {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub d_hidden: usize,
    pub patch_size: usize,
    pub d_feature: usize,
    pub stem_channels: usize,
    pub dropout: f64,
}

/// The optimisation budget, identical for every modality and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Fraction of all steps spent warming the learning rate up.
    pub warmup_fraction: f64,
    /// Gradients are clipped to this global L2 norm.
    pub grad_clip: f64,
}

/// The whole experiment. Saved as `config.json` in the output directory; a later run in the
/// same directory resumes only if its config is identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyConfig {
    pub data: DataConfig,
    pub model: ModelSize,
    pub training: TrainingConfig,
    pub modalities: Vec<Modality>,
    pub seeds: Vec<u64>,
}

/// How the runs are scheduled; does not change results (see `jobs`).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Runs trained at once, each on its own thread. Small models leave the CPU backend's
    /// threads mostly idle, so parallel runs finish the comparison sooner. With dropout > 0,
    /// runs in parallel share the backend's random generator and are not bit-reproducible.
    pub jobs: usize,
    pub show_progress: bool,
}

impl ClassifyConfig {
    /// Sized to finish in a few minutes on a 2-core CPU on the built-in synthetic set.
    pub fn synthetic() -> Self {
        Self {
            data: DataConfig {
                coco_root: None,
                synthetic: SyntheticCocoConfig::default(),
                image_size: 48,
                max_text_len: 24,
                vocab_size: 200,
                tokenizer: None,
                max_train_images: None,
                max_eval_images: None,
                skip_bad: false,
            },
            model: ModelSize {
                d_model: 64,
                n_heads: 4,
                n_layers: 2,
                d_hidden: 256,
                patch_size: 12,
                d_feature: 64,
                stem_channels: 16,
                // No dropout: the synthetic set does not overfit these models in 8 epochs (train
                // and held-out loss stay within 5%), and without random draws in training,
                // runs in parallel threads stay reproducible.
                dropout: 0.0,
            },
            training: TrainingConfig {
                epochs: 8,
                batch_size: 32,
                learning_rate: 1e-3,
                weight_decay: 0.01,
                warmup_fraction: 0.1,
                grad_clip: 1.0,
            },
            modalities: Modality::ALL.to_vec(),
            seeds: vec![0, 1, 2],
        }
    }

    /// A starting point for MSCOCO 2014 on a GPU: 224 px images as 7x7 regions.
    pub fn coco(root: PathBuf) -> Self {
        let mut config = Self::synthetic();
        config.data.coco_root = Some(root);
        config.data.image_size = 224;
        config.data.max_text_len = 32;
        config.data.vocab_size = 8000;
        config.model = ModelSize {
            d_model: 384,
            n_heads: 6,
            n_layers: 4,
            d_hidden: 1536,
            patch_size: 32,
            d_feature: 384,
            stem_channels: 64,
            dropout: 0.1,
        };
        config.training.epochs = 10;
        config.training.batch_size = 64;
        config.training.learning_rate = 3e-4;
        config
    }
}

/// Everything that can stop the experiment, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the training loss of {run} became {value} in epoch {epoch}; lower --lr or check the data. The checkpoint of the previous epoch is kept")]
    NonFiniteLoss {
        run: String,
        epoch: usize,
        value: f64,
    },
}

/// Summary of one modality over seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModalitySummary {
    pub modality: Modality,
    pub map: MeanStd,
    pub micro_f1: MeanStd,
    pub n_params: usize,
    pub train_samples_per_second: f64,
}

/// What `results.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyReport {
    pub config: ClassifyConfig,
    pub device: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub skipped_entries: Vec<String>,
    pub summary: Vec<ModalitySummary>,
    pub runs: Vec<RunResult>,
}

/// Prepared data shared by every run.
pub struct PreparedData {
    pub train: ClassificationSplit,
    pub val: ClassificationSplit,
    pub tokenizer: TextTokenizer,
    pub skipped: SkipReport,
}

/// Loads (or generates) the dataset, the tokenizer and the image caches.
pub fn prepare_data(
    config: &DataConfig,
    paths: &RunPaths,
    show_progress: bool,
) -> Result<PreparedData, ClassifyError> {
    let root = dataset_root(
        config.coco_root.as_deref(),
        &config.synthetic,
        &paths.data_dir,
    )?;
    let policy = BadEntryPolicy::skipping(config.skip_bad);
    let train = CocoDataset::load(&root, CocoSplit::Train2014, policy)?;
    let val = CocoDataset::load(&root, CocoSplit::Val2014, policy)?;
    if train.categories != val.categories {
        return Err(ClassifyError::Config(format!(
            "{} and {} list different categories",
            CocoSplit::Train2014.instances_path(&root).display(),
            CocoSplit::Val2014.instances_path(&root).display()
        )));
    }

    // The tokenizer of an earlier run in this directory wins, so checkpoints keep their ids.
    let saved = paths.out_dir.join("tokenizer.json");
    let tokenizer = if saved.exists() {
        TextTokenizer::from_file(&saved)?
    } else {
        let tokenizer = match &config.tokenizer {
            Some(path) => TextTokenizer::from_file(path)?,
            None => TextTokenizer::train_wordpiece(train.all_captions(), config.vocab_size)?,
        };
        fs::create_dir_all(&paths.out_dir).map_err(|source| DataError::Io {
            path: paths.out_dir.clone(),
            source,
        })?;
        tokenizer.save(&saved)?;
        tokenizer
    };

    let prepare = |dataset, max_images| {
        ClassificationSplit::prepare(
            dataset,
            &tokenizer,
            config.image_size,
            config.max_text_len,
            max_images,
            &paths.cache_dir,
            policy,
            show_progress,
        )
    };
    let mut train = prepare(train, config.max_train_images)?;
    let mut val = prepare(val, config.max_eval_images)?;
    let mut skipped = std::mem::take(&mut train.skipped);
    skipped.merge(std::mem::take(&mut val.skipped));
    if train.is_empty() || val.is_empty() {
        return Err(ClassifyError::Config(format!(
            "no usable images under {} ({} train, {} val)",
            root.display(),
            train.len(),
            val.len()
        )));
    }
    Ok(PreparedData {
        train,
        val,
        tokenizer,
        skipped,
    })
}

/// The model config of one modality under `config`.
pub fn model_config(
    config: &ClassifyConfig,
    modality: Modality,
    data: &PreparedData,
) -> SingleStreamClassifierConfig {
    let size = &config.model;
    SingleStreamClassifierConfig::new(
        modality,
        data.train.n_labels,
        data.tokenizer.vocab_size(),
        data.tokenizer.special.cls,
        data.tokenizer.special.sep,
        config.data.max_text_len,
        config.data.image_size,
    )
    .with_patch_size(size.patch_size)
    .with_stem_channels(size.stem_channels)
    .with_d_feature(size.d_feature)
    .with_d_model(size.d_model)
    .with_n_heads(size.n_heads)
    .with_n_layers(size.n_layers)
    .with_d_hidden(size.d_hidden)
    .with_dropout(size.dropout)
}

/// Runs the whole comparison and writes `results.json`, `results.md` and the charts.
pub fn run_classify<B: AutodiffBackend>(
    config: &ClassifyConfig,
    paths: &RunPaths,
    device: &B::Device,
    schedule: Schedule,
) -> Result<ClassifyReport, ClassifyError> {
    let show_progress = schedule.show_progress;
    if config.training.epochs == 0 || config.training.batch_size == 0 || config.seeds.is_empty() {
        return Err(ClassifyError::Config(
            "epochs, batch size and the number of seeds must all be at least 1".into(),
        ));
    }
    fs::create_dir_all(&paths.out_dir).map_err(|source| DataError::Io {
        path: paths.out_dir.clone(),
        source,
    })?;
    claim_run_dir(&paths.out_dir, config)?;
    let data = prepare_data(&config.data, paths, show_progress)?;
    for line in data.skipped.summary() {
        eprintln!("skipped {line}");
    }
    eprintln!(
        "data: {} train / {} held-out images, {} labels, vocabulary {}",
        data.train.len(),
        data.val.len(),
        data.train.n_labels,
        data.tokenizer.vocab_size()
    );

    let progress = super::progress::multi(show_progress);
    // Longest runs first (joint, then image-only, then text-only), so that parallel workers
    // finish together instead of one long run ending alone.
    let mut by_cost = config.modalities.clone();
    by_cost.sort_by_key(|m| match m {
        Modality::Joint => 0,
        Modality::ImageOnly => 1,
        Modality::TextOnly => 2,
    });
    let specs: Vec<RunSpec> = by_cost
        .iter()
        .flat_map(|&modality| config.seeds.iter().map(move |&seed| (modality, seed)))
        .map(|(modality, seed)| RunSpec {
            modality,
            seed,
            model: model_config(config, modality, &data),
            training: &config.training,
            dir: paths
                .out_dir
                .join("runs")
                .join(format!("{}-seed{seed}", modality.name())),
            progress: &progress,
        })
        .collect();
    let mut runs = run_in_parallel(&specs, schedule.jobs, |spec| {
        train_run::<B>(spec, &data.train, &data.val, data.tokenizer.special, device)
    })?;
    let order = |m: &Modality| config.modalities.iter().position(|x| x == m);
    runs.sort_by_key(|run| (order(&run.modality), run.seed));

    let summary = config
        .modalities
        .iter()
        .map(|&modality| {
            let of: Vec<&RunResult> = runs.iter().filter(|r| r.modality == modality).collect();
            let values = |f: fn(&RunResult) -> f64| of.iter().map(|r| f(r)).collect::<Vec<_>>();
            ModalitySummary {
                modality,
                map: MeanStd::of(&values(|r| r.map)),
                micro_f1: MeanStd::of(&values(|r| r.micro_f1)),
                n_params: of[0].n_params,
                train_samples_per_second: MeanStd::of(&values(|r| r.train_samples_per_second)).mean,
            }
        })
        .collect();
    let report = ClassifyReport {
        config: config.clone(),
        device: format!("{} on {device:?}", B::name(device)),
        train_images: data.train.len(),
        eval_images: data.val.len(),
        skipped_entries: data.skipped.summary(),
        summary,
        runs,
    };
    write_report(&report, &paths.out_dir)?;
    Ok(report)
}

/// Runs `work` on every spec with up to `jobs` threads; results keep the order of `specs`.
/// After a failure no new run starts, and the first error (in spec order) is returned.
fn run_in_parallel<'a, T: Send>(
    specs: &'a [RunSpec<'a>],
    jobs: usize,
    work: impl Fn(&'a RunSpec<'a>) -> Result<T, ClassifyError> + Sync,
) -> Result<Vec<T>, ClassifyError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<T, ClassifyError>>>> =
        specs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, specs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= specs.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let result = work(&specs[i]);
                failed.fetch_or(result.is_err(), Ordering::SeqCst);
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            });
        }
    });
    let mut done = Vec::with_capacity(specs.len());
    for slot in results {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(result)) => done.push(result),
            Some(Err(error)) => return Err(error),
            None => {} // not started because another run failed; that error comes first
        }
    }
    Ok(done)
}

/// The results table in Markdown.
pub fn results_table(report: &ClassifyReport) -> String {
    let mut table = format!(
        "| model | mAP (mean ± std over {} seeds) | micro-F1 | parameters | train samples/s |\n|---|---|---|---|---|\n",
        report.config.seeds.len()
    );
    for s in &report.summary {
        table += &format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            s.modality.name(),
            s.map,
            s.micro_f1,
            s.n_params,
            s.train_samples_per_second
        );
    }
    table
}

/// The joint model's lead in mAP over the best unimodal model, and the largest spread (std)
/// among the models compared; `None` unless all three modalities ran.
pub fn joint_margin(report: &ClassifyReport) -> Option<(f64, f64)> {
    let get = |m| report.summary.iter().find(|s| s.modality == m);
    let (image, text, joint) = (
        get(Modality::ImageOnly)?,
        get(Modality::TextOnly)?,
        get(Modality::Joint)?,
    );
    let best_unimodal = image.map.mean.max(text.map.mean);
    let spread = image.map.std.max(text.map.std).max(joint.map.std);
    Some((joint.map.mean - best_unimodal, spread))
}

fn write_report(report: &ClassifyReport, out_dir: &Path) -> Result<(), ClassifyError> {
    write_atomic(
        &out_dir.join("results.json"),
        &serde_json::to_vec_pretty(report).expect("report serialises"),
    )?;
    let mut markdown = format!(
        "# Image-only vs text-only vs joint\n\n{} train / {} held-out images, device {}.\n\n{}",
        report.train_images,
        report.eval_images,
        report.device,
        results_table(report)
    );
    if let Some((margin, spread)) = joint_margin(report) {
        markdown += &format!(
            "\nJoint minus best unimodal mAP: {margin:+.4} (largest std across seeds: {spread:.4}).\n"
        );
    }
    write_atomic(&out_dir.join("results.md"), markdown.as_bytes())?;

    let groups: Vec<BarGroup> = report
        .summary
        .iter()
        .map(|s| BarGroup {
            label: s.modality.name().to_string(),
            bars: vec![
                Bar {
                    mean: s.map.mean,
                    std: s.map.std,
                },
                Bar {
                    mean: s.micro_f1.mean,
                    std: s.micro_f1.std,
                },
            ],
        })
        .collect();
    grouped_bar_chart(
        &out_dir.join("comparison.png"),
        "Held-out mAP and micro-F1 (mean ± std over seeds)",
        &["mAP", "micro-F1"],
        &groups,
    )?;

    let curve = |metric: fn(&super::classifier_run::EpochLog) -> f64| -> Vec<Series> {
        report
            .runs
            .iter()
            .map(|run| Series {
                name: run.modality.name().to_string(),
                points: run
                    .history
                    .iter()
                    .map(|h| (h.epoch as f64, metric(h)))
                    .collect(),
                color: Modality::ALL
                    .iter()
                    .position(|&m| m == run.modality)
                    .unwrap_or(0),
            })
            .collect()
    };
    line_chart(
        &out_dir.join("curve-val-map.png"),
        "Held-out mAP per epoch (one line per seed)",
        "epoch",
        "mAP",
        &curve(|h| h.val_map),
    )?;
    line_chart(
        &out_dir.join("curve-loss.png"),
        "Training loss per epoch (one line per seed)",
        "epoch",
        "binary cross-entropy",
        &curve(|h| h.train_loss),
    )?;
    Ok(())
}
