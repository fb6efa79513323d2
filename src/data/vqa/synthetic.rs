//! The built-in question set: questions about the synthetic scenes whose answers need the
//! picture, in VQA v2's file layout (ten human answers each, with a little noise), in English
//! and in Korean. How they are drawn, and why the question alone cannot answer them, is in
//! `datasets/synthetic.md`.
//!
//! Each image gets one question of each type, planned language-free from the image's objects
//! (their glyphs and boxes in `instances_<split>.json`) and then written in each language, so
//! the Korean set asks and answers exactly what the English one does:
//! - **presence**: "is there a cat?", the named category present or absent with equal odds;
//! - **count**: all objects (2–4), or the objects of one colour or one shape, the count drawn
//!   uniformly from those the image allows before a colour or shape with that count is chosen;
//! - **color** of the one object of a shape, **shape** of the one object of a colour (every
//!   shape comes in two colours and every colour in two shapes, so the words leave two answers);
//! - **position**: "is the cat to the left of the cup?" / "above", between two objects in
//!   different columns (rows), the pair's order drawn at random, so yes and no are even.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::answers::normalise_prediction;
use super::vqa_v2::{self, Annotation, AnnotationsFile, HumanAnswer, Question, QuestionsFile};
use crate::data::coco::{CocoDataset, CocoSplit};
use crate::data::error::DataError;
use crate::data::glyphs::{Shape, GLYPHS};
use crate::data::synthetic_captions::{particle, CaptionLanguage};

/// Humans per question, as in VQA v2.
pub const ANSWERS_PER_QUESTION: usize = 10;
/// The chance that one human gives a wrong answer (a neighbouring count, the other of yes and
/// no, another colour or shape).
pub const ANSWER_NOISE: f64 = 0.08;

pub(super) const COLORS: [[u8; 3]; 6] = [
    [220, 40, 40],
    [40, 190, 60],
    [40, 80, 230],
    [235, 210, 40],
    [210, 50, 200],
    [40, 200, 210],
];
pub(super) const COLOR_WORDS: [&str; 6] = ["red", "green", "blue", "yellow", "magenta", "cyan"];
pub(super) const COLOR_WORDS_KO: [&str; 6] =
    ["빨간색", "초록색", "파란색", "노란색", "자홍색", "청록색"];
pub(super) const SHAPES: [Shape; 6] = [
    Shape::Disk,
    Shape::Square,
    Shape::Triangle,
    Shape::Ring,
    Shape::Cross,
    Shape::Diamond,
];
pub(super) const SHAPE_WORDS: [&str; 6] =
    ["circle", "square", "triangle", "ring", "cross", "diamond"];
pub(super) const SHAPE_WORDS_KO: [&str; 6] = ["원", "사각형", "삼각형", "고리", "십자", "마름모"];
const NUMBER_WORDS: [&str; 6] = ["zero", "one", "two", "three", "four", "five"];

/// The file names of a split's question set in a language: VQA v2's for English, with the
/// language code before `.json` otherwise (as the synthetic captions are named).
pub fn question_set_paths(
    root: &Path,
    split: CocoSplit,
    language: CaptionLanguage,
) -> [PathBuf; 2] {
    let dir = root.join("vqa");
    [
        vqa_v2::questions_file(split.name()),
        vqa_v2::annotations_file(split.name()),
    ]
    .map(|name| match language {
        CaptionLanguage::English => dir.join(name),
        other => dir.join(name.replace(".json", &format!(".{}.json", other.code()))),
    })
}

/// One object of a scene, as the questions see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Object {
    pub glyph: usize,
    pub color: usize,
    pub shape: usize,
    pub centre: [f32; 2],
}

/// What a question asks, before it is put into words.
#[derive(Debug, Clone, Copy)]
/// Categories are indices into [`GLYPHS`], colours into [`COLORS`], shapes into [`SHAPES`].
enum Query {
    Presence(usize),
    CountAll,
    CountColor(usize),
    CountShape(usize),
    ColorOf(usize),
    ShapeOf(usize),
    LeftOf(usize, usize),
    Above(usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Yes(bool),
    Number(usize),
    Color(usize),
    Shape(usize),
}

impl Query {
    fn question_type(self) -> &'static str {
        match self {
            Query::Presence(_) => "presence",
            Query::CountAll | Query::CountColor(_) | Query::CountShape(_) => "count",
            Query::ColorOf(_) => "color",
            Query::ShapeOf(_) => "shape",
            Query::LeftOf(..) | Query::Above(..) => "position",
        }
    }

