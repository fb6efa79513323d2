//! FID against pytorch-fid (tests/fixtures/fid, made by its make_fixture.py from pytorch-fid
//! 0.3.0's own network, image reader and `calculate_frechet_distance`): the network's
//! features, the score, the weights file's checks and the protocol record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use vislang::backend::CpuBackend as B;
use vislang::inference::fid::{
    folder_fid, frechet_distance, image_files, FeatureStream, FidError, InceptionNetwork, RgbImage,
};

use crate::common::{fails, run, tempdir};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fid")
        .join(name)
}

/// splitmix64 uniform draws exactly as make_fixture.py makes them (see its header).
fn splitmix_values(seed: u64, count: usize, low: f64, high: f64) -> Vec<f32> {
    (1..=count as u64)
        .map(|k| {
            let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / (1u64 << 24) as f64;
            (low + (high - low) * u) as f32
        })
        .collect()
}

/// The fixture's seeded weights under pytorch-fid's names, as (name, shape, values).
fn seeded_weights() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("weights.json")).unwrap()).unwrap();
    manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let count = shape.iter().product();
            let values = splitmix_values(
                t["seed"].as_u64().unwrap(),
                count,
                t["low"].as_f64().unwrap(),
                t["high"].as_f64().unwrap(),
            );
            (t["name"].as_str().unwrap().to_string(), shape, values)
        })
        .collect()
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), raw)
        })
        .collect();
    let views: HashMap<String, TensorView<'_>> = bytes
        .iter()
        .map(|(name, shape, raw)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), raw).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(&views, None, path).unwrap();
}

/// The seeded weights as a safetensors file, written once per test process.
pub fn weights_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "vislang-fid-seeded-inception-{}.safetensors",
            std::process::id()
        ));
        write_safetensors(&path, &seeded_weights());
        path
    })
}

fn network() -> InceptionNetwork<B> {
    InceptionNetwork::load(weights_file(), &Default::default()).unwrap()
}

fn read_set(folder: &str) -> Vec<image::RgbImage> {
    image_files(&fixture(folder))
        .unwrap()
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect()
}

fn views(images: &[image::RgbImage]) -> Vec<RgbImage<'_>> {
    images
        .iter()
        .map(|i| RgbImage {
            pixels: i.as_raw(),
            height: i.height() as usize,
            width: i.width() as usize,
        })
        .collect()
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

