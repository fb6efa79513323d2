//! Does a generated image show what its caption asks for? On the synthetic set, where a caption
//! names objects by known words, an image-only classifier (trained by `classify`) checks each
//! named object in the image generated for the caption. The same check on the real image of
//! the caption is the ceiling.
//!
//! Rates are over (caption, named object) pairs: the fraction whose object the classifier finds
//! (probability above 0.5) in the image. Four images are checked per caption:
//! - **real**: the held-out image at the classifier's resolution (the ceiling);
//! - **real at the tokenizer's resolution**: the same image downscaled to the VQ-VAE's size and
//!   back (what any image of this pipeline can at best be);
//! - **VQ-VAE reconstruction**: the real image's tokens decoded (the tokenizer's loss);
//! - **generated**: sampled from the caption;
//! - optionally **generated, reranked**: the best of several samples by the joint classifier
//!   ([`Judge::rank_scores`]); the image-only classifier that checks it is a different model.

use std::path::{Path, PathBuf};

use crate::nn::Backend;
use burn::tensor::activation::sigmoid;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use super::dalle::{generate_images, TrainedDalle};
use super::fid::{
    frechet_distance, reconstruction_quality, FeatureStream, FidProtocol, FidScore,
    InceptionNetwork, ReconstructionQuality,
};
use super::vqvae::decode_codes;
use super::ArtifactError;
use crate::data::{
    image_batch, mentioned_categories, CocoCategory, DalleSplit, ImageCache, TextBatch,
    TextTokenizer, IMAGE_MEAN, IMAGE_STD,
};
use crate::io::checkpoint::load_safetensors;
use crate::models::classifier::{Modality, SingleStreamClassifier, SingleStreamClassifierConfig};
use crate::models::dalle::SamplingConfig;

/// A classifier trained by `classify`, used to check (image-only) or rank (joint) images.
pub struct Judge<B: Backend> {
    pub model: SingleStreamClassifier<B>,
    pub image_size: usize,
    /// The WordPiece tokenizer of the classify experiment (used by a joint model).
    pub tokenizer: Option<TextTokenizer>,
    max_text_len: usize,
    modality: Modality,
    /// The run directory it was loaded from: who judged, named in every report.
    pub dir: PathBuf,
}

impl<B: Backend> Judge<B> {
    /// Loads a `classify` run directory (`model.safetensors`, `model-config.json`), e.g.
    /// `runs/classify/runs/image-only-seed0`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, ArtifactError> {
        let config_path = dir.join("model-config.json");
        let config: SingleStreamClassifierConfig =
            super::read_artifact_json(&config_path, "classify", "--judge / --rerank-with")?;
        let image_size = config.image_size;
        let max_text_len = config.max_text_len;
        let model = load_safetensors(config.init::<B>(device), &dir.join("model.safetensors"))?;
        // A classify experiment keeps its tokenizer two levels up: <out>/runs/<run>/.
        let tokenizer_path = dir.join("../../tokenizer.json");
        let tokenizer = if config.modality.uses_text() {
            Some(TextTokenizer::from_file(&tokenizer_path)?)
        } else {
            None
        };
        Ok(Self {
            model,
            image_size,
            tokenizer,
            max_text_len,
            modality: config.modality,
            dir: dir.to_path_buf(),
        })
    }

    /// Loads the classifier that judges images: an image-only `classify` run, or, given a
    /// whole `classify` output directory, its image-only run with the best held-out mAP (a
    /// seed that stalled would lower every rate, the ceiling too). A model that reads text
    /// would judge the caption as much as the image, so any other is refused.
    pub fn load_judge(dir: &Path, device: &B::Device) -> Result<Self, ArtifactError> {
        let dir = &best_image_only_run(dir)?;
        let judge = Self::load(dir, device)?;
        if judge.modality != Modality::ImageOnly {
            return Err(ArtifactError::Mismatch(format!(
                "--judge {} is a {} classifier; judging images needs an image-only one, such as runs/classify/runs/image-only-seed0",
                dir.display(),
                judge.modality.name()
            )));
        }
        Ok(judge)
    }

    /// Label probabilities of `[size, size, 3]` RGB images of any size (resized to the
    /// classifier's), without text (an image-only classifier).
    pub fn probabilities(
        &self,
        images: &[Vec<u8>],
        size: usize,
        device: &B::Device,
    ) -> Vec<Vec<f32>> {
        let tensor = self.image_tensor(images, size, device);
        self.classify(tensor, device)
    }

    /// `[n, 3, image_size, image_size]` normalised pixels of RGB images of side `size`.
    fn image_tensor(
        &self,
        images: &[Vec<u8>],
        size: usize,
        device: &B::Device,
    ) -> burn::tensor::Tensor<B, 4> {
        let target = self.image_size as u32;
        let plane = self.image_size * self.image_size;
        let mut values = Vec::with_capacity(images.len() * 3 * plane);
        for pixels in images {
            let image = image::RgbImage::from_raw(size as u32, size as u32, pixels.clone())
                .expect("size * size * 3 bytes");
            let resized = image::imageops::resize(&image, target, target, FilterType::Triangle);
            let mut channels = vec![0f32; 3 * plane];
            for (p, rgb) in resized.pixels().enumerate() {
                for c in 0..3 {
                    channels[c * plane + p] =
                        (rgb[c] as f32 / 255.0 - IMAGE_MEAN[c]) / IMAGE_STD[c];
                }
            }
            values.extend(channels);
        }
        let n = images.len();
        burn::tensor::Tensor::<B, 4>::from_data(
            burn::tensor::TensorData::new(values, [n, 3, self.image_size, self.image_size]),
            device,
        )
    }

    fn classify(&self, images: burn::tensor::Tensor<B, 4>, device: &B::Device) -> Vec<Vec<f32>> {
        let n = images.dims()[0];
        let empty: Vec<&[u32]> = vec![&[]; n];
        self.classify_with(images, TextBatch::from_sequences(&empty, None, 0, device))
    }

    fn classify_with(
        &self,
        images: burn::tensor::Tensor<B, 4>,
        text: TextBatch<B>,
    ) -> Vec<Vec<f32>> {
        let probabilities = sigmoid(self.model.forward(images, text).logits);
        let n_labels = probabilities.dims()[1];
        let values: Vec<f32> = probabilities
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        values.chunks(n_labels).map(<[_]>::to_vec).collect()
    }
}

