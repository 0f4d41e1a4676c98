//! The simulation end to end on small scenarios, each hand-computed.

use super::*;
use crate::cli::validate::read_documents;

fn so(extra_spec: &str, trigger: &str) -> Vec<InputDocument> {
    let yaml = format!(
        r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {{name: worker, namespace: jobs}}
spec:
  scaleTargetRef: {{name: worker}}
  pollingInterval: 5
  cooldownPeriod: 20
  maxReplicaCount: 10
{extra_spec}
  triggers:
{trigger}
"#
    );
    read_documents("so.yaml", &yaml).unwrap()
}

/// A poll-only trigger: target 10 per replica, active above 0.
const METRICS_API: &str = r#"  - type: metrics-api
    name: depth
    metadata: {url: "http://src/", valueLocation: depth, targetValue: "10"}"#;

fn events(r: &Report) -> Vec<(f64, &str)> {
    r.timeline
        .events
        .iter()
        .map(|e| (e.time, e.reason.as_str()))
        .collect()
}

fn run(docs: &[InputDocument], csv: &str) -> Report {
    simulate(docs, None, csv, SimulateOptions::default()).unwrap()
}

#[test]
fn activates_on_the_poll_after_the_first_message_and_scales_to_zero_after_the_cooldown() {
    let docs = so("", METRICS_API);
    // Messages from t=7 to t=30, none after.
    let r = run(&docs, "time,depth\n0,0\n7,3\n31,0\n80,0\n");
    // Polls at 0, 5, 10, ...: the first to see 3 is t=10; the last to see it t=30; the cooldown
    // of 20 s after that ends at t=50, a poll.
    assert_eq!(events(&r), vec![(10.0, "Activated"), (50.0, "ScaledToZero")]);
    // The HPA syncs at 15, 30, 45 with one replica: 3 of target 10 asks for 1, so it stays.
    assert!(
        r.timeline
            .rows
            .iter()
            .filter(|row| row.by == Actor::Hpa && (15.0..50.0).contains(&row.time))
            .all(|row| row.replicas == 1 && row.hpa_desired == Some(1))
    );
    let last = r.timeline.rows.last().unwrap();
    assert_eq!(last.replicas, 0);
}

#[test]
fn the_hpa_scales_between_one_and_n() {
    let docs = so("", METRICS_API);
    let r = run(&docs, "time,depth\n0,45\n60,45\n");
    // 0 → 1 at t=0 by ebb; at t=0 the HPA sees 1 replica... the poll comes first: 45/10 → 5,
    // limited to max(2 × 1, 4) = 4 without behavior; at 15: 5.
    let rescale: Vec<(f64, i32)> = r.timeline.events.iter().map(|e| (e.time, e.replicas)).collect();
    assert_eq!(rescale, vec![(0.0, 1), (0.0, 4), (15.0, 5)]);
}

#[test]
fn the_hpa_respects_a_configured_behavior() {
    let behavior = r#"  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleUp: {policies: [{type: Pods, value: 1, periodSeconds: 30}]}"#;
    let docs = so(behavior, METRICS_API);
    let r = run(&docs, "time,depth\n0,45\n100,45\n");
    let rescale: Vec<(f64, i32)> = r
        .timeline
        .events
        .iter()
        .filter(|e| e.by == Actor::Hpa)
        .map(|e| (e.time, e.replicas))
        .collect();
    // One pod per 30 s: the sync at 30 is exactly 30 s after the event at 0, outside the period.
    assert_eq!(rescale, vec![(0.0, 2), (30.0, 3), (60.0, 4), (90.0, 5)]);
    assert!(r.hpa_behavior);
}

#[test]
fn failing_polls_engage_the_fallback_and_never_scale_to_zero() {
    let fallback = "  fallback: {failureThreshold: 2, replicas: 3}";
    let docs = so(fallback, METRICS_API);
    let r = run(&docs, "time,depth\n0,5\n6,error\n40,0\n100,0\n");
    // Failing polls at 10 and 15: engaged at 15 (3 replicas; the HPA then keeps 3, served 3 × 10).
    // Recovered at 40; inactive since the poll at 5, so the cooldown has run: to zero at 40.
    assert_eq!(
        events(&r),
        vec![
            (0.0, "Activated"),
            (10.0, "TriggerFailing"),
            (15.0, "FallbackEngaged"),
            (15.0, "FallbackReplicas"),
            (40.0, "TriggerRecovered"),
            (40.0, "FallbackCleared"),
            (40.0, "ScaledToZero"),
        ]
    );
    assert!(
        r.timeline
            .rows
            .iter()
            .filter(|row| (15.0..40.0).contains(&row.time))
            .all(|row| row.replicas == 3)
    );
}

