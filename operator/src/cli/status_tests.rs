//! Tests of `ebb status`'s composition and rendering ([`super::status`]) on fixtures.

use ebb_crds::ScaledObject;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use serde_json::{Value, json};

use super::status::{Gathered, MetricReading, compose, list_lines};
use super::status_text::{list_text, report_text};

fn object(conditions: Value, extra_status: Value, extra_spec: Value) -> ScaledObject {
    let mut status = json!({
        "conditions": conditions,
        "externalMetricNames": ["s0-rabbitmq-orders"],
        "health": {"s0-rabbitmq-orders": {"numberOfFailures": 0, "status": "Happy"}},
        "hpaName": "ebb-hpa-worker",
    });
    merge(&mut status, extra_status);
    let mut spec = json!({
        "scaleTargetRef": {"name": "worker"},
        "minReplicaCount": 0, "maxReplicaCount": 10, "cooldownPeriod": 300,
        "triggers": [{"type": "rabbitmq", "metadata": {
            "host": "http://rabbit:15672/", "queueName": "orders", "mode": "QueueLength",
            "value": "5", "activationValue": "2"}}],
    });
    merge(&mut spec, extra_spec);
    serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "worker", "namespace": "shop", "uid": "u1"},
        "spec": spec, "status": status,
    }))
    .unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

fn cond(kind: &str, status: &str, reason: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": format!("{kind} {reason}")})
}

fn hpa() -> Value {
    json!({
        "metadata": {"name": "ebb-hpa-worker"},
        "spec": {"minReplicas": 1, "maxReplicas": 10, "metrics": [{"type": "External", "external": {
            "metric": {"name": "s0-rabbitmq-orders"},
            "target": {"type": "AverageValue", "averageValue": "5"}}}]},
        "status": {"currentReplicas": 3, "desiredReplicas": 3,
            "currentMetrics": [{"type": "External", "external": {
                "metric": {"name": "s0-rabbitmq-orders"}, "current": {"averageValue": "4666m"}}}],
            "conditions": [{"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange",
                "message": "the desired count is within the acceptable range"}]},
    })
}

fn event(reason: &str, at: &str, count: i32) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("e-{reason}"), "namespace": "shop"},
        "involvedObject": {"kind": "ScaledObject", "name": "worker", "uid": "u1"},
        "reason": reason, "message": format!("{reason} happened"), "type": "Normal",
        "lastTimestamp": at, "count": count,
    }))
    .unwrap()
}

fn gathered(object: ScaledObject, value: Result<&str, &str>, replicas: i32) -> Gathered {
    Gathered {
        object,
        now: "2026-12-03T10:00:00Z".parse::<Timestamp>().unwrap(),
        metrics: vec![MetricReading {
            metric: "s0-rabbitmq-orders".to_string(),
            value: value.map(str::to_string).map_err(str::to_string),
        }],
        scale: Ok((replicas, replicas)),
        hpa: Some(hpa()),
        events: vec![
            event("ScaledToZero", "2026-12-03T09:00:00Z", 1),
            event("Activated", "2026-12-03T09:50:00Z", 2),
            event("Created", "2026-12-03T08:00:00Z", 1),
        ],
    }
}

#[test]
fn an_active_object_shows_each_trigger_the_hpa_and_the_events() {
    let g = gathered(
        object(
            json!([
                cond("Ready", "True", "Ready"),
                cond("Active", "True", "ScalerActive")
            ]),
            json!({}),
            json!({}),
        ),
        Ok("14"),
        3,
    );
    let r = compose(&g);
    assert_eq!(r.replicas, Some(3));
    assert_eq!(r.target, "Deployment/worker");
    let t = &r.triggers[0];
    assert_eq!(t.metric, "s0-rabbitmq-orders");
    assert_eq!(t.value.as_deref(), Some("14"));
    assert_eq!(t.target.as_deref(), Some("AverageValue 5"));
    assert_eq!(t.activation_threshold.as_deref(), Some("2"));
    assert_eq!(t.health.as_deref(), Some("Happy"));
    let hpa = r.hpa.as_ref().unwrap();
    assert_eq!((hpa.current_replicas, hpa.desired_replicas), (Some(3), Some(3)));
    assert_eq!(hpa.metrics, ["s0-rabbitmq-orders=4666m (average)"]);
    assert_eq!(hpa.conditions[0].kind, "ScalingLimited");
    // Newest last.
    let reasons: Vec<&str> = r.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Created", "ScaledToZero", "Activated"]);
    assert_eq!(r.cooldown_remaining_seconds, None);
    assert!(
        r.why.starts_with("Active:") && r.why.contains("(it wants 3); now 3."),
        "{}",
        r.why
    );

    let text = report_text(&r);
    assert!(
        text.contains("    value 14, target AverageValue 5, activation above 2, health Happy\n"),
        "{text}"
    );
    assert!(
        text.contains("HPA ebb-hpa-worker: current 3, desired 3 (min 1, max 10)"),
        "{text}"
    );
    assert!(
        text.contains("Conditions:\n  Ready: True Ready Ready Ready\n  Active: True ScalerActive"),
        "{text}"
    );
    assert!(
        text.contains("Activated happened") && text.contains("(×2)"),
        "{text}"
    );
}

