//! # vislang
//!
//! Vision-language models on [Burn](https://burn.dev): a single-stream image+text classifier,
//! with an LXMERT-style cross-modal encoder and a DALL-E-style generator to come, all built
//! from the transformer blocks in [`nn`].
//!
//! - [`nn`]: attention, feed-forward, transformer layers, embeddings, patch encoder.
//! - [`models`]: the model families.
//! - [`data`]: MSCOCO 2014, the built-in synthetic set, the image cache, tokenizers, batching.
//! - [`train`]: checkpoints, metrics, schedules, plots, experiment loops.
//! - [`backend`]: `--device cpu | cuda[:N]`.

pub mod backend;
pub mod data;
pub mod models;
pub mod nn;
pub mod train;
