//! Image+text multi-label classifiers: the single-stream model, and the interface that the
//! `classify` experiment trains every classifier through (LXMERT's included).

mod single_stream;

use crate::nn::Backend;
use burn::tensor::Tensor;

pub use single_stream::{
    ClassifierOutput, Modality, SingleStreamClassifier, SingleStreamClassifierConfig,
};

use crate::models::TextBatch;

/// A model that maps an image and its caption to multi-label logits.
pub trait MultiLabelClassifier<B: Backend> {
    /// # Shapes
    /// - `images`: `[batch, 3, size, size]`, normalised
    /// - `text`: `[batch, seq]` captions ending with `[SEP]`
    /// - returns: `[batch, n_labels]` logits
    fn classify(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> Tensor<B, 2>;
}

impl<B: Backend> MultiLabelClassifier<B> for SingleStreamClassifier<B> {
    fn classify(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> Tensor<B, 2> {
        self.forward(images, text).logits
    }
}
