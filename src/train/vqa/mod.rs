//! `finetune-vqa`: question answering on VQA v2's, GQA's or NLVR2's files (or the built-in
//! question set in their layouts). The single-stream model on the question alone, the image
//! alone and both, and LXMERT with its answer head from scratch and after pretraining, with one
//! budget and the same seeds, compared by the task's accuracy (VQA accuracy for VQA v2) overall
//! and per question type (mean ± std over seeds), next to the answer prior (the most common
//! training answer of each question type).

pub mod data;
pub mod report;
pub mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::vqa::QaTask;
use crate::io::RunPaths;
use crate::nn::AutodiffBackend;
use crate::train::classify::classifier_run::{RunModel, RunSpec};
use crate::train::classify::{
    lxmert_config, model_config, ClassifierKind, ClassifyConfig, ClassifyError, Schedule,
};
use crate::train::engine::budget::Budget;
use crate::train::engine::run_dir::RunDir;
use crate::train::lxmert_pretrain::{pretrain_on, PretrainingImages};
use crate::train::report::metrics::MeanStd;
pub use data::{prepare_qa, QaData, QaItem};
pub use report::{comparisons, results_table, row_accuracy, Comparison};
pub use task::{answer_loss, evaluate_qa, QaEvaluation, QaRunResult};

fn default_task() -> QaTask {
    QaTask::Vqa
}

/// The experiment, saved as `config.json` in the output directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneVqaConfig {
    /// Data, models, budget, LXMERT's pretraining, rows and seeds, as `classify` has them.
    pub experiment: ClassifyConfig,
    /// Which task: VQA v2, GQA or NLVR2.
    #[serde(default = "default_task")]
    pub task: QaTask,
    /// The folder of the task's official files (the built-in set writes its own).
    pub questions: Option<PathBuf>,
    /// GQA's or NLVR2's images, found by name anywhere below this folder.
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// An answer enters the vocabulary when it is the most common answer of at least this
    /// many training questions.
    pub min_answer_count: usize,
}

impl FinetuneVqaConfig {
    /// The built-in question set at `classify`'s synthetic sizes, questions of up to 16 tokens.
    pub fn synthetic() -> Self {
        let mut experiment = ClassifyConfig::synthetic();
        experiment.data.max_text_len = 16;
        experiment.data.vocab_size = 300;
        experiment.training.epochs = 10;
        experiment.seeds = vec![0, 1, 2];
        Self {
            experiment,
            task: QaTask::Vqa,
            questions: None,
            images: None,
            min_answer_count: 1,
        }
    }

    /// VQA v2 on MSCOCO 2014 (the bottom-up-attention baseline keeps answers given at least 9
    /// times).
    pub fn coco(root: PathBuf, questions: Option<PathBuf>) -> Self {
        Self {
            experiment: ClassifyConfig::coco(root),
            task: QaTask::Vqa,
            questions,
            images: None,
            min_answer_count: 9,
        }
    }
}

/// The row names: the text-only single-stream model reads the question only.
pub fn row_name(kind: ClassifierKind) -> &'static str {
    match kind {
        ClassifierKind::TextOnly => "question-only",
        other => other.name(),
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QaSummary {
    pub model: String,
    pub accuracy: MeanStd,
    pub per_type: BTreeMap<String, MeanStd>,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneVqaReport {
    pub config: FinetuneVqaConfig,
    pub device: String,
    pub train_questions: usize,
    pub eval_questions: usize,
    pub answers: usize,
    pub skipped_entries: Vec<String>,
    /// The answer prior first, then the models.
    pub summary: Vec<QaSummary>,
    pub runs: Vec<QaRunResult>,
}

/// The answer prior: each question type's most common training answer, scored on the
/// held-out questions.
fn answer_prior(data: &QaData) -> QaSummary {
    let mut counts: BTreeMap<&str, BTreeMap<usize, usize>> = BTreeMap::new();
    for item in &data.train {
        if let Some(best) = item
            .targets
            .indices
            .iter()
            .zip(&item.targets.scores)
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
        {
            *counts
                .entry(&item.question_type)
                .or_default()
                .entry(*best.0)
                .or_default() += 1;
        }
    }
    let guess = |kind: &str| -> &str {
        let index = counts
            .get(kind)
            .and_then(|c| c.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))))
            .map_or(0, |(i, _)| *i);
        data.vocabulary.answer(index)
    };
    let mut by_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for item in &data.val {
        by_type
            .entry(item.question_type.clone())
            .or_default()
            .push(data.task.score(guess(&item.question_type), &item.humans));
    }
    let all: Vec<f64> = by_type.values().flatten().copied().collect();
    QaSummary {
        model: "answer prior".into(),
        accuracy: MeanStd::of(&[all.iter().sum::<f64>() / all.len().max(1) as f64]),
        per_type: by_type
            .into_iter()
            .map(|(kind, values)| {
                let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
                (kind, MeanStd::of(&[mean]))
            })
            .collect(),
    }
}

