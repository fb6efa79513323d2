//! Image-token files: every image of a split as a grid of VQ-VAE codes, with its image id.
//!
//! A token file is a safetensors file (readable from Python) with two tensors,
//! - `codes`: `u16 [n_images, grid_height, grid_width]`,
//! - `image_ids`: `i64 [n_images]`,
//!
//! and metadata that records what produced it: the VQ-VAE checkpoint's fingerprint, the image
//! size, the codebook size, the split and the fingerprint of the source images. A reader states
//! what it expects ([`TokenExpectation`]); a file made by another checkpoint or at another image
//! size is refused with an error that names the field, instead of giving silent garbage.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::coco::{CocoDataset, CocoImage};
use super::fingerprint::fingerprint_bytes;
use super::image_cache::source_images_fingerprint;

const FORMAT: &str = "vislang-image-tokens";
const VERSION: &str = "1";

/// What produced a token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFileInfo {
    /// `train2014` or `val2014`.
    pub split: String,
    /// Side of the square images that were encoded, in pixels.
    pub image_size: usize,
    /// `[grid_height, grid_width]`.
    pub grid: [usize; 2],
    /// Codebook size of the VQ-VAE.
    pub n_codes: usize,
    /// [`checkpoint_fingerprint`] of the VQ-VAE weights.
    pub vqvae_checkpoint: String,
    /// [`crate::data::source_images_fingerprint`] of the encoded images, in file order.
    pub images: String,
}

/// What a reader needs a token file to be.
#[derive(Debug, Clone)]
pub struct TokenExpectation {
    pub vqvae_checkpoint: String,
    pub image_size: usize,
    /// The VQ-VAE's codebook size: every code must index it.
    pub n_codes: usize,
}

/// The image tokens of one split.
#[derive(Debug, Clone)]
pub struct ImageTokens {
    pub info: TokenFileInfo,
    /// One id per image, in file order.
    pub image_ids: Vec<u64>,
    /// `[n_images, grid_height * grid_width]`, row-major.
    pub codes: Vec<u16>,
}

/// A token file that cannot be used, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ImageTokensError {
    #[error("cannot access token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a vislang image-token file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path} was encoded from other image files than the dataset's {split} now holds ({detail}); its token grids would be paired with other images' captions. Encode the split again with `image-tokens encode`, or point --data-dir / --coco-root at the images it was made from")]
    SourcesChanged {
        path: PathBuf,
        split: &'static str,
        detail: String,
    },
    #[error("{path} is stale: its {field} is {found}, but {expected} is expected. It was made by another tokenizer or at another setting; encode the split again with `image-tokens encode`")]
    Mismatch {
        path: PathBuf,
        field: &'static str,
        found: String,
        expected: String,
    },
}

/// Identifies a VQ-VAE checkpoint by its weights: every tensor's name, dtype, shape and bytes,
/// in name order. Not by the file's bytes: the writer lists tensors in hash-map order, so two
/// bit-identical trainings wrote files that differ only in their header.
pub fn checkpoint_fingerprint(path: &Path) -> Result<String, std::io::Error> {
    let bytes = fs::read(path)?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let mut named = tensors.tensors();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = Vec::with_capacity(bytes.len());
    for (name, view) in named {
        let header = format!("{name}:{:?}:{:?};", view.dtype(), view.shape());
        canonical.extend_from_slice(header.as_bytes());
        canonical.extend_from_slice(view.data());
    }
    Ok(fingerprint_bytes(&canonical))
}

impl ImageTokens {
    pub fn len(&self) -> usize {
        self.image_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }

    /// Tokens per image: `grid_height * grid_width`.
    pub fn tokens_per_image(&self) -> usize {
        self.info.grid[0] * self.info.grid[1]
    }

    /// The row-major code grid of the `index`-th image.
    pub fn image(&self, index: usize) -> &[u16] {
        let n = self.tokens_per_image();
        &self.codes[index * n..(index + 1) * n]
    }

