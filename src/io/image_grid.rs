//! PNGs of images: single images and grids (inputs above their reconstructions, samples).

use std::path::Path;

use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};

use crate::io::checkpoint::{write_atomic, CheckpointError};

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

/// Writes a grid: `rows[r][c]` is a `size x size` RGB image, drawn scaled up `scale` times
/// (nearest neighbour, so pixels stay visible) with white gaps.
pub fn write_image_grid(
    path: &Path,
    rows: &[Vec<Vec<u8>>],
    size: usize,
    scale: u32,
) -> Result<(), CheckpointError> {
    let cell = size as u32 * scale;
    let n_cols = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let width = n_cols * (cell + GAP) + GAP;
    let height = rows.len() as u32 * (cell + GAP) + GAP;
    let mut grid = RgbImage::from_pixel(width.max(1), height.max(1), image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, pixels) in row.iter().enumerate() {
            let scaled =
                image::imageops::resize(&rgb(pixels, size), cell, cell, FilterType::Nearest);
            let (x, y) = (GAP + c as u32 * (cell + GAP), GAP + r as u32 * (cell + GAP));
            image::imageops::replace(&mut grid, &scaled, x as i64, y as i64);
        }
    }
    encode_png(path, &grid)
}
