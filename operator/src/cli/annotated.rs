//! Workloads that declare their scaling in annotations, checked as the ScaledObject they generate:
//! the annotations are read into that object (`ebb_crds::annotated`), which then goes through
//! every check a written ScaledObject goes through ([`check_scaled_object_value`]: schema,
//! cross-field rules, trigger parameters), each problem named by the annotation behind it.
//! `ebb validate` and the operator's generator (`crate::generate`) both call [`check_workload`].

use std::collections::BTreeMap;

use ebb_crds::ScaledObject;
use ebb_crds::annotated::{Declaration, Declared, Form, WorkloadKind, declare};
use serde_json::Value as Json;

use crate::cli::bundle::BundleObjects;
use crate::cli::validate::{CheckOptions, check_scaled_object_value};

/// A workload's scaling annotations, checked.
#[derive(Debug, Clone)]
pub struct WorkloadCheck {
    /// Problems, each `annotation: message`; any problem means nothing is generated.
    pub problems: Vec<String>,
    /// Notes that do not stop generation (unknown keys, ignored fields), each `annotation: message`.
    pub warnings: Vec<String>,
    /// The declaration, when the annotations could be read into one.
    pub declaration: Option<Declaration>,
    /// The ScaledObject to generate (KEDA's defaults applied), when there is no problem.
    pub object: Option<ScaledObject>,
}

/// Checks the scaling annotations of the `kind` workload `namespace/name`; `None` when it has
/// none. Trigger references are looked up in `bundle` (missing ones follow `options`).
pub fn check_workload(
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
    bundle: &BundleObjects,
    options: CheckOptions,
) -> Option<WorkloadCheck> {
    let declaration = match declare(kind, namespace, name, annotations) {
        Declared::Nothing => return None,
        Declared::Invalid(problems) => {
            return Some(WorkloadCheck {
                problems: problems.iter().map(ToString::to_string).collect(),
                warnings: Vec::new(),
                declaration: None,
                object: None,
            });
        }
        Declared::Valid(d) => d,
    };
    let source = format!("{kind} {namespace}/{name}");
    let report = check_scaled_object_value(&source, &declaration.object, bundle, options);
    let problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{}: {}", declaration.annotation_for(&p.field), p.message))
        .collect();
    let mut warnings: Vec<String> = declaration.warnings.iter().map(ToString::to_string).collect();
    warnings.extend(report.warnings.iter().map(|w| rename_field(&declaration, w)));
    let object = match (&report.normalized, problems.is_empty()) {
        (Some(json), true) => serde_json::from_value::<ScaledObject>(json.clone()).ok(),
        _ => None,
    };
    Some(WorkloadCheck {
        problems,
        warnings,
        declaration: Some(declaration),
        object,
    })
}

/// A warning of the ScaledObject checks, `spec.<field>: text`, with its field named by the
/// annotation behind it (warnings that name no field are kept as they are).
fn rename_field(declaration: &Declaration, warning: &str) -> String {
    match warning.split_once(": ") {
        Some((field, rest)) if field.starts_with("spec.") || field.starts_with(".spec.") => {
            format!("{}: {rest}", declaration.annotation_for(field))
        }
        _ if declaration.form == Form::Full => format!("{}: {warning}", ebb_crds::annotated::SCALED_OBJECT),
        _ => warning.to_string(),
    }
}

/// The annotations of a manifest's `metadata.annotations`, and the keys whose value is not text
/// (the API server would refuse them).
pub fn annotations_of(doc: &Json) -> (BTreeMap<String, String>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut not_text = Vec::new();
    if let Some(map) = doc.pointer("/metadata/annotations").and_then(Json::as_object) {
        for (k, v) in map {
            match v.as_str() {
                Some(s) => {
                    out.insert(k.clone(), s.to_string());
                }
                None => not_text.push(k.clone()),
            }
        }
    }
    (out, not_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(pairs: &[(&str, &str)]) -> WorkloadCheck {
        check_workload(
            WorkloadKind::Deployment,
            "shop",
            "orders",
            &annotations(pairs),
            &BundleObjects::default(),
            CheckOptions::default(),
        )
        .expect("declares something")
    }

    const KAFKA: &[(&str, &str)] = &[
        ("autoscaling.ebb.dev/trigger", "kafka"),
        ("kafka.autoscaling.ebb.dev/bootstrapServers", "kafka:9092"),
        ("kafka.autoscaling.ebb.dev/consumerGroup", "orders"),
        ("kafka.autoscaling.ebb.dev/topic", "orders"),
        ("kafka.autoscaling.ebb.dev/lagThreshold", "50"),
    ];

    #[test]
    fn a_valid_declaration_yields_the_object_with_defaults() {
        let c = check(KAFKA);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let so = c.object.expect("object");
        assert_eq!(so.metadata.name.as_deref(), Some("orders-deployment"));
        assert_eq!(so.spec.max_replica_count, 100);
        assert_eq!(so.spec.scale_target_ref.name, "orders");
    }

    #[test]
    fn problems_of_the_generated_object_name_their_annotation() {
        let mut pairs = KAFKA.to_vec();
        pairs.retain(|(k, _)| !k.ends_with("lagThreshold"));
        pairs.push(("kafka.autoscaling.ebb.dev/lagThreshold", "-3"));
        pairs.push(("autoscaling.ebb.dev/min-replicas", "5"));
        pairs.push(("autoscaling.ebb.dev/max-replicas", "2"));
        pairs.push(("autoscaling.ebb.dev/polling-interval", "0"));
        let c = check(&pairs);
        assert!(c.object.is_none());
        for annotation in [
            "kafka.autoscaling.ebb.dev/lagThreshold: ",
            "autoscaling.ebb.dev/min-replicas: ",
            "autoscaling.ebb.dev/polling-interval: ",
        ] {
            assert!(
                c.problems.iter().any(|p| p.starts_with(annotation)),
                "{annotation} not named in {:?}",
                c.problems
            );
        }
    }

    #[test]
    fn unknown_trigger_types_and_full_form_fields_are_named() {
        let c = check(&[("autoscaling.ebb.dev/trigger", "kafak")]);
        assert!(
            c.problems
                .iter()
                .any(|p| p.starts_with("autoscaling.ebb.dev/trigger: ")),
            "{:?}",
            c.problems
        );
        let c = check(&[(
            "autoscaling.ebb.dev/scaled-object",
            "maxReplicaCount: 0\npollingIntervall: 3\ntriggers:\n- type: metrics-api\n  metadata: {url: 'http://s/', valueLocation: v, targetValue: '1'}\n",
        )]);
        assert!(
            c.problems
                .iter()
                .any(|p| p.starts_with("autoscaling.ebb.dev/scaled-object: spec.maxReplicaCount: ")),
            "{:?}",
            c.problems
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w
                    .starts_with("autoscaling.ebb.dev/scaled-object: spec.pollingIntervall: unknown field")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn nothing_declared_is_none() {
        assert!(
            check_workload(
                WorkloadKind::StatefulSet,
                "a",
                "b",
                &annotations(&[("other", "x")]),
                &BundleObjects::default(),
                CheckOptions::default()
            )
            .is_none()
        );
    }
}
