//! LXMERT fine-tuned to answer questions (paper section 4.1, airsplay/lxmert's `VQAModel` and
//! `NLVR2Model`, Hugging Face's `LxmertForQuestionAnswering`): the answer head reads the
//! pooled output, a two-layer MLP with GeLU and LayerNorm over the answer vocabulary. For
//! NLVR2 the statement is encoded with each of its two images and the head reads both pooled
//! outputs side by side.
//!
//! The head's names follow Hugging Face's `answer_head.logit_fc.{0,2,3}` through
//! [`walk_answer_head`]; its logits match `LxmertForQuestionAnswering`'s (tests/lxmert.rs).

use crate::nn::precision::linear;
use crate::nn::{gelu, Backend, HfTensors, LayerNorm, LayerNormConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;

use super::model::{Lxmert, LxmertConfig, LxmertText};
use crate::models::classifier::MultiLabelClassifier;
use crate::models::TextBatch;

/// Configuration of [`AnswerHead`].
#[derive(Config, Debug)]
pub struct AnswerHeadConfig {
    /// The pooled width it reads: `d_model`, or `2 * d_model` for two images (NLVR2).
    pub d_input: usize,
    /// Width of the hidden layer: `2 * d_model` in LXMERT.
    pub d_hidden: usize,
    pub n_answers: usize,
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
}

impl AnswerHeadConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> AnswerHead<B> {
        AnswerHead {
            dense: LinearConfig::new(self.d_input, self.d_hidden).init(device),
            norm: LayerNormConfig::new(self.d_hidden)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            out: LinearConfig::new(self.d_hidden, self.n_answers).init(device),
        }
    }
}

/// `Linear -> GeLU -> LayerNorm -> Linear`, LXMERT's `VisualAnswerHead`.
#[derive(Module, Debug)]
pub struct AnswerHead<B: Backend> {
    pub dense: Linear<B>,
    pub norm: LayerNorm<B>,
    pub out: Linear<B>,
}

impl<B: Backend> AnswerHead<B> {
    /// # Shapes
    /// - `pooled`: `[batch, d_input]`
    /// - returns: logits `[batch, n_answers]`
    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let hidden = gelu(linear(&self.dense, pooled));
        linear(&self.out, self.norm.forward(hidden))
    }
}

/// The head's tensors under Hugging Face's names (`{prefix}logit_fc.0`, `.2`, `.3`; the GeLU
/// is `.1`).
pub fn walk_answer_head<B: Backend, T: HfTensors>(
    tensors: &mut T,
    prefix: &str,
    mut head: AnswerHead<B>,
) -> AnswerHead<B> {
    head.dense = tensors.linear(&format!("{prefix}logit_fc.0"), head.dense);
    head.norm = tensors.layer_norm(&format!("{prefix}logit_fc.2"), head.norm);
    head.out = tensors.linear(&format!("{prefix}logit_fc.3"), head.out);
    head
}

/// Configuration of [`LxmertQuestionAnswering`].
#[derive(Config, Debug)]
pub struct LxmertQuestionAnsweringConfig {
    /// Must read pixels (`pixels` set) for [`LxmertQuestionAnswering::forward`].
    pub lxmert: LxmertConfig,
    pub n_answers: usize,
    pub cls_id: u32,
    /// Images each question is about: 1 (VQA, GQA) or 2 (NLVR2).
    #[config(default = 1)]
    pub images_per_question: usize,
}

impl LxmertQuestionAnsweringConfig {
    pub fn head(&self) -> AnswerHeadConfig {
        AnswerHeadConfig::new(
            self.images_per_question * self.lxmert.d_model,
            2 * self.lxmert.d_model,
            self.n_answers,
        )
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> LxmertQuestionAnswering<B> {
        assert!(
            self.images_per_question >= 1,
            "a question is about an image"
        );
        LxmertQuestionAnswering {
            lxmert: self.lxmert.init(device),
            answer_head: self.head().init(device),
            cls_id: self.cls_id,
            images_per_question: self.images_per_question,
        }
    }
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct LxmertQuestionAnswering<B: Backend> {
    pub lxmert: Lxmert<B>,
    pub answer_head: AnswerHead<B>,
    #[module(skip)]
    cls_id: u32,
    #[module(skip)]
    images_per_question: usize,
}

/// Answer logits and the pooled states they were read from.
#[derive(Debug, Clone)]
pub struct AnswerOutput<B: Backend> {
    /// `[batch, n_answers]`
    pub logits: Tensor<B, 2>,
    /// `[batch, images_per_question * d_model]`
    pub pooled: Tensor<B, 2>,
}

impl<B: Backend> LxmertQuestionAnswering<B> {
    /// # Shapes
    /// - `images`: `[batch * images_per_question, 3, size, size]`, normalised, a question's
    ///   images next to each other
    /// - `text`: `[batch, seq]` questions ending with `[SEP]` (the `[CLS]` is added here)
    pub fn forward(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> AnswerOutput<B> {
        // Each question is encoded once per image (NLVR2 reads the statement with each).
        let text = text.repeat_each(self.images_per_question);
        let regions = self.lxmert.regions_of(images);
        let encoded = self
            .lxmert
            .forward(LxmertText::with_cls(text, self.cls_id), regions);
        self.answer(encoded.pooled)
    }

    /// The head on the encoder's pooled outputs, `[batch * images_per_question, d_model]`.
    pub fn answer(&self, pooled: Tensor<B, 2>) -> AnswerOutput<B> {
        let [rows, d_model] = pooled.dims();
        let k = self.images_per_question;
        let pooled = pooled.reshape([rows / k, k * d_model]);
        AnswerOutput {
            logits: self.answer_head.forward(pooled.clone()),
            pooled,
        }
    }
}

impl<B: Backend> MultiLabelClassifier<B> for LxmertQuestionAnswering<B> {
    fn classify(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> Tensor<B, 2> {
        self.forward(images, text).logits
    }
}
