//! The synthetic presets' training tasks at a chosen batch size, as `bench` times them and the
//! device check (`examples/device_parity.rs`) runs them on two backends: one definition each,
//! so what is compared is what is timed.

pub mod flops;

use std::marker::PhantomData;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::SyntheticCocoConfig;
use crate::models::classifier::{Modality, SingleStreamClassifierConfig};
use crate::models::dalle::{DalleConfig, SamplingConfig};
use crate::models::lxmert::{LxmertConfig, LxmertPretrainingConfig, Objectives};
use crate::nn::Backend;
use crate::train::classify::classifier_run::ClassifierTask;
use crate::train::classify::{model_config, ClassifyConfig, PreparedData};
use crate::train::dalle::{DalleExample, DalleSplit, DalleTask, TrainDalleConfig};
use crate::train::lxmert_pretrain::config::lxmert_presets;
use crate::train::lxmert_pretrain::{PretrainLxmertConfig, PretrainTask, PretrainingImages};
use crate::train::vqvae::{TrainVqVaeConfig, VqVaeData, VqVaeTask};
use crate::train::Budget;

/// The classifier training task on `data` (no dropout), and the preset's budget at
/// `batch_size`.
pub fn classifier_task<M>(
    data: &PreparedData,
    batch_size: usize,
) -> (ClassifierTask<'_, M>, Budget) {
    let budget = Budget {
        batch_size,
        ..ClassifyConfig::synthetic().training
    };
    let task = ClassifierTask::<M> {
        train: &data.train,
        val: &data.val,
        special: data.tokenizer.special,
        batch_size,
        dropout: false,
        model: PhantomData,
    };
    (task, budget)
}

/// The joint classifier at a size users train: 6 layers, 384 wide, 6 heads of 64, FFN 1536,
/// on the synthetic preset's images and captions.
pub fn large_classifier(data: &PreparedData) -> SingleStreamClassifierConfig {
    model_config(&ClassifyConfig::synthetic(), Modality::Joint, data)
        .with_d_model(384)
        .with_n_heads(6)
        .with_n_layers(6)
        .with_d_hidden(1536)
}

/// The synthetic preset's LXMERT pretraining run at `batch_size`, and its filled model config.
pub fn pretraining_setup(
    data: &PreparedData,
    batch_size: usize,
) -> (PretrainLxmertConfig, LxmertPretrainingConfig) {
    pretraining_setup_of(lxmert_presets::small(), data, batch_size)
}

/// [`pretraining_setup`] at LXMERT's base width (768, 12 heads of 64, FFN 3072) with the small
/// preset's 2/1/1 layers, so that a step stays short on a CPU.
pub fn large_pretraining_setup(
    data: &PreparedData,
    batch_size: usize,
) -> (PretrainLxmertConfig, LxmertPretrainingConfig) {
    let model = lxmert_presets::small()
        .with_d_model(768)
        .with_n_heads(12)
        .with_d_hidden(3072);
    pretraining_setup_of(model, data, batch_size)
}

fn pretraining_setup_of(
    model: LxmertConfig,
    data: &PreparedData,
    batch_size: usize,
) -> (PretrainLxmertConfig, LxmertPretrainingConfig) {
    let mut pretraining = ClassifyConfig::synthetic().lxmert_pretraining();
    pretraining.model = model;
    pretraining.budget.batch_size = batch_size;
    let config = pretraining.model_config(
        BENCH_OBJECTIVES,
        data.tokenizer.vocab_size(),
        None,
        None,
        None,
    );
    (pretraining, config)
}

/// The objectives a pretraining step is timed with: LXMERT's own three, the step the
/// reference implementations have.
pub const BENCH_OBJECTIVES: Objectives = Objectives::LXMERT;

/// The pretraining task (on pixels) of [`pretraining_setup`]'s run.
pub fn pretraining_task<'a>(
    pretraining: &'a PretrainLxmertConfig,
    config: &LxmertPretrainingConfig,
    data: &'a PreparedData,
) -> PretrainTask<'a> {
    PretrainTask::new(
        pretraining,
        BENCH_OBJECTIVES,
        config,
        data,
        PretrainingImages::Pixels,
        Path::new("unused"),
    )
}

