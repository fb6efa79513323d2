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

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    assign_stable_param_ids, claim_run_dir, load_safetensors, read_json, save_safetensors,
    write_atomic, CheckpointError,
};
use super::epoch_checkpoints::{epoch_seed, EpochCheckpoints, RunState};
use super::image_grid::write_image_grid;
use super::plots::{line_chart, Series};
use super::progress;
use super::schedule::WarmupCosine;
use super::vqvae::{decode_codes, token_file_path, TrainedVqVae, VqVaeError};
use super::RunPaths;
use crate::data::{
    checkpoint_fingerprint, dataset_root, BadEntryPolicy, CocoDataset, CocoSplit, DataError,
    ImageTokens, SyntheticCocoConfig, TextTokenizer, TokenExpectation, TokenizerError,
};
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
    /// Text positions of the stream (256 in DALL-E).
    pub text_len: usize,
    /// Size of the BPE vocabulary trained on the training captions.
    pub bpe_vocab: usize,
    /// An existing `caption-bpe.json` to use instead of training one (BPE training is not
    /// reproducible across processes; see `TextTokenizer::train_wordpiece`).
    pub bpe: Option<PathBuf>,
    pub skip_bad: bool,
}

/// The decoder's size and attention layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleSize {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub d_hidden: usize,
    pub dropout: f64,
    pub attention: AttentionLayout,
}

/// The optimisation budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleTrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_fraction: f64,
    pub grad_clip: f64,
    /// Probability that an example's caption is replaced by the null caption, so that the
    /// model also learns the unconditional distribution used by guidance.
    pub caption_dropout: f64,
    pub seed: u64,
}

/// A whole `train-dalle` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainDalleConfig {
    pub data: DalleDataConfig,
    pub model: DalleSize,
    pub training: DalleTrainingConfig,
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
                text_len: 24,
                bpe_vocab: 256,
                bpe: None,
                skip_bad: false,
            },
            model: DalleSize {
                d_model: 64,
                n_heads: 4,
                n_layers: 2,
                d_hidden: 256,
                dropout: 0.0,
                attention: AttentionLayout::Dense,
            },
            training: DalleTrainingConfig {
                epochs: 6,
                batch_size: 32,
                learning_rate: 2e-3,
                weight_decay: 0.01,
                warmup_fraction: 0.05,
                grad_clip: 1.0,
                caption_dropout: 0.1,
                seed: 0,
            },
        }
    }

    /// MSCOCO on a GPU: about 100M parameters (1/120 of DALL-E's 12B), 256 text tokens, a
    /// 16384-entry BPE vocabulary, DALL-E's sparse attention layout.
    pub fn coco(root: PathBuf, vqvae_dir: PathBuf) -> Self {
        let mut config = Self::synthetic(vqvae_dir);
        config.data.coco_root = Some(root);
        config.data.text_len = 256;
        config.data.bpe_vocab = 16384;
        config.model = DalleSize {
            d_model: 768,
            n_heads: 12,
            n_layers: 12,
            d_hidden: 3072,
            dropout: 0.1,
            attention: AttentionLayout::Sparse { conv_kernel: 11 },
        };
        config.training.epochs = 20;
        config.training.batch_size = 32;
        config.training.learning_rate = 3e-4;
        config
    }

    /// The decoder's config for a BPE vocabulary of `text_vocab` ids and the VQ-VAE's grid.
    pub fn model_config(&self, text_vocab: usize, n_codes: usize, grid: [usize; 2]) -> DalleConfig {
        let m = &self.model;
        DalleConfig::new(text_vocab, self.data.text_len, n_codes, grid)
            .with_d_model(m.d_model)
            .with_n_heads(m.n_heads)
            .with_n_layers(m.n_layers)
            .with_d_hidden(m.d_hidden)
            .with_dropout(m.dropout)
            .with_attention(m.attention)
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
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the training loss became {value} in epoch {epoch}; lower --lr or check the data. The checkpoint of the previous epoch is kept")]
    NonFiniteLoss { epoch: usize, value: f64 },
}

/// One image: its captions as BPE ids and its token grid.
#[derive(Debug, Clone)]
pub struct DalleExample {
    pub image_id: u64,
    pub captions: Vec<Vec<u32>>,
    pub raw_captions: Vec<String>,
    pub codes: Vec<u16>,
}

