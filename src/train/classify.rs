//! The headline experiment: image-only, text-only and joint single-stream classifiers, and the
//! two-stream LXMERT with and without pretraining, trained with the same budget and seeds,
//! evaluated on the held-out split, and compared as mean ± std over seeds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::budget::Budget;
pub use super::classifier_run::ClassifierKind;
use super::classifier_run::{train_run, ClassifierEvaluation, RunModel, RunResult, RunSpec};
use super::lxmert_pretrain::{
    budgets, fill_lxmert, lxmert_presets, pretrain_on, PretrainError, PretrainLxmertConfig,
    PretrainResult, PretrainingImages,
};
use super::metrics::MeanStd;
use super::plots::{grouped_bar_chart, line_chart, Bar, BarGroup, Series};
use super::pretrained_encoder::PretrainedEncoder;
use super::report::Report;
use super::run_dir::{EpochLog, RunDir};
use super::RunPaths;
use super::TrainError;
use crate::data::lxmert_pretraining::MaskingConfig;
pub use crate::data::{prepare_data, DataConfig, PreparedData};
use crate::data::{DataError, LoadError, PrepareError, SyntheticError, TokenizerError};
use crate::io::checkpoint::{write_atomic, CheckpointError};
use crate::models::classifier::{Modality, SingleStreamClassifierConfig};
use crate::models::lxmert::{LxmertClassifierConfig, LxmertConfig, Objectives};

/// The LXMERT rows: the model size and the pretraining that precedes `lxmert-pretrained`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LxmertSetup {
    /// The encoder; data-derived fields are filled in per run (see [`lxmert_config`]).
    pub model: LxmertConfig,
    pub objectives: Objectives,
    pub masking: MaskingConfig,
    pub pretraining: Budget,
    /// A finished `pretrain-lxmert --out` directory that `lxmert-pretrained` starts from,
    /// instead of pretraining with `pretraining` here.
    #[serde(default)]
    pub encoder: Option<PathBuf>,
}

/// The whole experiment. Saved as `config.json` in the output directory; a later run in the
/// same directory resumes only if its config is identical.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyConfig {
    pub data: DataConfig,
    /// The single-stream classifier. Its modality is set per row; labels, vocabulary,
    /// special ids, caption length and image size are filled in from the data (see
    /// [`model_config`]).
    pub model: SingleStreamClassifierConfig,
    /// The budget of every run; its seed is replaced by each of `seeds`.
    pub training: Budget,
    pub lxmert: LxmertSetup,
    pub models: Vec<ClassifierKind>,
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
    /// Steps between reads of the training loss (see `engine::RunDisplay::log_every`).
    pub log_every: usize,
}

impl ClassifyConfig {
    /// Sized to finish in a few minutes on a 2-core CPU on the built-in synthetic set.
    pub fn synthetic() -> Self {
        Self {
            data: DataConfig::synthetic(),
            // No dropout: the synthetic set does not overfit these models in 8 epochs (train
            // and held-out loss stay within 5%).
            model: SingleStreamClassifierConfig::new(Modality::Joint, 0, 0, 0, 0, 24, 48)
                .with_patch_size(12)
                .with_stem_channels(16)
                .with_d_feature(64)
                .with_d_model(64)
                .with_n_heads(4)
                .with_n_layers(2)
                .with_d_hidden(256)
                .with_dropout(0.0),
            training: Budget::new(8, 32, 1e-3),
            lxmert: LxmertSetup {
                model: lxmert_presets::small(),
                objectives: Objectives::ALL,
                masking: MaskingConfig::default(),
                pretraining: budgets::synthetic(),
                encoder: None,
            },
            models: ClassifierKind::ALL.to_vec(),
            seeds: vec![0, 1, 2],
        }
    }

    /// The pretraining run behind the `lxmert-pretrained` row.
    pub fn lxmert_pretraining(&self) -> PretrainLxmertConfig {
        PretrainLxmertConfig {
            data: self.data.clone(),
            features: None,
            model: self.lxmert.model.clone(),
            objectives: self.lxmert.objectives,
            masking: self.lxmert.masking,
            budget: self.lxmert.pretraining.clone(),
        }
    }

