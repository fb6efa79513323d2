//! The synthetic set's object categories: twelve COCO categories, each drawn as a glyph (a
//! shape in a colour) and named in captions by a few words, in English and in Korean. Shared by
//! the generator (`synthetic`), which draws them, and the captions (`synthetic_captions`),
//! which name them.

/// How a category is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Disk,
    Square,
    Triangle,
    Ring,
    Cross,
    Diamond,
}

/// A category of the synthetic set: its COCO id, the glyph that draws it, and caption words.
pub struct Glyph {
    pub category_id: u32,
    pub shape: Shape,
    pub color: [u8; 3],
    /// English caption words: the official COCO name first, then synonyms.
    pub words: &'static [&'static str],
    /// The same words in Korean, in the same order (so a caption's plan names one word in
    /// each language; see [`super::synthetic_captions`]).
    pub korean: &'static [&'static str],
}

const RED: [u8; 3] = [220, 40, 40];
const GREEN: [u8; 3] = [40, 190, 60];
const BLUE: [u8; 3] = [40, 80, 230];
const YELLOW: [u8; 3] = [235, 210, 40];
const MAGENTA: [u8; 3] = [210, 50, 200];
const CYAN: [u8; 3] = [40, 200, 210];

/// Twelve COCO categories, each a shape in a colour. Every shape and every colour is used by
/// two categories, so a model must bind shape to colour.
#[rustfmt::skip]
pub const GLYPHS: [Glyph; 12] = [
    glyph(1, Shape::Disk, RED, &["person", "man", "woman"], &["사람", "남자", "여자"]),
    glyph(2, Shape::Disk, BLUE, &["bicycle", "bike"], &["자전거", "두발자전거"]),
    glyph(3, Shape::Square, GREEN, &["car", "automobile"], &["자동차", "승용차"]),
    glyph(16, Shape::Square, YELLOW, &["bird", "sparrow"], &["새", "참새"]),
    glyph(17, Shape::Triangle, RED, &["cat", "kitten"], &["고양이", "새끼고양이"]),
    glyph(18, Shape::Triangle, CYAN, &["dog", "puppy"], &["개", "강아지"]),
    glyph(28, Shape::Ring, MAGENTA, &["umbrella", "parasol"], &["우산", "양산"]),
    glyph(44, Shape::Ring, GREEN, &["bottle", "flask"], &["병", "플라스크"]),
    glyph(47, Shape::Cross, BLUE, &["cup", "mug"], &["컵", "머그잔"]),
    glyph(52, Shape::Cross, YELLOW, &["banana", "plantain"], &["바나나", "플랜틴"]),
    glyph(62, Shape::Diamond, CYAN, &["chair", "seat"], &["의자", "좌석"]),
    glyph(85, Shape::Diamond, MAGENTA, &["clock", "timepiece"], &["시계", "벽시계"]),
];

const fn glyph(
    category_id: u32,
    shape: Shape,
    color: [u8; 3],
    words: &'static [&'static str],
    korean: &'static [&'static str],
) -> Glyph {
    Glyph {
        category_id,
        shape,
        color,
        words,
        korean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::categories::COCO_CATEGORIES;

    #[test]
    fn every_shape_and_colour_is_shared_by_two_coco_categories() {
        for each in &GLYPHS {
            assert_eq!(GLYPHS.iter().filter(|g| g.shape == each.shape).count(), 2);
            assert_eq!(GLYPHS.iter().filter(|g| g.color == each.color).count(), 2);
            // A caption plan picks a synonym by index, in both languages.
            assert_eq!(each.words.len(), each.korean.len(), "{:?}", each.words);
            // Its id is a COCO category, and the official name is one of its caption words.
            assert!(COCO_CATEGORIES
                .iter()
                .any(|(id, name, _)| *id == each.category_id && each.words.contains(name)));
        }
    }
}
