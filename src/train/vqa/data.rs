//! The question-answering data of a `finetune-vqa` run: the images, captions and tokenizer of
//! [`prepare_data`] (captions feed the `lxmert-pretrained` row's pretraining), the task's
//! questions of both splits tokenized, the answer vocabulary from the training answers, each
//! question's soft targets and normalised human answers, and the image caches the questions
//! read (the COCO caches for VQA v2, caches of the named images for GQA and NLVR2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::prepared::load_captioned_splits;
use crate::data::vqa::answers::normalise_human_answers;
use crate::data::vqa::image_folder::ImageFolder;
use crate::data::vqa::synthetic::ensure_question_set;
use crate::data::vqa::synthetic_tasks::{ensure_gqa_set, ensure_nlvr2_set, nlvr2_images};
use crate::data::vqa::{
    gqa, nlvr2, vqa_v2, AnswerVocabulary, ImageKey, QaExample, QaSplit, QaTask, SoftTargets,
};
use crate::data::{
    prepare_data, BadEntryPolicy, CocoSplit, ImageCache, PreparedData, SkipReport, TextTokenizer,
};
use crate::io::RunPaths;
use crate::train::classify::ClassifyError;

use super::FinetuneVqaConfig;

/// One question, ready to batch.
#[derive(Debug, Clone)]
pub struct QaItem {
    pub question_id: String,
    /// The ids of its images in the split's cache (two for NLVR2, left then right).
    pub images: Vec<u64>,
    /// Token ids, without special tokens, truncated to the caption length.
    pub question: Vec<u32>,
    pub targets: SoftTargets,
    /// The human answers as the official script compares them.
    pub humans: Vec<String>,
    pub question_type: String,
}

/// Everything the runs read.
pub struct QaData {
    pub task: QaTask,
    /// Images (caches), captions and the tokenizer.
    pub prepared: PreparedData,
    pub vocabulary: AnswerVocabulary,
    pub train: Vec<QaItem>,
    pub val: Vec<QaItem>,
    pub skipped: SkipReport,
    /// The question files, train then val (VQA v2's questions file, its annotations beside it).
    pub files: [PathBuf; 2],
    /// The caches of GQA's and NLVR2's named images, train then val; VQA reads `prepared`'s.
    named_caches: Option<[ImageCache; 2]>,
}

impl QaData {
    /// The image caches the questions' ids point into, train then val.
    pub fn caches(&self) -> [&ImageCache; 2] {
        match &self.named_caches {
            Some([train, val]) => [train, val],
            None => [&self.prepared.train.cache, &self.prepared.val.cache],
        }
    }
}

/// Where a run's questions and their images are.
struct TaskFiles {
    /// Per split, train then val: the questions file and, for VQA v2, its annotations.
    files: [(PathBuf, Option<PathBuf>); 2],
    /// The folders GQA's and NLVR2's images are found in (empty for VQA v2).
    image_dirs: Vec<PathBuf>,
    /// The training captions (for the tokenizer).
    captions: Vec<String>,
}

