//! The caption input every text-reading model takes.

use crate::nn::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// Caption token ids padded to the longest in the batch.
#[derive(Debug, Clone)]
pub struct TextBatch<B: Backend> {
    /// `[batch, seq]` token ids (no special tokens), padded with `pad_id`.
    pub tokens: Tensor<B, 2, Int>,
    /// `[batch, seq]`, `true` at padding.
    pub padding: Tensor<B, 2, Bool>,
}

impl<B: Backend> TextBatch<B> {
    /// Pads `sequences` to a common length (at least 1) with `pad_id`, after appending
    /// `end_id` (e.g. `[SEP]`) to each sequence when one is given.
    pub fn from_sequences(
        sequences: &[&[u32]],
        end_id: Option<u32>,
        pad_id: u32,
        device: &B::Device,
    ) -> Self {
        let batch = sequences.len();
        let extra = usize::from(end_id.is_some());
        let seq = sequences
            .iter()
            .map(|s| s.len() + extra)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut tokens = vec![pad_id as i64; batch * seq];
        let mut padding = vec![true; batch * seq];
        for (b, sequence) in sequences.iter().enumerate() {
            let ids = sequence.iter().copied().chain(end_id);
            for (t, id) in ids.enumerate() {
                tokens[b * seq + t] = id as i64;
                padding[b * seq + t] = false;
            }
        }
        Self {
            tokens: Tensor::from_data(TensorData::new(tokens, [batch, seq]), device),
            padding: Tensor::from_data(TensorData::new(padding, [batch, seq]), device),
        }
    }

    /// Each sequence `k` times in a row: the text of a question asked of `k` images, one copy
    /// per image (NLVR2 reads its statement with each of the pair).
    ///
    /// # Shapes
    /// - `self`: `[batch, seq]`; returns `[batch * k, seq]`
    pub fn repeat_each(self, k: usize) -> Self {
        if k == 1 {
            return self;
        }
        let [batch, seq] = self.tokens.dims();
        Self {
            tokens: self
                .tokens
                .unsqueeze_dim::<3>(1)
                .repeat_dim(1, k)
                .reshape([batch * k, seq]),
            padding: self
                .padding
                .unsqueeze_dim::<3>(1)
                .repeat_dim(1, k)
                .reshape([batch * k, seq]),
        }
    }
}