    /// A starting point for MSCOCO 2014 on a GPU: 224 px images as 7x7 regions.
    pub fn coco(root: PathBuf) -> Self {
        let mut config = Self::synthetic();
        config.data = DataConfig::coco(root);
        config.model = SingleStreamClassifierConfig::new(Modality::Joint, 0, 0, 0, 0, 32, 224)
            .with_patch_size(32)
            .with_stem_channels(64)
            .with_d_feature(384)
            .with_d_model(384)
            .with_n_heads(6)
            .with_n_layers(4)
            .with_d_hidden(1536)
            .with_dropout(0.1);
        config.training.epochs = 10;
        config.training.batch_size = 64;
        config.training.learning_rate = 3e-4;
        config.lxmert.model = lxmert_presets::base();
        config.lxmert.pretraining = budgets::coco();
        config
    }
}

/// Everything that can stop the experiment, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Load(#[from] LoadError),
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
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{0}")]
    Config(String),
    #[error("{path} does not fit this experiment: {message}")]
    Incompatible { path: PathBuf, message: String },
    #[error(transparent)]
    Pretrain(Box<PretrainError>),
}

impl From<PretrainError> for ClassifyError {
    fn from(error: PretrainError) -> Self {
        ClassifyError::Pretrain(Box::new(error))
    }
}

/// Summary of one model over seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: ClassifierKind,
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
    pub summary: Vec<ModelSummary>,
    pub runs: Vec<RunResult>,
    /// The pretraining behind `lxmert-pretrained`, when that row ran.
    pub lxmert_pretraining: Option<PretrainResult>,
}

/// The LXMERT classifier under `config`, with the data's vocabulary, labels and sizes.
pub fn lxmert_config(config: &ClassifyConfig, data: &PreparedData) -> LxmertClassifierConfig {
    let lxmert = fill_lxmert(
        &config.lxmert.model,
        data.tokenizer.vocab_size(),
        config.data.max_text_len,
        Some(config.data.image_size),
        0,
    );
    LxmertClassifierConfig::new(lxmert, data.train.n_labels, data.tokenizer.special.cls)
}

/// The single-stream classifier of one modality under `config`, with the data's labels,
/// vocabulary, special ids, caption length and image size.
pub fn model_config(
    config: &ClassifyConfig,
    modality: Modality,
    data: &PreparedData,
) -> SingleStreamClassifierConfig {
    SingleStreamClassifierConfig {
        modality,
        n_labels: data.train.n_labels,
        vocab_size: data.tokenizer.vocab_size(),
        cls_id: data.tokenizer.special.cls,
        sep_id: data.tokenizer.special.sep,
        max_text_len: config.data.max_text_len,
        image_size: config.data.image_size,
        ..config.model.clone()
    }
}

/// `--image-size` must split into whole patches for every model compared, and captions need a
/// length: checked before anything is written (a patch encoder would otherwise panic).
fn check_sizes(config: &ClassifyConfig) -> Result<(), ClassifyError> {
    let size = config.data.image_size;
    let mut patches = vec![config.model.patch_size];
    patches.extend(config.lxmert.model.pixels.as_ref().map(|p| p.patch_size));
    for patch in patches {
        if size == 0 || !size.is_multiple_of(patch) {
            let below = size / patch;
            let near: Vec<String> = (below.max(1)..below.max(1) + 3)
                .map(|k| (k * patch).to_string())
                .collect();
            return Err(ClassifyError::Config(format!(
                "--image-size {size} must be a positive multiple of the patch size {patch} (e.g. {})",
                near.join(", ")
            )));
        }
    }
    if config.data.max_text_len == 0 {
        return Err(ClassifyError::Config(
            "the caption length must be at least 1 token".into(),
        ));
    }
    Ok(())
}

