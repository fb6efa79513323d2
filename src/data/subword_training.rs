//! Deterministic subword vocabulary training (byte-pair merges, Sennrich et al. 2016,
//! <https://arxiv.org/abs/1508.07909>) for the WordPiece and BPE tokenizers.
//!
//! Why our own: the `tokenizers` crate's trainers break ties between equally frequent pairs in
//! hash-map order, and its hash maps are seeded per process, so the same captions gave
//! different vocabularies (and so different numbers) in two runs of the same command. Here
//! every choice is a total order: the most frequent pair wins, ties go to the
//! lexicographically smallest `(left, right)` pair of strings, and words are visited in
//! sorted order. Same captions, same vocabulary, in any process.
//!
//! The algorithm is the trainers' own: words (after normalisation and pre-tokenisation) start
//! as characters, with `##` on every character but the first (WordPiece's continuing-subword
//! prefix) or `</w>` on the last (BPE's end-of-word suffix); the most frequent adjacent pair
//! is merged into a new symbol until the vocabulary is full or no pair occurs.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// How a word is split into initial symbols.
#[derive(Debug, Clone, Copy)]
pub enum SymbolMarking {
    /// `##` before every symbol that does not start a word (WordPiece).
    ContinuingPrefix,
    /// `</w>` after the symbol that ends a word (BPE).
    EndSuffix,
}

const PREFIX: &str = "##";
const SUFFIX: &str = "</w>";

/// A trained vocabulary: tokens in id order (the special tokens first) and the merges in the
/// order they were learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubwordVocabulary {
    pub tokens: Vec<String>,
    pub merges: Vec<(String, String)>,
}

/// A candidate merge in the priority queue: most frequent first, then the smallest pair.
#[derive(Debug, PartialEq, Eq)]
struct Candidate {
    count: u64,
    left: String,
    right: String,
    pair: (u32, u32),
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| (&other.left, &other.right).cmp(&(&self.left, &self.right)))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Symbol strings and their ids (lookups only: nothing iterates over the map).
#[derive(Default)]
struct Symbols {
    strings: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Symbols {
    fn id(&mut self, symbol: String) -> u32 {
        if let Some(&id) = self.ids.get(&symbol) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.ids.insert(symbol.clone(), id);
        self.strings.push(symbol);
        id
    }

    fn merged(&self, (left, right): (u32, u32), marking: SymbolMarking) -> String {
        let (left, right) = (&self.strings[left as usize], &self.strings[right as usize]);
        match marking {
            SymbolMarking::ContinuingPrefix => {
                format!("{left}{}", right.strip_prefix(PREFIX).unwrap_or(right))
            }
            SymbolMarking::EndSuffix => format!("{left}{right}"),
        }
    }
}

/// Learns merges over `word_counts` (pre-tokenised words and how often each occurs) until
/// the vocabulary, `special` tokens included, holds `vocab_size` tokens.
pub fn train_subwords(
    word_counts: &BTreeMap<String, u64>,
    special: &[&str],
    vocab_size: usize,
    marking: SymbolMarking,
) -> SubwordVocabulary {
    let mut symbols = Symbols::default();
    let mut words: Vec<(Vec<u32>, u64)> = Vec::with_capacity(word_counts.len());
    let mut alphabet = BTreeSet::new();
    for (word, &count) in word_counts {
        let chars: Vec<char> = word.chars().collect();
        let initial: Vec<String> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| match marking {
                SymbolMarking::ContinuingPrefix if i > 0 => format!("{PREFIX}{c}"),
                SymbolMarking::EndSuffix if i + 1 == chars.len() => format!("{c}{SUFFIX}"),
                _ => c.to_string(),
            })
            .collect();
        alphabet.extend(initial.iter().cloned());
        words.push((initial.into_iter().map(|s| symbols.id(s)).collect(), count));
    }
    let mut tokens: Vec<String> = special.iter().map(|s| s.to_string()).collect();
    tokens.extend(
        alphabet
            .iter()
            .filter(|s| !special.contains(&s.as_str()))
            .cloned(),
    );

    // Pair counts, and which words hold each pair.
    let mut pair_counts: HashMap<(u32, u32), u64> = HashMap::new();
    let mut pair_words: HashMap<(u32, u32), BTreeSet<usize>> = HashMap::new();
    for (index, (ids, count)) in words.iter().enumerate() {
        for pair in ids.windows(2).map(|w| (w[0], w[1])) {
            *pair_counts.entry(pair).or_default() += count;
            pair_words.entry(pair).or_default().insert(index);
        }
    }
    let candidate = |symbols: &Symbols, pair: (u32, u32), count: u64| Candidate {
        count,
        left: symbols.strings[pair.0 as usize].clone(),
        right: symbols.strings[pair.1 as usize].clone(),
        pair,
    };
    let mut queue: BinaryHeap<Candidate> = pair_counts
        .iter()
        .map(|(&pair, &count)| candidate(&symbols, pair, count))
        .collect();

    let mut merges = Vec::new();
    let mut in_vocabulary: BTreeSet<String> = tokens.iter().cloned().collect();
    while tokens.len() < vocab_size {
        let Some(top) = queue.pop() else { break };
        let current = pair_counts.get(&top.pair).copied().unwrap_or(0);
        if current != top.count {
            // A stale entry: the pair's count fell since it was queued.
            if current > 0 {
                queue.push(candidate(&symbols, top.pair, current));
            }
            continue;
        }
        if current == 0 {
            break;
        }
        let merged = symbols.merged(top.pair, marking);
        let new_id = symbols.id(merged.clone());
        merges.push((top.left.clone(), top.right.clone()));
        if in_vocabulary.insert(merged.clone()) {
            tokens.push(merged);
        }
        let mut grown = BTreeSet::new();
        for index in pair_words.remove(&top.pair).unwrap_or_default() {
            let (ids, count) = &mut words[index];
            let count = *count;
            for pair in ids.windows(2).map(|w| (w[0], w[1])) {
                *pair_counts.get_mut(&pair).expect("counted") -= count;
            }
            *ids = merge_pair(ids, top.pair, new_id);
            for pair in ids.windows(2).map(|w| (w[0], w[1])) {
                *pair_counts.entry(pair).or_default() += count;
                pair_words.entry(pair).or_default().insert(index);
                grown.insert(pair);
            }
        }
        pair_counts.remove(&top.pair);
        for pair in grown {
            let count = pair_counts[&pair];
            if count > 0 {
                queue.push(candidate(&symbols, pair, count));
            }
        }
    }
    SubwordVocabulary { tokens, merges }
}

/// `ids` with every non-overlapping occurrence of `pair` (left to right) replaced by `merged`.
fn merge_pair(ids: &[u32], pair: (u32, u32), merged: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    let mut i = 0;
    while i < ids.len() {
        if i + 1 < ids.len() && (ids[i], ids[i + 1]) == pair {
            out.push(merged);
            i += 2;
        } else {
            out.push(ids[i]);
            i += 1;
        }
    }
    out
}
