//! Captions in another language, proven on Korean: the synthetic set's Korean captions,
//! tokenizers that keep Hangul, captions from a user's file (with the official file's checks),
//! AI Hub's Korean MSCOCO layout converted, and the command-line checks.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use vislang::data::caption_conversion::convert_aihub_korean;
use vislang::data::{
    ensure_synthetic_captions, mentioned_categories, synthetic_captions_path, write_synthetic_coco,
    BadEntryPolicy, CaptionLanguage, CocoDataset, CocoSplit, DataError, SyntheticCocoConfig,
    TextTokenizer,
};

const ENGLISH: CaptionLanguage = CaptionLanguage::English;
const KOREAN: CaptionLanguage = CaptionLanguage::Korean;

fn small_set() -> SyntheticCocoConfig {
    SyntheticCocoConfig {
        n_train: 300,
        n_val: 60,
        ..SyntheticCocoConfig::default()
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn captions(root: &Path, split: CocoSplit, language: CaptionLanguage) -> Vec<String> {
    read(&synthetic_captions_path(root, split, language))["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["caption"].as_str().unwrap().to_string())
        .collect()
}

fn is_syllable(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

#[test]
fn the_korean_captions_translate_the_english_ones_image_for_image() {
    let dir = common::tempdir();
    let root = dir.path().join("set");
    write_synthetic_coco(&root, &small_set()).unwrap();
    for split in [CocoSplit::Train2014, CocoSplit::Val2014] {
        let english = read(&synthetic_captions_path(&root, split, ENGLISH));
        let korean = read(&synthetic_captions_path(&root, split, KOREAN));
        assert_eq!(english["images"], korean["images"]);
        let (en, ko) = (
            english["annotations"].as_array().unwrap(),
            korean["annotations"].as_array().unwrap(),
        );
        assert_eq!(en.len(), ko.len());
        for (e, k) in en.iter().zip(ko) {
            assert_eq!((&e["id"], &e["image_id"]), (&k["id"], &k["image_id"]));
            let (e, k) = (
                e["caption"].as_str().unwrap(),
                k["caption"].as_str().unwrap(),
            );
            assert!(k.chars().any(is_syllable) && !k.chars().any(|c| c.is_ascii_alphabetic()));
            // The same objects are named, so evaluate-dalle scores either language alike.
            assert_eq!(
                mentioned_categories(e),
                mentioned_categories(k),
                "{e} / {k}"
            );
            assert!(!mentioned_categories(k).is_empty(), "{k}");
        }
    }

    // A set made before Korean existed gets its Korean files by replaying its random stream:
    // byte for byte what generation writes.
    let written = fs::read(synthetic_captions_path(&root, CocoSplit::Val2014, KOREAN)).unwrap();
    for split in [CocoSplit::Train2014, CocoSplit::Val2014] {
        fs::remove_file(synthetic_captions_path(&root, split, KOREAN)).unwrap();
    }
    let english_before = fs::read(synthetic_captions_path(&root, CocoSplit::Val2014, ENGLISH));
    ensure_synthetic_captions(&root, &small_set(), KOREAN).unwrap();
    let replayed = fs::read(synthetic_captions_path(&root, CocoSplit::Val2014, KOREAN)).unwrap();
    assert!(written == replayed, "the replayed Korean captions differ");
    assert_eq!(
        english_before.unwrap(),
        fs::read(synthetic_captions_path(&root, CocoSplit::Val2014, ENGLISH)).unwrap()
    );
}

/// What BPE decoding gives back: the caption with a space before each punctuation mark (its
/// end-of-word suffix ends every pre-token, and punctuation is one), lower-cased.
fn bpe_normalised(caption: &str) -> String {
    caption.to_lowercase().replace('.', " .").replace(',', " ,")
}

#[test]
fn both_tokenizers_round_trip_korean_captions_and_hold_hangul_syllables() {
    let dir = common::tempdir();
    let root = dir.path().join("set");
    write_synthetic_coco(&root, &small_set()).unwrap();
    let train = captions(&root, CocoSplit::Train2014, KOREAN);
    let held_out = captions(&root, CocoSplit::Val2014, KOREAN);
    let wordpiece = TextTokenizer::train_wordpiece(train.iter().map(String::as_str), 200).unwrap();
    let bpe = TextTokenizer::train_bpe(train.iter().map(String::as_str), 256).unwrap();

    for (name, tokenizer) in [("WordPiece", &wordpiece), ("BPE", &bpe)] {
        let json = fs::read_to_string({
            let path = dir.path().join(format!("{name}.json"));
            tokenizer.save(&path).unwrap();
            path
        })
        .unwrap();
        let vocab: Value = serde_json::from_str::<Value>(&json).unwrap()["model"]["vocab"].clone();
        let tokens: Vec<&String> = vocab.as_object().unwrap().keys().collect();
        let strip = |t: &str| {
            t.trim_start_matches("##")
                .trim_end_matches("</w>")
                .to_string()
        };
        let syllable_tokens = tokens
            .iter()
            .filter(|t| {
                let t = strip(t);
                !t.is_empty() && t.chars().all(is_syllable)
            })
            .count();
        let jamo = tokens
            .iter()
            .filter(|t| t.chars().any(|c| ('\u{1100}'..='\u{11FF}').contains(&c)))
            .count();
        assert!(
            syllable_tokens >= 60,
            "{name}: only {syllable_tokens} Hangul tokens"
        );
        assert_eq!(
            jamo, 0,
            "{name}: tokens of decomposed jamo (NFD) in the vocabulary"
        );
        // Whole words, not just syllables: 고양이 (cat) is one token.
        assert!(
            tokens.iter().any(|t| strip(t) == "고양이"),
            "{name}: no token 고양이"
        );

        for caption in &held_out {
            let ids = tokenizer.encode(caption, 64).unwrap();
            assert!(
                !ids.contains(&tokenizer.special.unk),
                "{name}: [UNK] in {caption}"
            );
            let decoded = tokenizer.decode(&ids);
            let expected = match name {
                "WordPiece" => caption.to_lowercase(),
                _ => bpe_normalised(caption),
            };
            assert_eq!(decoded.trim(), expected, "{name}");
        }
    }
    // Accent stripping still works as in BERT for Latin text, and composes Hangul back.
    let mixed = TextTokenizer::train_wordpiece(["Café 고양이"].into_iter(), 60).unwrap();
    let ids = mixed.encode("CAFÉ 고양이", 8).unwrap();
    assert_eq!(mixed.decode(&ids), "cafe 고양이");
}

/// The fixture's training captions translated into Korean, as a COCO caption file.
fn translated_fixture(annotations: Value) -> Value {
    let official = read(&fixture().join("annotations/captions_train2014.json"));
    json!({"images": official["images"], "annotations": annotations})
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco-mini")
}

fn fixture_image_ids(split: &str) -> Vec<u64> {
    read(&fixture().join(format!("annotations/captions_{split}.json")))["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect()
}

fn load_train(captions: &Path, policy: BadEntryPolicy) -> Result<CocoDataset, DataError> {
    CocoDataset::load_with_captions(&fixture(), CocoSplit::Train2014, captions, policy)
}

#[test]
fn captions_from_another_file_replace_the_official_ones_with_the_same_checks() {
    let dir = common::tempdir();
    let ids = fixture_image_ids("train2014");
    let good: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| json!({"id": 900 + k, "image_id": id, "caption": format!("사진 {k}: 고양이가 있다.")}))
        .collect();
    let path = dir.path().join("captions_train2014.ko.json");
    fs::write(&path, translated_fixture(json!(good)).to_string()).unwrap();
    let train = load_train(&path, BadEntryPolicy::Fail).unwrap();
    assert_eq!(train.captions_path, path);
    let all: Vec<&str> = train.all_captions().collect();
    assert_eq!(all.len(), ids.len());
    assert!(all.iter().all(|c| c.contains("고양이가")), "{all:?}");
    // The objects still come from the instances file.
    let official = CocoDataset::load(&fixture(), CocoSplit::Train2014, BadEntryPolicy::Fail);
    let objects = |d: &CocoDataset| d.images.iter().map(|i| i.objects.len()).collect::<Vec<_>>();
    assert_eq!(objects(&train), objects(&official.unwrap()));

    let bad_cases = [
        (
            json!({"id": 1, "image_id": 424242, "caption": "개"}),
            "424242",
        ),
        (
            json!({"id": 2, "image_id": ids[0], "caption": "  "}),
            "empty",
        ),
        (
            json!({"id": 900, "image_id": ids[0], "caption": "개"}),
            "900",
        ),
    ];
    for (bad, says) in bad_cases {
        let mut entries = good.clone();
        entries.push(bad);
        fs::write(&path, translated_fixture(json!(entries)).to_string()).unwrap();
        let message = load_train(&path, BadEntryPolicy::Fail)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("captions_train2014.ko.json") && message.contains(says),
            "{message}"
        );
        let skipped = load_train(&path, BadEntryPolicy::Skip).unwrap();
        assert_eq!(skipped.skipped.skipped.len(), 1);
    }
    fs::write(&path, "{\"images\": [").unwrap();
    let message = load_train(&path, BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("malformed JSON in") && message.contains(".ko.json"),
        "{message}"
    );
}

#[test]
fn ai_hub_korean_mscoco_captions_convert_into_coco_caption_files() {
    let dir = common::tempdir();
    let entry = |split: &str, id: u64, captions: &[&str]| {
        json!({
            "file_path": format!("{split}/COCO_{split}_{id:012}.jpg"), "id": id,
            "captions": ["an English caption"], "caption_ko": captions,
        })
    };
    let mut entries: Vec<Value> = fixture_image_ids("train2014")
        .iter()
        .map(|&id| {
            entry(
                "train2014",
                id,
                &["남자가 개를 산책시킨다.", "공원의 사람과 개."],
            )
        })
        .collect();
    entries.extend(
        fixture_image_ids("val2014")
            .iter()
            .map(|&id| entry("val2014", id, &["식탁 위의 컵."])),
    );
    let input = dir.path().join("MSCOCO_train_val_Korean.json");
    fs::write(&input, json!(entries).to_string()).unwrap();
    let out = dir.path().join("ko");
    let conversion = convert_aihub_korean(&input, &fixture(), &out, false).unwrap();
    assert!(conversion.skipped.is_empty());
    for (split, file, images, _) in &conversion.written {
        let loaded =
            CocoDataset::load_with_captions(&fixture(), *split, file, BadEntryPolicy::Fail)
                .unwrap();
        assert_eq!(
            loaded
                .images
                .iter()
                .filter(|i| !i.captions.is_empty())
                .count(),
            *images
        );
        assert!(loaded.all_captions().all(|c| c.chars().any(is_syllable)));
    }
    // Converted files are never overwritten.
    let message = convert_aihub_korean(&input, &fixture(), &out, false)
        .unwrap_err()
        .to_string();
    assert!(message.contains("exists already"), "{message}");

    let first_train = fixture_image_ids("train2014")[0];
    let bad_entries = [
        (entry("train2014", 31337, &["개"]), "31337"),
        (entry("test2014", first_train, &["개"]), "test2014"),
        (entry("train2014", first_train, &[]), "caption_ko"),
        (
            json!({"file_path": "train2014/COCO_train2014_000000999999.jpg", "id": first_train, "captions": [], "caption_ko": ["개"]}),
            "not \"COCO_train2014_000000999999.jpg\"",
        ),
    ];
    for (k, (bad, says)) in bad_entries.into_iter().enumerate() {
        let mut with_bad = entries.clone();
        with_bad.push(bad);
        fs::write(&input, json!(with_bad).to_string()).unwrap();
        let out = dir.path().join(format!("bad{k}"));
        let message = convert_aihub_korean(&input, &fixture(), &out, false)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("MSCOCO_train_val_Korean.json")
                && message.contains(&format!("entry {}", entries.len()))
                && message.contains(says),
            "{message}"
        );
        assert!(!out.exists(), "a failed conversion wrote {}", out.display());
        let skipped = convert_aihub_korean(&input, &fixture(), &out, true).unwrap();
        assert_eq!(skipped.skipped.len(), 1);
    }
}

#[test]
fn the_caption_options_are_checked_before_anything_runs() {
    let dir = common::tempdir();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_classify"))
            .args(args)
            .arg("--out")
            .arg(dir.path().join("out"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let coco = fixture();
    let message = run(&[
        "--coco-root",
        coco.to_str().unwrap(),
        "--caption-language",
        "ko",
    ]);
    assert!(message.contains("--captions-train"), "{message}");
    let message = run(&["--captions-train", "no-such-captions.json"]);
    assert!(message.contains("no-such-captions.json"), "{message}");
    let message = run(&["--caption-language", "klingon"]);
    assert!(
        message.contains("en") && message.contains("ko"),
        "{message}"
    );
    assert!(!dir.path().join("out").exists() && !dir.path().join("data").exists());
}

/// Runs one of the crate's binaries in `dir`; the output, or a failure with its stderr.
fn binary(path: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(path)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn succeeded(output: std::process::Output) -> std::process::Output {
    assert!(
        output.status.success(),
        "command failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_text_to_image_pipeline_runs_in_korean() {
    let dir = common::tempdir();
    let dir = dir.path();
    let tiny = [
        "--quiet",
        "--epochs",
        "1",
        "--synthetic-train",
        "192",
        "--synthetic-val",
        "48",
    ];
    let with = |extra: &[&'static str]| [&tiny[..], extra].concat();
    succeeded(binary(env!("CARGO_BIN_EXE_train-vqvae"), dir, &tiny));
    let korean_dalle = with(&[
        "--caption-language",
        "ko",
        "--out",
        "runs/dalle-ko",
        "--d-model",
        "32",
        "--layers",
        "2",
    ]);
    succeeded(binary(
        env!("CARGO_BIN_EXE_train-dalle"),
        dir,
        &korean_dalle,
    ));
    let config = read(&dir.join("runs/dalle-ko/config.json"));
    assert_eq!(config["data"]["captions"]["language"], "ko");
    // Korean's preset vocabulary: nouns and particles as separate tokens.
    assert_eq!(config["data"]["bpe_vocab"], 128);

    let caption = "고양이와 시계가 있는 그림.";
    let generate = [
        "--dalle",
        "runs/dalle-ko",
        "--caption",
        caption,
        "--num",
        "2",
    ];
    succeeded(binary(env!("CARGO_BIN_EXE_generate"), dir, &generate));
    let manifest = read(&dir.join("runs/generate/manifest.json"));
    assert_eq!(manifest["files"][0]["caption"], caption);
    assert!(dir.join("runs/generate/grid-000.png").exists());

    // The judge reads only pixels; the reranker reads captions, so it must know Korean.
    let classify = |language: &'static str, out: &'static str| {
        let args = with(&[
            "--models",
            "image-only,joint",
            "--seeds",
            "0",
            "--caption-language",
            language,
            "--out",
            out,
        ]);
        succeeded(binary(env!("CARGO_BIN_EXE_classify"), dir, &args));
    };
    classify("ko", "runs/classify-ko");
    classify("en", "runs/classify-en");
    let evaluate = |ranker: &str| {
        let args = [
            "--dalle",
            "runs/dalle-ko",
            "--judge",
            "runs/classify-ko",
            "--rerank-with",
            ranker,
            "--num-captions",
            "8",
            "--candidates",
            "2",
            "--num-seeds",
            "1",
        ];
        binary(env!("CARGO_BIN_EXE_evaluate-dalle"), dir, &args)
    };
    let refused = evaluate("runs/classify-en/runs/joint-seed0");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("[UNK]")
            && stderr.contains("--caption-language ko"),
        "{stderr}"
    );
    succeeded(evaluate("runs/classify-ko/runs/joint-seed0"));
    let evaluation = read(&dir.join("runs/evaluate-dalle/evaluation.json"));
    assert!(
        evaluation["named_objects"].as_u64().unwrap() > 0,
        "{evaluation}"
    );
}