/// Runs the whole comparison and writes `results.json`, `results.md` and the charts.
pub fn run_classify<B: AutodiffBackend>(
    config: &ClassifyConfig,
    paths: &RunPaths,
    device: &B::Device,
    schedule: Schedule,
) -> Result<ClassifyReport, ClassifyError> {
    let show_progress = schedule.show_progress;
    config.training.validate()?;
    check_sizes(config)?;
    let mut seeds = config.seeds.clone();
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.len() != config.seeds.len() {
        return Err(ClassifyError::Config(format!(
            "--seeds {:?} names a seed twice",
            config.seeds
        )));
    }
    if config.seeds.is_empty() || config.models.is_empty() {
        return Err(ClassifyError::Config(
            "--seeds and --models must each name at least one".into(),
        ));
    }
    RunDir::claim(&paths.out_dir, config, &["tokenizer.json"])?;
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

    let progress = crate::io::progress::multi(show_progress);
    // The pretrained LXMERT row starts from a pretraining on the training split (pixels and
    // captions only, no labels), run once and shared by its seeds, alongside the other rows.
    let pretraining_dir = paths.out_dir.join("lxmert-pretraining");
    let pretraining_config = config.lxmert_pretraining();
    let pretrain = || -> Result<PretrainResult, ClassifyError> {
        Ok(pretrain_on::<B>(
            &pretraining_config,
            &data,
            PretrainingImages::Pixels,
            &pretraining_dir,
            device,
            &progress,
            schedule.log_every,
        )?)
    };
    let wants_pretrained = config.models.contains(&ClassifierKind::LxmertPretrained);
    // A pretraining from elsewhere is checked before any training starts.
    let external = match (&config.lxmert.encoder, wants_pretrained) {
        (Some(dir), true) => Some(PretrainedEncoder::open(
            dir,
            &lxmert_config(config, &data).lxmert,
            &data.tokenizer,
        )?),
        _ => None,
    };
    let pretrained_weights = external.as_ref().map_or_else(
        || pretraining_dir.join("lxmert.safetensors"),
        |e| e.weights.clone(),
    );
    let needs_pretraining = wants_pretrained && external.is_none();

    // Longest runs first, so that parallel workers finish together instead of one long run
    // ending alone.
    let mut by_cost = config.models.clone();
    by_cost.sort_by_key(|m| m.cost_rank());
    let specs: Vec<RunSpec> = by_cost
        .iter()
        .flat_map(|&kind| config.seeds.iter().map(move |&seed| (kind, seed)))
        .map(|(kind, seed)| RunSpec {
            kind,
            budget: Budget {
                seed,
                ..config.training.clone()
            },
            model: match kind.modality() {
                Some(modality) => RunModel::SingleStream(model_config(config, modality, &data)),
                None => RunModel::Lxmert {
                    config: lxmert_config(config, &data),
                    pretrained: (kind == ClassifierKind::LxmertPretrained)
                        .then(|| pretrained_weights.clone()),
                },
            },
            dir: paths
                .out_dir
                .join("runs")
                .join(format!("{}-seed{seed}", kind.name())),
            progress: &progress,
            log_every: schedule.log_every,
        })
        .collect();
    let (lxmert_pretraining, mut runs) = run_in_parallel(
        &specs,
        schedule.jobs,
        needs_pretraining.then_some(&pretrain as &(dyn Fn() -> _ + Sync)),
        |spec| spec.kind == ClassifierKind::LxmertPretrained,
        |spec| {
            Ok(train_run::<B>(
                spec,
                &data.train,
                &data.val,
                data.tokenizer.special,
                device,
            )?)
        },
    )?;
    let order = |m: &ClassifierKind| config.models.iter().position(|x| x == m);
    runs.sort_by_key(|run| (order(&run.model), run.seed));

    let summary = config
        .models
        .iter()
        .map(|&model| {
            let of: Vec<&RunResult> = runs.iter().filter(|r| r.model == model).collect();
            let values = |f: fn(&RunResult) -> f64| of.iter().map(|r| f(r)).collect::<Vec<_>>();
            ModelSummary {
                model,
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
        lxmert_pretraining: lxmert_pretraining.or(external.and_then(|e| e.result)),
    };
    write_report(&report, &paths.out_dir)?;
    Ok(report)
}

/// Runs `prerequisite` (if any) and `work` on every spec with up to `jobs` threads. Specs for
/// which `waits` holds start only after the prerequisite finished; the others start at once, so
/// the pretraining behind one row overlaps with the other rows' training. Results keep the order
/// of `specs`. After a failure no new job starts, and the first error (prerequisite first, then
/// in spec order) is returned.
fn run_in_parallel<'a, T: Send, P: Send>(
    specs: &'a [RunSpec<'a>],
    jobs: usize,
    prerequisite: Option<&(dyn Fn() -> Result<P, ClassifyError> + Sync)>,
    waits: impl Fn(&RunSpec) -> bool + Sync,
    work: impl Fn(&'a RunSpec<'a>) -> Result<T, ClassifyError> + Sync,
) -> Result<(Option<P>, Vec<T>), ClassifyError> {
    let pending = Mutex::new((0..specs.len()).collect::<Vec<usize>>());
    let claimed = AtomicBool::new(prerequisite.is_none());
    let ready = AtomicBool::new(prerequisite.is_none());
    let failed = AtomicBool::new(false);
    let prerequisite_result: Mutex<Option<Result<P, ClassifyError>>> = Mutex::new(None);
    let results: Vec<Mutex<Option<Result<T, ClassifyError>>>> =
        specs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, specs.len() + 1) {
            scope.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(prerequisite) = prerequisite {
                    if !claimed.swap(true, Ordering::SeqCst) {
                        let result = prerequisite();
                        failed.fetch_or(result.is_err(), Ordering::SeqCst);
                        *prerequisite_result
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(result);
                        ready.store(true, Ordering::SeqCst);
                        continue;
                    }
                }
                let (next, left) = {
                    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                    let is_ready = ready.load(Ordering::SeqCst);
                    let position = pending.iter().position(|&i| is_ready || !waits(&specs[i]));
                    (position.map(|p| pending.remove(p)), pending.len())
                };
                match next {
                    Some(i) => {
                        let result = work(&specs[i]);
                        failed.fetch_or(result.is_err(), Ordering::SeqCst);
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    }
                    None if left == 0 => break,
                    // Only runs waiting for the prerequisite are left.
                    None => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            });
        }
    });
    let prerequisite = match prerequisite_result
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        Some(Err(error)) => return Err(error),
        Some(Ok(value)) => Some(value),
        None => None,
    };
    let mut done = Vec::with_capacity(specs.len());
    for slot in results {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(result)) => done.push(result),
            Some(Err(error)) => return Err(error),
            None => {} // not started because another job failed; that error comes first
        }
    }
    Ok((prerequisite, done))
}

