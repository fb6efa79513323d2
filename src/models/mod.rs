//! The model families built from the blocks in [`crate::nn`].

pub mod classifier;
pub mod dalle;
pub mod lxmert;
pub mod vqvae;

mod text_batch;

pub use text_batch::TextBatch;
