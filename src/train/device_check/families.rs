//! Each family's comparison: its training steps and held-out outputs, and for DALL-E the
//! KV-cached generation, on the device against the reference.

use burn::tensor::{Int, Tensor, TensorData};

use crate::models::classifier::{Modality, MultiLabelClassifier};
use crate::models::dalle::{generate, Dalle, SamplingConfig};
use crate::models::vqvae::VectorQuantizerConfig;
use crate::nn::{AutodiffBackend, Precision};
use crate::train::classify::classifier_run::ClassifierTask;
use crate::train::classify::{model_config, ClassifyConfig};
use crate::train::workloads::{
    bench_vqvae, classifier_task, pretraining_setup, pretraining_task, vqvae_task, DalleWorkload,
};
use crate::train::TrainError;

use super::{compare_training, floats, CheckData, CheckSettings, Comparison};

/// The joint single-stream classifier, and its logits on held-out examples.
pub(super) fn check_classifier<R: AutodiffBackend, B: AutodiffBackend>(
    data: &CheckData,
    settings: &CheckSettings,
    devices: (&R::Device, &B::Device),
    out: &mut Vec<Comparison>,
) -> Result<(), TrainError> {
    let (reference_device, device) = devices;
    let batch = settings.batch_size;
    let classify = ClassifyConfig::synthetic();
    let config = model_config(&classify, Modality::Joint, &data.classify);
    let (task_r, budget) = classifier_task(&data.classify, batch);
    let (task_b, _) = classifier_task(&data.classify, batch);
    let (model_r, model_b) = compare_training::<R, B, ClassifierTask<_>, ClassifierTask<_>>(
        "joint classifier",
        (&task_r, &task_b),
        (config.init::<R>(reference_device), config.init::<B>(device)),
        &budget,
        settings,
        devices,
        out,
    )?;
    let indices: Vec<usize> = (0..batch.min(data.classify.val.len())).collect();
    let special = data.classify.tokenizer.special;
    let batch_r = data.classify.val.batch::<R::InnerBackend>(
        &indices,
        &vec![0; indices.len()],
        special,
        reference_device,
    );
    let batch_b = data.classify.val.batch::<B::InnerBackend>(
        &indices,
        &vec![0; indices.len()],
        special,
        device,
    );
    let reference_logits = floats(model_r.classify(batch_r.images, batch_r.text));
    let device_logits = crate::nn::autocast(settings.precision, || {
        floats(model_b.classify(batch_b.images, batch_b.text))
    });
    out.push(Comparison::new(
        "joint classifier",
        "held-out logits",
        &device_logits,
        &reference_logits,
        settings.tolerance,
    ));

    Ok(())
}

/// LXMERT pretraining: masked LM, masked patches and matching.
pub(super) fn check_lxmert<R: AutodiffBackend, B: AutodiffBackend>(
    data: &CheckData,
    settings: &CheckSettings,
    devices: (&R::Device, &B::Device),
    out: &mut Vec<Comparison>,
) -> Result<(), TrainError> {
    let (reference_device, device) = devices;
    let batch = settings.batch_size;
    let (pretraining, config) = pretraining_setup(&data.classify, batch);
    let task = pretraining_task(&pretraining, &config, &data.classify);
    compare_training::<R, B, _, _>(
        "LXMERT pretraining",
        (&task, &task),
        (config.init::<R>(reference_device), config.init::<B>(device)),
        &pretraining.budget,
        settings,
        devices,
        out,
    )?;

    Ok(())
}

/// The VQ-VAE, without dead-code re-seeding (each backend draws its own random rows).
pub(super) fn check_vqvae<R: AutodiffBackend, B: AutodiffBackend>(
    data: &CheckData,
    settings: &CheckSettings,
    devices: (&R::Device, &B::Device),
    out: &mut Vec<Comparison>,
) -> Result<(), TrainError> {
    let (reference_device, device) = devices;
    let batch = settings.batch_size;
    let scratch = std::env::temp_dir().join(format!("vislang-device-check-{}", std::process::id()));
    let (task, budget) = vqvae_task(&data.vqvae, batch, &scratch);
    let vqvae = bench_vqvae().model;
    let no_reseeding = VectorQuantizerConfig::new(vqvae.n_codes, vqvae.d_code)
        .with_decay(vqvae.decay)
        .with_commitment_weight(vqvae.commitment_weight)
        .with_dead_threshold(0.0);
    let mut model_r = vqvae.init::<R>(reference_device);
    model_r.quantizer = no_reseeding.init(reference_device);
    let mut model_b = vqvae.init::<B>(device);
    model_b.quantizer = no_reseeding.init(device);
    let result = compare_training::<R, B, _, _>(
        "VQ-VAE",
        (&task, &task),
        (model_r, model_b),
        &budget,
        settings,
        devices,
        out,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|_| ())
}