    /// Position of each image id in the file.
    pub fn index_by_id(&self) -> HashMap<u64, usize> {
        self.image_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect()
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ImageTokensError> {
        let format = |message: String| ImageTokensError::Format {
            path: path.to_path_buf(),
            message,
        };
        let info = &self.info;
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("split", info.split.clone()),
            ("image_size", info.image_size.to_string()),
            ("grid_height", info.grid[0].to_string()),
            ("grid_width", info.grid[1].to_string()),
            ("n_codes", info.n_codes.to_string()),
            ("vqvae_checkpoint", info.vqvae_checkpoint.clone()),
            ("images", info.images.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let code_bytes: Vec<u8> = self.codes.iter().flat_map(|c| c.to_le_bytes()).collect();
        let id_bytes: Vec<u8> = self
            .image_ids
            .iter()
            .flat_map(|&id| (id as i64).to_le_bytes())
            .collect();
        let n = self.len();
        let tensors = [
            (
                "codes",
                TensorView::new(Dtype::U16, vec![n, info.grid[0], info.grid[1]], &code_bytes)
                    .map_err(|e| format(e.to_string()))?,
            ),
            (
                "image_ids",
                TensorView::new(Dtype::I64, vec![n], &id_bytes)
                    .map_err(|e| format(e.to_string()))?,
            ),
        ];
        let bytes =
            safetensors::serialize(tensors, Some(metadata)).map_err(|e| format(e.to_string()))?;
        crate::io::checkpoint::write_atomic(path, &bytes).map_err(|e| ImageTokensError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads a token file, checking its structure (but not what produced it; see
    /// [`ImageTokens::load_expecting`]).
    pub fn load(path: &Path) -> Result<Self, ImageTokensError> {
        let format = |message: String| ImageTokensError::Format {
            path: path.to_path_buf(),
            message,
        };
        let bytes = fs::read(path).map_err(|source| ImageTokensError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let field = |name: &str| {
            metadata
                .get(name)
                .cloned()
                .ok_or_else(|| format(format!("metadata field `{name}` is missing")))
        };
        let number = |name: &str| {
            field(name)?
                .parse::<usize>()
                .map_err(|e| format(format!("metadata field `{name}`: {e}")))
        };
        if field("format")? != FORMAT {
            return Err(format(
                "metadata field `format` is not vislang-image-tokens".into(),
            ));
        }
        if field("version")? != VERSION {
            return Err(format(format!(
                "version {} is not the supported version {VERSION}",
                field("version")?
            )));
        }
        let info = TokenFileInfo {
            split: field("split")?,
            image_size: number("image_size")?,
            grid: [number("grid_height")?, number("grid_width")?],
            n_codes: number("n_codes")?,
            vqvae_checkpoint: field("vqvae_checkpoint")?,
            images: field("images")?,
        };
        let tensor = |name: &str, dtype: Dtype| {
            let view = tensors
                .tensor(name)
                .map_err(|_| format(format!("tensor `{name}` is missing")))?;
            if view.dtype() != dtype {
                return Err(format(format!(
                    "tensor `{name}` is {:?}, expected {dtype:?}",
                    view.dtype()
                )));
            }
            Ok(view)
        };
        let codes_view = tensor("codes", Dtype::U16)?;
        let ids_view = tensor("image_ids", Dtype::I64)?;
        let n = ids_view.shape().first().copied().unwrap_or(0);
        if codes_view.shape() != [n, info.grid[0], info.grid[1]] {
            return Err(format(format!(
                "tensor `codes` has shape {:?}, expected {:?} from `image_ids` and the grid",
                codes_view.shape(),
                [n, info.grid[0], info.grid[1]]
            )));
        }
        let codes: Vec<u16> = codes_view
            .data()
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        if let Some(bad) = codes.iter().find(|&&c| c as usize >= info.n_codes) {
            return Err(format(format!(
                "tensor `codes` holds code {bad}, outside the codebook of {}",
                info.n_codes
            )));
        }
        let image_ids = ids_view
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u64)
            .collect();
        Ok(Self {
            info,
            image_ids,
            codes,
        })
    }

    /// Reads a token file and checks that it was made by the expected VQ-VAE checkpoint at the
    /// expected image size.
    pub fn load_expecting(
        path: &Path,
        expected: &TokenExpectation,
    ) -> Result<Self, ImageTokensError> {
        let tokens = Self::load(path)?;
        let mismatch = |field, found: String, expected: String| ImageTokensError::Mismatch {
            path: path.to_path_buf(),
            field,
            found,
            expected,
        };
        if tokens.info.vqvae_checkpoint != expected.vqvae_checkpoint {
            return Err(mismatch(
                "VQ-VAE checkpoint",
                tokens.info.vqvae_checkpoint.clone(),
                expected.vqvae_checkpoint.clone(),
            ));
        }
        if tokens.info.image_size != expected.image_size {
            return Err(mismatch(
                "image size",
                format!("{} px", tokens.info.image_size),
                format!("{} px", expected.image_size),
            ));
        }
        // `load` checked the codes against the file's own codebook size; the decoder indexes
        // the VQ-VAE's.
        if tokens.info.n_codes > expected.n_codes {
            return Err(mismatch(
                "codebook size",
                format!("{} codes", tokens.info.n_codes),
                format!("at most the VQ-VAE's {} codes", expected.n_codes),
            ));
        }
        Ok(tokens)
    }

    /// Checks that the images this file was encoded from are still the files of `dataset`
    /// (same ids, names, lengths and modification times): token grids must not be paired with
    /// the captions of other images after a dataset was regenerated or edited.
    pub fn check_sources(
        &self,
        path: &Path,
        dataset: &CocoDataset,
    ) -> Result<(), ImageTokensError> {
        let by_id: HashMap<u64, &CocoImage> = dataset
            .images
            .iter()
            .map(|image| (image.id, image))
            .collect();
        let mismatch = |detail: String| ImageTokensError::SourcesChanged {
            path: path.to_path_buf(),
            split: dataset.split.name(),
            detail,
        };
        let sources: Vec<&CocoImage> = match self
            .image_ids
            .iter()
            .map(|id| by_id.get(id).copied())
            .collect()
        {
            Some(sources) => sources,
            None => {
                let missing = self.image_ids.iter().find(|id| !by_id.contains_key(id));
                return Err(mismatch(format!(
                    "it holds image {}, which the dataset does not",
                    missing.expect("one is missing")
                )));
            }
        };
        let now = source_images_fingerprint(sources);
        if now != self.info.images {
            return Err(mismatch(format!(
                "source fingerprint {}, the files now give {now}: changed or regenerated since",
                self.info.images
            )));
        }
        Ok(())
    }
}
