//! The headline experiment: image-only, text-only and joint single-stream classifiers, and the
//! two-stream LXMERT with and without pretraining, trained with the same budget and seeds,
//! evaluated on the held-out split, and compared as mean ± std over seeds.

pub mod classifier_run;
pub(super) mod config;
pub(crate) mod parallel_runs;
pub mod pretrained_encoder;
pub(super) mod report;

use crate::nn::AutodiffBackend;

use crate::data::image_cache::CHUNK;
pub use crate::data::{prepare_data, DataConfig, PreparedData};
use crate::models::classifier::{Modality, SingleStreamClassifierConfig};
use crate::models::lxmert::LxmertClassifierConfig;
pub use crate::train::classify::classifier_run::ClassifierKind;
use crate::train::classify::classifier_run::{
    train_run, EncoderWeights, RunModel, RunResult, RunSpec,
};
pub use crate::train::classify::config::{ClassifyConfig, ClassifyError, LxmertSetup};
use crate::train::classify::parallel_runs::run_in_parallel;
use crate::train::classify::pretrained_encoder::PretrainedEncoder;
use crate::train::classify::report::write_report;
pub use crate::train::classify::report::{
    joint_margin, pretraining_gain, results_table, ClassifyReport, ModelSummary,
};
use crate::train::engine::budget::Budget;
use crate::train::engine::compute_threads::cores;
use crate::train::engine::memory::MemoryNeed;
use crate::train::engine::run_dir::RunDir;
use crate::train::engine::Feed;
use crate::train::lxmert_pretrain::{fill_lxmert, pretrain_on, PretrainResult, PretrainingImages};
use crate::train::report::metrics::MeanStd;
use crate::train::RunPaths;

/// How the runs are scheduled; does not change results (see `jobs`).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Runs trained at once, each on its own thread. Small models leave the CPU backend's
    /// threads mostly idle, so parallel runs finish the comparison sooner. With dropout > 0,
    /// runs in parallel share the backend's random generator and are not bit-reproducible.
    pub jobs: usize,
    pub show_progress: bool,
    /// Loss reads, batch loading and compute threads (see [`Feed`]).
    pub feed: Feed,
}

impl Schedule {
    /// What each run is fed with: with `compute_threads` 0, the cores shared out between the
    /// `jobs` runs trained at once (at least one thread each).
    pub fn run_feed(&self) -> Feed {
        let mut feed = self.feed;
        if feed.compute_threads == 0 {
            feed.compute_threads = (cores() / self.jobs.max(1)).max(1);
        }
        feed
    }
}

