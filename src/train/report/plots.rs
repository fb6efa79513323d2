//! PNG charts with plotters: training curves and grouped bars with error bars.
//!
//! Text is drawn with the font of [`crate::io::font`], so charts render the same on machines
//! without system fonts.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::io::checkpoint::{write_atomic, CheckpointError};
use crate::io::font::{ensure_font, FAMILY};

const SERIES_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the palette; lines of one model over several seeds share a colour.
    pub color: usize,
}

/// One bar of a grouped bar chart: a mean with an error bar of `std` each side.
pub struct Bar {
    pub mean: f64,
    pub std: f64,
}

/// A group of bars, one per metric, under one label (e.g. one model).
pub struct BarGroup {
    pub label: String,
    pub bars: Vec<Bar>,
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

const SIZE: (u32, u32) = (800, 500);

/// Draws with `draw` on a white 800x500 canvas and writes it as a PNG (atomically).
fn render(path: &Path, draw: impl FnOnce(&Area) -> DrawResult) -> Result<(), CheckpointError> {
    ensure_font();
    let format_error = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut buffer = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| format_error(format!("cannot draw chart: {e}")))?;
        draw(&root).map_err(|e| format_error(format!("cannot draw chart: {e}")))?;
        root.present()
            .map_err(|e| format_error(format!("cannot draw chart: {e}")))?;
    }
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, buffer).expect("buffer is w*h*3");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format_error(e.to_string()))?;
    write_atomic(path, &png)
}

/// A chart builder with the title and axis-label room every vislang chart uses.
fn captioned<'a, 'b>(root: &'a Area<'b>, title: &str) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    builder
}

/// A horizontal reference line: a baseline or chance level the curves should be read against.
pub struct Reference {
    pub name: String,
    pub y: f64,
}

/// Draws `series` as lines against a shared x axis and writes a PNG. Series with the same
/// `color` share a colour, and only the first of them gets a legend entry.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), CheckpointError> {
    line_chart_with_references(path, title, x_label, y_label, series, &[])
}

/// The legend corner that the fewest points fall near, in chart coordinates scaled to [0, 1],
/// so that the legend does not cover the curves.
fn emptiest_corner(points: &[(f64, f64)]) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, (0.55, 1.0), (0.6, 1.0)),
        (SeriesLabelPosition::UpperLeft, (0.0, 0.45), (0.6, 1.0)),
        (SeriesLabelPosition::LowerRight, (0.55, 1.0), (0.0, 0.4)),
        (SeriesLabelPosition::LowerLeft, (0.0, 0.45), (0.0, 0.4)),
    ];
    let count = |(x0, x1): (f64, f64), (y0, y1): (f64, f64)| {
        points
            .iter()
            .filter(|(x, y)| (x0..=x1).contains(x) && (y0..=y1).contains(y))
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|(_, xs, ys)| count(*xs, *ys))
        .map(|(position, _, _)| position)
        .expect("four corners")
}

/// [`line_chart`] with dashed grey reference lines (a baseline, a chance level), each named
/// in the legend.
pub fn line_chart_with_references(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    references: &[Reference],
) -> Result<(), CheckpointError> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x_min, x_max, y_min, y_max) = (x_min.min(x), x_max.max(x), y_min.min(y), y_max.max(y));
    }
    if x_min > x_max {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    for reference in references.iter().filter(|r| r.y.is_finite()) {
        (y_min, y_max) = (y_min.min(reference.y), y_max.max(reference.y));
    }
    let y_pad = ((y_max - y_min) * 0.05).max(1e-6);
    // Every point, and the reference lines, scaled to [0, 1], to place the legend.
    let scaled: Vec<(f64, f64)> =
        series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .chain(references.iter().flat_map(|r| {
                (0..=10).map(move |i| (x_min + (x_max - x_min) * i as f64 / 10.0, r.y))
            }))
            .map(|(x, y)| {
                (
                    (x - x_min) / (x_max - x_min).max(1e-9),
                    (y - y_min + y_pad) / (y_max - y_min + 2.0 * y_pad),
                )
            })
            .collect();
    let legend_position = emptiest_corner(&scaled);
    render(path, |root| {
        let mut chart = captioned(root, title).build_cartesian_2d(
            x_min..x_max.max(x_min + 1e-9),
            (y_min - y_pad)..(y_max + y_pad),
        )?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 14))
            .draw()?;
        for reference in references {
            let grey = RGBColor(110, 110, 110);
            let y = reference.y;
            let dashes = (0..40).map(|i| {
                let a = x_min + (x_max - x_min) * (2 * i) as f64 / 80.0;
                let b = x_min + (x_max - x_min) * (2 * i + 1) as f64 / 80.0;
                PathElement::new(vec![(a, y), (b, y)], grey.stroke_width(2))
            });
            chart
                .draw_series(dashes)?
                .label(&reference.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], grey.stroke_width(2))
                });
        }
        let mut labelled = Vec::new();
        for s in series {
            let color = SERIES_COLORS[s.color % SERIES_COLORS.len()];
            let drawn = chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?;
            if !labelled.contains(&s.color) {
                labelled.push(s.color);
                drawn.label(&s.name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
        chart
            .configure_series_labels()
            .position(legend_position)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
        Ok(())
    })
}

/// Draws grouped bars (one group per label, one bar per metric) with error bars.
pub fn grouped_bar_chart(
    path: &Path,
    title: &str,
    metric_names: &[&str],
    groups: &[BarGroup],
) -> Result<(), CheckpointError> {
    let n_metrics = metric_names.len().max(1);
    let group_width = n_metrics as f64 + 1.0;
    let x_max = groups.len() as f64 * group_width;
    render(path, |root| {
        let mut chart = captioned(root, title).build_cartesian_2d(0.0..x_max, 0.0..1.05)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .label_style((FAMILY, 14))
            .draw()?;
        // Each group's label, centred under its bars (mesh ticks would fall where they may).
        let label_style =
            TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (g, group) in groups.iter().enumerate() {
            let centre = g as f64 * group_width + group_width / 2.0;
            let (x, y) = chart.backend_coord(&(centre, 0.0));
            root.draw(&Text::new(
                group.label.clone(),
                (x, y + 8),
                label_style.clone(),
            ))?;
        }
        for (m, name) in metric_names.iter().enumerate() {
            let color = SERIES_COLORS[m % SERIES_COLORS.len()];
            // Bar m of group g spans [x0, x0 + 1).
            let x0 = |g: usize| g as f64 * group_width + 0.5 + m as f64;
            let bars = groups.iter().enumerate().filter_map(|(g, group)| {
                group.bars.get(m).map(|bar| {
                    Rectangle::new(
                        [(x0(g) + 0.05, 0.0), (x0(g) + 0.95, bar.mean)],
                        color.filled(),
                    )
                })
            });
            chart.draw_series(bars)?.label(*name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled())
            });
            let whiskers = groups.iter().enumerate().filter_map(|(g, group)| {
                group.bars.get(m).map(|bar| {
                    let x = x0(g) + 0.5;
                    PathElement::new(
                        vec![(x, bar.mean - bar.std), (x, bar.mean + bar.std)],
                        BLACK.stroke_width(2),
                    )
                })
            });
            chart.draw_series(whiskers)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()?;
        Ok(())
    })
}
