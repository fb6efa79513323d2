//! Decoded, resized and centre-cropped images, stored once on disk and memory-mapped.
//!
//! Decoding JPEGs dominates an epoch on a CPU, so every split is preprocessed once into
//! `<cache_dir>/<split>-<size>px-<fingerprint>.u8` (RGB bytes, `[image, row, col, channel]`).
//! Later epochs and later runs map that file and copy bytes. The fingerprint covers the
//! preprocessing version, the size, and every source file's name, length and modification time,
//! so an edited dataset gets a fresh cache rather than stale pixels.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use image::imageops::FilterType;
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::coco::{CocoDataset, CocoImage};
use super::error::{BadEntryPolicy, DataError, SkipReport};
use super::fingerprint::Fnv;

/// Bump when preprocessing changes, so old caches are not reused.
const PREPROCESS_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"VLIMGC01";
/// Images decoded in parallel per chunk before being appended to the cache file.
pub(crate) const CHUNK: usize = 512;

/// Decodes an image file into `size x size` RGB bytes: grayscale and palette images become
/// RGB, the shorter side is resized to `size`, and the centre is cropped.
pub fn preprocess_image(path: &Path, size: usize) -> Result<Vec<u8>, String> {
    let decoded = super::image_file::open_image(path)?;
    let rgb = decoded.to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err("image has zero width or height".into());
    }
    let scale = size as f32 / w.min(h) as f32;
    let (rw, rh) = (
        ((w as f32 * scale).round() as u32).max(size as u32),
        ((h as f32 * scale).round() as u32).max(size as u32),
    );
    let resized = image::imageops::resize(&rgb, rw, rh, FilterType::Triangle);
    let (x0, y0) = ((rw - size as u32) / 2, (rh - size as u32) / 2);
    let cropped = image::imageops::crop_imm(&resized, x0, y0, size as u32, size as u32).to_image();
    Ok(cropped.into_raw())
}

