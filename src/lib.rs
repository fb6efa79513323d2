//! # vislang
//!
//! Vision-language models on [Burn](https://burn.dev): a single-stream image+text classifier,
//! an LXMERT-style cross-modal encoder, and a DALL-E-style generator over a VQ-VAE image
//! tokenizer, the transformers all built from the blocks in [`nn`].
//!
//! - [`nn`]: attention, feed-forward, transformer layers, embeddings, patch encoder.
//! - [`models`]: the model families.
//! - [`data`]: MSCOCO 2014, the built-in synthetic set, the image cache, tokenizers, batching.
//! - [`train`]: checkpoints, metrics, schedules, plots, experiment loops.
//! - [`backend`]: `--device cpu | cuda[:N]`.
//! - [`cli`]: options shared by the experiment binaries.

/// mimalloc with purging off ([`allocator`]). Set here, in the library, so every binary and
/// test gets it.
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

pub mod allocator;
pub mod backend;
pub mod cli;
pub mod data;
pub mod inference;
pub mod io;
pub mod models;
pub mod nn;
pub mod train;