    fn answer_type(self) -> &'static str {
        match self {
            Query::Presence(_) | Query::LeftOf(..) | Query::Above(..) => "yes/no",
            Query::CountAll | Query::CountColor(_) | Query::CountShape(_) => "number",
            Query::ColorOf(_) | Query::ShapeOf(_) => "other",
        }
    }

    fn write(self, language: CaptionLanguage) -> String {
        let name = |glyph: usize| match language {
            CaptionLanguage::English => GLYPHS[glyph].words[0],
            CaptionLanguage::Korean => GLYPHS[glyph].korean[0],
        };
        match language {
            CaptionLanguage::English => match self {
                Query::Presence(g) => {
                    let article = if name(g).starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    format!("Is there {article} {} in the picture?", name(g))
                }
                Query::CountAll => "How many objects are there?".into(),
                Query::CountColor(c) => format!("How many {} objects are there?", COLOR_WORDS[c]),
                Query::CountShape(s) => format!("How many {}s are there?", SHAPE_WORDS[s]),
                Query::ColorOf(s) => format!("What color is the {}?", SHAPE_WORDS[s]),
                Query::ShapeOf(c) => format!("What shape is the {} object?", COLOR_WORDS[c]),
                Query::LeftOf(a, b) => {
                    format!("Is the {} to the left of the {}?", name(a), name(b))
                }
                Query::Above(a, b) => format!("Is the {} above the {}?", name(a), name(b)),
            },
            CaptionLanguage::Korean => {
                let subject = |word: &str| format!("{word}{}", particle(word, "이", "가"));
                let topic = |word: &str| format!("{word}{}", particle(word, "은", "는"));
                match self {
                    Query::Presence(g) => format!("그림에 {} 있나요?", subject(name(g))),
                    Query::CountAll => "물체가 몇 개 있나요?".into(),
                    Query::CountColor(c) => format!("{} 물체는 몇 개인가요?", COLOR_WORDS_KO[c]),
                    Query::CountShape(s) => format!("{}{} 몇 개인가요?", SHAPE_WORDS_KO[s], {
                        particle(SHAPE_WORDS_KO[s], "은", "는")
                    }),
                    Query::ColorOf(s) => format!("{} 무슨 색인가요?", topic(SHAPE_WORDS_KO[s])),
                    Query::ShapeOf(c) => {
                        format!("{} 물체는 어떤 모양인가요?", COLOR_WORDS_KO[c])
                    }
                    Query::LeftOf(a, b) => {
                        format!("{} {}의 왼쪽에 있나요?", subject(name(a)), name(b))
                    }
                    Query::Above(a, b) => {
                        format!("{} {}보다 위에 있나요?", subject(name(a)), name(b))
                    }
                }
            }
        }
    }
}

impl Answer {
    /// The answer as a human writes it: `surface` varies the form (capitals, a full stop,
    /// numbers in words) the way annotators do; normalisation undoes it.
    fn write(self, language: CaptionLanguage, surface: u32) -> String {
        let korean = language == CaptionLanguage::Korean;
        let word = match self {
            Answer::Yes(true) if korean => "예".to_string(),
            Answer::Yes(false) if korean => "아니요".to_string(),
            Answer::Yes(yes) => if yes { "yes" } else { "no" }.to_string(),
            Answer::Number(n) if !korean && surface % 3 == 1 => NUMBER_WORDS[n].to_string(),
            Answer::Number(n) => n.to_string(),
            Answer::Color(c) if korean => COLOR_WORDS_KO[c].to_string(),
            Answer::Color(c) => COLOR_WORDS[c].to_string(),
            Answer::Shape(s) if korean => SHAPE_WORDS_KO[s].to_string(),
            Answer::Shape(s) => SHAPE_WORDS[s].to_string(),
        };
        match surface {
            5 if !korean => capitalised(&word),
            6 => format!("{word}."),
            _ => word,
        }
    }

    /// A wrong answer of the same kind.
    fn mistaken(self, rng: &mut StdRng) -> Answer {
        let other = |rng: &mut StdRng, of: usize, n: usize| (of + rng.random_range(1..n)) % n;
        match self {
            Answer::Yes(yes) => Answer::Yes(!yes),
            Answer::Number(0) => Answer::Number(1),
            Answer::Number(n) => Answer::Number(if rng.random_bool(0.5) { n - 1 } else { n + 1 }),
            Answer::Color(c) => Answer::Color(other(rng, c, COLORS.len())),
            Answer::Shape(s) => Answer::Shape(other(rng, s, SHAPES.len())),
        }
    }
}

