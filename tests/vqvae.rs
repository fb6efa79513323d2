//! The VQ-VAE image tokenizer: quantizer numerics checked by hand, shapes, gradient flow.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::{Distribution, Int, Tensor};
use vislang::models::vqvae::{VectorQuantizer, VectorQuantizerConfig, VqVaeConfig};
use vislang::train::engine::gradients::params_without_gradient;

type B = Flex;
type AB = Autodiff<Flex>;

fn quantizer(codebook: Tensor<B, 2>, decay: f64, dead_threshold: f64) -> VectorQuantizer<B> {
    let [k, d] = codebook.dims();
    let mut vq = VectorQuantizerConfig::new(k, d)
        .with_decay(decay)
        .with_epsilon(0.0)
        .with_dead_threshold(dead_threshold)
        .init::<B>(&Default::default());
    vq.embed_sum = Param::from_tensor(codebook.clone());
    vq.codebook = Param::from_tensor(codebook);
    vq
}

fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn ints<const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec().unwrap()
}

#[test]
fn the_quantizer_picks_the_nearest_code() {
    let device = Default::default();
    let codebook = Tensor::<B, 2>::from_data([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], &device);
    let vq = quantizer(codebook, 0.99, 0.0);
    let z = Tensor::<B, 2>::from_data(
        [[1.0, 1.0], [9.0, 1.0], [2.0, 8.0], [6.0, 0.0], [-5.0, 4.0]],
        &device,
    );
    let out = vq.forward(z.clone());
    assert_eq!(ints(out.codes), vec![0, 1, 2, 1, 0]);
    assert_eq!(
        floats(out.quantized),
        vec![0.0, 0.0, 10.0, 0.0, 0.0, 10.0, 10.0, 0.0, 0.0, 0.0]
    );
    // Commitment: 0.25 * mean of squared distances to the chosen codes.
    let squared: f32 = [2.0, 2.0, 8.0, 16.0, 41.0].iter().sum();
    let expected = 0.25 * squared / 10.0;
    assert!((floats(out.commitment_loss)[0] - expected).abs() < 1e-5);
}

#[test]
fn the_ema_update_matches_a_hand_computed_step() {
    let device = Default::default();
    // Two 1-d codes at 0 and 10, counts 1 and 1; decay 0.5, no smoothing.
    let vq = quantizer(Tensor::from_data([[0.0], [10.0]], &device), 0.5, 0.0);
    let z = Tensor::<B, 2>::from_data([[1.0], [2.0], [9.0]], &device);
    let codes = vq.nearest_codes(z.clone()); // [0, 0, 1]
    let vq = vq.ema_update(z, codes);
    // counts [2, 1], sums [3, 9]:
    // cluster = 0.5 * [1, 1] + 0.5 * [2, 1] = [1.5, 1.0]
    // embed_sum = 0.5 * [0, 10] + 0.5 * [3, 9] = [1.5, 9.5]
    // codebook = embed_sum / cluster = [1.0, 9.5]
    assert_eq!(floats(vq.cluster_size.val()), vec![1.5, 1.0]);
    assert_eq!(floats(vq.embed_sum.val()), vec![1.5, 9.5]);
    assert_eq!(floats(vq.codebook.val()), vec![1.0, 9.5]);
}

#[test]
fn dead_codes_are_reseeded_from_encoder_outputs() {
    let device = Default::default();
    let mut vq = quantizer(
        Tensor::from_data([[0.0], [10.0], [100.0]], &device),
        0.5,
        0.1,
    );
    vq.cluster_size = Param::from_tensor(Tensor::from_data([1.0, 1.0, 0.05], &device));
    let z = Tensor::<B, 2>::from_data([[1.0], [2.0], [9.0]], &device);
    let codes = vq.nearest_codes(z.clone());
    let vq = vq.ema_update(z, codes);
    // Code 2 received nothing: its count decays to 0.025 < 0.1, so it restarts at an input.
    let codebook = floats(vq.codebook.val());
    assert!([1.0, 2.0, 9.0].contains(&codebook[2]), "{codebook:?}");
    assert_eq!(floats(vq.cluster_size.val())[2], 1.0);
    assert!(
        (codebook[0] - 1.0).abs() < 1e-5 && (codebook[1] - 9.5).abs() < 1e-5,
        "{codebook:?}"
    );
}

