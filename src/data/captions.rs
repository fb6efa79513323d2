//! Where a run's captions come from: the dataset's own caption files (the synthetic set in
//! English or Korean), or caption files of the user's, in COCO's caption schema (a translated
//! `captions_train2014.json`, say), over the same images.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::synthetic::{ensure_synthetic_captions, synthetic_captions_path};
pub use super::synthetic_captions::CaptionLanguage;
use super::{CocoSplit, SyntheticCocoConfig, SyntheticError};

/// The caption files of a run. Serialised into run configs; the defaults (English, the
/// dataset's own files) are left out, so configs written before this existed read the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptionSource {
    /// The language of the synthetic set's captions (with MSCOCO: a label for the caption
    /// files given below).
    #[serde(default, skip_serializing_if = "CaptionLanguage::is_english")]
    pub language: CaptionLanguage,
    /// A captions file in COCO's schema to read instead of `captions_train2014.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_file: Option<PathBuf>,
    /// A captions file in COCO's schema to read instead of `captions_val2014.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_file: Option<PathBuf>,
}

impl CaptionSource {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the combination before anything runs: MSCOCO's own captions are English, so
    /// another language there needs both files of the user's.
    pub fn check(&self, coco_root: Option<&Path>) -> Result<(), String> {
        let own_files = self.train_file.is_none() || self.val_file.is_none();
        if coco_root.is_some() && !self.language.is_english() && own_files {
            return Err(format!(
                "--caption-language {} with --coco-root needs --captions-train and \
                 --captions-val: MSCOCO's own captions are English (datasets/README.md says how \
                 to bring translated captions, and `convert-captions` converts AI Hub's Korean \
                 MSCOCO file)",
                self.language.code()
            ));
        }
        Ok(())
    }

    /// The captions file of `split` under `root`: the user's file when given, else the
    /// dataset's own in [`Self::language`]. On the synthetic set (`synthetic` given) a
    /// language's files are written first if the set predates them.
    pub fn path(
        &self,
        root: &Path,
        split: CocoSplit,
        synthetic: Option<&SyntheticCocoConfig>,
    ) -> Result<PathBuf, SyntheticError> {
        let given = match split {
            CocoSplit::Train2014 => &self.train_file,
            CocoSplit::Val2014 => &self.val_file,
        };
        if let Some(path) = given {
            return Ok(path.clone());
        }
        if let Some(config) = synthetic {
            ensure_synthetic_captions(root, config, self.language)?;
            return Ok(synthetic_captions_path(root, split, self.language));
        }
        Ok(split.captions_path(root))
    }

    /// [`Self::path`] of the training and the held-out split.
    pub fn paths(
        &self,
        root: &Path,
        synthetic: Option<&SyntheticCocoConfig>,
    ) -> Result<[PathBuf; 2], SyntheticError> {
        Ok([
            self.path(root, CocoSplit::Train2014, synthetic)?,
            self.path(root, CocoSplit::Val2014, synthetic)?,
        ])
    }

    /// Makes the user's file paths absolute, so saved configs name the same files from any
    /// working directory.
    pub fn absolutize(&mut self) {
        for file in [&mut self.train_file, &mut self.val_file] {
            *file = file.take().map(|p| std::path::absolute(&p).unwrap_or(p));
        }
    }

    /// The command-line options that select this source (`--caption-language ko
    /// --captions-train <file>`), empty for the default: for messages that tell a user how to
    /// make a matching run.
    pub fn options(&self) -> String {
        let mut options = Vec::new();
        if !self.language.is_english() {
            options.push(format!("--caption-language {}", self.language.code()));
        }
        for (flag, file) in [
            ("--captions-train", &self.train_file),
            ("--captions-val", &self.val_file),
        ] {
            if let Some(file) = file {
                options.push(format!("{flag} {}", file.display()));
            }
        }
        options.join(" ")
    }
}
