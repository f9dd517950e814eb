//! The experiment's pictures, as PNG files: lines of throughput per system, and bars of each
//! server's share of the load. Labels are drawn in DejaVu Sans (Debian's fonts-dejavu-core).

use anyhow::{Context, Result, bail};
use plotters::{
    coord::{Shift, types::RangedCoordf64},
    prelude::*,
};
use std::{path::Path, sync::OnceLock};

/// Where the font may be.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const SIZE: (u32, u32) = (960, 600);
/// One colour per system, in the sweep's order.
const COLOURS: [RGBColor; 5] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
];

/// Registers the font once; fails with what to install when it is missing.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or_else(|| {
                    format!(
                        "no DejaVu Sans font at {FONT_PATHS:?}: apt-get install fonts-dejavu-core"
                    )
                })?;
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| "DejaVu Sans could not be read as a font".to_owned())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// A named line of (x, y) points, with error bars (x, y, low, high) where measured.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub ranges: Vec<(f64, f64, f64, f64)>,
}

/// Lines of `series` over `x_range`, the y axis from 0.
pub fn lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x_range: (f64, f64),
    series: &[Series],
) -> Result<()> {
    font()?;
    let y_max = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.ranges.iter().map(|r| r.2))
        })
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range.0..x_range.1, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 16))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(3)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 5, c.filled())))?;
        chart.draw_series(
            s.ranges
                .iter()
                .filter(|r| r.2 < r.3)
                .map(|&(x, y, low, high)| {
                    ErrorBar::new_vertical(x, low, y, high, c.stroke_width(2), 10)
                }),
        )?;
    }
    legend_and_write(chart, &root, SeriesLabelPosition::LowerLeft, path)
}

/// Bars of each server's share of the replies, one group (and colour) per system, with the
/// even share marked.
pub fn server_shares(path: &Path, title: &str, groups: &[(String, Vec<f64>)]) -> Result<()> {
    font()?;
    let servers = groups.iter().map(|g| g.1.len()).max().unwrap_or(0);
    if servers == 0 {
        bail!("no server shares to draw");
    }
    let y_max = groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .fold(1.0 / servers as f64, f64::max)
        * 1.2;
    let width = (groups.len() * (servers + 1)) as f64;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..width, 0.0..y_max * 100.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("servers 0..N, grouped by system")
        .y_desc("share of the replies (%)")
        .label_style(("sans-serif", 16))
        .draw()?;
    for (g, (name, shares)) in groups.iter().enumerate() {
        let c = colour(g);
        let base = (g * (servers + 1)) as f64;
        chart
            .draw_series(shares.iter().enumerate().map(|(j, &share)| {
                let x = base + j as f64;
                Rectangle::new([(x + 0.1, 0.0), (x + 0.9, share * 100.0)], c.filled())
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
    }
    let even = 100.0 / servers as f64;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, even), (width, even)],
            BLACK.stroke_width(2),
        ))?
        .label("even share")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    legend_and_write(chart, &root, SeriesLabelPosition::UpperRight, path)
}

/// Draws the chart's legend at `position` and writes the picture to `path`.
fn legend_and_write<'a, 'b: 'a>(
    mut chart: ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    root: &DrawingArea<BitMapBackend<'b>, Shift>,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG file's signature and its IHDR's width and height.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    }

    #[test]
    fn the_charts_are_written_as_pngs() {
        let dir = std::env::temp_dir().join(format!("pegasus-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = dir.join("lines.png");
        let series = [Series {
            name: "pegasus".into(),
            points: vec![(0.0, 15_000.0), (1.2, 14_800.0)],
            ranges: vec![
                (0.0, 15_000.0, 14_000.0, 15_500.0),
                (1.2, 14_800.0, 14_800.0, 14_800.0),
            ],
        }];
        lines(&line, "t", ("x", "y"), (0.0, 1.3), &series).unwrap();
        assert_eq!(png_size(&line), SIZE);
        let bars = dir.join("bars.png");
        server_shares(&bars, "t", &[("kernel".into(), vec![0.5, 0.25, 0.25])]).unwrap();
        assert_eq!(png_size(&bars), SIZE);
        assert!(server_shares(&bars, "t", &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
