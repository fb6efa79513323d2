//! Floating-point operations of a training step, counted from the model's shapes, so that the
//! bench can state each side's achieved GFLOP/s and its share of the machine's peak.
//!
//! The count is of matrix products only (linear layers, convolutions, attention's two
//! products, the codebook search): `2·m·k·n` for an `[m, k] · [k, n]` product. Element-wise
//! work (layer norm, softmax, GELU, the optimizer) is not counted. A training step counts
//! three times its forward products: the forward pass, and the input and weight gradients of
//! the backward pass (products without weights, attention's, have two input gradients
//! instead). Attention counts each query-key pair its mask lets through by structure: all of
//! them for padding masks, `s·(s+1)/2` for a causal one. Both sides of a comparison are counted
//! with the same formula, so the ratio of their GFLOP/s is the ratio of their speeds.

use crate::models::classifier::SingleStreamClassifierConfig;
use crate::models::dalle::DalleConfig;
use crate::models::lxmert::LxmertPretrainingConfig;
use crate::models::vqvae::VqVaeConfig;
use crate::nn::PatchEncoderConfig;

/// Forward products of `rows` inputs through a `[d_in, d_out]` linear layer.
fn linear(rows: usize, d_in: usize, d_out: usize) -> f64 {
    2.0 * (rows * d_in * d_out) as f64
}

/// Forward products of attention's scores and weighted values over `pairs` query-key pairs
/// of width `d_model` (all heads together).
fn attention_pairs(pairs: usize, d_model: usize) -> f64 {
    2.0 * 2.0 * (pairs * d_model) as f64
}

/// Forward products of one transformer layer over `tokens` positions whose attention sees
/// `pairs` query-key pairs: q, k, v and output projections, the attention, the feed-forward.
fn transformer_layer(tokens: usize, pairs: usize, d_model: usize, d_hidden: usize) -> f64 {
    4.0 * linear(tokens, d_model, d_model)
        + attention_pairs(pairs, d_model)
        + 2.0 * linear(tokens, d_model, d_hidden)
}

/// Forward products of a convolution with `[c_out, c_in, k, k]` weights that writes `outputs`
/// positions per channel (for a transposed one: that reads `outputs` positions).
fn convolution(outputs: usize, c_in: usize, c_out: usize, kernel: usize) -> f64 {
    2.0 * (outputs * c_in * c_out * kernel * kernel) as f64
}

/// Forward products of the patch encoder on one image, and of the visual embeddings that
/// project its regions to `d_model`.
fn patch_regions(patches: &PatchEncoderConfig, d_model: usize) -> f64 {
    let (side, c) = (patches.image_size, patches.stem_channels);
    let rest = patches.patch_size / 4;
    let regions = patches.n_regions();
    convolution((side / 2).pow(2), 3, c, 3)
        + convolution((side / 4).pow(2), c, c, 3)
        + convolution(regions, c, patches.d_feature, rest)
        + linear(regions, patches.d_feature, d_model)
        + linear(regions, 4, d_model)
}

/// A training step's products per sequence of the DALL-E decoder (causal attention over
/// [`DalleConfig::seq_len`] positions, logits at every position).
pub fn dalle_training(config: &DalleConfig) -> f64 {
    let s = config.seq_len();
    let layer = transformer_layer(s, s * (s + 1) / 2, config.d_model, config.d_hidden);
    let head = linear(s, config.d_model, config.total_vocab());
    3.0 * (config.n_layers as f64 * layer + head)
}

/// Products per image of cached generation: each position through every layer once, with
/// attention over the positions before it, and logits for every image code drawn.
pub fn dalle_generation(config: &DalleConfig) -> f64 {
    let s = config.seq_len();
    let layer = transformer_layer(s, s * (s + 1) / 2, config.d_model, config.d_hidden);
    let head = linear(
        config.n_image_tokens(),
        config.d_model,
        config.total_vocab(),
    );
    config.n_layers as f64 * layer + head
}

/// A training step's products per sample of the joint single-stream classifier, with captions
/// of `text_width` positions (`[SEP]` included).
pub fn classifier_training(config: &SingleStreamClassifierConfig, text_width: usize) -> f64 {
    let patches = PatchEncoderConfig::new(config.image_size, config.patch_size, config.d_feature)
        .with_stem_channels(config.stem_channels);
    let seq = 2 + patches.n_regions() + text_width;
    let layer = transformer_layer(seq, seq * seq, config.d_model, config.d_hidden);
    let forward = patch_regions(&patches, config.d_model)
        + config.n_layers as f64 * layer
        + linear(1, config.d_model, config.n_labels);
    3.0 * forward
}