/// The examples of one split.
pub struct DalleSplit {
    pub examples: Vec<DalleExample>,
}

impl DalleSplit {
    /// Pairs the captions of `split` with the image tokens of `tokens`; images without tokens
    /// (skipped when the tokens were made) are left out.
    pub fn prepare(
        dataset: &CocoDataset,
        tokens: &ImageTokens,
        bpe: &TextTokenizer,
        text_len: usize,
    ) -> Result<Self, TokenizerError> {
        let index = tokens.index_by_id();
        let mut examples = Vec::with_capacity(tokens.len());
        for image in &dataset.images {
            let Some(&i) = index.get(&image.id) else {
                continue;
            };
            let captions = image
                .captions
                .iter()
                .map(|caption| bpe.encode(caption, text_len))
                .collect::<Result<Vec<_>, _>>()?;
            examples.push(DalleExample {
                image_id: image.id,
                captions,
                raw_captions: image.captions.clone(),
                codes: tokens.image(i).to_vec(),
            });
        }
        Ok(Self { examples })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Text ids `[batch, text_len]` and codes `[batch, n_image_tokens]` of `indices`, with
    /// caption `caption_choice[i]` (modulo the number of captions) or, where `null[i]`, the
    /// null caption.
    pub fn batch<B: Backend>(
        &self,
        config: &DalleConfig,
        indices: &[usize],
        caption_choice: &[usize],
        null: &[bool],
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let n = indices.len();
        let mut text = Vec::with_capacity(n * config.text_len);
        let mut codes = Vec::with_capacity(n * config.n_image_tokens());
        for (j, &i) in indices.iter().enumerate() {
            let example = &self.examples[i];
            let caption: &[u32] = if null[j] {
                &[]
            } else {
                &example.captions[caption_choice[j] % example.captions.len()]
            };
            text.extend(config.text_ids(caption).into_iter().map(|t| t as i64));
            codes.extend(example.codes.iter().map(|&c| c as i64));
        }
        (
            Tensor::from_data(TensorData::new(text, [n, config.text_len]), device),
            Tensor::from_data(TensorData::new(codes, [n, config.n_image_tokens()]), device),
        )
    }
}

/// Metrics after one epoch (cross-entropies in nats per token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleEpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub train_text_loss: f64,
    pub train_image_loss: f64,
    pub val_text_loss: f64,
    pub val_image_loss: f64,
    pub train_seconds: f64,
    pub train_tokens_per_second: f64,
}

/// What `result.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DalleResult {
    pub device: String,
    pub train_images: usize,
    pub eval_images: usize,
    pub n_params: usize,
    pub final_epoch: DalleEpochLog,
    pub history: Vec<DalleEpochLog>,
}

/// What `dalle-config.json` holds: enough to rebuild the decoder and find its tokenizers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedDalleConfig {
    pub model: DalleConfig,
    pub vqvae_dir: PathBuf,
    pub vqvae_checkpoint: String,
    pub image_size: usize,
}

/// A trained decoder with its caption tokenizer and VQ-VAE, ready to generate.
pub struct TrainedDalle<B: Backend> {
    pub model: Dalle<B>,
    pub config: TrainedDalleConfig,
    pub bpe: TextTokenizer,
    pub vqvae: TrainedVqVae<B>,
}