/// The DALL-E decoder: training, logits, and KV-cached greedy generation.
pub(super) fn check_dalle<R: AutodiffBackend, B: AutodiffBackend>(
    settings: &CheckSettings,
    devices: (&R::Device, &B::Device),
    out: &mut Vec<Comparison>,
) -> Result<(), TrainError> {
    let (reference_device, device) = devices;
    let batch = settings.batch_size;
    let workload = DalleWorkload::new(24, batch);
    let (task_r, task_b) = (
        workload.task::<R::InnerBackend>(),
        workload.task::<B::InnerBackend>(),
    );
    let (model_r, model_b) = compare_training::<R, B, _, _>(
        "DALL-E decoder",
        (&task_r, &task_b),
        (
            workload.config.init::<R>(reference_device),
            workload.config.init::<B>(device),
        ),
        &workload.budget,
        settings,
        devices,
        out,
    )?;
    out.extend(compare_generation::<R::InnerBackend, B::InnerBackend>(
        &model_r, &model_b, settings, devices,
    ));
    Ok(())
}

/// What one backend makes of a generated stream.
struct StreamLogits<B: crate::nn::Backend> {
    /// Image logits of the full forward pass, `[rows, n_tokens, n_codes]`.
    full: Tensor<B, 3>,
    /// The same from the key/value cache: the prefix in one call, then one position at a time.
    cached: Tensor<B, 3>,
    /// Per image position, the best logit minus the logit of the code in the stream.
    shortfall: Vec<f64>,
}

/// Runs `model` over `[caption, codes]` rows, fully and through the cache.
fn stream_logits<B: crate::nn::Backend>(
    model: &Dalle<B>,
    (texts, codes): (&[i64], &[i64]),
    precision: Precision,
    device: &B::Device,
) -> StreamLogits<B> {
    let c = &model.config;
    let (n_tokens, offset, n_codes) = (c.n_image_tokens(), c.image_offset(), c.n_image_codes);
    let rows = codes.len() / n_tokens;
    let ids = |values: &[i64], width: usize| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(values.to_vec(), [rows, width]), device)
    };
    let (input, targets) = model.stream(ids(texts, c.text_len), ids(codes, n_tokens));
    let len = input.dims()[1];
    let image = |logits: Tensor<B, 3>| {
        logits.slice([0..rows, len - n_tokens..len, offset..offset + n_codes])
    };
    crate::nn::autocast(precision, || {
        let full = image(model.forward_input(input.clone()));
        let mut state = model.start(device);
        let prefix = 1 + c.text_len;
        let mut pieces =
            vec![model.forward_cached(input.clone().slice([0..rows, 0..prefix]), &mut state)];
        for p in prefix..len {
            pieces.push(model.forward_cached(input.clone().slice([0..rows, p..p + 1]), &mut state));
        }
        let cached = image(Tensor::cat(pieces, 1));
        let chosen_codes = targets
            .slice([0..rows, len - n_tokens..len])
            .sub_scalar(offset as i64)
            .reshape([rows, n_tokens, 1]);
        let chosen = full
            .clone()
            .gather(2, chosen_codes)
            .reshape([rows, n_tokens]);
        let best = full.clone().max_dim(2).reshape([rows, n_tokens]);
        StreamLogits {
            full,
            cached,
            shortfall: floats(best - chosen),
        }
    })
}

/// Greedy KV-cached generation on the device. The codes it picks must be the best of the
/// device's own full forward pass (the cache changes nothing), and within tolerance of the
/// best of the reference's (a near-tie may go either way; a wrong code may not). The logits of
/// the generated stream are compared too, full and cached.
fn compare_generation<R: crate::nn::Backend, B: crate::nn::Backend>(
    model_r: &Dalle<R>,
    model_b: &Dalle<B>,
    settings: &CheckSettings,
    (reference_device, device): (&R::Device, &B::Device),
) -> Vec<Comparison> {
    let c = &model_r.config;
    let captions: Vec<Vec<u32>> = (0..2u32).map(|i| c.text_ids(&[3 + i, 40 + i])).collect();
    let greedy = SamplingConfig {
        greedy: true,
        use_cache: true,
        ..SamplingConfig::default()
    };
    let codes = crate::nn::autocast(settings.precision, || {
        generate(model_b, &captions, &greedy, device)
    });
    let texts: Vec<i64> = captions.iter().flatten().map(|&t| t as i64).collect();
    let codes: Vec<i64> = codes.iter().flatten().map(|&t| t as i64).collect();
    let on_device = stream_logits(model_b, (&texts, &codes), settings.precision, device);
    let on_reference = stream_logits(model_r, (&texts, &codes), Precision::F32, reference_device);
    let zeros = vec![0.0; codes.len()];
    let family = "DALL-E decoder";
    vec![
        Comparison::new(
            family,
            "image logits of the generated stream",
            &floats(on_device.full.clone()),
            &floats(on_reference.full),
            settings.tolerance,
        ),
        Comparison::new(
            family,
            "the same from the key/value cache",
            &floats(on_device.cached),
            &floats(on_device.full),
            settings.tolerance,
        ),
        Comparison::new(
            family,
            format!(
                "KV-cached greedy codes ({}): device's best logit minus the chosen code's",
                codes.len()
            ),
            &on_device.shortfall,
            &zeros,
            settings.tolerance,
        ),
        Comparison::new(
            family,
            "the same judged by the reference",
            &on_reference.shortfall,
            &zeros,
            settings.tolerance,
        ),
    ]
}
