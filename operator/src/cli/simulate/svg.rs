//! The plot of a simulation as a standalone SVG: the triggers' values and their targets above,
//! the replicas (actual, and what ebb and the HPA wanted) below, ebb's scale Events as vertical
//! marks. Hand-written SVG 1.1, every series a `<g>` or `<path>` with an `id` (`value-<i>`,
//! `target-<i>`, `replicas`, `ebb-desired`, `hpa-desired`, `events`), text escaped.

use std::fmt::Write as _;

use super::{Actor, Report};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 36.0;
const PANEL: f64 = 200.0;
const GAP: f64 = 56.0;
const COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Escapes text for XML content and attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

struct Axis {
    t_max: f64,
    plot_w: f64,
}

impl Axis {
    fn x(&self, t: f64) -> f64 {
        LEFT + t / self.t_max * self.plot_w
    }
}

/// Scales values of a panel starting at `top` to its height.
fn y_of(v: f64, v_max: f64, top: f64) -> f64 {
    top + PANEL - (v / v_max).clamp(0.0, 1.05) * PANEL
}

/// A step path (the value holds until the next point); `None` breaks the line.
fn step_path(points: &[(f64, Option<f64>)], axis: &Axis, v_max: f64, top: f64) -> String {
    let mut d = String::new();
    let mut last: Option<f64> = None;
    for (t, v) in points {
        let x = axis.x(*t);
        match (v, last) {
            (Some(v), Some(_)) => {
                let _ = write!(d, "H{x:.1}V{:.1}", y_of(*v, v_max, top));
            }
            (Some(v), None) => {
                let _ = write!(d, "M{x:.1},{:.1}", y_of(*v, v_max, top));
            }
            (None, Some(_)) => {
                let _ = write!(d, "H{x:.1}");
            }
            (None, None) => {}
        }
        last = *v;
    }
    if last.is_some() {
        let _ = write!(d, "H{:.1}", axis.x(axis.t_max));
    }
    d
}

fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|m| *m >= v)
        .unwrap_or(v)
}

