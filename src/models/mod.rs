//! The model families built from the blocks in [`crate::nn`].

pub mod classifier;
pub mod dalle;
pub mod lxmert;
pub mod vqvae;
