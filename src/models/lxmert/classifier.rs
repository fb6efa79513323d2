//! LXMERT as a two-stream multi-label classifier: a linear head on the pooled output, the way
//! LXMERT is fine-tuned for VQA and NLVR2 (paper section 4.1), reading raw pixels through the
//! model's patch encoder so it competes with the single-stream rows of `classify` on equal
//! terms.

use crate::nn::precision::linear;
use crate::nn::Backend;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::Tensor;

use super::model::{Lxmert, LxmertConfig, LxmertText};
use crate::models::classifier::ClassifierOutput;
use crate::models::TextBatch;

/// Configuration of [`LxmertClassifier`].
#[derive(Config, Debug)]
pub struct LxmertClassifierConfig {
    /// Must read pixels (`pixels` set).
    pub lxmert: LxmertConfig,
    pub n_labels: usize,
    pub cls_id: u32,
    /// Initial probability of every label, as in the single-stream classifier.
    #[config(default = 0.05)]
    pub label_prior: f64,
}

impl LxmertClassifierConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> LxmertClassifier<B> {
        assert!(
            self.lxmert.pixels.is_some(),
            "the LXMERT classifier reads pixels; set LxmertConfig::pixels"
        );
        let mut head = LinearConfig::new(self.lxmert.d_model, self.n_labels).init(device);
        let prior_logit = (self.label_prior / (1.0 - self.label_prior)).ln();
        head.bias = Some(Param::from_tensor(Tensor::full(
            [self.n_labels],
            prior_logit,
            device,
        )));
        LxmertClassifier {
            lxmert: self.lxmert.init(device),
            head,
            dropout: DropoutConfig::new(self.lxmert.dropout).init(),
            cls_id: self.cls_id,
        }
    }
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct LxmertClassifier<B: Backend> {
    pub lxmert: Lxmert<B>,
    pub head: Linear<B>,
    dropout: Dropout,
    #[module(skip)]
    cls_id: u32,
}

impl<B: Backend> LxmertClassifier<B> {
    /// # Shapes
    /// - `images`: `[batch, 3, size, size]`, normalised
    /// - `text`: `[batch, seq]` captions ending with `[SEP]` (the `[CLS]` is added here)
    /// - returns: logits `[batch, n_labels]`, pooled state `[batch, d_model]`
    pub fn forward(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> ClassifierOutput<B> {
        let regions = self.lxmert.regions_of(images);
        let output = self
            .lxmert
            .forward(LxmertText::with_cls(text, self.cls_id), regions);
        let logits = linear(&self.head, self.dropout.forward(output.pooled.clone()));
        ClassifierOutput {
            logits,
            cls_state: output.pooled,
        }
    }
}

impl<B: Backend> crate::models::classifier::MultiLabelClassifier<B> for LxmertClassifier<B> {
    fn classify(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> Tensor<B, 2> {
        self.forward(images, text).logits
    }
}
