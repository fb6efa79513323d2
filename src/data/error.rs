//! Errors from reading datasets, each naming the file and the entry at fault.

use std::path::PathBuf;

/// A problem with the dataset on disk. Every variant names the file, and the entry where there
/// is one, so the user can find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: annotation {annotation_id} (image {image_id}) has category_id {category_id}, which is not in the file's `categories` list")]
    UnknownCategory {
        path: PathBuf,
        annotation_id: u64,
        image_id: u64,
        category_id: u64,
    },
    #[error("{path}: annotation {annotation_id} refers to image_id {image_id}, which is not in the file's `images` list")]
    UnknownImage {
        path: PathBuf,
        annotation_id: u64,
        image_id: u64,
    },
    #[error("{path}: caption annotation {annotation_id} of image {image_id} is empty")]
    EmptyCaption {
        path: PathBuf,
        annotation_id: u64,
        image_id: u64,
    },
    #[error("{path}: image id {image_id} is listed twice in `images` ({first} and {second})")]
    DuplicateImage {
        path: PathBuf,
        image_id: u64,
        first: String,
        second: String,
    },
    #[error("{path}: annotation id {annotation_id} appears more than once (COCO keys annotations by id)")]
    DuplicateAnnotation { path: PathBuf, annotation_id: u64 },
    #[error("{path}: image {image_id} ({file_name}) has no captions")]
    NoCaptions {
        path: PathBuf,
        image_id: u64,
        file_name: String,
    },
    #[error("image {image_id}: file {path} is missing")]
    MissingImage { path: PathBuf, image_id: u64 },
    #[error("image {image_id}: cannot decode {path}: {reason}")]
    CorruptImage {
        path: PathBuf,
        image_id: u64,
        reason: String,
    },
    #[error("{path}: question {question_id}: {message}")]
    BadQuestion {
        path: PathBuf,
        question_id: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl DataError {
    /// A short name of the kind of problem, for skip summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            DataError::Io { .. } => "unreadable file",
            DataError::Write { .. } => "unwritable file",
            DataError::Json { .. } => "malformed JSON",
            DataError::UnknownCategory { .. } => "unknown category id",
            DataError::UnknownImage { .. } => "annotation of unknown image",
            DataError::EmptyCaption { .. } => "empty caption",
            DataError::NoCaptions { .. } => "image without captions",
            DataError::DuplicateImage { .. } => "duplicate image id",
            DataError::DuplicateAnnotation { .. } => "duplicate annotation id",
            DataError::MissingImage { .. } => "missing image file",
            DataError::CorruptImage { .. } => "corrupt image file",
            DataError::BadQuestion { .. } => "bad question entry",
            DataError::Invalid { .. } => "invalid dataset",
        }
    }

    /// Whether this error concerns one entry that may be skipped, rather than a whole file.
    pub fn is_skippable(&self) -> bool {
        !matches!(
            self,
            DataError::Io { .. }
                | DataError::Write { .. }
                | DataError::Json { .. }
                | DataError::Invalid { .. }
        )
    }
}

/// What to do with a bad entry (an annotation or an image file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadEntryPolicy {
    /// Stop with an error naming the file and the entry.
    #[default]
    Fail,
    /// Leave the entry out and count it in a [`SkipReport`].
    Skip,
}

impl BadEntryPolicy {
    /// `Skip` when `skip_bad` (the `--skip-bad` flag), else `Fail`.
    pub fn skipping(skip_bad: bool) -> Self {
        if skip_bad {
            Self::Skip
        } else {
            Self::Fail
        }
    }
}

/// The entries left out under [`BadEntryPolicy::Skip`].
#[derive(Debug, Default)]
pub struct SkipReport {
    pub skipped: Vec<DataError>,
}

impl SkipReport {
    /// Applies the policy to one bad entry: records it, or returns it as the error.
    pub fn handle(&mut self, policy: BadEntryPolicy, error: DataError) -> Result<(), DataError> {
        match policy {
            BadEntryPolicy::Skip if error.is_skippable() => {
                self.skipped.push(error);
                Ok(())
            }
            _ => Err(error),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty()
    }

    pub fn merge(&mut self, other: SkipReport) {
        self.skipped.extend(other.skipped);
    }

    /// One line per kind: `"3 empty caption (first: ...)"`.
    pub fn summary(&self) -> Vec<String> {
        let mut kinds: Vec<&'static str> = self.skipped.iter().map(DataError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
            .into_iter()
            .map(|kind| {
                let mut of_kind = self.skipped.iter().filter(|e| e.kind() == kind);
                let first = of_kind.next().expect("kind came from the list");
                format!("{} x {kind} (first: {first})", 1 + of_kind.count())
            })
            .collect()
    }
}
