//! GQA's balanced questions, `{split}_balanced_questions.json`: an object keyed by question id,
//! each with `imageId`, `question`, one `answer` (absent for test) and `types`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{bad_question, ImageKey, QaExample, QaSplit};
use crate::data::coco::read_json;
use crate::data::error::{BadEntryPolicy, DataError, SkipReport};

/// The questions file's name for a split (`train`, `val`, `testdev`, …).
pub fn questions_file(split: &str) -> String {
    format!("{split}_balanced_questions.json")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqaQuestion {
    image_id: String,
    question: String,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    types: GqaTypes,
}

#[derive(Debug, Default, Deserialize)]
struct GqaTypes {
    #[serde(default)]
    structural: String,
    #[serde(default)]
    semantic: String,
}

/// Reads a GQA questions file. Questions are ordered by id, so runs are repeatable. An empty
/// question or an empty answer is an error naming the file and the question, or skipped.
pub fn read(path: &Path, policy: BadEntryPolicy) -> Result<QaSplit, DataError> {
    let questions: BTreeMap<String, GqaQuestion> = read_json(path)?;
    let mut skipped = SkipReport::default();
    let mut examples = Vec::with_capacity(questions.len());
    for (id, q) in questions {
        let problem = if q.question.trim().is_empty() {
            Some("an empty question")
        } else if q.image_id.trim().is_empty() {
            Some("an empty imageId")
        } else if q.answer.as_deref().is_some_and(|a| a.trim().is_empty()) {
            Some("an empty answer")
        } else {
            None
        };
        if let Some(message) = problem {
            skipped.handle(policy, bad_question(path, &id, message.to_string()))?;
            continue;
        }
        examples.push(QaExample {
            question_id: id,
            images: vec![ImageKey::Named(q.image_id)],
            question: q.question,
            answers: q.answer.into_iter().collect(),
            question_type: q.types.semantic,
            answer_type: q.types.structural,
        });
    }
    Ok(QaSplit { examples, skipped })
}
