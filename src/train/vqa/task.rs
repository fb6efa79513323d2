//! One fine-tuning run (one model, one seed) as a task on the
//! [`engine`](crate::train::engine): LXMERT's loss for the task (binary cross-entropy against
//! the soft targets, summed over answers, for VQA and GQA; cross-entropy for NLVR2), and the
//! task's accuracy as its official script computes it (VQA accuracy for VQA v2), overall and
//! per question type. A finished run directory holds `model.safetensors`, `model-config.json`,
//! `result.json`, `metrics.jsonl`, `report.html` and the predictions in the task's official
//! submission format (`predictions.json`, or `predictions.csv` for NLVR2).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::nn::{AutodiffBackend, Backend};
use burn::module::AutodiffModule;
use burn::store::ModuleSnapshot;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::data::{QaData, QaItem};
use crate::data::batch::image_batch;
use crate::data::vqa::{AnswerVocabulary, QaTask};
use crate::data::{ClassificationBatch, ImageCache, SpecialIds};
use crate::io::checkpoint::{load_safetensors, save_safetensors, write_atomic};
use crate::models::classifier::MultiLabelClassifier;
use crate::models::lxmert::hf::load_lxmert;
use crate::models::lxmert::LxmertQuestionAnsweringConfig;
use crate::models::TextBatch;
use crate::train::classify::classifier_run::{
    bce_with_logits, ClassifierKind, EncoderWeights, RunModel, RunSpec,
};
use crate::train::engine::run_dir::{EpochLog, RunDir};
use crate::train::engine::{
    seeded_init, train, EpochEvaluation, Losses, RunDisplay, StepOutput, TrainingTask,
};
use crate::train::report::training_report;
use crate::train::TrainError;

/// Held-out metrics after an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaEvaluation {
    pub loss: f64,
    /// The task's accuracy (VQA accuracy for VQA v2), in [0, 1].
    pub accuracy: f64,
    /// The accuracy per question type.
    pub per_type: BTreeMap<String, f64>,
}

impl EpochEvaluation for QaEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("loss", self.loss), ("accuracy", self.accuracy)]
    }

    fn continuous_metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("loss", self.loss)]
    }
}

/// The outcome of one finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QaRunResult {
    pub model: ClassifierKind,
    pub seed: u64,
    pub accuracy: f64,
    pub per_type: BTreeMap<String, f64>,
    pub n_params: usize,
    pub train_samples_per_second: f64,
    pub history: Vec<EpochLog<QaEvaluation>>,
}

/// The batch of `items`: images from the cache (a question's images next to each other),
/// questions ending with `[SEP]`, dense soft targets `[batch, n_answers]`.
pub fn qa_batch<B: Backend>(
    items: &[&QaItem],
    cache: &ImageCache,
    n_answers: usize,
    special: SpecialIds,
    device: &B::Device,
) -> ClassificationBatch<B> {
    let image_ids: Vec<u64> = items
        .iter()
        .flat_map(|item| item.images.iter().copied())
        .collect();
    let questions: Vec<&[u32]> = items.iter().map(|item| item.question.as_slice()).collect();
    let mut targets = vec![0.0f32; items.len() * n_answers];
    for (row, item) in targets.chunks_mut(n_answers).zip(items) {
        for (&index, &score) in item.targets.indices.iter().zip(&item.targets.scores) {
            row[index] = score;
        }
    }
    ClassificationBatch {
        images: image_batch(cache, &image_ids, device),
        text: TextBatch::from_sequences(&questions, Some(special.sep), special.pad, device),
        labels: Tensor::from_data(TensorData::new(targets, [items.len(), n_answers]), device),
    }
}

/// LXMERT's loss for the task, as airsplay/lxmert trains it: for VQA and GQA, binary
/// cross-entropy with logits against the soft targets, averaged over the batch and summed over
/// answers (`bce_loss(...) * n_answers`); for NLVR2, softmax cross-entropy over true and false.
///
/// # Shapes
/// - `logits`, `targets`: `[batch, n_answers]`
/// - returns: `[1]`
pub fn answer_loss<B: Backend>(
    task: QaTask,
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [batch, n_answers] = logits.dims();
    match task {
        QaTask::Vqa | QaTask::Gqa => bce_with_logits(logits, targets) * n_answers as f64,
        QaTask::Nlvr2 => {
            let log_p = burn::tensor::activation::log_softmax(logits, 1);
            (log_p * targets).sum().neg() / batch.max(1) as f64
        }
    }
}

