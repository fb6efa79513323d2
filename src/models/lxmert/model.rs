//! LXMERT: "Learning Cross-Modality Encoder Representations from Transformers"
//! (Tan & Bansal, 2019, <https://arxiv.org/abs/1908.07490>).
//!
//! Two streams, three encoders, all built from the shared blocks in [`crate::nn`]:
//!
//! ```text
//! tokens ─ TextEmbeddings ─ language encoder (N_L post-LN layers) ─┐
//!                                                                   ├─ N_X cross-modality layers ─ language, vision
//! regions ─ VisualEmbeddings ─ object-relationship encoder (N_R) ──┘                                └ pooled = tanh(W [CLS])
//! ```
//!
//! A cross-modality layer runs ONE cross-attention block in both directions (language queries
//! over vision, then vision queries over language, with the same weights), then a self-attention
//! and a feed-forward per stream. Parameter-for-parameter this is Hugging Face's `LxmertModel`;
//! [`super::hf`] loads its weights and `tests/lxmert.rs` checks the outputs against a fixture.
//!
//! Visual inputs are region features with boxes normalised to [0, 1]: either detector features
//! read from a file ([`crate::data::RegionFeatures`]) or, with `pixels` set, patches of raw
//! images from the detector-free [`PatchEncoder`] the model owns.

