//! Released LXMERT weights in and out: PyTorch files (torch.save's zip and pre-1.6 pickle
//! formats) reproduce Hugging Face's outputs, a model folder's config and vocabulary size the
//! model, `export-lxmert` writes Hugging Face's names back (the same tensors, reloaded to the
//! same outputs), and `pretrain-lxmert` / `classify` start from a folder on the command line.
//! All on the committed fixture (tests/fixtures/lxmert, written by its make_fixture.py);
//! experiments/reference/lxmert_export_roundtrip.py checks with transformers itself that the
//! exported folder loads into `LxmertForPreTraining` with every tensor found.

use crate::common;

use common::{fails, run};

use std::path::Path;
use std::process::Command;

use common::lxmert_fixture::{
    assert_close, assert_reproduces_fixture, fixture, tiny_config, Io, B,
};
use vislang::data::TextTokenizer;
use vislang::models::lxmert::hf::{export_pretraining, load_lxmert, load_lxmert_pretraining};
use vislang::models::lxmert::hf_folder::{HfLxmertConfig, HfLxmertFiles};
use vislang::models::lxmert::{LxmertPretraining, LxmertPretrainingConfig};

fn pretraining_config() -> LxmertPretrainingConfig {
    LxmertPretrainingConfig::new(tiny_config(), 10)
        .with_n_object_labels(Some(7))
        .with_n_attribute_labels(Some(5))
}

fn load(path: &Path) -> LxmertPretraining<B> {
    let load = load_lxmert_pretraining::<B>(pretraining_config().init(&Default::default()), path)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(load.fresh.is_empty(), "{:?}", load.fresh);
    assert!(
        load.skipped.iter().all(|n| n.starts_with("answer_head.")),
        "{:?}",
        load.skipped
    );
    load.model
}

#[test]
fn pytorch_files_in_both_formats_reproduce_hugging_face_outputs() {
    for file in ["pytorch_model.bin", "pytorch_model-legacy.bin"] {
        assert_reproduces_fixture(&load(&fixture(file)));
    }
    // The encoder alone from a PyTorch pretraining file: the heads are skipped by name.
    let encoder = load_lxmert::<B>(
        tiny_config().init(&Default::default()),
        &fixture("pytorch_model.bin"),
    )
    .unwrap();
    assert!(encoder
        .skipped
        .contains(&"obj_predict_head.decoder_dict.feat.weight".to_string()));
}

#[test]
fn damaged_pytorch_files_are_errors_naming_the_file() {
    let dir = common::tempdir();
    let bytes = std::fs::read(fixture("pytorch_model.bin")).unwrap();
    let cases = [
        ("truncated.bin", bytes[..bytes.len() / 2].to_vec()),
        (
            "zip-garbage.bin",
            [b"PK\x03\x04".as_slice(), &[7u8; 64]].concat(),
        ),
        ("pickle-garbage.bin", [0x80u8, 2, 0xff, 0xff, 1, 2].to_vec()),
        ("empty.bin", Vec::new()),
    ];
    for (name, contents) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let result =
            load_lxmert_pretraining::<B>(pretraining_config().init(&Default::default()), &path);
        let Err(error) = result else {
            panic!("{name} must not load");
        };
        assert!(error.to_string().contains(name), "{name}: {error}");
    }
}

#[test]
fn export_writes_hugging_face_names_that_load_back_to_the_same_model() {
    let model = load(&fixture("pytorch_model.bin"));
    let export = export_pretraining(&model, true);
    // Exactly the file's tensors, less the visual-QA head vislang does not train and the
    // decoder that is tied to the word embeddings (save_pretrained leaves it out too).
    let bytes = std::fs::read(fixture("lxmert-pretraining.safetensors")).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut expected: Vec<String> = reference
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("answer_head.") && *n != "cls.predictions.decoder.weight")
        .map(String::from)
        .collect();
    expected.sort();
    let names: Vec<String> = export.names().map(String::from).collect();
    assert_eq!(names, expected);

    let dir = common::tempdir();
    let path = dir.path().join("model.safetensors");
    export.save(&path).unwrap();
    let reloaded = load(&path);
    let io = Io::load();
    let (text, regions) = io.inputs();
    let before = model.lxmert.forward(text.clone(), regions.clone());
    let after = reloaded.lxmert.forward(text, regions);
    // Same tensors, same computation: bit for bit.
    assert_close("pooled_output", after.pooled.clone(), before.pooled.clone());
    let diff: f32 = (after.language - before.language).abs().max().into_scalar();
    assert_eq!(diff, 0.0, "language output changed by the round trip");
}