fn axis_labels(s: &mut String, v_max: f64, top: f64, title: &str) {
    for i in 0..=4 {
        let v = v_max * f64::from(i) / 4.0;
        let y = y_of(v, v_max, top);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_number(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        top - 10.0,
        escape(title)
    );
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// The report as an SVG document.
pub fn render_svg(r: &Report) -> String {
    let rows = &r.timeline.rows;
    let t_max = rows.last().map_or(1.0, |row| row.time).max(1.0);
    let axis = Axis {
        t_max,
        plot_w: WIDTH - LEFT - RIGHT,
    };
    let height = TOP + 2.0 * PANEL + GAP + 48.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">
<title>ebb simulate: {}</title>
<rect width="100%" height="100%" fill="white"/>"#,
        escape(&r.scaled_object)
    );
    // Values and targets.
    let targets: Vec<f64> = match r.composite_target {
        Some(t) => vec![t],
        None => r.triggers.iter().map(|t| t.target).collect(),
    };
    let v_peak = rows
        .iter()
        .flat_map(|row| row.values.iter().flatten())
        .chain(&targets)
        .fold(0.0f64, |a, b| a.max(*b));
    let v_max = nice_max(v_peak);
    axis_labels(&mut s, v_max, TOP, "trigger values (dashed: HPA targets)");
    for (i, t) in r.triggers.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, Option<f64>)> = rows
            .iter()
            .map(|row| (row.time, row.values.get(i).copied().flatten()))
            .collect();
        let _ = writeln!(
            s,
            r#"<g id="value-{i}"><title>{}</title><path d="{}" fill="none" stroke="{color}" stroke-width="2"/></g>"#,
            escape(&t.name),
            step_path(&points, &axis, v_max, TOP)
        );
    }
    for (i, target) in targets.iter().enumerate() {
        let y = y_of(*target, v_max, TOP);
        let label = if r.composite_target.is_some() {
            "composite target".to_string()
        } else {
            format!("target {}", r.triggers.get(i).map_or("", |t| t.name.as_str()))
        };
        let _ = writeln!(
            s,
            r#"<g id="target-{i}"><title>{}</title><line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-dasharray="6 4"/></g>"#,
            escape(&label),
            WIDTH - RIGHT,
            COLORS[i % COLORS.len()]
        );
    }
    // Replicas.
    let top = TOP + PANEL + GAP;
    let r_peak = rows
        .iter()
        .flat_map(|row| [Some(row.replicas), row.ebb_desired, row.hpa_desired])
        .flatten()
        .fold(1, i32::max);
    // Whole replicas on every grid line: a multiple of the four intervals.
    let r_max = (f64::from(r_peak) / 4.0).ceil() * 4.0;
    axis_labels(
        &mut s,
        r_max,
        top,
        "replicas (solid: actual; dotted: ebb wants; dashed: HPA wants)",
    );
    let series = |pick: &dyn Fn(&super::Row) -> Option<i32>| -> Vec<(f64, Option<f64>)> {
        rows.iter()
            .filter_map(|row| pick(row).map(|v| (row.time, Some(f64::from(v)))))
            .collect()
    };
    let actual = series(&|row| Some(row.replicas));
    let ebb = series(&|row| row.ebb_desired);
    let hpa = series(&|row| row.hpa_desired);
    for (id, points, style) in [
        ("replicas", &actual, r##"stroke="#2ca02c" stroke-width="2.5""##),
        (
            "ebb-desired",
            &ebb,
            r##"stroke="#d62728" stroke-width="1.5" stroke-dasharray="2 3""##,
        ),
        (
            "hpa-desired",
            &hpa,
            r##"stroke="#7f7f7f" stroke-width="1.5" stroke-dasharray="6 4""##,
        ),
    ] {
        let _ = writeln!(
            s,
            r#"<path id="{id}" d="{}" fill="none" {style}/>"#,
            step_path(points, &axis, r_max, top)
        );
    }
    // Events: ebb's scale Events as marks across both panels.
    let _ = writeln!(s, r#"<g id="events">"#);
    for e in r.timeline.events.iter().filter(|e| e.by == Actor::Ebb) {
        let x = axis.x(e.time);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#aaa" stroke-width="1"><title>{} at {}s: {}</title></line>"##,
            top + PANEL,
            escape(&e.reason),
            trim_number(e.time),
            escape(&e.message)
        );
    }
    let _ = writeln!(s, "</g>");
    // The time axis.
    let base = top + PANEL;
    for i in 0..=8 {
        let t = t_max * f64::from(i) / 8.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}s</text>"#,
            axis.x(t),
            base + 16.0,
            trim_number(t.round())
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample_report;
    use super::*;

    /// Checks the document is well-formed: every token parses and elements nest. Returns the
    /// `id`s seen.
    fn well_formed(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut ids = Vec::new();
        let mut roots = 0;
        for token in xmlparser::Tokenizer::from(svg) {
            match token.expect("well-formed XML") {
                xmlparser::Token::ElementStart { local, .. } => {
                    if stack.is_empty() {
                        roots += 1;
                    }
                    stack.push(local.as_str().to_string());
                }
                xmlparser::Token::Attribute { local, value, .. } if local.as_str() == "id" => {
                    ids.push(value.as_str().to_string())
                }
                xmlparser::Token::ElementEnd { end, .. } => match end {
                    xmlparser::ElementEnd::Open => {}
                    xmlparser::ElementEnd::Empty => {
                        stack.pop();
                    }
                    xmlparser::ElementEnd::Close(_, name) => {
                        assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "tags nest");
                    }
                },
                _ => {}
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert_eq!(roots, 1, "one root element");
        ids
    }

    #[test]
    fn the_plot_is_well_formed_with_every_series() {
        let r = sample_report("web & <api>");
        let svg = render_svg(&r);
        let ids = well_formed(&svg);
        for id in [
            "value-0",
            "target-0",
            "replicas",
            "ebb-desired",
            "hpa-desired",
            "events",
        ] {
            assert!(ids.iter().any(|i| i == id), "{id} in {ids:?}");
        }
        assert!(svg.contains("web &amp; &lt;api&gt;"));
        // The replicas path rises to 1 at the activation and has a mark for it.
        assert!(svg.contains("Activated at 10s"), "{svg}");
    }

    #[test]
    fn path_breaks_on_errors_and_scales() {
        let axis = Axis {
            t_max: 10.0,
            plot_w: 100.0,
        };
        let d = step_path(
            &[(0.0, Some(0.0)), (5.0, None), (6.0, Some(1.0))],
            &axis,
            1.0,
            0.0,
        );
        assert_eq!(d, "M64.0,200.0H114.0M124.0,0.0H164.0");
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(120.0), 200.0);
    }
}
