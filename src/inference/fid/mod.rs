//! Fréchet Inception Distance (Heusel et al. 2017, <https://arxiv.org/abs/1706.08500>), the
//! number text-to-image papers and image tokenizers report, computed as pytorch-fid computes
//! it so that a score here sits next to published ones: pytorch-fid's Inception network and
//! weights ([`inception`]), its preprocessing, and its statistics in f64 ([`statistics`]).
//!
//! The weights are the user's file (`--inception`): pytorch-fid's
//! [`inception::OFFICIAL_FILE`], as published at [`inception::OFFICIAL_URL`], or a safetensors
//! conversion of it (`experiments/reference/inception_to_safetensors.py`). Every score carries
//! its [`FidProtocol`]: the image counts, the resize, and the weights' checksum.

pub mod inception;
pub mod reconstruction;
pub mod statistics;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::nn::{Backend, HfWeightsError};
pub use inception::{InceptionNetwork, InceptionWeights, RgbImage, FEATURES, INPUT_SIZE};
pub use reconstruction::{reconstruction_quality, ReconstructionQuality};
pub use statistics::{frechet_distance, FeatureStatistics};

/// Why a FID cannot be computed, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum FidError {
    #[error("--inception {}: no such file. FID needs pytorch-fid's Inception weights: download {} once from {} and pass its path (or a safetensors conversion of it, experiments/reference/inception_to_safetensors.py)", path.display(), inception::OFFICIAL_FILE, inception::OFFICIAL_URL)]
    MissingWeights { path: PathBuf },
    #[error("--inception: {source}\n(this must be pytorch-fid's {} from {}, or a safetensors conversion of it)", inception::OFFICIAL_FILE, inception::OFFICIAL_URL)]
    Weights {
        path: PathBuf,
        source: HfWeightsError,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Write(#[from] crate::io::checkpoint::CheckpointError),
}

/// How a score was computed: what two users must share for their numbers to be comparable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidProtocol {
    /// Images in the first set (e.g. the real ones) and the second.
    pub images_first: usize,
    pub images_second: usize,
    pub weights: InceptionWeights,
    pub features: String,
    pub preprocessing: String,
    pub statistics: String,
}

impl FidProtocol {
    pub fn new(first: usize, second: usize, weights: &InceptionWeights) -> Self {
        Self {
            images_first: first,
            images_second: second,
            weights: weights.clone(),
            features: format!("InceptionV3 pool-3, {FEATURES} wide (pytorch-fid's FID network, burn-train's implementation)"),
            preprocessing: format!("RGB in [0, 1], resized bilinearly to {INPUT_SIZE} x {INPUT_SIZE} (align_corners=False, no antialiasing), scaled to [-1, 1], as pytorch-fid"),
            statistics: "mean and unbiased covariance in f64; tr sqrt(S1 S2) from the eigenvalues of S1^1/2 S2 S1^1/2 (pytorch-fid: scipy sqrtm)".into(),
        }
    }

    /// The protocol in a few lines, for printing under a score.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("images: {} and {}", self.images_first, self.images_second),
            format!(
                "weights: {} (sha256 {}{})",
                self.weights.file.display(),
                self.weights.sha256,
                if self.weights.official {
                    ", pytorch-fid's official file"
                } else {
                    ", not the official .pth: compare only with scores from this file"
                }
            ),
            format!("features: {}", self.features),
            format!("preprocessing: {}", self.preprocessing),
            format!("statistics: {}", self.statistics),
        ];
        if self.images_first.min(self.images_second) < FEATURES {
            lines.push(format!("note: fewer than {FEATURES} images in a set leave its covariance rank-deficient; FID is biased upwards at small counts, so compare scores only at equal image counts (papers use 10,000 to 50,000)"));
        }
        lines
    }
}

/// A FID with its protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidScore {
    pub fid: f64,
    pub protocol: FidProtocol,
}

/// Accumulates the statistics of a stream of images, `batch_size` at a time through the
/// network, so that no more than one batch of images is held.
pub struct FeatureStream<'a, B: Backend> {
    network: &'a InceptionNetwork<B>,
    device: B::Device,
    pub statistics: FeatureStatistics,
}

impl<'a, B: Backend> FeatureStream<'a, B> {
    pub fn new(network: &'a InceptionNetwork<B>, device: &B::Device) -> Self {
        Self {
            network,
            device: device.clone(),
            statistics: FeatureStatistics::new(FEATURES),
        }
    }

    /// Adds one batch of images.
    pub fn add(&mut self, images: &[RgbImage<'_>]) {
        let rows = self.network.features_of(images, &self.device);
        self.statistics.add(&rows);
    }

    /// Adds square `[size, size, 3]` RGB images in batches of `batch_size`.
    pub fn add_square(&mut self, images: &[Vec<u8>], size: usize, batch_size: usize) {
        for chunk in images.chunks(batch_size.max(1)) {
            let views: Vec<RgbImage<'_>> = chunk
                .iter()
                .map(|pixels| RgbImage {
                    pixels,
                    height: size,
                    width: size,
                })
                .collect();
            self.add(&views);
        }
    }
}

/// The image files in `dir` (PNG and JPEG, by extension), sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, FidError> {
    let entries = std::fs::read_dir(dir).map_err(|source| FidError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| FidError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if path.is_file() && matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg")) {
            files.push(path);
        }
    }
    files.sort();
    if files.len() < 2 {
        return Err(FidError::Image {
            path: dir.to_path_buf(),
            message: format!(
                "{} PNG or JPEG image(s) in this folder; FID needs at least 2",
                files.len()
            ),
        });
    }
    Ok(files)
}

/// The feature statistics of the images in `dir`, read `batch_size` at a time.
pub fn folder_statistics<B: Backend>(
    network: &InceptionNetwork<B>,
    dir: &Path,
    batch_size: usize,
    device: &B::Device,
) -> Result<FeatureStatistics, FidError> {
    let files = image_files(dir)?;
    let mut stream = FeatureStream::new(network, device);
    for chunk in files.chunks(batch_size.max(1)) {
        let decoded = chunk
            .iter()
            .map(|path| {
                image::open(path)
                    .map(|image| image.to_rgb8())
                    .map_err(|e| FidError::Image {
                        path: path.clone(),
                        message: format!("not a readable image: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let views: Vec<RgbImage<'_>> = decoded
            .iter()
            .map(|image| RgbImage {
                pixels: image.as_raw(),
                height: image.height() as usize,
                width: image.width() as usize,
            })
            .collect();
        stream.add(&views);
    }
    Ok(stream.statistics)
}

/// FID between the images of two folders.
pub fn folder_fid<B: Backend>(
    network: &InceptionNetwork<B>,
    first: &Path,
    second: &Path,
    batch_size: usize,
    device: &B::Device,
) -> Result<FidScore, FidError> {
    // Both folders are listed before any image goes through the network.
    image_files(first)?;
    image_files(second)?;
    let a = folder_statistics(network, first, batch_size, device)?;
    let b = folder_statistics(network, second, batch_size, device)?;
    Ok(FidScore {
        fid: frechet_distance(&a, &b)?,
        protocol: FidProtocol::new(a.count(), b.count(), &network.weights),
    })
}