/// The question files of both splits: the built-in set's (written on first use), or the
/// official files in `--questions DIR`.
fn task_files(
    config: &FinetuneVqaConfig,
    paths: &RunPaths,
    policy: BadEntryPolicy,
) -> Result<TaskFiles, ClassifyError> {
    let data = &config.experiment.data;
    let splits = load_captioned_splits(
        data.coco_root.as_deref(),
        &data.synthetic,
        &data.captions,
        policy,
        &paths.data_dir,
    )?;
    let (seed, language) = (data.synthetic.seed, data.captions.language);
    let (root, train, val) = (&splits.root, &splits.train, &splits.val);
    let built_in = config.questions.is_none();
    // Only called when --questions names the folder.
    let official = |names: [String; 2]| -> [PathBuf; 2] {
        let dir = config.questions.as_ref().expect("official files");
        names.map(|name| dir.join(name))
    };
    let images = || -> Result<Vec<PathBuf>, ClassifyError> {
        config.images.clone().map(|dir| vec![dir]).ok_or_else(|| {
            ClassifyError::Config(format!(
                "--task {} with --questions needs --images DIR, the folder of its images",
                config.task.name()
            ))
        })
    };
    let (files, image_dirs) = match (config.task, built_in) {
        (QaTask::Vqa, true) if data.coco_root.is_none() => {
            let [t, v] = ensure_question_set(root, train, val, seed, language)?;
            let pair = |[q, a]: [PathBuf; 2]| (q, Some(a));
            ([pair(t), pair(v)], Vec::new())
        }
        (QaTask::Vqa, true) => {
            return Err(ClassifyError::Config(
                "--coco-root needs --questions DIR, the folder of VQA v2's v2_OpenEnded_mscoco_{train,val}2014_questions.json and v2_mscoco_{train,val}2014_annotations.json".into(),
            ))
        }
        (QaTask::Vqa, false) => {
            let files = [CocoSplit::Train2014, CocoSplit::Val2014].map(|split| {
                let [q, a] = official([
                    vqa_v2::questions_file(split.name()),
                    vqa_v2::annotations_file(split.name()),
                ]);
                (q, Some(a))
            });
            (files, Vec::new())
        }
        (QaTask::Gqa, true) => {
            let [t, v] = ensure_gqa_set(root, train, val, seed, language)?;
            let dirs = [CocoSplit::Train2014, CocoSplit::Val2014].map(|s| root.join(s.name()));
            ([(t, None), (v, None)], dirs.to_vec())
        }
        (QaTask::Gqa, false) => {
            let [t, v] = official(["train", "val"].map(gqa::questions_file));
            ([(t, None), (v, None)], images()?)
        }
        (QaTask::Nlvr2, true) => {
            let [t, v] = ensure_nlvr2_set(root, train, val, seed, language)?;
            ([(t, None), (v, None)], vec![nlvr2_images(root)])
        }
        (QaTask::Nlvr2, false) => {
            let [t, v] = official(["train.json".into(), "dev.json".into()]);
            ([(t, None), (v, None)], images()?)
        }
    };
    for path in files.iter().flat_map(|(q, a)| std::iter::once(q).chain(a)) {
        if !path.is_file() {
            return Err(ClassifyError::Config(format!(
                "{} does not exist",
                path.display()
            )));
        }
    }
    let captions = train
        .images
        .iter()
        .flat_map(|image| image.captions.iter().cloned())
        .collect();
    Ok(TaskFiles {
        files,
        image_dirs,
        captions,
    })
}

fn read_split(
    task: QaTask,
    (questions, annotations): &(PathBuf, Option<PathBuf>),
    policy: BadEntryPolicy,
) -> Result<QaSplit, ClassifyError> {
    Ok(match task {
        QaTask::Vqa => vqa_v2::read(questions, annotations.as_deref(), policy)?,
        QaTask::Gqa => gqa::read(questions, policy)?,
        QaTask::Nlvr2 => nlvr2::read(questions, policy)?,
    })
}

