//! The built-in synthetic dataset: real JPEG files and the official COCO JSON schemas, generated
//! deterministically from a seed, small enough to make and train on in minutes on a laptop CPU.
//!
//! It is built so that image and text are complementary (see `datasets/synthetic.md`):
//! - every object category is drawn as a distinct glyph (a shape in a colour; neither alone
//!   identifies the category);
//! - each caption names only a random subset of the objects, with synonyms;
//! - some objects are small and low-contrast, hard to see but often named in a caption.
//!
//! So text alone misses the unnamed objects, pixels alone miss the faint ones, and a model that
//! reads both can recover nearly all of them.

use std::fs;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::categories::COCO_CATEGORIES;
use super::coco::CocoSplit;
pub use super::glyphs::{Glyph, Shape, GLYPHS};
use super::synthetic_captions::{plan_caption, CaptionLanguage};

/// Parameters of the synthetic set. The same config always produces byte-identical files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticCocoConfig {
    pub seed: u64,
    pub n_train: usize,
    pub n_val: usize,
    /// Side of the generated JPEGs, in pixels.
    pub image_size: u32,
    pub captions_per_image: usize,
    /// Probability that an object is drawn small and faint.
    pub faint_probability: f64,
    /// Probability that a caption names a given object (at least one is always named).
    pub mention_probability: f64,
}

impl Default for SyntheticCocoConfig {
    fn default() -> Self {
        Self {
            seed: 2014,
            n_train: 2000,
            n_val: 500,
            image_size: 96,
            captions_per_image: 3,
            faint_probability: 0.5,
            mention_probability: 0.5,
        }
    }
}

/// Objects are placed in the cells of a `GRID x GRID` layout.
const GRID: u32 = 4;

/// The marker file that says a directory holds a synthetic set and with which config.
const MARKER: &str = "vislang-synthetic.json";
/// Bump whenever the generator's output changes, so old sets are regenerated.
const GENERATOR_VERSION: u32 = 2;

#[derive(Serialize, Deserialize, PartialEq)]
struct Marker {
    generator_version: u32,
    config: SyntheticCocoConfig,
}

/// Errors from writing the synthetic set.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("cannot write the synthetic dataset at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {source}")]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{path} exists and is not a vislang synthetic dataset; refusing to touch it (choose another directory)")]
    NotOurs { path: PathBuf },
    #[error("{path} holds a synthetic set made {difference}; refusing to regenerate it in place, since token files, caches and runs made from it would silently refer to other images. Delete the directory to regenerate it, or choose another --data-dir")]
    OtherConfig { path: PathBuf, difference: String },
}

/// One drawn object, with its COCO-style box.
struct Placed {
    glyph: usize,
    bbox: [f32; 4],
}

/// Where a run's images come from: the MSCOCO root when given, otherwise the synthetic set for
/// `synthetic` under `data_dir` (generated on first use) in [`synthetic_dir_name`].
pub fn dataset_root(
    coco_root: Option<&Path>,
    synthetic: &SyntheticCocoConfig,
    data_dir: &Path,
) -> Result<PathBuf, SyntheticError> {
    match coco_root {
        Some(root) => Ok(root.to_path_buf()),
        None => {
            let root = data_dir.join(synthetic_dir_name(synthetic));
            ensure_synthetic_coco(&root, synthetic)?;
            Ok(root)
        }
    }
}

/// `synthetic-coco-seed<seed>` for the default set at a seed; every other config gets its own
/// directory (`...-train<n>-val<n>`, plus a hash of any other field), so asking for a different
/// set never rewrites one that artifacts were made from.
pub fn synthetic_dir_name(config: &SyntheticCocoConfig) -> String {
    let base = SyntheticCocoConfig {
        seed: config.seed,
        ..SyntheticCocoConfig::default()
    };
    let mut name = format!("synthetic-coco-seed{}", config.seed);
    if (config.n_train, config.n_val) != (base.n_train, base.n_val) {
        name.push_str(&format!("-train{}-val{}", config.n_train, config.n_val));
    }
    let rest = SyntheticCocoConfig {
        n_train: base.n_train,
        n_val: base.n_val,
        ..config.clone()
    };
    if rest != base {
        let json = serde_json::to_vec(&rest).expect("a config serialises");
        name.push('-');
        name.push_str(&super::fingerprint::fingerprint_bytes(&json)[..8]);
    }
    name
}