impl<B: Backend> TrainedDalle<B> {
    /// Loads a `train-dalle` output directory and the VQ-VAE it was trained on (from
    /// `vqvae_dir`, or from the directory recorded at training time), refusing a VQ-VAE whose
    /// checkpoint is not the one the decoder learned.
    pub fn load(
        dir: &Path,
        vqvae_dir: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self, DalleError> {
        let config_path = dir.join("dalle-config.json");
        let config: TrainedDalleConfig = read_json(&config_path)?;
        let model = load_safetensors(
            config.model.init::<B>(device),
            &dir.join("dalle.safetensors"),
        )?;
        let bpe = TextTokenizer::from_file(&dir.join("caption-bpe.json"))?;
        let vqvae_dir = vqvae_dir.unwrap_or(&config.vqvae_dir);
        let vqvae = TrainedVqVae::load(vqvae_dir, device)?;
        if vqvae.fingerprint != config.vqvae_checkpoint {
            return Err(DalleError::Config(format!(
                "the VQ-VAE in {} (checkpoint {}) is not the one {} was trained on (checkpoint {}); pass the original with --vqvae",
                vqvae_dir.display(),
                vqvae.fingerprint,
                dir.display(),
                config.vqvae_checkpoint
            )));
        }
        Ok(Self {
            model,
            config,
            bpe,
            vqvae,
        })
    }

    /// The stream's text ids of a caption.
    pub fn text_ids(&self, caption: &str) -> Result<Vec<u32>, TokenizerError> {
        let ids = self.bpe.encode(caption, self.config.model.text_len)?;
        Ok(self.config.model.text_ids(&ids))
    }
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
    let train = DalleSplit::prepare(&train_set, &train_tokens, &bpe, config.text_len)?;
    let val = DalleSplit::prepare(&val_set, &val_tokens, &bpe, config.text_len)?;
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
) -> (f64, f64) {
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
    (text / n, image / n)
}

/// Held-out examples whose samples are drawn every epoch.
const SHOWN_CAPTIONS: usize = 4;
const SAMPLES_PER_CAPTION: usize = 6;

/// Trains the decoder (resuming a partial run in `paths.out_dir`) and writes its checkpoint,
/// curves and sample grids.
pub fn train_dalle<B: AutodiffBackend>(
    config: &TrainDalleConfig,
    paths: &RunPaths,
    device: &B::Device,
    show_progress: bool,
) -> Result<DalleResult, DalleError> {
    let training = &config.training;
    if training.epochs == 0 || training.batch_size == 0 || config.data.text_len == 0 {
        return Err(DalleError::Config(
            "--epochs, --batch-size and --text-len must be at least 1".into(),
        ));
    }
    if !config.model.d_model.is_multiple_of(config.model.n_heads) {
        return Err(DalleError::Config(format!(
            "the width {} is not divisible by {} heads",
            config.model.d_model, config.model.n_heads
        )));
    }
    claim_run_dir(&paths.out_dir, config)?;
    let result_path = paths.out_dir.join("result.json");
    if let Ok(bytes) = fs::read(&result_path) {
        return serde_json::from_slice(&bytes).map_err(|e| DalleError::Corrupt {
            path: result_path,
            message: e.to_string(),
        });
    }
    let data = prepare_dalle_data(&config.data, paths)?;
    let vqvae = TrainedVqVae::<B::InnerBackend>::load(&config.data.vqvae_dir, device)?;
    let model_config = config.model_config(
        data.bpe.vocab_size(),
        data.tokens_info.n_codes,
        data.tokens_info.grid,
    );
    B::seed(device, training.seed);
    let model: Dalle<B> = assign_stable_param_ids(model_config.init(device));
    let n_params = model.num_params();
    let optimizer = AdamWConfig::new()
        .with_weight_decay(training.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(
            training.grad_clip as f32,
        )))
        .init::<B, Dalle<B>>();
    let checkpoints = EpochCheckpoints::new(&paths.out_dir);
    let (mut model, mut optimizer, state) =
        checkpoints.resume::<B, _, _, DalleEpochLog>(model, optimizer, device)?;
    let mut history = state.history;
    let multi = progress::multi(show_progress);
    progress::println(
        &multi,
        &format!(
            "decoder: {n_params} parameters, {} text + {} image positions, {} train / {} held-out images",
            model_config.text_len,
            model_config.n_image_tokens(),
            data.train.len(),
            data.val.len()
        ),
    );
    if state.epochs_done > 0 {
        progress::println(
            &multi,
            &format!("resuming after epoch {}", state.epochs_done),
        );
    }

