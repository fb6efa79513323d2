//! The built-in question set in GQA's and NLVR2's layouts, so `finetune-vqa --task gqa|nlvr2`
//! runs offline too. How they are drawn is in `datasets/synthetic.md`.
//!
//! - **GQA**: the VQA questions of [`question_set`](super::synthetic::question_set), each with
//!   one answer (the annotators' most common), in `gqa/{train,val}_balanced_questions.json`;
//!   `imageId` is the image file's stem, and the images are the synthetic set's own.
//! - **NLVR2**: two scenes of a split and a statement about the pair, true or false with equal
//!   odds where the pair allows, in `nlvr2/{train,dev}.json`; the images are linked (or
//!   copied) into `nlvr2/images/{train,dev}/` under NLVR2's names.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::gqa;
use super::synthetic::{
    objects_of, question_set, write_json, Object, COLOR_WORDS, COLOR_WORDS_KO, SHAPE_WORDS,
    SHAPE_WORDS_KO,
};
use crate::data::coco::{CocoDataset, CocoSplit};
use crate::data::error::DataError;
use crate::data::glyphs::GLYPHS;
use crate::data::synthetic_captions::{particle, CaptionLanguage};

/// Statements per image pair, as NLVR2 writes several sentences about each pair.
pub const STATEMENTS_PER_PAIR: usize = 2;

/// A language's version of a file name: `.json` becomes `.{code}.json` except in English.
fn in_language(path: PathBuf, language: CaptionLanguage) -> PathBuf {
    match language {
        CaptionLanguage::English => path,
        other => {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .replace(".json", &format!(".{}.json", other.code()));
            path.with_file_name(name)
        }
    }
}

/// The split names the two tasks use for the synthetic set's train and val images.
fn gqa_split(split: CocoSplit) -> &'static str {
    match split {
        CocoSplit::Train2014 => "train",
        CocoSplit::Val2014 => "val",
    }
}

fn nlvr2_split(split: CocoSplit) -> &'static str {
    match split {
        CocoSplit::Train2014 => "train",
        CocoSplit::Val2014 => "dev",
    }
}

/// The GQA questions file of a split of the built-in set in a language.
pub fn gqa_path(root: &Path, split: CocoSplit, language: CaptionLanguage) -> PathBuf {
    in_language(
        root.join("gqa").join(gqa::questions_file(gqa_split(split))),
        language,
    )
}

/// The NLVR2 file of a split of the built-in set in a language.
pub fn nlvr2_path(root: &Path, split: CocoSplit, language: CaptionLanguage) -> PathBuf {
    in_language(
        root.join("nlvr2")
            .join(format!("{}.json", nlvr2_split(split))),
        language,
    )
}

/// Where the built-in NLVR2 set's images are linked.
pub fn nlvr2_images(root: &Path) -> PathBuf {
    root.join("nlvr2").join("images")
}