/// Makes sure `root` holds the synthetic set for `config`, generating it if it does not exist.
/// An existing set made with another config or generator version is refused, never rewritten
/// (artifacts depend on its files); a directory that is not ours is left alone.
pub fn ensure_synthetic_coco(
    root: &Path,
    config: &SyntheticCocoConfig,
) -> Result<(), SyntheticError> {
    let marker = root.join(MARKER);
    if root.exists() {
        let existing = fs::read(&marker)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        let wanted = Marker {
            generator_version: GENERATOR_VERSION,
            config: config.clone(),
        };
        let current = existing
            .as_ref()
            .and_then(|value| serde_json::from_value::<Marker>(value.clone()).ok());
        return match (existing, current) {
            (_, Some(found)) if found == wanted => Ok(()),
            (Some(_), found) => Err(SyntheticError::OtherConfig {
                path: root.to_path_buf(),
                difference: match found {
                    Some(found) if found.generator_version != GENERATOR_VERSION => format!(
                        "by generator version {} (this build writes version {GENERATOR_VERSION})",
                        found.generator_version
                    ),
                    Some(found) => format!(
                        "with another config ({} train + {} val images, seed {}; asked for {} + {}, seed {})",
                        found.config.n_train,
                        found.config.n_val,
                        found.config.seed,
                        config.n_train,
                        config.n_val,
                        config.seed
                    ),
                    None => "by an unknown generator version".to_string(),
                },
            }),
            (None, _) => Err(SyntheticError::NotOurs {
                path: root.to_path_buf(),
            }),
        };
    }
    // Generate next to the target, then rename it in, so an interrupted run leaves no half set.
    let staging = root.with_extension("partial");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SyntheticError::Io { path, source }
    };
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    write_synthetic_coco(&staging, config)?;
    fs::rename(&staging, root).map_err(io(root))
}

/// Writes the synthetic set into `root` (which should not exist yet), with its captions in
/// every [`CaptionLanguage`].
pub fn write_synthetic_coco(
    root: &Path,
    config: &SyntheticCocoConfig,
) -> Result<(), SyntheticError> {
    generate(root, config, None)
}

/// `annotations/captions_<split>.json` for English (the official name), and
/// `annotations/captions_<split>.<code>.json` for another language.
pub fn synthetic_captions_path(
    root: &Path,
    split: CocoSplit,
    language: CaptionLanguage,
) -> PathBuf {
    match language {
        CaptionLanguage::English => split.captions_path(root),
        other => root.join("annotations").join(format!(
            "captions_{}.{}.json",
            split.name(),
            other.code()
        )),
    }
}

/// Makes sure the synthetic set at `root` (already ensured for `config`) has its captions in
/// `language`. Sets made before a language was added lack its files; they are written by
/// replaying the set's random stream (the images are drawn again, not written), so they
/// describe exactly the images on disk.
pub fn ensure_synthetic_captions(
    root: &Path,
    config: &SyntheticCocoConfig,
    language: CaptionLanguage,
) -> Result<(), SyntheticError> {
    let missing = [CocoSplit::Train2014, CocoSplit::Val2014]
        .iter()
        .any(|&split| !synthetic_captions_path(root, split, language).exists());
    if missing {
        generate(root, config, Some(language))?;
    }
    Ok(())
}

