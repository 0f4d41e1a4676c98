//! `ebb status`: why a ScaledObject has the replicas it has, composed from what the cluster says
//! (the object and its status, each trigger's value through the external metrics API, the
//! target's `/scale`, the HPA, the object's Events).
//!
//! Pure: [`compose`] turns the gathered facts ([`Gathered`]) into a [`Report`], and
//! [`super::status_text`] renders it as text; `status_io.rs` gathers them from the cluster.

use ebb_crds::{HealthStatus, ScaledObject};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use serde::Serialize;
use serde_json::Value;

/// The flags of `ebb status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A ScaledObject; without it, every ScaledObject of the namespace with one line each.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = super::explain::OutputFormat::Text)]
    pub output: super::explain::OutputFormat,
}

/// One trigger's value as the external metrics API answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReading {
    /// The external metric's name.
    pub metric: String,
    /// The value (a Kubernetes quantity), or why there is none.
    pub value: Result<String, String>,
}

/// What `ebb status NAME` read from the cluster.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// The ScaledObject.
    pub object: ScaledObject,
    /// When the facts were read.
    pub now: Timestamp,
    /// Each metric's value, in the order of `status.externalMetricNames` (and the composite).
    pub metrics: Vec<MetricReading>,
    /// The target's `/scale`: `spec.replicas` and `status.replicas`, or why it could not be read.
    pub scale: Result<(i32, i32), String>,
    /// The owned HPA as JSON (`autoscaling/v2` or `v2beta2`), when there is one.
    pub hpa: Option<Value>,
    /// The object's Events, any order.
    pub events: Vec<Event>,
}

/// A condition, shortened.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConditionView {
    /// `Ready`, `Active`, ... or the HPA's `AbleToScale`, `ScalingLimited`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// One trigger.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    /// `triggers[index]`, or `composite` for the scalingModifiers metric.
    pub index: String,
    /// Its type (`composite` for the scalingModifiers metric).
    #[serde(rename = "type")]
    pub trigger_type: String,
    /// Its name, when it has one.
    pub name: Option<String>,
    /// The external metric the HPA reads.
    pub metric: String,
    /// The value the external metrics API answers now.
    pub value: Option<String>,
    /// Why there is no value.
    pub value_error: Option<String>,
    /// The HPA's target for the metric (`AverageValue` or `Value`).
    pub target: Option<String>,
    /// Active when the value is above this.
    pub activation_threshold: Option<String>,
    /// `Happy` or `Failing`, with the consecutive failures, from the status.
    pub health: Option<String>,
}

/// The HPA's view.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HpaView {
    /// Its name.
    pub name: String,
    /// Replicas it sees.
    pub current_replicas: Option<i64>,
    /// Replicas it wants.
    pub desired_replicas: Option<i64>,
    /// Its bounds.
    pub min_replicas: Option<i64>,
    /// Its bounds.
    pub max_replicas: Option<i64>,
    /// Each external metric's current value as the HPA last read it: `name=value`.
    pub metrics: Vec<String>,
    /// Its conditions (AbleToScale, ScalingActive, ScalingLimited).
    pub conditions: Vec<ConditionView>,
}

/// One Event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventView {
    /// When it last happened (RFC 3339).
    pub time: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// How many times it happened.
    pub count: i64,
}

/// Why the object has the replicas it has.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The ScaledObject.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `Kind/name` of the target.
    pub target: String,
    /// The target's replicas (`/scale` `spec.replicas`).
    pub replicas: Option<i32>,
    /// The target's current replicas (`/scale` `status.replicas`).
    pub current_replicas: Option<i32>,
    /// Why `/scale` could not be read.
    pub scale_error: Option<String>,
    /// `minReplicaCount`, `maxReplicaCount`, `idleReplicaCount`.
    pub min_replicas: i32,
    /// `maxReplicaCount`.
    pub max_replicas: i32,
    /// `idleReplicaCount`.
    pub idle_replicas: Option<i32>,
    /// The object's conditions.
    pub conditions: Vec<ConditionView>,
    /// The replicas the paused annotation holds.
    pub paused_replicas: Option<i32>,
    /// `fallback`: after how many failures, how many replicas.
    pub fallback: Option<String>,
    /// `status.lastActiveTime`.
    pub last_active_time: Option<String>,
    /// Seconds until the cooldown ends, when inactive with replicas above the floor.
    pub cooldown_remaining_seconds: Option<i64>,
    /// Every trigger (and the composite metric).
    pub triggers: Vec<TriggerView>,
    /// The owned HPA.
    pub hpa: Option<HpaView>,
    /// The object's Events, newest last.
    pub events: Vec<EventView>,
    /// The answer, in one sentence.
    pub why: String,
}

