//! Question answering on image pairs (the built-in NLVR2 set): the single-stream model reading
//! a statement with each of two images, and LXMERT with its answer head over both images'
//! pooled outputs, each trained and evaluated on the device against the reference.

use std::marker::PhantomData;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::store::ModuleSnapshot;

use crate::data::vqa::QaTask;
use crate::models::classifier::{Modality, MultiLabelClassifier};
use crate::models::lxmert::LxmertQuestionAnsweringConfig;
use crate::nn::AutodiffBackend;
use crate::train::classify::{lxmert_config, model_config};
use crate::train::vqa::task::{qa_batch, QaRunData, QaTrainingTask};
use crate::train::vqa::{prepare_qa, FinetuneVqaConfig, QaData, QaItem};
use crate::train::{Budget, RunPaths, TrainError};

use super::{compare_training, floats, CheckData, CheckSettings, Comparison};

/// The built-in NLVR2 statements about the check's images ([`CheckData::synthetic`]), under
/// `data_dir`.
pub(super) fn prepare(data_dir: &Path) -> Result<QaData, String> {
    let config = config();
    let paths = RunPaths {
        // Its own tokenizer: it must know the statements' words.
        out_dir: data_dir.join("qa-tokenizer"),
        data_dir: data_dir.to_path_buf(),
        cache_dir: data_dir.join("cache"),
    };
    std::fs::create_dir_all(&paths.out_dir).map_err(|e| e.to_string())?;
    prepare_qa(&config, &paths, false).map_err(|e| e.to_string())
}

/// `finetune-vqa`'s built-in configuration, on NLVR2 over the check's images.
fn config() -> FinetuneVqaConfig {
    let mut config = FinetuneVqaConfig::synthetic();
    config.task = QaTask::Nlvr2;
    config.experiment.data.synthetic = CheckData::synthetic();
    config
}

/// Both families on image pairs: training steps, held-out loss and held-out logits.
pub(super) fn check_question_answering<R: AutodiffBackend, B: AutodiffBackend>(
    data: &QaData,
    settings: &CheckSettings,
    devices: (&R::Device, &B::Device),
    out: &mut Vec<Comparison>,
) -> Result<(), TrainError> {
    let (reference_device, device) = devices;
    let experiment = config().experiment;
    let n_answers = data.vocabulary.len();
    let pairs = data.task.images_per_question();
    let budget = Budget {
        batch_size: settings.batch_size,
        ..experiment.training.clone()
    };

    let mut single = model_config(&experiment, Modality::Joint, &data.prepared);
    single.n_labels = n_answers;
    single.images_per_input = pairs;
    single.dropout = 0.0;
    let question_answering = QuestionAnswering {
        data: &data.run_data(),
        budget: &budget,
        settings,
    };
    question_answering.check::<R, B, _, _>(
        "QA pairs, single-stream",
        (single.init::<R>(reference_device), single.init::<B>(device)),
        devices,
        out,
    )?;

    let mut lxmert = lxmert_config(&experiment, &data.prepared).lxmert;
    lxmert.dropout = 0.0;
    let answering =
        LxmertQuestionAnsweringConfig::new(lxmert, n_answers, data.prepared.tokenizer.special.cls)
            .with_images_per_question(pairs);
    question_answering.check::<R, B, _, _>(
        "QA pairs, LXMERT",
        (
            answering.init::<R>(reference_device),
            answering.init::<B>(device),
        ),
        devices,
        out,
    )
}

/// One model's check on the question set.
struct QuestionAnswering<'a> {
    data: &'a QaRunData<'a>,
    budget: &'a Budget,
    settings: &'a CheckSettings,
}

impl QuestionAnswering<'_> {
    /// Training and held-out loss ([`compare_training`]), then one held-out batch's logits.
    fn check<R, B, MR, MB>(
        &self,
        family: &'static str,
        models: (MR, MB),
        devices: (&R::Device, &B::Device),
        out: &mut Vec<Comparison>,
    ) -> Result<(), TrainError>
    where
        R: AutodiffBackend,
        B: AutodiffBackend,
        MR: AutodiffModule<R> + ModuleSnapshot<R> + MultiLabelClassifier<R>,
        MR::InnerModule: MultiLabelClassifier<R::InnerBackend>,
        MB: AutodiffModule<B> + ModuleSnapshot<B> + MultiLabelClassifier<B>,
        MB::InnerModule: MultiLabelClassifier<B::InnerBackend>,
    {
        let batch = self.settings.batch_size;
        let (model_r, model_b) = compare_training::<R, B, _, _>(
            family,
            (&qa_task(self.data, batch), &qa_task(self.data, batch)),
            models,
            self.budget,
            self.settings,
            devices,
            out,
        )?;
        out.push(compare_logits(
            family,
            &model_r,
            &model_b,
            self.data,
            self.settings,
            devices,
        ));
        Ok(())
    }
}

/// The task of model `M` on `data` (no dropout).
fn qa_task<'a, M>(data: &'a QaRunData<'a>, batch_size: usize) -> QaTrainingTask<'a, M> {
    QaTrainingTask {
        data,
        batch_size,
        dropout: false,
        model: PhantomData,
    }
}

/// The answer logits of one held-out batch on both backends.
fn compare_logits<R, B, MR, MB>(
    family: &'static str,
    model_r: &MR,
    model_b: &MB,
    data: &QaRunData,
    settings: &CheckSettings,
    (reference_device, device): (&R::Device, &B::Device),
) -> Comparison
where
    R: crate::nn::Backend,
    B: crate::nn::Backend,
    MR: MultiLabelClassifier<R>,
    MB: MultiLabelClassifier<B>,
{
    let items: Vec<&QaItem> = data.val.iter().take(settings.batch_size).collect();
    let n_answers = data.vocabulary.len();
    let batch_r = qa_batch::<R>(
        &items,
        data.val_cache,
        n_answers,
        data.special,
        reference_device,
    );
    let batch_b = qa_batch::<B>(&items, data.val_cache, n_answers, data.special, device);
    let reference = floats(model_r.classify(batch_r.images, batch_r.text));
    let on_device = crate::nn::autocast(settings.precision, || {
        floats(model_b.classify(batch_b.images, batch_b.text))
    });
    Comparison::new(
        family,
        "held-out answer logits",
        &on_device,
        &reference,
        settings.tolerance,
    )
}
