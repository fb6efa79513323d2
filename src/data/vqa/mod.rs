//! Question answering about images: VQA v2, GQA and NLVR2 in their official formats, read as
//! the official tools read them, the answer vocabulary and soft targets models train on, and
//! VQA accuracy as the official evaluation script computes it ([`answers`]).
//!
//! Every format becomes a list of [`QaExample`]s: the images a question is about, its text, the
//! human answers, and the question and answer types the per-type tables group by.

pub mod answers;
pub mod gqa;
pub mod image_folder;
pub mod nlvr2;
pub mod synthetic;
pub mod synthetic_tasks;
pub mod vocabulary;
pub mod vqa_v2;

use std::path::Path;

pub use answers::{normalise_prediction, soft_target, vqa_accuracy};
pub use vocabulary::{AnswerVocabulary, SoftTargets};

use super::error::{BadEntryPolicy, DataError, SkipReport};

/// Which task a file set is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum QaTask {
    /// VQA v2: one COCO image, ten human answers, scored with VQA accuracy.
    Vqa,
    /// GQA balanced questions: one Visual Genome image, one answer, exact-match accuracy.
    Gqa,
    /// NLVR2: two images and a statement, true or false.
    Nlvr2,
}

impl QaTask {
    pub fn name(self) -> &'static str {
        match self {
            QaTask::Vqa => "vqa",
            QaTask::Gqa => "gqa",
            QaTask::Nlvr2 => "nlvr2",
        }
    }

    /// Images each question is about.
    pub fn images_per_question(self) -> usize {
        match self {
            QaTask::Nlvr2 => 2,
            QaTask::Vqa | QaTask::Gqa => 1,
        }
    }

    /// What the score is called in tables.
    pub fn metric(self) -> &'static str {
        match self {
            QaTask::Vqa => "VQA accuracy",
            QaTask::Gqa | QaTask::Nlvr2 => "accuracy",
        }
    }

    /// The score of a prediction against the normalised human answers, in [0, 1]: VQA
    /// accuracy for VQA v2; for GQA and NLVR2 (one answer each), 1 when the normalised
    /// prediction is that answer, as their evaluation scripts count exact matches.
    pub fn score(self, prediction: &str, humans: &[String]) -> f64 {
        match self {
            QaTask::Vqa => vqa_accuracy(prediction, humans),
            QaTask::Gqa | QaTask::Nlvr2 => {
                let prediction = normalise_prediction(prediction);
                f64::from(u8::from(humans.first() == Some(&prediction)))
            }
        }
    }
}

/// The image a question is about: a COCO image id (VQA v2) or an image named in the task's
/// files (GQA's `imageId`, NLVR2's `…-img0` / `…-img1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageKey {
    Coco(u64),
    Named(String),
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageKey::Coco(id) => write!(f, "COCO image {id}"),
            ImageKey::Named(name) => write!(f, "image {name}"),
        }
    }
}

/// One question about one or two images.
#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    /// The official question id, as the submission format writes it (VQA's are integers).
    pub question_id: String,
    pub images: Vec<ImageKey>,
    pub question: String,
    /// The human answers, as the file gives them (ten for VQA v2, one for GQA and NLVR2);
    /// empty for a test split without annotations.
    pub answers: Vec<String>,
    /// VQA's `question_type` ("how many", "is there a", …), GQA's semantic type, NLVR2's "nlvr2".
    pub question_type: String,
    /// VQA's `answer_type` ("yes/no", "number", "other"); GQA's structural type; "yes/no" for NLVR2.
    pub answer_type: String,
}

/// A task's split: its examples and the entries left out under `--skip-bad`.
#[derive(Debug, Default)]
pub struct QaSplit {
    pub examples: Vec<QaExample>,
    pub skipped: SkipReport,
}

impl QaSplit {
    /// Checks that every question's images are among `known` (the split's images on disk);
    /// a question with a missing image is an error naming it, or skipped under the policy.
    pub fn check_images(
        mut self,
        path: &Path,
        known: &dyn Fn(&ImageKey) -> bool,
        policy: BadEntryPolicy,
    ) -> Result<Self, DataError> {
        let mut kept = Vec::with_capacity(self.examples.len());
        for example in std::mem::take(&mut self.examples) {
            match example.images.iter().find(|image| !known(image)) {
                None => kept.push(example),
                Some(missing) => self.skipped.handle(
                    policy,
                    bad_question(
                        path,
                        &example.question_id,
                        format!("its {missing} is not in the split's images"),
                    ),
                )?,
            }
        }
        self.examples = kept;
        Ok(self)
    }
}

pub(crate) fn bad_question(path: &Path, question_id: &str, message: String) -> DataError {
    DataError::BadQuestion {
        path: path.to_path_buf(),
        question_id: question_id.to_string(),
        message,
    }
}