/// Activations within 1e-4 of the largest activation: f32 through 94 convolutions, summed in
/// another order than oneDNN's, differs by about 1e-6 per layer; a wrong resize, scaling,
/// padding or pooling differs by more than 1e-2.
#[test]
fn features_and_fid_match_pytorch_fid() {
    let network = network();
    // Every tensor of the file but the classifier (burn counts batch norm's running
    // statistics with the parameters).
    let parameters: usize = seeded_weights()
        .iter()
        .filter(|(name, ..)| !name.starts_with("fc."))
        .map(|(_, shape, _)| shape.iter().product::<usize>())
        .sum();
    assert_eq!(network.num_params(), parameters);
    let reference = std::fs::read(fixture("activations.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&reference).unwrap();
    for set in ["set_a", "set_b"] {
        let images = read_set(set);
        let ours = network.features_of(&views(&images), &Default::default());
        let theirs: Vec<f32> = reference
            .tensor(set)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(ours.len(), theirs.len());
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(&theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{set}: max |diff| {worst:e} of max |activation| {scale}");
        assert!(
            worst / scale < 1e-4,
            "{set}: max |diff| {worst}, scale {scale}"
        );
    }
    // FID within 1e-3 relative: the features' 1e-4 moves a score of this size by about 1e-5,
    // and the square root here is an eigendecomposition where pytorch-fid uses scipy's sqrtm.
    let score = folder_fid(
        &network,
        &fixture("set_a"),
        &fixture("set_b"),
        5,
        &Default::default(),
    )
    .unwrap();
    let fid_a_b = expected()["fid_a_b"].as_f64().unwrap();
    println!("FID {} vs pytorch-fid's {fid_a_b}", score.fid);
    assert!(
        ((score.fid - fid_a_b) / fid_a_b).abs() < 1e-3,
        "FID {} vs pytorch-fid's {fid_a_b}",
        score.fid
    );
    assert_eq!(
        (score.protocol.images_first, score.protocol.images_second),
        (16, 16)
    );
}

/// The same images against themselves score 0, and perturbing them more scores more.
#[test]
fn fid_is_zero_on_itself_and_grows_with_noise() {
    let network = network();
    let device = Default::default();
    let images = read_set("set_a");
    let statistics = |images: &[image::RgbImage]| {
        let mut stream = FeatureStream::new(&network, &device);
        stream.add(&views(images));
        stream.statistics
    };
    let clean = statistics(&images);
    let itself = frechet_distance(&clean, &clean).unwrap();
    // Not exactly 0: the covariance of 16 images has 2032 zero eigenvalues, whose rounding
    // the square root lifts (pytorch-fid gives -1.5e-4 here, 2e-6 of the covariance's trace).
    let covariance = clean.covariance();
    let trace: f64 = (0..covariance.nrows()).map(|i| covariance[(i, i)]).sum();
    assert!(
        itself.abs() < 1e-5 * trace,
        "FID of a set with itself: {itself}, trace {trace}"
    );
    let mut previous = 0.0;
    for amplitude in [4i32, 16, 48] {
        let noisy: Vec<image::RgbImage> = images
            .iter()
            .enumerate()
            .map(|(n, image)| {
                let mut image = image.clone();
                for (i, p) in image.iter_mut().enumerate() {
                    // A fixed pattern of ± amplitude, different per image and pixel.
                    let sign = if (i * 31 + n * 17) % 7 < 3 { -1 } else { 1 };
                    *p = (*p as i32 + sign * amplitude).clamp(0, 255) as u8;
                }
                image
            })
            .collect();
        let fid = frechet_distance(&clean, &statistics(&noisy)).unwrap();
        assert!(
            fid > previous,
            "noise {amplitude}: FID {fid} after {previous}"
        );
        previous = fid;
    }
}

#[test]
fn the_protocol_names_the_weights_by_checksum() {
    let network = network();
    let weights = &network.weights;
    assert_eq!(weights.file, weights_file());
    assert_eq!(weights.sha256.len(), 64);
    assert!(!weights.official, "the seeded file is not pytorch-fid's");
    let score = folder_fid(
        &network,
        &fixture("set_a"),
        &fixture("set_a"),
        16,
        &Default::default(),
    )
    .unwrap();
    let json = serde_json::to_string(&score).unwrap();
    let back: vislang::inference::fid::FidScore = serde_json::from_str(&json).unwrap();
    assert_eq!(back, score);
    let lines = score.protocol.lines().join("\n");
    for needed in [
        "images: 16 and 16",
        &weights.sha256,
        "299 x 299",
        "align_corners=False",
        "f64",
    ] {
        assert!(lines.contains(needed), "{needed} missing from:\n{lines}");
    }
}

fn load_error(path: &Path) -> String {
    match InceptionNetwork::<B>::load(path, &Default::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_missing_corrupt_or_wrong_weights_file_is_named() {
    let dir = tempdir();
    let missing = dir.path().join("pt_inception.pth");
    let message = load_error(&missing);
    assert!(
        message.contains("pt_inception.pth") && message.contains("github.com/mseitzer/pytorch-fid"),
        "{message}"
    );

    let corrupt = dir.path().join("corrupt.pth");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a zip archive").unwrap();
    let message = load_error(&corrupt);
    assert!(message.contains("corrupt.pth"), "{message}");

    // One tensor of the wrong shape, one missing, one the network does not have.
    let mut tensors = seeded_weights();
    let wrong = tensors
        .iter()
        .position(|t| t.0 == "Mixed_6b.branch7x7_2.conv.weight")
        .unwrap();
    tensors[wrong].1 = vec![192, 128, 7, 1];
    tensors[wrong].2 = vec![0.0; 192 * 128 * 7];
    tensors.retain(|t| t.0 != "Mixed_7c.branch_pool.bn.running_var");
    tensors.push(("extra.weight".into(), vec![1], vec![0.0]));
    let wrong_file = dir.path().join("wrong.safetensors");
    write_safetensors(&wrong_file, &tensors);
    let message = load_error(&wrong_file);
    for needed in [
        "wrong.safetensors",
        "Mixed_6b.branch7x7_2.conv.weight: shape [192, 128, 7, 1] in the file, [128, 128, 1, 7] expected",
        "Mixed_7c.branch_pool.bn.running_var: missing",
        "extra.weight",
        "pt_inception-2015-12-05",
    ] {
        assert!(message.contains(needed), "{needed} not in:\n{message}");
    }
}

#[test]
fn folders_without_two_readable_images_are_refused() {
    let dir = tempdir();
    std::fs::write(dir.path().join("only.png"), b"not a png").unwrap();
    match image_files(dir.path()) {
        Err(FidError::Image { message, .. }) => {
            assert!(message.contains("at least 2"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.path().join("second.png"), b"not a png either").unwrap();
    let network = network();
    let message = folder_fid(
        &network,
        dir.path(),
        &fixture("set_a"),
        4,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("only.png") && message.contains("not a readable image"),
        "{message}"
    );
}

#[test]
fn the_fid_binary_prints_the_score_and_its_protocol() {
    let dir = tempdir();
    let out = dir.path().join("fid.json");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fid"));
    command
        .arg(fixture("set_a"))
        .arg(fixture("set_b"))
        .arg("--inception")
        .arg(weights_file())
        .args(["--batch-size", "6", "--out"])
        .arg(&out);
    let stdout = String::from_utf8_lossy(&run(command).stdout).to_string();
    let fid_a_b = expected()["fid_a_b"].as_f64().unwrap();
    assert!(stdout.contains(&format!("FID {fid_a_b:.2}")), "{stdout}");
    assert!(
        stdout.contains("images: 16 and 16") && stdout.contains("sha256"),
        "{stdout}"
    );
    let score: vislang::inference::fid::FidScore =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(((score.fid - fid_a_b) / fid_a_b).abs() < 1e-3);

    let mut missing = std::process::Command::new(env!("CARGO_BIN_EXE_fid"));
    missing
        .arg(fixture("set_a"))
        .arg(fixture("set_b"))
        .arg("--inception")
        .arg(dir.path().join("nowhere.pth"));
    let stderr = fails(missing);
    assert!(
        stderr.contains("nowhere.pth") && stderr.contains("pytorch-fid"),
        "{stderr}"
    );
}