#[test]
fn a_pushing_trigger_activates_between_polls() {
    let rabbit = r#"  - type: rabbitmq
    name: q
    metadata: {host: "amqp://h/", queueName: q, mode: QueueLength, value: "5"}"#;
    let docs = so("", rabbit);
    let r = run(&docs, "time,q\n0,0\n7,2\n9,0\n60,0\n");
    // The watcher sees the message at 7: a poll at once, not at 10; the next polls follow from 7.
    let e = events(&r);
    assert_eq!(e[0], (7.0, "Activated"));
    // Inactive from the poll the watcher triggers at 9 (a pushed deactivation starts the cooldown
    // then): 9 + 20 = 29, the first poll at or after it is 29.
    assert_eq!(e[1], (29.0, "ScaledToZero"));
}

#[test]
fn scaling_modifiers_decide_activity_from_the_formula() {
    let two = r#"  - type: metrics-api
    name: a
    metadata: {url: "http://src/", valueLocation: a, targetValue: "10"}
  - type: metrics-api
    name: b
    metadata: {url: "http://src/", valueLocation: b, targetValue: "10"}"#;
    let modifiers = r#"  advanced:
    scalingModifiers: {formula: "a + b", target: "10", activationTarget: "4"}"#;
    let docs = so(modifiers, two);
    let r = run(&docs, "time,a,b\n0,2,2\n10,3,2\n30,3,2\n");
    // 4 is not above 4; 5 is: activated at the poll at 10.
    assert_eq!(events(&r)[0], (10.0, "Activated"));
    assert_eq!(r.composite_target, Some(10.0));
    let read = r
        .timeline
        .rows
        .iter()
        .find(|row| row.by == Actor::Hpa && row.time == 15.0)
        .and_then(|row| row.hpa_read.clone());
    assert_eq!(read, Some(vec![Some(5.0)]));
}

#[test]
fn options_and_inputs_are_checked() {
    let docs = so("", METRICS_API);
    let e = simulate(&docs, None, "time,nope\n0,1\n", SimulateOptions::default()).unwrap_err();
    assert!(matches!(e, SimulateError::MissingColumn { .. }), "{e}");
    let bad_step = SimulateOptions {
        step_ms: 0,
        ..SimulateOptions::default()
    };
    assert!(simulate(&docs, None, "time,depth\n0,1\n", bad_step).is_err());
    let e = simulate(
        &docs,
        Some("other"),
        "time,depth\n0,1\n",
        SimulateOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, SimulateError::NoScaledObject));
    let e = simulate(&docs, None, "time,depth\n0,x\n", SimulateOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "series");
    let source = std::error::Error::source(&e).map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some("line 2, column 2: value \"x\" is not a number (or empty / error for a failing poll)")
    );
    let long = SimulateOptions {
        step_ms: 10,
        ..SimulateOptions::default()
    };
    assert!(simulate(&docs, None, "time,depth\n0,1\n1e9,1\n", long).is_err());
}

#[test]
fn text_output_lists_rows_and_events() {
    let docs = so("", METRICS_API);
    let r = run(&docs, "time,depth\n0,0\n7,3\n31,0\n80,0\n");
    let text = render_text(&r);
    assert!(
        text.starts_with("ScaledObject jobs/worker: pollingInterval 5s"),
        "{text}"
    );
    assert!(text.contains("     10.0  ebb   3"), "{text}");
    assert!(text.contains("Activated"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["events"][0]["reason"], "Activated");
    assert_eq!(json["rows"][0]["by"], "ebb");
}

/// A small report for the plot's tests: activation at 10 s, scale to zero at 50 s; the
/// ScaledObject named `name`.
pub(super) fn sample_report(name: &str) -> Report {
    let docs = so("", METRICS_API);
    let mut r = run(&docs, "time,depth\n0,0\n7,3\n31,error\n32,0\n80,0\n");
    r.scaled_object = name.to_string();
    r.triggers[0].name = name.to_string();
    r
}

proptest::proptest! {
    // Whatever the series (values, failures, gaps), the replay ends, every count stays within
    // 0..=maxReplicaCount, and ebb alone moves the target off and onto 0.
    #[test]
    fn any_series_replays_within_bounds(
        points in proptest::collection::vec((1u32..40, proptest::option::of(0.0f64..500.0)), 1..40),
    ) {
        let docs = so("  fallback: {failureThreshold: 2, replicas: 4}", METRICS_API);
        let mut csv = String::from("time,depth\n");
        let mut t = 0u32;
        for (gap, value) in &points {
            let cell = value.map_or_else(|| "error".to_string(), |v| format!("{v:.2}"));
            csv.push_str(&format!("{t},{cell}\n"));
            t += gap;
        }
        let r = run(&docs, &csv);
        let mut before = 0;
        for row in &r.timeline.rows {
            proptest::prop_assert!((0..=10).contains(&row.replicas), "{row:?}");
            if row.by == Actor::Hpa {
                proptest::prop_assert!(
                    (before == 0) == (row.replicas == 0),
                    "the HPA never scales from or to 0: {row:?}"
                );
            }
            before = row.replicas;
        }
    }
}