/// A training step's products per sample of LXMERT pretraining on pixels (masked LM over the
/// whole vocabulary, masked patch regression and matching), with `text_len` language
/// positions.
///
/// # Panics
/// If the config reads detector features instead of pixels.
pub fn lxmert_pretraining(config: &LxmertPretrainingConfig, text_len: usize) -> f64 {
    let lxmert = &config.lxmert;
    let patches = lxmert.pixels.as_ref().expect("LXMERT on pixels");
    let (d, hidden) = (lxmert.d_model, lxmert.d_hidden);
    let (t, r) = (text_len, patches.n_regions());
    let self_layer = |tokens| transformer_layer(tokens, tokens * tokens, d, hidden);
    // Each cross-modality layer: one cross-attention block applied both ways (queries from
    // one stream, keys and values from the other), then a layer per stream.
    let cross_block = |queries: usize, context: usize| {
        2.0 * linear(queries, d, d)
            + 2.0 * linear(context, d, d)
            + attention_pairs(queries * context, d)
    };
    let cross_layer = cross_block(t, r) + cross_block(r, t) + self_layer(t) + self_layer(r);
    let heads = linear(1, d, d) // pooler
        + linear(t, d, d) + linear(t, d, lxmert.vocab_size) // masked LM
        + linear(r, d, d) + linear(r, d, config.d_region_target) // masked regions
        + linear(1, d, 2); // matching
    let forward = patch_regions(patches, d)
        + lxmert.n_language_layers as f64 * self_layer(t)
        + lxmert.n_object_layers as f64 * self_layer(r)
        + lxmert.n_cross_layers as f64 * cross_layer
        + heads;
    3.0 * forward
}

/// A training step's products per image of the VQ-VAE on `image_size`-pixel images
/// (the codebook search counted once: it has no gradient).
pub fn vqvae_training(config: &VqVaeConfig, image_size: usize) -> f64 {
    let (h, stages) = (config.hidden, config.downsample.trailing_zeros() as usize);
    let grid = (image_size / config.downsample).pow(2);
    let residual_stack =
        config.n_res_blocks as f64 * (convolution(grid, h, h, 3) + convolution(grid, h, h, 1));
    let mut forward = convolution(grid, h, h, 3) // encoder mix
        + 2.0 * residual_stack
        + convolution(grid, h, config.d_code, 1)
        + convolution(grid, config.d_code, h, 3); // decoder in
    for stage in 0..stages {
        // Down: stage `stage` writes (side / 2^(stage+1))² positions; up mirrors it, reading
        // the smaller grid and writing the larger.
        let outputs = (image_size >> (stage + 1)).pow(2);
        let c_in = if stage == 0 { 3 } else { h };
        forward += convolution(outputs, c_in, h, 4) + convolution(outputs, h, c_in, 4);
    }
    let search = linear(grid, config.d_code, config.n_codes);
    3.0 * forward + search
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_layer_is_two_flops_per_multiply_add() {
        assert_eq!(linear(3, 4, 5), 120.0);
        assert_eq!(convolution(4, 2, 3, 3), 2.0 * 4.0 * 2.0 * 3.0 * 9.0);
    }

    #[test]
    fn dalle_8x512_at_88_positions_is_about_14_gflop_a_sequence() {
        // 8 layers of 512 (FFN 2048) over 88 positions and a 1049-entry vocabulary: about
        // 6·N·tokens with N the 25.6M weights the products use, plus attention.
        let config = DalleConfig::new(256, 24, 512, [8, 8])
            .with_d_model(512)
            .with_n_heads(8)
            .with_n_layers(8)
            .with_d_hidden(2048);
        let weights = 8 * (4 * 512 * 512 + 2 * 512 * 2048) + 512 * config.total_vocab();
        let dense = 6.0 * (weights * 88) as f64;
        let flops = dalle_training(&config);
        assert!(
            flops > dense && flops < 1.05 * dense,
            "{flops} against {dense}"
        );
    }

    #[test]
    fn causal_attention_counts_half_the_pairs_and_grows_with_length() {
        let short = DalleConfig::new(256, 24, 512, [8, 8]);
        let long = DalleConfig::new(256, 256, 512, [8, 8]);
        let per_position = |c: &DalleConfig| dalle_training(c) / c.seq_len() as f64;
        assert!(per_position(&long) > per_position(&short));
        // Generation does a third of a training step's products, less the prefix's logits.
        assert!(dalle_generation(&short) < dalle_training(&short) / 3.0);
    }
}
