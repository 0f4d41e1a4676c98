//! `ebb simulate`: replays a series of source values through the operator's own decisions
//! ([`crate::scale::decision::decide`]: activation, cooldown, fallback, pause, scalingModifiers)
//! and a model of the Kubernetes HPA controller ([`hpa_model`]), and reports the replica
//! timeline. Pure: documents and the series in, a [`Report`] out (the CLI in `main.rs` reads
//! the files and writes the output).
//!
//! - [`input`]: the series (CSV or JSON), bounded and checked;
//! - [`scenario`]: the ScaledObject as the loop and the HPA see it;
//! - [`run`]: the replay;
//! - [`hpa_model`]: the HPA controller;
//! - [`svg`]: the plot.

pub mod args;
pub mod hpa_model;
pub mod input;
pub mod run;
pub mod scenario;
pub mod svg;

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::validate::InputDocument;
use input::InputError;
pub use run::{Actor, Happening, Row, Timeline};
use scenario::Scenario;

/// The most time steps a replay may take (series length ÷ step): the rows (at most one poll
/// and one sync per step) stay within a few hundred megabytes.
pub const MAX_STEPS: i64 = 1_000_000;

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The series cannot be read (the source says where).
    #[error("series")]
    Input(#[from] InputError),
    /// The manifests hold no ScaledObject (of that name).
    #[error("no ScaledObject (of that name) in the manifests")]
    NoScaledObject,
    /// More than one ScaledObject and no `--name`.
    #[error("{0} ScaledObjects in the manifests: choose one with --name")]
    SeveralScaledObjects(usize),
    /// The ScaledObject does not pass `ebb validate`'s checks.
    #[error("the ScaledObject is not valid: {}", .0.join("; "))]
    InvalidObject(Vec<String>),
    /// A trigger has no column in the series.
    #[error("the series has no column for trigger {trigger} (name it {trigger:?}, by index, or {metric:?})")]
    MissingColumn {
        /// The trigger's name or index.
        trigger: String,
        /// Its metric name.
        metric: String,
    },
    /// A column names no trigger.
    #[error("series column {0:?} names no trigger (use a trigger's name, index or metric name)")]
    UnknownColumn(String),
    /// An option is out of range.
    #[error("{0}")]
    Option(String),
}

/// The simulation's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulateOptions {
    /// The HPA's sync period, ms (default 15 000).
    pub sync_ms: i64,
    /// The HPA's tolerance (default 0.1).
    pub tolerance: f64,
    /// The target's replicas at the start (default `minReplicaCount`).
    pub initial_replicas: Option<i32>,
    /// The time step, ms (default 1000).
    pub step_ms: i64,
    /// The partition count of kafka triggers' topics (caps their desired count).
    pub partitions: Option<u64>,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            sync_ms: 15_000,
            tolerance: hpa_model::DEFAULT_TOLERANCE,
            initial_replicas: None,
            step_ms: 1000,
            partitions: None,
        }
    }
}

/// One trigger in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSummary {
    /// Its name, else its index.
    pub name: String,
    /// Its external metric name.
    pub metric_name: String,
    /// The HPA target.
    pub target: f64,
    /// The activation threshold.
    pub activation: f64,
    /// `AverageValue` or `Value`.
    pub metric_type: String,
    /// Whether its scaler pushes activity changes between polls.
    pub pushes_activity: bool,
}

/// What `ebb simulate` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `namespace/name` of the ScaledObject.
    pub scaled_object: String,
    /// The series' first time, when it gave timestamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// `pollingInterval`, seconds.
    pub polling_interval: f64,
    /// `cooldownPeriod`, seconds.
    pub cooldown_period: f64,
    /// The HPA's `minReplicas` and `maxReplicas`.
    pub hpa_bounds: (i32, i32),
    /// The HPA's sync period, seconds.
    pub hpa_sync_period: f64,
    /// Whether the HPA has a `behavior` (else the controller's older path applies).
    pub hpa_behavior: bool,
    /// The triggers, in the spec's order (the columns of `values`).
    pub triggers: Vec<TriggerSummary>,
    /// The composite metric's target, with scalingModifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composite_target: Option<f64>,
    /// The timeline.
    #[serde(flatten)]
    pub timeline: Timeline,
}