#[test]
fn encode_and_decode_shapes_for_every_downsampling_factor() {
    let device = Default::default();
    for f in [4, 8, 16] {
        let model = VqVaeConfig::new(f, 32)
            .with_hidden(8)
            .with_d_code(4)
            .init::<B>(&device);
        let images =
            Tensor::<B, 4>::random([2, 3, 32, 48], Distribution::Normal(0.0, 1.0), &device);
        let out = model.forward(images.clone());
        assert_eq!(out.reconstruction.dims(), [2, 3, 32, 48]);
        assert_eq!(out.codes.dims(), [2, 32 / f, 48 / f]);
        assert_eq!(out.latents.dims(), [2 * (32 / f) * (48 / f), 4]);
        let codes = model.encode(images);
        assert_eq!(ints(codes.clone()), ints(out.codes));
        assert!(ints(codes.clone()).iter().all(|&c| (0..32).contains(&c)));
        assert_eq!(model.decode(codes).dims(), [2, 3, 32, 48]);
    }
}

#[test]
fn gradients_pass_straight_through_to_the_encoder_but_not_to_the_codebook() {
    let device = Default::default();
    let model = VqVaeConfig::new(4, 16)
        .with_hidden(8)
        .with_d_code(4)
        .init::<AB>(&device);
    let images = Tensor::<AB, 4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let out = model.forward(images.clone());
    let loss = (out.reconstruction - images).powi_scalar(2).mean() + out.commitment_loss;
    let grads = loss.backward();
    let unreached = params_without_gradient(&model, &grads);
    assert_eq!(
        unreached,
        vec![
            "quantizer.codebook",
            "quantizer.cluster_size",
            "quantizer.embed_sum"
        ]
    );
}

use crate::common;

use vislang::data::{ImageTokens, ImageTokensError, TokenExpectation, TokenFileInfo};
use vislang::train::vqvae::{codebook_usage, psnr};

fn token_file() -> ImageTokens {
    ImageTokens {
        info: TokenFileInfo {
            split: "val2014".into(),
            image_size: 32,
            grid: [2, 3],
            n_codes: 10,
            vqvae_checkpoint: "00000000000000aa".into(),
            images: "00000000000000bb".into(),
        },
        image_ids: vec![7, 42],
        codes: vec![0, 1, 2, 3, 4, 5, 9, 8, 7, 6, 5, 4],
    }
}

#[test]
fn token_files_round_trip_and_refuse_another_checkpoint_or_image_size() {
    let dir = common::tempdir();
    let path = dir.path().join("tokens.safetensors");
    let written = token_file();
    written.save(&path).unwrap();
    let expected = TokenExpectation {
        vqvae_checkpoint: "00000000000000aa".into(),
        image_size: 32,
        n_codes: 10,
    };
    let read = ImageTokens::load_expecting(&path, &expected).unwrap();
    assert_eq!(read.info, written.info);
    assert_eq!(read.image_ids, vec![7, 42]);
    assert_eq!(read.image(1), &[9, 8, 7, 6, 5, 4]);
    assert_eq!(read.index_by_id()[&42], 1);

    let other_checkpoint = TokenExpectation {
        vqvae_checkpoint: "00000000000000cc".into(),
        ..expected.clone()
    };
    let error = ImageTokens::load_expecting(&path, &other_checkpoint).unwrap_err();
    assert!(
        matches!(
            error,
            ImageTokensError::Mismatch {
                field: "VQ-VAE checkpoint",
                ..
            }
        ),
        "{error}"
    );
    // A file whose own codebook is larger than the VQ-VAE's (edited metadata, or codes from
    // another tokenizer with the same weights file) would index past the decoder's codebook.
    let smaller_codebook = TokenExpectation {
        n_codes: 8,
        ..expected.clone()
    };
    let message = ImageTokens::load_expecting(&path, &smaller_codebook)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("codebook size") && message.contains("VQ-VAE's 8 codes"),
        "{message}"
    );
    let other_size = TokenExpectation {
        image_size: 64,
        ..expected
    };
    let error = ImageTokens::load_expecting(&path, &other_size).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("image size") && message.contains("64 px"),
        "{message}"
    );
    assert!(message.contains("tokens.safetensors"), "{message}");
}

