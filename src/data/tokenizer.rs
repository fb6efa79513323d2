//! Text tokenizers with BERT's special tokens, trained on the captions with the `tokenizers`
//! crate: WordPiece for the BERT-style encoders (or any BERT-style `tokenizer.json`, e.g.
//! bert-base-uncased), and BPE for the DALL-E-style decoder, as in DALL-E.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use tokenizers::decoders::bpe::BPEDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::normalizers::{BertNormalizer, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{
    AddedToken, Decoder, DecoderWrapper, Model, ModelWrapper, Normalizer, OffsetReferential,
    OffsetType, PreTokenizedString, PreTokenizer, Tokenizer, TokenizerBuilder,
};

use super::subword_training::{train_subwords, SubwordVocabulary, SymbolMarking};

/// BERT's special tokens, in the order they get ids in a freshly trained vocabulary.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Errors from training, loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("tokenizer {path} has no {token} token; vislang needs BERT's special tokens [PAD] [UNK] [CLS] [SEP] [MASK]")]
    MissingSpecial { path: PathBuf, token: &'static str },
    #[error("cannot save tokenizer to {path}: {message}")]
    Save { path: PathBuf, message: String },
    #[error("tokenizer training failed: {0}")]
    Train(String),
    #[error("cannot tokenize {text:?}: {message}")]
    Encode { text: String, message: String },
}

fn train_error(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Train(e.to_string())
}

/// BERT's normaliser (lower-casing, accent stripping), then Unicode composition (NFC).
///
/// Why the second step: BERT strips accents by decomposing text (NFD) and dropping the
/// combining marks. Hangul syllables decompose into conjoining jamo, which are letters, not
/// marks, so they stay, decomposed: 고양이 would reach the vocabulary as seven jamo. NFC puts
/// each syllable back together; on text whose accents were stripped it changes nothing, so
/// English and other Latin-script text normalises exactly as in BERT.
fn normalizer() -> NormalizerWrapper {
    NormalizerWrapper::Sequence(Sequence::new(vec![
        NormalizerWrapper::BertNormalizer(BertNormalizer::default()),
        NormalizerWrapper::NFC(NFC),
    ]))
}

/// How often each word occurs in `texts`, after [`normalizer`] and BERT's pre-tokenisation
/// (whitespace and punctuation), in sorted order.
fn word_counts<'a>(
    texts: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, u64>, TokenizerError> {
    let normalizer = normalizer();
    let mut counts = BTreeMap::new();
    for text in texts {
        let mut pieces = PreTokenizedString::from(text);
        pieces
            .normalize(|n| normalizer.normalize(n))
            .map_err(train_error)?;
        BertPreTokenizer
            .pre_tokenize(&mut pieces)
            .map_err(train_error)?;
        for (word, _, _) in pieces.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            *counts.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// The vocabulary (BERT's special tokens first) learned from the words of `texts`.
fn learn_subwords<'a>(
    texts: impl Iterator<Item = &'a str>,
    vocab_size: usize,
    marking: SymbolMarking,
) -> Result<SubwordVocabulary, TokenizerError> {
    let counts = word_counts(texts)?;
    Ok(train_subwords(
        &counts,
        &SPECIAL_TOKENS,
        vocab_size,
        marking,
    ))
}

/// Token -> id, ids in list order.
fn vocabulary(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), id as u32))
        .collect()
}

/// See [`TextTokenizer::coverage`].
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionCoverage {
    pub dropped_tokens: usize,
    pub unfamiliar_words: Vec<String>,
}

/// The ids of the special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// A WordPiece tokenizer plus the ids of its special tokens.
pub struct TextTokenizer {
    inner: Tokenizer,
    pub special: SpecialIds,
}

