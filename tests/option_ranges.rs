//! Every numeric option of every binary has a checked range: an out-of-range value is refused
//! while parsing, with a message naming the option, before anything is read or written. The
//! options are found from each binary's `--help`, so a new option is covered without editing
//! this test.

use crate::common;

use std::path::Path;
use std::process::Command;

/// Binaries (with the subcommand whose options are tested).
const BINARIES: [(&str, &[&str]); 13] = [
    (env!("CARGO_BIN_EXE_classify"), &[]),
    (env!("CARGO_BIN_EXE_finetune-vqa"), &[]),
    (env!("CARGO_BIN_EXE_train-vqvae"), &[]),
    (env!("CARGO_BIN_EXE_train-dalle"), &[]),
    (env!("CARGO_BIN_EXE_pretrain-lxmert"), &[]),
    (env!("CARGO_BIN_EXE_generate"), &[]),
    (env!("CARGO_BIN_EXE_evaluate-dalle"), &[]),
    (env!("CARGO_BIN_EXE_image-tokens"), &["encode"]),
    (
        env!("CARGO_BIN_EXE_image-tokens"),
        &["decode", "tokens.safetensors"],
    ),
    (env!("CARGO_BIN_EXE_lxmert-features"), &["boxes"]),
    (
        env!("CARGO_BIN_EXE_lxmert-features"),
        &["convert", "--tsv", "a.tsv"],
    ),
    (env!("CARGO_BIN_EXE_bench"), &[]),
    (env!("CARGO_BIN_EXE_fid"), &["real", "generated"]),
];

/// Value placeholders of options that are not numbers (paths, names, lists of names).
const NOT_NUMERIC: [&str; 25] = [
    "COCO_ROOT",
    "DATA_DIR",
    "CACHE_DIR",
    "OUT",
    "OUTPUT",
    "DEVICE",
    "MODELS",
    "DIR",
    "TOKENIZER",
    "VQVAE",
    "DALLE",
    "JUDGE",
    "RERANK_WITH",
    "CAPTION",
    "CAPTIONS",
    "FEATURES",
    "SECTIONS",
    "TSV",
    "SPLIT",
    "LXMERT_WEIGHTS",
    "DEVICES",
    "RUN",
    "STAGES",
    "INCEPTION",
    "MARKDOWN",
];

/// Counts where 0 means nothing sensible (options where 0 means "off", such as --top-k and
/// --grad-clip, are documented as such in `--help`).
const ZERO_REFUSED: [&str; 30] = [
    "--epochs",
    "--batch-size",
    "--lr",
    "--max-train-images",
    "--max-eval-images",
    "--synthetic-train",
    "--synthetic-val",
    "--synthetic-image-size",
    "--log-every",
    "--growth-images",
    "--image-size",
    "--jobs",
    "--pretraining-epochs",
    "--codes",
    "--code-dim",
    "--hidden",
    "--text-len",
    "--bpe-vocab",
    "--d-model",
    "--heads",
    "--layers",
    "--sparse-kernel",
    "--num",
    "--candidates",
    "--num-captions",
    "--temperature",
    "--lxmert-layers",
    "--lxmert-width",
    "--lxmert-heads",
    "--lxmert-ffn",
];

/// `--name <PLACEHOLDER>` pairs in a `--help` text.
fn valued_options(help: &str) -> Vec<(String, String)> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            if !line.starts_with('-') {
                return None;
            }
            let long = line.find("--").map(|i| &line[i..])?;
            let (name, value) = long.split_once(" <")?;
            let value = value.split('>').next()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Runs `binary args` in `dir`: its exit code and standard error.
fn run_in(dir: &Path, binary: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

fn refused(binary: &str, prefix: &[&str], option: &str, value: &str, dir: &Path) {
    let mut args = prefix.to_vec();
    let option_value = format!("{option}={value}");
    args.push(&option_value);
    let (code, stderr) = run_in(dir, binary, &args);
    let name = Path::new(binary).file_name().unwrap().to_string_lossy();
    assert_eq!(
        code,
        Some(2),
        "{name} {option} {value} was not refused while parsing: {stderr}"
    );
    assert!(
        stderr.contains(&format!("'{option} <")) && !stderr.contains("panicked"),
        "{name} {option} {value}: {stderr}"
    );
}

#[test]
fn every_numeric_option_refuses_values_out_of_its_range_before_writing_anything() {
    let dir = common::tempdir();
    let mut tested = 0;
    for (binary, prefix) in BINARIES {
        let help = Command::new(binary)
            .args(prefix)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for (option, placeholder) in valued_options(&help) {
            if NOT_NUMERIC.contains(&placeholder.as_str()) {
                continue;
            }
            // Not a number, not finite, negative: no numeric option takes these.
            for value in ["NaN", "1e400", "-1", "seven"] {
                refused(binary, prefix, &option, value, dir.path());
            }
            if ZERO_REFUSED.contains(&option.as_str()) {
                refused(binary, prefix, &option, "0", dir.path());
            }
            tested += 1;
        }
    }
    assert!(tested >= 60, "only {tested} numeric options found");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a refused command wrote into its working directory"
    );
}

