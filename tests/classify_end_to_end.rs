//! The `classify` binary end to end on a tiny synthetic set: outputs, resuming after an
//! interruption, and clear errors.

use crate::common;

use common::run;

use std::path::Path;
use std::process::Command;

fn classify(dir: &Path, out: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_classify"));
    command
        .args([
            "--quiet",
            "--synthetic-train",
            "160",
            "--synthetic-val",
            "48",
            "--seeds",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra);
    command
}

fn results(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path.join("results.json")).unwrap()).unwrap()
}

#[test]
fn trains_all_five_models_and_writes_results_and_charts() {
    let dir = common::tempdir();
    let output = run(classify(
        dir.path(),
        "out",
        &["--epochs", "1", "--pretraining-epochs", "1"],
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for name in [
        "image-only",
        "text-only",
        "joint",
        "| lxmert |",
        "| lxmert-pretrained |",
        "mAP",
        "micro-F1",
        "LXMERT pretrained minus from scratch",
    ] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
    let out = dir.path().join("out");
    for file in [
        "results.json",
        "results.md",
        "comparison.png",
        "curve-val-map.png",
        "curve-loss.png",
        "config.json",
        "tokenizer.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    for file in [
        "lxmert.safetensors",
        "lxmert-config.json",
        "result.json",
        "curve-loss.png",
    ] {
        assert!(
            out.join("lxmert-pretraining").join(file).exists(),
            "lxmert-pretraining/{file} missing"
        );
    }
    for run in [
        "image-only-seed0",
        "text-only-seed0",
        "joint-seed0",
        "lxmert-seed0",
        "lxmert-pretrained-seed0",
    ] {
        for file in ["model.safetensors", "model-config.json", "result.json"] {
            assert!(
                out.join("runs").join(run).join(file).exists(),
                "{run}/{file} missing"
            );
        }
        // Finished: no resume state, epoch checkpoints or temporary files are left behind.
        let left = std::fs::read_dir(out.join("runs").join(run))
            .unwrap()
            .count();
        assert_eq!(
            left, 5,
            "{run} holds more than model.safetensors, model-config.json, result.json, metrics.jsonl and report.html"
        );
    }
    let png = image::open(out.join("comparison.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 500));
    let report = results(&out);
    assert_eq!(report["summary"].as_array().unwrap().len(), 5);
    // `--pretraining-epochs 1`: one epoch in each of the default's two stages.
    assert_eq!(
        report["lxmert_pretraining"]["history"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        report["lxmert_pretraining"]["stages"],
        serde_json::json!(["contrastive:1", "matching+contrastive:1"])
    );

    // The pretrained row really starts from the pretraining: with its encoder file damaged,
    // that row cannot start, and the error names the file.
    std::fs::remove_dir_all(out.join("runs/lxmert-pretrained-seed0")).unwrap();
    std::fs::write(
        out.join("lxmert-pretraining/lxmert.safetensors"),
        b"damaged",
    )
    .unwrap();
    let mut again = classify(
        dir.path(),
        "out",
        &["--epochs", "1", "--pretraining-epochs", "1"],
    );
    let failed = again.output().unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("lxmert-pretraining/lxmert.safetensors") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn an_interrupted_run_resumes_and_matches_an_uninterrupted_one() {
    let dir = common::tempdir();
    let reference = dir.path().join("reference");
    run(classify(
        dir.path(),
        "reference",
        &["--epochs", "3", "--modalities", "joint"],
    ));
    // The second experiment reuses the first one's tokenizer through --tokenizer, as a
    // researcher pinning a vocabulary would.
    let tokenizer = reference.join("tokenizer.json");
    let args = [
        "--epochs",
        "3",
        "--modalities",
        "joint",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ];

    // Start the same experiment and kill it once the first epoch is committed.
    common::kill_once_exists(
        classify(dir.path(), "interrupted", &args),
        &dir.path().join("interrupted/runs/joint-seed0/state.json"),
    );
    let interrupted = dir.path().join("interrupted");
    assert!(
        !interrupted.join("results.json").exists(),
        "killed before finishing"
    );

    let output = run(classify(dir.path(), "interrupted", &args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resuming after epoch"), "{stderr}");
    let (a, b) = (results(&reference), results(&interrupted));
    let history = |r: &serde_json::Value| r["runs"][0]["history"].as_array().unwrap().clone();
    assert_eq!(history(&a).len(), 3);
    for (x, y) in history(&a).iter().zip(history(&b)) {
        for key in ["/train/total", "/eval/loss", "/eval/map"] {
            let (x, y) = (
                x.pointer(key).unwrap().as_f64().unwrap(),
                y.pointer(key).unwrap().as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-4, "{key}: {x} vs {y}");
        }
    }

    // Running a finished experiment again reuses its results.
    let again = run(classify(dir.path(), "interrupted", &args));
    assert!(!String::from_utf8_lossy(&again.stderr).contains("epoch 1/3"));

    // A different config in the same directory is refused rather than mixed in.
    let mut changed = args.to_vec();
    changed[1] = "4";
    let output = classify(dir.path(), "interrupted", &changed)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("different config") && stderr.contains("--out"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_and_data_give_clear_errors() {
    let dir = common::tempdir();
    let output = classify(dir.path(), "out", &["--device", "tpu"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("use cpu, cuda, cuda:N, wgpu, wgpu:N or wgpu:cpu"));

    #[cfg(not(feature = "cuda"))]
    {
        let output = classify(dir.path(), "out", &["--device", "cuda:1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("built without CUDA support") && stderr.contains("--features cuda"),
            "{stderr}"
        );
    }

    // A flag that breaks an invariant deep inside (patches must tile the image) is refused
    // before anything is written, naming the flag and values that work.
    for (flag, value) in [
        ("--image-size", "64"),
        ("--image-size", "0"),
        ("--lr", "NaN"),
    ] {
        let output = classify(dir.path(), "refused", &[flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(flag),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !dir.path().join("refused").exists(),
            "{flag} {value} wrote the out dir"
        );
    }

    let output = classify(dir.path(), "out", &["--coco-root", "/nonexistent/coco"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("/nonexistent/coco/annotations/captions_train2014.json"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = classify(
        dir.path(),
        "nan",
        &["--epochs", "1", "--modalities", "text-only", "--lr", "1e30"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("text-only seed 0: the training loss became NaN at step"),
        "{stderr}"
    );
}

#[test]
fn runs_the_coco_preset_on_a_directory_in_the_official_layout() {
    let dir = common::tempdir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco-mini");
    let output = run(classify(
        dir.path(),
        "coco",
        &[
            "--coco-root",
            fixture.to_str().unwrap(),
            "--epochs",
            "1",
            "--modalities",
            "joint,text-only",
        ],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("3 train / 1 held-out images, 80 labels"),
        "{stderr}"
    );
    let report = results(&dir.path().join("coco"));
    assert_eq!(report["config"]["data"]["image_size"], 224);
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);
    // The preprocessed images were cached at the preset's size.
    let cache: Vec<String> = std::fs::read_dir(dir.path().join("data/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cache
            .iter()
            .any(|name| name.starts_with("train2014-224px-")),
        "{cache:?}"
    );
}

#[test]
fn the_same_command_with_parallel_runs_reproduces_every_row_exactly() {
    let dir = common::tempdir();
    // Nothing is shared between the two commands: each trains its own WordPiece vocabulary
    // (deterministic, see data::subword_training), and everything else (initialisation,
    // shuffling, caption choice, masking, pretraining) is drawn from each run's own streams.
    let args = ["--epochs", "2", "--pretraining-epochs", "1", "--jobs", "2"];
    run(classify(dir.path(), "a", &args));
    run(classify(dir.path(), "b", &args));
    let vocabulary =
        |run: &str| std::fs::read(dir.path().join(run).join("tokenizer.json")).unwrap();
    assert!(
        vocabulary("a") == vocabulary("b"),
        "the two commands trained different vocabularies"
    );
    let (a, b) = (
        results(&dir.path().join("a")),
        results(&dir.path().join("b")),
    );
    let runs = |r: &serde_json::Value| r["runs"].as_array().unwrap().clone();
    assert_eq!(runs(&a).len(), 5, "five models");
    for (x, y) in runs(&a).iter().zip(runs(&b)) {
        let name = format!("{} seed {}", x["model"], x["seed"]);
        assert_eq!(x["map"], y["map"], "{name}: mAP differs");
        assert_eq!(x["micro_f1"], y["micro_f1"], "{name}: micro-F1 differs");
        for (p, q) in x["history"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["history"].as_array().unwrap())
        {
            assert_eq!(p["train"], q["train"], "{name}: training loss differs");
            assert_eq!(p["eval"], q["eval"], "{name}: evaluation differs");
        }
    }
    let pretraining = |r: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
        r["lxmert_pretraining"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["train"].clone(), h["eval"].clone()))
            .collect()
    };
    assert_eq!(pretraining(&a), pretraining(&b), "the pretraining differs");

    // The report links each run's own report, and every metrics line parses.
    let html = std::fs::read_to_string(dir.path().join("a/report.html")).unwrap();
    assert!(
        html.contains("runs/joint-seed0/report.html"),
        "no link to a run's report"
    );
    assert!(html.contains("data:image/png;base64,"), "no embedded chart");
    let run_dir = dir.path().join("a/runs/joint-seed0");
    assert!(std::fs::read_to_string(run_dir.join("report.html"))
        .unwrap()
        .contains("<table>"));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let kinds: Vec<String> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| k.contains("eval")).count(), 2);
    assert_eq!(
        kinds.iter().filter(|k| k.contains("step")).count(),
        2 * 160_usize.div_ceil(32)
    );
}
