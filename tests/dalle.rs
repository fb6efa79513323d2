//! The DALL-E-style decoder: cached vs uncached decoding, greedy vs top-k = 1, the segment and
//! attention masks, the stream layout, and the loss weighting.

use burn::backend::Flex;
use burn::tensor::backend::Backend as _;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use vislang::models::dalle::{
    choose_codes, generate, visible, AttentionLayout, Dalle, DalleConfig, ImageAttention,
    SamplingConfig,
};

type B = Flex;

const TEXT_LEN: usize = 5;
const GRID: [usize; 2] = [3, 3];

fn config(attention: AttentionLayout, n_layers: usize) -> DalleConfig {
    DalleConfig::new(11, TEXT_LEN, 7, GRID)
        .with_d_model(32)
        .with_n_heads(4)
        .with_n_layers(n_layers)
        .with_d_hidden(64)
        .with_dropout(0.0)
        .with_attention(attention)
}

/// Held while a test seeds the backend's generator and draws from it: `generate` holds it
/// while it samples, and tests run in parallel threads of one process.
fn backend_random() -> std::sync::MutexGuard<'static, ()> {
    vislang::nn::backend::BACKEND_RANDOM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn model(attention: AttentionLayout, n_layers: usize) -> Dalle<B> {
    let _random = backend_random();
    B::seed(&Default::default(), 7);
    config(attention, n_layers).init(&Default::default())
}

/// A random valid input stream: [BOS], text ids or pads, image ids.
fn random_input(config: &DalleConfig, batch: usize, seed: u64) -> Tensor<B, 2, Int> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values: Vec<i64> = (0..batch)
        .flat_map(|_| {
            let mut row = vec![config.bos_id() as i64];
            row.extend((0..config.text_len).map(|i| {
                if rng.random_bool(0.5) {
                    rng.random_range(0..config.text_vocab) as i64
                } else {
                    config.pad_id(i) as i64
                }
            }));
            row.extend(
                (0..config.n_image_tokens() - 1)
                    .map(|_| (config.image_offset() + rng.random_range(0..7)) as i64),
            );
            row
        })
        .collect();
    Tensor::from_data(
        TensorData::new(values, [batch, config.seq_len()]),
        &Default::default(),
    )
}

fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn max_abs_difference(a: Vec<f32>, b: Vec<f32>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn cached_decoding_gives_the_same_logits_as_the_full_forward_pass() {
    for attention in [
        AttentionLayout::Dense,
        AttentionLayout::Sparse { conv_kernel: 3 },
    ] {
        let model = model(attention, 4);
        let input = random_input(&model.config, 2, 1);
        let full = model.forward_input(input.clone()); // [2, L, V]
        let mut state = model.start(&Default::default());
        // The prefix in one call, then one position at a time.
        let prefix = 1 + TEXT_LEN;
        let mut pieces =
            vec![model.forward_cached(input.clone().slice([0..2, 0..prefix]), &mut state)];
        for p in prefix..model.config.seq_len() {
            pieces.push(model.forward_cached(input.clone().slice([0..2, p..p + 1]), &mut state));
        }
        let cached = Tensor::cat(pieces, 1);
        // Same arithmetic on differently shaped matrices: equal up to float rounding.
        let difference = max_abs_difference(floats(full), floats(cached));
        assert!(
            difference < 1e-4,
            "{attention:?}: logits differ by {difference}"
        );
    }
}

#[test]
fn top_k_1_sampling_is_greedy_decoding_and_the_cache_changes_nothing() {
    let model = model(AttentionLayout::Dense, 2);
    let texts: Vec<Vec<u32>> = vec![
        model.config.text_ids(&[1, 2, 3]),
        model.config.text_ids(&[4]),
        model.config.text_ids(&[]),
    ];
    let device = Default::default();
    let greedy = generate(
        &model,
        &texts,
        &SamplingConfig {
            greedy: true,
            ..Default::default()
        },
        &device,
    );
    for seed in [0, 1, 2] {
        let top1 = generate(
            &model,
            &texts,
            &SamplingConfig {
                top_k: Some(1),
                temperature: 1.3,
                seed,
                ..Default::default()
            },
            &device,
        );
        assert_eq!(top1, greedy, "seed {seed}");
    }
    let uncached = generate(
        &model,
        &texts,
        &SamplingConfig {
            greedy: true,
            use_cache: false,
            ..Default::default()
        },
        &device,
    );
    assert_eq!(uncached, greedy);
    assert!(greedy
        .iter()
        .all(|codes| codes.len() == 9 && codes.iter().all(|&c| c < 7)));

    // Sampling with guidance, top-k and top-p stays within the codebook and is seeded.
    let guided = SamplingConfig {
        top_k: Some(4),
        top_p: Some(0.9),
        guidance: 3.0,
        seed: 5,
        ..Default::default()
    };
    let a = generate(&model, &texts, &guided, &device);
    let b = generate(&model, &texts, &guided, &device);
    assert_eq!(a, b);
    assert!(a.iter().flatten().all(|&c| c < 7));
}

/// The device sampler draws from softmax(logits / T) restricted to top-k and top-p: measured
/// frequencies over 40000 draws match the exact probabilities within 0.01 (more than 4
/// standard deviations), and filtered codes are never drawn.
#[test]
fn device_sampling_draws_from_the_filtered_tempered_distribution() {
    let device = Default::default();
    let row = [2.0f32, 1.0, 0.5, 0.0, -1.0];
    let rows = 40_000;
    let logits = Tensor::<B, 2>::from_data(
        TensorData::new(row.repeat(rows), [rows, row.len()]),
        &device,
    );
    let frequencies = |config: &SamplingConfig| {
        let _random = backend_random();
        B::seed(&device, 3);
        let codes: Vec<i64> = choose_codes(logits.clone(), config)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let mut counts = vec![0.0; row.len()];
        for code in codes {
            counts[code as usize] += 1.0 / rows as f64;
        }
        counts
    };
    let expected = |keep: usize, temperature: f64| {
        let weights: Vec<f64> = row[..keep]
            .iter()
            .map(|&l| (l as f64 / temperature).exp())
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut p: Vec<f64> = weights.iter().map(|w| w / sum).collect();
        p.resize(row.len(), 0.0);
        p
    };
    let close = |measured: Vec<f64>, exact: Vec<f64>, what: &str| {
        for (code, (m, e)) in measured.iter().zip(&exact).enumerate() {
            assert!(
                (m - e).abs() < 0.01,
                "{what}: code {code} drawn {m}, expected {e}"
            );
            if *e == 0.0 {
                assert_eq!(*m, 0.0, "{what}: filtered code {code} was drawn");
            }
        }
    };
    let plain = SamplingConfig::default();
    close(frequencies(&plain), expected(5, 1.0), "plain");
    let tempered_top3 = SamplingConfig {
        top_k: Some(3),
        temperature: 0.7,
        ..Default::default()
    };
    close(
        frequencies(&tempered_top3),
        expected(3, 0.7),
        "top-k 3, T 0.7",
    );
    // Probabilities at T = 1: 0.575, 0.211, 0.128, 0.078, 0.029. p = 0.8 keeps the first two
    // (0.786 < 0.8) and the third, which crosses it.
    let nucleus = SamplingConfig {
        top_p: Some(0.8),
        ..Default::default()
    };
    close(frequencies(&nucleus), expected(3, 1.0), "top-p 0.8");
    let greedy = SamplingConfig {
        greedy: true,
        ..Default::default()
    };
    close(frequencies(&greedy), expected(1, 1.0), "greedy");
}

#[test]
fn logits_are_masked_by_segment() {
    let model = model(AttentionLayout::Dense, 2);
    let c = &model.config;
    let logits = model.forward_input(random_input(c, 1, 3)); // [1, L, V]
    let probabilities = floats(burn::tensor::activation::softmax(logits, 2));
    let v = c.total_vocab();
    for position in 0..c.seq_len() {
        let row = &probabilities[position * v..(position + 1) * v];
        let text_mass: f32 = row[..c.text_vocab + c.text_len].iter().sum();
        let bos_mass = row[c.bos_id() as usize];
        let image_mass: f32 = row[c.image_offset()..].iter().sum();
        assert_eq!(bos_mass, 0.0, "[BOS] is never predicted");
        if position < c.text_len {
            assert!(
                (text_mass - 1.0).abs() < 1e-5 && image_mass == 0.0,
                "position {position}"
            );
        } else {
            assert!(
                (image_mass - 1.0).abs() < 1e-5 && text_mass == 0.0,
                "position {position}"
            );
        }
    }
}

#[test]
fn sparse_patterns_see_what_they_say() {
    // Text length 2, a 3x3 grid: image token k sits at input position 3 + k.
    let see = |pattern, q: usize, k: usize| visible(pattern, 2, [3, 3], 3 + q, 3 + k);
    for pattern in [
        ImageAttention::Dense,
        ImageAttention::Row,
        ImageAttention::Column,
        ImageAttention::Convolutional { kernel: 3 },
    ] {
        // Causal: never a later position; always [BOS], the text, and itself.
        assert!(!visible(pattern, 2, [3, 3], 5, 6));
        assert!(visible(pattern, 2, [3, 3], 7, 0) && visible(pattern, 2, [3, 3], 7, 2));
        assert!(see(pattern, 4, 4));
    }
    // Image token 7 is (row 2, col 1).
    let seen = |pattern| -> Vec<usize> { (0..9).filter(|&k| see(pattern, 7, k)).collect() };
    assert_eq!(seen(ImageAttention::Dense), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seen(ImageAttention::Row), vec![5, 6, 7]);
    assert_eq!(seen(ImageAttention::Column), vec![1, 4, 7]);
    // 3x3 window around (2, 1): rows 1-2, cols 0-2, and not after itself.
    assert_eq!(
        seen(ImageAttention::Convolutional { kernel: 3 }),
        vec![3, 4, 5, 6, 7]
    );
    // DALL-E's layout: row, column, row, row, ..., convolutional last.
    let layout = AttentionLayout::Sparse { conv_kernel: 3 };
    let layers: Vec<_> = (0..6).map(|i| layout.layer(i, 6)).collect();
    assert_eq!(
        layers,
        vec![
            ImageAttention::Row,
            ImageAttention::Column,
            ImageAttention::Row,
            ImageAttention::Row,
            ImageAttention::Row,
            ImageAttention::Convolutional { kernel: 3 },
        ]
    );
}

#[test]
fn a_masked_position_cannot_influence_the_output() {
    // A one-layer sparse stack is one convolutional layer; with kernel 1 an image position
    // sees only itself among the image positions.
    let model = model(AttentionLayout::Sparse { conv_kernel: 1 }, 1);
    let c = model.config.clone();
    let input = random_input(&c, 1, 4);
    let logits = floats(model.forward_input(input.clone()));
    let v = c.total_vocab();
    let first_image = c.text_len + 1;
    // Change image token 2 (input position first_image + 2).
    let mut values: Vec<i64> = input.into_data().convert::<i64>().to_vec().unwrap();
    let p = first_image + 2;
    values[p] = if values[p] == c.image_offset() as i64 {
        values[p] + 1
    } else {
        c.image_offset() as i64
    };
    let changed = Tensor::<B, 2, Int>::from_data(
        TensorData::new(values, [1, c.seq_len()]),
        &Default::default(),
    );
    let after = floats(model.forward_input(changed));
    for position in 0..c.seq_len() {
        let row = |x: &Vec<f32>| x[position * v..(position + 1) * v].to_vec();
        let difference = max_abs_difference(row(&logits), row(&after));
        if position == p {
            assert!(difference > 1e-4, "the changed position itself must change");
        } else {
            // Kernel 1: no image position sees another; text positions come before.
            assert!(
                difference < 1e-6,
                "position {position} saw the change ({difference})"
            );
        }
    }
}

#[test]
fn the_stream_pads_each_text_position_with_its_own_id_and_offsets_image_ids() {
    let c = config(AttentionLayout::Dense, 1);
    assert_eq!(c.text_ids(&[3, 4]), vec![3, 4, 13, 14, 15]);
    assert_eq!(c.bos_id(), 16);
    assert_eq!(c.image_offset(), 17);
    assert_eq!(c.total_vocab(), 24);
    let model = c.init::<B>(&Default::default());
    let device = Default::default();
    let text = Tensor::<B, 2, Int>::from_data([[3, 4, 13, 14, 15]], &device);
    let image = Tensor::<B, 2, Int>::from_data([[0, 1, 2, 3, 4, 5, 6, 0, 1]], &device);
    let (input, targets) = model.stream(text, image);
    let ints =
        |t: Tensor<B, 2, Int>| -> Vec<i64> { t.into_data().convert::<i64>().to_vec().unwrap() };
    assert_eq!(
        ints(input),
        vec![16, 3, 4, 13, 14, 15, 17, 18, 19, 20, 21, 22, 23, 17]
    );
    assert_eq!(
        ints(targets),
        vec![3, 4, 13, 14, 15, 17, 18, 19, 20, 21, 22, 23, 17, 18]
    );
}

#[test]
fn the_loss_weights_image_tokens_seven_times_text_tokens() {
    let model = model(AttentionLayout::Dense, 1);
    let c = &model.config;
    let (len, v) = (c.seq_len(), c.total_vocab());
    let device = Default::default();
    let logits = {
        let _random = backend_random();
        Tensor::<B, 3>::random([2, len, v], Distribution::Normal(0.0, 2.0), &device)
    };
    let targets_values: Vec<i64> = (0..2 * len).map(|i| ((i * 5) % v) as i64).collect();
    let targets =
        Tensor::<B, 2, Int>::from_data(TensorData::new(targets_values.clone(), [2, len]), &device);
    let loss = model.loss(logits.clone(), targets);

    // By hand: -log softmax at the target, averaged per segment.
    let values = floats(logits);
    let (mut text, mut image) = (0.0f64, 0.0f64);
    for row in 0..2 * len {
        let logits = &values[row * v..(row + 1) * v];
        let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let log_sum = logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        let nll = log_sum - logits[targets_values[row] as usize] as f64;
        if row % len < c.text_len {
            text += nll;
        } else {
            image += nll;
        }
    }
    text /= (2 * c.text_len) as f64;
    image /= (2 * (len - c.text_len)) as f64;
    let got = |t: Tensor<B, 1>| floats(t)[0] as f64;
    assert!((got(loss.text) - text).abs() < 1e-4);
    assert!((got(loss.image) - image).abs() < 1e-4);
    assert!((got(loss.total) - (text + 7.0 * image) / 8.0).abs() < 1e-4);
}

/// The segment-sliced training loss (what training uses) equals the reference: `loss` of the
/// full masked logits, in value and in the head's and embeddings' gradients (f32 rounding,
/// 1e-5).
#[test]
fn the_segment_sliced_loss_equals_the_full_vocabulary_loss() {
    type AB = burn::backend::Autodiff<Flex>;
    let device = Default::default();
    let config = model(AttentionLayout::Dense, 2).config.clone();
    let model: Dalle<AB> = {
        let _random = backend_random();
        AB::seed(&device, 3);
        config.init(&device)
    };
    let stream = random_input(&config, 2, 9); // [BOS] text image[..-1]
    let text = Tensor::<AB, 2, Int>::from_data(
        stream.slice([0..2, 1..1 + config.text_len]).into_data(),
        &device,
    );
    let n_image = config.n_image_tokens();
    let codes: Vec<i64> = (0..2 * n_image)
        .map(|i| ((i * 3) % config.n_image_codes) as i64)
        .collect();
    let image = Tensor::<AB, 2, Int>::from_data(TensorData::new(codes, [2, n_image]), &device);
    let scalar = |t: Tensor<AB, 1>| t.into_scalar() as f64;
    let sliced = model.losses(text.clone(), image.clone());
    let (logits, targets) = model.forward(text, image);
    let full = model.loss(logits, targets);
    for (a, b) in [
        (sliced.text.clone(), full.text.clone()),
        (sliced.image.clone(), full.image.clone()),
    ] {
        let (a, b) = (scalar(a), scalar(b));
        assert!((a - b).abs() < 1e-5, "segment loss {a} vs full {b}");
    }
    let grads_sliced = sliced.total.backward();
    let grads_full = full.total.backward();
    for (name, param) in [
        ("head", model.head.weight.val()),
        ("token embedding", model.token_embedding.weight.val()),
    ] {
        let diff = (param.grad(&grads_sliced).expect(name) - param.grad(&grads_full).expect(name))
            .abs()
            .max()
            .into_scalar();
        assert!(diff < 1e-5, "{name} gradient differs by {diff}");
    }
}

/// Generation follows captions, end to end at a tiny size: a one-token caption names one of 4
/// categories; its 2x2 token grid holds that category's code in one random cell and one of 12
/// background codes elsewhere. After 300 AdamW steps on fresh batches, images sampled for a
/// caption (plain sampling: no top-k, temperature 1, no guidance) must show the named code. A
/// decoder that ignores the caption shows it in 1 of 4 images (each grid holds exactly one
/// object), an untrained one in about 1 - (15/16)^4 = 0.23, so the bar, 3 in 4, is a margin of
/// 3x chance.
#[test]
fn generation_follows_captions_far_above_chance() {
    use burn::backend::Autodiff;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use rand::{Rng, SeedableRng};
    use vislang::data::{DalleExample, DalleSplit};

    type Ad = Autodiff<Flex>;
    const CATEGORIES: usize = 4;
    const CODES: usize = 16;
    let config = DalleConfig::new(CATEGORIES, 2, CODES, [2, 2])
        .with_d_model(32)
        .with_n_heads(4)
        .with_n_layers(2)
        .with_d_hidden(64)
        .with_dropout(0.0);
    let device = Default::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let example = |rng: &mut rand::rngs::StdRng| {
        let category = rng.random_range(0..CATEGORIES);
        let cell = rng.random_range(0..4);
        let codes = (0..4)
            .map(|i| match i == cell {
                true => category as u16,
                false => rng.random_range(CATEGORIES..CODES) as u16,
            })
            .collect();
        DalleExample {
            image_id: 0,
            captions: vec![vec![category as u32]],
            raw_captions: vec![format!("category {category}")],
            codes,
        }
    };
    let mut model: Dalle<Ad> = {
        let _random = backend_random();
        Ad::seed(&device, 11);
        config.init(&device)
    };
    let mut optimizer = AdamWConfig::new().init();
    for _ in 0..300 {
        let split = DalleSplit {
            examples: (0..32).map(|_| example(&mut rng)).collect(),
        };
        let indices: Vec<usize> = (0..32).collect();
        let (text, image) = split.batch::<Ad>(&config, &indices, &[0; 32], &[false; 32], &device);
        let loss = model.losses(text, image).total;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(3e-3, model, grads);
    }

    let model = burn::module::AutodiffModule::valid(&model);
    let per_category = 16;
    let texts: Vec<Vec<u32>> = (0..CATEGORIES * per_category)
        .map(|i| config.text_ids(&[(i / per_category) as u32]))
        .collect();
    let sampling = SamplingConfig {
        seed: 5,
        ..SamplingConfig::default()
    };
    let codes = generate(&model, &texts, &sampling, &device);
    let shown = codes
        .iter()
        .enumerate()
        .filter(|(i, grid)| grid.contains(&(i / per_category)))
        .count();
    let rate = shown as f64 / codes.len() as f64;
    eprintln!(
        "the caption's category shown in {shown} of {} images",
        codes.len()
    );
    assert!(
        rate >= 0.75,
        "images showed their caption's category {shown} of {} times ({rate:.2}; chance 0.25)",
        codes.len()
    );
}