/// The predicted answer of every held-out question and the held-out metrics.
pub fn evaluate_qa<B: Backend, M: MultiLabelClassifier<B>>(
    model: &M,
    data: &QaRunData,
    batch_size: usize,
    device: &B::Device,
) -> (QaEvaluation, Vec<String>) {
    let (task, items, vocabulary) = (data.task, data.val, data.vocabulary);
    let mut loss_sum = Tensor::<B, 1>::zeros([1], device);
    let mut best = Vec::new();
    for chunk in items.chunks(batch_size.max(1)) {
        let refs: Vec<&QaItem> = chunk.iter().collect();
        let batch = qa_batch::<B>(
            &refs,
            data.val_cache,
            vocabulary.len(),
            data.special,
            device,
        );
        let logits = model.classify(batch.images, batch.text);
        loss_sum = loss_sum + answer_loss(task, logits.clone(), batch.labels) * chunk.len() as f64;
        best.push(logits.argmax(1).reshape([chunk.len()]));
    }
    let predicted: Vec<usize> = if best.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(best, 0)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("int data")
            .into_iter()
            .map(|i| i as usize)
            .collect()
    };
    let answers: Vec<String> = predicted
        .iter()
        .map(|&i| vocabulary.answer(i).to_string())
        .collect();
    let mut by_type: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut total = 0.0;
    for (item, answer) in items.iter().zip(&answers) {
        let accuracy = task.score(answer, &item.humans);
        total += accuracy;
        let entry = by_type.entry(item.question_type.clone()).or_default();
        entry.0 += accuracy;
        entry.1 += 1;
    }
    let n = items.len().max(1) as f64;
    let evaluation = QaEvaluation {
        loss: loss_sum.into_scalar().elem::<f64>() / n,
        accuracy: total / n,
        per_type: by_type
            .into_iter()
            .map(|(kind, (sum, count))| (kind, sum / count as f64))
            .collect(),
    };
    (evaluation, answers)
}

/// A model `M` on the question set: the engine's task.
pub struct QaTrainingTask<'a, M> {
    pub data: &'a QaRunData<'a>,
    pub batch_size: usize,
    pub dropout: bool,
    pub model: PhantomData<fn() -> M>,
}

impl<B, M> TrainingTask<B> for QaTrainingTask<'_, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
    M::InnerModule: MultiLabelClassifier<B::InnerBackend>,
{
    type Model = M;
    type Aux = ();
    type Evaluation = QaEvaluation;
    type Batch = ClassificationBatch<B>;

    fn n_train(&self) -> usize {
        self.data.train.len()
    }

    fn uses_backend_random(&self) -> bool {
        self.dropout
    }

    fn batch(
        &self,
        indices: &[usize],
        _rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<ClassificationBatch<B>, TrainError> {
        let items: Vec<&QaItem> = indices.iter().map(|&i| &self.data.train[i]).collect();
        Ok(qa_batch(
            &items,
            self.data.train_cache,
            self.data.vocabulary.len(),
            self.data.special,
            device,
        ))
    }

    fn loss(
        &self,
        model: &M,
        batch: ClassificationBatch<B>,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let loss = answer_loss(
            self.data.task,
            model.classify(batch.images, batch.text),
            batch.labels,
        );
        Ok(StepOutput {
            losses: Losses {
                total: loss,
                parts: Vec::new(),
            },
            aux: (),
        })
    }

    fn evaluate(
        &self,
        model: &M::InnerModule,
        _epoch: usize,
        device: &B::Device,
    ) -> Result<QaEvaluation, TrainError> {
        Ok(evaluate_qa(model, self.data, self.batch_size, device).0)
    }
}

/// The data a run reads.
pub struct QaRunData<'a> {
    pub task: QaTask,
    pub train: &'a [QaItem],
    pub val: &'a [QaItem],
    pub train_cache: &'a ImageCache,
    pub val_cache: &'a ImageCache,
    pub vocabulary: &'a AnswerVocabulary,
    pub special: SpecialIds,
}

impl QaData {
    /// What its runs read: both splits, their image caches, the answers and special ids.
    pub fn run_data(&self) -> QaRunData<'_> {
        let [train_cache, val_cache] = self.caches();
        QaRunData {
            task: self.task,
            train: &self.train,
            val: &self.val,
            train_cache,
            val_cache,
            vocabulary: &self.vocabulary,
            special: self.prepared.tokenizer.special,
        }
    }
}