impl TextTokenizer {
    /// Trains a lower-casing WordPiece vocabulary of at most `vocab_size` entries.
    /// Deterministic: the same texts give the same `tokenizer.json` in any process (see
    /// [`super::subword_training`]).
    pub fn train_wordpiece<'a>(
        texts: impl Iterator<Item = &'a str>,
        vocab_size: usize,
    ) -> Result<Self, TokenizerError> {
        let trained = learn_subwords(texts, vocab_size, SymbolMarking::ContinuingPrefix)?;
        let model = WordPiece::builder()
            .vocab(vocabulary(&trained.tokens))
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(train_error)?;
        Self::bert_style(model, WordPieceDecoder::default())
    }

    /// Trains a lower-casing BPE vocabulary of at most `vocab_size` entries (words are split on
    /// whitespace and punctuation first, as for WordPiece). Deterministic, as
    /// [`Self::train_wordpiece`].
    pub fn train_bpe<'a>(
        texts: impl Iterator<Item = &'a str>,
        vocab_size: usize,
    ) -> Result<Self, TokenizerError> {
        let trained = learn_subwords(texts, vocab_size, SymbolMarking::EndSuffix)?;
        // The end-of-word suffix lets decoding put the spaces back.
        let model = BPE::builder()
            .vocab_and_merges(vocabulary(&trained.tokens), trained.merges)
            .unk_token("[UNK]".into())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(train_error)?;
        Self::bert_style(model, BPEDecoder::default())
    }

    /// `model` behind [`normalizer`] and BERT's pre-tokeniser,
    /// with BERT's special tokens (already the vocabulary's first ids) registered as added
    /// tokens, so that they are matched whole in text, as a `tokenizers` trainer registers them.
    fn bert_style<M, D>(model: M, decoder: D) -> Result<Self, TokenizerError>
    where
        M: Model + Into<ModelWrapper>,
        D: Decoder + Into<DecoderWrapper>,
    {
        let tokenizer = TokenizerBuilder::<
            M,
            NormalizerWrapper,
            BertPreTokenizer,
            PostProcessorWrapper,
            D,
        >::new()
        .with_model(model)
        .with_normalizer(Some(normalizer()))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(decoder))
        .build()
        .map_err(train_error)?;
        let mut tokenizer = Tokenizer::from(tokenizer);
        let special: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect();
        tokenizer.add_special_tokens(&special);
        Self::new(tokenizer, Path::new("<trained>"))
    }

    /// Loads a `tokenizer.json`, such as the one [`Self::save`] writes or bert-base-uncased's,
    /// or a BERT `vocab.txt` (any file ending in `.txt`, see [`Self::from_bert_vocab`]).
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        if path.extension().is_some_and(|e| e == "txt") {
            return Self::from_bert_vocab(path);
        }
        let inner = Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::new(inner, path)
    }

    /// A lower-casing WordPiece tokenizer over a BERT `vocab.txt` (one token per line, the
    /// line number is its id), as released checkpoints such as bert-base-uncased and
    /// unc-nlp/lxmert-base-uncased ship it.
    pub fn from_bert_vocab(path: &Path) -> Result<Self, TokenizerError> {
        let load = |message: String| TokenizerError::Load {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| load(e.to_string()))?;
        let tokens: Vec<String> = text.lines().map(str::to_string).collect();
        let vocab = vocabulary(&tokens);
        if vocab.len() != tokens.len() {
            return Err(load(format!(
                "{} lines but {} distinct tokens: each token must appear once",
                tokens.len(),
                vocab.len()
            )));
        }
        // Checked here: `bert_style` would add a missing special token as a new id.
        if let Some(token) = SPECIAL_TOKENS.iter().find(|t| !vocab.contains_key(**t)) {
            return Err(TokenizerError::MissingSpecial {
                path: path.to_path_buf(),
                token,
            });
        }
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .build()
            .map_err(|e| load(e.to_string()))?;
        Self::bert_style(model, WordPieceDecoder::default())
    }

    fn new(inner: Tokenizer, path: &Path) -> Result<Self, TokenizerError> {
        let id = |token: &'static str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::MissingSpecial {
                    path: path.to_path_buf(),
                    token,
                })
        };
        let special = SpecialIds {
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
        };
        Ok(Self { inner, special })
    }

    /// Writes `tokenizer.json` (to a temporary file first, then renamed).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let error = |message: String| TokenizerError::Save {
            path: path.to_path_buf(),
            message,
        };
        let tmp = path.with_extension("json.tmp");
        self.inner
            .save(&tmp, true)
            .map_err(|e| error(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| error(e.to_string()))
    }

    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding, TokenizerError> {
        self.inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode {
                text: text.to_string(),
                message: e.to_string(),
            })
    }

    /// Token ids of `text` without special tokens, truncated to `max_len`.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.encoding(text)?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(max_len);
        Ok(ids)
    }

    /// How well `text` fits this vocabulary and `max_len` positions: the words it does not hold
    /// as one token (split into pieces, or with characters it has never seen: a model trained
    /// on it saw them rarely or never) and the tokens beyond `max_len` that [`Self::encode`]
    /// drops.
    pub fn coverage(&self, text: &str, max_len: usize) -> Result<CaptionCoverage, TokenizerError> {
        let encoding = self.encoding(text)?;
        let mut words: Vec<(Option<u32>, usize, usize, usize, bool)> = Vec::new();
        for (i, &word) in encoding.get_word_ids().iter().enumerate() {
            let (start, end) = encoding.get_offsets()[i];
            let unknown = encoding.get_ids()[i] == self.special.unk;
            match words.last_mut() {
                Some(last) if word.is_some() && last.0 == word => {
                    last.2 = end;
                    last.3 += 1;
                    last.4 |= unknown;
                }
                _ => words.push((word, start, end, 1, unknown)),
            }
        }
        let mut unfamiliar_words: Vec<String> = Vec::new();
        for &(_, start, end, pieces, unknown) in &words {
            let word = text.get(start..end).unwrap_or_default();
            if (pieces > 1 || unknown) && !unfamiliar_words.iter().any(|w| w == word) {
                unfamiliar_words.push(word.to_string());
            }
        }
        Ok(CaptionCoverage {
            dropped_tokens: encoding.get_ids().len().saturating_sub(max_len),
            unfamiliar_words,
        })
    }

    /// Tokens of `ids`, for inspection.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// Vocabulary size including added tokens: the embedding table's height.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokens whose id differs between the two vocabularies (or that only one has), sorted:
    /// empty when a model trained with one can read ids made by the other.
    /// Every token, in id order (a BERT `vocab.txt` is this list, one per line). `None` when
    /// the ids have gaps.
    pub fn tokens_by_id(&self) -> Option<Vec<String>> {
        let mut tokens: Vec<(u32, String)> = self
            .inner
            .get_vocab(true)
            .into_iter()
            .map(|(token, id)| (id, token))
            .collect();
        tokens.sort_unstable();
        let contiguous = tokens
            .iter()
            .enumerate()
            .all(|(i, (id, _))| *id as usize == i);
        contiguous.then(|| tokens.into_iter().map(|(_, token)| token).collect())
    }

    pub fn vocabulary_differences(&self, other: &TextTokenizer) -> Vec<String> {
        let (mine, theirs) = (self.inner.get_vocab(true), other.inner.get_vocab(true));
        let mut differ: Vec<String> = mine
            .iter()
            .filter(|(token, id)| theirs.get(*token) != Some(id))
            .map(|(token, _)| token.clone())
            .chain(
                theirs
                    .keys()
                    .filter(|token| !mine.contains_key(*token))
                    .cloned(),
            )
            .collect();
        differ.sort();
        differ
    }
}
