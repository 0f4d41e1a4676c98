use super::*;
use crate::ScaledObject;
use proptest::prelude::*;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn valid(kind: WorkloadKind, pairs: &[(&str, &str)]) -> Declaration {
    match declare(kind, "shop", "orders", &annotations(pairs)) {
        Declared::Valid(d) => d,
        other => panic!("expected a declaration, got {other:?}"),
    }
}

fn problems(pairs: &[(&str, &str)]) -> Vec<Issue> {
    match declare(WorkloadKind::Deployment, "shop", "orders", &annotations(pairs)) {
        Declared::Invalid(p) => p,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn typed(d: &Declaration) -> ScaledObject {
    serde_json::from_value(d.object.clone()).expect("the generated object is a ScaledObject")
}

const ISSUE_EXAMPLE: &[(&str, &str)] = &[
    ("autoscaling.ebb.dev/trigger", "kafka"),
    ("autoscaling.ebb.dev/min-replicas", "0"),
    ("autoscaling.ebb.dev/max-replicas", "20"),
    ("autoscaling.ebb.dev/cooldown-period", "120"),
    ("kafka.autoscaling.ebb.dev/bootstrapServers", "kafka:9092"),
    ("kafka.autoscaling.ebb.dev/consumerGroup", "orders"),
    ("kafka.autoscaling.ebb.dev/topic", "orders"),
    ("kafka.autoscaling.ebb.dev/lagThreshold", "50"),
    ("autoscaling.ebb.dev/authentication-ref", "kafka-sasl"),
];

#[test]
fn the_short_form_example_generates_one_kafka_trigger_on_the_workload() {
    let d = valid(WorkloadKind::Deployment, ISSUE_EXAMPLE);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    assert_eq!(d.form, Form::Short("kafka".into()));
    assert_eq!(
        d.object,
        json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {
                "name": "orders-deployment", "namespace": "shop",
                "labels": {"autoscaling.ebb.dev/generated": "true", "app.kubernetes.io/managed-by": "ebb"},
                "annotations": {
                    "autoscaling.ebb.dev/generated-from": "Deployment/orders",
                    "autoscaling.ebb.dev/generated-digest": digest(&annotations(ISSUE_EXAMPLE)),
                }
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders"},
                "minReplicaCount": 0, "maxReplicaCount": 20, "cooldownPeriod": 120,
                "triggers": [{"type": "kafka", "authenticationRef": {"name": "kafka-sasl"}, "metadata": {
                    "bootstrapServers": "kafka:9092", "consumerGroup": "orders",
                    "topic": "orders", "lagThreshold": "50"}}]
            }
        })
    );
    let so = typed(&d);
    assert_eq!(
        so.spec.polling_interval, 30,
        "KEDA's defaults apply as for a written object"
    );
}

#[test]
fn every_short_form_key_sets_its_field() {
    let cases: &[(&str, &str, &str, Json)] = &[
        ("min-replicas", "2", "/minReplicaCount", json!(2)),
        ("max-replicas", "9", "/maxReplicaCount", json!(9)),
        ("idle-replicas", "0", "/idleReplicaCount", json!(0)),
        ("polling-interval", "5", "/pollingInterval", json!(5)),
        ("cooldown-period", "60", "/cooldownPeriod", json!(60)),
        (
            "initial-cooldown-period",
            "30",
            "/initialCooldownPeriod",
            json!(30),
        ),
        (
            "restore-to-original-replica-count",
            "True",
            "/advanced/restoreToOriginalReplicaCount",
            json!(true),
        ),
        ("trigger-name", "lag", "/triggers/0/name", json!("lag")),
        ("metric-type", "Value", "/triggers/0/metricType", json!("Value")),
        (
            "use-cached-metrics",
            "false",
            "/triggers/0/useCachedMetrics",
            json!(false),
        ),
        (
            "env-source-container-name",
            "app",
            "/scaleTargetRef/envSourceContainerName",
            json!("app"),
        ),
    ];
    for (suffix, value, pointer, expected) in cases {
        let key = format!("{PREFIX}{suffix}");
        let d = valid(
            WorkloadKind::StatefulSet,
            &[(TRIGGER, "rabbitmq"), (key.as_str(), value)],
        );
        assert_eq!(d.object["spec"].pointer(pointer), Some(expected), "{key}");
        assert!(d.warnings.is_empty(), "{key}: {:?}", d.warnings);
        typed(&d);
    }
    let d = valid(
        WorkloadKind::Deployment,
        &[
            (TRIGGER, "kafka"),
            ("autoscaling.ebb.dev/fallback-failure-threshold", "3"),
            ("autoscaling.ebb.dev/fallback-replicas", "6"),
            ("autoscaling.ebb.dev/fallback-behavior", "currentReplicasIfHigher"),
            ("autoscaling.ebb.dev/authentication-ref", "shared"),
            (
                "autoscaling.ebb.dev/authentication-kind",
                "ClusterTriggerAuthentication",
            ),
        ],
    );
    let so = typed(&d);
    let fallback = so.spec.fallback.expect("fallback");
    assert_eq!((fallback.failure_threshold, fallback.replicas), (3, 6));
    assert_eq!(
        fallback.behavior,
        crate::FallbackBehavior::CurrentReplicasIfHigher
    );
    let auth = so.spec.triggers[0].authentication_ref.clone().expect("auth");
    assert_eq!(auth.name, "shared");
    assert_eq!(
        auth.kind,
        crate::AuthenticationRefKind::ClusterTriggerAuthentication
    );
    // Every key the table declares is covered above.
    let covered: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for (suffix, _, _) in SHORT_KEYS {
        assert!(
            covered.contains(suffix)
                || suffix.starts_with("fallback-")
                || suffix.starts_with("authentication-"),
            "{suffix} untested"
        );
    }
}