use crate::nn::precision::linear;
use crate::nn::Backend;
use crate::nn::{LayerNorm, LayerNormConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::tanh;
use burn::tensor::{Bool, Int, Tensor};

use crate::models::TextBatch;
use crate::nn::{
    AttentionMask, MultiHeadAttention, MultiHeadAttentionConfig, NormPlacement, PatchEncoder,
    PatchEncoderConfig, PatchRegions, TextEmbeddings, TextEmbeddingsConfig, TransformerEncoder,
    TransformerEncoderConfig, TransformerLayer, TransformerLayerConfig, VisualEmbeddings,
    VisualEmbeddingsConfig,
};

/// Configuration of [`Lxmert`]. Field names follow the paper; [`LxmertConfig::base`] is the
/// released model (and Hugging Face's `LxmertConfig` defaults).
#[derive(Config, Debug)]
pub struct LxmertConfig {
    pub vocab_size: usize,
    /// Width of each region feature (2048 for Faster R-CNN features).
    pub d_feature: usize,
    #[config(default = 768)]
    pub d_model: usize,
    #[config(default = 12)]
    pub n_heads: usize,
    #[config(default = 3072)]
    pub d_hidden: usize,
    /// N_L: language encoder layers.
    #[config(default = 9)]
    pub n_language_layers: usize,
    /// N_R: object-relationship encoder layers.
    #[config(default = 5)]
    pub n_object_layers: usize,
    /// N_X: cross-modality layers.
    #[config(default = 5)]
    pub n_cross_layers: usize,
    #[config(default = 512)]
    pub max_positions: usize,
    #[config(default = 2)]
    pub n_segments: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Read raw images through a patch encoder (`d_feature` must match its output) instead
    /// of precomputed region features.
    #[config(default = "None")]
    pub pixels: Option<PatchEncoderConfig>,
}

impl LxmertConfig {
    /// The released LXMERT: 9/5/5 layers, 768 wide, 12 heads, 2048-d region features.
    pub fn base(vocab_size: usize) -> Self {
        Self::new(vocab_size, 2048)
    }

    /// A model that pretrains and fine-tunes in minutes on a CPU: 2/1/1 layers, 64 wide.
    pub fn small(vocab_size: usize, d_feature: usize) -> Self {
        Self::new(vocab_size, d_feature)
            .with_d_model(64)
            .with_n_heads(4)
            .with_d_hidden(256)
            .with_n_language_layers(2)
            .with_n_object_layers(1)
            .with_n_cross_layers(1)
    }

    fn layer(&self) -> TransformerLayerConfig {
        TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_hidden)
            .with_dropout(self.dropout)
            .with_layer_norm_eps(self.layer_norm_eps)
            .with_norm(NormPlacement::Post)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Lxmert<B> {
        if let Some(pixels) = &self.pixels {
            assert_eq!(
                pixels.d_feature, self.d_feature,
                "the patch encoder's d_feature must be the model's d_feature"
            );
        }
        let encoder = |n_layers| TransformerEncoderConfig::new(n_layers, self.layer()).init(device);
        Lxmert {
            patch_encoder: self.pixels.as_ref().map(|pixels| pixels.init(device)),
            text_embeddings: TextEmbeddingsConfig::new(
                self.vocab_size,
                self.d_model,
                self.max_positions,
            )
            .with_n_segments(self.n_segments)
            .with_dropout(self.dropout)
            .with_layer_norm_eps(self.layer_norm_eps)
            .init(device),
            visual_embeddings: VisualEmbeddingsConfig::new(self.d_feature, self.d_model)
                .with_dropout(self.dropout)
                .with_layer_norm_eps(self.layer_norm_eps)
                .init(device),
            language_encoder: encoder(self.n_language_layers),
            object_encoder: encoder(self.n_object_layers),
            cross_layers: (0..self.n_cross_layers)
                .map(|_| CrossModalityLayer {
                    cross_attention: CrossAttentionBlock {
                        attention: MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
                            .init(device),
                        norm: LayerNormConfig::new(self.d_model)
                            .with_epsilon(self.layer_norm_eps)
                            .init(device),
                        dropout: DropoutConfig::new(self.dropout).init(),
                    },
                    language: self.layer().init(device),
                    vision: self.layer().init(device),
                })
                .collect(),
            pooler: LinearConfig::new(self.d_model, self.d_model).init(device),
        }
    }
}

/// One cross-attention with its residual and LayerNorm: `LN(x + Attention(x, context))`.
#[derive(Module, Debug)]
pub struct CrossAttentionBlock<B: Backend> {
    pub attention: MultiHeadAttention<B>,
    pub norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> CrossAttentionBlock<B> {
    /// # Shapes
    /// - `x`: `[batch, seq_q, d_model]`, `context`: `[batch, seq_k, d_model]`
    /// - returns: `[batch, seq_q, d_model]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        context_mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let attended = self.attention.forward(x.clone(), context, context_mask);
        self.norm.forward(x + self.dropout.forward(attended))
    }
}

/// LXMERT's cross-modality layer: shared bidirectional cross-attention, then a post-LN
/// transformer layer (self-attention + feed-forward) per stream.
#[derive(Module, Debug)]
pub struct CrossModalityLayer<B: Backend> {
    /// Used twice per layer: language -> vision and vision -> language.
    pub cross_attention: CrossAttentionBlock<B>,
    pub language: TransformerLayer<B>,
    pub vision: TransformerLayer<B>,
}

impl<B: Backend> CrossModalityLayer<B> {
    /// # Shapes
    /// - `language`: `[batch, seq, d_model]`, `vision`: `[batch, regions, d_model]`
    /// - returns: the two streams, same shapes
    pub fn forward(
        &self,
        language: Tensor<B, 3>,
        vision: Tensor<B, 3>,
        language_mask: &AttentionMask<B>,
        vision_mask: &AttentionMask<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        // Both directions read the inputs of the layer, not each other's outputs.
        let language_crossed =
            self.cross_attention
                .forward(language.clone(), vision.clone(), vision_mask);
        let vision_crossed = self
            .cross_attention
            .forward(vision, language, language_mask);
        (
            self.language.forward(language_crossed, language_mask),
            self.vision.forward(vision_crossed, vision_mask),
        )
    }
}

/// Caption tokens as LXMERT reads them: `[CLS] tokens [SEP]`, padded.
#[derive(Debug, Clone)]
pub struct LxmertText<B: Backend> {
    /// `[batch, seq]`, starting with `[CLS]`.
    pub tokens: Tensor<B, 2, Int>,
    /// `[batch, seq]` token type ids (all 0 for a single caption).
    pub segments: Tensor<B, 2, Int>,
    /// `[batch, seq]`, `true` at padding.
    pub padding: Tensor<B, 2, Bool>,
}

impl<B: Backend> LxmertText<B> {
    /// Prepends `[CLS]` to captions that already end with `[SEP]` (a classifier batch).
    pub fn with_cls(text: TextBatch<B>, cls_id: u32) -> Self {
        let [batch, _] = text.tokens.dims();
        let device = text.tokens.device();
        let tokens = Tensor::cat(
            vec![
                Tensor::<B, 2, Int>::full([batch, 1], cls_id as i64, &device),
                text.tokens,
            ],
            1,
        );
        let padding = Tensor::cat(
            vec![
                Tensor::<B, 2, Bool>::full([batch, 1], false, &device),
                text.padding,
            ],
            1,
        );
        Self {
            segments: tokens.zeros_like(),
            tokens,
            padding,
        }
    }
}

/// Visual input: one feature and one box per region.
#[derive(Debug, Clone)]
pub struct VisualRegions<B: Backend> {
    /// `[batch, regions, d_feature]`
    pub features: Tensor<B, 3>,
    /// `[batch, regions, 4]`: `(x1, y1, x2, y2)` divided by the image width and height.
    pub boxes: Tensor<B, 3>,
    /// `[batch, regions]`, `true` at padding; `None` when every region is real.
    pub padding: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> From<PatchRegions<B>> for VisualRegions<B> {
    fn from(patches: PatchRegions<B>) -> Self {
        Self {
            features: patches.features,
            boxes: patches.boxes,
            padding: None,
        }
    }
}

/// What [`Lxmert::forward`] returns.
#[derive(Debug, Clone)]
pub struct LxmertOutput<B: Backend> {
    /// `[batch, seq, d_model]`
    pub language: Tensor<B, 3>,
    /// `[batch, regions, d_model]`
    pub vision: Tensor<B, 3>,
    /// `[batch, d_model]`: `tanh(W h_[CLS] + b)`.
    pub pooled: Tensor<B, 2>,
    /// Only from [`Lxmert::forward_with_summaries`].
    pub summaries: Option<UnimodalSummaries<B>>,
}

/// Each stream summarised before any cross-attention: what the image-text contrastive
/// objective aligns.
#[derive(Debug, Clone)]
pub struct UnimodalSummaries<B: Backend> {
    /// `[batch, d_model]`: `[CLS]` after the language encoder.
    pub text: Tensor<B, 2>,
    /// `[batch, d_model]`: the per-feature maximum over the real regions after the
    /// object-relationship encoder. A maximum, not a mean: the two to four object regions of
    /// a synthetic image are a few of 16, and their mean is swamped by the background
    /// (measured: a contrastive loss on mean-pooled regions stayed near chance where the
    /// maximum learned).
    pub image: Tensor<B, 2>,
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct Lxmert<B: Backend> {
    /// Present when the model reads raw pixels.
    pub patch_encoder: Option<PatchEncoder<B>>,
    pub text_embeddings: TextEmbeddings<B>,
    pub visual_embeddings: VisualEmbeddings<B>,
    pub language_encoder: TransformerEncoder<B>,
    pub object_encoder: TransformerEncoder<B>,
    pub cross_layers: Vec<CrossModalityLayer<B>>,
    pub pooler: Linear<B>,
}

impl<B: Backend> Lxmert<B> {
    /// Region features and boxes of raw images, from the model's patch encoder.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, size, size]`, normalised
    /// - returns: features `[batch, grid*grid, d_feature]`, boxes `[batch, grid*grid, 4]`
    ///
    /// # Panics
    /// If the model was configured without `pixels` (a programming error).
    pub fn regions_of(&self, images: Tensor<B, 4>) -> VisualRegions<B> {
        let encoder = self
            .patch_encoder
            .as_ref()
            .expect("this LXMERT reads region features, not pixels (LxmertConfig::pixels)");
        encoder.forward(images).into()
    }

    /// # Shapes
    /// - `text`: `[batch, seq]` each
    /// - `regions`: features `[batch, regions, d_feature]`, boxes `[batch, regions, 4]`
    /// - returns: language `[batch, seq, d_model]`, vision `[batch, regions, d_model]`, pooled
    ///   `[batch, d_model]`
    pub fn forward(&self, text: LxmertText<B>, regions: VisualRegions<B>) -> LxmertOutput<B> {
        self.encode(text, regions, false)
    }

    /// [`Lxmert::forward`], also returning [`UnimodalSummaries`] (kept out of the plain
    /// forward, which every classifier and pretraining step runs).
    ///
    /// # Shapes
    /// As [`Lxmert::forward`]; each summary is `[batch, d_model]`.
    pub fn forward_with_summaries(
        &self,
        text: LxmertText<B>,
        regions: VisualRegions<B>,
    ) -> LxmertOutput<B> {
        self.encode(text, regions, true)
    }

    fn encode(
        &self,
        text: LxmertText<B>,
        regions: VisualRegions<B>,
        summarise: bool,
    ) -> LxmertOutput<B> {
        let [batch, seq] = text.tokens.dims();
        let device = text.tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
            .unsqueeze::<2>()
            .expand([batch, seq]);
        let language_mask = AttentionMask::padding(text.padding);
        let region_padding = regions.padding.clone();
        let vision_mask = regions
            .padding
            .map_or_else(AttentionMask::none, AttentionMask::padding);

        let language = self
            .text_embeddings
            .forward(text.tokens, text.segments, positions); // [b, seq, d]
        let vision = self
            .visual_embeddings
            .forward(regions.features, regions.boxes); // [b, regions, d]
        let mut language = self.language_encoder.forward(language, &language_mask);
        let mut vision = self.object_encoder.forward(vision, &vision_mask);
        let d_model = language.dims()[2];
        let summaries = summarise.then(|| UnimodalSummaries {
            text: language.clone().narrow(1, 0, 1).reshape([batch, d_model]),
            image: masked_max(vision.clone(), region_padding),
        });
        for layer in &self.cross_layers {
            (language, vision) = layer.forward(language, vision, &language_mask, &vision_mask);
        }
        let cls = language.clone().narrow(1, 0, 1).reshape([batch, d_model]);
        let pooled = tanh(linear(&self.pooler, cls));
        LxmertOutput {
            language,
            vision,
            pooled,
            summaries,
        }
    }
}

/// The maximum over the rows of each item that are not padding, per feature.
///
/// # Shapes
/// - `x`: `[batch, rows, d]`, `padding`: `[batch, rows]` (`true` at padding)
/// - returns: `[batch, d]`
fn masked_max<B: Backend>(x: Tensor<B, 3>, padding: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 2> {
    let [batch, rows, d] = x.dims();
    let x = match padding {
        Some(padding) => x.mask_fill(padding.unsqueeze_dim::<3>(2).expand([batch, rows, d]), -1e9),
        None => x,
    };
    x.max_dim(1).reshape([batch, d])
}