/// Runs a simulation: the ScaledObject named `name` (or the only one) of `docs`, over the
/// series `series_text`.
pub fn simulate(
    docs: &[InputDocument],
    name: Option<&str>,
    series_text: &str,
    options: SimulateOptions,
) -> Result<Report, SimulateError> {
    if !(options.step_ms >= 10 && options.sync_ms >= 1000) {
        return Err(SimulateError::Option(
            "--step must be at least 10ms and --hpa-sync-period at least 1s".into(),
        ));
    }
    if !(options.tolerance.is_finite() && (0.0..1.0).contains(&options.tolerance)) {
        return Err(SimulateError::Option("--hpa-tolerance must be in [0, 1)".into()));
    }
    let series = input::parse_series(series_text)?;
    if series.end_ms() / options.step_ms > MAX_STEPS {
        return Err(SimulateError::Option(format!(
            "the series spans {} s: more than {MAX_STEPS} steps of --step",
            series.end_ms() / 1000
        )));
    }
    let sc = scenario::scenario(docs, name, &series.columns, options.partitions, options.tolerance)?;
    let initial = options.initial_replicas.unwrap_or(sc.spec.min.max(0)).max(0);
    let timeline = run::run(
        &sc,
        &series,
        run::RunOptions {
            sync_ms: options.sync_ms,
            step_ms: options.step_ms,
            initial_replicas: initial,
        },
    );
    Ok(report(&sc, &series, options, timeline))
}

fn report(sc: &Scenario, series: &input::Series, options: SimulateOptions, timeline: Timeline) -> Report {
    Report {
        scaled_object: sc.object.clone(),
        start: series.start.map(|s| s.to_string()),
        polling_interval: sc.polling_ms as f64 / 1000.0,
        cooldown_period: sc.spec.cooldown.as_secs_f64(),
        hpa_bounds: (sc.hpa.min, sc.hpa.max),
        hpa_sync_period: options.sync_ms as f64 / 1000.0,
        hpa_behavior: sc.hpa.behavior != hpa_model::Behavior::Unset,
        triggers: sc
            .triggers
            .iter()
            .map(|t| TriggerSummary {
                name: t.label.clone(),
                metric_name: t.metric_name.clone(),
                target: t.target,
                activation: t.activation,
                metric_type: format!("{:?}", t.metric_type),
                pushes_activity: t.pushes,
            })
            .collect(),
        composite_target: sc.composite.as_ref().map(|c| c.target),
        timeline,
    }
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.3}"),
        None => "error".into(),
    }
}

fn opt(v: Option<i32>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The report as text: a header, one line per poll and sync, then the events.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ScaledObject {}: pollingInterval {}s, cooldownPeriod {}s; HPA {}..{} replicas, sync every {}s, {}",
        r.scaled_object,
        r.polling_interval,
        r.cooldown_period,
        r.hpa_bounds.0,
        r.hpa_bounds.1,
        r.hpa_sync_period,
        if r.hpa_behavior {
            "behavior as configured"
        } else {
            "no behavior (the controller's defaults)"
        }
    );
    for t in &r.triggers {
        let _ = writeln!(
            s,
            "trigger {} ({}): {} target {}, active above {}{}",
            t.name,
            t.metric_name,
            t.metric_type,
            t.target,
            t.activation,
            if t.pushes_activity {
                ", pushes activity"
            } else {
                ""
            }
        );
    }
    let names: Vec<&str> = r.triggers.iter().map(|t| t.name.as_str()).collect();
    let _ = writeln!(
        s,
        "\n{:>9}  {:<4}  {:<24}  {:<9}  {:>4}  {:>4}  {:>8}",
        "time",
        "by",
        names.join(","),
        "activity",
        "ebb",
        "hpa",
        "replicas"
    );
    for row in &r.timeline.rows {
        let values: Vec<String> = row.values.iter().map(|v| cell(*v)).collect();
        let by = match row.by {
            Actor::Ebb => "ebb",
            Actor::Hpa => "hpa",
        };
        let activity = match (row.activity, row.fallback) {
            (Some(a), Some(true)) => format!("{a}+fb"),
            (Some(a), _) => a.to_string(),
            (None, _) => "".into(),
        };
        let _ = writeln!(
            s,
            "{:>9.1}  {:<4}  {:<24}  {:<9}  {:>4}  {:>4}  {:>8}",
            row.time,
            by,
            values.join(","),
            activity,
            opt(row.ebb_desired),
            opt(row.hpa_desired),
            row.replicas
        );
    }
    let _ = writeln!(s, "\nevents:");
    for e in &r.timeline.events {
        let by = match e.by {
            Actor::Ebb => "ebb",
            Actor::Hpa => "hpa",
        };
        let _ = writeln!(
            s,
            "{:>9.1}  {by}  {}: {} (replicas {})",
            e.time, e.reason, e.message, e.replicas
        );
    }
    s
}

#[cfg(test)]
mod tests;