#[test]
fn corrupt_token_files_are_refused_with_the_path_and_the_fault() {
    let dir = common::tempdir();
    let path = dir.path().join("tokens.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let error = ImageTokens::load(&path).unwrap_err();
    assert!(matches!(error, ImageTokensError::Format { .. }), "{error}");
    assert!(error.to_string().contains("tokens.safetensors"));

    // A code outside the codebook is caught, not passed on as an embedding index.
    let mut bad = token_file();
    bad.codes[3] = 10;
    bad.save(&path).unwrap();
    let message = ImageTokens::load(&path).unwrap_err().to_string();
    assert!(
        message.contains("code 10") && message.contains("codebook of 10"),
        "{message}"
    );

    let missing = dir.path().join("missing.safetensors");
    let error = ImageTokens::load(&missing).unwrap_err();
    assert!(matches!(error, ImageTokensError::Io { .. }), "{error}");
}

#[test]
fn psnr_and_codebook_usage_match_hand_computed_values() {
    // MSE 0.01 on [0, 1] pixels is 20 dB; 0.001 is 30 dB.
    assert!((psnr(0.01) - 20.0).abs() < 1e-9);
    assert!((psnr(0.001) - 30.0).abs() < 1e-9);
    // Two codes used equally out of four: entropy ln 2, perplexity 2, half the codebook.
    let (perplexity, used) = codebook_usage(&[5.0, 0.0, 5.0, 0.0]);
    assert!((perplexity - 2.0).abs() < 1e-9);
    assert_eq!(used, 0.5);
    // One code only: perplexity 1.
    assert!((codebook_usage(&[0.0, 3.0, 0.0]).0 - 1.0).abs() < 1e-9);
}

/// A safetensors file holding `tensors` (name, f32 values) in the given header order.
fn write_safetensors(path: &std::path::Path, tensors: &[(&str, Vec<f32>)]) {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, values)) in tensors.iter().enumerate() {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let comma = if i == 0 { "" } else { "," };
        header.push_str(&format!(
            r#"{comma}"{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{start},{}]}}"#,
            values.len(),
            data.len()
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// Token files and decoders record the VQ-VAE by its weights, not by how the file lists them:
/// the same tensors in another header order give the same fingerprint, a changed value another.
#[test]
fn checkpoint_fingerprints_follow_the_weights_not_the_file_layout() {
    let dir = common::tempdir();
    let path = |name: &str| dir.path().join(name);
    let (a, b) = (("a", vec![1.0, 2.0]), ("b", vec![3.0]));
    write_safetensors(&path("ab"), &[a.clone(), b.clone()]);
    write_safetensors(&path("ba"), &[b.clone(), a.clone()]);
    write_safetensors(&path("changed"), &[a, ("b", vec![3.5])]);
    let fingerprint = |name: &str| vislang::data::checkpoint_fingerprint(&path(name)).unwrap();
    assert_ne!(
        std::fs::read(path("ab")).unwrap(),
        std::fs::read(path("ba")).unwrap()
    );
    assert_eq!(fingerprint("ab"), fingerprint("ba"));
    assert_ne!(fingerprint("ab"), fingerprint("changed"));
    std::fs::write(path("junk"), b"not safetensors").unwrap();
    assert!(vislang::data::checkpoint_fingerprint(&path("junk")).is_err());
}