/// Generates the set from its seed: everything (`only_captions` = `None`), or just the caption
/// files of one language.
fn generate(
    root: &Path,
    config: &SyntheticCocoConfig,
    only_captions: Option<CaptionLanguage>,
) -> Result<(), SyntheticError> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut next_annotation_id = 1u64;
    let languages: Vec<CaptionLanguage> = match only_captions {
        Some(language) => vec![language],
        None => CaptionLanguage::ALL.to_vec(),
    };
    for (split, count, first_id) in [
        (CocoSplit::Train2014, config.n_train, 100_000u64),
        (CocoSplit::Val2014, config.n_val, 500_000u64),
    ] {
        let image_dir = split.image_dir(root);
        if only_captions.is_none() {
            fs::create_dir_all(&image_dir).map_err(|source| SyntheticError::Io {
                path: image_dir.clone(),
                source,
            })?;
        }
        let mut images = Vec::new();
        let mut instances = Vec::new();
        let mut captions: Vec<Vec<serde_json::Value>> = vec![Vec::new(); languages.len()];
        // Drawing follows the set's one random stream, so it is serial; JPEG encoding is
        // most of the time at COCO-like sizes and runs on all cores, a chunk at a time.
        let mut drawn: Vec<(PathBuf, RgbImage)> = Vec::with_capacity(ENCODE_CHUNK);
        for i in 0..count {
            let image_id = first_id + i as u64 * 7;
            let file_name = format!("COCO_{}_{:012}.jpg", split.name(), image_id);
            let (picture, placed) = draw_image(&mut rng, config);
            if only_captions.is_none() {
                drawn.push((image_dir.join(&file_name), picture));
                if drawn.len() == ENCODE_CHUNK || i + 1 == count {
                    save_jpegs(std::mem::take(&mut drawn))?;
                }
            }
            images.push(json!({
                "license": 1, "file_name": file_name, "coco_url": "", "flickr_url": "",
                "height": config.image_size, "width": config.image_size,
                "date_captured": "2014-01-01 00:00:00", "id": image_id,
            }));
            for object in &placed {
                let [x, y, w, h] = object.bbox;
                instances.push(json!({
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "area": w * h, "iscrowd": 0, "image_id": image_id,
                    "bbox": [x, y, w, h], "category_id": GLYPHS[object.glyph].category_id,
                    "id": next_annotation_id,
                }));
                next_annotation_id += 1;
            }
            let glyphs: Vec<usize> = placed.iter().map(|object| object.glyph).collect();
            for _ in 0..config.captions_per_image {
                let plan = plan_caption(&mut rng, &glyphs, config.mention_probability);
                for (language, captions) in languages.iter().zip(&mut captions) {
                    captions.push(json!({
                        "image_id": image_id, "id": next_annotation_id,
                        "caption": plan.write(*language),
                    }));
                }
                next_annotation_id += 1;
            }
        }
        let info = json!({
            "description": "vislang synthetic COCO-format dataset",
            "version": "1.0", "year": 2014, "contributor": "vislang",
            "date_created": "2014-01-01", "url": "",
        });
        let licenses = json!([{ "url": "", "id": 1, "name": "CC0" }]);
        let annotations_dir = root.join("annotations");
        for (language, captions) in languages.iter().zip(captions) {
            write_json(
                &synthetic_captions_path(root, split, *language),
                &json!({"info": info, "images": images, "licenses": licenses, "annotations": captions}),
                &annotations_dir,
            )?;
        }
        if only_captions.is_none() {
            let categories: Vec<_> = COCO_CATEGORIES
                .iter()
                .map(|(id, name, supercategory)| json!({"supercategory": supercategory, "id": id, "name": name}))
                .collect();
            write_json(
                &split.instances_path(root),
                &json!({"info": info, "images": images, "licenses": licenses,
                        "annotations": instances, "categories": categories}),
                &annotations_dir,
            )?;
        }
    }
    if only_captions.is_some() {
        return Ok(());
    }
    let marker = serde_json::to_vec_pretty(&Marker {
        generator_version: GENERATOR_VERSION,
        config: config.clone(),
    })
    .expect("marker serialises");
    fs::write(root.join(MARKER), marker).map_err(|source| SyntheticError::Io {
        path: root.join(MARKER),
        source,
    })
}

/// Images drawn before their JPEGs are written in parallel (about 60 MB at 560 px).
const ENCODE_CHUNK: usize = 64;

fn save_jpegs(pictures: Vec<(PathBuf, RgbImage)>) -> Result<(), SyntheticError> {
    pictures.into_par_iter().try_for_each(|(path, picture)| {
        picture
            .save_with_format(&path, image::ImageFormat::Jpeg)
            .map_err(|source| SyntheticError::Encode { path, source })
    })
}

