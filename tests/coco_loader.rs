//! The COCO loader and image cache on the committed fixture (`tests/fixtures/coco-mini`), and
//! the errors for bad input.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use vislang::data::{BadEntryPolicy, CocoDataset, CocoSplit, DataError, ImageCache, SkipReport};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco-mini")
}

/// A writable copy of the fixture.
fn copy_fixture() -> common::TempDir {
    let dir = common::tempdir();
    copy_dir(&fixture(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The fixture's (or a copy's) training split, strictly loaded.
fn train_split(root: &Path) -> CocoDataset {
    CocoDataset::load(root, CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap()
}

/// `dataset`'s 16 px image cache in `cache_dir`.
fn cache_16px(
    dataset: &CocoDataset,
    cache_dir: &Path,
    policy: BadEntryPolicy,
) -> Result<(ImageCache, SkipReport), DataError> {
    ImageCache::open_or_build(dataset, 16, cache_dir, policy, false)
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn loads_the_official_layout_with_crowds_empty_images_and_several_captions() {
    let train = CocoDataset::load(&fixture(), CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    assert_eq!(train.categories.len(), 80);
    assert_eq!(train.categories[0].name, "person");
    assert_eq!(train.categories[79].id, 90);
    let ids: Vec<u64> = train.images.iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![9, 25, 30]);

    let man_and_dog = &train.images[0];
    assert_eq!(man_and_dog.captions.len(), 5);
    assert_eq!(man_and_dog.captions[2], "A dog next to a man."); // trimmed
    let labels = man_and_dog.multi_hot(80);
    assert_eq!(labels.iter().sum::<f32>(), 2.0); // two people count once
    assert_eq!(labels[0], 1.0); // person (id 1)
    assert_eq!(labels[16], 1.0); // dog (id 18) is the 17th category

    // The crowd annotation (RLE segmentation) still labels its category.
    let toothbrushes = &train.images[1];
    assert!(toothbrushes.objects[0].is_crowd);
    assert_eq!(toothbrushes.multi_hot(80)[79], 1.0);

    // An image with no instances is kept, with no labels.
    assert!(train.images[2].objects.is_empty());
    assert_eq!(train.images[2].multi_hot(80).iter().sum::<f32>(), 0.0);

    let val = CocoDataset::load(&fixture(), CocoSplit::Val2014, BadEntryPolicy::Fail).unwrap();
    assert_eq!(val.images.len(), 1);
    assert_eq!(val.categories, train.categories);
}

#[test]
fn image_cache_decodes_grayscale_and_non_square_images_and_is_reused() {
    let dataset =
        CocoDataset::load(&fixture(), CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    let cache_dir = common::tempdir();
    let (cache, skipped) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail).unwrap();
    assert!(skipped.is_empty());
    assert_eq!(cache.len(), 3);
    // Grayscale becomes three equal channels.
    let gray = cache.get(25).unwrap();
    assert_eq!(gray.len(), 16 * 16 * 3);
    assert!(gray.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    // The 40x30 gradient is resized to 21x16 and centre-cropped: red increases left to right.
    let rgb = cache.get(9).unwrap();
    assert!(rgb[3 * 15] > rgb[0] + 100, "{} vs {}", rgb[3 * 15], rgb[0]);

    // A second open maps the same file instead of rebuilding it.
    let built = fs::metadata(cache.path()).unwrap().modified().unwrap();
    let (again, _) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail).unwrap();
    assert_eq!(again.path(), cache.path());
    assert_eq!(
        fs::metadata(again.path()).unwrap().modified().unwrap(),
        built
    );
    assert_eq!(again.get(9).unwrap(), rgb);
    assert_eq!(
        fs::read_dir(cache_dir.path()).unwrap().count(),
        1,
        "no temporary files left"
    );
    // The same data spelled another way (here with `dir/../dir`) is the same cache: at COCO
    // scale each copy is 12.5 GB.
    let fixture = fixture();
    let respelled = fixture.join("../").join(fixture.file_name().unwrap());
    let dataset =
        CocoDataset::load(&respelled, CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    let (respelled, _) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail).unwrap();
    assert_eq!(respelled.path(), cache.path());
}

#[test]
fn a_cache_that_cannot_be_written_says_write_not_read() {
    let dataset =
        CocoDataset::load(&fixture(), CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    let dir = common::tempdir();
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, b"").unwrap();
    let error = ImageCache::open_or_build(
        &dataset,
        16,
        &not_a_dir.join("cache"),
        BadEntryPolicy::Fail,
        false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.starts_with("cannot write") && error.contains("file/cache"),
        "{error}"
    );
}

#[test]
fn changed_image_files_get_a_fresh_cache() {
    let root = copy_fixture();
    let dataset = train_split(root.path());
    let cache_dir = common::tempdir();
    let (first, _) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail).unwrap();
    let first_path = first.path().to_path_buf();
    let image = root
        .path()
        .join("train2014/COCO_train2014_000000000030.jpg");
    image::RgbImage::from_fn(24, 30, |_, _| image::Rgb([10, 10, 200]))
        .save(&image)
        .unwrap();
    let (second, _) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail).unwrap();
    assert_ne!(second.path(), first_path);
    assert!(second.get(30).unwrap()[2] > 150);
}

fn load_error(root: &Path) -> String {
    match CocoDataset::load(root, CocoSplit::Train2014, BadEntryPolicy::Fail) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_json_names_the_file_and_position() {
    let root = copy_fixture();
    let path = root.path().join("annotations/captions_train2014.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    let message = load_error(root.path());
    assert!(message.contains("malformed JSON"), "{message}");
    assert!(message.contains("captions_train2014.json"), "{message}");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn a_missing_annotation_file_is_named() {
    let root = copy_fixture();
    fs::remove_file(root.path().join("annotations/instances_train2014.json")).unwrap();
    let message = load_error(root.path());
    assert!(message.contains("instances_train2014.json"), "{message}");
}

#[test]
fn unknown_category_names_the_annotation() {
    let root = copy_fixture();
    edit(
        &root.path().join("annotations/instances_train2014.json"),
        "\"category_id\": 18",
        "\"category_id\": 999",
    );
    let message = load_error(root.path());
    assert!(message.contains("annotation 102"), "{message}");
    assert!(message.contains("category_id 999"), "{message}");
    assert!(message.contains("instances_train2014.json"), "{message}");
}

#[test]
fn empty_caption_names_the_annotation() {
    let root = copy_fixture();
    edit(
        &root.path().join("annotations/captions_train2014.json"),
        "Nothing but green.",
        "   ",
    );
    let message = load_error(root.path());
    assert!(message.contains("caption annotation 209"), "{message}");
    assert!(message.contains("image 30"), "{message}");
    assert!(message.contains("is empty"), "{message}");
}

#[test]
fn missing_and_corrupt_images_name_the_file_and_image() {
    let root = copy_fixture();
    fs::remove_file(
        root.path()
            .join("train2014/COCO_train2014_000000000009.jpg"),
    )
    .unwrap();
    fs::write(
        root.path()
            .join("train2014/COCO_train2014_000000000025.jpg"),
        b"not a jpeg",
    )
    .unwrap();
    let dataset = train_split(root.path());
    let cache_dir = common::tempdir();
    let error = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail)
        .err()
        .expect("missing image is an error");
    assert!(
        matches!(error, DataError::MissingImage { image_id: 9, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("COCO_train2014_000000000009.jpg"),
        "{error}"
    );
    assert_eq!(
        fs::read_dir(cache_dir.path()).unwrap().count(),
        0,
        "no half-written cache"
    );

    // Skipping: both bad images are counted, the good one is cached.
    let (cache, skipped) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Skip).unwrap();
    assert_eq!(cache.len(), 1);
    assert!(cache.contains(30));
    let kinds: Vec<&str> = skipped.skipped.iter().map(DataError::kind).collect();
    assert_eq!(kinds, vec!["missing image file", "corrupt image file"]);
    assert!(
        skipped.skipped[1].to_string().contains("image 25"),
        "{}",
        skipped.skipped[1]
    );
    // Reopening under the strict policy still reports the bad image recorded in the cache.
    assert!(cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail).is_err());
}

#[test]
fn skip_policy_counts_bad_annotations_instead_of_failing() {
    let root = copy_fixture();
    let instances = root.path().join("annotations/instances_train2014.json");
    let captions = root.path().join("annotations/captions_train2014.json");
    edit(&instances, "\"category_id\": 18", "\"category_id\": 999");
    edit(&captions, "Nothing but green.", "");
    // Caption annotation 206 now points at an image that does not exist.
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&captions).unwrap()).unwrap();
    json["annotations"][5]["image_id"] = 77.into();
    assert_eq!(json["annotations"][5]["id"], 206);
    fs::write(&captions, serde_json::to_vec(&json).unwrap()).unwrap();
    let dataset =
        CocoDataset::load(root.path(), CocoSplit::Train2014, BadEntryPolicy::Skip).unwrap();
    assert_eq!(dataset.skipped.skipped.len(), 3);
    let summary = dataset.skipped.summary().join("\n");
    assert!(summary.contains("1 x unknown category id"), "{summary}");
    assert!(summary.contains("1 x empty caption"), "{summary}");
    assert!(
        summary.contains("1 x annotation of unknown image"),
        "{summary}"
    );
    // The dog annotation is gone, the person remains.
    assert_eq!(dataset.images[0].multi_hot(80).iter().sum::<f32>(), 1.0);
    assert_eq!(dataset.images[2].captions.len(), 2);
}

/// Cuts a JPEG halfway through its compressed scan, as an interrupted download does.
fn truncate_jpeg(path: &Path) {
    let bytes = fs::read(path).unwrap();
    let scan = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    fs::write(path, &bytes[..(scan + bytes.len()) / 2]).unwrap();
}

#[test]
fn a_truncated_jpeg_is_refused_or_skipped_never_trained_on_as_grey() {
    let root = copy_fixture();
    let path = root
        .path()
        .join("train2014/COCO_train2014_000000000030.jpg");
    truncate_jpeg(&path);
    let dataset = train_split(root.path());
    let cache_dir = common::tempdir();
    let error = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Fail)
        .err()
        .expect("a truncated JPEG is an error");
    let message = error.to_string();
    assert!(
        matches!(error, DataError::CorruptImage { image_id: 30, .. })
            && message.contains("truncated JPEG")
            && message.contains("COCO_train2014_000000000030.jpg"),
        "{message}"
    );
    let (cache, skipped) = cache_16px(&dataset, cache_dir.path(), BadEntryPolicy::Skip).unwrap();
    assert!(!cache.contains(30) && cache.len() == 2);
    assert_eq!(skipped.skipped.len(), 1);
}

#[test]
fn duplicate_ids_are_named_and_uncaptioned_images_dropped_only_where_captions_are_read() {
    let root = copy_fixture();
    let captions = root.path().join("annotations/captions_train2014.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&captions).unwrap()).unwrap();
    // Annotation 201 listed twice (a merged file); image 30 loses its three captions.
    let repeated = json["annotations"][0].clone();
    let annotations = json["annotations"].as_array_mut().unwrap();
    annotations.push(repeated);
    annotations.retain(|a| a["image_id"] != 30);
    fs::write(&captions, serde_json::to_vec(&json).unwrap()).unwrap();

    let error = CocoDataset::load(root.path(), CocoSplit::Train2014, BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("annotation id 201 appears more than once"),
        "{error}"
    );
    let mut dataset =
        CocoDataset::load(root.path(), CocoSplit::Train2014, BadEntryPolicy::Skip).unwrap();
    assert_eq!(dataset.images[0].captions.len(), 5, "kept once");
    // Loading keeps the uncaptioned image (the VQ-VAE and box features use it) ...
    assert_eq!(dataset.images.len(), 3);
    // ... and the caption readers drop it, named or counted.
    let error = dataset
        .drop_uncaptioned(BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("image 30") && error.contains("no captions"),
        "{error}"
    );
    dataset.drop_uncaptioned(BadEntryPolicy::Skip).unwrap();
    assert_eq!(dataset.images.len(), 2);
    let summary = dataset.skipped.summary().join("\n");
    assert!(
        summary.contains("1 x duplicate annotation id")
            && summary.contains("1 x image without captions"),
        "{summary}"
    );

    // An image id listed twice is named as such, not as "has no captions".
    fs::copy(
        fixture().join("annotations/captions_train2014.json"),
        &captions,
    )
    .unwrap();
    let instances = root.path().join("annotations/instances_train2014.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&instances).unwrap()).unwrap();
    assert_eq!(json["images"][1]["id"], 25);
    json["images"][1]["id"] = 9.into();
    fs::write(&instances, serde_json::to_vec(&json).unwrap()).unwrap();
    let error = CocoDataset::load(root.path(), CocoSplit::Train2014, BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("image id 9 is listed twice")
            && error.contains("COCO_train2014_000000000025.jpg"),
        "{error}"
    );
}

#[test]
fn box_features_open_images_by_content_like_the_image_cache() {
    // MSCOCO has PNGs under .jpg names; `lxmert-features boxes` used to open by extension.
    let root = copy_fixture();
    let path = root
        .path()
        .join("train2014/COCO_train2014_000000000025.jpg");
    let decoded = image::open(&path).unwrap();
    decoded
        .save_with_format(&path, image::ImageFormat::Png)
        .unwrap();
    let out = root.path().join("boxes.tsv");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lxmert-features"))
        .args(["boxes", "--coco-root"])
        .arg(root.path())
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), 4);

    // A truncated JPEG is refused there too, naming the file.
    let path = root
        .path()
        .join("train2014/COCO_train2014_000000000030.jpg");
    truncate_jpeg(&path);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lxmert-features"))
        .args(["boxes", "--coco-root"])
        .arg(root.path())
        .arg("--output")
        .arg(root.path().join("again.tsv"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("truncated JPEG")
            && stderr.contains("COCO_train2014_000000000030.jpg")
            && !root.path().join("again.tsv").exists(),
        "{stderr}"
    );
}
