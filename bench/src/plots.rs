//! The report's charts: bars (one value per label) and curves over a log
//! scale, as PNG files drawn with plotters.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Debian's fonts-dejavu-core: plotters draws text with a TrueType font it
/// is given (no system font lookup).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (960, 540);
const OURS: RGBColor = RGBColor(31, 119, 180);
const THEIRS: RGBColor = RGBColor(255, 127, 14);
const OTHER: [RGBColor; 4] = [
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Registers the font once; every chart needs it.
pub fn init() -> Result<()> {
    let bytes = std::fs::read(FONT).with_context(|| format!("read {FONT} (fonts-dejavu-core)"))?;
    register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| anyhow!("{FONT} is not a font plotters can read"))
}

/// One bar: its label, its value, and whether it is netsvc's.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub ours: bool,
}

/// Vertical bars, netsvc's in one colour and the others' in another.
pub fn bars(path: &Path, title: &str, unit: &str, bars: &[Bar]) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let top = bars.iter().map(|b| b.value).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(90)
        .y_label_area_size(70)
        .build_cartesian_2d((0..bars.len().saturating_sub(1)).into_segmented(), 0.0..top.max(1e-9))
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .x_labels(bars.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.label.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 13))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let colour = if b.ours { OURS } else { THEIRS };
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), b.value)],
                colour.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .map_err(draw_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{:.2}", b.value),
                (SegmentValue::CenterOf(i), b.value),
                ("sans-serif", 14).into_font(),
            )
        }))
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// One curve of a [`curves`] chart.
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Curves over a logarithmic x axis (network sizes), y from zero.
pub fn curves(path: &Path, title: &str, x_desc: &str, y_desc: &str, curves: &[Curve]) -> Result<()> {
    let xs = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let top = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.2;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..top.max(1e-9))
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(draw_error)?;
    for (i, c) in curves.iter().enumerate() {
        let colour = OTHER[i % OTHER.len()];
        chart
            .draw_series(LineSeries::new(c.points.iter().copied(), colour.stroke_width(3)))
            .map_err(draw_error)?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(c.points.iter().map(|&p| Circle::new(p, 5, colour.filled())))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}