#[test]
fn a_bad_value_names_its_annotation() {
    for (suffix, _, kind) in SHORT_KEYS {
        let bad = match kind {
            Value::Int => "twelve",
            Value::Bool => "yes",
            Value::Text => continue,
        };
        let key = format!("{PREFIX}{suffix}");
        let p = problems(&[(TRIGGER, "kafka"), (key.as_str(), bad)]);
        assert!(p.iter().all(|i| i.annotation == key), "{p:?}");
        assert!(p[0].message.contains(bad), "{}", p[0]);
    }
    let p = problems(&[(TRIGGER, "kafka"), ("autoscaling.ebb.dev/fallback-replicas", "2")]);
    assert_eq!(p[0].annotation, "autoscaling.ebb.dev/fallback-replicas");
    assert!(p[0].message.contains("fallback-failure-threshold"), "{}", p[0]);
    let p = problems(&[(TRIGGER, " ")]);
    assert_eq!(p[0].annotation, TRIGGER);
}

#[test]
fn unknown_and_foreign_keys_are_warnings() {
    let d = valid(
        WorkloadKind::Deployment,
        &[
            (TRIGGER, "kafka"),
            ("autoscaling.ebb.dev/max-replica", "3"),
            ("rabbitmq.autoscaling.ebb.dev/queueName", "q"),
            ("kafka.autoscaling.ebb.dev/topic", "t"),
        ],
    );
    let warned: Vec<&str> = d.warnings.iter().map(|w| w.annotation.as_str()).collect();
    assert_eq!(
        warned,
        [
            "rabbitmq.autoscaling.ebb.dev/queueName",
            "autoscaling.ebb.dev/max-replica"
        ]
    );
    assert_eq!(d.object["spec"]["triggers"][0]["metadata"], json!({"topic": "t"}));
    assert_eq!(d.object["spec"].get("maxReplicaCount"), None);
}

#[test]
fn nothing_without_scaling_keys_and_pause_keys_only_travel_with_a_declaration() {
    let other = annotations(&[("deployment.kubernetes.io/revision", "3"), (PAUSED, "true")]);
    assert_eq!(
        declare(WorkloadKind::Deployment, "a", "b", &other),
        Declared::Nothing
    );
    let d = valid(
        WorkloadKind::Deployment,
        &[
            (TRIGGER, "kafka"),
            (PAUSED_REPLICAS, "4"),
            ("deployment.kubernetes.io/revision", "3"),
        ],
    );
    assert_eq!(d.object["metadata"]["annotations"][PAUSED_REPLICAS], "4");
    assert_eq!(d.object["metadata"]["annotations"].as_object().unwrap().len(), 3);
    // The digest covers what the object was generated from, the passed-through keys included.
    let d2 = valid(
        WorkloadKind::Deployment,
        &[(TRIGGER, "kafka"), (PAUSED_REPLICAS, "5")],
    );
    assert_ne!(
        d.object["metadata"]["annotations"][GENERATED_DIGEST],
        d2.object["metadata"]["annotations"][GENERATED_DIGEST]
    );
}

