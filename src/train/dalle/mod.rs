//! Training the DALL-E-style decoder from the image-token files that `train-vqvae` writes, with
//! caption dropout (for classifier-free guidance), per-epoch checkpoints, loss curves and
//! sample grids.
//!
//! An output directory holds:
//! - `config.json`: the run's [`TrainDalleConfig`] (a later run there resumes only if equal);
//! - `caption-bpe.json`: the BPE tokenizer trained on the training captions;
//! - `curve-loss.png`: text and image cross-entropy, train and held-out, per epoch;
//! - `samples/epoch-NNN.png`: images generated for a few held-out captions (one row each);
//! - when done: `dalle.safetensors`, `dalle-config.json` and `result.json`.

pub(super) mod data;
pub mod evaluation;

use std::path::{Path, PathBuf};

use crate::nn::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::{checkpoint_fingerprint, CaptionLanguage, SyntheticCocoConfig};
pub use crate::data::{DalleExample, DalleSplit};
pub use crate::inference::dalle::{TrainedDalle, TrainedDalleConfig};
use crate::io::checkpoint::{save_safetensors, write_atomic};
use crate::io::progress;
use crate::models::dalle::{AttentionLayout, Dalle, DalleConfig, SamplingConfig};
pub use crate::train::dalle::data::{prepare_dalle_data, DalleData, DalleDataConfig, DalleError};
pub use crate::train::dalle::evaluation::{evaluate_dalle, DalleEvaluation};
use crate::train::dalle::evaluation::{
    write_loss_curve, write_samples, SAMPLES_PER_CAPTION, SHOWN_CAPTIONS,
};
use crate::train::engine::budget::Budget;
use crate::train::engine::memory::MemoryNeed;
use crate::train::engine::run_dir::{EpochLog, RunDir};
use crate::train::engine::{
    seeded_init, train_on, Losses, RunDisplay, RunOptions, StepOutput, TrainingTask,
};
use crate::train::report::training_report;
use crate::train::vqvae::{TrainedVqVae, GENERATOR_TRAIN_IMAGES};
use crate::train::{RunPaths, TrainError};

/// A whole `train-dalle` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainDalleConfig {
    pub data: DalleDataConfig,
    /// The decoder; its text vocabulary, codebook size and grid are filled in from the BPE
    /// tokenizer and the token files ([`TrainDalleConfig::model_config`]).
    pub model: DalleConfig,
    pub training: Budget,
    /// Probability that an example's caption is replaced by the null caption, so that the
    /// model also learns the unconditional distribution used by guidance.
    pub caption_dropout: f64,
}

impl TrainDalleConfig {
    /// Trains in about 10 minutes on a 2-core CPU on the tokens of `train-vqvae`'s preset
    /// (20,000 synthetic images as 8x8 grids): 4 layers of width 128 (0.7M parameters) for 4
    /// epochs. At 2,000 images a decoder memorises (held-out image cross-entropy rises with
    /// more epochs); at 20,000 it still falls after 4. The synthetic captions are at most 20
    /// BPE tokens, so 24 text positions stand in for DALL-E's 256, which would spend most of a
    /// CPU's time on pads (`--text-len 256` restores them).
    pub fn synthetic(vqvae_dir: PathBuf) -> Self {
        Self {
            data: DalleDataConfig {
                coco_root: None,
                synthetic: SyntheticCocoConfig {
                    n_train: GENERATOR_TRAIN_IMAGES,
                    ..SyntheticCocoConfig::default()
                },
                captions: Default::default(),
                vqvae_dir,
                vqvae_checkpoint: String::new(),
                bpe_vocab: Self::synthetic_bpe_vocab(CaptionLanguage::English),
                bpe: None,
                skip_bad: false,
                max_train_images: None,
                max_eval_images: None,
            },
            model: DalleConfig::new(0, 24, 0, [0, 0])
                .with_d_model(128)
                .with_n_heads(4)
                .with_n_layers(4)
                .with_d_hidden(256)
                .with_dropout(0.0),
            training: Budget {
                warmup_fraction: 0.05,
                final_lr_ratio: 0.1,
                ..Budget::new(4, 32, 1e-3)
            },
            caption_dropout: 0.1,
        }
    }

    /// The synthetic preset's BPE vocabulary for captions in `language`: 256 entries (English
    /// uses all 179 it can learn: every word whole), 128 for Korean.
    ///
    /// Why smaller for Korean: it attaches particles to nouns (고양이가, 고양이를, 고양이와, ...),
    /// and 256 entries hold every such form as a token of its own, so the decoder must learn
    /// each object five times from a fifth of the examples. At 128 a noun is one token and
    /// its particle another (새끼고양이 + 와). With the default preset otherwise, generated
    /// images show the named objects at 0.434 ± 0.005 with 256 entries and 0.683 ± 0.014 with
    /// 128 (`evaluate-dalle`, 3 sampling seeds, one judge).
    pub fn synthetic_bpe_vocab(language: CaptionLanguage) -> usize {
        match language {
            CaptionLanguage::English => 256,
            CaptionLanguage::Korean => 128,
        }
    }

