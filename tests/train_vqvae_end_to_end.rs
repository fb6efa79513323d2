//! `train-vqvae` and `image-tokens` end to end on small synthetic sets: reconstruction quality
//! and codebook use after a short run, the outputs, resuming, token files and their staleness
//! checks, and clear errors.

use crate::common;

use common::{fails, run};

use std::path::Path;
use std::process::Command;

use vislang::data::{ImageTokens, TokenExpectation};

fn train_vqvae(dir: &Path, out: &str, n_train: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_train-vqvae"));
    command
        .args(["--quiet", "--synthetic-train", &n_train.to_string()])
        .args(["--synthetic-val", "64"])
        .arg("--data-dir")
        .arg(dir.join(format!("data-{n_train}")))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra);
    command
}

fn image_tokens(vqvae: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_image-tokens"));
    command.arg("--vqvae").arg(vqvae).args(args);
    command
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The thresholds, and why:
/// - PSNR at least 5 dB above predicting every image as the mean training image. The synthetic
///   images are mostly flat, noisy background (the mean image already scores about 21.5 dB), so
///   the floor is high; 5 dB more means an MSE under a third of the floor's, which needs the
///   coloured objects back at their places (a blurred background alone stays near the floor).
///   Measured on this setting (512 images, 10 epochs of batch 16) with seeds 0, 1, 2: +6.7,
///   +6.3 and +6.4 dB, and 87%, 86% and 91% of the codes used.
/// - More than half of the 512 codes used on the held-out images.
#[test]
fn a_short_run_reconstructs_held_out_images_and_uses_most_of_the_codebook() {
    let dir = common::tempdir();
    let out = dir.path().join("vqvae");
    run(train_vqvae(
        dir.path(),
        "vqvae",
        512,
        &["--epochs", "10", "--batch-size", "16"],
    ));
    let result = json(&out.join("result.json"));
    let last = &result["final_epoch"];
    let psnr = last["eval"]["psnr"].as_f64().unwrap();
    let floor = result["mean_image_psnr"].as_f64().unwrap();
    let codes_used = last["eval"]["codes_used"].as_f64().unwrap();
    assert!(
        psnr >= floor + 5.0,
        "held-out PSNR {psnr:.2} dB is not 5 dB above the mean-image floor {floor:.2} dB"
    );
    assert!(
        codes_used > 0.5,
        "only {codes_used:.2} of the codebook is used"
    );

    for file in [
        "config.json",
        "vqvae.safetensors",
        "vqvae-config.json",
        "curve-loss.png",
        "curve-psnr.png",
        "curve-perplexity.png",
        "curve-codes-used.png",
        "reconstructions/epoch-010.png",
        "tokens-train2014.safetensors",
        "tokens-val2014.safetensors",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    // Finished: no resume state is left behind.
    assert!(!out.join("state.json").exists());
    // 8 held-out images above their 8 reconstructions, 32 px shown 4x with 2 px gaps, each
    // row under an 18 px strip that holds its label.
    let grid = image::open(out.join("reconstructions/epoch-010.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (8 * 130 + 2, 2 * (18 + 130) + 2)
    );

    // Tokens: every held-out image as an 8x8 grid, and decoding them gives images back.
    let tokens = ImageTokens::load(&out.join("tokens-val2014.safetensors")).unwrap();
    assert_eq!(tokens.len(), 64);
    assert_eq!(tokens.info.grid, [8, 8]);
    assert_eq!(tokens.info.image_size, 32);
    let decoded = dir.path().join("decoded");
    run(image_tokens(
        &out,
        &[
            "decode",
            out.join("tokens-val2014.safetensors").to_str().unwrap(),
            "--out",
            decoded.to_str().unwrap(),
            "--limit",
            "5",
        ],
    ));
    let first = decoded.join(format!("{}.png", tokens.image_ids[0]));
    let image = image::open(first).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
    assert!(decoded.join("grid.png").exists());
}

#[test]
fn an_interrupted_run_resumes_and_matches_and_stale_tokens_are_refused() {
    let dir = common::tempdir();
    let args = ["--epochs", "3"];
    run(train_vqvae(dir.path(), "reference", 256, &args));

    // The same run, killed once its first epoch is committed, then started again.
    common::kill_once_exists(
        train_vqvae(dir.path(), "interrupted", 256, &args),
        &dir.path().join("interrupted/state.json"),
    );
    let output = run(train_vqvae(dir.path(), "interrupted", 256, &args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resuming after epoch"), "{stderr}");
    let reference = json(&dir.path().join("reference/result.json"));
    let resumed = json(&dir.path().join("interrupted/result.json"));
    for field in [
        "/eval/recon_loss",
        "/eval/psnr",
        "/eval/perplexity",
        "/train/reconstruction",
    ] {
        assert_eq!(
            reference["final_epoch"].pointer(field),
            resumed["final_epoch"].pointer(field),
            "{field} differs after resuming"
        );
    }

    // Re-encoding with the same checkpoint reproduces the stored tokens.
    let reference_dir = dir.path().join("reference");
    let again = dir.path().join("again.safetensors");
    run(image_tokens(
        &reference_dir,
        &[
            "encode",
            "--split",
            "val2014",
            "--data-dir",
            dir.path().join("data-256").to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ],
    ));
    let stored = ImageTokens::load(&reference_dir.join("tokens-val2014.safetensors")).unwrap();
    let encoded = ImageTokens::load(&again).unwrap();
    assert_eq!(stored.codes, encoded.codes);
    assert_eq!(stored.image_ids, encoded.image_ids);
    assert_eq!(stored.info, encoded.info);

    // Another checkpoint (another seed) refuses the reference's tokens, naming the field.
    run(train_vqvae(
        dir.path(),
        "other",
        256,
        &["--epochs", "1", "--seed", "1"],
    ));
    let tokens_path = reference_dir.join("tokens-val2014.safetensors");
    let stderr = fails(image_tokens(
        &dir.path().join("other"),
        &["decode", tokens_path.to_str().unwrap()],
    ));
    assert!(
        stderr.contains("VQ-VAE checkpoint") && stderr.contains("tokens-val2014.safetensors"),
        "{stderr}"
    );
    let other_fingerprint =
        vislang::data::checkpoint_fingerprint(&dir.path().join("other/vqvae.safetensors")).unwrap();
    assert!(ImageTokens::load_expecting(
        &tokens_path,
        &TokenExpectation {
            vqvae_checkpoint: other_fingerprint,
            image_size: 32,
            n_codes: 512,
        }
    )
    .is_err());
}

#[test]
fn bad_settings_and_a_foreign_run_directory_get_clear_errors() {
    let dir = common::tempdir();
    let stderr = fails(train_vqvae(dir.path(), "a", 64, &["--image-size", "30"]));
    assert!(
        stderr.contains("30 px") && stderr.contains("multiple"),
        "{stderr}"
    );
    let stderr = fails(train_vqvae(dir.path(), "b", 64, &["--downsample", "2"]));
    assert!(stderr.contains("4, 8 or 16"), "{stderr}");

    run(train_vqvae(dir.path(), "c", 64, &["--epochs", "1"]));
    let stderr = fails(train_vqvae(dir.path(), "c", 64, &["--epochs", "2"]));
    assert!(
        stderr.contains("different config") && stderr.contains("--out"),
        "{stderr}"
    );

    // A corrupt checkpoint names the file.
    std::fs::write(dir.path().join("c/vqvae.safetensors"), b"garbage").unwrap();
    let tokens = dir.path().join("c/tokens-val2014.safetensors");
    let stderr = fails(image_tokens(
        &dir.path().join("c"),
        &["decode", tokens.to_str().unwrap()],
    ));
    assert!(stderr.contains("vqvae.safetensors"), "{stderr}");
}
