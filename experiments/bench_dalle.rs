//! The DALL-E part of `bench`: training tokens/s per backend, and generation with and without
//! the key/value cache. Weights do not change the cost, so an untrained decoder of the
//! synthetic preset's shape runs on random tokens.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vislang::backend::{CpuBackend, NdArrayBackend};
use vislang::models::dalle::{generate, Dalle, DalleConfig, SamplingConfig};
use vislang::train::dalle::TrainDalleConfig;

/// The synthetic preset's decoder over a 256-entry BPE vocabulary and 8x8 grids of 512 codes.
fn preset() -> DalleConfig {
    TrainDalleConfig::synthetic("unused".into()).model_config(256, 512, [8, 8])
}

fn random_batch<B: Backend>(
    config: &DalleConfig,
    batch: usize,
    rng: &mut StdRng,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let text: Vec<i64> = (0..batch)
        .flat_map(|_| {
            let caption: Vec<u32> = (0..12).map(|_| rng.random_range(0..256)).collect();
            config
                .text_ids(&caption)
                .into_iter()
                .map(i64::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let codes: Vec<i64> = (0..batch * config.n_image_tokens())
        .map(|_| rng.random_range(0..512))
        .collect();
    (
        Tensor::from_data(TensorData::new(text, [batch, config.text_len]), device),
        Tensor::from_data(
            TensorData::new(codes, [batch, config.n_image_tokens()]),
            device,
        ),
    )
}

/// Training tokens/s (every stream position counts).
pub fn train_throughput<B: AutodiffBackend>(batch: usize, steps: usize, device: &B::Device) -> f64 {
    let config = preset();
    let mut model: Dalle<B> = config.init(device);
    let mut optimizer = AdamWConfig::new().init::<B, Dalle<B>>();
    let mut rng = StdRng::seed_from_u64(0);
    let warmup = 2;
    let mut started = Instant::now();
    for step in 0..warmup + steps {
        if step == warmup {
            let _ = model.clone().valid().head.weight.val().into_data();
            started = Instant::now();
        }
        let (text, image) = random_batch::<B>(&config, batch, &mut rng, device);
        let (logits, targets) = model.forward(text, image);
        let loss = model.loss(logits, targets).total;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-4, model, grads);
    }
    let _ = model.head.weight.val().into_data();
    (steps * batch * config.seq_len()) as f64 / started.elapsed().as_secs_f64()
}

/// `(images/s, image tokens/s)` of sampling `batch` images at once.
pub fn generation_throughput<B: Backend>(
    batch: usize,
    use_cache: bool,
    device: &B::Device,
) -> (f64, f64) {
    let config = preset();
    let model: Dalle<B> = config.init(device);
    let texts: Vec<Vec<u32>> = (0..batch)
        .map(|i| config.text_ids(&[i as u32 % 256]))
        .collect();
    let sampling = SamplingConfig {
        top_k: Some(32),
        use_cache,
        ..SamplingConfig::default()
    };
    let _ = generate(&model, &texts[..1], &sampling, device); // warm-up
    let started = Instant::now();
    let codes = generate(&model, &texts, &sampling, device);
    let seconds = started.elapsed().as_secs_f64();
    (
        codes.len() as f64 / seconds,
        (codes.len() * config.n_image_tokens()) as f64 / seconds,
    )
}

pub fn run(steps: usize) {
    let config = preset();
    println!(
        "\n## DALL-E decoder, synthetic preset ({} layers, width {}, {} text + {} image positions)",
        config.n_layers,
        config.d_model,
        config.text_len,
        config.n_image_tokens()
    );
    let flex = train_throughput::<Autodiff<CpuBackend>>(32, steps, &Default::default());
    let ndarray = train_throughput::<Autodiff<NdArrayBackend>>(32, steps, &Default::default());
    println!("| training, batch 32 | flex tokens/s | ndarray tokens/s | flex / ndarray |");
    println!("|---|---|---|---|");
    println!("| | {flex:.0} | {ndarray:.0} | {:.2} |", flex / ndarray);
    println!("\n| generation on flex, batch 16, top-k 32 | images/s | image tokens/s |");
    println!("|---|---|---|");
    let (cached_images, cached_tokens) =
        generation_throughput::<CpuBackend>(16, true, &Default::default());
    let (full_images, full_tokens) =
        generation_throughput::<CpuBackend>(16, false, &Default::default());
    println!("| with the key/value cache | {cached_images:.2} | {cached_tokens:.0} |");
    println!("| recomputing the prefix | {full_images:.2} | {full_tokens:.0} |");
    println!("cache speed-up: {:.2}x", cached_tokens / full_tokens);
}