/// The VQ-VAE training task, and the preset's budget at `batch_size`. Evaluation pictures go
/// to `out_dir`.
pub fn vqvae_task<'a>(
    data: &'a VqVaeData,
    batch_size: usize,
    out_dir: &'a Path,
) -> (VqVaeTask<'a>, Budget) {
    let budget = Budget {
        batch_size,
        ..bench_vqvae().training
    };
    let task = VqVaeTask {
        data,
        mean_image_psnr: 0.0,
        batch_size,
        out_dir,
    };
    (task, budget)
}

/// The VQ-VAE the bench times and the device check runs: the 2,000-image synthetic set at
/// 32 px as 8x8 grids of 512 codes, 12 epochs (the training preset reads a 20,000-image set).
pub fn bench_vqvae() -> TrainVqVaeConfig {
    let mut config = TrainVqVaeConfig::synthetic();
    config.data.synthetic = SyntheticCocoConfig::default();
    config.data.image_size = 32;
    config.training.epochs = 12;
    config
}

/// The VQ-VAE at a size users train (the MSCOCO preset's model): 128 px images as 16x16 grids
/// of 1024 codes, 128 channels, two residual blocks, on the [`bench_vqvae`] images.
pub fn large_vqvae() -> TrainVqVaeConfig {
    let mut config = bench_vqvae();
    config.data.image_size = 128;
    config.model = TrainVqVaeConfig::coco("unused".into()).model;
    config
}

/// The small DALL-E decoder the bench times: 64 wide, 2 layers, over a 256-entry BPE
/// vocabulary and 8x8 grids of 512 codes, reading `text_len` caption positions. At this size
/// each operation's fixed cost, not its arithmetic, decides the step's time.
pub fn bench_dalle(text_len: usize) -> DalleConfig {
    DalleConfig::new(256, text_len, 512, [8, 8])
        .with_d_model(64)
        .with_n_heads(4)
        .with_n_layers(2)
        .with_d_hidden(256)
        .with_dropout(0.0)
}

/// The DALL-E decoder at a size users train: 8 layers, 512 wide, 8 heads of 64, FFN 2048, on
/// the same vocabulary and grid as [`bench_dalle`]. Its step is decided by the matrix products.
pub fn large_dalle(text_len: usize) -> DalleConfig {
    bench_dalle(text_len)
        .with_d_model(512)
        .with_n_heads(8)
        .with_n_layers(8)
        .with_d_hidden(2048)
}

/// The DALL-E decoder on random captions and codes of the preset's shape: weights and token
/// values do not change the cost, and need no trained VQ-VAE.
pub struct DalleWorkload {
    pub config: DalleConfig,
    pub budget: Budget,
    split: DalleSplit,
    caption_dropout: f64,
}

impl DalleWorkload {
    /// The [`bench_dalle`] decoder on `4 * batch` examples with a random caption of up to
    /// `text_len` tokens each.
    pub fn new(text_len: usize, batch: usize) -> Self {
        Self::with_config(bench_dalle(text_len), batch)
    }

    /// `config`'s decoder on `4 * batch` examples with a random caption each.
    pub fn with_config(config: DalleConfig, batch: usize) -> Self {
        let text_len = config.text_len;
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

    /// The training task on the workload (no dropout; caption dropout from the step's seed).
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

/// The cached generation the bench times: a DALL-E decoder sampling one image for each of
/// `batch` one-token captions, top-k 32.
pub struct GenerationWorkload {
    pub config: DalleConfig,
    pub texts: Vec<Vec<u32>>,
    pub sampling: SamplingConfig,
}

impl GenerationWorkload {
    /// The [`bench_dalle`] decoder.
    pub fn new(batch: usize, use_cache: bool) -> Self {
        Self::with_config(bench_dalle(24), batch, use_cache)
    }

    /// `config`'s decoder.
    pub fn with_config(config: DalleConfig, batch: usize, use_cache: bool) -> Self {
        let texts = (0..batch)
            .map(|i| config.text_ids(&[i as u32 % 256]))
            .collect();
        let sampling = SamplingConfig {
            top_k: Some(32),
            use_cache,
            ..SamplingConfig::default()
        };
        Self {
            config,
            texts,
            sampling,
        }
    }
}