fn stem(file_name: &str) -> &str {
    Path::new(file_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(file_name)
}

/// Writes a task's files for each split whose files (in any language) are missing, and returns
/// `language`'s, train then val.
fn ensure_split_files(
    root: &Path,
    [train, val]: [&CocoDataset; 2],
    language: CaptionLanguage,
    path_of: fn(&Path, CocoSplit, CaptionLanguage) -> PathBuf,
    mut write_split: impl FnMut(&CocoDataset) -> Result<(), DataError>,
) -> Result<[PathBuf; 2], DataError> {
    for dataset in [train, val] {
        let complete = CaptionLanguage::ALL
            .iter()
            .all(|&l| path_of(root, dataset.split, l).is_file());
        if !complete {
            write_split(dataset)?;
        }
    }
    Ok([train.split, val.split].map(|split| path_of(root, split, language)))
}

/// Writes the built-in GQA files (both splits, every language) if they are missing; returns
/// `language`'s, train then val.
pub fn ensure_gqa_set(
    root: &Path,
    train: &CocoDataset,
    val: &CocoDataset,
    seed: u64,
    language: CaptionLanguage,
) -> Result<[PathBuf; 2], DataError> {
    ensure_split_files(root, [train, val], language, gqa_path, |dataset| {
        write_gqa_split(root, dataset, seed)
    })
}

fn write_gqa_split(root: &Path, dataset: &CocoDataset, seed: u64) -> Result<(), DataError> {
    let image_names: std::collections::HashMap<u64, &str> = dataset
        .images
        .iter()
        .map(|image| (image.id, stem(&image.file_name)))
        .collect();
    for (language, questions, annotations) in question_set(dataset, seed) {
        let mut file = serde_json::Map::new();
        for (question, annotation) in questions.questions.iter().zip(&annotations.annotations) {
            let structural = if annotation.answer_type == "yes/no" {
                "verify"
            } else {
                "query"
            };
            file.insert(
                question.question_id.to_string(),
                serde_json::json!({
                    "imageId": image_names[&question.image_id],
                    "question": question.question,
                    "answer": annotation.multiple_choice_answer,
                    "types": {
                        "structural": structural,
                        "semantic": annotation.question_type,
                    },
                }),
            );
        }
        write_json(&gqa_path(root, dataset.split, language), &file)?;
    }
    Ok(())
}

/// What a statement about a pair claims, before it is put into words. Colours index
/// [`COLOR_WORDS`], shapes [`SHAPE_WORDS`], categories [`GLYPHS`].
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// The left image has more objects of this shape than the right one.
    MoreShape(usize),
    /// Both images show an object of this colour.
    BothColor(usize),
    /// The two images hold this many objects together.
    Total(usize),
    /// The right image shows this category.
    RightHas(usize),
}

impl Claim {
    fn holds(self, left: &[Object], right: &[Object]) -> bool {
        let count = |objects: &[Object], f: &dyn Fn(&Object) -> bool| {
            objects.iter().filter(|o| f(o)).count()
        };
        match self {
            Claim::MoreShape(s) => count(left, &|o| o.shape == s) > count(right, &|o| o.shape == s),
            Claim::BothColor(c) => {
                count(left, &|o| o.color == c) > 0 && count(right, &|o| o.color == c) > 0
            }
            Claim::Total(n) => left.len() + right.len() == n,
            Claim::RightHas(g) => count(right, &|o| o.glyph == g) > 0,
        }
    }

    /// A claim of a random kind with random arguments.
    fn draw(rng: &mut StdRng, kind: usize, left: &[Object], right: &[Object]) -> Claim {
        match kind {
            0 => Claim::MoreShape(rng.random_range(0..SHAPE_WORDS.len())),
            1 => Claim::BothColor(rng.random_range(0..COLOR_WORDS.len())),
            2 => {
                let total = left.len() + right.len();
                Claim::Total(
                    *[total.saturating_sub(1), total, total + 1]
                        .choose(rng)
                        .expect("three"),
                )
            }
            _ => Claim::RightHas(rng.random_range(0..GLYPHS.len())),
        }
    }

    fn write(self, language: CaptionLanguage) -> String {
        match language {
            CaptionLanguage::English => match self {
                Claim::MoreShape(s) => format!(
                    "The left image has more {}s than the right image.",
                    SHAPE_WORDS[s]
                ),
                Claim::BothColor(c) => {
                    format!("Both images contain a {} object.", COLOR_WORDS[c])
                }
                Claim::Total(n) => format!("There are {n} objects in the two images together."),
                Claim::RightHas(g) => {
                    let name = GLYPHS[g].words[0];
                    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    format!("The right image contains {article} {name}.")
                }
            },
            CaptionLanguage::Korean => {
                let subject = |word: &str| format!("{word}{}", particle(word, "이", "가"));
                match self {
                    Claim::MoreShape(s) => format!(
                        "왼쪽 그림에 오른쪽 그림보다 {} 더 많다.",
                        subject(SHAPE_WORDS_KO[s])
                    ),
                    Claim::BothColor(c) => {
                        format!("두 그림 모두 {} 물체가 있다.", COLOR_WORDS_KO[c])
                    }
                    Claim::Total(n) => format!("두 그림에 물체가 모두 {n}개 있다."),
                    Claim::RightHas(g) => {
                        format!("오른쪽 그림에 {} 있다.", subject(GLYPHS[g].korean[0]))
                    }
                }
            }
        }
    }
}