/// `report.html`: the table, the charts, the config, and a link to each run's own report.
fn write_html_report(report: &ClassifyReport, out_dir: &Path) -> Result<(), ClassifyError> {
    let mut html =
        Report::new("Image-only vs text-only vs joint, and LXMERT with and without pretraining");
    let rows: Vec<Vec<String>> = report
        .summary
        .iter()
        .map(|s| {
            vec![
                s.model.name().to_string(),
                s.map.to_string(),
                s.micro_f1.to_string(),
                s.n_params.to_string(),
                format!("{:.0}", s.train_samples_per_second),
            ]
        })
        .collect();
    html.paragraph(&format!(
        "{} train / {} held-out images, device {}, mean ± std over seeds {:?}.",
        report.train_images, report.eval_images, report.device, report.config.seeds
    ))
    .table(
        &[
            "model",
            "held-out mAP",
            "micro-F1",
            "parameters",
            "train samples/s",
        ],
        &rows,
    );
    if let Some((margin, spread)) = joint_margin(report) {
        html.paragraph(&format!(
            "Joint minus best unimodal mAP: {margin:+.4} (largest std across seeds: {spread:.4})."
        ));
    }
    if let Some((gain, spread)) = pretraining_gain(report) {
        html.paragraph(&format!(
            "LXMERT pretrained minus from scratch mAP: {gain:+.4} (larger std across seeds: {spread:.4})."
        ));
    }
    html.image(
        &out_dir.join("comparison.png"),
        &["Held-out mAP and micro-F1, mean ± std over seeds".into()],
    )
    .heading("Curves")
    .curves(out_dir)
    .heading("Runs");
    for run in &report.runs {
        let name = format!("{}-seed{}", run.model.name(), run.seed);
        html.link(
            &format!("runs/{name}/report.html"),
            &format!("{name}: mAP {:.4}, micro-F1 {:.4}", run.map, run.micro_f1),
        );
    }
    if out_dir.join("lxmert-pretraining/report.html").exists() {
        html.link("lxmert-pretraining/report.html", "the LXMERT pretraining");
    }
    html.heading("Config").json(&report.config).write(out_dir)?;
    Ok(())
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
            s.model.name(),
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
    let get = |m| report.summary.iter().find(|s| s.model == m);
    let (image, text, joint) = (
        get(ClassifierKind::ImageOnly)?,
        get(ClassifierKind::TextOnly)?,
        get(ClassifierKind::Joint)?,
    );
    let best_unimodal = image.map.mean.max(text.map.mean);
    let spread = image.map.std.max(text.map.std).max(joint.map.std);
    Some((joint.map.mean - best_unimodal, spread))
}

