//! LXMERT: parity with Hugging Face's `LxmertModel` / `LxmertForPreTraining` on a committed
//! fixture (tests/fixtures/lxmert, written by its make_fixture.py), and the loader's errors.

use crate::common;

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use common::lxmert_fixture::{
    assert_close, assert_reproduces_fixture, fixture, tiny_config, Io, B,
};
use safetensors::{Dtype, SafeTensors};
use vislang::models::lxmert::hf::{load_lxmert, load_lxmert_pretraining};
use vislang::models::lxmert::{LxmertPretrainingConfig, LxmertText};
use vislang::nn::HfWeightsError;

/// Every position is compared, padded ones included: both implementations compute them the
/// same way, attending only to unpadded keys.
#[test]
fn lxmert_model_checkpoint_reproduces_hugging_face_outputs() {
    let io = Io::load();
    let load = load_lxmert::<B>(
        tiny_config().init(&Default::default()),
        &fixture("lxmert-model.safetensors"),
    )
    .unwrap();
    assert!(load.skipped.is_empty(), "{:?}", load.skipped);
    let (text, regions) = io.inputs();
    let output = load.model.forward(text, regions);
    assert_close(
        "language_output",
        output.language,
        io.float("language_output"),
    );
    assert_close("vision_output", output.vision, io.float("vision_output"));
    assert_close("pooled_output", output.pooled, io.float("pooled_output"));
}

#[test]
fn pretraining_checkpoint_reproduces_encoder_and_head_outputs() {
    let config = LxmertPretrainingConfig::new(tiny_config(), 10)
        .with_n_object_labels(Some(7))
        .with_n_attribute_labels(Some(5));
    let load = load_lxmert_pretraining::<B>(
        config.init(&Default::default()),
        &fixture("lxmert-pretraining.safetensors"),
    )
    .unwrap();
    // Only the visual-QA head is left out.
    assert!(!load.skipped.is_empty());
    assert!(load.skipped.iter().all(|n| n.starts_with("answer_head.")));
    assert_reproduces_fixture(&load.model);
}

#[test]
fn encoder_load_of_pretraining_checkpoint_skips_the_heads_by_name() {
    let load = load_lxmert::<B>(
        tiny_config().init(&Default::default()),
        &fixture("lxmert-pretraining.safetensors"),
    )
    .unwrap();
    assert!(load
        .skipped
        .contains(&"cls.seq_relationship.weight".to_string()));
    assert!(load
        .skipped
        .contains(&"obj_predict_head.decoder_dict.feat.weight".to_string()));
    let (text, regions) = Io::load().inputs();
    assert_close(
        "language_output",
        load.model.forward(text, regions).language,
        Io::load().float("language_output"),
    );
}