#[test]
fn ranges_named_in_the_issue_are_refused_with_the_allowed_values() {
    let dir = common::tempdir();
    let cases: [(&str, &[&str], &str); 6] = [
        (
            env!("CARGO_BIN_EXE_train-dalle"),
            &["--caption-dropout", "1.5"],
            "[0, 1]",
        ),
        (
            env!("CARGO_BIN_EXE_generate"),
            &["--guidance", "NaN"],
            "finite",
        ),
        (
            env!("CARGO_BIN_EXE_generate"),
            &["--top-p", "1.5"],
            "(0, 1]",
        ),
        (
            env!("CARGO_BIN_EXE_generate"),
            &["--temperature", "0"],
            "above 0",
        ),
        (
            env!("CARGO_BIN_EXE_classify"),
            &["--image-size", "0"],
            "at least 1",
        ),
        (
            env!("CARGO_BIN_EXE_train-vqvae"),
            &["--hidden", "0"],
            "at least 1",
        ),
    ];
    for (binary, args, allowed) in cases {
        let (code, stderr) = run_in(dir.path(), binary, args);
        assert!(
            code != Some(0) && stderr.contains(args[0]) && stderr.contains(allowed),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sizes_that_cannot_fit_in_memory_are_refused_with_the_estimate_before_any_data_is_made() {
    use vislang::inference::vqvae::TrainedVqVaeConfig;
    use vislang::models::vqvae::VqVaeConfig;
    let dir = common::tempdir();
    // train-dalle reads its grid from the VQ-VAE's config: a 32 px, 8x8-token tokenizer.
    let vqvae = dir.path().join("vqvae");
    std::fs::create_dir(&vqvae).unwrap();
    let trained = TrainedVqVaeConfig {
        image_size: 32,
        model: VqVaeConfig::new(4, 512),
    };
    std::fs::write(
        vqvae.join("vqvae-config.json"),
        serde_json::to_vec(&trained).unwrap(),
    )
    .unwrap();
    let no_tensors: Vec<(&str, safetensors::tensor::TensorView)> = Vec::new();
    std::fs::write(
        vqvae.join("vqvae.safetensors"),
        safetensors::serialize(no_tensors, None).unwrap(),
    )
    .unwrap();
    let cases: [(&str, &[&str]); 4] = [
        (env!("CARGO_BIN_EXE_classify"), &["--image-size", "99996"]),
        (
            env!("CARGO_BIN_EXE_pretrain-lxmert"),
            &["--image-size", "99996"],
        ),
        (
            env!("CARGO_BIN_EXE_train-vqvae"),
            &["--image-size", "99840"],
        ),
        (
            env!("CARGO_BIN_EXE_train-dalle"),
            &["--vqvae", "vqvae", "--text-len", "1000000"],
        ),
    ];
    for (binary, args) in cases {
        let (code, stderr) = run_in(dir.path(), binary, args);
        assert!(
            code == Some(1)
                && stderr.contains("needs at least")
                && stderr.contains("GB is available")
                && stderr.contains(if args[0] == "--vqvae" {
                    "--text-len"
                } else {
                    "--image-size"
                }),
            "{args:?}: {stderr}"
        );
    }
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, vec!["vqvae"], "no data, cache or run directory");
}

#[test]
fn a_precision_or_device_this_build_cannot_run_is_refused_before_writing_anything() {
    let dir = common::tempdir();
    let (code, stderr) = run_in(
        dir.path(),
        env!("CARGO_BIN_EXE_train-vqvae"),
        &["--precision", "f64"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--precision") && stderr.contains("f32, bf16, f16"),
        "{stderr}"
    );
    // Data parallel needs devices of one kind, and --devices replaces --device.
    for binary in [
        env!("CARGO_BIN_EXE_pretrain-lxmert"),
        env!("CARGO_BIN_EXE_train-dalle"),
    ] {
        let (code, stderr) = run_in(dir.path(), binary, &["--devices", "cpu,wgpu:cpu"]);
        assert!(code.is_some_and(|c| c != 0), "{stderr}");
        assert!(
            stderr.contains("cpu") && stderr.contains("wgpu"),
            "{stderr}"
        );
        let (code, stderr) = run_in(
            dir.path(),
            binary,
            &["--devices", "cpu,cpu", "--device", "cpu"],
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("--device"), "{stderr}");
    }
    #[cfg(not(any(feature = "wgpu", feature = "wgpu-untuned")))]
    for (binary, args) in [
        (
            env!("CARGO_BIN_EXE_train-vqvae"),
            &["--device", "wgpu:cpu"][..],
        ),
        (
            env!("CARGO_BIN_EXE_generate"),
            &["--device", "wgpu:cpu", "--caption", "a"][..],
        ),
    ] {
        let (code, stderr) = run_in(dir.path(), binary, args);
        assert!(code.is_some_and(|c| c != 0), "{stderr}");
        assert!(stderr.contains("--features wgpu"), "{stderr}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a refused command wrote into its working directory"
    );
}