/// LXMERT's mAP with pretraining minus without, and the larger of their stds; `None` unless
/// both LXMERT rows ran.
pub fn pretraining_gain(report: &ClassifyReport) -> Option<(f64, f64)> {
    let get = |m| report.summary.iter().find(|s| s.model == m);
    let (scratch, pretrained) = (
        get(ClassifierKind::Lxmert)?,
        get(ClassifierKind::LxmertPretrained)?,
    );
    Some((
        pretrained.map.mean - scratch.map.mean,
        scratch.map.std.max(pretrained.map.std),
    ))
}

fn write_report(report: &ClassifyReport, out_dir: &Path) -> Result<(), ClassifyError> {
    write_atomic(
        &out_dir.join("results.json"),
        &serde_json::to_vec_pretty(report).expect("report serialises"),
    )?;
    let mut markdown = format!(
        "# Image-only vs text-only vs joint, and LXMERT with and without pretraining\n\n{} train / {} held-out images, device {}.\n\n{}",
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
    if let Some((gain, spread)) = pretraining_gain(report) {
        markdown += &format!(
            "\nLXMERT pretrained minus from scratch mAP: {gain:+.4} (larger std across seeds: {spread:.4}).\n"
        );
    }
    write_atomic(&out_dir.join("results.md"), markdown.as_bytes())?;

    let groups: Vec<BarGroup> = report
        .summary
        .iter()
        .map(|s| BarGroup {
            label: s.model.name().to_string(),
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

    let curve = |metric: fn(&EpochLog<ClassifierEvaluation>) -> f64| -> Vec<Series> {
        report
            .runs
            .iter()
            .map(|run| Series {
                name: run.model.name().to_string(),
                points: run
                    .history
                    .iter()
                    .map(|h| (h.epoch as f64, metric(h)))
                    .collect(),
                color: ClassifierKind::ALL
                    .iter()
                    .position(|&m| m == run.model)
                    .unwrap_or(0),
            })
            .collect()
    };
    line_chart(
        &out_dir.join("curve-val-map.png"),
        "Held-out mAP per epoch (one line per seed)",
        "epoch",
        "mAP",
        &curve(|h| h.eval.map),
    )?;
    line_chart(
        &out_dir.join("curve-loss.png"),
        "Training loss per epoch (one line per seed)",
        "epoch",
        "binary cross-entropy",
        &curve(|h| h.train.get("total").unwrap_or(f64::NAN)),
    )?;
    write_html_report(report, out_dir)?;
    Ok(())
}