/// One line of `ebb status` without a name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListLine {
    /// The ScaledObject.
    pub name: String,
    /// `Kind/name` of the target.
    pub target: String,
    /// The Ready condition's status.
    pub ready: String,
    /// The Active condition's status.
    pub active: String,
    /// `min`–`max` replicas.
    pub bounds: String,
    /// The HPA's current replicas, when known.
    pub replicas: Option<i64>,
}

fn condition(object: &ScaledObject, kind: &str) -> Option<ConditionView> {
    let c = object
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)?;
    Some(ConditionView {
        kind: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    })
}

fn is_true(conditions: &[ConditionView], kind: &str) -> bool {
    conditions.iter().any(|c| c.kind == kind && c.status == "True")
}

fn target_name(object: &ScaledObject) -> String {
    let r = &object.spec.scale_target_ref;
    format!("{}/{}", r.kind_or_default(), r.name)
}

/// The one-line form of every ScaledObject (and its HPA's current replicas, by HPA name).
pub fn list_lines(objects: &[ScaledObject], hpa_replicas: &dyn Fn(&str) -> Option<i64>) -> Vec<ListLine> {
    objects
        .iter()
        .map(|o| {
            let status = |kind| condition(o, kind).map_or_else(|| "-".to_string(), |c| c.status);
            let hpa = o.status.as_ref().and_then(|s| s.hpa_name.as_deref());
            ListLine {
                name: o.metadata.name.clone().unwrap_or_default(),
                target: target_name(o),
                ready: status("Ready"),
                active: status("Active"),
                bounds: format!("{}-{}", o.spec.min_replica_count, o.spec.max_replica_count),
                replicas: hpa.and_then(hpa_replicas),
            }
        })
        .collect()
}

/// A JSON path's string, number or nothing.
fn text_at(value: &Value, path: &[&str]) -> Option<String> {
    let leaf = path.iter().try_fold(value, |v, key| v.get(key))?;
    match leaf {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int_at(value: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_i64()
}

/// The HPA's target for `metric` (`AverageValue 5` or `Value 5`), from its spec.
fn hpa_target(hpa: &Value, metric: &str) -> Option<String> {
    let metrics = hpa.pointer("/spec/metrics")?.as_array()?;
    let external = metrics
        .iter()
        .filter_map(|m| m.get("external"))
        .find(|e| text_at(e, &["metric", "name"]).as_deref() == Some(metric))?;
    let target = external.get("target")?;
    let kind = text_at(target, &["type"])?;
    let value = match kind.as_str() {
        "AverageValue" => text_at(target, &["averageValue"]),
        _ => text_at(target, &["value"]),
    }?;
    Some(format!("{kind} {value}"))
}

fn hpa_view(hpa: &Value) -> HpaView {
    let metrics = hpa
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("external"))
                .filter_map(|e| {
                    let name = text_at(e, &["metric", "name"])?;
                    let value = text_at(e, &["current", "averageValue"])
                        .map(|v| format!("{v} (average)"))
                        .or_else(|| text_at(e, &["current", "value"]))?;
                    Some(format!("{name}={value}"))
                })
                .collect()
        })
        .unwrap_or_default();
    let conditions = hpa
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| ConditionView {
                    kind: text_at(c, &["type"]).unwrap_or_default(),
                    status: text_at(c, &["status"]).unwrap_or_default(),
                    reason: text_at(c, &["reason"]).unwrap_or_default(),
                    message: text_at(c, &["message"]).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    HpaView {
        name: text_at(hpa, &["metadata", "name"]).unwrap_or_default(),
        current_replicas: int_at(hpa, &["status", "currentReplicas"]),
        desired_replicas: int_at(hpa, &["status", "desiredReplicas"]),
        min_replicas: int_at(hpa, &["spec", "minReplicas"]),
        max_replicas: int_at(hpa, &["spec", "maxReplicas"]),
        metrics,
        conditions,
    }
}