/// The LXMERT classifier under `config`, with the data's vocabulary, labels and sizes.
pub fn lxmert_config(config: &ClassifyConfig, data: &PreparedData) -> LxmertClassifierConfig {
    let lxmert = fill_lxmert(
        &config.lxmert.model,
        data.tokenizer.vocab_size(),
        config.data.max_text_len,
        Some(config.data.image_size),
        0,
        config.lxmert.weights.is_some(),
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
    let (d, m, batch) = (&config.data, &config.model, config.training.batch_size);
    let mut need = MemoryNeed::new()
        .image_cache(d.max_train_images.unwrap_or(CHUNK), size)
        .transformer(
            "single-stream classifier",
            batch,
            (size / m.patch_size).pow(2) + d.max_text_len + 3,
            m.n_heads,
            m.d_hidden,
            m.n_layers,
        );
    let lxmert = &config.lxmert.model;
    let uses_lxmert = config
        .models
        .iter()
        .any(|k| matches!(k, ClassifierKind::Lxmert | ClassifierKind::LxmertPretrained));
    if let (true, Some(pixels)) = (uses_lxmert, &lxmert.pixels) {
        need = need.transformer(
            "LXMERT object stream",
            batch,
            (size / pixels.patch_size).pow(2),
            lxmert.n_heads,
            lxmert.d_hidden,
            lxmert.n_object_layers + 2 * lxmert.n_cross_layers,
        );
    }
    need.check("--image-size or --batch-size")
        .map_err(ClassifyError::Config)
}

/// Where the `lxmert-pretrained` row's encoder comes from, and whether it is pretrained here.
pub(crate) struct PretrainedSource {
    pub weights: EncoderWeights,
    pub needs_pretraining: bool,
    /// The `pretrain-lxmert` run's result, when the encoder comes from one.
    pub external_result: Option<PretrainResult>,
}

/// Released weights (`--lxmert-weights`), a finished `pretrain-lxmert` run
/// (`--lxmert-encoder`, checked against this experiment's model and tokenizer before any
/// training starts), or a pretraining of this experiment's own in `pretraining_dir`.
pub(crate) fn pretrained_source(
    config: &ClassifyConfig,
    data: &PreparedData,
    pretraining_dir: &std::path::Path,
) -> Result<PretrainedSource, ClassifyError> {
    let wants_pretrained = config.models.contains(&ClassifierKind::LxmertPretrained);
    let external = match (&config.lxmert.encoder, wants_pretrained) {
        (Some(dir), true) => Some(PretrainedEncoder::open(
            dir,
            &lxmert_config(config, data).lxmert,
            &data.tokenizer,
        )?),
        _ => None,
    };
    let weights = match (&config.lxmert.weights, &external) {
        (Some(released), _) => EncoderWeights::Released(released.clone()),
        (None, Some(e)) => EncoderWeights::Run(e.weights.clone()),
        (None, None) => EncoderWeights::Run(pretraining_dir.join("lxmert.safetensors")),
    };
    Ok(PretrainedSource {
        weights,
        needs_pretraining: wants_pretrained
            && external.is_none()
            && config.lxmert.weights.is_none(),
        external_result: external.and_then(|e| e.result),
    })
}

/// Files named by options must exist before any data is generated or anything is written.
pub(crate) fn check_inputs(config: &ClassifyConfig) -> Result<(), ClassifyError> {
    if let Some(dir) = &config.lxmert.encoder {
        for name in ["lxmert-config.json", "lxmert.safetensors", "tokenizer.json"] {
            if !dir.join(name).is_file() {
                return Err(ClassifyError::Config(format!(
                    "--lxmert-encoder {} holds no finished pretrain-lxmert run ({name} is missing); run `pretrain-lxmert --out {}` first",
                    dir.display(),
                    dir.display()
                )));
            }
        }
    }
    if let Some(path) = &config.data.tokenizer {
        if !path.is_file() {
            return Err(ClassifyError::Config(format!(
                "--tokenizer {} does not exist",
                path.display()
            )));
        }
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
    config.training.validate()?;
    check_sizes(config)?;
    check_inputs(config)?;
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
    // Everything below writes into the run directory; a failure before the first epoch
    // removes what it made (see `removed_on_early_failure`).
    crate::train::engine::run_dir::removed_on_early_failure(
        &paths.out_dir,
        || -> Result<ClassifyReport, ClassifyError> {
            let show_progress = schedule.show_progress;
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
                    std::slice::from_ref(device),
                    &progress,
                    schedule.run_feed(),
                )?)
            };
            let PretrainedSource {
                weights: pretrained_weights,
                needs_pretraining,
                external_result,
            } = pretrained_source(config, &data, &pretraining_dir)?;

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
                        Some(modality) => {
                            RunModel::SingleStream(model_config(config, modality, &data))
                        }
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
                    feed: schedule.run_feed(),
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
                    let values =
                        |f: fn(&RunResult) -> f64| of.iter().map(|r| f(r)).collect::<Vec<_>>();
                    ModelSummary {
                        model,
                        map: MeanStd::of(&values(|r| r.map)),
                        micro_f1: MeanStd::of(&values(|r| r.micro_f1)),
                        n_params: of[0].n_params,
                        train_samples_per_second: MeanStd::of(&values(|r| {
                            r.train_samples_per_second
                        }))
                        .mean,
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
                lxmert_pretraining: lxmert_pretraining.or(external_result),
            };
            write_report(&report, &paths.out_dir)?;
            Ok(report)
        },
    )
}
