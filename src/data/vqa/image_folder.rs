//! The images of tasks that name them rather than number them (GQA's `imageId`, NLVR2's
//! `…-img0`): a folder searched once, each image found by its file stem wherever it lies below
//! (NLVR2's training images sit in numbered subfolders), and a split's images as a
//! [`CocoDataset`] the image cache can preprocess.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{ImageKey, QaExample};
use crate::data::coco::{CocoDataset, CocoImage, CocoSplit};
use crate::data::error::{DataError, SkipReport};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Every image file below some folders, by file stem.
#[derive(Debug, Default)]
pub struct ImageFolder {
    by_stem: HashMap<String, PathBuf>,
}

impl ImageFolder {
    /// Searches `dirs` recursively. A missing folder is an error naming it.
    pub fn scan(dirs: &[PathBuf]) -> Result<Self, DataError> {
        let mut folder = Self::default();
        for dir in dirs {
            if !dir.is_dir() {
                return Err(DataError::Invalid {
                    path: dir.clone(),
                    message: "is not a folder of images".into(),
                });
            }
            folder.walk(dir)?;
        }
        Ok(folder)
    }

    fn walk(&mut self, dir: &Path) -> Result<(), DataError> {
        let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                self.walk(&path)?;
                continue;
            }
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if let (true, Some(stem)) = (is_image, path.file_stem().and_then(|s| s.to_str())) {
                // The first found wins, so a stray copy elsewhere cannot change a run.
                self.by_stem.entry(stem.to_string()).or_insert(path);
            }
        }
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_stem.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.by_stem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stem.is_empty()
    }

    /// The images `examples` name, as a dataset for the image cache (ids in name order), and
    /// each name's id. Names not in the folder are left out; check the examples first.
    pub fn dataset_of(
        &self,
        split: CocoSplit,
        examples: &[QaExample],
        questions_path: &Path,
    ) -> (CocoDataset, HashMap<String, u64>) {
        let names: BTreeSet<&str> = examples
            .iter()
            .flat_map(|e| &e.images)
            .filter_map(|image| match image {
                ImageKey::Named(name) => Some(name.as_str()),
                ImageKey::Coco(_) => None,
            })
            .filter(|name| self.contains(name))
            .collect();
        let mut ids = HashMap::with_capacity(names.len());
        let images = names
            .into_iter()
            .enumerate()
            .map(|(id, name)| {
                let path = self.by_stem[name].clone();
                ids.insert(name.to_string(), id as u64);
                CocoImage {
                    id: id as u64,
                    file_name: path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(name)
                        .to_string(),
                    path,
                    width: 0,
                    height: 0,
                    captions: Vec::new(),
                    objects: Vec::new(),
                }
            })
            .collect();
        let dataset = CocoDataset {
            split,
            categories: Vec::new(),
            images,
            skipped: SkipReport::default(),
            captions_path: questions_path.to_path_buf(),
        };
        (dataset, ids)
    }
}