impl<B: Backend> Judge<B> {
    /// Loads a joint classifier run for reranking (see [`Judge::rank_scores`]).
    pub fn load_ranker(dir: &Path, device: &B::Device) -> Result<Self, ArtifactError> {
        let judge = Self::load(dir, device)?;
        if judge.modality != Modality::Joint {
            return Err(not_joint(dir));
        }
        Ok(judge)
    }

    /// The share of this joint model's tokens over `captions` that are `[UNK]`: near 0 when it
    /// was trained on captions like these, high when they are in a language (or script) its
    /// vocabulary never saw, and its rankings would read nothing of the text.
    pub fn unknown_token_rate<'a>(
        &self,
        captions: impl Iterator<Item = &'a str>,
    ) -> Result<f64, ArtifactError> {
        let Some(tokenizer) = &self.tokenizer else {
            return Ok(0.0);
        };
        let (mut unknown, mut total) = (0usize, 0usize);
        for caption in captions {
            let ids = tokenizer.encode(caption, self.max_text_len)?;
            unknown += ids
                .iter()
                .filter(|&&id| id == tokenizer.special.unk)
                .count();
            total += ids.len();
        }
        Ok(unknown as f64 / total.max(1) as f64)
    }

    /// Ranking scores of candidate images for one caption with a joint classifier: higher
    /// means the image shows more of what the caption names.
    ///
    /// The labels the caption names are those the joint model predicts (probability above 0.5,
    /// or the single most likely one) for the caption with a neutral, mean-coloured image. A
    /// candidate's score is the sum of the log-probabilities of those labels given the
    /// candidate and the caption. The caption is the same for every candidate, so differences
    /// between scores come from the images alone.
    pub fn rank_scores(
        &self,
        caption: &str,
        images: &[Vec<u8>],
        size: usize,
        device: &B::Device,
    ) -> Result<Vec<f64>, ArtifactError> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| not_joint(Path::new("the given run")))?;
        let ids = tokenizer.encode(caption, self.max_text_len)?;
        let special = tokenizer.special;
        let text = |n: usize| {
            let rows: Vec<&[u32]> = vec![ids.as_slice(); n];
            TextBatch::from_sequences(&rows, Some(special.sep), special.pad, device)
        };
        let side = self.image_size;
        let neutral = burn::tensor::Tensor::<B, 4>::zeros([1, 3, side, side], device);
        let prior = &self.classify_with(neutral, text(1))[0];
        let mut named: Vec<usize> = (0..prior.len()).filter(|&l| prior[l] > 0.5).collect();
        if named.is_empty() {
            let best = (0..prior.len())
                .max_by(|&a, &b| prior[a].total_cmp(&prior[b]))
                .unwrap_or(0);
            named.push(best);
        }
        let probabilities =
            self.classify_with(self.image_tensor(images, size, device), text(images.len()));
        Ok(probabilities
            .iter()
            .map(|p| named.iter().map(|&l| (p[l].max(1e-7) as f64).ln()).sum())
            .collect())
    }
}

