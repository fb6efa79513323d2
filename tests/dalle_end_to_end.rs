//! train-vqvae -> train-dalle -> generate -> evaluate-dalle on a tiny synthetic set: outputs,
//! resuming, and clear errors.

use crate::common;

use common::run;

use std::path::Path;
use std::process::Command;

const SYNTHETIC: [&str; 4] = ["--synthetic-train", "192", "--synthetic-val", "48"];

fn command(binary: &str, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(dir).args(args);
    command
}

fn train_dalle(dir: &Path, out: &str, extra: &[&str]) -> Command {
    let mut args = vec!["--quiet", "--out", out, "--d-model", "32", "--layers", "2"];
    args.extend(SYNTHETIC);
    args.extend(extra);
    command(env!("CARGO_BIN_EXE_train-dalle"), dir, &args)
}

#[test]
fn the_pipeline_trains_generates_and_evaluates_and_resumes() {
    let dir = common::tempdir();
    let dir = dir.path();
    let mut vqvae = vec!["--quiet", "--epochs", "1"];
    vqvae.extend(SYNTHETIC);
    run(command(env!("CARGO_BIN_EXE_train-vqvae"), dir, &vqvae));

    // Reference run, and the same run killed after its first epoch and resumed; the second
    // run also exercises --tokenizer with the first run's vocabulary.
    run(train_dalle(dir, "runs/dalle", &["--epochs", "2"]));
    // Paths in saved configs are absolute: the run reads the same VQ-VAE from anywhere.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("runs/dalle/config.json")).unwrap())
            .unwrap();
    let vqvae_dir = config["data"]["vqvae_dir"].as_str().unwrap();
    assert!(Path::new(vqvae_dir).is_absolute(), "{vqvae_dir}");
    let args = [
        "--epochs",
        "2",
        "--tokenizer",
        "runs/dalle/caption-bpe.json",
    ];
    common::kill_once_exists(
        train_dalle(dir, "runs/resumed", &args),
        &dir.join("runs/resumed/state.json"),
    );
    let output = run(train_dalle(dir, "runs/resumed", &args));
    assert!(String::from_utf8_lossy(&output.stderr).contains("resuming after epoch 1"));
    let result = |run: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(run).join("result.json")).unwrap()).unwrap()
    };
    assert_eq!(
        result("runs/dalle")["final_epoch"]["eval"]["image_loss"],
        result("runs/resumed")["final_epoch"]["eval"]["image_loss"]
    );
    for file in [
        "dalle.safetensors",
        "dalle-config.json",
        "caption-bpe.json",
        "curve-loss.png",
        "samples/epoch-002.png",
    ] {
        assert!(dir.join("runs/dalle").join(file).exists(), "{file} missing");
    }

    // Generation: one grid per caption and every image on its own, with and without the cache.
    std::fs::write(
        dir.join("captions.txt"),
        "a picture of a cat.\n\na photo showing a cup and a dog.\n",
    )
    .unwrap();
    let args = [
        "--caption",
        "a picture of a car.",
        "--captions",
        "captions.txt",
        "--num",
        "3",
        "--greedy",
    ];
    let output = run(command(env!("CARGO_BIN_EXE_generate"), dir, &args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("warning"),
        "captions in the vocabulary: {stderr}"
    );
    // A word never seen, and a caption longer than the 24 text positions, are reported.
    let long = "a cat and a dog and ".repeat(6) + "a cup.";
    let output = run(command(
        env!("CARGO_BIN_EXE_generate"),
        dir,
        &[
            "--caption",
            "a zebraphone.",
            "--caption",
            &long,
            "--num",
            "1",
            "--out",
            "runs/warned",
        ],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rarely or never: zebraphone")
            && stderr.contains("beyond the model's 24 text positions are dropped"),
        "{stderr}"
    );
    let mut uncached_args = args.to_vec();
    uncached_args.extend(["--no-cache", "--out", "runs/uncached"]);
    run(command(env!("CARGO_BIN_EXE_generate"), dir, &uncached_args));
    for c in 0..3 {
        assert!(dir.join(format!("runs/generate/grid-{c:03}.png")).exists());
        for s in 0..3 {
            let name = format!("images/{c:03}-{s:02}.png");
            let cached = image::open(dir.join("runs/generate").join(&name)).unwrap();
            let uncached = image::open(dir.join("runs/uncached").join(&name)).unwrap();
            assert_eq!((cached.width(), cached.height()), (32, 32));
            assert_eq!(
                cached.to_rgb8(),
                uncached.to_rgb8(),
                "{name} differs without the cache"
            );
        }
    }
    // The manifest names each file's caption; a second run into the same folder replaces it
    // whole (FID tools read all of it), and a folder holding other files is refused.
    let manifest = |out: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(out).join("manifest.json")).unwrap())
            .unwrap()
    };
    let first = manifest("runs/generate");
    assert_eq!(first["files"].as_array().unwrap().len(), 3 * 3 + 3);
    assert_eq!(first["files"][0]["file"], "images/000-00.png");
    assert_eq!(first["files"][0]["caption"], "a picture of a car.");
    assert_eq!(first["sampling"]["greedy"], true);
    run(command(
        env!("CARGO_BIN_EXE_generate"),
        dir,
        &["--caption", "a picture of a cat.", "--num", "1"],
    ));
    assert_eq!(
        manifest("runs/generate")["files"].as_array().unwrap().len(),
        2
    );
    assert!(!dir.join("runs/generate/grid-001.png").exists());
    assert!(!dir.join("runs/generate/images/002-02.png").exists());
    std::fs::write(dir.join("runs/uncached/notes.txt"), b"mine").unwrap();
    let output = command(
        env!("CARGO_BIN_EXE_generate"),
        dir,
        &["--caption", "a cat.", "--out", "runs/uncached"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("holds notes.txt"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.join("runs/uncached/notes.txt")).unwrap(),
        b"mine"
    );

    // The evaluation needs an image-only classifier on the same data; reranking a joint one.
    let mut classify = vec![
        "--quiet",
        "--epochs",
        "1",
        "--modalities",
        "image-only,joint",
        "--seeds",
        "0",
    ];
    classify.extend(SYNTHETIC);
    run(command(env!("CARGO_BIN_EXE_classify"), dir, &classify));
    let output_eval = run(command(
        env!("CARGO_BIN_EXE_evaluate-dalle"),
        dir,
        &[
            "--num-captions",
            "16",
            "--batch-size",
            "8",
            "--rerank-with",
            "runs/classify/runs/joint-seed0",
            "--candidates",
            "3",
            "--num-seeds",
            "2",
        ],
    ));
    // Reranking keeps the --num best of the candidates.
    run(command(
        env!("CARGO_BIN_EXE_generate"),
        dir,
        &[
            "--caption",
            "a picture of a cat.",
            "--num",
            "2",
            "--candidates",
            "5",
            "--rerank-with",
            "runs/classify/runs/joint-seed0",
            "--out",
            "runs/reranked",
        ],
    ));
    let kept = std::fs::read_dir(dir.join("runs/reranked/images"))
        .unwrap()
        .count();
    assert_eq!(kept, 2);
    // An image-only classifier cannot rank captions, and says so.
    let output = command(
        env!("CARGO_BIN_EXE_generate"),
        dir,
        &[
            "--caption",
            "a cat.",
            "--rerank-with",
            "runs/classify/runs/image-only-seed0",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("joint classifier"),
        "{stderr}"
    );

    // Judging with a classifier that reads captions is refused, naming the flag and the kind.
    let output = command(
        env!("CARGO_BIN_EXE_evaluate-dalle"),
        dir,
        &["--judge", "runs/classify/runs/joint-seed0"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--judge") && stderr.contains("image-only"),
        "{stderr}"
    );

    let stdout = String::from_utf8_lossy(&output_eval.stdout);
    assert!(stdout.contains("FID: skipped (no --inception"), "{stdout}");
    assert!(
        stdout.contains("real (ceiling)")
            && stdout.contains("generated")
            && stdout.contains("runs/classify/runs/image-only-seed0"),
        "the heading names the judge: {stdout}"
    );
    let evaluation: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("runs/evaluate-dalle/evaluation.json")).unwrap(),
    )
    .unwrap();
    for field in [
        "real",
        "real_at_tokenizer_resolution",
        "vqvae_reconstruction",
    ] {
        let rate = evaluation[field]["named_found"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate), "{field}: {rate}");
        let unnamed = evaluation[field]["unnamed_per_image"].as_f64().unwrap();
        assert!((0.0..=80.0).contains(&unnamed), "{field}: {unnamed}");
    }
    for field in ["generated", "generated_reranked"] {
        let rate = &evaluation[field]["named_found"];
        let (mean, std) = (
            rate["mean"].as_f64().unwrap(),
            rate["std"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&mean) && std >= 0.0, "{field}: {rate}");
        let per_seed: Vec<f64> = evaluation["per_seed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|seed| seed[field]["named_found"].as_f64().unwrap())
            .collect();
        let seeds_mean = per_seed.iter().sum::<f64>() / per_seed.len() as f64;
        assert!(
            (seeds_mean - mean).abs() < 1e-12,
            "{field}: {per_seed:?} vs {mean}"
        );
    }
    assert!(evaluation["judge"]
        .as_str()
        .unwrap()
        .ends_with("runs/classify/runs/image-only-seed0"));
    // FID with the seeded Inception network of the FID parity fixture (the real weights are
    // the user's): generated and reconstructed images against the real ones.
    let weights = crate::fid::weights_file().to_str().unwrap().to_string();
    let output_fid = run(command(
        env!("CARGO_BIN_EXE_evaluate-dalle"),
        dir,
        &[
            "--num-captions",
            "8",
            "--num-seeds",
            "1",
            "--inception",
            &weights,
            "--out",
            "runs/evaluate-fid",
        ],
    ));
    let stdout = String::from_utf8_lossy(&output_fid.stdout);
    assert!(
        stdout.contains("FID against the real images") && stdout.contains("images: 8 and 8"),
        "{stdout}"
    );
    let evaluation: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("runs/evaluate-fid/evaluation.json")).unwrap(),
    )
    .unwrap();
    let generated_fid = evaluation["generated_fid"]["mean"].as_f64().unwrap();
    let reconstruction_fid = evaluation["vqvae_reconstruction_fid"]["fid"]
        .as_f64()
        .unwrap();
    assert!(
        generated_fid > 0.0 && reconstruction_fid > 0.0,
        "{generated_fid} {reconstruction_fid}"
    );
    let ssim = evaluation["vqvae_reconstruction_quality"]["ssim"]
        .as_f64()
        .unwrap();
    assert!(ssim > 0.0 && ssim < 1.0, "{ssim}");

    // Images edited after encoding: their token grids must not be paired with these captions.
    let data = std::fs::read_dir(dir.join("data")).unwrap();
    let set = data
        .map(|entry| entry.unwrap().path())
        .find(|path| path.join("train2014").is_dir())
        .unwrap();
    let image = std::fs::read_dir(set.join("train2014"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&image).unwrap();
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(&image, bytes).unwrap();
    let output = train_dalle(dir, "runs/after-edit", &["--epochs", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("tokens-train2014.safetensors was encoded from other image files")
            && !dir.join("runs/after-edit").exists(),
        "{stderr}"
    );
}

#[test]
fn missing_inputs_get_clear_errors() {
    let dir = common::tempdir();
    let dir = dir.path();
    // No VQ-VAE yet.
    let output = train_dalle(dir, "runs/dalle", &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("vqvae.safetensors") && stderr.contains("train-vqvae"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // No decoder yet.
    let output = command(
        env!("CARGO_BIN_EXE_generate"),
        dir,
        &["--caption", "a cat."],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("dalle-config.json")
            && stderr.contains("written by `train-dalle`")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    // No caption.
    let output = command(env!("CARGO_BIN_EXE_generate"), dir, &[])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("no captions"));
}
