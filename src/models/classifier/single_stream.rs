//! A single-stream multi-label classifier over `[CLS] img_1..img_N [SEP] text [SEP]`.
//!
//! One BERT-style encoder reads image regions and caption tokens in one sequence, told apart by
//! segment embeddings, and a multi-label head reads the `[CLS]` state. BERT's tanh pooler is
//! left out: it was pretrained for next-sentence prediction, and trained from scratch here it
//! saturated and stalled learning for several epochs (measured on the synthetic set). This is the model our
//! users know as "ViLBERT" from the seeds, and VisualBERT in the literature
//! (<https://arxiv.org/abs/1908.03557>); the unimodal baselines drop one part of the sequence
//! (Kiela et al., Hateful Memes, <https://arxiv.org/abs/2005.04790>, compare them the same way).

use crate::nn::precision::linear;
use crate::nn::Backend;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::TextBatch;
use crate::nn::{
    AttentionMask, NormPlacement, PatchEncoder, PatchEncoderConfig, TextEmbeddings,
    TextEmbeddingsConfig, TransformerEncoder, TransformerEncoderConfig, TransformerLayerConfig,
    VisualEmbeddings, VisualEmbeddingsConfig,
};

/// Which inputs the classifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Modality {
    /// `[CLS] img [SEP]`
    ImageOnly,
    /// `[CLS] text [SEP]`
    TextOnly,
    /// `[CLS] img [SEP] text [SEP]`
    Joint,
}

impl Modality {
    pub const ALL: [Modality; 3] = [Modality::ImageOnly, Modality::TextOnly, Modality::Joint];

    pub fn name(self) -> &'static str {
        match self {
            Modality::ImageOnly => "image-only",
            Modality::TextOnly => "text-only",
            Modality::Joint => "joint",
        }
    }

    pub fn uses_image(self) -> bool {
        self != Modality::TextOnly
    }

    pub fn uses_text(self) -> bool {
        self != Modality::ImageOnly
    }
}

/// Segment ids: the image half (with `[CLS]`) and the text half.
const IMAGE_SEGMENT: i64 = 0;
const TEXT_SEGMENT: i64 = 1;

/// Configuration of [`SingleStreamClassifier`].
#[derive(Config, Debug)]
pub struct SingleStreamClassifierConfig {
    pub modality: Modality,
    pub n_labels: usize,
    pub vocab_size: usize,
    pub cls_id: u32,
    pub sep_id: u32,
    /// Longest caption in tokens, without the trailing `[SEP]`.
    pub max_text_len: usize,
    pub image_size: usize,
    #[config(default = 8)]
    pub patch_size: usize,
    #[config(default = 32)]
    pub stem_channels: usize,
    #[config(default = 128)]
    pub d_feature: usize,
    #[config(default = 128)]
    pub d_model: usize,
    #[config(default = 4)]
    pub n_heads: usize,
    #[config(default = 2)]
    pub n_layers: usize,
    #[config(default = 512)]
    pub d_hidden: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Initial probability of every label. The head's bias starts at its logit so that the
    /// many rare labels need not be pushed down through the pooler, which would saturate its
    /// tanh and stall learning (the prior initialisation of RetinaNet,
    /// <https://arxiv.org/abs/1708.02002>, section 4.1).
    #[config(default = 0.05)]
    pub label_prior: f64,
    /// Images read with each text (2 for NLVR2's pairs): the text is encoded with each image
    /// and the head reads their `[CLS]` states side by side, as UNITER's and VisualBERT's
    /// NLVR2 heads do.
    #[config(default = 1)]
    pub images_per_input: usize,
}

impl SingleStreamClassifierConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> SingleStreamClassifier<B> {
        let uses_image = self.modality.uses_image();
        let layer = TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_hidden)
            .with_dropout(self.dropout)
            .with_norm(NormPlacement::Post);
        SingleStreamClassifier {
            text_embeddings: TextEmbeddingsConfig::new(
                self.vocab_size,
                self.d_model,
                self.max_text_len + 3,
            )
            .with_dropout(self.dropout)
            .init(device),
            patch_encoder: uses_image.then(|| {
                PatchEncoderConfig::new(self.image_size, self.patch_size, self.d_feature)
                    .with_stem_channels(self.stem_channels)
                    .init(device)
            }),
            visual_embeddings: uses_image.then(|| {
                VisualEmbeddingsConfig::new(self.d_feature, self.d_model)
                    .with_dropout(self.dropout)
                    .init(device)
            }),
            encoder: TransformerEncoderConfig::new(self.n_layers, layer).init(device),
            head: {
                let mut head =
                    LinearConfig::new(self.images_per_input * self.d_model, self.n_labels)
                        .init(device);
                let prior_logit = (self.label_prior / (1.0 - self.label_prior)).ln();
                head.bias = Some(Param::from_tensor(Tensor::full(
                    [self.n_labels],
                    prior_logit,
                    device,
                )));
                head
            },
            dropout: DropoutConfig::new(self.dropout).init(),
            modality: self.modality,
            cls_id: self.cls_id as i64,
            sep_id: self.sep_id as i64,
            images_per_input: self.images_per_input,
        }
    }
}