    /// MSCOCO on a GPU: about 100M parameters (1/120 of DALL-E's 12B), 256 text tokens, a
    /// 16384-entry BPE vocabulary, DALL-E's sparse attention layout.
    pub fn coco(root: PathBuf, vqvae_dir: PathBuf) -> Self {
        let mut config = Self::synthetic(vqvae_dir);
        config.data.coco_root = Some(root);
        config.data.bpe_vocab = 16384;
        config.model = DalleConfig::new(0, 256, 0, [0, 0])
            .with_d_model(768)
            .with_n_heads(12)
            .with_n_layers(12)
            .with_d_hidden(3072)
            .with_dropout(0.1)
            .with_attention(AttentionLayout::Sparse { conv_kernel: 11 });
        config.training.epochs = 20;
        config.training.batch_size = 32;
        config.training.learning_rate = 3e-4;
        config
    }

    /// The decoder's config for a BPE vocabulary of `text_vocab` ids and the VQ-VAE's grid.
    pub fn model_config(&self, text_vocab: usize, n_codes: usize, grid: [usize; 2]) -> DalleConfig {
        DalleConfig {
            text_vocab,
            n_image_codes: n_codes,
            grid,
            ..self.model.clone()
        }
    }
}

/// What `result.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DalleResult {
    pub device: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub n_params: usize,
    pub train_tokens_per_second: f64,
    pub final_epoch: EpochLog<DalleEvaluation>,
    pub history: Vec<EpochLog<DalleEvaluation>>,
}

/// The decoder as a task of the engine: `(CE_text + 7 CE_image) / 8` of a batch with a
/// random caption per image, dropped to the null caption with probability `caption_dropout`.
pub struct DalleTask<'a, B: Backend> {
    pub train: &'a DalleSplit,
    pub val: &'a DalleSplit,
    pub model_config: &'a DalleConfig,
    pub caption_dropout: f64,
    /// Of the held-out evaluation.
    pub batch_size: usize,
    /// Whether the model has dropout (draws from the backend's generator).
    pub dropout: bool,
    /// Decodes the sample grids drawn after each epoch; none without it.
    pub vqvae: Option<&'a TrainedVqVae<B>>,
    pub out_dir: &'a Path,
}

impl<B: AutodiffBackend> TrainingTask<B> for DalleTask<'_, B::InnerBackend> {
    type Model = Dalle<B>;
    type Aux = ();
    type Evaluation = DalleEvaluation;

    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn uses_backend_random(&self) -> bool {
        self.dropout
    }

    type Batch = (Tensor<B, 2, Int>, Tensor<B, 2, Int>);

    /// Text ids and image codes.
    fn batch(
        &self,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self::Batch, TrainError> {
        let captions: Vec<usize> = indices.iter().map(|_| rng.random_range(0..64)).collect();
        let null: Vec<bool> = indices
            .iter()
            .map(|_| rng.random_bool(self.caption_dropout))
            .collect();
        Ok(self
            .train
            .batch::<B>(self.model_config, indices, &captions, &null, device))
    }

    fn loss(
        &self,
        model: &Dalle<B>,
        (text, codes): Self::Batch,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let loss = model.losses(text, codes);
        Ok(StepOutput {
            losses: Losses {
                total: loss.total,
                parts: vec![("text", loss.text), ("image", loss.image)],
            },
            aux: (),
        })
    }

    fn evaluate(
        &self,
        model: &Dalle<B::InnerBackend>,
        epoch: usize,
        device: &B::Device,
    ) -> Result<DalleEvaluation, TrainError> {
        let evaluation = evaluate_dalle(model, self.val, self.batch_size, device);
        if let Some(vqvae) = self.vqvae {
            let path = self
                .out_dir
                .join("samples")
                .join(format!("epoch-{epoch:03}.png"));
            write_samples(model, vqvae, self.val, &path, device)?;
        }
        Ok(evaluation)
    }

    fn charts(&self, history: &[EpochLog<DalleEvaluation>]) -> Result<(), TrainError> {
        Ok(write_loss_curve(history, self.out_dir)?)
    }
}

