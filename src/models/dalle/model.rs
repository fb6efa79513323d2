//! DALL-E-style text-to-image decoder (Ramesh et al. 2021, <https://arxiv.org/abs/2102.12092>):
//! one causal pre-LayerNorm transformer over a single stream of `[BOS]`, `text_len` BPE text
//! tokens and the image tokens of a VQ-VAE grid, trained to predict each next token.
//!
//! One embedding table holds every id of the stream, laid out as
//!
//! | ids | what |
//! |---|---|
//! | `0 .. text_vocab` | BPE text tokens |
//! | `text_vocab + i` | the pad of text position `i` (each position pads with its own id) |
//! | `text_vocab + text_len` | `[BOS]` |
//! | `image_offset + c` | image code `c`, with `image_offset = text_vocab + text_len + 1` |
//!
//! Text positions add a 1-D position embedding, image positions a row plus a column
//! embedding. Logits are masked by segment: a position whose next token is text can only predict
//! text ids (including pads), one whose next token is an image code only image ids. The loss is
//! `(CE_text + 7 * CE_image) / 8`, as in the paper.

use crate::nn::precision::linear;
use crate::nn::Backend;
use crate::nn::{LayerNorm, LayerNormConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear};
use burn::tensor::activation::log_softmax;
use std::ops::Range;

use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::masks::{attention_mask, AttentionLayout};
use crate::nn::{
    cross_entropy, AttentionMask, KeyValueCache, NormPlacement, TransformerLayer,
    TransformerLayerConfig,
};

/// Configuration of [`Dalle`].
#[derive(Config, Debug)]
pub struct DalleConfig {
    /// BPE vocabulary size.
    pub text_vocab: usize,
    /// Text positions (256 in DALL-E); longer captions are truncated.
    pub text_len: usize,
    /// Codebook size of the VQ-VAE.
    pub n_image_codes: usize,
    /// `[rows, cols]` of the VQ-VAE token grid.
    pub grid: [usize; 2],
    #[config(default = 256)]
    pub d_model: usize,
    #[config(default = 8)]
    pub n_heads: usize,
    #[config(default = 4)]
    pub n_layers: usize,
    #[config(default = 1024)]
    pub d_hidden: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = "AttentionLayout::Dense")]
    pub attention: AttentionLayout,
    /// Weight of the image loss against the text loss (7 in DALL-E).
    #[config(default = 7.0)]
    pub image_loss_weight: f64,
}