#[test]
fn a_model_folder_gives_config_weights_and_vocabulary() {
    let files = HfLxmertFiles::locate(&fixture("")).unwrap();
    assert_eq!(files.weights, fixture("pytorch_model.bin"));
    assert_eq!(
        files.vocabulary.as_deref(),
        Some(fixture("vocab.txt").as_path())
    );
    let config = HfLxmertConfig::read(files.config.as_ref().unwrap()).unwrap();
    assert_eq!(config.l_layers, 2);
    assert_eq!(config.visual_feat_dim, 10);

    let tokenizer = TextTokenizer::from_file(&fixture("vocab.txt")).unwrap();
    assert_eq!(tokenizer.vocab_size(), 30);
    let special = tokenizer.special;
    assert_eq!(
        [
            special.pad,
            special.unk,
            special.cls,
            special.sep,
            special.mask
        ],
        [0, 1, 2, 3, 4]
    );
    // "a" "red" "cat" "sits" "near" "two" "dog" "##s": line numbers of vocab.txt.
    assert_eq!(
        tokenizer
            .encode("A red cat sits near two dogs", 16)
            .unwrap(),
        [5, 9, 7, 24, 25, 17, 8, 20]
    );
    let lines: Vec<String> = std::fs::read_to_string(fixture("vocab.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(tokenizer.tokens_by_id().unwrap(), lines);
}

#[test]
fn unusable_configs_and_vocabularies_are_named() {
    let dir = common::tempdir();
    let config = dir.path().join("config.json");
    let original = std::fs::read_to_string(fixture("config.json")).unwrap();
    for (field, edit) in [
        (
            "hidden_act",
            original.replace('{', "{\"hidden_act\": \"relu\","),
        ),
        (
            "hidden_size",
            original.replace("\"hidden_size\": 24", "\"hidden_size\": 25"),
        ),
        (
            "model_type",
            original.replace('{', "{\"model_type\": \"bert\","),
        ),
    ] {
        std::fs::write(&config, edit).unwrap();
        let error = HfLxmertConfig::read(&config).unwrap_err().to_string();
        assert!(
            error.contains(field) && error.contains("config.json"),
            "{error}"
        );
    }
    std::fs::write(&config, "{\"hidden_size\": ").unwrap();
    let error = HfLxmertConfig::read(&config).unwrap_err().to_string();
    assert!(error.contains("config.json"), "{error}");

    let vocab = dir.path().join("vocab.txt");
    std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\ncat\n").unwrap();
    let error = TextTokenizer::from_file(&vocab).err().unwrap().to_string();
    assert!(
        error.contains("[MASK]") && error.contains("vocab.txt"),
        "{error}"
    );
    let folder = dir.path().join("no-weights");
    std::fs::create_dir(&folder).unwrap();
    let error = HfLxmertFiles::locate(&folder).unwrap_err().to_string();
    assert!(error.contains("no-weights"), "{error}");
}

fn pretrain(dir: &Path, out: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pretrain-lxmert"));
    command
        .args([
            "--quiet",
            "--synthetic-train",
            "64",
            "--synthetic-val",
            "32",
        ])
        .args(["--batch-size", "16", "--epochs", "1"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra);
    command
}

/// The fixture's folder as `--lxmert-weights` takes it: a Hugging Face model folder.
fn fixture_folder() -> String {
    fixture("").to_string_lossy().into_owned()
}

fn export_run(run_dir: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_export-lxmert"));
    command.arg("--run").arg(run_dir).arg("--out").arg(out);
    command
}

#[test]
fn pretraining_starts_from_a_released_folder_and_exports_back() {
    let dir = common::tempdir();
    let folder = &fixture_folder();
    let output = run(pretrain(
        dir.path(),
        "from-released",
        &["--lxmert-weights", folder],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Pixels: the patch encoder is new, and the object head predicts patch colours, not the
    // fixture's 10-wide features.
    assert!(stderr.contains("started from"), "{stderr}");
    assert!(stderr.contains("patch_encoder"), "{stderr}");
    assert!(stderr.contains("object_head"), "{stderr}");
    assert!(stderr.contains("captions cut to 14 tokens"), "{stderr}");
    let run_dir = dir.path().join("from-released");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("lxmert-config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vocab_size"], 30, "the checkpoint's vocabulary");
    assert_eq!(config["d_model"], 24);
    assert_eq!(config["max_positions"], 16);

    // The run exports under Hugging Face's names, and the export loads back to the run's
    // encoder exactly.
    let exported = dir.path().join("exported");
    let output = run(export_run(&run_dir, &exported));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("left out: object_head"), "{stdout}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "vislang-patch-encoder.safetensors",
    ] {
        assert!(exported.join(file).is_file(), "{file} missing");
    }
    assert_eq!(
        std::fs::read_to_string(exported.join("vocab.txt")).unwrap(),
        std::fs::read_to_string(fixture("vocab.txt")).unwrap()
    );
    let hf = HfLxmertConfig::read(&exported.join("config.json")).unwrap();
    let mut lxmert_config = hf.lxmert_config();
    let run_config: vislang::models::lxmert::LxmertConfig = serde_json::from_value(config).unwrap();
    lxmert_config.pixels = run_config.pixels.clone();
    assert_eq!(
        serde_json::to_value(&lxmert_config).unwrap(),
        serde_json::to_value(&run_config).unwrap(),
        "config.json describes the run's encoder"
    );
    let device = Default::default();
    let trained = vislang::io::checkpoint::load_safetensors(
        run_config.init::<B>(&device),
        &run_dir.join("lxmert.safetensors"),
    )
    .unwrap();
    let reloaded = load_lxmert::<B>(
        run_config.init::<B>(&device),
        &exported.join("model.safetensors"),
    )
    .unwrap()
    .model;
    let words = |m: &vislang::models::lxmert::Lxmert<B>| m.text_embeddings.token.weight.val();
    assert_eq!(
        words(&trained).into_data(),
        words(&reloaded).into_data(),
        "the trained word embeddings, exported and read back"
    );
    let pooler = |m: &vislang::models::lxmert::Lxmert<B>| m.pooler.weight.val();
    assert_eq!(pooler(&trained).into_data(), pooler(&reloaded).into_data());
    // The pixel model's patch encoder comes back from vislang's file beside the weights.
    let stem = |m: &vislang::models::lxmert::Lxmert<B>| {
        m.patch_encoder.as_ref().unwrap().stem1.weight.val()
    };
    assert_eq!(
        stem(&trained).into_data(),
        stem(&reloaded).into_data(),
        "the trained patch encoder, exported and read back"
    );
    // A damaged patch-encoder file is an error naming it, not a fresh encoder.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::copy(
        exported.join("model.safetensors"),
        damaged.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        damaged.join("vislang-patch-encoder.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    let error = load_lxmert::<B>(
        run_config.init::<B>(&device),
        &damaged.join("model.safetensors"),
    )
    .err()
    .expect("a damaged patch encoder file is refused")
    .to_string();
    assert!(
        error.contains("vislang-patch-encoder.safetensors"),
        "{error}"
    );
    let released = HfLxmertFiles::locate(Path::new(folder)).unwrap().weights;
    let fresh = load_lxmert::<B>(run_config.init::<B>(&device), &released)
        .unwrap()
        .fresh;
    assert_eq!(fresh, ["patch_encoder"], "no file beside: a fresh encoder");

    // Never overwritten.
    let error = fails(export_run(&run_dir, &exported));
    assert!(error.contains("never overwrites"), "{error}");
}

#[test]
fn released_weights_options_are_checked_before_anything_is_written() {
    let dir = common::tempdir();
    let folder = &fixture_folder();
    // Size flags and released weights exclude each other.
    let error = fails(pretrain(
        dir.path(),
        "x",
        &["--lxmert-weights", folder, "--lxmert-width", "32"],
    ));
    assert!(error.contains("--lxmert-width"), "{error}");
    let error = fails(pretrain(
        dir.path(),
        "x",
        &["--lxmert-weights", "/nonexistent/lxmert"],
    ));
    assert!(error.contains("/nonexistent/lxmert"), "{error}");
    let error = fails(pretrain(
        dir.path(),
        "x",
        &["--lxmert-width", "30", "--lxmert-heads", "4"],
    ));
    assert!(error.contains("--lxmert-heads 4"), "{error}");
    let error = fails(pretrain(dir.path(), "x", &["--lxmert-layers", "2,0,1"]));
    assert!(error.contains("--lxmert-layers"), "{error}");
    assert!(!dir.path().join("x").exists(), "nothing may be written");
}

#[test]
fn size_flags_size_the_pretrained_model() {
    let dir = common::tempdir();
    run(pretrain(
        dir.path(),
        "sized",
        &[
            "--lxmert-layers",
            "1,2,1",
            "--lxmert-width",
            "32",
            "--lxmert-heads",
            "2",
        ],
    ));
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("sized/lxmert-config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["n_language_layers"], 1);
    assert_eq!(config["n_object_layers"], 2);
    assert_eq!(config["n_cross_layers"], 1);
    assert_eq!(config["d_model"], 32);
    assert_eq!(config["n_heads"], 2);
    assert_eq!(config["d_hidden"], 128);
}

#[test]
fn classify_fine_tunes_the_pretrained_row_from_released_weights() {
    let dir = common::tempdir();
    let folder = fixture("");
    let mut command = Command::new(env!("CARGO_BIN_EXE_classify"));
    command
        .args([
            "--quiet",
            "--synthetic-train",
            "64",
            "--synthetic-val",
            "32",
        ])
        .args(["--batch-size", "16", "--epochs", "1", "--seeds", "0"])
        .args(["--models", "lxmert,lxmert-pretrained", "--jobs", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(dir.path().join("classify"))
        .arg("--lxmert-weights")
        .arg(&folder);
    let output = run(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("lxmert-pretrained"), "{stdout}");
    let out = dir.path().join("classify");
    assert!(
        !out.join("lxmert-pretraining").exists(),
        "released weights replace the pretraining run"
    );
    // Both rows have the checkpoint's size; only the pretrained one starts from its weights.
    let config = |row: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(out.join("runs").join(row).join("model-config.json")).unwrap(),
        )
        .unwrap()
    };
    let (scratch, pretrained) = (config("lxmert-seed0"), config("lxmert-pretrained-seed0"));
    assert_eq!(scratch["lxmert"]["d_model"], 24);
    assert_eq!(scratch, pretrained);
}
