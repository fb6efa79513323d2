//! PNGs of images: single images, and grids whose rows are labelled (inputs above their
//! reconstructions, samples under their caption).

use std::path::Path;

use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};

use crate::io::checkpoint::{write_atomic, CheckpointError};
use crate::io::font::{ensure_font, family_for};

/// White space between grid cells, in output pixels.
const GAP: u32 = 2;

fn encode_png(path: &Path, image: &RgbImage) -> Result<(), CheckpointError> {
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    write_atomic(path, &png)
}

fn rgb(pixels: &[u8], size: usize) -> RgbImage {
    RgbImage::from_raw(size as u32, size as u32, pixels.to_vec())
        .expect("pixels hold size * size * 3 bytes")
}

/// Writes one `size x size` RGB image (`[row, col, channel]` bytes), scaled up `scale` times.
pub fn write_png(
    path: &Path,
    pixels: &[u8],
    size: usize,
    scale: u32,
) -> Result<(), CheckpointError> {
    let image = rgb(pixels, size);
    let side = size as u32 * scale;
    encode_png(
        path,
        &image::imageops::resize(&image, side, side, FilterType::Nearest),
    )
}

/// One row of a grid: the images and the label written above them (a caption, "input",
/// "reconstruction"), so a grid read on its own says what it shows.
pub struct GridRow {
    pub label: String,
    /// `size x size` RGB images, `[row, col, channel]` bytes each.
    pub images: Vec<Vec<u8>>,
}

impl GridRow {
    pub fn new(label: impl Into<String>, images: Vec<Vec<u8>>) -> Self {
        Self {
            label: label.into(),
            images,
        }
    }
}

/// Height of the strip above each row that holds its label, in output pixels.
const LABEL_HEIGHT: u32 = 18;
const LABEL_FONT_SIZE: u32 = 13;

/// Writes a grid of `rows`, each under its label; images are drawn scaled up `scale` times
/// (nearest neighbour, so pixels stay visible) with white gaps. A label wider than the grid is
/// cut and ends in "...".
pub fn write_image_grid(
    path: &Path,
    rows: &[GridRow],
    size: usize,
    scale: u32,
) -> Result<(), CheckpointError> {
    let cell = size as u32 * scale;
    let n_cols = rows.iter().map(|row| row.images.len()).max().unwrap_or(0) as u32;
    let width = (n_cols * (cell + GAP) + GAP).max(1);
    let row_height = LABEL_HEIGHT + cell + GAP;
    let height = (rows.len() as u32 * row_height + GAP).max(1);
    let mut grid = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, pixels) in row.images.iter().enumerate() {
            let scaled =
                image::imageops::resize(&rgb(pixels, size), cell, cell, FilterType::Nearest);
            let x = GAP + c as u32 * (cell + GAP);
            let y = GAP + r as u32 * row_height + LABEL_HEIGHT;
            image::imageops::replace(&mut grid, &scaled, x as i64, y as i64);
        }
    }
    let labels: Vec<(&str, u32)> = rows
        .iter()
        .enumerate()
        .map(|(r, row)| (row.label.as_str(), GAP + r as u32 * row_height))
        .collect();
    let grid = write_labels(grid, &labels).map_err(|message| CheckpointError::Format {
        path: path.to_path_buf(),
        message: format!("cannot draw the grid's labels: {message}"),
    })?;
    encode_png(path, &grid)
}

/// Writes each `(text, top)` label at the left edge of the grid, `top` pixels from its top.
fn write_labels(grid: RgbImage, labels: &[(&str, u32)]) -> Result<RgbImage, String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    ensure_font();
    let (width, height) = grid.dimensions();
    let mut buffer = grid.into_raw();
    {
        let area = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let room = width.saturating_sub(2 * GAP);
        for &(text, top) in labels {
            let style = TextStyle::from((family_for(text), LABEL_FONT_SIZE).into_font())
                .color(&RGBColor(30, 30, 30))
                .pos(Pos::new(HPos::Left, VPos::Top));
            let fitted = fit_text(text, room, |t| {
                area.estimate_text_size(t, &style)
                    .map(|(w, _)| w)
                    .unwrap_or(u32::MAX)
            });
            area.draw_text(&fitted, &style, (GAP as i32, top as i32 + 2))
                .map_err(|e| e.to_string())?;
        }
        area.present().map_err(|e| e.to_string())?;
    }
    Ok(RgbImage::from_raw(width, height, buffer).expect("the buffer keeps its size"))
}

/// `text` if it is at most `room` wide, else its longest prefix that fits with "..." added.
fn fit_text(text: &str, room: u32, width_of: impl Fn(&str) -> u32) -> String {
    if width_of(text) <= room {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .rev()
        .map(|n| format!("{}...", chars[..n].iter().collect::<String>().trim_end()))
        .find(|candidate| width_of(candidate) <= room)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_label_is_cut_to_the_room_with_an_ellipsis() {
        let width = |t: &str| 7 * t.chars().count() as u32;
        assert_eq!(fit_text("a cup", 100, width), "a cup");
        let cut = fit_text("a picture of a cat and a cup and a clock.", 100, width);
        assert!(cut.ends_with("...") && width(&cut) <= 100, "{cut}");
        assert!("a picture of a cat and a cup".starts_with(cut.trim_end_matches("...")));
    }

    /// The label strip of a one-row grid labelled `label`, as RGB bytes.
    fn label_strip(label: &str, name: &str) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("vislang-grid-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.png");
        let rows = [GridRow::new(label, vec![vec![128u8; 4 * 4 * 3]; 8])];
        write_image_grid(&path, &rows, 4, 8).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_dir_all(&dir).unwrap();
        image::imageops::crop_imm(&image, 0, GAP, image.width(), LABEL_HEIGHT)
            .to_image()
            .into_raw()
    }

    #[test]
    fn hangul_labels_are_drawn_as_their_own_glyphs() {
        // Without Hangul glyphs, every syllable is the same empty box (or nothing), so two
        // captions with the same number of syllables would draw the same strip.
        let dark = |strip: &[u8]| strip.chunks(3).filter(|p| p[0] < 160).count();
        let cat = label_strip("고양이와 개가 있는 그림.", "cat");
        let car = label_strip("자동차와 컵이 있는 그림.", "car");
        assert!(
            dark(&cat) > 50,
            "the Hangul label drew {} dark pixels",
            dark(&cat)
        );
        assert_ne!(
            cat, car,
            "two Hangul captions of the same length drew the same label"
        );
        assert_ne!(
            label_strip("새", "bird"),
            label_strip("개", "dog"),
            "새 and 개 drew the same glyph"
        );
    }

    #[test]
    fn labels_are_drawn_above_their_rows() {
        let dir = std::env::temp_dir().join(format!("vislang-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grid.png");
        let grey = vec![128u8; 4 * 4 * 3];
        let rows = [
            GridRow::new("input", vec![grey.clone(); 3]),
            GridRow::new("", vec![grey; 3]),
        ];
        write_image_grid(&path, &rows, 4, 8).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_dir_all(&dir).unwrap();
        let dark_in_strip = |top: u32| {
            (top..top + LABEL_HEIGHT)
                .flat_map(|y| (0..image.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| image.get_pixel(x, y)[0] < 100)
                .count()
        };
        let row_height = LABEL_HEIGHT + 32 + GAP;
        assert!(
            dark_in_strip(GAP) > 10,
            "the first row's label was not drawn"
        );
        assert_eq!(
            dark_in_strip(GAP + row_height),
            0,
            "an empty label drew ink"
        );
        assert_eq!(image.height(), 2 * row_height + GAP);
    }
}