impl DalleConfig {
    pub fn n_image_tokens(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// The id of the pad at text position `position`.
    pub fn pad_id(&self, position: usize) -> u32 {
        (self.text_vocab + position) as u32
    }

    pub fn bos_id(&self) -> u32 {
        (self.text_vocab + self.text_len) as u32
    }

    /// The id of image code 0.
    pub fn image_offset(&self) -> usize {
        self.text_vocab + self.text_len + 1
    }

    /// Size of the shared embedding table and of the logits.
    pub fn total_vocab(&self) -> usize {
        self.image_offset() + self.n_image_codes
    }

    /// Input positions: `[BOS]`, the text, and every image token but the last.
    pub fn seq_len(&self) -> usize {
        self.text_len + self.n_image_tokens()
    }

    /// The `text_len` text ids of a caption: its BPE ids (truncated), then per-position pads.
    /// An empty caption is the null caption of classifier-free guidance.
    pub fn text_ids(&self, caption: &[u32]) -> Vec<u32> {
        (0..self.text_len)
            .map(|i| caption.get(i).copied().unwrap_or_else(|| self.pad_id(i)))
            .collect()
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Dalle<B> {
        // GPT-2's N(0, 0.02) embeddings; burn's default N(0, 1) swamps the residual stream.
        let embedding = |n: usize| {
            EmbeddingConfig::new(n, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        let layer = TransformerLayerConfig::new(self.d_model, self.n_heads, self.d_hidden)
            .with_dropout(self.dropout)
            .with_layer_norm_eps(1e-5)
            .with_norm(NormPlacement::Pre);
        Dalle {
            token_embedding: embedding(self.total_vocab()),
            text_position: embedding(self.text_len + 1),
            image_row: embedding(self.grid[0]),
            image_column: embedding(self.grid[1]),
            layers: (0..self.n_layers).map(|_| layer.init(device)).collect(),
            final_norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, self.total_vocab()).init(device),
            config: self.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Module, Debug)]
pub struct Dalle<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub text_position: Embedding<B>,
    pub image_row: Embedding<B>,
    pub image_column: Embedding<B>,
    pub layers: Vec<TransformerLayer<B>>,
    pub final_norm: LayerNorm<B>,
    pub head: Linear<B>,
    #[module(skip)]
    pub config: DalleConfig,
}

/// The losses of one batch.
#[derive(Debug, Clone)]
pub struct DalleLoss<B: Backend> {
    /// `[1]`, mean cross-entropy of the text tokens (pads included).
    pub text: Tensor<B, 1>,
    /// `[1]`, mean cross-entropy of the image tokens.
    pub image: Tensor<B, 1>,
    /// `[1]`, `(text + w * image) / (1 + w)` with `w = image_loss_weight`.
    pub total: Tensor<B, 1>,
}

/// Per-layer caches and the number of positions decoded so far.
#[derive(Debug, Clone)]
pub struct DecoderState<B: Backend> {
    caches: Vec<KeyValueCache<B>>,
    /// Input positions already fed.
    pub position: usize,
    /// Per-layer `[seq_len, seq_len]` masks (`true` = masked), sliced at each step.
    masks: Vec<Tensor<B, 2, Bool>>,
    /// `[seq_len, total_vocab]`, see `Dalle::segment_mask`.
    segment: Tensor<B, 2>,
}

impl<B: Backend> Dalle<B> {
    /// Per-layer `[len, len]` masks, causality included.
    fn layer_masks(&self, len: usize, device: &B::Device) -> Vec<Tensor<B, 2, Bool>> {
        let n_layers = self.layers.len();
        (0..n_layers)
            .map(|i| {
                let pattern = self.config.attention.layer(i, n_layers);
                attention_mask::<B>(pattern, self.config.text_len, self.config.grid, len, device)
            })
            .collect()
    }

    /// `[seq_len, d_model]`: the position embedding of every input position.
    fn position_table(&self, device: &B::Device) -> Tensor<B, 2> {
        let c = &self.config;
        let n_image_inputs = c.n_image_tokens() - 1;
        let index = |values: Vec<i64>| {
            let n = values.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(values, [n]), device)
        };
        let rows = index(
            (0..n_image_inputs)
                .map(|k| (k / c.grid[1]) as i64)
                .collect(),
        );
        let cols = index(
            (0..n_image_inputs)
                .map(|k| (k % c.grid[1]) as i64)
                .collect(),
        );
        let image = self.image_row.weight.val().select(0, rows)
            + self.image_column.weight.val().select(0, cols); // [n_img - 1, d]
        Tensor::cat(vec![self.text_position.weight.val(), image], 0)
    }

    /// `[len, total_vocab]` additive mask: 0 where a position may predict an id, a large
    /// negative number elsewhere (finite, so a fully masked row cannot give NaN). Built on the
    /// device from two rows, so no `len x vocab` buffer crosses from the host per step.
    fn segment_mask(&self, len: usize, device: &B::Device) -> Tensor<B, 2> {
        let c = &self.config;
        let total = c.total_vocab();
        let ids = Tensor::<B, 1, Int>::arange(0..total as i64, device);
        // Text positions predict text ids and pads; image positions predict image ids.
        let text_row = ids
            .clone()
            .greater_equal_elem((c.text_vocab + c.text_len) as i64);
        let image_row = ids.lower_elem(c.image_offset() as i64);
        let blocked_row = |row: Tensor<B, 1, Bool>, n: usize| {
            row.float()
                .mul_scalar(-1e9)
                .unsqueeze_dim::<2>(0)
                .expand([n, total])
        };
        let n_text = len.min(c.text_len);
        let mut rows = vec![blocked_row(text_row, n_text)];
        if len > n_text {
            rows.push(blocked_row(image_row, len - n_text));
        }
        Tensor::cat(rows, 0)
    }

    /// The stream's input and target ids from text ids and image codes.
    ///
    /// # Shapes
    /// - `text`: `[batch, text_len]` stream ids (BPE ids and pads, see [`DalleConfig::text_ids`])
    /// - `image`: `[batch, n_image_tokens]` codes
    /// - returns: input and targets, `[batch, seq_len]` each
    pub fn stream(
        &self,
        text: Tensor<B, 2, Int>,
        image: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let [batch, n_image] = image.dims();
        let device = image.device();
        let image = image.add_scalar(self.config.image_offset() as i64);
        let bos =
            Tensor::<B, 2, Int>::ones([batch, 1], &device).mul_scalar(self.config.bos_id() as i64);
        let input = Tensor::cat(
            vec![
                bos,
                text.clone(),
                image.clone().slice([0..batch, 0..n_image - 1]),
            ],
            1,
        );
        let targets = Tensor::cat(vec![text, image], 1);
        (input, targets)
    }

    /// The final-normed states of `input` (`[batch, len]`): `[batch, len, d_model]`.
    fn hidden(&self, input: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, len] = input.dims();
        let device = input.device();
        let positions = self.position_table(&device).narrow(0, 0, len); // [len, d]
        let mut x = self.token_embedding.forward(input) + positions.unsqueeze_dim(0);
        // Masks are built once per forward and shared by the layers that use them.
        let masks: Vec<AttentionMask<B>> = match self.config.attention {
            AttentionLayout::Dense => vec![AttentionMask::causal(len, &device)],
            AttentionLayout::Sparse { .. } => self
                .layer_masks(len, &device)
                .into_iter()
                .map(|pattern| AttentionMask::none().with_pattern(pattern))
                .collect(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &masks[i % masks.len()]);
        }
        self.final_norm.forward(x)
    }

    /// Segment-masked next-token logits of every input position.
    ///
    /// # Shapes
    /// - `input`: `[batch, len]` stream ids starting with `[BOS]`, `len <= seq_len`
    /// - returns: `[batch, len, total_vocab]`
    pub fn forward_input(&self, input: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let len = input.dims()[1];
        let device = input.device();
        let logits = linear(&self.head, self.hidden(input)); // [b, len, V]
        logits + self.segment_mask(len, &device).unsqueeze_dim(0)
    }

    /// Logits of a whole training example.
    ///
    /// # Shapes
    /// - `text`: `[batch, text_len]`, `image`: `[batch, n_image_tokens]`
    /// - returns: logits `[batch, seq_len, total_vocab]` and targets `[batch, seq_len]`
    pub fn forward(
        &self,
        text: Tensor<B, 2, Int>,
        image: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Tensor<B, 2, Int>) {
        let (input, targets) = self.stream(text, image);
        (self.forward_input(input), targets)
    }

    /// `(CE_text + w * CE_image) / (1 + w)` of segment-masked logits.
    ///
    /// # Shapes
    /// - `logits`: `[batch, seq_len, total_vocab]`, `targets`: `[batch, seq_len]`
    pub fn loss(&self, logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> DalleLoss<B> {
        let [batch, len, _] = logits.dims();
        let text_len = self.config.text_len;
        let picked = log_softmax(logits, 2)
            .gather(2, targets.unsqueeze_dim(2))
            .reshape([batch, len]); // log p(target)
        let text = picked.clone().slice([0..batch, 0..text_len]).mean().neg();
        let image = picked.slice([0..batch, text_len..len]).mean().neg();
        let w = self.config.image_loss_weight;
        let total = (text.clone() + image.clone() * w) / (1.0 + w);
        DalleLoss { text, image, total }
    }

    /// The training loss of `text` and `image` (as [`Self::forward`] takes them), computed
    /// from each segment's own slice of the head: text positions score only the text ids and
    /// pads, image positions only the image codes. Equal to [`Self::loss`] of
    /// [`Self::forward`] (the ids a segment cannot predict have probability exactly 0 there;
    /// `tests/dalle.rs` checks it) without the full-vocabulary logits, mask and softmax.
    ///
    /// # Shapes
    /// - `text`: `[batch, text_len]`, `image`: `[batch, n_image_tokens]`
    pub fn losses(&self, text: Tensor<B, 2, Int>, image: Tensor<B, 2, Int>) -> DalleLoss<B> {
        let (input, targets) = self.stream(text, image);
        let [batch, len] = input.dims();
        let c = &self.config;
        let text_len = c.text_len;
        let hidden = self.hidden(input); // [b, len, d]
        let d_model = hidden.dims()[2];
        let weight = self.head.weight.val(); // [d, V]
        let bias = self.head.bias.as_ref().map(|bias| bias.val());
        // -log p(target) of positions `positions`, over the ids `ids` only.
        let segment_loss = |positions: Range<usize>, ids: Range<usize>| {
            let n = batch * positions.len();
            let hidden = hidden.clone().slice([0..batch, positions.clone()]);
            let mut logits = hidden
                .reshape([n, d_model])
                .matmul(weight.clone().slice([0..d_model, ids.clone()]));
            if let Some(bias) = &bias {
                logits = logits + bias.clone().slice([ids.clone()]).unsqueeze::<2>();
            }
            let targets = targets
                .clone()
                .slice([0..batch, positions])
                .reshape([n])
                .sub_scalar(ids.start as i64);
            cross_entropy(logits, targets).mean()
        };
        let text = segment_loss(0..text_len, 0..c.text_vocab + text_len);
        let image = segment_loss(text_len..len, c.image_offset()..c.total_vocab());
        let w = c.image_loss_weight;
        let total = (text.clone() + image.clone() * w) / (1.0 + w);
        DalleLoss { text, image, total }
    }

    /// An empty decoding state (see [`Self::forward_cached`]).
    pub fn start(&self, device: &B::Device) -> DecoderState<B> {
        DecoderState {
            caches: (0..self.layers.len())
                .map(|_| KeyValueCache::new())
                .collect(),
            position: 0,
            masks: self.layer_masks(self.config.seq_len(), device),
            segment: self.segment_mask(self.config.seq_len(), device),
        }
    }

    /// Feeds `tokens` at the next input positions of `state`, reusing the keys and values of
    /// the positions fed before, and returns their segment-masked logits.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, n_new]` stream ids
    /// - returns: `[batch, n_new, total_vocab]`
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: &mut DecoderState<B>,
    ) -> Tensor<B, 3> {
        let [_, n_new] = tokens.dims();
        let device = tokens.device();
        let (start, end) = (state.position, state.position + n_new);
        let positions = self.position_table(&device).narrow(0, start, end - start);
        let mut x = self.token_embedding.forward(tokens) + positions.unsqueeze_dim(0);
        for ((layer, cache), mask) in self.layers.iter().zip(&mut state.caches).zip(&state.masks) {
            let mask = AttentionMask::none().with_pattern(mask.clone().slice([start..end, 0..end]));
            x = layer.forward_cached(x, cache, &mask);
        }
        state.position = end;
        let logits = linear(&self.head, self.final_norm.forward(x));
        logits
            + state
                .segment
                .clone()
                .narrow(0, start, end - start)
                .unsqueeze_dim(0)
    }
}