const FULL: &str = r#"
pollingInterval: 7
cooldownPeriod: 45
initialCooldownPeriod: 20
idleReplicaCount: 0
minReplicaCount: 1
maxReplicaCount: 12
fallback: {failureThreshold: 3, replicas: 4, behavior: currentReplicas}
advanced:
  restoreToOriginalReplicaCount: true
  horizontalPodAutoscalerConfig:
    name: custom-hpa
    behavior:
      scaleDown:
        stabilizationWindowSeconds: 60
        policies: [{type: Percent, value: 50, periodSeconds: 30}]
  scalingModifiers: {formula: "(a + b) / 2", target: "10", activationTarget: "1", metricType: Value}
triggers:
- type: kafka
  name: a
  metricType: Value
  useCachedMetrics: true
  authenticationRef: {name: sasl, kind: ClusterTriggerAuthentication}
  metadata: {bootstrapServers: "k:9092", consumerGroup: g, topic: t, lagThreshold: "10"}
- type: rabbitmq
  name: b
  metadata: {host: "amqp://r:5672/", queueName: q, value: "5"}
"#;

#[test]
fn every_keda_field_is_reachable_from_the_full_form() {
    let d = valid(
        WorkloadKind::StatefulSet,
        &[
            (SCALED_OBJECT, FULL),
            ("autoscaling.ebb.dev/env-source-container-name", "main"),
        ],
    );
    assert_eq!(d.form, Form::Full);
    let so = typed(&d);
    let mut written: Json = serde_saphyr::from_str(FULL).unwrap();
    written["scaleTargetRef"] = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "orders", "envSourceContainerName": "main"});
    let expected: crate::ScaledObjectSpec = serde_json::from_value(written.clone()).unwrap();
    assert_eq!(so.spec, expected);
    assert_eq!(so.metadata.name.as_deref(), Some("orders-statefulset"));
    // Every field written comes back out of the typed object: nothing was dropped on the way.
    let back = serde_json::to_value(&so.spec).unwrap();
    fn covers(written: &Json, back: &Json, at: &str) {
        match written {
            Json::Object(m) => {
                for (k, v) in m {
                    let b = back.get(k).unwrap_or_else(|| panic!("{at}.{k} dropped"));
                    covers(v, b, &format!("{at}.{k}"));
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    covers(v, &back[i], &format!("{at}[{i}]"));
                }
            }
            _ => {}
        }
    }
    covers(&written, &back, "spec");
}

#[test]
fn the_full_form_refuses_a_target_short_keys_and_both_forms() {
    let p = problems(&[(SCALED_OBJECT, "scaleTargetRef: {name: other}\ntriggers: []\n")]);
    assert_eq!(
        p[0].annotation,
        "autoscaling.ebb.dev/scaled-object: spec.scaleTargetRef"
    );
    let p = problems(&[(SCALED_OBJECT, FULL), ("autoscaling.ebb.dev/max-replicas", "3")]);
    assert_eq!(p[0].annotation, "autoscaling.ebb.dev/max-replicas");
    let p = problems(&[(SCALED_OBJECT, FULL), (TRIGGER, "kafka")]);
    assert_eq!(p[0].annotation, SCALED_OBJECT);
    let p = problems(&[(SCALED_OBJECT, "triggers: [unclosed")]);
    assert!(p[0].message.starts_with("not valid YAML"), "{}", p[0]);
    let p = problems(&[(SCALED_OBJECT, "- a list")]);
    assert_eq!(p[0].annotation, SCALED_OBJECT);
    let p = problems(&[("autoscaling.ebb.dev/min-replicas", "1")]);
    assert!(p[0].message.contains("no trigger declared"), "{}", p[0]);
}