/// `dir` itself when it is one run (it holds `model-config.json`); for a `classify` output
/// directory, the `runs/image-only-seed*` run whose `result.json` has the highest held-out mAP.
pub fn best_image_only_run(dir: &Path) -> Result<PathBuf, ArtifactError> {
    if dir.join("model-config.json").exists() || !dir.join("runs").is_dir() {
        return Ok(dir.to_path_buf());
    }
    let runs = std::fs::read_dir(dir.join("runs")).map_err(|source| {
        ArtifactError::Checkpoint(crate::io::checkpoint::CheckpointError::Read {
            path: dir.join("runs"),
            source,
        })
    })?;
    let mut best: Option<(f64, PathBuf)> = None;
    for run in runs.flatten().map(|entry| entry.path()) {
        let is_image_only = run
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("image-only-seed"));
        if !is_image_only || !run.join("result.json").exists() {
            continue;
        }
        let result: serde_json::Value = crate::io::checkpoint::read_json(&run.join("result.json"))?;
        let map = result["map"].as_f64().ok_or_else(|| {
            ArtifactError::Mismatch(format!(
                "{} has no held-out mAP (\"map\")",
                run.join("result.json").display()
            ))
        })?;
        // Ties go to the first name in order, so the choice does not depend on listing order.
        let better = best.as_ref().is_none_or(|(best_map, best_run)| {
            map > *best_map || (map == *best_map && run < *best_run)
        });
        if better {
            best = Some((map, run));
        }
    }
    best.map(|(_, run)| run).ok_or_else(|| {
        ArtifactError::Mismatch(format!(
            "--judge {} holds no finished image-only run (runs/image-only-seed*/result.json); run `classify` (its image-only rows) first, or name one run directory",
            dir.display()
        ))
    })
}

fn not_joint(dir: &Path) -> ArtifactError {
    ArtifactError::Mismatch(format!(
        "{} is not a joint classifier; reranking reads the caption, so it needs one such as runs/classify/runs/joint-seed0",
        dir.display()
    ))
}

/// Keeps the `keep` best of each caption's candidates by the joint classifier's
/// [`Judge::rank_scores`], best first.
pub fn rerank<B: Backend>(
    judge: &Judge<B>,
    captions: &[String],
    candidates: Vec<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
    device: &B::Device,
) -> Result<Vec<Vec<Vec<u8>>>, ArtifactError> {
    captions
        .iter()
        .zip(candidates)
        .map(|(caption, images)| {
            let scores = judge.rank_scores(caption, &images, size, device)?;
            let mut order: Vec<usize> = (0..images.len()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            Ok(order
                .into_iter()
                .take(keep)
                .map(|i| images[i].clone())
                .collect())
        })
        .collect()
}

/// What the judge finds in one set of images, one image per caption.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageSetScore {
    /// Fraction of (caption, named object) pairs whose object the judge finds in the image.
    pub named_found: f64,
    /// Objects the judge finds per image that the caption does not name. Real images have
    /// some (a caption names about half of its image's objects); a generator that draws
    /// everything everywhere finds every named object but scores far above the real images here.
    pub unnamed_per_image: f64,
}

/// What an evaluation is measured against: the captions, the judge, and its scores on the real
/// images and their reconstructions (the same for every sampling seed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceScores {
    pub captions: usize,
    pub named_objects: usize,
    /// The judge's run directory.
    pub judge: String,
    pub real: ImageSetScore,
    pub real_at_tokenizer_resolution: ImageSetScore,
    pub vqvae_reconstruction: ImageSetScore,
    /// The reconstructions against the real images at the tokenizer's resolution, pixel by pixel.
    pub vqvae_reconstruction_quality: ReconstructionQuality,
    /// FID of the reconstructions against the real images at the tokenizer's resolution (with
    /// `--inception`).
    pub vqvae_reconstruction_fid: Option<FidScore>,
}

/// The scores of each image set, over the same captions and named objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationEvaluation {
    #[serde(flatten)]
    pub reference: ReferenceScores,
    pub generated: ImageSetScore,
    /// With a reranker: the best of `candidates` generated images per caption.
    pub generated_reranked: Option<ImageSetScore>,
    /// FID of the generated images against the real images at the tokenizer's resolution
    /// (with `--inception`).
    pub generated_fid: Option<FidScore>,
    pub candidates: usize,
    pub sampling: SamplingConfig,
}