/// What the classifier returns.
#[derive(Debug, Clone)]
pub struct ClassifierOutput<B: Backend> {
    /// `[batch, n_labels]` multi-label logits (apply a sigmoid for probabilities).
    pub logits: Tensor<B, 2>,
    /// `[batch, images_per_input * d_model]` final `[CLS]` state (one per image).
    pub cls_state: Tensor<B, 2>,
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct SingleStreamClassifier<B: Backend> {
    pub text_embeddings: TextEmbeddings<B>,
    /// Absent in text-only mode.
    pub patch_encoder: Option<PatchEncoder<B>>,
    /// Absent in text-only mode.
    pub visual_embeddings: Option<VisualEmbeddings<B>>,
    pub encoder: TransformerEncoder<B>,
    pub head: Linear<B>,
    dropout: Dropout,
    #[module(skip)]
    modality: Modality,
    cls_id: i64,
    sep_id: i64,
    #[module(skip)]
    images_per_input: usize,
}

impl<B: Backend> SingleStreamClassifier<B> {
    pub fn modality(&self) -> Modality {
        self.modality
    }

    /// Classifies a batch. Inputs the modality does not use are ignored.
    ///
    /// # Shapes
    /// - `images`: `[batch * images_per_input, 3, image_size, image_size]`, normalised, an
    ///   input's images next to each other
    /// - `text.tokens`, `text.padding`: `[batch, seq]`; each caption ends with `[SEP]`
    /// - returns: logits `[batch, n_labels]`, `[CLS]` states `[batch, images_per_input * d_model]`
    pub fn forward(&self, images: Tensor<B, 4>, text: TextBatch<B>) -> ClassifierOutput<B> {
        let device = images.device();
        let text = text.repeat_each(self.images_per_input);
        let batch = text.tokens.dims()[0];
        let mut parts: Vec<Tensor<B, 3>> = Vec::new(); // each [batch, len_i, d_model]
        let mut padding: Vec<Tensor<B, 2, Bool>> = Vec::new(); // each [batch, len_i]
        let mut next_position = 0;

        // [CLS]
        parts.push(self.special_token(self.cls_id, next_position, batch, &device));
        next_position += 1;

        // img_1..img_N [SEP]
        if let (Some(patch_encoder), Some(visual)) = (&self.patch_encoder, &self.visual_embeddings)
        {
            let regions = patch_encoder.forward(images);
            let n_regions = regions.features.dims()[1];
            let segment = self
                .text_embeddings
                .segment
                .forward(Tensor::<B, 2, Int>::full(
                    [batch, n_regions],
                    IMAGE_SEGMENT,
                    &device,
                ));
            parts.push(visual.forward(regions.features, regions.boxes) + segment);
            parts.push(self.special_token(self.sep_id, next_position, batch, &device));
            next_position += 1;
        }
        let prefix_len: usize = parts.iter().map(|p| p.dims()[1]).sum();
        padding.push(Tensor::<B, 2, Bool>::zeros([batch, prefix_len], &device));

        // text [SEP]
        if self.modality.uses_text() {
            let seq = text.tokens.dims()[1];
            let positions = Tensor::<B, 1, Int>::arange(
                next_position as i64..(next_position + seq) as i64,
                &device,
            )
            .unsqueeze::<2>()
            .expand([batch, seq]);
            let segments = Tensor::<B, 2, Int>::full([batch, seq], TEXT_SEGMENT, &device);
            parts.push(
                self.text_embeddings
                    .forward(text.tokens, segments, positions),
            );
            padding.push(text.padding);
        }

        let x = Tensor::cat(parts, 1); // [batch, seq_total, d_model]
        let mask = AttentionMask::padding(Tensor::cat(padding, 1));
        let hidden = self.encoder.forward(x, &mask);
        let d_model = hidden.dims()[2];
        let k = self.images_per_input;
        let cls_state = hidden
            .slice([0..batch, 0..1])
            .reshape([batch / k, k * d_model]);
        let logits = linear(&self.head, self.dropout.forward(cls_state.clone()));
        ClassifierOutput { logits, cls_state }
    }

    /// `[batch, 1, d_model]` embedding of one special token in the image segment.
    fn special_token(
        &self,
        id: i64,
        position: usize,
        batch: usize,
        device: &B::Device,
    ) -> Tensor<B, 3> {
        let full = |value: i64| Tensor::<B, 2, Int>::full([batch, 1], value, device);
        self.text_embeddings
            .forward(full(id), full(IMAGE_SEGMENT), full(position as i64))
    }
}
