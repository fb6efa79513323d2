//! `pretrain-lxmert` and `lxmert-features` end to end on small synthetic sets: the outputs,
//! resuming after an interruption, the region-feature path, and clear errors.

use crate::common;

use common::{fails, run};

use std::path::Path;
use std::process::Command;

fn pretrain(dir: &Path, out: &str, n_train: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pretrain-lxmert"));
    command
        .args(["--quiet", "--synthetic-train", &n_train.to_string()])
        .args(["--synthetic-val", "32", "--batch-size", "16"])
        .arg("--data-dir")
        .arg(dir.join(format!("data-{n_train}")))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra);
    command
}

fn features(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lxmert-features"));
    command.args(args);
    command
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Names in `dir` that a finished run must not leave: checkpoints, temporaries, state.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.contains("epoch") || name.ends_with(".tmp") || name == "state.json")
        .collect()
}

#[test]
fn pixel_pretraining_writes_its_outputs_and_resumes_identically() {
    let dir = common::tempdir();
    let reference = dir.path().join("reference");
    let output = run(pretrain(
        dir.path(),
        "reference",
        96,
        &["--stages", "lxmert:2"],
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("matching accuracy"), "{stdout}");
    for file in [
        "config.json",
        "tokenizer.json",
        "lxmert.safetensors",
        "lxmert-config.json",
        "pretraining.safetensors",
        "pretraining-config.json",
        "result.json",
        "curve-loss.png",
        "curve-val-loss.png",
        "curve-matching-accuracy.png",
    ] {
        assert!(reference.join(file).exists(), "{file} missing");
    }
    assert!(
        !reference.join("stage-1").exists(),
        "one stage trains in --out itself"
    );
    assert!(
        leftovers(&reference).is_empty(),
        "{:?}",
        leftovers(&reference)
    );
    let result = json(&reference.join("result.json"));
    let last = &result["history"][1];
    for objective in ["masked_language", "object_feature", "matching"] {
        assert!(
            last["eval"]["losses"][objective]
                .as_f64()
                .unwrap()
                .is_finite(),
            "{objective}"
        );
    }
    assert!(
        last["eval"]["losses"]["object_label"].is_null(),
        "pixels have no detector labels"
    );
    assert!(
        last["eval"]["losses"]["contrastive"].is_null(),
        "not asked for"
    );

    // Another config in the same directory is refused rather than mixed in.
    let error = fails(pretrain(
        dir.path(),
        "reference",
        96,
        &["--stages", "lxmert:3"],
    ));
    assert!(error.contains("different config"), "{error}");
}

#[test]
fn default_stages_align_then_match_and_resume_identically() {
    let dir = common::tempdir();
    let staged = dir.path().join("staged");
    let output = run(pretrain(dir.path(), "staged", 96, &["--epochs", "2"]));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("stages: contrastive:2, then matching+contrastive:2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for stage in ["stage-1", "stage-2"] {
        let stage_dir = staged.join(stage);
        for file in ["lxmert.safetensors", "result.json", "curve-loss.png"] {
            assert!(stage_dir.join(file).exists(), "{stage}/{file} missing");
        }
        assert!(
            leftovers(&stage_dir).is_empty(),
            "{:?}",
            leftovers(&stage_dir)
        );
    }
    // The run's encoder is the last stage's, byte for byte.
    for file in ["lxmert.safetensors", "pretraining-config.json"] {
        assert_eq!(
            std::fs::read(staged.join(file)).unwrap(),
            std::fs::read(staged.join("stage-2").join(file)).unwrap(),
            "{file}"
        );
    }
    let result = json(&staged.join("result.json"));
    assert_eq!(
        result["stages"],
        serde_json::json!(["contrastive:2", "matching+contrastive:2"])
    );
    let history = result["history"].as_array().unwrap();
    let epochs: Vec<u64> = history
        .iter()
        .map(|h| h["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(
        epochs,
        [1, 2, 3, 4],
        "epochs numbered on through the stages"
    );
    let losses = |epoch: usize| &history[epoch]["eval"]["losses"];
    assert!(
        losses(0)["matching"].is_null(),
        "stage 1 is contrastive alone"
    );
    assert!(losses(0)["contrastive"].as_f64().unwrap().is_finite());
    for objective in ["matching", "contrastive"] {
        assert!(
            losses(3)[objective].as_f64().unwrap().is_finite(),
            "{objective}"
        );
    }
    assert!(losses(3)["masked_language"].is_null());
    // Stage 2 starts from stage 1's encoder: a run of stage 2 alone (the same seed, so the
    // same fresh model and batches) would compute exactly the same first epoch otherwise.
    run(pretrain(
        dir.path(),
        "stage-2-alone",
        96,
        &["--stages", "matching+contrastive:2"],
    ));
    let alone = json(&dir.path().join("stage-2-alone/result.json"));
    assert_ne!(
        alone["history"][0]["eval"]["losses"], history[2]["eval"]["losses"],
        "stage 2 started from a fresh encoder"
    );

    // Killed once stage 2 has committed an epoch and started again, the run resumes inside
    // stage 2 (stage 1's encoder read back from disk) and ends identically.
    let tokenizer = staged.join("tokenizer.json");
    let args = ["--epochs", "2", "--tokenizer", tokenizer.to_str().unwrap()];
    let interrupted = dir.path().join("interrupted");
    common::kill_once_exists(
        pretrain(dir.path(), "interrupted", 96, &args),
        &interrupted.join("stage-2").join("state.json"),
    );
    assert!(
        !interrupted.join("result.json").exists(),
        "killed before finishing"
    );
    let output = run(pretrain(dir.path(), "interrupted", 96, &args));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("resuming after epoch 1"),
        "did not resume"
    );
    let resumed = json(&interrupted.join("result.json"));
    for epoch in 0..4 {
        assert_eq!(
            resumed["history"][epoch]["eval"],
            result["history"][epoch]["eval"],
            "epoch {} differs after resuming",
            epoch + 1
        );
    }
}

#[test]
fn region_features_from_tsv_pretrain_with_detector_labels() {
    let dir = common::tempdir();
    let data = dir.path().join("data-96");
    let tsv = dir.path().join("boxes.tsv");
    let converted = dir.path().join("features.safetensors");
    run(features(&[
        "boxes",
        "--synthetic-train",
        "96",
        "--synthetic-val",
        "32",
        "--data-dir",
        data.to_str().unwrap(),
        "--output",
        tsv.to_str().unwrap(),
    ]));
    let output = run(features(&[
        "convert",
        "--tsv",
        tsv.to_str().unwrap(),
        "--output",
        converted.to_str().unwrap(),
    ]));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("128 images"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    run(pretrain(
        dir.path(),
        "regions",
        96,
        &[
            "--stages",
            "lxmert:1",
            "--features",
            converted.to_str().unwrap(),
        ],
    ));
    let result = json(&dir.path().join("regions/result.json"));
    let val = &result["history"][0]["eval"]["losses"];
    for objective in [
        "masked_language",
        "object_feature",
        "object_label",
        "object_attribute",
        "matching",
    ] {
        assert!(
            val[objective].as_f64().unwrap().is_finite(),
            "{objective}: {val}"
        );
    }

    // A dataset with images the feature file lacks is refused, naming an image id.
    let error = fails(pretrain(
        dir.path(),
        "bigger",
        160,
        &["--epochs", "1", "--features", converted.to_str().unwrap()],
    ));
    assert!(
        error.contains("is not in the feature file") && error.contains("features.safetensors"),
        "{error}"
    );
}

#[test]
fn classify_fine_tunes_an_encoder_pretrained_by_pretrain_lxmert() {
    let dir = common::tempdir();
    run(pretrain(dir.path(), "pre", 96, &["--epochs", "1"]));
    let encoder = dir.path().join("pre");
    let classify = |out: &str, encoder: &Path, extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_classify"));
        command
            .args([
                "--quiet",
                "--synthetic-train",
                "96",
                "--synthetic-val",
                "32",
            ])
            .args(["--seeds", "0", "--epochs", "1", "--batch-size", "16"])
            .args(["--models", "lxmert-pretrained"])
            .arg("--data-dir")
            .arg(dir.path().join("data-96"))
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--lxmert-encoder")
            .arg(encoder)
            .args(extra);
        command
    };
    run(classify("fine-tuned", &encoder, &[]));
    let out = dir.path().join("fine-tuned");
    assert!(
        !out.join("lxmert-pretraining").exists(),
        "pretrained again instead of using the encoder"
    );
    let results = json(&out.join("results.json"));
    assert_eq!(results["runs"][0]["model"], "lxmert-pretrained");
    assert!(results["runs"][0]["map"].as_f64().unwrap().is_finite());
    assert_eq!(
        results["lxmert_pretraining"],
        json(&encoder.join("result.json")),
        "the report carries the encoder's pretraining"
    );

    // The row really reads that encoder: a damaged copy is an error naming the file.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for entry in std::fs::read_dir(&encoder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, damaged.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(damaged.join("lxmert.safetensors"), b"not safetensors").unwrap();
    let error = fails(classify("from-damaged", &damaged, &[]));
    assert!(error.contains("lxmert.safetensors"), "{error}");
    // A directory that holds no pretraining is refused before anything is made.
    let error = fails(classify("from-nowhere", &dir.path().join("nowhere"), &[]));
    assert!(
        error.contains("holds no finished pretrain-lxmert run")
            && !dir.path().join("from-nowhere").exists(),
        "{error}"
    );

    // Another architecture is refused before training, naming the config file and field.
    let error = fails(classify("bigger-images", &encoder, &["--image-size", "96"]));
    assert!(
        error.contains("lxmert-config.json") && error.contains("image_size"),
        "{error}"
    );
}

#[test]
fn bad_settings_get_clear_errors() {
    let dir = common::tempdir();
    for (stages, expected) in [
        ("bogus:1", "unknown objective 'bogus'"),
        ("matching+:1", "unknown objective ''"),
        (
            "contrastive:0",
            "'0' in 'contrastive:0' is not a number of epochs",
        ),
        ("contrastive", "'contrastive' is not OBJECTIVES:EPOCHS"),
    ] {
        let error = fails(pretrain(dir.path(), "none", 48, &["--stages", stages]));
        assert!(error.contains(expected), "{stages}: {error}");
        assert!(
            !dir.path().join("none").exists(),
            "{stages}: wrote before refusing"
        );
    }
    let error = fails(pretrain(
        dir.path(),
        "missing",
        48,
        &["--features", "/nonexistent/features.safetensors"],
    ));
    assert!(
        error.contains("/nonexistent/features.safetensors"),
        "{error}"
    );
    let error = fails(features(&[
        "convert",
        "--tsv",
        "/nonexistent.tsv",
        "--output",
        "x.safetensors",
    ]));
    assert!(error.contains("/nonexistent.tsv"), "{error}");
}
