//! The folder `generate` writes: every image, one grid per caption, and `manifest.json` saying
//! which caption, seed and sampling settings made each file.
//!
//! FID tools read the whole folder, so it is replaced whole: a new run never leaves an older
//! run's images next to its own. Everything is written into a sibling staging folder first and
//! renamed into place, so a failure leaves the previous folder as it was. A folder that holds
//! files `generate` did not write (no manifest, or files the manifest does not list) is refused
//! before any sampling starts: it is the user's data.

use crate::nn::Precision;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ArtifactError;
use crate::io::checkpoint::{write_atomic, CheckpointError};
use crate::io::image_grid::{write_image_grid, write_png, GridRow};
use crate::models::dalle::SamplingConfig;

pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "vislang-generate";
/// Images per row of a caption's grid.
const GRID_COLUMNS: usize = 8;

/// What `manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationManifest {
    /// `vislang-generate`.
    pub format: String,
    /// The `train-dalle` directory that sampled.
    pub dalle: PathBuf,
    /// Temperature, top-k, top-p, guidance and the base seed. Batch `i` samples with seed
    /// `seed + i`, so `batch_size` is part of what reproduces a file.
    pub sampling: SamplingConfig,
    pub batch_size: usize,
    /// The precision of the decoder's products (`--precision`); files written before it
    /// existed sampled in f32.
    #[serde(default)]
    pub precision: Precision,
    /// Images sampled per caption before reranking (equal to the kept number without it).
    pub candidates_per_caption: usize,
    /// The joint classifier that ranked the candidates, if any.
    pub reranked_with: Option<PathBuf>,
    pub files: Vec<GeneratedFile>,
}

/// One file of the folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedFile {
    /// Relative to the folder: `images/NNN-SS.png` or `grid-NNN.png`.
    pub file: String,
    pub caption: String,
    /// The caption's position among the captions given.
    pub caption_index: usize,
    /// The image's place among its caption's images (by the ranker's score when reranked);
    /// `None` for a grid.
    pub sample: Option<usize>,
}

/// Refuses an `--out` that exists and holds anything `generate` did not write.
pub fn check_output_dir(out: &Path) -> Result<(), ArtifactError> {
    if !out.exists() {
        return Ok(());
    }
    let refuse = |why: String| {
        ArtifactError::Output(format!(
            "--out {} {why}; generate replaces its folder whole (FID tools read all of it), so choose a new or empty --out",
            out.display()
        ))
    };
    if !out.is_dir() {
        return Err(refuse("is a file".into()));
    }
    let files = files_under(out).map_err(|e| refuse(format!("cannot be listed ({e})")))?;
    if files.is_empty() {
        return Ok(());
    }
    let manifest: GenerationManifest = fs::read(out.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|m: &GenerationManifest| m.format == FORMAT)
        .ok_or_else(|| {
            refuse("holds files that generate did not write (no manifest.json)".into())
        })?;
    for file in files {
        let listed = file == MANIFEST || manifest.files.iter().any(|f| f.file == file);
        if !listed {
            return Err(refuse(format!(
                "holds {file}, which its manifest.json does not list"
            )));
        }
    }
    Ok(())
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn files_under(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else {
                files.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Ok(files)
}

/// Writes `images[c][s]` (caption `c`'s `s`-th image, `size x size` RGB) with one grid per
/// caption and the manifest into `out`, replacing an earlier `generate` folder there (checked
/// with [`check_output_dir`] before sampling). Returns the manifest.
pub fn write_generation(
    out: &Path,
    captions: &[String],
    images: &[Vec<Vec<u8>>],
    size: usize,
    mut manifest: GenerationManifest,
) -> Result<GenerationManifest, ArtifactError> {
    check_output_dir(out)?;
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let staging = out.with_file_name(format!(".{name}.generate-partial-{}", std::process::id()));
    let written = write_files(&staging, captions, images, size, &mut manifest);
    let replaced = written.and_then(|()| {
        if out.exists() {
            fs::remove_dir_all(out).map_err(|source| CheckpointError::Write {
                path: out.to_path_buf(),
                source,
            })?;
        }
        fs::rename(&staging, out).map_err(|source| CheckpointError::Write {
            path: out.to_path_buf(),
            source,
        })
    });
    if let Err(error) = replaced {
        let _ = fs::remove_dir_all(&staging);
        return Err(error.into());
    }
    Ok(manifest)
}

fn write_files(
    dir: &Path,
    captions: &[String],
    images: &[Vec<Vec<u8>>],
    size: usize,
    manifest: &mut GenerationManifest,
) -> Result<(), CheckpointError> {
    manifest.format = FORMAT.into();
    manifest.files.clear();
    for (c, (caption, caption_images)) in captions.iter().zip(images).enumerate() {
        for (s, pixels) in caption_images.iter().enumerate() {
            let file = format!("images/{c:03}-{s:02}.png");
            write_png(&dir.join(&file), pixels, size, 1)?;
            manifest.files.push(GeneratedFile {
                file,
                caption: caption.clone(),
                caption_index: c,
                sample: Some(s),
            });
        }
        let rows: Vec<GridRow> = caption_images
            .chunks(GRID_COLUMNS)
            .enumerate()
            .map(|(r, chunk)| {
                let first = r * GRID_COLUMNS + 1;
                let samples = format!("samples {first}-{}", first + chunk.len() - 1);
                GridRow::new(format!("{caption} ({samples})"), chunk.to_vec())
            })
            .collect();
        let file = format!("grid-{c:03}.png");
        write_image_grid(&dir.join(&file), &rows, size, (128 / size).max(1) as u32)?;
        manifest.files.push(GeneratedFile {
            file,
            caption: caption.clone(),
            caption_index: c,
            sample: None,
        });
    }
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    write_atomic(&dir.join(MANIFEST), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> GenerationManifest {
        GenerationManifest {
            format: String::new(),
            dalle: PathBuf::from("/runs/dalle"),
            sampling: SamplingConfig::recommended(),
            batch_size: 4,
            precision: Precision::F32,
            candidates_per_caption: 2,
            reranked_with: None,
            files: Vec::new(),
        }
    }

    #[test]
    fn a_folder_is_replaced_whole_and_foreign_files_are_never_touched() {
        let dir = std::env::temp_dir().join(format!("vislang-generate-{}", std::process::id()));
        let out = dir.join("out");
        let captions = ["a cat.".to_string(), "a dog.".to_string()];
        let image = vec![7u8; 4 * 4 * 3];
        let two = vec![vec![image.clone(), image.clone()], vec![image.clone()]];
        let written = write_generation(&out, &captions, &two, 4, manifest()).unwrap();
        assert_eq!(written.files.len(), 3 + 2);
        assert_eq!(written.format, FORMAT);
        let one = vec![vec![image.clone()]];
        write_generation(&out, &captions[..1], &one, 4, manifest()).unwrap();
        let mut left = files_under(&out).unwrap();
        left.sort();
        assert_eq!(left, ["grid-000.png", "images/000-00.png", "manifest.json"]);

        // No manifest: someone else's folder.
        let theirs = dir.join("theirs");
        fs::create_dir_all(&theirs).unwrap();
        fs::write(theirs.join("photo.png"), b"x").unwrap();
        let error = write_generation(&theirs, &captions[..1], &one, 4, manifest())
            .unwrap_err()
            .to_string();
        assert!(error.contains("did not write"), "{error}");
        assert_eq!(fs::read(theirs.join("photo.png")).unwrap(), b"x");
        // An empty folder is fine.
        fs::create_dir_all(dir.join("empty")).unwrap();
        assert!(check_output_dir(&dir.join("empty")).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