/// Trains one model on the questions (resuming a partial run in its directory), evaluates it
/// and writes its predictions. `spec.model`'s label count is the vocabulary's; an LXMERT row
/// gets LXMERT's answer head.
pub fn train_qa_run<B: AutodiffBackend>(
    spec: &RunSpec,
    data: &QaRunData,
    device: &B::Device,
) -> Result<QaRunResult, TrainError> {
    let run_dir = RunDir::new(&spec.dir)?;
    if let Some(result) = run_dir.finished()? {
        return Ok(result);
    }
    let seed = spec.budget.seed;
    match &spec.model {
        RunModel::SingleStream(config) => {
            let model = seeded_init::<B, _>(seed, device, || config.init::<B>(device));
            let json = serde_json::to_vec_pretty(config).expect("configs serialise");
            finish(
                spec,
                data,
                model,
                config.dropout > 0.0,
                &json,
                &run_dir,
                device,
            )
        }
        RunModel::Lxmert { config, pretrained } => {
            let config = LxmertQuestionAnsweringConfig::new(
                config.lxmert.clone(),
                config.n_labels,
                config.cls_id,
            )
            .with_images_per_question(data.task.images_per_question());
            let mut model = seeded_init::<B, _>(seed, device, || config.init::<B>(device));
            match pretrained {
                Some(EncoderWeights::Run(path)) => {
                    model.lxmert = load_safetensors(model.lxmert, path)?;
                }
                Some(EncoderWeights::Released(path)) => {
                    model.lxmert = load_lxmert(model.lxmert, path)
                        .map_err(|e| TrainError::Config(e.to_string()))?
                        .model;
                }
                None => {}
            }
            let json = serde_json::to_vec_pretty(&config).expect("configs serialise");
            let dropout = config.lxmert.dropout > 0.0;
            finish(spec, data, model, dropout, &json, &run_dir, device)
        }
    }
}

fn finish<B, M>(
    spec: &RunSpec,
    data: &QaRunData,
    model: M,
    dropout: bool,
    config_json: &[u8],
    run_dir: &RunDir,
    device: &B::Device,
) -> Result<QaRunResult, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
    M::InnerModule: MultiLabelClassifier<B::InnerBackend>,
{
    let task = QaTrainingTask::<M> {
        data,
        batch_size: spec.budget.batch_size,
        dropout,
        model: PhantomData,
    };
    let display = RunDisplay {
        name: format!("{} seed {}", super::row_name(spec.kind), spec.budget.seed),
        progress: spec.progress,
        feed: spec.feed,
    };
    let trained = train(&task, model, &spec.budget, run_dir, &display, device)?;
    let (last, answers) = evaluate_qa(&trained.model, data, spec.budget.batch_size, device);
    let result = QaRunResult {
        model: spec.kind,
        seed: spec.budget.seed,
        accuracy: last.accuracy,
        per_type: last.per_type,
        n_params: trained.n_params,
        train_samples_per_second: trained.samples_per_second(data.train.len()),
        history: trained.history,
    };
    save_safetensors(&trained.model, &spec.dir.join("model.safetensors"))?;
    write_atomic(&spec.dir.join("model-config.json"), config_json)?;
    let (name, bytes) = submission(data.task, data.val, &answers);
    write_atomic(&spec.dir.join(name), &bytes)?;
    let config: serde_json::Value = serde_json::from_slice(config_json).expect("configs are JSON");
    training_report(
        &format!("{}, seed {}", super::row_name(spec.kind), spec.budget.seed),
        &spec.dir,
        &serde_json::json!({ "model": config, "budget": spec.budget }),
        &result.history,
        None,
    )?;
    run_dir.finish(&result)?;
    Ok(result)
}

/// The predictions in the task's official submission format, and its file name: VQA v2's
/// `[{"question_id", "answer"}]` (integer ids), GQA's `[{"questionId", "prediction"}]`, and
/// NLVR2's `identifier,True|False` lines.
pub fn submission(task: QaTask, items: &[QaItem], answers: &[String]) -> (&'static str, Vec<u8>) {
    let pairs = items.iter().zip(answers);
    match task {
        QaTask::Vqa => {
            let rows: Vec<serde_json::Value> = pairs
                .map(|(item, answer)| {
                    let id = item
                        .question_id
                        .parse::<u64>()
                        .map(serde_json::Value::from)
                        .unwrap_or_else(|_| serde_json::Value::from(item.question_id.clone()));
                    serde_json::json!({ "question_id": id, "answer": answer })
                })
                .collect();
            (
                "predictions.json",
                serde_json::to_vec(&rows).expect("predictions serialise"),
            )
        }
        QaTask::Gqa => {
            let rows: Vec<serde_json::Value> = pairs
                .map(|(item, answer)| {
                    serde_json::json!({ "questionId": item.question_id, "prediction": answer })
                })
                .collect();
            (
                "predictions.json",
                serde_json::to_vec(&rows).expect("predictions serialise"),
            )
        }
        QaTask::Nlvr2 => {
            let lines: String = pairs
                .map(|(item, answer)| {
                    let label = if answer == crate::data::vqa::nlvr2::TRUE {
                        "True"
                    } else {
                        "False"
                    };
                    format!("{},{label}\n", item.question_id)
                })
                .collect();
            ("predictions.csv", lines.into_bytes())
        }
    }
}
