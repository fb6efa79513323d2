//! The question-answering data of a `finetune-vqa` run: the images, captions and tokenizer of
//! [`prepare_data`] (captions feed the `lxmert-pretrained` row's pretraining), the questions
//! of both splits tokenized, the answer vocabulary from the training answers, and each
//! question's soft targets and normalised human answers.

use std::path::{Path, PathBuf};

use crate::data::prepared::load_captioned_splits;
use crate::data::vqa::answers::normalise_human_answers;
use crate::data::vqa::synthetic::ensure_question_set;
use crate::data::vqa::{vqa_v2, AnswerVocabulary, ImageKey, QaExample, SoftTargets};
use crate::data::{
    prepare_data, BadEntryPolicy, CocoSplit, PreparedData, SkipReport, TextTokenizer,
};
use crate::io::RunPaths;
use crate::train::classify::ClassifyError;

use super::FinetuneVqaConfig;

/// One question, ready to batch.
#[derive(Debug, Clone)]
pub struct QaItem {
    pub question_id: String,
    pub image_id: u64,
    /// Token ids, without special tokens, truncated to the caption length.
    pub question: Vec<u32>,
    pub targets: SoftTargets,
    /// The human answers as the official script compares them.
    pub humans: Vec<String>,
    pub question_type: String,
}

/// Everything the runs read.
pub struct QaData {
    /// Images (caches), captions and the tokenizer.
    pub prepared: PreparedData,
    pub vocabulary: AnswerVocabulary,
    pub train: Vec<QaItem>,
    pub val: Vec<QaItem>,
    pub skipped: SkipReport,
    /// The files the questions came from, train then val: `[questions, annotations]`.
    pub files: [[PathBuf; 2]; 2],
}

/// The question files of both splits: the built-in set's (written on first use), or VQA v2's
/// official files in `--questions DIR` for MSCOCO.
fn question_files(
    config: &FinetuneVqaConfig,
    paths: &RunPaths,
    policy: BadEntryPolicy,
) -> Result<([[PathBuf; 2]; 2], Vec<String>), ClassifyError> {
    let data = &config.experiment.data;
    let splits = load_captioned_splits(
        data.coco_root.as_deref(),
        &data.synthetic,
        &data.captions,
        policy,
        &paths.data_dir,
    )?;
    let files = match (&data.coco_root, &config.questions) {
        (None, _) => ensure_question_set(
            &splits.root,
            &splits.train,
            &splits.val,
            data.synthetic.seed,
            data.captions.language,
        )?,
        (Some(_), Some(dir)) => [CocoSplit::Train2014, CocoSplit::Val2014].map(|split| {
            [
                dir.join(vqa_v2::questions_file(split.name())),
                dir.join(vqa_v2::annotations_file(split.name())),
            ]
        }),
        (Some(_), None) => {
            return Err(ClassifyError::Config(
                "--coco-root needs --questions DIR, the folder of VQA v2's v2_OpenEnded_mscoco_{train,val}2014_questions.json and v2_mscoco_{train,val}2014_annotations.json".into(),
            ))
        }
    };
    for path in files.iter().flatten() {
        if !path.is_file() {
            return Err(ClassifyError::Config(format!(
                "{} does not exist",
                path.display()
            )));
        }
    }
    let captions = splits
        .train
        .images
        .iter()
        .flat_map(|image| image.captions.iter().cloned())
        .collect();
    Ok((files, captions))
}

/// Reads the questions, trains (or reuses) the tokenizer on the training captions and
/// questions, prepares the images, and builds the vocabulary and targets.
pub fn prepare_qa(
    config: &FinetuneVqaConfig,
    paths: &RunPaths,
    show_progress: bool,
) -> Result<QaData, ClassifyError> {
    let data = &config.experiment.data;
    let policy = BadEntryPolicy::skipping(data.skip_bad);
    let (files, captions) = question_files(config, paths, policy)?;
    let [train_files, val_files] = &files;
    let read = |files: &[PathBuf; 2]| vqa_v2::read(&files[0], Some(&files[1]), policy);
    let (train, val) = (read(train_files)?, read(val_files)?);

    // The tokenizer must know the questions' words as well as the captions'. prepare_data
    // reuses a tokenizer.json already in the run directory, so it is trained and saved first.
    let saved = paths.out_dir.join("tokenizer.json");
    if !saved.exists() && data.tokenizer.is_none() {
        let texts: Vec<&str> = captions
            .iter()
            .map(String::as_str)
            .chain(train.examples.iter().map(|e| e.question.as_str()))
            .collect();
        TextTokenizer::train_wordpiece(texts.into_iter(), data.vocab_size)?.save(&saved)?;
    }
    let prepared = prepare_data(data, paths, show_progress)?;
    let mut skipped = SkipReport::default();
    let mut keep = |split: crate::data::vqa::QaSplit,
                    path: &Path,
                    cache: &crate::data::ImageCache|
     -> Result<Vec<QaExample>, ClassifyError> {
        // Images the instances file lists but this run leaves out (--max-train-images, or
        // skipped as unreadable) take their questions with them.
        let checked = split.check_images(
            path,
            &|image| matches!(image, ImageKey::Coco(id) if cache.contains(*id)),
            policy,
        )?;
        skipped.merge(checked.skipped);
        Ok(checked.examples)
    };
    let limited = data.max_train_images.is_some() || data.max_eval_images.is_some();
    let (train, val) = if limited {
        // With an image limit, questions about the images left out are not bad entries.
        let within = |split: crate::data::vqa::QaSplit, cache: &crate::data::ImageCache| {
            split
                .examples
                .into_iter()
                .filter(|e| matches!(e.images[0], ImageKey::Coco(id) if cache.contains(id)))
                .collect::<Vec<_>>()
        };
        skipped.merge(train.skipped);
        skipped.merge(val.skipped);
        (
            within(
                crate::data::vqa::QaSplit {
                    examples: train.examples,
                    skipped: SkipReport::default(),
                },
                &prepared.train.cache,
            ),
            within(
                crate::data::vqa::QaSplit {
                    examples: val.examples,
                    skipped: SkipReport::default(),
                },
                &prepared.val.cache,
            ),
        )
    } else {
        (
            keep(train, &train_files[0], &prepared.train.cache)?,
            keep(val, &val_files[0], &prepared.val.cache)?,
        )
    };
    let vocabulary = AnswerVocabulary::from_training(&train, config.min_answer_count);
    if vocabulary.is_empty() || train.is_empty() || val.is_empty() {
        return Err(ClassifyError::Config(format!(
            "no answer is the most common of at least --min-answer-count {} training questions ({} train, {} held-out questions)",
            config.min_answer_count,
            train.len(),
            val.len()
        )));
    }
    let items = |examples: Vec<QaExample>| -> Result<Vec<QaItem>, ClassifyError> {
        examples
            .into_iter()
            .map(|example| {
                let ImageKey::Coco(image_id) = example.images[0] else {
                    unreachable!("VQA v2 questions are about COCO images")
                };
                Ok(QaItem {
                    image_id,
                    question: prepared
                        .tokenizer
                        .encode(&example.question, data.max_text_len)?,
                    targets: vocabulary.soft_targets(&example),
                    humans: normalise_human_answers(&example.answers),
                    question_type: example.question_type,
                    question_id: example.question_id,
                })
            })
            .collect()
    };
    let (train, val) = (items(train)?, items(val)?);
    Ok(QaData {
        prepared,
        vocabulary,
        train,
        val,
        skipped,
        files,
    })
}
