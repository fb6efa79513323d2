//! NLVR2's JSON-lines files (`train.json`, `dev.json`, `test1.json`): one statement about a
//! pair of images per line, labelled "True" or "False". The images of identifier
//! `dev-850-0-0` are `dev-850-0-img0.png` and `dev-850-0-img1.png`, as in the official release.

use std::path::Path;

use serde::Deserialize;

use super::{bad_question, ImageKey, QaExample, QaSplit};
use crate::data::error::{BadEntryPolicy, DataError, SkipReport};

/// NLVR2's two answers, as the vocabulary holds them.
pub const TRUE: &str = "true";
pub const FALSE: &str = "false";

#[derive(Debug, Deserialize)]
struct Nlvr2Line {
    identifier: String,
    sentence: String,
    #[serde(default)]
    label: Option<String>,
}

/// The two image names of an NLVR2 identifier (`{split}-{set}-{pair}-{sentence}`).
pub fn image_names(identifier: &str) -> Option<[String; 2]> {
    let (pair, sentence) = identifier.rsplit_once('-')?;
    if pair.is_empty() || sentence.is_empty() || !sentence.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some([format!("{pair}-img0"), format!("{pair}-img1")])
}

/// Reads an NLVR2 file. A malformed line, an identifier that names no image pair, an empty
/// statement or a label other than True/False is an error naming the file and line, or skipped.
pub fn read(path: &Path, policy: BadEntryPolicy) -> Result<QaSplit, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut skipped = SkipReport::default();
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("line {}", index + 1);
        let parsed: Nlvr2Line = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(error) => {
                skipped.handle(
                    policy,
                    bad_question(path, &at, format!("malformed JSON: {error}")),
                )?;
                continue;
            }
        };
        let label = match parsed
            .label
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => Ok(None),
            Some(TRUE) => Ok(Some(TRUE)),
            Some(FALSE) => Ok(Some(FALSE)),
            Some(other) => Err(format!("label {other:?} is neither True nor False")),
        };
        let images = image_names(&parsed.identifier);
        let problem = match (&label, &images) {
            (Err(message), _) => Some(message.clone()),
            (_, None) => Some(format!(
                "identifier {:?} does not name an image pair",
                parsed.identifier
            )),
            _ if parsed.sentence.trim().is_empty() => Some("an empty statement".to_string()),
            _ => None,
        };
        if let Some(message) = problem {
            skipped.handle(
                policy,
                bad_question(path, &format!("{at} ({})", parsed.identifier), message),
            )?;
            continue;
        }
        let [left, right] = images.expect("checked above");
        examples.push(QaExample {
            question_id: parsed.identifier,
            images: vec![ImageKey::Named(left), ImageKey::Named(right)],
            question: parsed.sentence,
            answers: label
                .expect("checked above")
                .into_iter()
                .map(String::from)
                .collect(),
            question_type: "nlvr2".to_string(),
            answer_type: "yes/no".to_string(),
        });
    }
    Ok(QaSplit { examples, skipped })
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_name_their_image_pair() {
        assert_eq!(
            super::image_names("dev-850-0-0"),
            Some(["dev-850-0-img0".to_string(), "dev-850-0-img1".to_string()])
        );
        assert_eq!(super::image_names("nonsense"), None);
        assert_eq!(super::image_names("dev-850-0-x"), None);
    }
}
