//! MSCOCO 2014 in its official layout:
//!
//! ```text
//! <root>/annotations/captions_{train,val}2014.json
//! <root>/annotations/instances_{train,val}2014.json
//! <root>/train2014/COCO_train2014_000000000009.jpg ...
//! <root>/val2014/...
//! ```
//!
//! Only the fields vislang needs are read; everything else in the files is ignored.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::{BadEntryPolicy, DataError, SkipReport};

/// One of the two official splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CocoSplit {
    Train2014,
    Val2014,
}

impl CocoSplit {
    /// The directory and annotation suffix: `train2014` / `val2014`.
    pub fn name(self) -> &'static str {
        match self {
            CocoSplit::Train2014 => "train2014",
            CocoSplit::Val2014 => "val2014",
        }
    }

    pub fn captions_path(self, root: &Path) -> PathBuf {
        root.join("annotations")
            .join(format!("captions_{}.json", self.name()))
    }

    pub fn instances_path(self, root: &Path) -> PathBuf {
        root.join("annotations")
            .join(format!("instances_{}.json", self.name()))
    }

    pub fn image_dir(self, root: &Path) -> PathBuf {
        root.join(self.name())
    }
}

#[derive(Deserialize)]
struct ImageEntry {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct CaptionEntry {
    id: u64,
    image_id: u64,
    caption: String,
}

#[derive(Deserialize)]
struct InstanceEntry {
    id: u64,
    image_id: u64,
    category_id: u64,
    /// `[x, y, width, height]` in pixels.
    bbox: [f32; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CategoryEntry {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct CaptionsFile {
    images: Vec<ImageEntry>,
    annotations: Vec<CaptionEntry>,
}

#[derive(Deserialize)]
struct InstancesFile {
    images: Vec<ImageEntry>,
    annotations: Vec<InstanceEntry>,
    categories: Vec<CategoryEntry>,
}

/// One object instance on an image.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoObject {
    /// Index into [`CocoDataset::categories`] (contiguous, 0..80 for COCO).
    pub category: usize,
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f32; 4],
    /// A crowd region (`iscrowd = 1`). It still shows the category, so it counts as a label.
    pub is_crowd: bool,
}

/// One image with its captions and objects.
#[derive(Debug, Clone)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub captions: Vec<String>,
    /// May be empty: about 1% of COCO images show none of the 80 categories.
    pub objects: Vec<CocoObject>,
}

impl CocoImage {
    /// Multi-hot label vector over `n_categories`.
    pub fn multi_hot(&self, n_categories: usize) -> Vec<f32> {
        let mut labels = vec![0.0; n_categories];
        for object in &self.objects {
            labels[object.category] = 1.0;
        }
        labels
    }
}

/// A category as listed in the instances file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CocoCategory {
    /// The id used in the annotation files (non-contiguous in COCO: 1..90).
    pub id: u64,
    pub name: String,
}

/// One split of a COCO-format dataset.
#[derive(Debug)]
pub struct CocoDataset {
    pub split: CocoSplit,
    /// Sorted by id; a label's index is its position here.
    pub categories: Vec<CocoCategory>,
    /// Sorted by image id.
    pub images: Vec<CocoImage>,
    /// Entries left out under [`BadEntryPolicy::Skip`].
    pub skipped: SkipReport,
    /// The captions file the images' captions came from, for messages.
    pub captions_path: PathBuf,
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| DataError::Json {
        path: path.to_path_buf(),
        source,
    })
}

impl CocoDataset {
    /// Reads a split's captions and instances files. Image files are checked later, when they
    /// are decoded (see [`super::ImageCache`]).
    pub fn load(root: &Path, split: CocoSplit, policy: BadEntryPolicy) -> Result<Self, DataError> {
        Self::load_with_captions(root, split, &split.captions_path(root), policy)
    }

