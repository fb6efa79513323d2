//! The one font vislang draws text with: DejaVu Sans, embedded in the binary (`assets/`, with its
//! licence), so charts and labelled image grids render the same on machines without fonts.

use std::sync::Once;

use plotters::style::{register_font, FontStyle};

/// The family name text styles use after [`ensure_font`].
pub const FAMILY: &str = "sans-serif";

const DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters (once per process).
pub fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("the embedded DejaVu Sans font does not parse");
        }
    });
}