#[test]
fn problems_found_later_are_named_by_their_annotation() {
    let d = valid(WorkloadKind::Deployment, ISSUE_EXAMPLE);
    for (field, annotation) in [
        ("spec.minReplicaCount", "autoscaling.ebb.dev/min-replicas"),
        (
            "spec.triggers[0].metadata.lagThreshold",
            "kafka.autoscaling.ebb.dev/lagThreshold",
        ),
        (
            "spec.triggers[0].authenticationRef.name",
            "autoscaling.ebb.dev/authentication-ref",
        ),
        (
            "spec.triggers[0].authenticationRef",
            "autoscaling.ebb.dev/authentication-ref",
        ),
        ("spec.fallback", "autoscaling.ebb.dev/fallback-failure-threshold"),
        ("spec.triggers[0].type", TRIGGER),
        ("spec.triggers[0]", TRIGGER),
        (
            "spec.scaleTargetRef.envSourceContainerName",
            "autoscaling.ebb.dev/env-source-container-name",
        ),
    ] {
        assert_eq!(d.annotation_for(field), annotation, "{field}");
    }
    let full = valid(WorkloadKind::Deployment, &[(SCALED_OBJECT, FULL)]);
    assert_eq!(
        full.annotation_for("spec.triggers[1].metadata.value"),
        "autoscaling.ebb.dev/scaled-object: spec.triggers[1].metadata.value"
    );
}

#[test]
fn generated_names_are_distinct_per_workload_and_fit_an_hpa_name() {
    assert_eq!(generated_name(WorkloadKind::Deployment, "web"), "web-deployment");
    assert_eq!(
        generated_name(WorkloadKind::StatefulSet, "web"),
        "web-statefulset"
    );
    let long_a = format!("{}a", "x".repeat(250));
    let long_b = format!("{}b", "x".repeat(250));
    let (a, b) = (
        generated_name(WorkloadKind::Deployment, &long_a),
        generated_name(WorkloadKind::Deployment, &long_b),
    );
    assert_ne!(a, b);
    for n in [&a, &b] {
        assert!(n.len() <= MAX_GENERATED_NAME && n.ends_with("-deployment"), "{n}");
    }
    let dashed = format!("{}-{}", "y".repeat(226), "z".repeat(30));
    let n = generated_name(WorkloadKind::StatefulSet, &dashed);
    assert!(!n.contains("--") && n.len() <= MAX_GENERATED_NAME, "{n}");
}

proptest! {
    // Any annotations at all: no panic, and every problem or warning names a scaling annotation.
    #[test]
    fn arbitrary_annotations_never_panic_and_issues_name_annotations(
        pairs in proptest::collection::btree_map(
            prop_oneof![
                Just(TRIGGER.to_string()),
                Just(SCALED_OBJECT.to_string()),
                "(autoscaling\\.ebb\\.dev/|kafka\\.autoscaling\\.ebb\\.dev/|x\\.autoscaling\\.ebb\\.dev/|other/)[a-z-]{0,12}",
            ],
            ".{0,40}",
            0..8,
        )
    ) {
        let out = declare(WorkloadKind::Deployment, "n", "w", &pairs);
        let issues = match &out {
            Declared::Nothing => Vec::new(),
            Declared::Invalid(p) => p.clone(),
            Declared::Valid(d) => d.warnings.clone(),
        };
        for issue in issues {
            let key = issue.annotation.split(':').next().unwrap_or_default();
            prop_assert!(pairs.contains_key(key), "{issue} names no annotation that was set");
        }
        if let Declared::Valid(d) = out {
            prop_assert_eq!(d.object["spec"]["scaleTargetRef"]["name"].as_str(), Some("w"));
        }
    }

    // The short form's numbers and metadata reach the spec unchanged.
    #[test]
    fn short_form_values_reach_the_spec(
        min in 0i32..50, max in 1i32..500, cooldown in 0i32..10_000,
        metadata in proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9]{0,15}", "[ -~]{0,30}", 0..6),
    ) {
        let mut pairs = annotations(&[(TRIGGER, "nats-jetstream")]);
        pairs.insert(format!("{PREFIX}min-replicas"), min.to_string());
        pairs.insert(format!("{PREFIX}max-replicas"), format!(" {max} "));
        pairs.insert(format!("{PREFIX}cooldown-period"), cooldown.to_string());
        for (k, v) in &metadata {
            pairs.insert(format!("nats-jetstream{METADATA_DOMAIN}{k}"), v.clone());
        }
        let Declared::Valid(d) = declare(WorkloadKind::Deployment, "n", "w", &pairs) else {
            return Err(TestCaseError::fail("not valid"));
        };
        let so = typed(&d);
        prop_assert_eq!((so.spec.min_replica_count, so.spec.max_replica_count, so.spec.cooldown_period), (min, max, cooldown));
        prop_assert_eq!(&so.spec.triggers[0].metadata, &metadata);
    }
}