    /// As [`Self::load`], with the captions read from `captions_path` (COCO's caption schema)
    /// instead of the split's own file: a translation, say. It gets the official file's checks:
    /// every image it lists and every caption's image must be in the instances file, caption
    /// ids must be unique, captions must not be empty.
    pub fn load_with_captions(
        root: &Path,
        split: CocoSplit,
        captions_path: &Path,
        policy: BadEntryPolicy,
    ) -> Result<Self, DataError> {
        let captions_path = captions_path.to_path_buf();
        let instances_path = split.instances_path(root);
        let captions: CaptionsFile = read_json(&captions_path)?;
        let instances: InstancesFile = read_json(&instances_path)?;
        let mut skipped = SkipReport::default();

        let mut categories: Vec<CocoCategory> = instances
            .categories
            .into_iter()
            .map(|c| CocoCategory {
                id: c.id,
                name: c.name,
            })
            .collect();
        categories.sort_by_key(|c| c.id);
        if categories.is_empty() {
            return Err(DataError::Invalid {
                path: instances_path,
                message: "the `categories` list is empty".into(),
            });
        }
        let category_index: HashMap<u64, usize> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();

        let image_dir = split.image_dir(root);
        let mut images: Vec<CocoImage> = instances
            .images
            .into_iter()
            .map(|entry| CocoImage {
                path: image_dir.join(&entry.file_name),
                id: entry.id,
                file_name: entry.file_name,
                width: entry.width,
                height: entry.height,
                captions: Vec::new(),
                objects: Vec::new(),
            })
            .collect();
        images.sort_by_key(|image| image.id);
        // An id listed twice would give one entry the other's annotations: name both files.
        let mut unique: Vec<CocoImage> = Vec::with_capacity(images.len());
        for image in images {
            match unique.last() {
                Some(previous) if previous.id == image.id => skipped.handle(
                    policy,
                    DataError::DuplicateImage {
                        path: instances_path.clone(),
                        image_id: image.id,
                        first: previous.file_name.clone(),
                        second: image.file_name,
                    },
                )?,
                _ => unique.push(image),
            }
        }
        let mut images = unique;
        let image_index: HashMap<u64, usize> = images
            .iter()
            .enumerate()
            .map(|(i, image)| (image.id, i))
            .collect();
        // The captions file lists the same images; one missing from instances is an error.
        for entry in &captions.images {
            if !image_index.contains_key(&entry.id) {
                skipped.handle(
                    policy,
                    DataError::Invalid {
                        path: captions_path.clone(),
                        message: format!(
                            "image {} ({}) is not listed in {}",
                            entry.id,
                            entry.file_name,
                            instances_path.display()
                        ),
                    },
                )?;
            }
        }

        let mut seen = HashSet::new();
        for annotation in instances.annotations {
            if !seen.insert(annotation.id) {
                skipped.handle(
                    policy,
                    DataError::DuplicateAnnotation {
                        path: instances_path.clone(),
                        annotation_id: annotation.id,
                    },
                )?;
                continue;
            }
            let Some(&image) = image_index.get(&annotation.image_id) else {
                skipped.handle(
                    policy,
                    DataError::UnknownImage {
                        path: instances_path.clone(),
                        annotation_id: annotation.id,
                        image_id: annotation.image_id,
                    },
                )?;
                continue;
            };
            let Some(&category) = category_index.get(&annotation.category_id) else {
                skipped.handle(
                    policy,
                    DataError::UnknownCategory {
                        path: instances_path.clone(),
                        annotation_id: annotation.id,
                        image_id: annotation.image_id,
                        category_id: annotation.category_id,
                    },
                )?;
                continue;
            };
            images[image].objects.push(CocoObject {
                category,
                bbox: annotation.bbox,
                is_crowd: annotation.iscrowd != 0,
            });
        }

        let mut seen = HashSet::new();
        for annotation in captions.annotations {
            if !seen.insert(annotation.id) {
                skipped.handle(
                    policy,
                    DataError::DuplicateAnnotation {
                        path: captions_path.clone(),
                        annotation_id: annotation.id,
                    },
                )?;
                continue;
            }
            let Some(&image) = image_index.get(&annotation.image_id) else {
                skipped.handle(
                    policy,
                    DataError::UnknownImage {
                        path: captions_path.clone(),
                        annotation_id: annotation.id,
                        image_id: annotation.image_id,
                    },
                )?;
                continue;
            };
            let caption = annotation.caption.trim();
            if caption.is_empty() {
                skipped.handle(
                    policy,
                    DataError::EmptyCaption {
                        path: captions_path.clone(),
                        annotation_id: annotation.id,
                        image_id: annotation.image_id,
                    },
                )?;
                continue;
            }
            images[image].captions.push(caption.to_string());
        }

        Ok(CocoDataset {
            split,
            categories,
            images,
            skipped,
            captions_path,
        })
    }

    /// Leaves out the images without captions, for the binaries that read captions (the
    /// VQ-VAE and box features do not, and keep them). Each is a bad entry under `policy`:
    /// an error naming it, or skipped and counted.
    pub fn drop_uncaptioned(&mut self, policy: BadEntryPolicy) -> Result<(), DataError> {
        for image in self.images.iter().filter(|image| image.captions.is_empty()) {
            self.skipped.handle(
                policy,
                DataError::NoCaptions {
                    path: self.captions_path.clone(),
                    image_id: image.id,
                    file_name: image.file_name.clone(),
                },
            )?;
        }
        self.images.retain(|image| !image.captions.is_empty());
        Ok(())
    }

    /// Every caption of the split, for training a tokenizer.
    pub fn all_captions(&self) -> impl Iterator<Item = &str> {
        self.images
            .iter()
            .flat_map(|image| image.captions.iter().map(String::as_str))
    }
}
