//! The data every classifier and LXMERT run reads: both splits of COCO-format data (or the
//! built-in synthetic set), with the image caches mapped and the WordPiece tokenizer trained
//! (or reused) and saved in the run directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    dataset_root, BadEntryPolicy, CaptionSource, ClassificationSplit, CocoDataset, CocoSplit,
    DataError, PrepareError, SkipReport, SyntheticCocoConfig, SyntheticError, TextTokenizer,
    TokenizerError,
};
use crate::io::RunPaths;

/// Where the images and captions come from, and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// MSCOCO 2014 in the official layout; `None` uses the built-in synthetic set.
    pub coco_root: Option<PathBuf>,
    pub synthetic: SyntheticCocoConfig,
    /// The captions' language and files (the dataset's own English ones by default).
    #[serde(default, skip_serializing_if = "CaptionSource::is_default")]
    pub captions: CaptionSource,
    /// Side of the square model input, in pixels.
    pub image_size: usize,
    /// Longest caption in tokens (longer ones are truncated).
    pub max_text_len: usize,
    /// Size of the WordPiece vocabulary trained on the training captions.
    pub vocab_size: usize,
    /// An existing `tokenizer.json` to use instead of training one.
    pub tokenizer: Option<PathBuf>,
    pub max_train_images: Option<usize>,
    pub max_eval_images: Option<usize>,
    /// Skip and count bad entries instead of failing.
    pub skip_bad: bool,
}

impl DataConfig {
    /// The built-in synthetic set at 48 px, captions of up to 24 tokens, 200 WordPiece ids.
    pub fn synthetic() -> Self {
        Self {
            coco_root: None,
            synthetic: SyntheticCocoConfig::default(),
            captions: CaptionSource::default(),
            image_size: 48,
            max_text_len: 24,
            vocab_size: 200,
            tokenizer: None,
            max_train_images: None,
            max_eval_images: None,
            skip_bad: false,
        }
    }

    /// MSCOCO 2014 at 224 px, captions of up to 32 tokens, 8000 WordPiece ids.
    pub fn coco(root: PathBuf) -> Self {
        Self {
            coco_root: Some(root),
            image_size: 224,
            max_text_len: 32,
            vocab_size: 8000,
            ..Self::synthetic()
        }
    }
}

/// Why the data could not be prepared, naming the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    #[error("{0}")]
    Invalid(String),
}

/// Prepared data shared by every run.
pub struct PreparedData {
    pub train: ClassificationSplit,
    pub val: ClassificationSplit,
    pub tokenizer: TextTokenizer,
    pub skipped: SkipReport,
    /// Sorted ids of the tokens of words that name an object category: the categories' names
    /// and, on the synthetic set, every caption word of its glyphs (masked LM can prefer them,
    /// see [`crate::data::MaskingConfig::object_word_rate`]).
    pub object_tokens: Vec<u32>,
}

/// The dataset's root and both splits, each read with its run's caption file.
pub struct CaptionedSplits {
    pub root: PathBuf,
    pub train: CocoDataset,
    pub val: CocoDataset,
}

/// Finds (or generates, into `data_dir`) the dataset and loads both splits with the caption
/// files `captions` names. Uncaptioned images are kept: a caller may check them against other
/// files first.
pub fn load_captioned_splits(
    coco_root: Option<&Path>,
    synthetic: &SyntheticCocoConfig,
    captions: &CaptionSource,
    policy: BadEntryPolicy,
    data_dir: &Path,
) -> Result<CaptionedSplits, LoadError> {
    let root = dataset_root(coco_root, synthetic, data_dir)?;
    let synthetic = coco_root.is_none().then_some(synthetic);
    let [train_captions, val_captions] = captions.paths(&root, synthetic)?;
    let train =
        CocoDataset::load_with_captions(&root, CocoSplit::Train2014, &train_captions, policy)?;
    let val = CocoDataset::load_with_captions(&root, CocoSplit::Val2014, &val_captions, policy)?;
    Ok(CaptionedSplits { root, train, val })
}

/// Loads (or generates) the dataset, the tokenizer and the image caches.
pub fn prepare_data(
    config: &DataConfig,
    paths: &RunPaths,
    show_progress: bool,
) -> Result<PreparedData, LoadError> {
    let policy = BadEntryPolicy::skipping(config.skip_bad);
    let CaptionedSplits {
        root,
        mut train,
        mut val,
    } = load_captioned_splits(
        config.coco_root.as_deref(),
        &config.synthetic,
        &config.captions,
        policy,
        &paths.data_dir,
    )?;
    train.drop_uncaptioned(policy)?;
    val.drop_uncaptioned(policy)?;
    if train.categories != val.categories {
        return Err(LoadError::Invalid(format!(
            "{} and {} list different categories",
            CocoSplit::Train2014.instances_path(&root).display(),
            CocoSplit::Val2014.instances_path(&root).display()
        )));
    }

    let mut object_words: Vec<String> = train
        .categories
        .iter()
        .flat_map(|c| c.name.split_whitespace().map(str::to_lowercase))
        .collect();
    if config.coco_root.is_none() {
        object_words.extend(
            super::synthetic::GLYPHS
                .iter()
                .flat_map(|g| g.words.iter().chain(g.korean).map(|w| w.to_string())),
        );
    }
    object_words.sort();
    object_words.dedup();

    // The tokenizer of an earlier run in this directory wins, so checkpoints keep their ids.
    let saved = paths.out_dir.join("tokenizer.json");
    let tokenizer = if saved.exists() {
        TextTokenizer::from_file(&saved)?
    } else {
        let tokenizer = match &config.tokenizer {
            Some(path) => TextTokenizer::from_file(path)?,
            None => TextTokenizer::train_wordpiece(train.all_captions(), config.vocab_size)?,
        };
        fs::create_dir_all(&paths.out_dir).map_err(|source| DataError::Write {
            path: paths.out_dir.clone(),
            source,
        })?;
        tokenizer.save(&saved)?;
        tokenizer
    };
    let object_tokens = super::lxmert_pretraining::object_tokens(&tokenizer, &object_words)?;

    let prepare = |dataset, max_images| {
        ClassificationSplit::prepare(
            dataset,
            &tokenizer,
            config.image_size,
            config.max_text_len,
            max_images,
            &paths.cache_dir,
            policy,
            show_progress,
        )
    };
    let mut train = prepare(train, config.max_train_images)?;
    let mut val = prepare(val, config.max_eval_images)?;
    let mut skipped = std::mem::take(&mut train.skipped);
    skipped.merge(std::mem::take(&mut val.skipped));
    if train.is_empty() || val.is_empty() {
        return Err(LoadError::Invalid(format!(
            "no usable images under {} ({} train, {} val)",
            root.display(),
            train.len(),
            val.len()
        )));
    }
    Ok(PreparedData {
        train,
        val,
        tokenizer,
        skipped,
        object_tokens,
    })
}
