//! Answer normalisation and VQA accuracy, as the official VQA evaluation script computes them
//! (`PythonEvaluationTools/vqaEvaluation/vqaEval.py` in github.com/GT-Vision-Lab/VQA), so a
//! number from vislang is the number the evaluation server would give the same predictions.
//!
//! The script's behaviour is kept, quirks included, because published accuracies include them:
//! - a punctuation mark is deleted when it touches a space anywhere in the answer (or when the
//!   answer has a comma between digits), and replaced by a space otherwise;
//! - a period is deleted unless a digit follows, at most 32 of them (the script passes
//!   `re.UNICODE`, which is 32, as `re.sub`'s count);
//! - digits are ASCII `[0-9]` (Python 2's `re` without the UNICODE flag);
//! - the human answers are punctuation-processed only, and only when they are not all equal;
//!   the prediction is also lower-cased, number words become digits, articles go, and
//!   apostrophe-less contractions get their apostrophe back.
//!
//! The parity test (`tests/vqa.rs`) checks all of this against the script's algorithm on
//! `tests/fixtures/vqa/eval_cases.json` (written by `experiments/reference/vqa_eval_cases.py`).

/// The marks `processPunctuation` handles (`-`, `!` and `.` are not among them; `.` has its
/// own rule).
const PUNCTUATION: [char; 19] = [
    ';', ':', '/', '\'', '[', ']', '"', '(', ')', '=', '+', '\\', '_', '>', '<', '@', '`', ',', '?',
];

/// The script's `manualMap`: number words up to ten become digits ("none" too).
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("eight", "8"),
    ("five", "5"),
    ("four", "4"),
    ("nine", "9"),
    ("none", "0"),
    ("one", "1"),
    ("seven", "7"),
    ("six", "6"),
    ("ten", "10"),
    ("three", "3"),
    ("two", "2"),
    ("zero", "0"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// At most this many periods are deleted (see the module docs).
const PERIODS_DELETED_AT_MOST: usize = 32;

/// The matches that count fully: an answer given by this many humans scores 1.
pub const HUMANS_FOR_FULL_CREDIT: f64 = 3.0;

/// The official script's contraction table: a word written without its apostrophe, and
/// the word as the script writes it (mostly with a typographic apostrophe, as there).
#[rustfmt::skip]
const CONTRACTIONS: [(&str, &str); 120] = [
    ("Id’ve", "I’d’ve"), ("Im", "I’m"), ("Ive", "I’ve"), ("I’dve", "I’d’ve"), ("aint", "ain't"),
    ("arent", "aren't"), ("cant", "can't"), ("couldn'tve", "couldn’t’ve"), ("couldnt", "couldn't"),
    ("couldnt’ve", "couldn’t’ve"), ("couldve", "could've"), ("didnt", "didn’t"),
    ("doesnt", "doesn’t"), ("dont", "don’t"), ("hadn'tve", "hadn’t’ve"), ("hadnt", "hadn’t"),
    ("hadnt’ve", "hadn’t’ve"), ("hasnt", "hasn’t"), ("havent", "haven’t"), ("hed", "he’d"),
    ("hed’ve", "he’d’ve"), ("hes", "he’s"), ("he’dve", "he’d’ve"), ("howd", "how’d"),
    ("howll", "how’ll"), ("hows", "how’s"), ("isnt", "isn’t"), ("itd", "it’d"),
    ("itd’ve", "it’d’ve"), ("itll", "it’ll"), ("it’dve", "it’d’ve"), ("let’s", "let’s"),
    ("maam", "ma’am"), ("mightnt", "mightn’t"), ("mightnt’ve", "mightn’t’ve"),
    ("mightn’tve", "mightn’t’ve"), ("mightve", "might’ve"), ("mustnt", "mustn’t"),
    ("mustve", "must’ve"), ("neednt", "needn’t"), ("notve", "not’ve"), ("oclock", "o’clock"),
    ("oughtnt", "oughtn’t"), ("ow’s’at", "’ow’s’at"), ("shant", "shan’t"), ("shed’ve", "she’d’ve"),
    ("she’dve", "she’d’ve"), ("she’s", "she’s"), ("shouldnt", "shouldn’t"),
    ("shouldnt’ve", "shouldn’t’ve"), ("shouldn’tve", "shouldn’t’ve"), ("shouldve", "should’ve"),
    ("somebodyd’ve", "somebody’d’ve"), ("somebodyll", "somebody’ll"), ("somebodys", "somebody’s"),
    ("somebody’d", "somebodyd"), ("somebody’dve", "somebody’d’ve"), ("someoned", "someone’d"),
    ("someoned’ve", "someone’d’ve"), ("someonell", "someone’ll"), ("someones", "someone’s"),
    ("someone’dve", "someone’d’ve"), ("somethingd", "something’d"),
    ("somethingd’ve", "something’d’ve"), ("somethingll", "something’ll"),
    ("something’dve", "something’d’ve"), ("thats", "that’s"), ("thered", "there’d"),
    ("thered’ve", "there’d’ve"), ("therere", "there’re"), ("theres", "there’s"),
    ("there’dve", "there’d’ve"), ("theyd", "they’d"), ("theyd’ve", "they’d’ve"),
    ("theyll", "they’ll"), ("theyre", "they’re"), ("theyve", "they’ve"), ("they’dve", "they’d’ve"),
    ("twas", "’twas"), ("wasnt", "wasn’t"), ("wed’ve", "we’d’ve"), ("werent", "weren’t"),
    ("weve", "we've"), ("we’dve", "we’d’ve"), ("whatll", "what’ll"), ("whatre", "what’re"),
    ("whats", "what’s"), ("whatve", "what’ve"), ("whens", "when’s"), ("whered", "where’d"),
    ("wheres", "where's"), ("whereve", "where’ve"), ("whod", "who’d"), ("whod’ve", "who’d’ve"),
    ("wholl", "who’ll"), ("whos", "who’s"), ("whove", "who've"), ("who’dve", "who’d’ve"),
    ("whyll", "why’ll"), ("whyre", "why’re"), ("whys", "why’s"), ("wont", "won’t"),
    ("wouldnt", "wouldn’t"), ("wouldnt’ve", "wouldn’t’ve"), ("wouldn’tve", "wouldn’t’ve"),
    ("wouldve", "would’ve"), ("yall", "y’all"), ("yall’d’ve", "y’all’d’ve"),
    ("yall’ll", "y’all’ll"), ("youd", "you’d"), ("youd’ve", "you’d’ve"), ("youll", "you’ll"),
    ("youre", "you’re"), ("youve", "you’ve"), ("you’dve", "you’d’ve"), ("y’alld’ve", "y’all’d’ve"),
    ("y’allll", "y’all’ll"), ("y’all’dve", "y’all’d’ve"), ("’ows’at", "’ow’s’at"),
    ("’ow’sat", "’ow’s’at"),
];

/// Python's `str.isspace` (what `split()` and `strip()` use): Unicode whitespace plus the
/// four ASCII separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The script's `processPunctuation`.
pub fn process_punctuation(text: &str) -> String {
    let comma_between_digits = text
        .as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2].is_ascii_digit());
    let mut out = text.to_string();
    for mark in PUNCTUATION {
        // The test reads the original answer, not the partly processed one, as the script does.
        let touches_space =
            text.contains(&format!("{mark} ")) || text.contains(&format!(" {mark}"));
        let replacement = if touches_space || comma_between_digits {
            ""
        } else {
            " "
        };
        out = out.replace(mark, replacement);
    }
    delete_periods(&out)
}