/// Keeps the examples whose images are all among the first `limit` images named (in the
/// file's order): `--max-train-images` / `--max-eval-images` for named images.
fn within_first_images(examples: Vec<QaExample>, limit: Option<usize>) -> Vec<QaExample> {
    let Some(limit) = limit else {
        return examples;
    };
    let mut seen: HashMap<ImageKey, usize> = HashMap::new();
    examples
        .into_iter()
        .filter(|example| {
            example.images.iter().all(|image| {
                let next = seen.len();
                *seen.entry(image.clone()).or_insert(next) < limit
            })
        })
        .collect()
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
    let files = task_files(config, paths, policy)?;
    let task = config.task;
    let [train_files, val_files] = &files.files;
    let (train, val) = (
        read_split(task, train_files, policy)?,
        read_split(task, val_files, policy)?,
    );

    // The tokenizer must know the questions' words as well as the captions'. prepare_data
    // reuses a tokenizer.json already in the run directory, so it is trained and saved first.
    let saved = paths.out_dir.join("tokenizer.json");
    if !saved.exists() && data.tokenizer.is_none() {
        let texts: Vec<&str> = files
            .captions
            .iter()
            .map(String::as_str)
            .chain(train.examples.iter().map(|e| e.question.as_str()))
            .collect();
        TextTokenizer::train_wordpiece(texts.into_iter(), data.vocab_size)?.save(&saved)?;
    }
    let prepared = prepare_data(data, paths, show_progress)?;
    let mut skipped = SkipReport::default();
    skipped.merge(train.skipped);
    skipped.merge(val.skipped);
    let (train, val) = (train.examples, val.examples);
    let (train, val, named_caches, ids) = if task == QaTask::Vqa {
        let (train, val) = keep_coco_questions(
            [train, val],
            [&train_files.0, &val_files.0],
            &prepared,
            data.max_train_images.is_some() || data.max_eval_images.is_some(),
            policy,
            &mut skipped,
        )?;
        (train, val, None, None)
    } else {
        let folder = ImageFolder::scan(&files.image_dirs)?;
        let mut caches = Vec::new();
        let mut ids = HashMap::new();
        let mut kept = Vec::new();
        for (split, examples, path, limit) in [
            (
                CocoSplit::Train2014,
                train,
                &train_files.0,
                data.max_train_images,
            ),
            (CocoSplit::Val2014, val, &val_files.0, data.max_eval_images),
        ] {
            let checked = QaSplit {
                examples: within_first_images(examples, limit),
                skipped: SkipReport::default(),
            }
            .check_images(
                path,
                &|image| matches!(image, ImageKey::Named(name) if folder.contains(name)),
                policy,
            )?;
            skipped.merge(checked.skipped);
            let (dataset, split_ids) = folder.dataset_of(split, &checked.examples, path);
            let (cache, unreadable) = ImageCache::open_or_build(
                &dataset,
                data.image_size,
                &paths.cache_dir,
                policy,
                show_progress,
            )?;
            skipped.merge(unreadable);
            // Questions about images that could not be decoded go with them (--skip-bad).
            let examples: Vec<QaExample> = checked
                .examples
                .into_iter()
                .filter(|e| {
                    e.images.iter().all(|image| match image {
                        ImageKey::Named(name) => {
                            split_ids.get(name).is_some_and(|&id| cache.contains(id))
                        }
                        ImageKey::Coco(_) => false,
                    })
                })
                .collect();
            ids.insert(split, split_ids);
            caches.push(cache);
            kept.push(examples);
        }
        let [train, val]: [Vec<QaExample>; 2] = kept.try_into().expect("two splits");
        let caches: [ImageCache; 2] = caches
            .try_into()
            .unwrap_or_else(|_| unreachable!("two splits"));
        (train, val, Some(caches), Some(ids))
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
    let items =
        |examples: Vec<QaExample>, split: CocoSplit| -> Result<Vec<QaItem>, ClassifyError> {
            examples
                .into_iter()
                .map(|example| {
                    let images = example
                        .images
                        .iter()
                        .map(|image| match (image, &ids) {
                            (ImageKey::Coco(id), _) => *id,
                            (ImageKey::Named(name), Some(ids)) => ids[&split][name],
                            (ImageKey::Named(_), None) => {
                                unreachable!("VQA v2 questions are about COCO images")
                            }
                        })
                        .collect();
                    Ok(QaItem {
                        images,
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
    let (train, val) = (
        items(train, CocoSplit::Train2014)?,
        items(val, CocoSplit::Val2014)?,
    );
    Ok(QaData {
        task,
        prepared,
        vocabulary,
        train,
        val,
        skipped,
        files: [train_files.0.clone(), val_files.0.clone()],
        named_caches,
    })
}

/// VQA v2's questions whose COCO image the run's caches hold. Without an image limit a
/// question about an image that is not there is a bad entry; with one (--max-train-images),
/// questions about the images left out just go with them.
fn keep_coco_questions(
    [train, val]: [Vec<QaExample>; 2],
    paths: [&Path; 2],
    prepared: &PreparedData,
    limited: bool,
    policy: BadEntryPolicy,
    skipped: &mut SkipReport,
) -> Result<(Vec<QaExample>, Vec<QaExample>), ClassifyError> {
    let mut keep = |examples: Vec<QaExample>, path: &Path, cache: &ImageCache| {
        let known = |image: &ImageKey| matches!(image, ImageKey::Coco(id) if cache.contains(*id));
        if limited {
            return Ok(examples
                .into_iter()
                .filter(|e| e.images.iter().all(known))
                .collect());
        }
        let checked = QaSplit {
            examples,
            skipped: SkipReport::default(),
        }
        .check_images(path, &known, policy)?;
        skipped.merge(checked.skipped);
        Ok::<_, ClassifyError>(checked.examples)
    };
    Ok((
        keep(train, paths[0], &prepared.train.cache)?,
        keep(val, paths[1], &prepared.val.cache)?,
    ))
}
