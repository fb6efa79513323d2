//! The one way vislang opens an image file: by its content, not its name, and only whole.
//!
//! MSCOCO holds PNGs stored under `.jpg` names, so the format is sniffed from the first bytes.
//! The JPEG decoder is lenient by design (it fills what a truncated file lacks with grey, as
//! browsers do); training on that grey is a silently wrong result, so a JPEG must carry its
//! end-of-image marker after its last scan. PNG's decoder already fails on a cut-off stream.

use std::path::Path;

use image::{DynamicImage, ImageFormat};

/// Decodes the image at `path`, whatever its extension. The error says why, without the path
/// (callers name the file and the dataset entry).
pub fn open_image(path: &Path) -> Result<DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let format = image::guess_format(&bytes)
        .map_err(|_| "not an image (unrecognised content; JPEG and PNG are supported)")?;
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(&bytes)?;
    }
    image::load_from_memory_with_format(&bytes, format).map_err(|e| e.to_string())
}

/// A JPEG is complete when an end-of-image marker (`FF D9`) follows its last start-of-scan
/// marker (`FF DA`). Inside entropy-coded data `FF` is always followed by `00` or a restart
/// marker, so neither marker can appear there by accident; an EXIF thumbnail's markers come
/// before the main image's scans.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    let marker_at = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    let last_scan = marker_at(0xDA).ok_or("JPEG has no image data (no start-of-scan marker)")?;
    match marker_at(0xD9) {
        Some(end) if end > last_scan => Ok(()),
        _ => Err(format!(
            "truncated JPEG: the file ends ({} bytes) before its end-of-image marker",
            bytes.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_bytes() -> Vec<u8> {
        let mut rgb = image::RgbImage::new(64, 48);
        for (x, y, p) in rgb.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8]);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        rgb.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_whole_jpeg_opens_and_a_truncated_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("vislang-image-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = jpeg_bytes();
        let whole = dir.join("whole.jpg");
        std::fs::write(&whole, &bytes).unwrap();
        assert_eq!(open_image(&whole).unwrap().width(), 64);
        // With bytes after the end marker (some cameras pad files) it is still whole.
        let padded = dir.join("padded.jpg");
        std::fs::write(&padded, [bytes.as_slice(), &[0u8; 16]].concat()).unwrap();
        assert!(open_image(&padded).is_ok());
        // The lenient decoder alone accepts this file; we must not.
        let cut = dir.join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        assert!(
            image::open(&cut).is_ok(),
            "premise: the decoder fills the rest"
        );
        let error = open_image(&cut).unwrap_err();
        assert!(error.contains("truncated JPEG"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_png_under_a_jpg_name_opens_by_content() {
        let dir = std::env::temp_dir().join(format!("vislang-image-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("really-a-png.jpg");
        image::RgbImage::new(8, 6)
            .save_with_format(&path, ImageFormat::Png)
            .unwrap();
        assert!(
            image::open(&path).is_err(),
            "premise: opening by extension fails"
        );
        assert_eq!(open_image(&path).unwrap().height(), 6);
        let junk = dir.join("junk.jpg");
        std::fs::write(&junk, b"not an image at all").unwrap();
        assert!(open_image(&junk).unwrap_err().contains("not an image"));
        let whole = std::fs::read(&path).unwrap();
        let cut = dir.join("cut.png");
        std::fs::write(&cut, &whole[..whole.len() - 20]).unwrap();
        assert!(open_image(&cut).is_err(), "a cut-off PNG must not decode");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
