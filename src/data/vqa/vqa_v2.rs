//! VQA v2's files: `v2_OpenEnded_mscoco_{split}_questions.json` and
//! `v2_mscoco_{split}_annotations.json` (ten human answers per question; none for test).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{bad_question, ImageKey, QaExample, QaSplit};
use crate::data::coco::read_json;
use crate::data::error::{BadEntryPolicy, DataError, SkipReport};

/// The questions file's name for a split (`train2014`, `val2014`, `test2015`, …).
pub fn questions_file(split: &str) -> String {
    format!("v2_OpenEnded_mscoco_{split}_questions.json")
}

/// The annotations file's name for a split.
pub fn annotations_file(split: &str) -> String {
    format!("v2_mscoco_{split}_annotations.json")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuestionsFile {
    #[serde(default)]
    pub data_subtype: String,
    pub questions: Vec<Question>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Question {
    pub image_id: u64,
    pub question: String,
    pub question_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnnotationsFile {
    #[serde(default)]
    pub data_subtype: String,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Annotation {
    pub question_id: u64,
    pub image_id: u64,
    pub question_type: String,
    pub answer_type: String,
    pub multiple_choice_answer: String,
    pub answers: Vec<HumanAnswer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HumanAnswer {
    pub answer: String,
    #[serde(default)]
    pub answer_confidence: String,
    #[serde(default)]
    pub answer_id: u32,
}

/// Reads a split's questions and, when given, its annotations, and joins them by question id.
/// Bad entries (an annotation without a question, a question without an annotation, an empty
/// answer list, an empty question, a repeated id, an annotation whose image differs from its
/// question's) are errors naming the file and the question, or skipped under the policy.
pub fn read(
    questions_path: &Path,
    annotations_path: Option<&Path>,
    policy: BadEntryPolicy,
) -> Result<QaSplit, DataError> {
    let questions: QuestionsFile = read_json(questions_path)?;
    let annotations: Option<(PathBuf, AnnotationsFile)> = match annotations_path {
        Some(path) => Some((path.to_path_buf(), read_json(path)?)),
        None => None,
    };
    let mut skipped = SkipReport::default();

    let mut by_id: HashMap<u64, &Annotation> = HashMap::new();
    if let Some((path, file)) = &annotations {
        let asked: std::collections::HashSet<u64> =
            questions.questions.iter().map(|q| q.question_id).collect();
        for annotation in &file.annotations {
            let id = annotation.question_id.to_string();
            let problem = if !asked.contains(&annotation.question_id) {
                Some(format!(
                    "an annotation without a question in {}",
                    questions_path.display()
                ))
            } else if annotation.answers.is_empty() {
                Some("an empty answer list".to_string())
            } else if by_id.contains_key(&annotation.question_id) {
                Some("annotated twice".to_string())
            } else {
                None
            };
            match problem {
                Some(message) => skipped.handle(policy, bad_question(path, &id, message))?,
                None => {
                    by_id.insert(annotation.question_id, annotation);
                }
            }
        }
    }

    let mut seen = std::collections::HashSet::new();
    let mut examples = Vec::with_capacity(questions.questions.len());
    for question in &questions.questions {
        let id = question.question_id.to_string();
        let annotation = by_id.get(&question.question_id);
        let problem = if !seen.insert(question.question_id) {
            Some((questions_path.to_path_buf(), "listed twice".to_string()))
        } else if question.question.trim().is_empty() {
            Some((
                questions_path.to_path_buf(),
                "an empty question".to_string(),
            ))
        } else {
            match (&annotations, annotation) {
                (Some((path, _)), None) => Some((
                    path.clone(),
                    "no annotation (or its annotation was bad)".to_string(),
                )),
                (Some((path, _)), Some(a)) if a.image_id != question.image_id => Some((
                    path.clone(),
                    format!(
                        "annotated for image {} but asked about image {}",
                        a.image_id, question.image_id
                    ),
                )),
                _ => None,
            }
        };
        if let Some((path, message)) = problem {
            skipped.handle(policy, bad_question(&path, &id, message))?;
            continue;
        }
        let (answers, question_type, answer_type) = match annotation {
            Some(a) => (
                a.answers.iter().map(|h| h.answer.clone()).collect(),
                a.question_type.clone(),
                a.answer_type.clone(),
            ),
            None => (Vec::new(), String::new(), String::new()),
        };
        examples.push(QaExample {
            question_id: id,
            images: vec![ImageKey::Coco(question.image_id)],
            question: question.question.clone(),
            answers,
            question_type,
            answer_type,
        });
    }
    Ok(QaSplit { examples, skipped })
}
