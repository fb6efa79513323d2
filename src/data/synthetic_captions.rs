//! The synthetic set's captions, in English and Korean.
//!
//! A caption is planned once, language-free (which objects it names, with which synonym, in
//! which order, in which template), from the generator's random stream, and then written in
//! each language. So the Korean captions are the English ones translated: same images, same
//! named objects, same synonyms and templates, and adding Korean changed no English byte.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::glyphs::GLYPHS;

/// The language captions are written in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum CaptionLanguage {
    #[default]
    #[serde(rename = "en")]
    #[value(name = "en")]
    English,
    #[serde(rename = "ko")]
    #[value(name = "ko")]
    Korean,
}

impl CaptionLanguage {
    pub const ALL: [CaptionLanguage; 2] = [CaptionLanguage::English, CaptionLanguage::Korean];

    /// `en` / `ko` (ISO 639-1), as on the command line.
    pub fn code(self) -> &'static str {
        match self {
            CaptionLanguage::English => "en",
            CaptionLanguage::Korean => "ko",
        }
    }

    pub fn is_english(&self) -> bool {
        *self == CaptionLanguage::English
    }
}

/// What a caption says, before it is put into words: `(glyph, synonym)` indices into
/// [`GLYPHS`] in the order they are mentioned, and the template.
pub struct CaptionPlan {
    named: Vec<(usize, usize)>,
    template: usize,
}

/// Templates, by plan index; `{}` is the list of named objects.
const ENGLISH_TEMPLATES: [&str; 5] = [
    "a picture of {}.",
    "there is {} in this scene.",
    "{} on a gray background.",
    "a photo showing {}.",
    "we can see {} here.",
];

/// The same five sentences in Korean. `{}` is the list; `{이}` and `{을}` are the subject and
/// object particles, whose form depends on the list's last syllable.
const KOREAN_TEMPLATES: [&str; 5] = [
    "{}{이} 있는 그림.",
    "이 장면에는 {}{이} 있다.",
    "회색 배경 위의 {}.",
    "{}{을} 보여 주는 사진.",
    "여기서 {}{을} 볼 수 있다.",
];

/// Plans a caption for the glyphs in `placed` (indices into [`GLYPHS`]): each is named with
/// `mention_probability`, at least one always is, then the names are shuffled and a template
/// is picked. The random draws are exactly those of the English-only generator before Korean
/// was added, so English captions did not change.
pub fn plan_caption(rng: &mut StdRng, placed: &[usize], mention_probability: f64) -> CaptionPlan {
    let synonym = |rng: &mut StdRng, glyph: usize| {
        let words = GLYPHS[glyph].words;
        let chosen = words.choose(rng).expect("every glyph has words");
        let index = words.iter().position(|w| w == chosen).expect("chosen");
        (glyph, index)
    };
    let mut named: Vec<(usize, usize)> = Vec::new();
    for &glyph in placed {
        if rng.random_bool(mention_probability) {
            named.push(synonym(rng, glyph));
        }
    }
    if named.is_empty() {
        let glyph = *placed.choose(rng).expect("at least one object");
        named.push(synonym(rng, glyph));
    }
    named.shuffle(rng);
    let template = (0..ENGLISH_TEMPLATES.len())
        .collect::<Vec<_>>()
        .choose(rng)
        .copied()
        .expect("templates");
    CaptionPlan { named, template }
}

impl CaptionPlan {
    /// The caption in `language`.
    pub fn write(&self, language: CaptionLanguage) -> String {
        match language {
            CaptionLanguage::English => self.english(),
            CaptionLanguage::Korean => self.korean(),
        }
    }

