//! The PNG charts: bitmap backend, text drawn with ab_glyph from the DejaVu font shipped in
//! the `dejavu` crate, so nothing depends on the machine's fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::approaches::Approach;
use crate::measure::{f3, median};
use crate::{Config, Results};

const FONT: &str = "sans-serif";

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub fn color(a: Approach) -> RGBColor {
    match a {
        Approach::Rmq => RGBColor(0xd6, 0x27, 0x28),
        Approach::RmqLua => RGBColor(0xff, 0x98, 0x96),
        Approach::Streams => RGBColor(0x1f, 0x77, 0xb4),
        Approach::StreamsDel => RGBColor(0xae, 0xc7, 0xe8),
        Approach::Lists => RGBColor(0x2c, 0xa0, 0x2c),
        Approach::ListsScript => RGBColor(0x98, 0xdf, 0x8a),
    }
}

fn anchored(size: u32, v: plotters::style::text_anchor::VPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
        .color(&BLACK)
        .pos(plotters::style::text_anchor::Pos::new(plotters::style::text_anchor::HPos::Center, v))
}

/// Centred on the point, above it.
fn above(size: u32) -> TextStyle<'static> {
    anchored(size, plotters::style::text_anchor::VPos::Bottom)
}

/// Centred on the point, below it.
fn below(size: u32) -> TextStyle<'static> {
    anchored(size, plotters::style::text_anchor::VPos::Top)
}

fn e<E: std::fmt::Debug>(x: E) -> String {
    format!("chart: {x:?}")
}

/// Full-cycle Redis CPU per message, one group of bars per workload, one bar per approach.
pub fn cpu_by_approach(path: &Path, cfg: &Config, res: &Results) -> Result<(), String> {
    fonts();
    let groups: Vec<(usize, String)> = cfg.workloads.iter().enumerate().map(|(i, w)| (i, w.label())).collect();
    let aps = &cfg.approaches;
    let value = |wi: usize, a: Approach| -> Option<f64> {
        res.cycle.get(&(wi, a)).map(|v| median(&v.iter().map(|s| s.cpu_cycle()).collect::<Vec<_>>()))
    };
    let ymax = groups.iter().flat_map(|(wi, _)| aps.iter().filter_map(move |a| value(*wi, *a))).fold(0.0, f64::max).max(1e-3) * 1.15;
    let width = (220 * groups.len() as u32).max(800);
    let root = BitMapBackend::new(path, (width, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (plot, legend) = root.split_vertically(580);
    let mut chart = ChartBuilder::on(&plot)
        .caption("Redis CPU per message, full cycle push → fetch → ack (µs, lower is better)", (FONT, 20))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..ymax)
        .map_err(e)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc("µs CPU / message").label_style((FONT, 13)).draw().map_err(e)?;
    let slot = 0.84 / aps.len() as f64;
    for (gi, (wi, _)) in groups.iter().enumerate() {
        for (ai, a) in aps.iter().enumerate() {
            if let Some(v) = value(*wi, *a) {
                let x0 = gi as f64 + 0.08 + ai as f64 * slot;
                chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, v)], color(*a).filled()))).map_err(e)?;
                chart.draw_series(std::iter::once(Text::new(f3(v), (x0 + slot * 0.45, v + ymax * 0.005), above(10)))).map_err(e)?;
            }
        }
    }
    // Workload names under each group.
    for (gi, (_, label)) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
        plot.draw(&Text::new(label.clone(), (px, py + 8), below(14))).map_err(e)?;
    }
    legend_row(&legend, aps)?;
    root.present().map_err(e)?;
    Ok(())
}

fn legend_row(area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, aps: &[Approach]) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let per_row = 3;
    let step = (w as i32 - 80) / per_row;
    for (i, a) in aps.iter().enumerate() {
        let x = 70 + (i as i32 % per_row) * step;
        let y = 4 + (i as i32 / per_row) * 26;
        area.draw(&Rectangle::new([(x, y), (x + 16, y + 16)], color(*a).filled())).map_err(e)?;
        area.draw(&Text::new(a.name().to_string(), (x + 22, y + 1), (FONT, 14).into_font().color(&BLACK))).map_err(e)?;
    }
    Ok(())
}

/// Push, fetch and ack stacked, per approach, for workload `wi` (the stack is the sum of the
/// phases' medians, so it can differ in the last digit from the median of the cycles).
pub fn phases(path: &Path, cfg: &Config, res: &Results, wi: usize) -> Result<(), String> {
    fonts();
    let Some(w) = cfg.workloads.get(wi) else {
        return Ok(());
    };
    let aps: Vec<Approach> = cfg.approaches.iter().copied().filter(|a| res.cycle.contains_key(&(wi, *a))).collect();
    if aps.is_empty() {
        return Ok(());
    }
    let phase = |a: Approach, p: usize| median(&res.cycle[&(wi, a)].iter().map(|s| s.cpu[p]).collect::<Vec<_>>());
    let ymax = aps.iter().map(|a| (0..3).map(|p| phase(*a, p)).sum::<f64>()).fold(0.0, f64::max).max(1e-3) * 1.25;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Redis CPU per message by phase ({}; µs)", w.label()), (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..aps.len() as f64, 0f64..ymax)
        .map_err(e)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc("µs CPU / message").label_style((FONT, 13)).draw().map_err(e)?;
    let shades = [RGBColor(0x4c, 0x72, 0xb0), RGBColor(0xdd, 0x84, 0x52), RGBColor(0x55, 0xa8, 0x68)];
    let names = ["push", "fetch", "ack"];
    for (i, a) in aps.iter().enumerate() {
        let mut y = 0.0;
        for (p, shade) in shades.iter().enumerate() {
            let v = phase(*a, p);
            chart
                .draw_series(std::iter::once(Rectangle::new([(i as f64 + 0.2, y), (i as f64 + 0.8, y + v)], shade.filled())))
                .map_err(e)?;
            y += v;
        }
        chart.draw_series(std::iter::once(Text::new(f3(y), (i as f64 + 0.5, y + ymax * 0.005), above(13)))).map_err(e)?;
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(a.name().to_string(), (px, py + 8), below(13))).map_err(e)?;
    }
    for (p, name) in names.iter().enumerate() {
        let x = 90 + p as i32 * 110;
        root.draw(&Rectangle::new([(x, 50), (x + 16, 66)], shades[p].filled())).map_err(e)?;
        root.draw(&Text::new(name.to_string(), (x + 22, 51), (FONT, 14).into_font().color(&BLACK))).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}
