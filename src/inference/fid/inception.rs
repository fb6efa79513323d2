//! pytorch-fid's Inception network: burn-train's `InceptionV3FeatureExtractor` (the FID
//! variant of InceptionV3, Szegedy et al. 2016, with the TensorFlow-ported weights'
//! differences) loaded from the user's [`OFFICIAL_FILE`], with pytorch-fid's
//! input handling in front of it.
//!
//! burn-train's own `Fid` is not used as it stands: it scales inputs with ImageNet's
//! mean and standard deviation where pytorch-fid maps `[0, 1]` to `[−1, 1]`, its resize aligns
//! corners where pytorch-fid's does not, its statistics are f32 with a Newton–Schulz square
//! root, and it downloads its weights. The network itself is used unchanged.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleSnapshot, TensorSnapshot};
use burn_train::metric::vision::InceptionV3FeatureExtractor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FidError;
use crate::nn::hf_weights::HfWeights;
use crate::nn::Backend;

/// The width of the pool-3 features FID compares.
pub const FEATURES: usize = 2048;
/// The side every image is resized to.
pub const INPUT_SIZE: usize = 299;
/// The official weights, as pytorch-fid publishes them.
pub const OFFICIAL_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";
pub const OFFICIAL_URL: &str =
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// torch.hub names a file by the first 8 hex digits of its SHA-256.
const OFFICIAL_SHA256_PREFIX: &str = "6726825d";

/// The weights file a score was computed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionWeights {
    pub file: PathBuf,
    pub sha256: String,
    /// Whether the file is pytorch-fid's official `.pth` (by its checksum). A safetensors
    /// conversion of it has another checksum, and is as good.
    pub official: bool,
}

/// The FID Inception network on a device.
#[derive(Debug)]
pub struct InceptionNetwork<B: Backend> {
    extractor: InceptionV3FeatureExtractor<B>,
    pub weights: InceptionWeights,
}

/// pytorch-fid's name of a tensor of burn-train's network: the stem's convolutions carry
/// their kernel size, blocks are capitalised, and batch norm's scale and shift are PyTorch's
/// `weight` and `bias`.
fn torch_name(burn_path: &str) -> String {
    let (top, rest) = burn_path.split_once('.').unwrap_or((burn_path, ""));
    let top = match top {
        "conv2d_1a" => "Conv2d_1a_3x3".to_string(),
        "conv2d_2a" => "Conv2d_2a_3x3".to_string(),
        "conv2d_2b" => "Conv2d_2b_3x3".to_string(),
        "conv2d_3b" => "Conv2d_3b_1x1".to_string(),
        "conv2d_4a" => "Conv2d_4a_3x3".to_string(),
        mixed => match mixed.strip_prefix("mixed_") {
            Some(block) => format!("Mixed_{block}"),
            None => mixed.to_string(),
        },
    };
    let rest = rest
        .replace("bn.gamma", "bn.weight")
        .replace("bn.beta", "bn.bias");
    format!("{top}.{rest}")
}

fn sha256_of(path: &Path) -> Result<String, FidError> {
    let io = |source| FidError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl<B: Backend> InceptionNetwork<B> {
    /// Loads pytorch-fid's weights from `path` (`.pth` as published, or safetensors with the
    /// same names). Every tensor of the network must be there with its shape; the file's
    /// classifier (`fc.*`) and batch-norm counters are not used.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self, FidError> {
        if !path.is_file() {
            return Err(FidError::MissingWeights {
                path: path.to_path_buf(),
            });
        }
        let sha256 = sha256_of(path)?;
        let wrong_file = |source| FidError::Weights {
            path: path.to_path_buf(),
            source,
        };
        let mut file = HfWeights::open(path).map_err(wrong_file)?;
        let mut extractor = InceptionV3FeatureExtractor::<B>::new(device);
        let mut loaded = Vec::new();
        for snapshot in extractor.collect(None, None, false) {
            let shape = snapshot.shape.to_vec();
            let name = torch_name(&snapshot.full_path());
            if let Some(values) = file.take(&name, &shape) {
                loaded.push(TensorSnapshot::from_data(
                    TensorData::new(values, shape),
                    snapshot.path_stack.clone().unwrap_or_default(),
                    snapshot.container_stack.clone().unwrap_or_default(),
                    snapshot.tensor_id.unwrap_or_default(),
                ));
            }
        }
        let counters: Vec<String> = file
            .names()
            .filter(|n| n.ends_with(".num_batches_tracked"))
            .map(str::to_string)
            .collect();
        for counter in &counters {
            file.skip(counter);
        }
        file.finish(&["fc."]).map_err(wrong_file)?;
        let applied = extractor.apply(loaded, None, None, false);
        if !applied.errors.is_empty() || !applied.missing.is_empty() {
            return Err(FidError::Input(format!(
                "{}: the weights did not apply to the network: {:?} {:?}",
                path.display(),
                applied.errors,
                applied.missing
            )));
        }
        Ok(Self {
            extractor,
            weights: InceptionWeights {
                file: path.to_path_buf(),
                official: sha256.starts_with(OFFICIAL_SHA256_PREFIX),
                sha256,
            },
        })
    }

    /// Pool-3 features, as pytorch-fid's `InceptionV3([3])` computes them: each image resized
    /// bilinearly to 299 × 299 (half-pixel centres, PyTorch's `align_corners=False`, no
    /// antialiasing), `[0, 1]` mapped to `[−1, 1]`.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`, values in `[0, 1]`
    /// - returns `[batch, 2048]`
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.extractor
            .forward(resize_to_input(images).mul_scalar(2.0).sub_scalar(1.0))
    }

    /// Features of RGB images (`[height, width, 3]` bytes each, any sizes), as f32 rows.
    pub fn features_of(&self, images: &[RgbImage<'_>], device: &B::Device) -> Vec<f32> {
        if images.is_empty() {
            return Vec::new();
        }
        let resized: Vec<Tensor<B, 4>> = images
            .iter()
            .map(|image| {
                let planar = image.planar_unit();
                let shape = [1, 3, image.height, image.width];
                resize_to_input(Tensor::from_data(TensorData::new(planar, shape), device))
            })
            .collect();
        self.features(Tensor::cat(resized, 0))
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 features")
    }

    /// The network's parameter count (21.8 M for pytorch-fid's).
    pub fn num_params(&self) -> usize {
        self.extractor.num_params()
    }
}

/// Bilinear to 299 × 299 as PyTorch's `interpolate(..., align_corners=False)`; images already
/// that size pass unchanged (PyTorch's resize is the identity there too).
fn resize_to_input<B: Backend>(images: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, height, width] = images.dims();
    if (height, width) == (INPUT_SIZE, INPUT_SIZE) {
        return images;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
    interpolate(images, [INPUT_SIZE, INPUT_SIZE], options)
}

/// An RGB image as interleaved bytes, `[height, width, 3]`.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub pixels: &'a [u8],
    pub height: usize,
    pub width: usize,
}

impl RgbImage<'_> {
    /// `[3, height, width]` in `[0, 1]`, as torchvision's `ToTensor` gives it.
    fn planar_unit(&self) -> Vec<f32> {
        let plane = self.height * self.width;
        let mut out = vec![0.0f32; 3 * plane];
        for (i, rgb) in self.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = rgb[c] as f32 / 255.0;
            }
        }
        out
    }
}
