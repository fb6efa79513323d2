//! Single-stream image+text classifier.

mod single_stream;

pub use single_stream::{
    ClassifierOutput, Modality, SingleStreamClassifier, SingleStreamClassifierConfig,
};
