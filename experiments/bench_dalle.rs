//! The DALL-E part of `bench`: training tokens/s per backend, and generation with and without
//! the key/value cache. Weights do not change the cost, so an untrained decoder of the
//! synthetic preset's shape runs on random tokens.

use std::time::Instant;

use burn::backend::Autodiff;

use vislang::backend::{CpuBackend, NdArrayBackend};
use vislang::models::dalle::{generate, Dalle};
use vislang::nn::{AutodiffBackend, Backend};
use vislang::train::engine::examples_per_second;
use vislang::train::workloads::{bench_dalle, DalleWorkload, GenerationWorkload};

/// Training tokens/s (every stream position counts): the engine's own step.
pub fn train_throughput<B: AutodiffBackend>(batch: usize, steps: usize, device: &B::Device) -> f64 {
    let workload = DalleWorkload::new(24, batch);
    let task = workload.task::<B::InnerBackend>();
    let model: Dalle<B> = workload.config.init(device);
    examples_per_second(&task, model, &workload.budget, 2, steps, device).expect("bench step")
        * workload.config.seq_len() as f64
}

/// `(images/s, image tokens/s)` of sampling `batch` images at once.
pub fn generation_throughput<B: Backend>(
    batch: usize,
    use_cache: bool,
    device: &B::Device,
) -> (f64, f64) {
    let GenerationWorkload {
        config,
        texts,
        sampling,
    } = GenerationWorkload::new(batch, use_cache);
    let model: Dalle<B> = config.init(device);
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
    let config = bench_dalle(24);
    say!(
        "\n## DALL-E decoder, synthetic preset ({} layers, width {}, {} text + {} image positions)",
        config.n_layers,
        config.d_model,
        config.text_len,
        config.n_image_tokens()
    );
    let flex = train_throughput::<Autodiff<CpuBackend>>(32, steps, &Default::default());
    let ndarray = train_throughput::<Autodiff<NdArrayBackend>>(32, steps, &Default::default());
    say!("| training, batch 32 | flex tokens/s | ndarray tokens/s | flex / ndarray |");
    say!("|---|---|---|---|");
    say!("| | {flex:.0} | {ndarray:.0} | {:.2} |", flex / ndarray);
    say!("\n| generation on flex, batch 16, top-k 32 | images/s | image tokens/s |");
    say!("|---|---|---|");
    let (cached_images, cached_tokens) =
        generation_throughput::<CpuBackend>(16, true, &Default::default());
    let (full_images, full_tokens) =
        generation_throughput::<CpuBackend>(16, false, &Default::default());
    say!("| with the key/value cache | {cached_images:.2} | {cached_tokens:.0} |");
    say!("| recomputing the prefix | {full_images:.2} | {full_tokens:.0} |");
    say!("cache speed-up: {:.2}x", cached_tokens / full_tokens);
}
