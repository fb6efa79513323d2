//! Tokenizer training: deterministic across processes, and the vocabularies it learns work.

use std::collections::BTreeMap;
use std::process::Command;

use vislang::data::subword_training::{train_subwords, SymbolMarking};
use vislang::data::TextTokenizer;

/// Captions with many equally frequent pairs, so that tie-breaking decides the vocabulary.
fn captions() -> Vec<String> {
    let colours = ["red", "blue", "green", "teal", "pink", "gold"];
    let shapes = ["disk", "ring", "cross", "diamond", "square", "star"];
    let mut captions = Vec::new();
    for (i, colour) in colours.iter().enumerate() {
        for (j, shape) in shapes.iter().enumerate() {
            captions.push(format!(
                "A {colour} {shape} next to a {} one.",
                shapes[(i + j) % 6]
            ));
        }
    }
    captions
}

const CHILD: &str = "VISLANG_TOKENIZER_TEST_OUT";

/// Two processes (each with its own hash seeds) train byte-identical tokenizer files. The
/// test runs itself twice as a child process; a child (told by an environment variable)
/// trains both tokenizers and saves them where the parent says.
#[test]
fn a_tokenizer_trained_in_two_processes_is_byte_identical() {
    if let Ok(out) = std::env::var(CHILD) {
        let captions = captions();
        let texts = || captions.iter().map(String::as_str);
        let out = std::path::Path::new(&out);
        let wordpiece = TextTokenizer::train_wordpiece(texts(), 80).unwrap();
        wordpiece.save(&out.join("wordpiece.json")).unwrap();
        let bpe = TextTokenizer::train_bpe(texts(), 80).unwrap();
        bpe.save(&out.join("bpe.json")).unwrap();
        return;
    }
    let dirs: Vec<tempfile_dir::Dir> = (0..2).map(|_| tempfile_dir::Dir::new()).collect();
    for dir in &dirs {
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                // The test's name in the integration crate: its module path without the crate.
                &format!(
                    "{}::a_tokenizer_trained_in_two_processes_is_byte_identical",
                    module_path!().split_once("::").unwrap().1
                ),
                "--quiet",
            ])
            .env(CHILD, &dir.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    for file in ["wordpiece.json", "bpe.json"] {
        let [a, b] = [0, 1].map(|i| std::fs::read(dirs[i].path.join(file)).unwrap());
        assert!(!a.is_empty());
        assert!(a == b, "{file} differs between two processes");
    }
}

/// A throwaway directory under the system temp dir, removed on drop.
mod tempfile_dir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "vislang-tokenizer-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Ties between equally frequent pairs go to the smallest pair of strings; more frequent
/// pairs go first.
#[test]
fn merges_take_the_most_frequent_pair_and_break_ties_by_the_strings() {
    let counts: BTreeMap<String, u64> = [("ab", 2), ("cd", 2), ("xy", 5)]
        .into_iter()
        .map(|(w, c)| (w.to_string(), c))
        .collect();
    let trained = train_subwords(&counts, &["[PAD]"], 100, SymbolMarking::ContinuingPrefix);
    let merges: Vec<(&str, &str)> = trained
        .merges
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(merges, [("x", "##y"), ("a", "##b"), ("c", "##d")]);
    assert_eq!(trained.tokens[0], "[PAD]");
    assert!(trained.tokens.contains(&"xy".to_string()));
    // Stops at the requested size.
    let small = train_subwords(&counts, &["[PAD]"], 8, SymbolMarking::ContinuingPrefix);
    assert_eq!(small.tokens.len(), 8);
}

/// The trained vocabularies tokenize their own captions without unknown tokens, keep BERT's
/// special tokens at ids 0-4, and give whole frequent words one token.
#[test]
fn trained_vocabularies_cover_their_captions() {
    let captions = captions();
    let texts = || captions.iter().map(String::as_str);
    for tokenizer in [
        TextTokenizer::train_wordpiece(texts(), 80).unwrap(),
        TextTokenizer::train_bpe(texts(), 80).unwrap(),
    ] {
        assert!(tokenizer.vocab_size() <= 80);
        let s = tokenizer.special;
        assert_eq!([s.pad, s.unk, s.cls, s.sep, s.mask], [0, 1, 2, 3, 4]);
        // Special tokens in text are matched whole.
        assert_eq!(tokenizer.encode("[MASK]", 8).unwrap(), [s.mask]);
        for caption in &captions {
            let ids = tokenizer.encode(caption, 64).unwrap();
            assert!(
                !ids.contains(&tokenizer.special.unk),
                "{caption:?} -> {ids:?}"
            );
        }
        // "next" occurs in every caption: one token.
        assert_eq!(tokenizer.encode("next", 8).unwrap().len(), 1);
        // A word never seen still tokenizes (characters it knows, or [UNK]).
        assert!(!tokenizer.encode("zebra", 8).unwrap().is_empty());
    }
}

#[test]
fn coverage_names_split_or_unknown_words_once_and_counts_dropped_tokens() {
    let captions = captions();
    let bpe = TextTokenizer::train_bpe(captions.iter().map(String::as_str), 200).unwrap();
    // Every word of a training caption is a whole token at this vocabulary size.
    let seen = bpe.coverage("A red disk next to a blue one.", 64).unwrap();
    assert_eq!(seen.unfamiliar_words, Vec::<String>::new());
    assert_eq!(seen.dropped_tokens, 0);
    // A word never seen is split into pieces; a character never seen is [UNK]. Each is
    // named once.
    let unseen = bpe
        .coverage("a zebraphone, a red disk and a zebraphone ✓", 64)
        .unwrap();
    assert_eq!(unseen.unfamiliar_words, vec!["zebraphone", ",", "and", "✓"]);
    let ids = bpe.encode("a red disk a red disk", 64).unwrap();
    let cut = bpe.coverage("a red disk a red disk", 4).unwrap();
    assert_eq!(cut.dropped_tokens, ids.len() - 4);
    assert!(cut.dropped_tokens > 0);
}