/// `periodStrip`: a period not followed by a digit goes, the first 32 of them.
fn delete_periods(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut deleted = 0;
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_follows = chars.get(i + 1).is_some_and(|next| next.is_ascii_digit());
        if c == '.' && !digit_follows && deleted < PERIODS_DELETED_AT_MOST {
            deleted += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// The script's `processDigitArticle`.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words = lower
        .split(is_python_space)
        .filter(|word| !word.is_empty())
        .map(|word| lookup(&NUMBER_WORDS, word).unwrap_or(word))
        .filter(|word| !ARTICLES.contains(word))
        .map(|word| lookup(&CONTRACTIONS, word).unwrap_or(word));
    words.collect::<Vec<_>>().join(" ")
}

fn lookup(table: &[(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    table
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .map(|i| table[i].1)
}

/// A predicted answer as the script compares it: tabs and newlines to spaces, trimmed,
/// punctuation, then digits, articles and contractions.
pub fn normalise_prediction(answer: &str) -> String {
    let answer = answer.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(answer.trim_matches(is_python_space)))
}

/// The human answers as the script compares them: punctuation-processed, unless all are equal.
pub fn normalise_human_answers(answers: &[String]) -> Vec<String> {
    let all_equal = answers.windows(2).all(|pair| pair[0] == pair[1]);
    if all_equal {
        answers.to_vec()
    } else {
        answers.iter().map(|a| process_punctuation(a)).collect()
    }
}

/// The VQA accuracy of one prediction against the human answers (already normalised with
/// [`normalise_human_answers`]): the mean, over the subsets that leave one human out, of
/// min(1, matching answers among the others / 3). In [0, 1].
pub fn vqa_accuracy(prediction: &str, human_answers: &[String]) -> f64 {
    let prediction = normalise_prediction(prediction);
    let matching = human_answers.iter().filter(|a| **a == prediction).count();
    if human_answers.is_empty() {
        return 0.0;
    }
    // Leaving out a matching answer leaves `matching - 1` among the others; leaving out any
    // other answer leaves `matching`.
    let left_out_matching = matching as f64 * credit(matching.saturating_sub(1));
    let left_out_other = (human_answers.len() - matching) as f64 * credit(matching);
    (left_out_matching + left_out_other) / human_answers.len() as f64
}

fn credit(matches: usize) -> f64 {
    (matches as f64 / HUMANS_FOR_FULL_CREDIT).min(1.0)
}

/// The soft training target of an answer that `count` of the humans gave: min(1, count / 3),
/// as LXMERT and the bottom-up-attention baseline train on it.
pub fn soft_target(count: usize) -> f32 {
    credit(count) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(NUMBER_WORDS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(CONTRACTIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn three_matching_humans_give_full_credit_and_fewer_give_a_share() {
        let humans = |n: usize| -> Vec<String> {
            (0..10)
                .map(|i| if i < n { "2" } else { "3" }.to_string())
                .collect()
        };
        assert_eq!(vqa_accuracy("two", &humans(10)), 1.0);
        assert_eq!(vqa_accuracy("2", &humans(4)), 1.0);
        // Three matches: the 3 subsets without one of them see two (2/3), the 7 others three.
        assert!((vqa_accuracy("2", &humans(3)) - (3.0 * 2.0 / 3.0 + 7.0) / 10.0).abs() < 1e-12);
        assert!((vqa_accuracy("2", &humans(1)) - 0.3).abs() < 1e-12);
        assert_eq!(vqa_accuracy("4", &humans(3)), 0.0);
    }
}
