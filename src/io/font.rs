//! The fonts vislang draws text with, embedded in the binary (`assets/`, with their licences),
//! so charts and labelled image grids render the same on machines without fonts: DejaVu Sans,
//! and for text with Hangul, Vislang Hangul Sans (a subset of NanumGothic, which also has
//! Latin letters; DejaVu has no Hangul and would draw empty boxes).

use std::sync::Once;

use plotters::style::{register_font, FontStyle};

/// The family name of DejaVu Sans, after [`ensure_font`].
pub const FAMILY: &str = "sans-serif";
/// The family name of the Hangul font, after [`ensure_font`].
pub const HANGUL_FAMILY: &str = "hangul-sans";

const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const HANGUL_SANS: &[u8] = include_bytes!("../../assets/HangulSans.ttf");

/// Registers the embedded fonts with plotters (once per process).
pub fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        for (family, bytes) in [(FAMILY, DEJAVU_SANS), (HANGUL_FAMILY, HANGUL_SANS)] {
            if register_font(family, FontStyle::Normal, bytes).is_err() {
                panic!("the embedded font {family} does not parse");
            }
        }
    });
}

/// The family to draw `text` in: the Hangul font if it holds Hangul (syllables or jamo) or
/// CJK punctuation, DejaVu Sans otherwise.
pub fn family_for(text: &str) -> &'static str {
    let hangul = |c: char| matches!(c as u32, 0x1100..=0x11FF | 0x3000..=0x303F | 0x3130..=0x318F | 0xAC00..=0xD7AF);
    if text.chars().any(hangul) {
        HANGUL_FAMILY
    } else {
        FAMILY
    }
}