/// Writes the built-in NLVR2 files (both splits, every language) and links their images, if
/// they are missing; returns `language`'s files, train then dev.
pub fn ensure_nlvr2_set(
    root: &Path,
    train: &CocoDataset,
    val: &CocoDataset,
    seed: u64,
    language: CaptionLanguage,
) -> Result<[PathBuf; 2], DataError> {
    ensure_split_files(root, [train, val], language, nlvr2_path, |dataset| {
        write_nlvr2_split(root, dataset, seed)
    })
}

fn write_nlvr2_split(root: &Path, dataset: &CocoDataset, seed: u64) -> Result<(), DataError> {
    let split = nlvr2_split(dataset.split);
    let split_stream = match dataset.split {
        CocoSplit::Train2014 => 1,
        CocoSplit::Val2014 => 2,
    };
    let mut rng = StdRng::seed_from_u64(seed ^ (0x4e4c_5652_0000 + split_stream));
    let scenes: Vec<(&crate::data::coco::CocoImage, Vec<Object>)> = dataset
        .images
        .iter()
        .map(|image| (image, objects_of(dataset, image)))
        .filter(|(_, objects)| !objects.is_empty())
        .collect();
    let image_dir = nlvr2_images(root).join(split);
    std::fs::create_dir_all(&image_dir).map_err(|source| DataError::Write {
        path: image_dir.clone(),
        source,
    })?;
    let mut lines: Vec<(CaptionLanguage, String)> = Vec::new();
    // Each scene is the left image of one pair, with another scene on the right.
    for (pair, (left_image, left)) in scenes.iter().enumerate() {
        let (right_image, right) = loop {
            let other = scenes.choose(&mut rng).expect("scenes");
            if other.0.id != left_image.id || scenes.len() == 1 {
                break other;
            }
        };
        let identifier_pair = format!("{split}-{pair}-0");
        for (side, image) in [(0, left_image), (1, right_image)] {
            let extension = image
                .path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("jpg");
            let link = image_dir.join(format!("{identifier_pair}-img{side}.{extension}"));
            if !link.exists() {
                let linked = std::fs::hard_link(&image.path, &link)
                    .or_else(|_| std::fs::copy(&image.path, &link).map(|_| ()));
                linked.map_err(|source| DataError::Write {
                    path: link.clone(),
                    source,
                })?;
            }
        }
        for sentence in 0..STATEMENTS_PER_PAIR {
            // The label first, then a claim with it: true and false are even wherever some
            // claim of the drawn kind can be made either way about this pair.
            let wanted = rng.random_bool(0.5);
            let kind = rng.random_range(0..4);
            let mut claim = Claim::draw(&mut rng, kind, left, right);
            for _ in 0..32 {
                if claim.holds(left, right) == wanted {
                    break;
                }
                claim = Claim::draw(&mut rng, kind, left, right);
            }
            let label = if claim.holds(left, right) {
                "True"
            } else {
                "False"
            };
            for &language in CaptionLanguage::ALL.iter() {
                let line = serde_json::json!({
                    "identifier": format!("{identifier_pair}-{sentence}"),
                    "sentence": claim.write(language),
                    "label": label,
                });
                lines.push((language, line.to_string()));
            }
        }
    }
    for &language in CaptionLanguage::ALL.iter() {
        let text: String = lines
            .iter()
            .filter(|(l, _)| *l == language)
            .map(|(_, line)| format!("{line}\n"))
            .collect();
        let path = nlvr2_path(root, dataset.split, language);
        let write = |source| DataError::Write {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, text).map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(write)?;
    }
    Ok(())
}
