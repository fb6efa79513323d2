//! The answer vocabulary a classifier head predicts over, and each question's soft targets.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::answers::{normalise_prediction, HUMANS_FOR_FULL_CREDIT};
use super::QaExample;

/// The answers a model can give: the normalised answers that are the most common human answer
/// of at least `min_count` training questions (as the bottom-up-attention baseline and LXMERT
/// build theirs), most frequent first.
/// It serialises as the list of its answers, in head order.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerVocabulary {
    answers: Vec<String>,
    index: HashMap<String, usize>,
}

/// A question's training target: for each vocabulary answer the humans gave, its score
/// min(1, humans who gave it / min(3, humans)), so one-answer tasks (GQA, NLVR2) get 1.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftTargets {
    pub indices: Vec<usize>,
    pub scores: Vec<f32>,
}

impl AnswerVocabulary {
    /// Builds the vocabulary from training questions. Ties in frequency go to the answer that
    /// sorts first, so the vocabulary is the same on every run.
    pub fn from_training(examples: &[QaExample], min_count: usize) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for example in examples {
            if let Some(answer) = most_common_answer(example) {
                *counts.entry(answer).or_default() += 1;
            }
        }
        let mut answers: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, count)| *count >= min_count.max(1))
            .collect();
        answers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self::from_answers(answers.into_iter().map(|(answer, _)| answer).collect())
    }

    /// A vocabulary from its answers in order (as a checkpoint stores them).
    pub fn from_answers(answers: Vec<String>) -> Self {
        let index = answers
            .iter()
            .enumerate()
            .map(|(i, answer)| (answer.clone(), i))
            .collect();
        Self { answers, index }
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    pub fn answers(&self) -> &[String] {
        &self.answers
    }

    /// The answer at a head's output index.
    pub fn answer(&self, index: usize) -> &str {
        &self.answers[index]
    }

    /// The index of a (normalised) answer.
    pub fn index_of(&self, answer: &str) -> Option<usize> {
        self.index.get(answer).copied()
    }

    /// A question's soft targets over this vocabulary (empty when none of its answers is in it).
    pub fn soft_targets(&self, example: &QaExample) -> SoftTargets {
        let humans = example.answers.len();
        let full_credit = HUMANS_FOR_FULL_CREDIT.min(humans as f64);
        let mut indices = Vec::new();
        let mut scores = Vec::new();
        for (answer, count) in answer_counts(example) {
            if let Some(index) = self.index_of(&answer) {
                indices.push(index);
                scores.push((count as f64 / full_credit).min(1.0) as f32);
            }
        }
        SoftTargets { indices, scores }
    }

    /// The share of questions whose most common answer the vocabulary holds: the accuracy an
    /// oracle over this vocabulary could reach on exact-match tasks.
    pub fn coverage(&self, examples: &[QaExample]) -> f64 {
        let covered = examples
            .iter()
            .filter(|e| most_common_answer(e).is_some_and(|a| self.index.contains_key(&a)))
            .count();
        covered as f64 / examples.len().max(1) as f64
    }
}

/// The question's human answers, normalised as predictions are, with how many gave each,
/// in answer order.
fn answer_counts(example: &QaExample) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in &example.answers {
        *counts.entry(normalise_prediction(answer)).or_default() += 1;
    }
    counts.remove("");
    counts
}

fn most_common_answer(example: &QaExample) -> Option<String> {
    answer_counts(example)
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(answer, _)| answer)
}

impl Serialize for AnswerVocabulary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.answers.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AnswerVocabulary {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(deserializer).map(Self::from_answers)
    }
}
