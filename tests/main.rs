//! The integration tests, one crate: every file here is a module of it.
//!
//! One crate rather than one per file, because each test crate compiles its own copy of the
//! training stack for the backends it names (Burn's autodiff ops, the models, the engine):
//! as separate crates they were most of `cargo test --release`'s compile time. Run one file's
//! tests with `cargo test --release --test integration <file>::`.

mod common;

mod checkpoints;
mod classifier_modes;
mod classify_end_to_end;
mod coco_loader;
mod dalle;
mod dalle_end_to_end;
mod data_prep;
mod device_check;
mod documented_commands;
mod engine;
mod fid;
mod fused_ops;
mod korean;
mod layers;
mod lxmert;
mod lxmert_end_to_end;
mod lxmert_features;
mod lxmert_released;
mod nn_blocks;
mod option_ranges;
mod tokenizer;
mod train_vqvae_end_to_end;
mod vqa;
mod vqvae;