fn event_view(e: &Event) -> (Timestamp, EventView) {
    let time = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let count = e
        .series
        .as_ref()
        .and_then(|s| s.count.map(i64::from))
        .or(e.count.map(i64::from))
        .unwrap_or(1);
    (
        time,
        EventView {
            time: time.to_string(),
            kind: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count,
        },
    )
}

/// The last `keep` Events, oldest first.
fn recent_events(events: &[Event], keep: usize) -> Vec<EventView> {
    let mut all: Vec<(Timestamp, EventView)> = events.iter().map(event_view).collect();
    all.sort_by_key(|(t, _)| *t);
    let skip = all.len().saturating_sub(keep);
    all.into_iter().skip(skip).map(|(_, v)| v).collect()
}

/// The triggers' views: value, target, activation threshold and health of each metric.
fn trigger_views(g: &Gathered) -> Vec<TriggerView> {
    let status = g.object.status.clone().unwrap_or_default();
    let reading = |metric: &str| g.metrics.iter().find(|m| m.metric == metric);
    let hpa_target_of = |metric: &str| g.hpa.as_ref().and_then(|h| hpa_target(h, metric));
    let health_of = |metric: &str| {
        status.health.get(metric).map(|h| match h.status {
            HealthStatus::Happy => "Happy".to_string(),
            HealthStatus::Failing => format!("Failing ({} failures)", h.number_of_failures),
        })
    };
    let mut views: Vec<TriggerView> = g
        .object
        .spec
        .triggers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            // Triggers the HPA reads itself (cpu, memory) have no external metric: find by index prefix.
            let prefix = format!("s{i}-");
            let metric = status
                .external_metric_names
                .iter()
                .find(|n| n.starts_with(&prefix))
                .cloned()
                .unwrap_or_default();
            // Offline parse (no credentials, no env): enough for the activation threshold.
            let parsed = ebb_scalers::registry::parse_trigger(i, &t.type_, &t.metadata, None, None).ok();
            let found = reading(&metric);
            TriggerView {
                index: format!("triggers[{i}]"),
                trigger_type: t.type_.clone(),
                name: t.name.clone(),
                value: found.and_then(|r| r.value.clone().ok()),
                value_error: found.and_then(|r| r.value.clone().err()),
                target: hpa_target_of(&metric).or_else(|| {
                    parsed
                        .as_ref()
                        .map(|p| format!("{} {}", t.metric_type.as_str(), p.thresholds.target))
                }),
                activation_threshold: parsed.as_ref().map(|p| p.thresholds.activation.to_string()),
                health: health_of(&metric),
                metric,
            }
        })
        .collect();
    if let Some(composite) = &status.composite_scaler_name {
        let modifiers = g
            .object
            .spec
            .advanced
            .as_ref()
            .and_then(|a| a.scaling_modifiers.as_ref());
        let found = reading(composite);
        views.push(TriggerView {
            index: "composite".to_string(),
            trigger_type: "composite".to_string(),
            name: modifiers.map(|m| m.formula.clone()),
            metric: composite.clone(),
            value: found.and_then(|r| r.value.clone().ok()),
            value_error: found.and_then(|r| r.value.clone().err()),
            target: hpa_target_of(composite)
                .or_else(|| modifiers.map(|m| format!("{} {}", m.metric_type.as_str(), m.target))),
            activation_threshold: modifiers.map(|m| m.activation_target.clone()),
            health: health_of(composite),
        });
    }
    views
}

