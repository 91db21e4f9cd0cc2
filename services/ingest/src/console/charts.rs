//! The overview's charts, drawn on the server as SVG: the geometry is
//! plain functions of the figures (tested below), the drawing a thin
//! layer over it. No inline styles (the Content-Security-Policy forbids
//! them): colours come from classes in `console.css`.

use maud::{Markup, html};

/// Chart size, in SVG user units (the `viewBox`; CSS scales it).
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 120.0;
/// Room left of the plot for the scale.
const LEFT: f64 = 36.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 18.0;

/// One line of a chart: its name (the legend), its CSS class, one value
/// per minute, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: &'static str,
    pub class: &'static str,
    pub values: Vec<i64>,
}

/// The top of a chart's scale: the largest value rounded up to 1, 2 or 5
/// times a power of ten (at least 1), so that its label reads well.
pub fn scale_max(series: &[Series]) -> i64 {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut power = 1i64;
    loop {
        for step in [1, 2, 5] {
            let top = step * power;
            if top >= max {
                return top;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// The `points` of a polyline of `values` in a plot `width` × `height`
/// at (`left`, `top`), scaled to `max`: evenly spaced, the first value at
/// the left edge and the last at the right.
pub fn polyline(values: &[i64], max: i64, left: f64, top: f64, width: f64, height: f64) -> String {
    let n = values.len();
    let step = if n > 1 { width / (n - 1) as f64 } else { 0.0 };
    let max = max.max(1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = left + step * i as f64;
            let y = top + height - (*v).clamp(0, i64::MAX) as f64 / max * height;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A bar of a bar chart, in SVG units.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: i64,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// Bars for `values` side by side across `width`, their heights scaled
/// to the largest value.
pub fn bars(values: &[(String, i64)], width: f64, height: f64) -> Vec<Bar> {
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let slot = width / values.len().max(1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let h = (*value).max(0) as f64 / max * height;
            Bar {
                label: label.clone(),
                value: *value,
                x: i as f64 * slot + slot * 0.15,
                y: height - h,
                width: slot * 0.7,
                height: h,
            }
        })
        .collect()
}

/// A line chart of per-minute `series` over the last `series[0].len()`
/// minutes.
pub fn lines(title: &str, series: &[Series]) -> Markup {
    let max = scale_max(series);
    let (plot_w, plot_h) = (WIDTH - LEFT - 4.0, HEIGHT - TOP - BOTTOM);
    let minutes = series.first().map_or(0, |s| s.values.len());
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                title { (title) }
                line.axis x1=(LEFT) y1=(TOP + plot_h) x2=(LEFT + plot_w) y2=(TOP + plot_h) {}
                line.grid x1=(LEFT) y1=(TOP) x2=(LEFT + plot_w) y2=(TOP) {}
                text.scale x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (max) }
                text.scale x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" { "0" }
                text.scale x=(LEFT) y=(HEIGHT - 4.0) { "-" (minutes) " min" }
                text.scale x=(LEFT + plot_w) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
                @for s in series {
                    polyline class=(format!("series {}", s.class))
                        points=(polyline(&s.values, max, LEFT, TOP, plot_w, plot_h)) {}
                }
            }
            ul.legend {
                @for s in series {
                    li { span class=(format!("swatch {}", s.class)) {} (s.name) ": " strong { (s.values.iter().sum::<i64>()) } }
                }
            }
        }
    }
}

/// A bar chart of labelled counts.
pub fn bar_chart(title: &str, class: &str, values: &[(String, i64)]) -> Markup {
    // Room above the tallest bar for its value.
    let top = TOP + 12.0;
    let plot_h = HEIGHT - BOTTOM - top;
    let drawn = bars(values, WIDTH, plot_h);
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                title { (title) }
                @for b in &drawn {
                    rect class=(format!("bar {class}")) x=(format!("{:.1}", b.x)) y=(format!("{:.1}", top + b.y))
                        width=(format!("{:.1}", b.width)) height=(format!("{:.1}", b.height)) {
                        title { (b.label) ": " (b.value) }
                    }
                    text.value x=(format!("{:.1}", b.x + b.width / 2.0)) y=(format!("{:.1}", top + b.y - 3.0)) text-anchor="middle" { (b.value) }
                    text.scale x=(format!("{:.1}", b.x + b.width / 2.0)) y=(HEIGHT - 4.0) text-anchor="middle" { (b.label) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: Vec<i64>) -> Series {
        Series {
            name: "s",
            class: "a",
            values,
        }
    }

    #[test]
    fn scales_end_on_round_numbers() {
        assert_eq!(scale_max(&[]), 1);
        assert_eq!(scale_max(&[series(vec![0, 0])]), 1);
        assert_eq!(scale_max(&[series(vec![3])]), 5);
        assert_eq!(scale_max(&[series(vec![7]), series(vec![11])]), 20);
        assert_eq!(scale_max(&[series(vec![100])]), 100);
        assert_eq!(scale_max(&[series(vec![101])]), 200);
    }

    #[test]
    fn a_line_spans_the_plot_and_scales_to_its_top() {
        let points = polyline(&[0, 5, 10], 10, 0.0, 0.0, 100.0, 50.0);
        assert_eq!(points, "0.0,50.0 50.0,25.0 100.0,0.0");
        // Offset, and a negative value drawn as zero.
        assert_eq!(polyline(&[-3], 10, 10.0, 5.0, 100.0, 50.0), "10.0,55.0");
        assert_eq!(polyline(&[], 10, 0.0, 0.0, 100.0, 50.0), "");
    }

    #[test]
    fn bars_share_the_width_and_scale_to_the_largest() {
        let drawn = bars(&[("a".into(), 2), ("b".into(), 4)], 100.0, 40.0);
        assert_eq!(drawn.len(), 2);
        assert_eq!(drawn[0].x, 7.5);
        assert_eq!(drawn[1].x, 57.5);
        assert_eq!(drawn[0].width, 35.0);
        assert_eq!(drawn[1].height, 40.0);
        assert_eq!(drawn[1].y, 0.0);
        assert_eq!(drawn[0].height, 20.0);
        assert_eq!(drawn[0].y, 20.0);
        let none = bars(&[("a".into(), 0)], 100.0, 40.0);
        assert_eq!(none[0].height, 0.0, "all zero: flat, no division by zero");
    }

    #[test]
    fn charts_escape_their_labels() {
        let chart = bar_chart("t", "c", &[("<script>".into(), 1)]).into_string();
        assert!(!chart.contains("<script>"));
        assert!(chart.contains("&lt;script&gt;"));
    }
}
