//! What the DALL-E decoder trains on: the VQ-VAE's token files (checked to be its own), the
//! captions, and the BPE tokenizer, paired per image.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::prepared::{load_captioned_splits, CaptionedSplits};
use crate::data::{
    BadEntryPolicy, CaptionSource, CocoSplit, DalleSplit, DataError, ImageTokens, LoadError,
    SyntheticCocoConfig, TextTokenizer, TokenExpectation, TokenizerError,
};
use crate::inference::ArtifactError;
use crate::io::checkpoint::read_json;
use crate::io::checkpoint::CheckpointError;
use crate::train::vqvae::{token_file_path, TrainedVqVaeConfig, VqVaeError};
use crate::train::{RunPaths, TrainError};

/// Where the captions and image tokens come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DalleDataConfig {
    /// MSCOCO 2014 (for the captions); `None` uses the built-in synthetic set.
    pub coco_root: Option<PathBuf>,
    pub synthetic: SyntheticCocoConfig,
    /// The captions' language and files (the dataset's own English ones by default).
    #[serde(default, skip_serializing_if = "CaptionSource::is_default")]
    pub captions: CaptionSource,
    /// The `train-vqvae` output directory: its token files and checkpoint.
    pub vqvae_dir: PathBuf,
    /// [`checkpoint_fingerprint`] of the VQ-VAE: a retrained tokenizer is a different run.
    pub vqvae_checkpoint: String,
    /// Size of the BPE vocabulary trained on the training captions.
    pub bpe_vocab: usize,
    /// An existing `caption-bpe.json` to use instead of training one (training is
    /// deterministic; this pins a vocabulary across changed data or code).
    pub bpe: Option<PathBuf>,
    pub skip_bad: bool,
    /// Use only the first N training / held-out images with tokens (by id).
    pub max_train_images: Option<usize>,
    pub max_eval_images: Option<usize>,
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
    Load(#[from] LoadError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{0}")]
    Config(String),
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
    let trained: TrainedVqVaeConfig = read_json(&config.vqvae_dir.join("vqvae-config.json"))?;
    let expected = TokenExpectation {
        vqvae_checkpoint: config.vqvae_checkpoint.clone(),
        image_size: trained.image_size,
        n_codes: trained.model.n_codes,
    };
    let train_tokens = ImageTokens::load_expecting(
        &token_file_path(&config.vqvae_dir, CocoSplit::Train2014),
        &expected,
    )?;
    let val_tokens = ImageTokens::load_expecting(
        &token_file_path(&config.vqvae_dir, CocoSplit::Val2014),
        &expected,
    )?;

    let policy = BadEntryPolicy::skipping(config.skip_bad);
    let CaptionedSplits {
        train: mut train_set,
        val: mut val_set,
        root,
    } = load_captioned_splits(
        config.coco_root.as_deref(),
        &config.synthetic,
        &config.captions,
        policy,
        &paths.data_dir,
    )?;
    for (tokens, set) in [(&train_tokens, &mut train_set), (&val_tokens, &mut val_set)] {
        tokens.check_sources(&token_file_path(&config.vqvae_dir, set.split), set)?;
        set.drop_uncaptioned(policy)?;
    }

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
