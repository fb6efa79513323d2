//! Checkpoints: round trips, refusal of wrong shapes with the tensors named, atomic writes, and
//! optimizer state that applies to a model rebuilt in another process.

use crate::common;

use std::fs;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend as _;
use burn::tensor::{Tensor, TensorData};
use vislang::data::TextBatch;
use vislang::io::checkpoint::{
    assign_stable_param_ids, load_record, load_safetensors, save_record, save_safetensors,
    CheckpointError,
};
use vislang::models::classifier::{Modality, SingleStreamClassifier, SingleStreamClassifierConfig};
use vislang::train::classify::classifier_run::bce_with_logits;

type B = Autodiff<Flex>;

fn config(d_model: usize) -> SingleStreamClassifierConfig {
    SingleStreamClassifierConfig::new(Modality::Joint, 5, 20, 2, 3, 6, 16)
        .with_patch_size(8)
        .with_stem_channels(4)
        .with_d_feature(8)
        .with_d_model(d_model)
        .with_n_heads(2)
        .with_d_hidden(32)
        .with_dropout(0.0)
}

fn build(d_model: usize, seed: u64) -> SingleStreamClassifier<B> {
    let device = Default::default();
    B::seed(&device, seed);
    assign_stable_param_ids(config(d_model).init(&device))
}

fn loss(model: &SingleStreamClassifier<B>) -> Tensor<B, 1> {
    // Inputs from a formula, not the backend RNG, which tests running in parallel share.
    let device = Default::default();
    let pixels: Vec<f32> = (0..2 * 3 * 16 * 16)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let images = Tensor::from_data(TensorData::new(pixels, [2, 3, 16, 16]), &device);
    let a: &[u32] = &[5, 6, 7];
    let b: &[u32] = &[8];
    let text = TextBatch::from_sequences(&[a, b], Some(3), 0, &device);
    let targets = Tensor::<B, 2>::from_data(
        [[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]],
        &device,
    );
    bce_with_logits(model.forward(images, text).logits, targets)
}

fn value(t: Tensor<B, 1>) -> f32 {
    t.into_scalar()
}

#[test]
fn safetensors_round_trip_restores_every_parameter() {
    let dir = common::tempdir();
    let path = dir.path().join("model.safetensors");
    let original = build(16, 1);
    save_safetensors(&original, &path).unwrap();
    let restored = load_safetensors(build(16, 2), &path).unwrap();
    assert_eq!(value(loss(&original)), value(loss(&restored)));
    assert_ne!(value(loss(&build(16, 2))), value(loss(&original)));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec!["model.safetensors"],
        "no temporary file is left behind"
    );
}

#[test]
fn a_checkpoint_of_the_wrong_shape_is_refused_naming_the_tensors() {
    let dir = common::tempdir();
    let path = dir.path().join("small.safetensors");
    save_safetensors(&build(16, 1), &path).unwrap();
    let error = load_safetensors(build(32, 1), &path).expect_err("shapes differ");
    let message = error.to_string();
    assert!(
        matches!(error, CheckpointError::Mismatch { .. }),
        "{message}"
    );
    assert!(message.contains("small.safetensors"), "{message}");
    assert!(message.contains("head.weight"), "{message}");
    assert!(
        message.contains("[16, 5]") && message.contains("[32, 5]"),
        "{message}"
    );

    // A text-only model has no patch encoder: the image tensors are named as unexpected.
    let device = Default::default();
    let mut text_only = config(16);
    text_only.modality = Modality::TextOnly;
    let text_only = text_only.init::<B>(&device);
    let message = load_safetensors(text_only, &path)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("patch_encoder.stem1.weight: in the file but not in the model"),
        "{message}"
    );
}

#[test]
fn missing_and_corrupt_checkpoints_name_the_file() {
    let dir = common::tempdir();
    let missing = dir.path().join("absent.safetensors");
    let message = load_safetensors(build(16, 1), &missing)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("absent.safetensors"), "{message}");
    let corrupt = dir.path().join("corrupt.safetensors");
    fs::write(
        &corrupt,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    )
    .unwrap();
    let message = load_safetensors(build(16, 1), &corrupt)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("corrupt.safetensors"), "{message}");
}

#[test]
fn optimizer_state_resumes_training_exactly() {
    let dir = common::tempdir();
    let device = Default::default();
    let step = |model: SingleStreamClassifier<B>, optimizer: &mut _| {
        let grads = GradientsParams::from_grads(loss(&model).backward(), &model);
        Optimizer::step(optimizer, 1e-2, model, grads)
    };
    // Uninterrupted: three steps.
    let initial = build(16, 1);
    let mut optimizer = AdamWConfig::new().init::<B, SingleStreamClassifier<B>>();
    let mut model = initial.clone();
    for _ in 0..3 {
        model = step(model, &mut optimizer);
    }
    let uninterrupted = value(loss(&model));

    // Interrupted after one step, then rebuilt from files with fresh (but stable) ids.
    let mut optimizer = AdamWConfig::new().init::<B, SingleStreamClassifier<B>>();
    let model = step(initial, &mut optimizer);
    save_safetensors(&model, &dir.path().join("m.safetensors")).unwrap();
    save_record::<B, _>(optimizer.to_record(), &dir.path().join("o.mpk")).unwrap();
    let mut model = load_safetensors(build(16, 7), &dir.path().join("m.safetensors")).unwrap();
    let record = load_record::<B, _>(&dir.path().join("o.mpk"), &device).unwrap();
    let mut optimizer = AdamWConfig::new()
        .init::<B, SingleStreamClassifier<B>>()
        .load_record(record);
    for _ in 0..2 {
        model = step(model, &mut optimizer);
    }
    let resumed = value(loss(&model));
    assert!(
        (uninterrupted - resumed).abs() < 1e-6,
        "{uninterrupted} vs {resumed}"
    );
    assert!(model.num_params() > 0);
}