    fn english(&self) -> String {
        let article = |word: &str| {
            if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
                format!("an {word}")
            } else {
                format!("a {word}")
            }
        };
        let mut phrases: Vec<String> = self
            .named
            .iter()
            .map(|&(glyph, synonym)| article(GLYPHS[glyph].words[synonym]))
            .collect();
        let list = match phrases.len() {
            1 => phrases.remove(0),
            _ => {
                let last = phrases.pop().expect("two or more");
                format!("{} and {last}", phrases.join(", "))
            }
        };
        ENGLISH_TEMPLATES[self.template].replace("{}", &list)
    }

    /// "A", "A와 B", "A, B와 C": the conjunction particle goes on the second-to-last noun; the
    /// template's particle takes its form from the last one.
    fn korean(&self) -> String {
        let nouns: Vec<&str> = self
            .named
            .iter()
            .map(|&(glyph, synonym)| GLYPHS[glyph].korean[synonym])
            .collect();
        let last = *nouns.last().expect("at least one named object");
        let list = match nouns.len() {
            1 => last.to_string(),
            n => {
                let before = nouns[n - 2];
                let mut list = nouns[..n - 2]
                    .iter()
                    .map(|noun| format!("{noun}, "))
                    .collect::<String>();
                list.push_str(&format!("{before}{} {last}", particle(before, "과", "와")));
                list
            }
        };
        KOREAN_TEMPLATES[self.template]
            .replace("{}", &list)
            .replace("{이}", particle(last, "이", "가"))
            .replace("{을}", particle(last, "을", "를"))
    }
}

/// Whether `word` ends in a Hangul syllable with a final consonant (batchim), which decides
/// between the two forms of a particle (이/가, 을/를, 과/와).
fn has_final_consonant(word: &str) -> bool {
    word.chars()
        .last()
        .map(|c| (0xAC00..=0xD7A3).contains(&(c as u32)) && !(c as u32 - 0xAC00).is_multiple_of(28))
        .unwrap_or(false)
}

pub(crate) fn particle(
    word: &str,
    after_consonant: &'static str,
    after_vowel: &'static str,
) -> &'static str {
    if has_final_consonant(word) {
        after_consonant
    } else {
        after_vowel
    }
}

/// Korean particles a noun may carry in a caption: a word is that noun when it is the noun
/// followed by one of these (Korean writes them attached: 고양이가, 개와).
const KOREAN_PARTICLES: [&str; 16] = [
    "이", "가", "을", "를", "은", "는", "와", "과", "도", "의", "에", "랑", "이랑", "하고", "만",
    "들",
];

/// The synthetic categories a caption names (by any of their English or Korean words, Korean
/// nouns with or without a particle), as COCO category ids in the order of [`GLYPHS`].
pub fn mentioned_categories(caption: &str) -> Vec<u32> {
    let lower = caption.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    let names = |noun: &str| {
        words.iter().any(|word| {
            *word == noun
                || word
                    .strip_prefix(noun)
                    .is_some_and(|rest| KOREAN_PARTICLES.contains(&rest))
        })
    };
    GLYPHS
        .iter()
        .filter(|glyph| glyph.words.iter().chain(glyph.korean).any(|w| names(w)))
        .map(|glyph| glyph.category_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn particles_follow_the_last_syllable() {
        assert!(has_final_consonant("사람"));
        assert!(!has_final_consonant("개"));
        assert!(!has_final_consonant("cat"));
        let plan = CaptionPlan {
            named: vec![(0, 0), (5, 0)],
            template: 1,
        };
        // 사람 ends in a consonant (과), 개 in a vowel (가).
        assert_eq!(
            plan.write(CaptionLanguage::Korean),
            "이 장면에는 사람과 개가 있다."
        );
        let plan = CaptionPlan {
            named: vec![(5, 1), (3, 0), (2, 0)],
            template: 3,
        };
        assert_eq!(
            plan.write(CaptionLanguage::Korean),
            "강아지, 새와 자동차를 보여 주는 사진."
        );
        assert_eq!(
            plan.write(CaptionLanguage::English),
            "a photo showing a puppy, a bird and a car."
        );
    }

    #[test]
    fn both_languages_name_the_same_categories() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let mut placed: Vec<usize> = (0..GLYPHS.len()).collect();
            placed.shuffle(&mut rng);
            placed.truncate(rng.random_range(2..=4));
            let plan = plan_caption(&mut rng, &placed, 0.5);
            let mut expected: Vec<u32> = plan
                .named
                .iter()
                .map(|&(g, _)| GLYPHS[g].category_id)
                .collect();
            expected.sort_by_key(|id| GLYPHS.iter().position(|g| g.category_id == *id));
            for language in CaptionLanguage::ALL {
                let caption = plan.write(language);
                assert_eq!(mentioned_categories(&caption), expected, "{caption}");
            }
        }
    }
}