/// Seconds of cooldown left: `lastActiveTime + cooldownPeriod − now`, when the object is
/// inactive and above its floor (idle or min).
fn cooldown_remaining(g: &Gathered, active: bool, replicas: Option<i32>) -> Option<i64> {
    let spec = &g.object.spec;
    let floor = spec.idle_replica_count.unwrap_or(spec.min_replica_count);
    if active || replicas.is_none_or(|r| r <= floor) {
        return None;
    }
    let last: Timestamp = g
        .object
        .status
        .as_ref()?
        .last_active_time
        .as_deref()?
        .parse()
        .ok()?;
    let ends = last.as_second().saturating_add(i64::from(spec.cooldown_period));
    Some((ends - g.now.as_second()).max(0))
}

/// The sentence that answers "why this many replicas?".
fn why(r: &Report, active: bool) -> String {
    let replicas = r
        .replicas
        .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
    if let Some(paused) = r.paused_replicas {
        return format!("Paused: the paused-replicas annotation holds the target at {paused} replicas.");
    }
    if is_true(&r.conditions, "Paused") {
        return "Paused: ebb does not scale the target while the paused annotation is set.".to_string();
    }
    if !r
        .conditions
        .iter()
        .any(|c| c.kind == "Ready" && c.status == "True")
    {
        let message = r
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map_or("no Ready condition yet".to_string(), |c| c.message.clone());
        return format!("Not ready ({message}): ebb leaves the target at {replicas} replicas.");
    }
    if is_true(&r.conditions, "Fallback") {
        return format!(
            "Fallback: a trigger keeps failing, so the replicas follow the fallback ({}); now {replicas}.",
            r.fallback.as_deref().unwrap_or("not configured")
        );
    }
    if active {
        let wants = r
            .hpa
            .as_ref()
            .and_then(|h| h.desired_replicas)
            .map_or_else(String::new, |d| format!(" (it wants {d})"));
        return format!(
            "Active: a trigger is above its activation threshold, so the HPA sets the replicas between {} and {}{wants}; now {replicas}.",
            r.min_replicas.max(1),
            r.max_replicas
        );
    }
    let floor = r.idle_replicas.unwrap_or(r.min_replicas);
    match r.cooldown_remaining_seconds {
        Some(s) => format!(
            "Inactive: no trigger is above its activation threshold; the target goes from {replicas} to {floor} replicas when the cooldown ends, in {s} s."
        ),
        None => format!(
            "Inactive: no trigger is above its activation threshold, so the target stays at its floor ({floor}); now {replicas}."
        ),
    }
}

/// Everything `ebb status NAME` says, from what was gathered.
pub fn compose(g: &Gathered) -> Report {
    let o = &g.object;
    let status = o.status.clone().unwrap_or_default();
    let conditions: Vec<ConditionView> = ["Ready", "Active", "Fallback", "Paused"]
        .into_iter()
        .filter_map(|kind| condition(o, kind))
        .collect();
    let active = is_true(&conditions, "Active");
    let replicas = g.scale.as_ref().ok().map(|(spec, _)| *spec);
    let mut report = Report {
        name: o.metadata.name.clone().unwrap_or_default(),
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        target: target_name(o),
        replicas,
        current_replicas: g.scale.as_ref().ok().map(|(_, current)| *current),
        scale_error: g.scale.as_ref().err().cloned(),
        min_replicas: o.spec.min_replica_count,
        max_replicas: o.spec.max_replica_count,
        idle_replicas: o.spec.idle_replica_count,
        conditions,
        paused_replicas: status.paused_replica_count,
        fallback: o.spec.fallback.as_ref().map(|f| {
            format!(
                "{} replicas after {} failed polls ({:?})",
                f.replicas, f.failure_threshold, f.behavior
            )
        }),
        last_active_time: status.last_active_time.clone(),
        cooldown_remaining_seconds: cooldown_remaining(g, active, replicas),
        triggers: trigger_views(g),
        hpa: g.hpa.as_ref().map(hpa_view),
        events: recent_events(&g.events, 10),
        why: String::new(),
    };
    report.why = why(&report, active);
    report
}
