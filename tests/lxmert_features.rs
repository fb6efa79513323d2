//! LXMERT TSV region features: conversion to the memory-mapped file, reading batches back, and
//! the errors for bad rows and missing images.

use crate::common;

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::Tensor;
use vislang::data::{convert_tsv, tsv_line, RegionFeatureError, RegionFeatures};

type B = Flex;

const D: usize = 3;

/// A row with `n` boxes whose features are `image_id + box/10 + dim/100`.
fn row(img_id: &str, id: u64, n: usize) -> String {
    let boxes: Vec<[f32; 4]> = (0..n)
        .map(|i| [10.0 * i as f32, 5.0, 10.0 * i as f32 + 20.0, 50.0])
        .collect();
    let features: Vec<f32> = (0..n * D)
        .map(|k| id as f32 + (k / D) as f32 / 10.0 + (k % D) as f32 / 100.0)
        .collect();
    let objects: Vec<i64> = (0..n as i64).collect();
    let attributes: Vec<i64> = (0..n as i64).map(|i| 10 + i).collect();
    tsv_line(
        img_id,
        100.0,
        200.0,
        &objects,
        &attributes,
        &boxes,
        &features,
    )
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.concat()).unwrap();
    path
}

fn values<const N: usize>(t: Tensor<B, N>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn converts_two_files_and_reads_rows_back_with_padding() {
    let dir = common::tempdir();
    let train = write(
        dir.path(),
        "train.tsv",
        &[row("COCO_train2014_000000000009", 9, 3), row("25", 25, 2)],
    );
    let val = write(
        dir.path(),
        "val.tsv",
        &[row("COCO_val2014_000000000042", 42, 1)],
    );
    let out = dir.path().join("features.safetensors");
    let summary = convert_tsv(&[train, val], &out).unwrap();
    assert_eq!(
        (summary.images, summary.max_boxes, summary.d_feature),
        (3, 3, D)
    );
    assert!(!dir.path().join("features.safetensors.tmp").exists());

    let features = RegionFeatures::open(&out).unwrap();
    assert_eq!(features.len(), 3);
    assert!(features.contains(42) && features.contains(9) && !features.contains(1));
    let batch = features.batch::<B>(&[42, 25], &Default::default()).unwrap();
    assert_eq!(batch.features.dims(), [2, 3, D]);
    // Image 42 has one box: its feature, then zeros; image 25 has two.
    let f = values(batch.features);
    assert_eq!(&f[0..3], &[42.0, 42.01, 42.02]);
    assert_eq!(&f[3..9], &[0.0; 6]);
    assert_eq!(&f[9..15], &[25.0, 25.01, 25.02, 25.1, 25.11, 25.12]);
    let padding: Vec<bool> = batch.padding.into_data().to_vec().unwrap();
    assert_eq!(padding, vec![false, true, true, false, false, true]);
    // Boxes divided by width 200 and height 100.
    let b = values(batch.boxes);
    assert_eq!(&b[12..16], &[0.0, 0.05, 0.1, 0.5]);
    let objects: Vec<i64> = batch.objects.into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(objects, vec![0, -1, -1, 0, 1, -1]);
    let attributes: Vec<i64> = batch
        .attributes
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(&attributes[3..5], &[10, 11]);
}

#[test]
fn a_feature_count_that_disagrees_with_num_boxes_names_the_image() {
    let dir = common::tempdir();
    // Claims 4 boxes but carries the arrays of 3 (and 9 feature floats: not 4 x anything).
    let good = row("7", 7, 3);
    let bad = row("COCO_val2014_000000000123", 123, 3).replacen("\t3\t", "\t4\t", 1);
    let tsv = write(dir.path(), "bad.tsv", &[good, bad]);
    let error = convert_tsv(&[tsv], &dir.path().join("out.safetensors")).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, RegionFeatureError::Row { line: 2, .. }),
        "{message}"
    );
    assert!(message.contains("COCO_val2014_000000000123"), "{message}");
    assert!(message.contains("num_boxes"), "{message}");
    assert!(!dir.path().join("out.safetensors").exists());
}

#[test]
fn objects_disagreeing_with_num_boxes_are_caught_while_decoding() {
    let dir = common::tempdir();
    // Features for 2 boxes of width 3 are 6 floats, which also reads as 3 boxes of width 2;
    // the first row fixes width 3, so the objects array (2 ids for num_boxes 3) must fail.
    let first = row("1", 1, 2);
    let mut fields: Vec<String> = row("55", 55, 2)
        .trim_end()
        .split('\t')
        .map(String::from)
        .collect();
    fields[7] = "3".into();
    fields[9] = row("x", 55, 3)
        .trim_end()
        .split('\t')
        .nth(9)
        .unwrap()
        .to_string();
    let tsv = write(
        dir.path(),
        "objects.tsv",
        &[first, fields.join("\t") + "\n"],
    );
    let message = convert_tsv(&[tsv], &dir.path().join("out.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("image 55") && message.contains("objects_id holds 2 values"),
        "{message}"
    );
}

#[test]
fn malformed_lines_and_duplicates_are_named() {
    let dir = common::tempdir();
    let short = write(dir.path(), "short.tsv", &["9\t100\t200\n".to_string()]);
    let message = convert_tsv(&[short], &dir.path().join("a.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("short.tsv, line 1") && message.contains("3 tab-separated fields"),
        "{message}"
    );

    let twice = write(
        dir.path(),
        "twice.tsv",
        &[row("5", 5, 1), row("COCO_x_5", 5, 1)],
    );
    let message = convert_tsv(&[twice], &dir.path().join("b.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("image 5 appears twice"), "{message}");
}

#[test]
fn a_missing_image_id_is_named() {
    let dir = common::tempdir();
    let tsv = write(dir.path(), "one.tsv", &[row("3", 3, 2)]);
    let out = dir.path().join("one.safetensors");
    convert_tsv(&[tsv], &out).unwrap();
    let features = RegionFeatures::open(&out).unwrap();
    let error = features.check_covers([3, 77]).unwrap_err().to_string();
    assert!(
        error.contains("image 77") && error.contains("one.safetensors"),
        "{error}"
    );
    let Err(error) = features.batch::<B>(&[77], &Default::default()) else {
        panic!("a missing image must not make a batch");
    };
    assert!(error.to_string().contains("image 77"));
}

#[test]
fn a_file_that_is_not_a_feature_file_is_refused() {
    let dir = common::tempdir();
    let path = dir.path().join("junk.safetensors");
    std::fs::write(&path, b"junk").unwrap();
    let Err(error) = RegionFeatures::open(&path) else {
        panic!("junk must not open");
    };
    assert!(error.to_string().contains("junk.safetensors"), "{error}");
}
