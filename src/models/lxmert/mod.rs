//! LXMERT-style two-stream cross-modal encoder (<https://arxiv.org/abs/1908.07490>): the model,
//! its pretraining heads, a classifier for `classify`, and Hugging Face weight loading.

mod classifier;
pub mod hf;
pub mod hf_folder;
mod model;
mod pretraining;
pub mod question_answering;

pub use classifier::{LxmertClassifier, LxmertClassifierConfig};
pub use model::{
    CrossAttentionBlock, CrossModalityLayer, Lxmert, LxmertConfig, LxmertOutput, LxmertText,
    UnimodalSummaries, VisualRegions,
};
pub use pretraining::{
    patch_colour_targets, ContrastiveHead, LxmertPretraining, LxmertPretrainingConfig,
    MaskedLanguageHead, MaskedObjectHead, Objectives, PretrainingBatch, PretrainingLosses,
    PretrainingVision, CONTRASTIVE_TEMPERATURE, PATCH_TARGET_WIDTH,
};
pub use question_answering::{
    AnswerHead, AnswerHeadConfig, AnswerOutput, LxmertQuestionAnswering,
    LxmertQuestionAnsweringConfig,
};