fn image_error(image: &CocoImage, reason: String) -> DataError {
    if image.path.exists() {
        DataError::CorruptImage {
            path: image.path.clone(),
            image_id: image.id,
            reason,
        }
    } else {
        DataError::MissingImage {
            path: image.path.clone(),
            image_id: image.id,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SkippedImage {
    image_id: u64,
    path: PathBuf,
    missing: bool,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    image_size: usize,
    fingerprint: String,
    /// Ids of the stored images, in storage order.
    image_ids: Vec<u64>,
    /// Images that could not be decoded when the cache was built.
    skipped: Vec<SkippedImage>,
}

impl SkippedImage {
    fn to_error(&self) -> DataError {
        if self.missing {
            DataError::MissingImage {
                path: self.path.clone(),
                image_id: self.image_id,
            }
        } else {
            DataError::CorruptImage {
                path: self.path.clone(),
                image_id: self.image_id,
                reason: self.reason.clone(),
            }
        }
    }
}

/// A memory-mapped file of preprocessed images.
pub struct ImageCache {
    mmap: Mmap,
    data_offset: usize,
    image_size: usize,
    index: HashMap<u64, usize>,
    path: PathBuf,
    fingerprint: String,
}

/// Identifies the source files of `images`, in the order given: each image's id, file name
/// (not how its directory is spelled: the same data via a relative and an absolute path is one
/// dataset), length and modification time. Regenerated or edited images change it.
pub fn source_images_fingerprint<'a>(images: impl IntoIterator<Item = &'a CocoImage>) -> String {
    let mut hash = Fnv::new();
    for image in images {
        hash.write(&image.id.to_le_bytes());
        hash.write(image.file_name.as_bytes());
        if let Ok(meta) = fs::metadata(&image.path) {
            hash.write(&meta.len().to_le_bytes());
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hash.write(&modified.to_le_bytes());
        }
    }
    hash.hex()
}

fn fingerprint(dataset: &CocoDataset, size: usize) -> String {
    let mut hash = Fnv::new();
    hash.write(&PREPROCESS_VERSION.to_le_bytes());
    hash.write(&(size as u64).to_le_bytes());
    hash.write(source_images_fingerprint(&dataset.images).as_bytes());
    hash.hex()
}

impl ImageCache {
    /// Opens the cache for `dataset` at `size` pixels, building it first if it is missing or
    /// stale. Images that cannot be decoded are handled by `policy`; under `Skip` they are
    /// returned in the report and absent from the cache.
    pub fn open_or_build(
        dataset: &CocoDataset,
        size: usize,
        cache_dir: &Path,
        policy: BadEntryPolicy,
        show_progress: bool,
    ) -> Result<(Self, SkipReport), DataError> {
        let fingerprint = fingerprint(dataset, size);
        let path = cache_dir.join(format!(
            "{}-{}px-{}.u8",
            dataset.split.name(),
            size,
            fingerprint
        ));
        if !path.exists() {
            Self::build(dataset, size, &fingerprint, &path, policy, show_progress)?;
        }
        let cache = Self::open(&path)?;
        let mut report = SkipReport::default();
        for skipped in &cache.1 {
            report.handle(policy, skipped.to_error())?;
        }
        Ok((cache.0, report))
    }

    fn open(path: &Path) -> Result<(Self, Vec<SkippedImage>), DataError> {
        let invalid = |message: String| DataError::Invalid {
            path: path.to_path_buf(),
            message: format!("{message}; delete the file to rebuild the cache"),
        };
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Safety: the cache file is written once (to a temporary name, then renamed) and never
        // modified in place, so the mapping cannot change under us.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if mmap.len() < 16 || &mmap[..8] != MAGIC {
            return Err(invalid("not a vislang image cache".into()));
        }
        let header_len = u64::from_le_bytes(mmap[8..16].try_into().expect("8 bytes")) as usize;
        let header_end = 16 + header_len;
        let header: Header = mmap
            .get(16..header_end)
            .ok_or_else(|| invalid("truncated header".into()))
            .and_then(|bytes| {
                serde_json::from_slice(bytes).map_err(|e| invalid(format!("bad header: {e}")))
            })?;
        let image_bytes = header.image_size * header.image_size * 3;
        let expected = header_end + header.image_ids.len() * image_bytes;
        if header.version != PREPROCESS_VERSION || mmap.len() != expected {
            return Err(invalid(format!(
                "expected {expected} bytes of version {PREPROCESS_VERSION}, found {} bytes of version {}",
                mmap.len(),
                header.version
            )));
        }
        let index = header
            .image_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
        Ok((
            ImageCache {
                mmap,
                data_offset: header_end,
                image_size: header.image_size,
                index,
                path: path.to_path_buf(),
                fingerprint: header.fingerprint,
            },
            header.skipped,
        ))
    }

    fn build(
        dataset: &CocoDataset,
        size: usize,
        fingerprint: &str,
        path: &Path,
        policy: BadEntryPolicy,
        show_progress: bool,
    ) -> Result<(), DataError> {
        let io_error = |source| DataError::Write {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io_error)?;
        let progress = crate::io::progress::bar(
            dataset.images.len() as u64,
            &format!("preprocessing {} to {size}px", dataset.split.name()),
            show_progress,
        );
        // Pixels go to one temporary file while ids are collected; the header (which needs the
        // final id list) is written in front of them afterwards.
        let pixels_path = path.with_extension("pixels.tmp");
        let mut pixels = BufWriter::new(File::create(&pixels_path).map_err(io_error)?);
        let mut image_ids = Vec::with_capacity(dataset.images.len());
        let mut skipped = Vec::new();
        for chunk in dataset.images.chunks(CHUNK) {
            let decoded: Vec<Result<Vec<u8>, String>> = chunk
                .par_iter()
                .map(|image| preprocess_image(&image.path, size))
                .collect();
            for (image, result) in chunk.iter().zip(decoded) {
                match result {
                    Ok(bytes) => {
                        pixels.write_all(&bytes).map_err(io_error)?;
                        image_ids.push(image.id);
                    }
                    Err(reason) => {
                        let error = image_error(image, reason.clone());
                        if policy == BadEntryPolicy::Fail {
                            drop(pixels);
                            let _ = fs::remove_file(&pixels_path);
                            return Err(error);
                        }
                        skipped.push(SkippedImage {
                            image_id: image.id,
                            path: image.path.clone(),
                            missing: matches!(error, DataError::MissingImage { .. }),
                            reason,
                        });
                    }
                }
            }
            progress.inc(chunk.len() as u64);
        }
        pixels.flush().map_err(io_error)?;
        drop(pixels);
        progress.finish_and_clear();

        let header = serde_json::to_vec(&Header {
            version: PREPROCESS_VERSION,
            image_size: size,
            fingerprint: fingerprint.to_string(),
            image_ids,
            skipped,
        })
        .expect("header serialises");
        let tmp_path = path.with_extension("tmp");
        {
            let mut out = BufWriter::new(File::create(&tmp_path).map_err(io_error)?);
            out.write_all(MAGIC).map_err(io_error)?;
            out.write_all(&(header.len() as u64).to_le_bytes())
                .map_err(io_error)?;
            out.write_all(&header).map_err(io_error)?;
            let mut pixels = File::open(&pixels_path).map_err(io_error)?;
            std::io::copy(&mut pixels, &mut out).map_err(io_error)?;
            out.flush().map_err(io_error)?;
        }
        fs::remove_file(&pixels_path).map_err(io_error)?;
        fs::rename(&tmp_path, path).map_err(io_error)
    }

    /// The `[size, size, 3]` RGB bytes of an image, if it is in the cache.
    pub fn get(&self, image_id: u64) -> Option<&[u8]> {
        let n = self.image_size * self.image_size * 3;
        self.index.get(&image_id).map(|&i| {
            let start = self.data_offset + i * n;
            &self.mmap[start..start + n]
        })
    }

    pub fn contains(&self, image_id: u64) -> bool {
        self.index.contains_key(&image_id)
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Identifies the source images and preprocessing this cache was built from.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the cache lives on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
