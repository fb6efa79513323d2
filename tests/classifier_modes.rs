//! The single-stream classifier in its three modes.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use vislang::data::TextBatch;
use vislang::models::classifier::{Modality, SingleStreamClassifier, SingleStreamClassifierConfig};
use vislang::train::classify::classifier_run::bce_with_logits;
use vislang::train::engine::gradients::params_without_gradient;

type B = Autodiff<Flex>;

const CLS: u32 = 2;
const SEP: u32 = 3;
const PAD: u32 = 0;

fn config(modality: Modality) -> SingleStreamClassifierConfig {
    SingleStreamClassifierConfig::new(modality, 5, 20, CLS, SEP, 6, 16)
        .with_patch_size(8)
        .with_stem_channels(4)
        .with_d_feature(8)
        .with_d_model(16)
        .with_n_heads(2)
        .with_n_layers(2)
        .with_d_hidden(32)
        .with_dropout(0.0)
}

fn inputs(seed: u64) -> (Tensor<B, 4>, TextBatch<B>) {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let images = Tensor::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let a: &[u32] = &[5, 6, 7];
    let b: &[u32] = &[8 + seed as u32 % 10];
    (
        images,
        TextBatch::from_sequences(&[a, b], Some(SEP), PAD, &device),
    )
}

fn model(modality: Modality) -> SingleStreamClassifier<B> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    config(modality).init(&device)
}

fn logits(model: &SingleStreamClassifier<B>, images: Tensor<B, 4>, text: TextBatch<B>) -> Vec<f32> {
    let out = model.forward(images, text);
    assert_eq!(out.logits.dims(), [2, 5]);
    assert_eq!(out.cls_state.dims(), [2, 16]);
    out.logits.into_data().to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn image_only_ignores_text_and_reads_pixels() {
    let model = model(Modality::ImageOnly);
    let (images, text) = inputs(1);
    let (other_images, other_text) = inputs(2);
    let base = logits(&model, images.clone(), text);
    assert!(max_abs_diff(&base, &logits(&model, images, other_text.clone())) < 1e-6);
    assert!(max_abs_diff(&base, &logits(&model, other_images, other_text)) > 1e-4);
    assert!(model.patch_encoder.is_some());
}

#[test]
fn text_only_ignores_pixels_and_reads_text() {
    let model = model(Modality::TextOnly);
    let (images, text) = inputs(1);
    let (other_images, other_text) = inputs(2);
    let base = logits(&model, images, text.clone());
    assert!(max_abs_diff(&base, &logits(&model, other_images.clone(), text)) < 1e-6);
    assert!(max_abs_diff(&base, &logits(&model, other_images, other_text)) > 1e-4);
    assert!(model.patch_encoder.is_none() && model.visual_embeddings.is_none());
}

#[test]
fn joint_reads_both() {
    let model = model(Modality::Joint);
    let (images, text) = inputs(1);
    let (other_images, other_text) = inputs(2);
    let base = logits(&model, images.clone(), text.clone());
    assert!(max_abs_diff(&base, &logits(&model, images, other_text)) > 1e-4);
    assert!(max_abs_diff(&base, &logits(&model, other_images, text)) > 1e-4);
}

#[test]
fn gradients_reach_every_parameter_in_every_mode() {
    for modality in Modality::ALL {
        let model = model(modality);
        let (images, text) = inputs(1);
        let device = Default::default();
        let targets = Tensor::<B, 2>::from_data(
            [[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]],
            &device,
        );
        let loss = bce_with_logits(model.forward(images, text).logits, targets);
        let grads = loss.backward();
        let unreached = params_without_gradient(&model, &grads);
        assert!(
            unreached.is_empty(),
            "{modality:?}: no gradient for {unreached:?}"
        );
    }
}
