//! Datasets: MSCOCO 2014 in its official layout, the built-in synthetic set in the same format,
//! the preprocessed-image cache, image-token files, the text tokenizer and batching, and the
//! question-answering tasks (VQA v2, GQA, NLVR2) with their built-in question set.

pub mod batch;
pub mod caption_conversion;
pub mod captions;
pub mod categories;
pub mod classification;
pub mod coco;
pub mod dalle_split;
pub mod error;
pub mod fingerprint;
pub mod glyphs;
pub mod image_cache;
pub mod image_file;
pub mod image_split;
pub mod image_tokens;
pub mod lxmert_pretraining;
pub mod prepared;
pub mod region_features;
pub mod subword_training;
pub mod synthetic;
pub mod synthetic_captions;
pub mod tokenizer;
pub mod vqa;

pub use crate::models::TextBatch;
pub use batch::{float_rows, image_batch, images_to_rgb, IMAGE_MEAN, IMAGE_STD};
pub use captions::{CaptionLanguage, CaptionSource};
pub use classification::{
    ClassificationBatch, ClassificationExample, ClassificationSplit, PrepareError,
};
pub use coco::{CocoCategory, CocoDataset, CocoImage, CocoObject, CocoSplit};
pub use dalle_split::{DalleExample, DalleSplit};
pub use error::{BadEntryPolicy, DataError, SkipReport};
pub use image_cache::{preprocess_image, source_images_fingerprint, ImageCache};
pub use image_file::open_image;
pub use image_split::ImageSplit;
pub use image_tokens::{
    checkpoint_fingerprint, ImageTokens, ImageTokensError, TokenExpectation, TokenFileInfo,
};
pub use lxmert_pretraining::{mask_tokens, BatchRecipe, MaskedTokens, MaskingConfig};
pub use prepared::{prepare_data, DataConfig, LoadError, PreparedData};
pub use region_features::{
    convert_tsv, tsv_line, ConversionSummary, RegionBatch, RegionFeatureError, RegionFeatures,
};
pub use synthetic::{
    dataset_root, ensure_synthetic_captions, ensure_synthetic_coco, synthetic_captions_path,
    synthetic_dir_name, write_synthetic_coco, SyntheticCocoConfig, SyntheticError,
};
pub use synthetic_captions::mentioned_categories;
pub use tokenizer::{CaptionCoverage, SpecialIds, TextTokenizer, TokenizerError, SPECIAL_TOKENS};
