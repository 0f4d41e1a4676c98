//! `ebb status` as text: the report of one ScaledObject ([`report_text`]) and the list of a
//! namespace's ([`list_text`]). Pure.

use std::fmt::Write as _;

use super::status::{ListLine, Report};

/// The list as aligned text.
pub fn list_text(lines: &[ListLine]) -> String {
    let rows: Vec<[String; 6]> =
        std::iter::once(["NAME", "TARGET", "READY", "ACTIVE", "MIN-MAX", "REPLICAS"].map(String::from))
            .chain(lines.iter().map(|l| {
                [
                    l.name.clone(),
                    l.target.clone(),
                    l.ready.clone(),
                    l.active.clone(),
                    l.bounds.clone(),
                    l.replicas.map_or_else(|| "-".to_string(), |r| r.to_string()),
                ]
            }))
            .collect();
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

/// The report as text.
pub fn report_text(r: &Report) -> String {
    let mut out = String::new();
    let replicas = r.replicas.map_or_else(|| "?".to_string(), |n| n.to_string());
    let running = match (r.replicas, r.current_replicas) {
        (Some(want), Some(current)) if want != current => format!(" ({current} running)"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "ScaledObject {}/{} → {} at {replicas} replicas{running}",
        r.namespace, r.name, r.target
    );
    if let Some(e) = &r.scale_error {
        let _ = writeln!(out, "  (the target's /scale could not be read: {e})");
    }
    let _ = writeln!(out, "{}\n", r.why);
    let idle = r.idle_replicas.map(|i| format!(", idle {i}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "Replicas: min {}, max {}{idle}",
        r.min_replicas, r.max_replicas
    );
    out.push_str("Conditions:\n");
    for c in &r.conditions {
        let _ = writeln!(out, "  {}: {} {} {}", c.kind, c.status, c.reason, c.message);
    }
    if let Some(fallback) = &r.fallback {
        let _ = writeln!(out, "Fallback: {fallback}");
    }
    if let Some(last) = &r.last_active_time {
        let _ = writeln!(out, "Last active: {last}");
    }
    if let Some(s) = r.cooldown_remaining_seconds {
        let _ = writeln!(out, "Cooldown: {s} s left");
    }
    out.push_str("\nTriggers:\n");
    for t in &r.triggers {
        let name = t.name.as_deref().map(|n| format!(" {n:?}")).unwrap_or_default();
        let _ = writeln!(out, "  {} {}{name}: metric {}", t.index, t.trigger_type, t.metric);
        let value = match (&t.value, &t.value_error) {
            (Some(v), _) => v.clone(),
            (None, Some(e)) => format!("unavailable ({e})"),
            (None, None) => "unavailable".to_string(),
        };
        let _ = writeln!(
            out,
            "    value {value}, target {}, activation above {}, health {}",
            t.target.as_deref().unwrap_or("?"),
            t.activation_threshold.as_deref().unwrap_or("?"),
            t.health.as_deref().unwrap_or("unknown")
        );
    }
    match &r.hpa {
        None => out.push_str("\nHPA: none\n"),
        Some(h) => {
            let n = |v: Option<i64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
            let _ = writeln!(
                out,
                "\nHPA {}: current {}, desired {} (min {}, max {})",
                h.name,
                n(h.current_replicas),
                n(h.desired_replicas),
                n(h.min_replicas),
                n(h.max_replicas)
            );
            for m in &h.metrics {
                let _ = writeln!(out, "  metric {m}");
            }
            for c in &h.conditions {
                let _ = writeln!(out, "  {}: {} {} {}", c.kind, c.status, c.reason, c.message);
            }
        }
    }
    if !r.events.is_empty() {
        out.push_str("\nEvents (newest last):\n");
        for e in &r.events {
            let times = if e.count > 1 {
                format!(" (×{})", e.count)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {} {} {}{times}: {}", e.time, e.kind, e.reason, e.message);
        }
    }
    out
}