pub(super) fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn answer(objects: &[Object], query: Query) -> Answer {
    let count = |f: &dyn Fn(&Object) -> bool| objects.iter().filter(|o| f(o)).count();
    let only = |f: &dyn Fn(&Object) -> bool| *objects.iter().find(|o| f(o)).expect("one object");
    let glyph = |g: usize| only(&|o| o.glyph == g);
    match query {
        Query::Presence(g) => Answer::Yes(count(&|o| o.glyph == g) > 0),
        Query::CountAll => Answer::Number(objects.len()),
        Query::CountColor(c) => Answer::Number(count(&|o| o.color == c)),
        Query::CountShape(s) => Answer::Number(count(&|o| o.shape == s)),
        Query::ColorOf(s) => Answer::Color(only(&|o| o.shape == s).color),
        Query::ShapeOf(c) => Answer::Shape(only(&|o| o.color == c).shape),
        Query::LeftOf(a, b) => Answer::Yes(glyph(a).centre[0] < glyph(b).centre[0]),
        Query::Above(a, b) => Answer::Yes(glyph(a).centre[1] < glyph(b).centre[1]),
    }
}

/// The questions asked about one image.
fn plan_questions(rng: &mut StdRng, objects: &[Object]) -> Vec<Query> {
    let mut queries = Vec::new();
    // Presence: present or absent with equal odds.
    let present: Vec<usize> = objects.iter().map(|o| o.glyph).collect();
    let absent: Vec<usize> = (0..GLYPHS.len()).filter(|g| !present.contains(g)).collect();
    let pool = if rng.random_bool(0.5) {
        &present
    } else {
        &absent
    };
    queries.push(Query::Presence(
        *pool.choose(rng).expect("objects and absent glyphs"),
    ));

    // Count: the count first, then an attribute with it, so each count is about as likely.
    let counts = |attribute: &dyn Fn(&Object) -> usize, n: usize| -> Vec<usize> {
        (0..n)
            .map(|v| objects.iter().filter(|o| attribute(o) == v).count())
            .collect()
    };
    let by_balanced_count = |rng: &mut StdRng, per_value: Vec<usize>| -> usize {
        let mut achievable: Vec<usize> = per_value.clone();
        achievable.sort_unstable();
        achievable.dedup();
        let wanted = *achievable.choose(rng).expect("six values");
        let values: Vec<usize> = (0..per_value.len())
            .filter(|&v| per_value[v] == wanted)
            .collect();
        *values.choose(rng).expect("a value with the count")
    };
    queries.push(match rng.random_range(0..3) {
        0 => Query::CountAll,
        1 => Query::CountColor(by_balanced_count(rng, counts(&|o| o.color, COLORS.len()))),
        _ => Query::CountShape(by_balanced_count(rng, counts(&|o| o.shape, SHAPES.len()))),
    });

    // The colour of a unique shape, the shape of a unique colour.
    let unique = |per_value: Vec<usize>| -> Vec<usize> {
        (0..per_value.len())
            .filter(|&v| per_value[v] == 1)
            .collect()
    };
    if let Some(&s) = unique(counts(&|o| o.shape, SHAPES.len())).choose(rng) {
        queries.push(Query::ColorOf(s));
    }
    if let Some(&c) = unique(counts(&|o| o.color, COLORS.len())).choose(rng) {
        queries.push(Query::ShapeOf(c));
    }

    // Position: a pair in different columns (rows) of the generator's 4x4 grid, in random
    // order. Each object stays inside its cell, so the answer is never a judgement call.
    let above = rng.random_bool(0.5);
    let axis = usize::from(above);
    let cell = |o: &Object| (o.centre[axis] * 4.0).floor() as i32;
    let pairs: Vec<(usize, usize)> = objects
        .iter()
        .flat_map(|a| objects.iter().map(move |b| (a, b)))
        .filter(|(a, b)| cell(a) != cell(b))
        .map(|(a, b)| (a.glyph, b.glyph))
        .collect();
    if let Some(&(a, b)) = pairs.choose(rng) {
        queries.push(if above {
            Query::Above(a, b)
        } else {
            Query::LeftOf(a, b)
        });
    }
    queries
}

/// The objects of an image, from its instances: glyph, colour, shape and the box centre as a
/// fraction of the image side.
pub(super) fn objects_of(
    dataset: &CocoDataset,
    image: &crate::data::coco::CocoImage,
) -> Vec<Object> {
    image
        .objects
        .iter()
        .filter_map(|object| {
            let category_id = dataset.categories[object.category].id;
            let glyph = GLYPHS
                .iter()
                .position(|g| u64::from(g.category_id) == category_id)?;
            let [x, y, w, h] = object.bbox;
            Some(Object {
                glyph,
                color: COLORS.iter().position(|c| *c == GLYPHS[glyph].color)?,
                shape: SHAPES.iter().position(|s| *s == GLYPHS[glyph].shape)?,
                centre: [
                    (x + w / 2.0) / image.width.max(1) as f32,
                    (y + h / 2.0) / image.height.max(1) as f32,
                ],
            })
        })
        .collect()
}

