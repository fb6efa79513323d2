//! vislang as a library: build the joint single-stream classifier from its config, and take a
//! few AdamW steps on one batch with burn's autodiff, reading the loss as it falls. This is
//! the example in `docs/library.md`:
//!
//! ```text
//! cargo run --release --example library
//! ```

use burn::backend::Autodiff;
use burn::nn::loss::BinaryCrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Int, Tensor};
use vislang::backend::CpuBackend;
use vislang::models::classifier::{Modality, SingleStreamClassifierConfig};
use vislang::models::TextBatch;

type B = Autodiff<CpuBackend>;

fn main() {
    let device = Default::default();
    // A 2-layer, 128-wide encoder over 32 px images (16 patches) and captions of up to 8
    // tokens from a 100-word vocabulary, predicting 10 labels.
    let config = SingleStreamClassifierConfig::new(Modality::Joint, 10, 100, 1, 2, 8, 32);
    let model = config.init::<B>(&device);

    // One batch of 4: random images, captions of token ids, and multi-hot labels.
    let images = Tensor::<B, 4>::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let captions: [&[u32]; 4] = [&[5, 6, 7], &[8, 9], &[10, 11, 12, 13], &[14]];
    let text = TextBatch::<B>::from_sequences(&captions, Some(2), 0, &device);
    let labels = Tensor::<B, 2, Int>::from_ints(
        [
            [1, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0, 0, 1, 0],
            [0, 0, 1, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 1, 0, 0],
        ],
        &device,
    );

    let loss_fn = BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(&device);
    let mut optimizer = AdamWConfig::new().init();
    let mut model = model;
    for step in 0..5 {
        let output = model.forward(images.clone(), text.clone());
        let loss = loss_fn.forward(output.logits, labels.clone());
        println!("step {step}: loss {:.4}", loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-3, model, grads);
    }
}