/// Runs every row and seed, and writes `results.json` and `results.md`.
pub fn run_finetune_vqa<B: AutodiffBackend>(
    config: &FinetuneVqaConfig,
    paths: &RunPaths,
    device: &B::Device,
    schedule: Schedule,
) -> Result<FinetuneVqaReport, ClassifyError> {
    let experiment = &config.experiment;
    experiment.training.validate()?;
    if experiment.seeds.is_empty() || experiment.models.is_empty() {
        return Err(ClassifyError::Config(
            "--seeds and --models must each name at least one".into(),
        ));
    }
    let mut seeds = experiment.seeds.clone();
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.len() != experiment.seeds.len() {
        return Err(ClassifyError::Config(format!(
            "--seeds {:?} names a seed twice",
            experiment.seeds
        )));
    }
    if config.min_answer_count == 0 {
        return Err(ClassifyError::Config(
            "--min-answer-count must be at least 1".into(),
        ));
    }
    let size = experiment.data.image_size;
    if size == 0 || !size.is_multiple_of(experiment.model.patch_size) {
        return Err(ClassifyError::Config(format!(
            "--image-size {size} must be a positive multiple of the patch size {}",
            experiment.model.patch_size
        )));
    }
    crate::train::classify::check_inputs(experiment)?;
    if let Some(dir) = &config.images {
        if !dir.is_dir() {
            return Err(ClassifyError::Config(format!(
                "--images {} is not a folder",
                dir.display()
            )));
        }
    }
    crate::train::engine::run_dir::removed_on_early_failure(&paths.out_dir, || {
        RunDir::claim(&paths.out_dir, config, &["tokenizer.json"])?;
        let data = prepare_qa(config, paths, schedule.show_progress)?;
        for line in data.skipped.summary() {
            eprintln!("skipped {line}");
        }
        eprintln!(
            "questions: {} train / {} held-out, {} answers, vocabulary {}",
            data.train.len(),
            data.val.len(),
            data.vocabulary.len(),
            data.prepared.tokenizer.vocab_size()
        );
        let prepared = &data.prepared;
        let n_answers = data.vocabulary.len();
        let progress = crate::io::progress::multi(schedule.show_progress);
        let pretraining_dir = paths.out_dir.join("lxmert-pretraining");
        let pretraining_config = experiment.lxmert_pretraining();
        let pretrain = || -> Result<_, ClassifyError> {
            Ok(pretrain_on::<B>(
                &pretraining_config,
                prepared,
                PretrainingImages::Pixels,
                &pretraining_dir,
                std::slice::from_ref(device),
                &progress,
                schedule.run_feed(),
            )?)
        };
        let crate::train::classify::PretrainedSource {
            weights: pretrained_weights,
            needs_pretraining,
            ..
        } = crate::train::classify::pretrained_source(experiment, prepared, &pretraining_dir)?;
        let mut by_cost = experiment.models.clone();
        by_cost.sort_by_key(|m| m.cost_rank());
        let specs: Vec<RunSpec> = by_cost
            .iter()
            .flat_map(|&kind| experiment.seeds.iter().map(move |&seed| (kind, seed)))
            .map(|(kind, seed)| RunSpec {
                kind,
                budget: Budget {
                    seed,
                    ..experiment.training.clone()
                },
                model: match kind.modality() {
                    Some(modality) => {
                        let mut model = model_config(experiment, modality, prepared);
                        model.n_labels = n_answers;
                        model.images_per_input = config.task.images_per_question();
                        RunModel::SingleStream(model)
                    }
                    None => {
                        let mut lxmert = lxmert_config(experiment, prepared);
                        lxmert.n_labels = n_answers;
                        RunModel::Lxmert {
                            config: lxmert,
                            pretrained: (kind == ClassifierKind::LxmertPretrained)
                                .then(|| pretrained_weights.clone()),
                        }
                    }
                },
                dir: paths
                    .out_dir
                    .join("runs")
                    .join(format!("{}-seed{seed}", row_name(kind))),
                progress: &progress,
                feed: schedule.run_feed(),
            })
            .collect();
        let run_data = data.run_data();
        let (_, mut runs) = crate::train::classify::parallel_runs::run_in_parallel(
            &specs,
            schedule.jobs,
            needs_pretraining.then_some(&pretrain as &(dyn Fn() -> _ + Sync)),
            |spec| spec.kind == ClassifierKind::LxmertPretrained,
            |spec| Ok(task::train_qa_run::<B>(spec, &run_data, device)?),
        )?;
        let order = |m: &ClassifierKind| experiment.models.iter().position(|x| x == m);
        runs.sort_by_key(|run| (order(&run.model), run.seed));

        let mut summary = vec![answer_prior(&data)];
        for &model in &experiment.models {
            let of: Vec<&QaRunResult> = runs.iter().filter(|r| r.model == model).collect();
            let types: BTreeSet<&String> = of.iter().flat_map(|r| r.per_type.keys()).collect();
            summary.push(QaSummary {
                model: row_name(model).into(),
                accuracy: MeanStd::of(&of.iter().map(|r| r.accuracy).collect::<Vec<_>>()),
                per_type: types
                    .into_iter()
                    .map(|t| {
                        let values: Vec<f64> = of
                            .iter()
                            .filter_map(|r| r.per_type.get(t))
                            .copied()
                            .collect();
                        (t.clone(), MeanStd::of(&values))
                    })
                    .collect(),
            });
        }
        let report = FinetuneVqaReport {
            config: config.clone(),
            device: format!("{} on {device:?}", B::name(device)),
            train_questions: data.train.len(),
            eval_questions: data.val.len(),
            answers: n_answers,
            skipped_entries: data.skipped.summary(),
            summary,
            runs,
        };
        report::write_report(&report, &paths.out_dir)?;
        Ok(report)
    })
}