fn write_json(path: &Path, value: &serde_json::Value, dir: &Path) -> Result<(), SyntheticError> {
    let io = |source| SyntheticError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    // Through a temporary file: caption files are added to existing sets (see
    // [`ensure_synthetic_captions`]), and an interrupted write must not leave half a file.
    let tmp = path.with_extension("json.partial");
    fs::write(&tmp, serde_json::to_vec(value).expect("json serialises")).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Whether normalised offset `(u, v)` from the centre lies inside `shape` (radius 1).
fn inside(shape: Shape, u: f32, v: f32) -> bool {
    match shape {
        Shape::Disk => u * u + v * v <= 1.0,
        Shape::Square => u.abs() <= 0.8 && v.abs() <= 0.8,
        Shape::Triangle => v > -0.85 && v < 0.8 && u.abs() < (v + 0.85) * 0.6,
        Shape::Ring => (0.3..=1.0).contains(&(u * u + v * v)),
        Shape::Cross => (u.abs() < 0.3 && v.abs() < 1.0) || (v.abs() < 0.3 && u.abs() < 1.0),
        Shape::Diamond => u.abs() + v.abs() <= 1.0,
    }
}

fn draw_image(rng: &mut StdRng, config: &SyntheticCocoConfig) -> (RgbImage, Vec<Placed>) {
    let size = config.image_size;
    let base: i32 = rng.random_range(90..160);
    let tint: [i32; 3] = [
        rng.random_range(-15..15),
        rng.random_range(-15..15),
        rng.random_range(-15..15),
    ];
    let mut picture = RgbImage::from_fn(size, size, |_, _| {
        let noise: i32 = rng.random_range(-22..=22);
        Rgb(tint.map(|t| (base + t + noise).clamp(0, 255) as u8))
    });

    // Objects sit in distinct cells of a 4x4 grid (with jitter), so a patch of a quarter of
    // the image side sees one object: hard enough to need shape and colour, easy enough to
    // learn from pixels in minutes.
    let cell = size as f32 / GRID as f32;
    let mut cells: Vec<u32> = (0..GRID * GRID).collect();
    cells.shuffle(rng);
    let n_objects = rng.random_range(2..=4);
    let mut glyphs: Vec<usize> = (0..GLYPHS.len()).collect();
    glyphs.shuffle(rng);
    let mut placed: Vec<Placed> = Vec::new();
    for (&glyph, &cell_index) in glyphs.iter().zip(&cells).take(n_objects) {
        let faint = rng.random_bool(config.faint_probability);
        let radius = if faint {
            rng.random_range(0.2..0.26) * cell
        } else {
            rng.random_range(0.36..0.46) * cell
        };
        let jitter = 0.5 * cell - radius - 0.5;
        let cx = ((cell_index % GRID) as f32 + 0.5) * cell + rng.random_range(-jitter..=jitter);
        let cy = ((cell_index / GRID) as f32 + 0.5) * cell + rng.random_range(-jitter..=jitter);
        let alpha = if faint {
            rng.random_range(0.28..0.4)
        } else {
            1.0
        };
        let Glyph { shape, color, .. } = GLYPHS[glyph];
        let (x0, x1) = ((cx - radius).floor() as u32, (cx + radius).ceil() as u32);
        let (y0, y1) = ((cy - radius).floor() as u32, (cy + radius).ceil() as u32);
        for y in y0..y1.min(size) {
            for x in x0..x1.min(size) {
                let (u, v) = (
                    (x as f32 + 0.5 - cx) / radius,
                    (y as f32 + 0.5 - cy) / radius,
                );
                if inside(shape, u, v) {
                    let pixel = picture.get_pixel_mut(x, y);
                    for c in 0..3 {
                        let blended = pixel[c] as f32 * (1.0 - alpha) + color[c] as f32 * alpha;
                        pixel[c] = blended.round() as u8;
                    }
                }
            }
        }
        let bbox = [x0 as f32, y0 as f32, (x1 - x0) as f32, (y1 - y0) as f32];
        placed.push(Placed { glyph, bbox });
    }
    (picture, placed)
}
