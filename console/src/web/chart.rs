//! The throughput chart: push/s and ack/s of the last minutes, drawn on the server as inline
//! SVG (no chart library, no script).

use std::fmt::Write;
use std::time::Duration;

use maud::{html, Markup, PreEscaped};

use super::fmt;
use crate::history::Series;

const W: f64 = 640.0;
const H: f64 = 150.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// A round number ≥ v for the top of the y axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn line(series: &Series, pick: fn(&(u64, f64, f64)) -> f64, x0: u64, span: f64, top: f64) -> String {
    let mut pts = String::new();
    for p in series {
        let x = LEFT + (p.0.saturating_sub(x0) as f64 / span) * (W - LEFT - 4.0);
        let y = TOP + (1.0 - pick(p) / top) * (H - TOP - BOTTOM);
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    pts
}

/// The chart of `series` over the `window` that ends at `now_ms`.
pub fn throughput(series: &Series, window: Duration, now_ms: u64) -> Markup {
    // The window, or less while the console has watched for less (at least a minute).
    let window_ms = window.as_millis().max(1) as u64;
    let watched = series.first().map_or(window_ms, |p| now_ms.saturating_sub(p.0));
    let span_ms = watched.clamp(60_000.min(window_ms), window_ms);
    let x0 = now_ms.saturating_sub(span_ms);
    let series: Series = series.iter().filter(|p| p.0 >= x0).copied().collect();
    let top = nice_max(series.iter().map(|p| p.1.max(p.2)).fold(0.0, f64::max));
    let span = span_ms as f64;
    let push = line(&series, |p| p.1, x0, span, top);
    let ack = line(&series, |p| p.2, x0, span, top);
    let base = H - BOTTOM;
    let label = fmt::age(span_ms);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H) } role="img"
                aria-label={ "push and ack rate over the last " (label) } {
                line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(base) {}
                line.axis x1=(LEFT) y1=(base) x2=(W - 4.0) y2=(base) {}
                line.grid x1=(LEFT) y1=(TOP) x2=(W - 4.0) y2=(TOP) {}
                text.tick x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" { (fmt::rate(top)) }
                text.tick x=(LEFT - 6.0) y=(base) text-anchor="end" { "0" }
                text.tick x=(LEFT) y=(H - 4.0) { "-" (label) }
                text.tick x=(W - 4.0) y=(H - 4.0) text-anchor="end" { "now" }
                @if series.is_empty() {
                    text.tick x=(W / 2.0) y=(H / 2.0) text-anchor="middle" { "collecting data…" }
                } @else {
                    polyline.push points=(PreEscaped(push)) {}
                    polyline.ack points=(PreEscaped(ack)) {}
                }
            }
            figcaption {
                span.key.push { "push/s" } " " span.key.ack { "ack/s" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_a_round_number_above_the_peak() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }
}