/// Scores the judge's label probabilities of one image per caption against the labels each
/// caption names.
fn score(probabilities: &[Vec<f32>], named: &[Vec<usize>]) -> ImageSetScore {
    let (mut found, mut unnamed) = (0, 0);
    for (p, labels) in probabilities.iter().zip(named) {
        let detected = (0..p.len()).filter(|&l| p[l] > 0.5);
        let (hits, extra): (Vec<usize>, Vec<usize>) = detected.partition(|l| labels.contains(l));
        found += hits.len();
        unnamed += extra.len();
    }
    let named_objects: usize = named.iter().map(Vec::len).sum();
    ImageSetScore {
        named_found: found as f64 / named_objects.max(1) as f64,
        unnamed_per_image: unnamed as f64 / probabilities.len().max(1) as f64,
    }
}

/// Checks `n_captions` held-out captions (the first caption of each of the first images).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_generation<B: Backend>(
    trained: &TrainedDalle<B>,
    judge: &Judge<B>,
    val: &DalleSplit,
    categories: &[CocoCategory],
    real_cache: &ImageCache,
    n_captions: usize,
    sampling: &SamplingConfig,
    reranker: Option<(&Judge<B>, usize)>,
    inception: Option<&InceptionNetwork<B>>,
    batch_size: usize,
    device: &B::Device,
) -> Result<GenerationEvaluation, ArtifactError> {
    let examples: Vec<_> = val
        .examples
        .iter()
        .filter(|e| !mentioned_categories(&e.raw_captions[0]).is_empty())
        .filter(|e| real_cache.contains(e.image_id))
        .take(n_captions)
        .collect();
    let captions: Vec<String> = examples.iter().map(|e| e.raw_captions[0].clone()).collect();
    // Label index of each named object of each caption.
    let named: Vec<Vec<usize>> = captions
        .iter()
        .map(|caption| {
            mentioned_categories(caption)
                .into_iter()
                .filter_map(|id| categories.iter().position(|c| c.id == id as u64))
                .collect()
        })
        .collect();
    let named_objects: usize = named.iter().map(Vec::len).sum();
    let rate = |probabilities: &[Vec<f32>]| score(probabilities, &named);

    let size = trained.config.image_size;
    let mut real = Vec::new();
    let mut real_low = Vec::new();
    let mut reconstructed = Vec::new();
    let mut quality_pairs: (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    let mut real_features = inception.map(|network| FeatureStream::new(network, device));
    let mut reconstruction_features = inception.map(|network| FeatureStream::new(network, device));
    for chunk in examples.chunks(batch_size.max(1)) {
        let ids: Vec<u64> = chunk.iter().map(|e| e.image_id).collect();
        real.extend(judge.classify(image_batch(real_cache, &ids, device), device));
        let low: Vec<Vec<u8>> = ids
            .iter()
            .map(|&id| {
                downscale(
                    real_cache.get(id).expect("cached"),
                    real_cache.image_size(),
                    size,
                )
            })
            .collect();
        real_low.extend(judge.probabilities(&low, size, device));
        if let Some(stream) = &mut real_features {
            stream.add_square(&low, size, batch_size);
        }
        let grids: Vec<Vec<usize>> = chunk
            .iter()
            .map(|e| e.codes.iter().map(|&c| c as usize).collect())
            .collect();
        let decoded = decode_codes(
            &trained.vqvae.model,
            &grids,
            trained.config.model.grid,
            device,
        );
        reconstructed.extend(judge.probabilities(&decoded, size, device));
        if let Some(stream) = &mut reconstruction_features {
            stream.add_square(&decoded, size, batch_size);
        }
        quality_pairs.0.extend(decoded);
        quality_pairs.1.extend(low);
    }
    let vqvae_reconstruction_quality =
        reconstruction_quality::<B>(&quality_pairs.0, &quality_pairs.1, size, device);
    let generated_images: Vec<Vec<u8>> =
        generate_images(trained, &captions, 1, sampling, batch_size, device)?
            .into_iter()
            .flatten()
            .collect();
    let generated = judge.probabilities(&generated_images, size, device);
    // FID against the real images at the generator's resolution, so that it measures what
    // was generated and not the resolution.
    let fid_against_real =
        |stream: Option<FeatureStream<'_, B>>| -> Result<Option<FidScore>, ArtifactError> {
            let (Some(real), Some(other), Some(network)) = (&real_features, stream, inception)
            else {
                return Ok(None);
            };
            let fid = frechet_distance(&real.statistics, &other.statistics)
                .map_err(|e| ArtifactError::Output(e.to_string()))?;
            let protocol = FidProtocol::new(
                real.statistics.count(),
                other.statistics.count(),
                &network.weights,
            );
            Ok(Some(FidScore { fid, protocol }))
        };
    let generated_fid = fid_against_real(inception.map(|network| {
        let mut stream = FeatureStream::new(network, device);
        stream.add_square(&generated_images, size, batch_size);
        stream
    }))?;
    let vqvae_reconstruction_fid = fid_against_real(reconstruction_features)?;
    let (generated_reranked, candidates) = match reranker {
        Some((ranker, candidates)) => {
            // Different seeds from the unreranked sample above.
            let pool_sampling = SamplingConfig {
                seed: sampling.seed.wrapping_add(1_000_000),
                ..sampling.clone()
            };
            let pool = generate_images(
                trained,
                &captions,
                candidates,
                &pool_sampling,
                batch_size,
                device,
            )?;
            let best: Vec<Vec<u8>> = rerank(ranker, &captions, pool, size, 1, device)?
                .into_iter()
                .flatten()
                .collect();
            (
                Some(rate(&judge.probabilities(&best, size, device))),
                candidates,
            )
        }
        None => (None, 1),
    };
    Ok(GenerationEvaluation {
        reference: ReferenceScores {
            captions: captions.len(),
            named_objects,
            judge: judge.dir.display().to_string(),
            real: rate(&real),
            real_at_tokenizer_resolution: rate(&real_low),
            vqvae_reconstruction: rate(&reconstructed),
            vqvae_reconstruction_quality,
            vqvae_reconstruction_fid,
        },
        generated: rate(&generated),
        generated_reranked,
        generated_fid,
        candidates,
        sampling: sampling.clone(),
    })
}

