//! The plot: per-page cost against CPU threads, one panel per mode and
//! size, a line for ours, each floor and (when given) UVM. PNG, drawn by
//! plotters with text from a font compiled in (DejaVu Sans), so no system
//! font library is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::HerdRow;
use super::sample::Impl;
use super::table::size_name;
use super::BenchError;

const PANEL: (u32, u32) = (640, 420);

fn color(imp: Impl) -> RGBColor {
    match imp {
        Impl::Ours => RGBColor(0xc0, 0x39, 0x2b),
        Impl::FloorCopy => RGBColor(0x80, 0x80, 0x80),
        Impl::FloorMinor => RGBColor(0x24, 0x71, 0xa3),
        Impl::Memcpy => RGBColor(0x1e, 0x84, 0x49),
        Impl::Uvm => RGBColor(0x11, 0x11, 0x11),
    }
}

fn register_font() -> Result<(), BenchError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| BenchError::Io("the plot's font did not load".into()))
}

fn draw_err(e: impl std::fmt::Debug) -> BenchError {
    BenchError::Io(format!("plot: {e:?}"))
}

/// One panel's lines: implementation -> (thread count, us per page).
type Lines = BTreeMap<Impl, Vec<(u64, f64)>>;

fn panels(rows: &[HerdRow]) -> BTreeMap<(u8, u64), (String, Lines)> {
    let mut out: BTreeMap<(u8, u64), (String, Lines)> = BTreeMap::new();
    for r in rows {
        let rank = u8::from(r.mode != "touch-pg");
        let title = format!("{}, {}", r.mode, size_name(r.size_kib));
        let (_, lines) = out
            .entry((rank, r.size_kib))
            .or_insert_with(|| (title, BTreeMap::new()));
        for (&imp, &v) in &r.us_per_page {
            lines.entry(imp).or_default().push((r.threads, v));
        }
    }
    out
}

/// Draws the per-page cost against threads into `dir/herd-per-page.png`.
pub fn herd_per_page(rows: &[HerdRow], dir: &Path) -> Result<PathBuf, BenchError> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Io(format!("{}: {e}", dir.display())))?;
    let path = dir.join("herd-per-page.png");
    let panels = panels(rows);
    if panels.is_empty() {
        return Err(BenchError::Io("nothing to plot".into()));
    }
    let cols = panels.len().min(2);
    let rows_n = panels.len().div_ceil(cols);
    let size = (PANEL.0 * cols as u32, PANEL.1 * rows_n as u32);
    {
        let root = BitMapBackend::new(&path, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let areas = root.split_evenly((rows_n, cols));
        for (area, (title, lines)) in areas.iter().zip(panels.values()) {
            draw_panel(area, title, lines)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(path)
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    lines: &Lines,
) -> Result<(), BenchError> {
    // Threads sit at even spacing (1, 2, 4, 8, 16 read as doublings).
    let mut threads: Vec<u64> = lines.values().flatten().map(|p| p.0).collect();
    threads.sort_unstable();
    threads.dedup();
    let at = |t: u64| threads.iter().position(|x| *x == t).unwrap_or(0) as f64;
    let ymax = lines
        .values()
        .flatten()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let xmax = (threads.len().max(2) - 1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.3..xmax + 0.3, 0.0..ymax)
        .map_err(draw_err)?;
    let label = |x: &f64| {
        let i = x.round();
        match threads.get(i as usize) {
            Some(t) if (x - i).abs() < 1e-6 && i >= 0.0 => t.to_string(),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .x_labels(threads.len().max(2))
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&label)
        .x_desc("CPU threads")
        .y_desc("us per 4 KiB page")
        .draw()
        .map_err(draw_err)?;
    for (&imp, pts) in lines {
        let mut pts: Vec<(f64, f64)> = pts.iter().map(|&(t, v)| (at(t), v)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = color(imp);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(draw_err)?
            .label(imp.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}
