//! Writes `tests/fixtures/coco-mini`, the small COCO-format fixture the loader tests read.
//!
//! It mirrors what the official files contain: the 80 categories with their non-contiguous ids,
//! a crowd annotation with an RLE segmentation, an image with no instances, a grayscale JPEG,
//! non-square images, and several captions per image. Run from the repository root:
//! `cargo run --example make_coco_fixture`. The output is deterministic.

use std::fs;
use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};
use serde_json::json;
use vislang::data::categories::COCO_CATEGORIES;

fn main() {
    let root = Path::new("tests/fixtures/coco-mini");
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root.join("annotations")).unwrap();
    let categories: Vec<_> = COCO_CATEGORIES
        .iter()
        .map(|(id, name, sup)| json!({"supercategory": sup, "id": id, "name": name}))
        .collect();
    let info = json!({"description": "vislang test fixture", "year": 2014});

    // train2014
    let dir = root.join("train2014");
    fs::create_dir_all(&dir).unwrap();
    let rgb = RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 128]));
    rgb.save(dir.join("COCO_train2014_000000000009.jpg"))
        .unwrap();
    let gray = GrayImage::from_fn(32, 48, |x, y| Luma([((x + y) * 3) as u8]));
    gray.save(dir.join("COCO_train2014_000000000025.jpg"))
        .unwrap();
    let empty = RgbImage::from_fn(24, 24, |_, _| Rgb([90, 160, 40]));
    empty
        .save(dir.join("COCO_train2014_000000000030.jpg"))
        .unwrap();
    let images = json!([
        {"license": 1, "file_name": "COCO_train2014_000000000009.jpg", "height": 30, "width": 40, "id": 9},
        {"license": 1, "file_name": "COCO_train2014_000000000025.jpg", "height": 48, "width": 32, "id": 25},
        {"license": 1, "file_name": "COCO_train2014_000000000030.jpg", "height": 24, "width": 24, "id": 30}
    ]);
    let instances = json!({
        "info": info, "images": images, "licenses": [], "categories": categories,
        "annotations": [
            {"segmentation": [[1.0, 1.0, 10.0, 1.0, 10.0, 10.0]], "area": 40.5, "iscrowd": 0,
             "image_id": 9, "bbox": [1.0, 1.0, 9.0, 9.0], "category_id": 1, "id": 101},
            {"segmentation": [[20.0, 5.0, 30.0, 5.0, 30.0, 20.0]], "area": 75.0, "iscrowd": 0,
             "image_id": 9, "bbox": [20.0, 5.0, 10.0, 15.0], "category_id": 18, "id": 102},
            {"segmentation": [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0]], "area": 18.0, "iscrowd": 0,
             "image_id": 9, "bbox": [2.0, 2.0, 6.0, 6.0], "category_id": 1, "id": 103},
            {"segmentation": {"counts": [0, 12, 20, 12, 1492], "size": [48, 32]}, "area": 24.0,
             "iscrowd": 1, "image_id": 25, "bbox": [0.0, 0.0, 32.0, 20.0], "category_id": 90, "id": 104}
        ]
    });
    let captions = json!({
        "info": info, "images": images, "licenses": [],
        "annotations": [
            {"image_id": 9, "id": 201, "caption": "A man walking a dog."},
            {"image_id": 9, "id": 202, "caption": "A person with his dog in the park"},
            {"image_id": 9, "id": 203, "caption": " A dog next to a man. "},
            {"image_id": 9, "id": 204, "caption": "Someone and a dog outside."},
            {"image_id": 9, "id": 205, "caption": "A dog on a leash."},
            {"image_id": 25, "id": 206, "caption": "A black and white photo of toothbrushes."},
            {"image_id": 25, "id": 207, "caption": "Many toothbrushes in a cup."},
            {"image_id": 30, "id": 208, "caption": "A plain green wall."},
            {"image_id": 30, "id": 209, "caption": "Nothing but green."},
            {"image_id": 30, "id": 210, "caption": "An empty green picture."}
        ]
    });
    write(root, "instances_train2014.json", &instances);
    write(root, "captions_train2014.json", &captions);

    // val2014
    let dir = root.join("val2014");
    fs::create_dir_all(&dir).unwrap();
    let val = RgbImage::from_fn(36, 36, |x, _| Rgb([200, (x * 7) as u8, 30]));
    val.save(dir.join("COCO_val2014_000000000042.jpg")).unwrap();
    let images = json!([{"license": 1, "file_name": "COCO_val2014_000000000042.jpg", "height": 36, "width": 36, "id": 42}]);
    let instances = json!({
        "info": info, "images": images, "licenses": [], "categories": categories,
        "annotations": [{"segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]], "area": 8.0, "iscrowd": 0,
                         "image_id": 42, "bbox": [1.0, 1.0, 4.0, 4.0], "category_id": 3, "id": 301}]
    });
    let captions = json!({
        "info": info, "images": images, "licenses": [],
        "annotations": [{"image_id": 42, "id": 401, "caption": "A red car."}]
    });
    write(root, "instances_val2014.json", &instances);
    write(root, "captions_val2014.json", &captions);
    println!("wrote {}", root.display());
}

fn write(root: &Path, name: &str, value: &serde_json::Value) {
    fs::write(
        root.join("annotations").join(name),
        serde_json::to_string_pretty(value).unwrap(),
    )
    .unwrap();
}
