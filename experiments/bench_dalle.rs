//! The DALL-E part of `bench`: training tokens/s per backend, and generation with and without
//! the key/value cache. Weights do not change the cost, so an untrained decoder of the
//! synthetic preset's shape runs on random tokens.

use std::time::Instant;

use burn::backend::Autodiff;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vislang::backend::{CpuBackend, NdArrayBackend};
use vislang::models::dalle::{generate, Dalle, DalleConfig, SamplingConfig};
use vislang::nn::{AutodiffBackend, Backend};
use vislang::train::dalle::{DalleExample, DalleSplit, DalleTask, TrainDalleConfig};
use vislang::train::engine::examples_per_second;
use vislang::train::Budget;

/// The synthetic preset's decoder over a 256-entry BPE vocabulary and 8x8 grids of 512 codes,
/// reading `text_len` caption positions.
pub fn preset(text_len: usize) -> DalleConfig {
    let mut config = TrainDalleConfig::synthetic("unused".into()).model_config(256, 512, [8, 8]);
    config.text_len = text_len;
    config
}

/// What the bench trains the decoder on: random captions and codes of the preset's shape.
/// Weights and values do not change the cost.
pub struct DalleWorkload {
    pub config: DalleConfig,
    pub budget: Budget,
    split: DalleSplit,
    caption_dropout: f64,
}

impl DalleWorkload {
    /// `4 * batch` examples with a random caption of up to `text_len` tokens each.
    pub fn new(text_len: usize, batch: usize) -> Self {
        let config = preset(text_len);
        let preset = TrainDalleConfig::synthetic("unused".into());
        let mut rng = StdRng::seed_from_u64(0);
        let examples = (0..4 * batch)
            .map(|i| DalleExample {
                image_id: i as u64,
                captions: vec![(0..text_len.min(12))
                    .map(|_| rng.random_range(0..256))
                    .collect()],
                raw_captions: vec![String::new()],
                codes: (0..config.n_image_tokens())
                    .map(|_| rng.random_range(0..512))
                    .collect(),
            })
            .collect();
        Self {
            config,
            budget: Budget {
                batch_size: batch,
                ..preset.training
            },
            split: DalleSplit { examples },
            caption_dropout: preset.caption_dropout,
        }
    }

    /// The training task the bench times.
    pub fn task<B: Backend>(&self) -> DalleTask<'_, B> {
        DalleTask {
            train: &self.split,
            val: &self.split,
            model_config: &self.config,
            caption_dropout: self.caption_dropout,
            batch_size: self.budget.batch_size,
            dropout: false,
            vqvae: None,
            out_dir: Path::new("unused"),
        }
    }
}

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
    let config = preset(24);
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
    let config = preset(24);
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