/// Trains the decoder (resuming a partial run in `paths.out_dir`) and writes its checkpoint,
/// curves and sample grids. With several `devices`, data parallel: the first evaluates.
pub fn train_dalle<B: AutodiffBackend>(
    config: &TrainDalleConfig,
    paths: &RunPaths,
    devices: &[B::Device],
    options: RunOptions,
) -> Result<DalleResult, DalleError> {
    let device = &devices[0];
    config.training.validate()?;
    if config.model.text_len == 0 {
        return Err(DalleError::Config("--text-len must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&config.caption_dropout) {
        return Err(DalleError::Config(format!(
            "--caption-dropout must be in [0, 1], not {}",
            config.caption_dropout
        )));
    }
    if config.model.n_heads == 0 || !config.model.d_model.is_multiple_of(config.model.n_heads) {
        return Err(DalleError::Config(format!(
            "the width {} is not divisible by {} heads",
            config.model.d_model, config.model.n_heads
        )));
    }
    // The grid comes from the VQ-VAE's config; when it cannot be read, loading it names why.
    let vqvae_config = config.data.vqvae_dir.join("vqvae-config.json");
    if let Ok(vqvae) = crate::io::checkpoint::read_json::<crate::inference::vqvae::TrainedVqVaeConfig>(
        &vqvae_config,
    ) {
        let grid = vqvae.image_size / vqvae.model.downsample;
        let m = &config.model;
        MemoryNeed::new()
            .transformer(
                "DALL-E decoder",
                config.training.batch_size,
                m.text_len + grid * grid,
                m.n_heads,
                m.d_hidden,
                m.n_layers,
            )
            .check("--text-len, --batch-size or --layers")
            .map_err(DalleError::Config)?;
    }
    // Everything below writes into the run directory; a failure before the first epoch
    // removes what it made (see `removed_on_early_failure`).
    crate::train::engine::run_dir::removed_on_early_failure(
        &paths.out_dir,
        || -> Result<DalleResult, DalleError> {
            let run_dir = RunDir::claim(&paths.out_dir, config, &["caption-bpe.json"])?;
            if let Some(result) = run_dir.finished()? {
                return Ok(result);
            }
            let data = prepare_dalle_data(&config.data, config.model.text_len, paths)?;
            let vqvae = TrainedVqVae::<B::InnerBackend>::load(&config.data.vqvae_dir, device)?;
            let model_config = config.model_config(
                data.bpe.vocab_size(),
                data.tokens_info.n_codes,
                data.tokens_info.grid,
            );
            let budget = &config.training;
            let model: Dalle<B> =
                seeded_init::<B, _>(budget.seed, device, || model_config.init(device));
            let multi = progress::multi(options.show_progress);
            progress::println(
            &multi,
            &format!(
                "decoder: {} parameters, {} text + {} image positions, {} train / {} held-out images",
                burn::module::Module::num_params(&model),
                model_config.text_len,
                model_config.n_image_tokens(),
                data.train.len(),
                data.val.len()
            ),
        );
            let task = DalleTask {
                train: &data.train,
                val: &data.val,
                model_config: &model_config,
                caption_dropout: config.caption_dropout,
                batch_size: budget.batch_size,
                dropout: config.model.dropout > 0.0,
                vqvae: Some(&vqvae),
                out_dir: &paths.out_dir,
            };
            let display = RunDisplay {
                name: "dalle".into(),
                progress: &multi,
                feed: options.feed,
            };
            let trained = train_on(&task, model, budget, &run_dir, &display, devices)?;
            let train_tokens_per_second =
                trained.samples_per_second(data.train.len()) * model_config.seq_len() as f64;
            save_safetensors(&trained.model, &paths.out_dir.join("dalle.safetensors"))?;
            let trained_config = TrainedDalleConfig {
                model: model_config,
                vqvae_dir: config.data.vqvae_dir.clone(),
                vqvae_checkpoint: config.data.vqvae_checkpoint.clone(),
                image_size: data.image_size,
            };
            write_atomic(
                &paths.out_dir.join("dalle-config.json"),
                &serde_json::to_vec_pretty(&trained_config).expect("config serialises"),
            )?;
            let history = trained.history;
            let result = DalleResult {
                device: format!("{device:?}"),
                train_images: data.train.len(),
                eval_images: data.val.len(),
                n_params: trained.n_params,
                train_tokens_per_second,
                final_epoch: history.last().cloned().expect("at least one epoch"),
                history,
            };
            let guidance = SamplingConfig::recommended().guidance;
            let mut caption = vec![format!(
                "Each row: a held-out image as the VQ-VAE reconstructs it, then {SAMPLES_PER_CAPTION} samples (full distribution, guidance {guidance}) for its caption:"
            )];
            caption.extend(
                data.val
                    .examples
                    .iter()
                    .take(SHOWN_CAPTIONS)
                    .enumerate()
                    .map(|(row, e)| format!("row {}: {}", row + 1, e.raw_captions[0])),
            );
            training_report(
                "DALL-E-style decoder",
                &paths.out_dir,
                config,
                &result.history,
                Some((&paths.out_dir.join("samples"), caption)),
            )?;
            run_dir.finish(&result)?;
            Ok(result)
        },
    )
}

/// Fills in the VQ-VAE checkpoint's fingerprint (part of the run's identity).
pub fn with_vqvae_fingerprint(
    mut config: TrainDalleConfig,
) -> Result<TrainDalleConfig, DalleError> {
    let weights = config.data.vqvae_dir.join("vqvae.safetensors");
    config.data.vqvae_checkpoint = checkpoint_fingerprint(&weights).map_err(|source| {
        DalleError::Config(format!(
            "cannot read the VQ-VAE checkpoint {}: {source}; run train-vqvae first, or pass its output directory with --vqvae",
            weights.display()
        ))
    })?;
    Ok(config)
}