/// Rewrites the encoder fixture without one tensor and with one foreign tensor.
fn write_altered_checkpoint(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(fixture("lxmert-model.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let extra = vec![0u8; 16];
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "encoder.x_layers.1.visual_attention.att.key.bias")
        .collect();
    views.push((
        "encoder.x_layers.1.gate.weight".into(),
        safetensors::tensor::TensorView::new(Dtype::F32, vec![4], &extra).unwrap(),
    ));
    let path = dir.join("altered.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn missing_and_unexpected_tensors_are_listed_by_name() {
    let dir = common::tempdir();
    let path = write_altered_checkpoint(dir.path());
    let Err(error) = load_lxmert::<B>(tiny_config().init(&Default::default()), &path) else {
        panic!("an altered checkpoint must not load");
    };
    let message = error.to_string();
    assert!(matches!(error, HfWeightsError::Mismatch { .. }));
    assert!(message.contains("altered.safetensors"), "{message}");
    assert!(
        message.contains("encoder.x_layers.1.visual_attention.att.key.bias: missing"),
        "{message}"
    );
    assert!(
        message.contains("encoder.x_layers.1.gate.weight: in the file but not in the model"),
        "{message}"
    );
}

#[test]
fn a_differently_sized_model_reports_shapes() {
    let config = tiny_config().with_d_hidden(48);
    let Err(error) = load_lxmert::<B>(
        config.init(&Default::default()),
        &fixture("lxmert-model.safetensors"),
    ) else {
        panic!("a model with another FFN width must not load");
    };
    let message = error.to_string();
    assert!(
        message.contains("encoder.layer.0.intermediate.dense.weight: shape [40, 24] in the file, [48, 24] expected"),
        "{message}"
    );
}

#[test]
fn a_corrupt_checkpoint_is_named() {
    let dir = common::tempdir();
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let Err(error) = load_lxmert::<B>(tiny_config().init(&Default::default()), &path) else {
        panic!("garbage must not load");
    };
    assert!(error.to_string().contains("broken.safetensors"), "{error}");
}

mod pretraining {
    use super::*;
    use burn::tensor::backend::Backend;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use vislang::data::{mask_tokens, MaskingConfig, SpecialIds, SPECIAL_TOKENS};
    use vislang::models::lxmert::{
        patch_colour_targets, CrossModalityLayer, LxmertPretraining, Objectives, PretrainingBatch,
        PretrainingVision, PATCH_TARGET_WIDTH,
    };
    use vislang::nn::PatchEncoderConfig;

    fn special() -> SpecialIds {
        SpecialIds {
            pad: 0,
            unk: 1,
            cls: 2,
            sep: 3,
            mask: 4,
        }
    }

    /// 15% chosen; of those 80% [MASK], 10% random, 10% kept; never a special token.
    #[test]
    fn token_masking_follows_berts_rates() {
        let first_word = SPECIAL_TOKENS.len() as u32;
        let vocab = 1000usize;
        let ids: Vec<u32> = (0..200_000)
            .map(|i| first_word + (i % 900) as u32)
            .collect();
        let mut rng = StdRng::seed_from_u64(7);
        let object_tokens = [first_word + 7, first_word + 11];
        let masked = mask_tokens(
            &ids,
            &MaskingConfig::default(),
            special(),
            vocab,
            &object_tokens,
            &mut rng,
        );
        let chosen: Vec<usize> = (0..ids.len())
            .filter(|&i| masked.targets[i].is_some())
            .collect();
        let rate = chosen.len() as f64 / ids.len() as f64;
        assert!((rate - 0.15).abs() < 0.005, "chosen rate {rate}");
        let share = |f: &dyn Fn(usize) -> bool| {
            chosen.iter().filter(|&&i| f(i)).count() as f64 / chosen.len() as f64
        };
        let as_mask = share(&|i| masked.ids[i] == special().mask);
        let kept = share(&|i| masked.ids[i] == ids[i]);
        let random = 1.0 - as_mask - kept;
        assert!((as_mask - 0.8).abs() < 0.01, "[MASK] share {as_mask}");
        // A random replacement equals the original 1 time in 900 (counted as kept).
        assert!((kept - 0.1).abs() < 0.01, "kept share {kept}");
        assert!((random - 0.1).abs() < 0.01, "random share {random}");
        assert!(masked
            .ids
            .iter()
            .all(|&id| id == special().mask || id >= first_word));
        for (i, target) in masked.targets.iter().enumerate() {
            assert!(target.is_some() || masked.ids[i] == ids[i]);
        }

        let specials: Vec<u32> = (0..first_word).collect();
        let untouched = mask_tokens(
            &specials,
            &MaskingConfig::default(),
            special(),
            vocab,
            &[],
            &mut rng,
        );
        assert_eq!(untouched.ids, specials);
        assert!(untouched.targets.iter().all(Option::is_none));
    }

    /// With `object_word_rate`, tokens of object words are chosen at that rate, the others
    /// still at `token_rate`.
    #[test]
    fn object_words_are_chosen_at_their_own_rate() {
        let first_word = SPECIAL_TOKENS.len() as u32;
        let ids: Vec<u32> = (0..200_000).map(|i| first_word + (i % 10) as u32).collect();
        let object_tokens = [first_word + 3, first_word + 8];
        let masking = MaskingConfig {
            object_word_rate: 0.6,
            ..MaskingConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(9);
        let masked = mask_tokens(&ids, &masking, special(), 1000, &object_tokens, &mut rng);
        let rate_of = |object: bool| {
            let positions: Vec<usize> = (0..ids.len())
                .filter(|&i| object_tokens.contains(&ids[i]) == object)
                .collect();
            let chosen = positions
                .iter()
                .filter(|&&i| masked.targets[i].is_some())
                .count();
            chosen as f64 / positions.len() as f64
        };
        assert!((rate_of(true) - 0.6).abs() < 0.01, "{}", rate_of(true));
        assert!((rate_of(false) - 0.15).abs() < 0.005, "{}", rate_of(false));
    }

    /// Each patch's target is the mean colour of its four quadrants, channel-major.
    #[test]
    fn patch_colour_targets_by_hand() {
        // One 8x8 image of 2x2 patches of 4x4 pixels; value = channel*100 + row*8 + col.
        let values: Vec<f32> = (0..3 * 64)
            .map(|i| (i / 64 * 100 + i % 64) as f32)
            .collect();
        let images =
            Tensor::<B, 4>::from_data(TensorData::new(values, [1, 3, 8, 8]), &Default::default());
        let targets = patch_colour_targets(images, 2);
        assert_eq!(targets.dims(), [1, 4, PATCH_TARGET_WIDTH]);
        let t: Vec<f32> = targets.into_data().to_vec().unwrap();
        // Patch 1 (top right), channel 0, quadrants: rows 0-1 x cols 4-5 -> mean of
        // {4, 5, 12, 13} = 8.5; cols 6-7 -> 10.5; rows 2-3: 24.5, 26.5.
        assert_eq!(&t[12..16], &[8.5, 10.5, 24.5, 26.5]);
        // Channel 2 of the same patch is offset by 200.
        assert_eq!(&t[20..24], &[208.5, 210.5, 224.5, 226.5]);
    }

    /// The cross-modality layer holds one cross-attention block, and it serves both
    /// directions: perturbing its key projection changes both streams' outputs.
    #[test]
    fn one_cross_attention_module_serves_both_directions() {
        let device = Default::default();
        B::seed(&device, 3);
        let model = tiny_config().with_n_cross_layers(1).init::<B>(&device);
        let layer: &CrossModalityLayer<B> = &model.cross_layers[0];
        let language =
            Tensor::<B, 3>::random([2, 5, 24], burn::tensor::Distribution::Default, &device);
        let vision =
            Tensor::<B, 3>::random([2, 4, 24], burn::tensor::Distribution::Default, &device);
        let none = vislang::nn::AttentionMask::none();
        let (l0, v0) = layer.forward(language.clone(), vision.clone(), &none, &none);
        let mut changed = layer.clone();
        let key = changed.cross_attention.attention.key.weight.val();
        changed.cross_attention.attention.key.weight =
            burn::module::Param::from_tensor(key.clone() + key.ones_like() * 0.5);
        let (l1, v1) = changed.forward(language, vision, &none, &none);
        let moved = |a: Tensor<B, 3>, b: Tensor<B, 3>| -> f32 { (a - b).abs().max().into_scalar() };
        assert!(
            moved(l0, l1) > 1e-3,
            "language stream ignores the shared block"
        );
        assert!(
            moved(v0, v1) > 1e-3,
            "vision stream ignores the shared block"
        );
    }

    fn pixel_model() -> LxmertPretraining<B> {
        let device = Default::default();
        B::seed(&device, 1);
        let mut config = tiny_config();
        config.d_feature = 16;
        let config = config.with_pixels(Some(
            PatchEncoderConfig::new(16, 8, 16).with_stem_channels(4),
        ));
        vislang::models::lxmert::LxmertPretrainingConfig::new(config, PATCH_TARGET_WIDTH)
            .with_contrastive(true)
            .init(&device)
    }

    fn pixel_batch(matched: [i64; 2], weights_on: bool) -> PretrainingBatch<B> {
        let device = Default::default();
        let tokens = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![2i64, 7, 4, 9, 3, 2, 8, 10, 4, 3], [2, 5]),
            &device,
        );
        let w = if weights_on { 1.0 } else { 0.0 };
        PretrainingBatch {
            text: LxmertText {
                segments: tokens.zeros_like(),
                padding: tokens.clone().equal_elem(-1),
                tokens,
            },
            token_targets: Tensor::from_data(
                TensorData::new(vec![0i64, 0, 11, 0, 0, 0, 0, 0, 12, 0], [2, 5]),
                &device,
            ),
            token_weights: Tensor::from_data(
                TensorData::new(vec![0f32, 0., w, 0., 0., 0., 0., 0., w, 0.], [2, 5]),
                &device,
            ),
            vision: PretrainingVision::Pixels(Tensor::random(
                [2, 3, 16, 16],
                burn::tensor::Distribution::Default,
                &device,
            )),
            region_masked: Tensor::from_data(
                TensorData::new(
                    vec![true, false, false, false, false, false, true, false],
                    [2, 4],
                ),
                &device,
            ),
            region_weights: Tensor::from_data(
                TensorData::new(vec![w, 0., 0., 0., 0., 0., w, 0.], [2, 4]),
                &device,
            ),
            object_labels: None,
            attribute_labels: None,
            matched: Tensor::from_data(TensorData::new(matched.to_vec(), [2]), &device),
        }
    }

    #[test]
    fn switched_off_objectives_contribute_nothing() {
        let model = pixel_model();
        let all = model.losses(pixel_batch([1, 0], true), Objectives::LXMERT);
        assert!(
            all.masked_language.is_some() && all.object_feature.is_some() && all.matching.is_some()
        );
        assert!(all.object_label.is_none(), "pixels have no detector labels");
        assert!(all.contrastive.is_none(), "not one of LXMERT's objectives");
        let only_matching = Objectives {
            masked_language: false,
            masked_objects: false,
            matching: true,
            contrastive: false,
        };
        let losses = model.losses(pixel_batch([1, 0], true), only_matching);
        assert!(losses.masked_language.is_none() && losses.object_feature.is_none());
        let total: f32 = losses.total.into_scalar();
        let matching: f32 = losses.matching.unwrap().into_scalar();
        assert_eq!(total, matching);
    }

    /// The contrastive loss is ALBEF's symmetric InfoNCE over cosine similarities / 0.07,
    /// counted on matched pairs only: recomputed here by hand from the model's own unimodal
    /// summaries and projection weights, in f64.
    #[test]
    fn contrastive_loss_is_infonce_over_matched_pairs() {
        let model = pixel_model();
        let only = Objectives {
            masked_language: false,
            masked_objects: false,
            matching: false,
            contrastive: true,
        };
        let batch = pixel_batch([1, 0], true);
        let losses = model.losses(batch.clone(), only);
        let got: f32 = losses.contrastive.unwrap().into_scalar();

        let regions = match batch.vision {
            PretrainingVision::Pixels(images) => model.lxmert.regions_of(images),
            PretrainingVision::Regions(_) => unreachable!(),
        };
        let [b, n, d] = regions.features.dims();
        let masked = batch.region_masked.unsqueeze_dim::<3>(2).expand([b, n, d]);
        let regions = vislang::models::lxmert::VisualRegions {
            features: regions.features.mask_fill(masked, 0.0),
            ..regions
        };
        let summaries = model
            .lxmert
            .forward_with_summaries(batch.text, regions)
            .summaries
            .unwrap();
        let rows = |t: Tensor<B, 2>| -> Vec<Vec<f64>> {
            let [r, c] = t.dims();
            let v: Vec<f32> = t.into_data().to_vec().unwrap();
            (0..r)
                .map(|i| (0..c).map(|j| v[i * c + j] as f64).collect())
                .collect()
        };
        let project = |layer: &burn::nn::Linear<B>, x: Tensor<B, 2>| {
            let w = rows(layer.weight.val()); // [in, out]
            let bias: Vec<f32> = layer
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .to_vec()
                .unwrap();
            rows(x)
                .into_iter()
                .map(|x| {
                    let y: Vec<f64> = (0..bias.len())
                        .map(|o| bias[o] as f64 + (0..x.len()).map(|i| x[i] * w[i][o]).sum::<f64>())
                        .collect();
                    let norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
                    y.into_iter().map(|v| v / norm).collect::<Vec<f64>>()
                })
                .collect::<Vec<_>>()
        };
        let head = model.contrastive_head.as_ref().unwrap();
        let text = project(&head.text, summaries.text);
        let image = project(&head.image, summaries.image);
        let sim = |i: usize, j: usize| -> f64 {
            (0..text[i].len())
                .map(|k| text[i][k] * image[j][k])
                .sum::<f64>()
                / 0.07
        };
        // Pair 0 is matched, pair 1 swapped: only caption 0 -> images and image 0 -> captions.
        let nll = |own: f64, all: [f64; 2]| all.iter().map(|s| s.exp()).sum::<f64>().ln() - own;
        let text_to_image = nll(sim(0, 0), [sim(0, 0), sim(0, 1)]);
        let image_to_text = nll(sim(0, 0), [sim(0, 0), sim(1, 0)]);
        let expected = (text_to_image + image_to_text) / 2.0;
        assert!(
            (got as f64 - expected).abs() < 1e-4,
            "contrastive loss {got}, by hand {expected}"
        );
        assert_eq!(losses.total.into_scalar(), got);
    }

    /// With every weight 0 the masked losses are 0 (nothing to predict), not NaN.
    #[test]
    fn zero_weights_give_zero_masked_losses() {
        let model = pixel_model();
        let losses = model.losses(pixel_batch([0, 0], false), Objectives::LXMERT);
        let mlm: f32 = losses.masked_language.unwrap().into_scalar();
        let feature: f32 = losses.object_feature.unwrap().into_scalar();
        assert_eq!((mlm, feature), (0.0, 0.0));
        let total: f32 = losses.total.into_scalar();
        assert!(
            total.is_finite() && total > 0.0,
            "matching still counts: {total}"
        );
    }
}

/// LXMERT's answer head (Linear, GeLU, LayerNorm, Linear) against Hugging Face's
/// `LxmertForQuestionAnswering` (tests/fixtures/lxmert/make_qa_fixture.py): the pooled output
/// and the answer logits within 1e-4.
#[test]
fn question_answering_checkpoint_reproduces_answer_logits() {
    use vislang::models::lxmert::hf::load_lxmert_question_answering;
    use vislang::models::lxmert::LxmertQuestionAnsweringConfig;

    let config = LxmertQuestionAnsweringConfig::new(tiny_config(), 3, 2);
    let load = load_lxmert_question_answering::<B>(
        config.init(&Default::default()),
        &fixture("lxmert-qa.safetensors"),
    )
    .unwrap();
    assert!(load.skipped.is_empty() && load.fresh.is_empty());
    let io_bytes = std::fs::read(fixture("lxmert-qa-io.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&io_bytes).unwrap();
    let float = |name: &str| -> Tensor<B, 2> {
        let view = tensors.tensor(name).unwrap();
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let shape: [usize; 2] = view.shape().try_into().unwrap();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    };
    let (text, regions) = Io::load().inputs();
    let encoded = load.model.lxmert.forward(text, regions);
    assert_close(
        "pooled_output",
        encoded.pooled.clone(),
        float("pooled_output"),
    );
    let answers = load.model.answer(encoded.pooled);
    assert_eq!(answers.logits.dims(), [2, 3]);
    assert_close(
        "question_answering_score",
        answers.logits,
        float("question_answering_score"),
    );

    // A checkpoint whose head has other answers is refused, naming the head's tensors.
    let wrong = LxmertQuestionAnsweringConfig::new(tiny_config(), 4, 2);
    let error = load_lxmert_question_answering::<B>(
        wrong.init(&Default::default()),
        &fixture("lxmert-qa.safetensors"),
    )
    .err()
    .expect("a 4-answer head does not load a 3-answer checkpoint")
    .to_string();
    assert!(error.contains("answer_head.logit_fc.3"), "{error}");
}
