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

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::budget::Budget;
use super::engine::{
    seeded_init, train, EpochEvaluation, Losses, RunDisplay, StepOutput, TrainingTask,
};
use super::plots::{line_chart, Series};
use super::report::training_report;
use super::run_dir::{EpochLog, RunDir};
use super::vqvae::{decode_codes, token_file_path, TrainedVqVae, VqVaeError};
use super::{RunPaths, TrainError};
use crate::data::{
    checkpoint_fingerprint, dataset_root, BadEntryPolicy, CocoDataset, CocoSplit, DataError,
    ImageTokens, SyntheticCocoConfig, TextTokenizer, TokenExpectation, TokenizerError,
};
pub use crate::data::{DalleExample, DalleSplit};
pub use crate::inference::dalle::{TrainedDalle, TrainedDalleConfig};
use crate::inference::ArtifactError;
use crate::io::checkpoint::{read_json, save_safetensors, write_atomic, CheckpointError};
use crate::io::image_grid::write_image_grid;
use crate::io::progress;
use crate::models::dalle::{generate, AttentionLayout, Dalle, DalleConfig, SamplingConfig};

/// Where the captions and image tokens come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleDataConfig {
    /// MSCOCO 2014 (for the captions); `None` uses the built-in synthetic set.
    pub coco_root: Option<PathBuf>,
    pub synthetic: SyntheticCocoConfig,
    /// The `train-vqvae` output directory: its token files and checkpoint.
    pub vqvae_dir: PathBuf,
    /// [`checkpoint_fingerprint`] of the VQ-VAE: a retrained tokenizer is a different run.
    pub vqvae_checkpoint: String,
    /// Size of the BPE vocabulary trained on the training captions.
    pub bpe_vocab: usize,
    /// An existing `caption-bpe.json` to use instead of training one (BPE training is not
    /// reproducible across processes; see `TextTokenizer::train_wordpiece`).
    pub bpe: Option<PathBuf>,
    pub skip_bad: bool,
    /// Use only the first N training / held-out images with tokens (by id).
    pub max_train_images: Option<usize>,
    pub max_eval_images: Option<usize>,
}

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
    /// Trains in minutes on a 2-core CPU on the synthetic set's tokens (8x8 grids). The
    /// synthetic captions are at most 20 BPE tokens, so 24 text positions stand in for DALL-E's
    /// 256, which would spend most of a CPU's time on pads (`--text-len 256` restores them).
    pub fn synthetic(vqvae_dir: PathBuf) -> Self {
        Self {
            data: DalleDataConfig {
                coco_root: None,
                synthetic: SyntheticCocoConfig::default(),
                vqvae_dir,
                vqvae_checkpoint: String::new(),
                bpe_vocab: 256,
                bpe: None,
                skip_bad: false,
                max_train_images: None,
                max_eval_images: None,
            },
            model: DalleConfig::new(0, 24, 0, [0, 0])
                .with_d_model(64)
                .with_n_heads(4)
                .with_n_layers(2)
                .with_d_hidden(256)
                .with_dropout(0.0),
            training: Budget {
                warmup_fraction: 0.05,
                final_lr_ratio: 0.1,
                ..Budget::new(6, 32, 2e-3)
            },
            caption_dropout: 0.1,
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

/// Everything that can stop a run, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DalleError {
    #[error(transparent)]
    VqVae(#[from] VqVaeError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokens(#[from] crate::data::ImageTokensError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Synthetic(#[from] crate::data::SyntheticError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{0}")]
    Config(String),
}

/// Held-out cross-entropies after an epoch, in nats per token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleEvaluation {
    pub text_loss: f64,
    pub image_loss: f64,
}

impl EpochEvaluation for DalleEvaluation {
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![("text CE", self.text_loss), ("image CE", self.image_loss)]
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

/// Everything a run trains on.
pub struct DalleData {
    pub train: DalleSplit,
    pub val: DalleSplit,
    pub bpe: TextTokenizer,
    pub tokens_info: crate::data::TokenFileInfo,
    pub image_size: usize,
}

/// Loads the VQ-VAE's token files (checking they are its own), the captions, and the BPE
/// tokenizer (trained on the training captions, or reused from an earlier run in `out_dir`).
pub fn prepare_dalle_data(
    config: &DalleDataConfig,
    text_len: usize,
    paths: &RunPaths,
) -> Result<DalleData, DalleError> {
    let trained: super::vqvae::TrainedVqVaeConfig =
        read_json(&config.vqvae_dir.join("vqvae-config.json"))?;
    let expected = TokenExpectation {
        vqvae_checkpoint: config.vqvae_checkpoint.clone(),
        image_size: trained.image_size,
    };
    let train_tokens = ImageTokens::load_expecting(
        &token_file_path(&config.vqvae_dir, CocoSplit::Train2014),
        &expected,
    )?;
    let val_tokens = ImageTokens::load_expecting(
        &token_file_path(&config.vqvae_dir, CocoSplit::Val2014),
        &expected,
    )?;

    let root = dataset_root(
        config.coco_root.as_deref(),
        &config.synthetic,
        &paths.data_dir,
    )?;
    let policy = BadEntryPolicy::skipping(config.skip_bad);
    let train_set = CocoDataset::load(&root, CocoSplit::Train2014, policy)?;
    let val_set = CocoDataset::load(&root, CocoSplit::Val2014, policy)?;

    let saved = paths.out_dir.join("caption-bpe.json");
    // The tokenizer of an earlier run in this directory wins, so checkpoints keep their ids.
    let bpe = if saved.exists() {
        TextTokenizer::from_file(&saved)?
    } else {
        let bpe = match &config.bpe {
            Some(path) => TextTokenizer::from_file(path)?,
            None => TextTokenizer::train_bpe(train_set.all_captions(), config.bpe_vocab)?,
        };
        bpe.save(&saved)?;
        bpe
    };
    let mut train = DalleSplit::prepare(&train_set, &train_tokens, &bpe, text_len)?;
    let mut val = DalleSplit::prepare(&val_set, &val_tokens, &bpe, text_len)?;
    for (split, max) in [
        (&mut train, config.max_train_images),
        (&mut val, config.max_eval_images),
    ] {
        split.examples.sort_by_key(|e| e.image_id);
        split.examples.truncate(max.unwrap_or(usize::MAX));
    }
    if train.is_empty() || val.is_empty() {
        return Err(DalleError::Config(format!(
            "no image of {} has tokens in {} ({} train, {} val); were the tokens made from another dataset?",
            root.display(),
            config.vqvae_dir.display(),
            train.len(),
            val.len()
        )));
    }
    Ok(DalleData {
        train,
        val,
        bpe,
        tokens_info: train_tokens.info,
        image_size: trained.image_size,
    })
}

/// Mean text and image cross-entropy over every example of `split` (first caption each).
pub fn evaluate_dalle<B: Backend>(
    model: &Dalle<B>,
    split: &DalleSplit,
    batch_size: usize,
    device: &B::Device,
) -> DalleEvaluation {
    let (mut text, mut image) = (0.0, 0.0);
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let zeros = vec![0; chunk.len()];
        let keep = vec![false; chunk.len()];
        let (t, codes) = split.batch::<B>(&model.config, chunk, &zeros, &keep, device);
        let (logits, targets) = model.forward(t, codes);
        let loss = model.loss(logits, targets);
        let n = chunk.len() as f64;
        text += loss.text.into_scalar().elem::<f64>() * n;
        image += loss.image.into_scalar().elem::<f64>() * n;
    }
    let n = split.len().max(1) as f64;
    DalleEvaluation {
        text_loss: text / n,
        image_loss: image / n,
    }
}

/// Held-out examples whose samples are drawn every epoch.
const SHOWN_CAPTIONS: usize = 4;
const SAMPLES_PER_CAPTION: usize = 6;

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

    fn loss(
        &self,
        model: &Dalle<B>,
        indices: &[usize],
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<StepOutput<B, ()>, TrainError> {
        let captions: Vec<usize> = indices.iter().map(|_| rng.random_range(0..64)).collect();
        let null: Vec<bool> = indices
            .iter()
            .map(|_| rng.random_bool(self.caption_dropout))
            .collect();
        let (text, codes) =
            self.train
                .batch::<B>(self.model_config, indices, &captions, &null, device);
        let (logits, targets) = model.forward(text, codes);
        let loss = model.loss(logits, targets);
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
/// curves and sample grids.
pub fn train_dalle<B: AutodiffBackend>(
    config: &TrainDalleConfig,
    paths: &RunPaths,
    device: &B::Device,
    show_progress: bool,
    log_every: usize,
) -> Result<DalleResult, DalleError> {
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
    let model: Dalle<B> = seeded_init::<B, _>(budget.seed, device, || model_config.init(device));
    let multi = progress::multi(show_progress);
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
        log_every,
    };
    let trained = train(&task, model, budget, &run_dir, &display, device)?;
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
    let mut caption = vec![format!(
        "Each row: a held-out image as the VQ-VAE reconstructs it, then {SAMPLES_PER_CAPTION} samples (top-k 32, guidance 3) for its caption:"
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

/// One row per shown held-out caption: the real image, then samples.
fn write_samples<B: Backend>(
    model: &Dalle<B>,
    vqvae: &TrainedVqVae<B>,
    val: &DalleSplit,
    path: &Path,
    device: &B::Device,
) -> Result<(), CheckpointError> {
    let shown = &val.examples[..val.len().min(SHOWN_CAPTIONS)];
    let texts: Vec<Vec<u32>> = shown
        .iter()
        .flat_map(|example| {
            std::iter::repeat_n(
                model.config.text_ids(&example.captions[0]),
                SAMPLES_PER_CAPTION,
            )
        })
        .collect();
    let sampling = SamplingConfig::recommended();
    let codes = generate(model, &texts, &sampling, device);
    let generated = decode_codes(&vqvae.model, &codes, model.config.grid, device);
    let real = decode_codes(
        &vqvae.model,
        &shown
            .iter()
            .map(|e| e.codes.iter().map(|&c| c as usize).collect())
            .collect::<Vec<_>>(),
        model.config.grid,
        device,
    );
    let rows: Vec<Vec<Vec<u8>>> = real
        .into_iter()
        .zip(generated.chunks(SAMPLES_PER_CAPTION))
        .map(|(real, samples)| {
            std::iter::once(real)
                .chain(samples.iter().cloned())
                .collect()
        })
        .collect();
    let size = vqvae.config.image_size;
    write_image_grid(path, &rows, size, (96 / size).max(1) as u32)
}

fn write_loss_curve(
    history: &[EpochLog<DalleEvaluation>],
    dir: &Path,
) -> Result<(), CheckpointError> {
    let series = |name: &str, color: usize, value: fn(&EpochLog<DalleEvaluation>) -> f64| Series {
        name: name.to_string(),
        points: history.iter().map(|h| (h.epoch as f64, value(h))).collect(),
        color,
    };
    line_chart(
        &dir.join("curve-loss.png"),
        "DALL-E decoder cross-entropy (nats per token)",
        "epoch",
        "cross-entropy",
        &[
            series("text, train", 0, |h| {
                h.train.get("text").unwrap_or(f64::NAN)
            }),
            series("text, held-out", 1, |h| h.eval.text_loss),
            series("image, train", 2, |h| {
                h.train.get("image").unwrap_or(f64::NAN)
            }),
            series("image, held-out", 3, |h| h.eval.image_loss),
        ],
    )
}