/// The question set of one split of the synthetic set, in every language, from `seed`: the
/// same questions and answers in each, as VQA v2's two files.
pub fn question_set(
    dataset: &CocoDataset,
    seed: u64,
) -> Vec<(CaptionLanguage, QuestionsFile, AnnotationsFile)> {
    let split_stream = match dataset.split {
        CocoSplit::Train2014 => 1,
        CocoSplit::Val2014 => 2,
    };
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5155_4553_0000 + split_stream));
    let mut files: Vec<(CaptionLanguage, QuestionsFile, AnnotationsFile)> = CaptionLanguage::ALL
        .iter()
        .map(|&language| {
            let subtype = dataset.split.name().to_string();
            (
                language,
                QuestionsFile {
                    data_subtype: subtype.clone(),
                    questions: Vec::new(),
                },
                AnnotationsFile {
                    data_subtype: subtype,
                    annotations: Vec::new(),
                },
            )
        })
        .collect();
    for image in &dataset.images {
        let objects = objects_of(dataset, image);
        if objects.is_empty() {
            continue;
        }
        for (k, query) in plan_questions(&mut rng, &objects).into_iter().enumerate() {
            let truth = answer(&objects, query);
            let humans: Vec<(Answer, u32)> = (0..ANSWERS_PER_QUESTION)
                .map(|_| {
                    let given = if rng.random_bool(ANSWER_NOISE) {
                        truth.mistaken(&mut rng)
                    } else {
                        truth
                    };
                    (given, rng.random_range(0..10))
                })
                .collect();
            let question_id = image.id * 10 + k as u64;
            for (language, questions, annotations) in &mut files {
                questions.questions.push(Question {
                    image_id: image.id,
                    question: query.write(*language),
                    question_id,
                });
                let answers: Vec<HumanAnswer> = humans
                    .iter()
                    .enumerate()
                    .map(|(i, (given, surface))| HumanAnswer {
                        answer: given.write(*language, *surface),
                        answer_confidence: "yes".into(),
                        answer_id: i as u32 + 1,
                    })
                    .collect();
                annotations.annotations.push(Annotation {
                    question_id,
                    image_id: image.id,
                    question_type: query.question_type().into(),
                    answer_type: query.answer_type().into(),
                    multiple_choice_answer: most_common(&answers),
                    answers,
                });
            }
        }
    }
    files
}

/// The most common normalised answer (ties to the one that sorts first), as VQA v2's
/// `multiple_choice_answer` holds it.
fn most_common(answers: &[HumanAnswer]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for answer in answers {
        *counts
            .entry(normalise_prediction(&answer.answer))
            .or_default() += 1;
    }
    let best = counts.values().copied().max().unwrap_or(0);
    counts
        .into_iter()
        .find(|(_, count)| *count == best)
        .map(|(answer, _)| answer)
        .unwrap_or_default()
}

/// Makes sure the synthetic set at `root` has its question set (both splits, every language),
/// writing it from the instances if it is missing, each file through a temporary one so an
/// interrupted run leaves no half file. Returns the paths of `language`'s files, train then val.
pub fn ensure_question_set(
    root: &Path,
    train: &CocoDataset,
    val: &CocoDataset,
    seed: u64,
    language: CaptionLanguage,
) -> Result<[[PathBuf; 2]; 2], DataError> {
    for dataset in [train, val] {
        let complete = CaptionLanguage::ALL.iter().all(|&language| {
            question_set_paths(root, dataset.split, language)
                .iter()
                .all(|path| path.is_file())
        });
        if complete {
            continue;
        }
        for (language, questions, annotations) in question_set(dataset, seed) {
            let [questions_path, annotations_path] =
                question_set_paths(root, dataset.split, language);
            write_json(&questions_path, &questions)?;
            write_json(&annotations_path, &annotations)?;
        }
    }
    Ok([train.split, val.split].map(|split| question_set_paths(root, split, language)))
}

pub(super) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), DataError> {
    let write = |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write)?;
    }
    let tmp = path.with_extension("json.partial");
    std::fs::write(
        &tmp,
        serde_json::to_vec(value).expect("question files serialise"),
    )
    .map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}