/// Resizes `[from, from, 3]` RGB bytes to `[to, to, 3]`.
fn downscale(pixels: &[u8], from: usize, to: usize) -> Vec<u8> {
    let image = image::RgbImage::from_raw(from as u32, from as u32, pixels.to_vec())
        .expect("from * from * 3 bytes");
    image::imageops::resize(&image, to as u32, to as u32, FilterType::Triangle).into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_everything_finds_every_named_object_but_is_caught_by_the_unnamed_count() {
        // Two captions over four labels: the first names labels 0 and 1, the second label 2.
        let named = vec![vec![0, 1], vec![2]];
        let faithful = vec![vec![0.9, 0.8, 0.1, 0.2], vec![0.1, 0.2, 0.7, 0.6]];
        let everything = vec![vec![0.9; 4], vec![0.9; 4]];
        let nothing = vec![vec![0.1; 4], vec![0.1; 4]];
        let score_of = |p: &[Vec<f32>]| score(p, &named);
        assert_eq!(
            score_of(&faithful),
            ImageSetScore {
                named_found: 1.0,
                unnamed_per_image: 0.5
            }
        );
        assert_eq!(score_of(&everything).named_found, 1.0);
        assert_eq!(score_of(&everything).unnamed_per_image, 2.5);
        assert_eq!(score_of(&nothing).named_found, 0.0);
        assert_eq!(score_of(&nothing).unnamed_per_image, 0.0);
    }

    #[test]
    fn a_classify_directory_judges_with_its_best_image_only_seed() {
        let dir = std::env::temp_dir().join(format!("vislang-judge-{}", std::process::id()));
        let write = |run: &str, map: f64| {
            let run_dir = dir.join("runs").join(run);
            std::fs::create_dir_all(&run_dir).unwrap();
            let result = serde_json::json!({ "map": map });
            std::fs::write(run_dir.join("result.json"), result.to_string()).unwrap();
        };
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        assert!(best_image_only_run(&dir).is_err(), "no image-only run yet");
        write("image-only-seed0", 0.71);
        write("image-only-seed1", 0.85);
        write("image-only-seed2", 0.85);
        write("joint-seed0", 0.91);
        let best = best_image_only_run(&dir).unwrap();
        assert_eq!(best, dir.join("runs/image-only-seed1"));
        // One run named directly is used as it is.
        let one = dir.join("runs/image-only-seed0");
        std::fs::write(one.join("model-config.json"), "{}").unwrap();
        assert_eq!(best_image_only_run(&one).unwrap(), one);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
