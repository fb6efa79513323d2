//! The synthetic dataset and the tokenizer.

use crate::common;

use std::fs;
use std::path::Path;

use vislang::data::{
    dataset_root, ensure_synthetic_coco, synthetic_dir_name, write_synthetic_coco, BadEntryPolicy,
    CocoDataset, CocoSplit, SyntheticCocoConfig, TextTokenizer, SPECIAL_TOKENS,
};

fn small() -> SyntheticCocoConfig {
    SyntheticCocoConfig {
        n_train: 40,
        n_val: 10,
        ..Default::default()
    }
}

fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["annotations", "train2014", "val2014"] {
        let mut entries: Vec<_> = fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        files.extend(
            entries
                .into_iter()
                .map(|p| (p.display().to_string(), fs::read(&p).unwrap())),
        );
    }
    files
}

#[test]
fn synthetic_set_is_deterministic_and_loads_as_coco() {
    let (a, b) = (common::tempdir(), common::tempdir());
    write_synthetic_coco(a.path(), &small()).unwrap();
    write_synthetic_coco(b.path(), &small()).unwrap();
    let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
    assert_eq!(ta.len(), tb.len());
    assert!(
        ta.iter().zip(&tb).all(|(x, y)| x.1 == y.1),
        "same seed, same bytes"
    );

    let train = CocoDataset::load(a.path(), CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    assert_eq!(train.images.len(), 40);
    assert_eq!(train.categories.len(), 80);
    assert!(train
        .images
        .iter()
        .all(|i| i.captions.len() == 3 && (2..=4).contains(&i.objects.len())));
    assert!(image::open(&train.images[0].path).unwrap().width() == 96);

    // Complementarity: captions name only some of the objects.
    let mut named = 0;
    let mut total = 0;
    for image in &train.images {
        for object in &image.objects {
            total += 1;
            let name = &train.categories[object.category].name;
            named += usize::from(image.captions[0].contains(name.as_str()));
        }
    }
    assert!(
        named > 0 && named < total,
        "{named} of {total} objects named in the first caption"
    );
}

#[test]
fn ensure_reuses_and_never_rewrites_a_set_or_a_foreign_directory() {
    let dir = common::tempdir();
    let root = dir.path().join("synthetic");
    ensure_synthetic_coco(&root, &small()).unwrap();
    let marker = root.join("vislang-synthetic.json");
    let written = fs::metadata(&marker).unwrap().modified().unwrap();
    ensure_synthetic_coco(&root, &small()).unwrap();
    assert_eq!(
        fs::metadata(&marker).unwrap().modified().unwrap(),
        written,
        "reused"
    );

    // Another config for the same directory is refused: token files and caches made from
    // these images would silently refer to others.
    let bigger = SyntheticCocoConfig {
        n_train: 50,
        ..small()
    };
    let before = read_tree(&root);
    let error = ensure_synthetic_coco(&root, &bigger)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("another config") && error.contains("50") && error.contains("refusing"),
        "{error}"
    );
    assert_eq!(read_tree(&root), before, "untouched");

    // Through `dataset_root` each config has its own directory: both sets live side by side.
    let data_dir = dir.path().join("data");
    let first = dataset_root(None, &small(), &data_dir).unwrap();
    let second = dataset_root(None, &bigger, &data_dir).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        synthetic_dir_name(&SyntheticCocoConfig::default()),
        "synthetic-coco-seed2014"
    );
    let train = CocoDataset::load(&second, CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    assert_eq!(train.images.len(), 50);
    let train = CocoDataset::load(&first, CocoSplit::Train2014, BadEntryPolicy::Fail).unwrap();
    assert_eq!(train.images.len(), small().n_train);

    // A directory that is not a synthetic set is never touched.
    let foreign = dir.path().join("my-data");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("precious.txt"), b"keep me").unwrap();
    let error = ensure_synthetic_coco(&foreign, &small())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("my-data") && error.contains("refusing"),
        "{error}"
    );
    assert_eq!(fs::read(foreign.join("precious.txt")).unwrap(), b"keep me");
}

#[test]
fn wordpiece_tokenizer_trains_saves_and_reloads() {
    let captions = [
        "A man walking a dog.",
        "Two dogs and a cat.",
        "A cat on a chair near a dog",
    ];
    let tokenizer = TextTokenizer::train_wordpiece(captions.iter().copied(), 100).unwrap();
    let ids = tokenizer.encode("a dog and a cat", 32).unwrap();
    assert_eq!(tokenizer.decode(&ids), "a dog and a cat");
    assert!(!ids.contains(&tokenizer.special.unk));
    assert_eq!(
        tokenizer.encode("a dog and a cat", 2).unwrap(),
        ids[..2].to_vec()
    );
    // Special tokens come first, in BERT's order.
    let s = tokenizer.special;
    assert_eq!([s.pad, s.unk, s.cls, s.sep, s.mask], [0, 1, 2, 3, 4]);

    let dir = common::tempdir();
    let path = dir.path().join("tokenizer.json");
    tokenizer.save(&path).unwrap();
    let reloaded = TextTokenizer::from_file(&path).unwrap();
    assert_eq!(reloaded.encode("a dog and a cat", 32).unwrap(), ids);
    assert_eq!(reloaded.vocab_size(), tokenizer.vocab_size());
    assert!(reloaded.vocabulary_differences(&tokenizer).is_empty());
    let other =
        TextTokenizer::train_wordpiece(["zebras graze", "a zebra"].into_iter(), 100).unwrap();
    let differences = other.vocabulary_differences(&tokenizer);
    assert!(
        differences.iter().any(|t| t == "zebra") && differences.iter().any(|t| t == "dog"),
        "{differences:?}"
    );

    // A tokenizer without [MASK] is refused by name.
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("[MASK]", "[MSK]")).unwrap();
    let message = TextTokenizer::from_file(&path).err().unwrap().to_string();
    assert!(
        message.contains("[MASK]") && message.contains("tokenizer.json"),
        "{message}"
    );
    assert_eq!(SPECIAL_TOKENS.len(), 5);

    fs::write(&path, "{ broken").unwrap();
    let message = TextTokenizer::from_file(&path).err().unwrap().to_string();
    assert!(message.contains("tokenizer.json"), "{message}");
}

#[test]
fn the_category_table_in_synthetic_md_matches_the_generator() {
    use vislang::data::synthetic::GLYPHS;
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/synthetic.md"))
            .unwrap();
    let colour = |rgb: [u8; 3]| match rgb {
        [220, 40, 40] => "red",
        [40, 190, 60] => "green",
        [40, 80, 230] => "blue",
        [235, 210, 40] => "yellow",
        [210, 50, 200] => "magenta",
        [40, 200, 210] => "cyan",
        other => panic!("colour {other:?} has no name in this test"),
    };
    for glyph in &GLYPHS {
        let name = vislang::data::categories::COCO_CATEGORIES
            .iter()
            .find(|c| c.0 == glyph.category_id)
            .unwrap()
            .1;
        let shape = format!("{:?}", glyph.shape).to_lowercase();
        let row = format!(
            "| {} | {name} | {shape} | {} | {} | {} |",
            glyph.category_id,
            colour(glyph.color),
            glyph.words.join(", "),
            glyph.korean.join(", ")
        );
        assert!(
            doc.contains(&row),
            "datasets/synthetic.md lacks the row {row}"
        );
    }
}