    let train = &data.train;
    let steps_per_epoch = train.len().div_ceil(training.batch_size);
    let schedule = WarmupCosine::new(
        training.learning_rate,
        steps_per_epoch * training.epochs,
        training.warmup_fraction,
        0.1,
    );
    let tokens_per_example = model_config.seq_len();
    for epoch in state.epochs_done..training.epochs {
        let seed = epoch_seed(training.seed, epoch);
        B::seed(device, seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let captions: Vec<usize> = order.iter().map(|_| rng.random_range(0..64)).collect();
        let null: Vec<bool> = order
            .iter()
            .map(|_| rng.random_bool(training.caption_dropout))
            .collect();

        let bar = progress::bar_in(
            &multi,
            steps_per_epoch as u64,
            &format!("epoch {}/{}", epoch + 1, training.epochs),
        );
        let started = Instant::now();
        let mut text_sum = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut image_sum = Tensor::<B::InnerBackend, 1>::zeros([1], device);
        let mut lr = schedule.at(0);
        for (step_in_epoch, ((chunk, caption_chunk), null_chunk)) in order
            .chunks(training.batch_size)
            .zip(captions.chunks(training.batch_size))
            .zip(null.chunks(training.batch_size))
            .enumerate()
        {
            lr = schedule.at(epoch * steps_per_epoch + step_in_epoch);
            let (text, codes) =
                train.batch::<B>(&model_config, chunk, caption_chunk, null_chunk, device);
            let (logits, targets) = model.forward(text, codes);
            let loss = model.loss(logits, targets);
            text_sum = text_sum + loss.text.clone().inner();
            image_sum = image_sum + loss.image.clone().inner();
            let grads = GradientsParams::from_grads(loss.total.backward(), &model);
            model = optimizer.step(lr, model, grads);
            bar.inc(1);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        multi.remove(&bar);
        let steps = steps_per_epoch as f64;
        let train_text_loss = text_sum.into_scalar().elem::<f64>() / steps;
        let train_image_loss = image_sum.into_scalar().elem::<f64>() / steps;
        if !(train_text_loss + train_image_loss).is_finite() {
            return Err(DalleError::NonFiniteLoss {
                epoch: epoch + 1,
                value: train_text_loss + train_image_loss,
            });
        }
        let valid = model.valid();
        let (val_text_loss, val_image_loss) =
            evaluate_dalle(&valid, &data.val, training.batch_size, device);
        let log = DalleEpochLog {
            epoch: epoch + 1,
            steps: (epoch + 1) * steps_per_epoch,
            learning_rate: lr,
            train_text_loss,
            train_image_loss,
            val_text_loss,
            val_image_loss,
            train_seconds,
            train_tokens_per_second: (train.len() * tokens_per_example) as f64 / train_seconds,
        };
        progress::println(&multi, &format!(
            "epoch {}/{}: train text {:.3}, image {:.3}; held-out text {:.3}, image {:.3} ({:.1}s, {:.0} tokens/s)",
            log.epoch, training.epochs, log.train_text_loss, log.train_image_loss,
            log.val_text_loss, log.val_image_loss, train_seconds, log.train_tokens_per_second
        ));
        history.push(log);
        write_samples(
            &valid,
            &vqvae,
            &data.val,
            &paths
                .out_dir
                .join("samples")
                .join(format!("epoch-{:03}.png", epoch + 1)),
            device,
        )?;
        write_loss_curve(&history, &paths.out_dir)?;
        checkpoints.commit::<B, _, _, _>(
            &model,
            &optimizer,
            &RunState {
                epochs_done: epoch + 1,
                history: history.clone(),
            },
        )?;
    }

    let model = model.valid();
    save_safetensors(&model, &paths.out_dir.join("dalle.safetensors"))?;
    let trained = TrainedDalleConfig {
        model: model_config,
        vqvae_dir: config.data.vqvae_dir.clone(),
        vqvae_checkpoint: config.data.vqvae_checkpoint.clone(),
        image_size: data.image_size,
    };
    write_atomic(
        &paths.out_dir.join("dalle-config.json"),
        &serde_json::to_vec_pretty(&trained).expect("config serialises"),
    )?;
    let result = DalleResult {
        device: format!("{device:?}"),
        train_images: train.len(),
        eval_images: data.val.len(),
        n_params,
        final_epoch: history.last().cloned().expect("at least one epoch"),
        history,
    };
    write_atomic(
        &result_path,
        &serde_json::to_vec_pretty(&result).expect("result serialises"),
    )?;
    checkpoints.finish(training.epochs);
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
    let sampling = SamplingConfig {
        top_k: Some(32),
        ..SamplingConfig::default()
    };
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

fn write_loss_curve(history: &[DalleEpochLog], dir: &Path) -> Result<(), CheckpointError> {
    let series = |name: &str, color: usize, value: fn(&DalleEpochLog) -> f64| Series {
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
            series("text, train", 0, |h| h.train_text_loss),
            series("text, held-out", 1, |h| h.val_text_loss),
            series("image, train", 2, |h| h.train_image_loss),
            series("image, held-out", 3, |h| h.val_image_loss),
        ],
    )
}