#[test]
fn an_inactive_object_above_its_floor_counts_the_cooldown_down() {
    let g = gathered(
        object(
            json!([
                cond("Ready", "True", "Ready"),
                cond("Active", "False", "ScalerNotActive")
            ]),
            json!({"lastActiveTime": "2026-12-03T09:58:20Z"}),
            json!({}),
        ),
        Ok("0"),
        2,
    );
    let r = compose(&g);
    // 09:58:20 + 300 s − 10:00:00 = 200 s.
    assert_eq!(r.cooldown_remaining_seconds, Some(200));
    assert_eq!(r.current_replicas, Some(2));
    assert!(
        r.why.contains("from 2 to 0 replicas") && r.why.contains("in 200 s"),
        "{}",
        r.why
    );
    // At the floor there is no cooldown left to wait for.
    let mut at_floor = g.clone();
    at_floor.scale = Ok((0, 0));
    let r = compose(&at_floor);
    assert_eq!(r.cooldown_remaining_seconds, None);
    assert!(r.why.contains("stays at its floor (0)"), "{}", r.why);
    // An idle count is the floor when set; a cooldown long past is 0, not negative.
    let mut idle = gathered(
        object(
            json!([
                cond("Ready", "True", "Ready"),
                cond("Active", "False", "ScalerNotActive")
            ]),
            json!({"lastActiveTime": "2026-12-03T08:00:00Z"}),
            json!({"idleReplicaCount": 0, "minReplicaCount": 1}),
        ),
        Ok("0"),
        1,
    );
    assert_eq!(compose(&idle).cooldown_remaining_seconds, Some(0));
    idle.scale = Err("forbidden".into());
    let r = compose(&idle);
    assert_eq!((r.replicas, r.scale_error.as_deref()), (None, Some("forbidden")));
}

#[test]
fn pause_fallback_and_failures_explain_themselves() {
    let paused = gathered(
        object(
            json!([
                cond("Ready", "True", "Ready"),
                cond("Paused", "True", "ScalingPaused")
            ]),
            json!({"pausedReplicaCount": 4}),
            json!({}),
        ),
        Ok("0"),
        4,
    );
    assert!(
        compose(&paused)
            .why
            .starts_with("Paused: the paused-replicas annotation holds the target at 4")
    );

    let mut failing = gathered(
        object(
            json!([
                cond("Ready", "True", "Ready"),
                cond("Fallback", "True", "FallbackApplied")
            ]),
            json!({"health": {"s0-rabbitmq-orders": {"numberOfFailures": 3, "status": "Failing"}}}),
            json!({"fallback": {"failureThreshold": 3, "replicas": 2}}),
        ),
        Err("the server is currently unable to handle the request"),
        2,
    );
    failing.hpa = None;
    let r = compose(&failing);
    assert!(
        r.why.starts_with("Fallback:") && r.why.contains("2 replicas after 3 failed polls"),
        "{}",
        r.why
    );
    assert_eq!(r.triggers[0].health.as_deref(), Some("Failing (3 failures)"));
    // Without an HPA the target comes from the trigger's own parameters.
    assert_eq!(r.triggers[0].target.as_deref(), Some("AverageValue 5"));
    let text = report_text(&r);
    assert!(
        text.contains("value unavailable (the server is currently unable"),
        "{text}"
    );
    assert!(text.contains("\nHPA: none\n"), "{text}");

    let not_ready = gathered(
        object(
            json!([cond("Ready", "False", "TriggerError")]),
            json!({}),
            json!({}),
        ),
        Ok("0"),
        1,
    );
    assert!(
        compose(&not_ready)
            .why
            .starts_with("Not ready (Ready TriggerError)")
    );
}

#[test]
fn the_composite_metric_is_a_trigger_of_its_own() {
    let g = gathered(
        object(
            json!([
                cond("Ready", "True", "Ready"),
                cond("Active", "True", "ScalerActive")
            ]),
            json!({"compositeScalerName": "composite-metric"}),
            json!({"advanced": {"scalingModifiers": {"formula": "orders * 2", "target": "10"}}}),
        ),
        Ok("14"),
        3,
    );
    let r = compose(&g);
    let composite = r.triggers.last().unwrap();
    assert_eq!(composite.metric, "composite-metric");
    assert_eq!(composite.name.as_deref(), Some("orders * 2"));
    assert_eq!(composite.target.as_deref(), Some("AverageValue 10"));
    assert_eq!(composite.activation_threshold.as_deref(), Some("0"));
}

#[test]
fn the_list_has_one_aligned_line_per_object() {
    let a = object(
        json!([
            cond("Ready", "True", "Ready"),
            cond("Active", "True", "ScalerActive")
        ]),
        json!({}),
        json!({}),
    );
    let mut b = object(json!([]), json!({}), json!({"minReplicaCount": 1}));
    b.metadata.name = Some("a-much-longer-name".into());
    let lines = list_lines(&[a, b], &|hpa| (hpa == "ebb-hpa-worker").then_some(3));
    let text = list_text(&lines);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TARGET", "READY", "ACTIVE", "MIN-MAX", "REPLICAS"]
    );
    assert_eq!(
        rows[1].split_whitespace().collect::<Vec<_>>(),
        ["worker", "Deployment/worker", "True", "True", "0-10", "3"]
    );
    assert_eq!(
        rows[2].split_whitespace().collect::<Vec<_>>(),
        ["a-much-longer-name", "Deployment/worker", "-", "-", "1-10", "3"]
    );
    // Columns line up.
    assert_eq!(rows[0].find("TARGET"), rows[1].find("Deployment"));
}
