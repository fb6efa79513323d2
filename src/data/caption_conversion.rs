//! Converting a published caption translation into COCO's caption schema, which
//! `--captions-train` / `--captions-val` read.
//!
//! The layout handled is AI Hub's Korean MSCOCO captions (`MSCOCO_train_val_Korean.json`, from
//! the Korean "image description" dataset at aihub.or.kr): one JSON list over both splits,
//!
//! ```json
//! [{"file_path": "val2014/COCO_val2014_000000391895.jpg", "id": 391895,
//!   "captions": ["A man with a red helmet ...", ...], "caption_ko": ["빨간 헬멧을 쓴 ...", ...]}]
//! ```
//!
//! The split comes from `file_path`; each image's `images` entry (size, file name) is copied
//! from the official captions file of that split, so the output passes the loader's checks
//! against the instances file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use super::coco::read_json;
use super::{CocoSplit, DataError};

#[derive(Deserialize)]
struct AiHubEntry {
    file_path: String,
    id: u64,
    caption_ko: Vec<String>,
}

#[derive(Deserialize)]
struct OfficialCaptions {
    images: Vec<serde_json::Value>,
}

/// What [`convert_aihub_korean`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionConversion {
    /// `(split, file, images, captions)` for each file written.
    pub written: Vec<(CocoSplit, PathBuf, usize, usize)>,
    /// Entries left out as bad (only with `skip_bad`), each with its reason.
    pub skipped: Vec<String>,
}

/// Converts AI Hub's Korean MSCOCO file `input` into `captions_train2014.json` and
/// `captions_val2014.json` under `out_dir`, taking each image's entry from the official caption
/// files under `coco_root`. Every entry is checked first (its split, its id and file name
/// against the official files, non-empty captions); a bad one is an error naming the input file
/// and entry, or is skipped and reported with `skip_bad`. Nothing is written until all entries
/// are read, and existing files are never overwritten.
pub fn convert_aihub_korean(
    input: &Path,
    coco_root: &Path,
    out_dir: &Path,
    skip_bad: bool,
) -> Result<CaptionConversion, DataError> {
    let splits = [CocoSplit::Train2014, CocoSplit::Val2014];
    let outputs: Vec<PathBuf> = splits
        .iter()
        .map(|split| out_dir.join(format!("captions_{}.json", split.name())))
        .collect();
    for output in &outputs {
        if output.exists() {
            return Err(DataError::Invalid {
                path: output.clone(),
                message: "exists already; choose another --out (converted files are never \
                          overwritten)"
                    .into(),
            });
        }
    }
    let entries: Vec<AiHubEntry> = read_json(input)?;
    // Official image entries by id, per split.
    let mut official: Vec<HashMap<u64, serde_json::Value>> = Vec::new();
    for split in splits {
        let path = split.captions_path(coco_root);
        let file: OfficialCaptions = read_json(&path)?;
        let by_id = file
            .images
            .into_iter()
            .filter_map(|image| Some((image.get("id")?.as_u64()?, image)))
            .collect();
        official.push(by_id);
    }

    let mut images: [Vec<serde_json::Value>; 2] = Default::default();
    let mut captions: [Vec<serde_json::Value>; 2] = Default::default();
    let mut skipped = Vec::new();
    let mut next_id = 1u64;
    for (index, entry) in entries.iter().enumerate() {
        let checked = check_entry(entry, &official).map_err(|message| {
            format!(
                "entry {index} (id {}, {}): {message}",
                entry.id, entry.file_path
            )
        });
        let (split, image) = match checked {
            Ok(found) => found,
            Err(message) if skip_bad => {
                skipped.push(message);
                continue;
            }
            Err(message) => {
                return Err(DataError::Invalid {
                    path: input.to_path_buf(),
                    message: format!("{message} (--skip-bad leaves such entries out)"),
                })
            }
        };
        images[split].push(image.clone());
        for caption in &entry.caption_ko {
            captions[split].push(json!({
                "image_id": entry.id, "id": next_id, "caption": caption.trim(),
            }));
            next_id += 1;
        }
    }

    std::fs::create_dir_all(out_dir).map_err(|source| DataError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (s, split) in splits.iter().enumerate() {
        let file = json!({
            "info": {"description": format!("Korean captions converted from {}", input.display())},
            "licenses": [],
            "images": images[s],
            "annotations": captions[s],
        });
        crate::io::checkpoint::write_atomic(
            &outputs[s],
            &serde_json::to_vec(&file).expect("json serialises"),
        )
        .map_err(|e| DataError::Invalid {
            path: outputs[s].clone(),
            message: e.to_string(),
        })?;
        written.push((
            *split,
            outputs[s].clone(),
            images[s].len(),
            captions[s].len(),
        ));
    }
    Ok(CaptionConversion { written, skipped })
}

/// The split index and the official `images` entry of `entry`, or why it is bad.
fn check_entry<'a>(
    entry: &AiHubEntry,
    official: &'a [HashMap<u64, serde_json::Value>],
) -> Result<(usize, &'a serde_json::Value), String> {
    let (folder, file_name) = entry
        .file_path
        .rsplit_once('/')
        .ok_or("`file_path` is not `<split>/<file>`")?;
    let split = match folder.rsplit('/').next() {
        Some("train2014") => 0,
        Some("val2014") => 1,
        _ => {
            return Err(format!(
                "folder {folder:?} is neither train2014 nor val2014"
            ))
        }
    };
    let image = official[split].get(&entry.id).ok_or_else(|| {
        format!(
            "image id {} is not in the official {folder} captions file",
            entry.id
        )
    })?;
    let official_name = image.get("file_name").and_then(|n| n.as_str());
    if official_name != Some(file_name) {
        return Err(format!(
            "the official file lists image {} as {:?}, not {file_name:?}",
            entry.id,
            official_name.unwrap_or("?")
        ));
    }
    if entry.caption_ko.is_empty() {
        return Err("`caption_ko` is empty".into());
    }
    if let Some(k) = entry.caption_ko.iter().position(|c| c.trim().is_empty()) {
        return Err(format!("caption_ko[{k}] is empty"));
    }
    Ok((split, image))
}
