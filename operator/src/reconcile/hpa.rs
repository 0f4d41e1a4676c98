//! The HPA that a ScaledObject owns, as a pure function of the ScaledObject, and the drift check
//! that decides whether the live HPA needs to be re-applied.

use std::collections::BTreeMap;

use ebb_crds::annotations::SCALED_OBJECT_NAME_LABEL;
use ebb_crds::{MetricType, ScaledObject};
use ebb_scalers::common::quantity::parse_quantity;
use ebb_scalers::resource_metric::{ResourceMetric, ResourceTarget};
use kube::Resource;
use serde_json::{Value as Json, json};

use crate::scale::decision::PauseState;

/// Which HPA API the cluster serves (found by discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaVersion {
    /// `autoscaling/v2` (Kubernetes ≥ 1.23, or the modern-hybrid test control plane).
    V2,
    /// `autoscaling/v2beta2` (older clusters).
    V2beta2,
}

impl HpaVersion {
    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            HpaVersion::V2 => "autoscaling/v2",
            HpaVersion::V2beta2 => "autoscaling/v2beta2",
        }
    }
    /// The version part.
    pub fn version(self) -> &'static str {
        match self {
            HpaVersion::V2 => "v2",
            HpaVersion::V2beta2 => "v2beta2",
        }
    }
}

/// One External metric of the HPA.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaMetric {
    /// Metric name (`s<i>-<type>-<detail>`).
    pub name: String,
    /// HPA target.
    pub target: f64,
    /// AverageValue or Value.
    pub metric_type: MetricType,
}

/// Label put on every HPA ebb manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ebb");

/// Formats a number as a Kubernetes quantity with milli precision (`10`, `1500m`).
pub fn quantity(value: f64) -> String {
    let milli = (value * 1000.0).round();
    if !milli.is_finite() || milli <= 0.0 {
        return "1m".to_string();
    }
    let milli = milli as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// A cpu or memory trigger's metric as the HPA spec has it: Resource, or ContainerResource
/// with a container name.
pub fn resource_metric_spec(m: &ResourceMetric) -> Json {
    let target = match &m.target {
        ResourceTarget::Utilization(percent) => json!({"type": "Utilization", "averageUtilization": percent}),
        ResourceTarget::AverageValue(quantity) => json!({"type": "AverageValue", "averageValue": quantity}),
    };
    match &m.container {
        Some(container) => json!({"type": "ContainerResource", "containerResource": {
            "name": m.resource, "container": container, "target": target,
        }}),
        None => json!({"type": "Resource", "resource": {"name": m.resource, "target": target}}),
    }
}

/// The HPA to apply for a ScaledObject: the Resource metrics of its cpu and memory triggers
/// (kept beside a scalingModifiers composite, as KEDA), then its External metrics.
pub fn desired_hpa(
    so: &ScaledObject,
    hpa_name: &str,
    resources: &[ResourceMetric],
    metrics: &[HpaMetric],
    pause: PauseState,
    version: HpaVersion,
) -> Json {
    let so_name = so.metadata.name.clone().unwrap_or_default();
    let target = &so.spec.scale_target_ref;
    let mut behavior = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
        .and_then(|c| c.behavior.as_ref())
        .map(|b| serde_json::to_value(b).unwrap_or_default())
        .unwrap_or(Json::Null);
    for (paused, direction) in [
        (pause.scale_in_paused, "scaleDown"),
        (pause.scale_out_paused, "scaleUp"),
    ] {
        if paused {
            if !behavior.is_object() {
                behavior = json!({});
            }
            if !behavior[direction].is_object() {
                behavior[direction] = json!({});
            }
            behavior[direction]["selectPolicy"] = json!("Disabled");
        }
    }
    let metrics: Vec<Json> = resources
        .iter()
        .map(resource_metric_spec)
        .chain(metrics.iter().map(|m| {
            let target = match m.metric_type {
                MetricType::AverageValue => {
                    json!({"type": "AverageValue", "averageValue": quantity(m.target)})
                }
                MetricType::Value => json!({"type": "Value", "value": quantity(m.target)}),
            };
            json!({"type": "External", "external": {
                "metric": {"name": m.name, "selector": {"matchLabels": {SCALED_OBJECT_NAME_LABEL: so_name}}},
                "target": target,
            }})
        }))
        .collect();
    let owner = so
        .controller_owner_ref(&())
        .map(|o| serde_json::to_value(o).unwrap_or_default());
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels.insert(SCALED_OBJECT_NAME_LABEL.to_string(), so_name.clone());
    let mut spec = json!({
        "scaleTargetRef": {
            "apiVersion": target.api_version_or_default(),
            "kind": target.kind_or_default(),
            "name": target.name,
        },
        "minReplicas": so.spec.min_replica_count.max(1),
        "maxReplicas": so.spec.max_replica_count.max(so.spec.min_replica_count.max(1)),
        "metrics": metrics,
    });
    if !behavior.is_null() {
        spec["behavior"] = behavior;
    }
    json!({
        "apiVersion": version.api_version(),
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": hpa_name,
            "namespace": so.metadata.namespace,
            "labels": labels,
            "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default(),
        },
        "spec": spec,
    })
}

/// Whether every field of `desired` has the same value in `live` (the API server adds defaults, so
/// extra fields in `live` are fine; lists must match element by element). Quantities
/// (`averageValue`, `value`) compare by amount: the API server rewrites `0.5` as `500m`.
pub fn is_subset(desired: &Json, live: &Json) -> bool {
    match (desired, live) {
        (Json::Object(d), Json::Object(l)) => d.iter().all(|(k, dv)| {
            dv.is_null()
                || l.get(k).is_some_and(|lv| {
                    is_subset(dv, lv) || ((k == "averageValue" || k == "value") && same_quantity(dv, lv))
                })
        }),
        (Json::Array(d), Json::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        _ => desired == live,
    }
}

/// Whether two JSON strings are the same Kubernetes quantity (`1536Mi` and `1.5Gi`).
fn same_quantity(a: &Json, b: &Json) -> bool {
    match (
        a.as_str().and_then(parse_quantity),
        b.as_str().and_then(parse_quantity),
    ) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

/// Whether the live HPA drifted from what ebb wants (someone edited it, or the ScaledObject changed).
pub fn needs_apply(desired: &Json, live: Option<&Json>) -> bool {
    let Some(live) = live else { return true };
    // The metrics in any order: an API server storing autoscaling/v1 (Kubernetes before 1.23
    // with v2 served) gives the cpu Utilization metric back last.
    let without_metrics = |spec: &Json| {
        let mut spec = spec.clone();
        if let Some(o) = spec.as_object_mut() {
            o.remove("metrics");
        }
        spec
    };
    let metrics = |spec: &Json| spec["metrics"].as_array().cloned().unwrap_or_default();
    let (wanted, found) = (metrics(&desired["spec"]), metrics(&live["spec"]));
    let same_metrics = wanted.len() == found.len()
        && wanted.iter().all(|w| found.iter().any(|f| is_subset(w, f)))
        && found.iter().all(|f| wanted.iter().any(|w| is_subset(w, f)));
    !(same_metrics
        && is_subset(
            &without_metrics(&desired["spec"]),
            &without_metrics(&live["spec"]),
        )
        && is_subset(&desired["metadata"]["labels"], &live["metadata"]["labels"])
        && is_subset(
            &desired["metadata"]["ownerReferences"],
            &live["metadata"]["ownerReferences"],
        ))
}

/// Whether an HPA (as JSON) targets the given workload.
pub fn targets(hpa: &Json, api_version: &str, kind: &str, name: &str) -> bool {
    let r = &hpa["spec"]["scaleTargetRef"];
    let group = |v: &str| v.split_once('/').map(|(g, _)| g.to_string()).unwrap_or_default();
    r["name"] == name
        && r["kind"] == kind
        && group(r["apiVersion"].as_str().unwrap_or("")) == group(api_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn so(extra: Json) -> ScaledObject {
        let mut v = json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
            "spec": {"scaleTargetRef": {"name": "worker"}, "maxReplicaCount": 7,
                     "triggers": [{"type": "kafka", "metadata": {}}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, e) in extra {
                spec.insert(k.clone(), e.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn metric(target: f64, metric_type: MetricType) -> HpaMetric {
        HpaMetric {
            name: "s0-kafka-orders".into(),
            target,
            metric_type,
        }
    }

    #[test]
    fn cpu_and_memory_are_resource_metrics_before_the_external_ones() {
        let resources = [
            ResourceMetric {
                resource: "cpu",
                container: None,
                target: ResourceTarget::Utilization(60),
            },
            ResourceMetric {
                resource: "memory",
                container: Some("app".into()),
                target: ResourceTarget::AverageValue("1.5Gi".into()),
            },
        ];
        let hpa = desired_hpa(
            &so(json!({})),
            "h",
            &resources,
            &[metric(10.0, MetricType::AverageValue)],
            PauseState::default(),
            HpaVersion::V2,
        );
        let metrics = &hpa["spec"]["metrics"];
        assert_eq!(
            metrics[0],
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60}}})
        );
        assert_eq!(
            metrics[1],
            json!({"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app",
                "target": {"type": "AverageValue", "averageValue": "1.5Gi"}}})
        );
        assert_eq!(metrics[2]["type"], "External");
        assert_eq!(metrics.as_array().map(Vec::len), Some(3));
        // The API server writes 1.5Gi as 1536Mi: not drift. Another amount is.
        let mut live = hpa.clone();
        live["spec"]["metrics"][1]["containerResource"]["target"]["averageValue"] = json!("1536Mi");
        assert!(!needs_apply(&hpa, Some(&live)));
        live["spec"]["metrics"][1]["containerResource"]["target"]["averageValue"] = json!("1Gi");
        assert!(needs_apply(&hpa, Some(&live)));
        live["spec"]["metrics"][1]["containerResource"]["target"]["averageValue"] = json!("1536Mi");
        live["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = json!(61);
        assert!(needs_apply(&hpa, Some(&live)));
        // The same metrics in another order (autoscaling/v1 storage puts cpu last): not drift.
        let mut live = hpa.clone();
        live["spec"]["metrics"].as_array_mut().unwrap().rotate_left(1);
        assert!(!needs_apply(&hpa, Some(&live)));
        live["spec"]["metrics"].as_array_mut().unwrap().pop();
        assert!(needs_apply(&hpa, Some(&live)));
    }

    #[test]
    fn quantities_are_milli_precise() {
        assert_eq!(quantity(10.0), "10");
        assert_eq!(quantity(1.5), "1500m");
        assert_eq!(quantity(0.0004), "1m");
    }

    #[test]
    fn hpa_follows_the_scaled_object() {
        let hpa = desired_hpa(
            &so(json!({})),
            "ebb-hpa-orders",
            &[],
            &[
                metric(10.0, MetricType::AverageValue),
                HpaMetric {
                    name: "s1-x".into(),
                    target: 2.5,
                    metric_type: MetricType::Value,
                },
            ],
            PauseState::default(),
            HpaVersion::V2,
        );
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["maxReplicas"], 7);
        assert_eq!(
            hpa["spec"]["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"})
        );
        let m0 = &hpa["spec"]["metrics"][0]["external"];
        assert_eq!(
            m0["metric"]["selector"]["matchLabels"]["scaledobject.ebb.dev/name"],
            "orders"
        );
        assert_eq!(
            m0["target"],
            json!({"type": "AverageValue", "averageValue": "10"})
        );
        assert_eq!(
            hpa["spec"]["metrics"][1]["external"]["target"],
            json!({"type": "Value", "value": "2500m"})
        );
        assert_eq!(hpa["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(hpa["spec"].get("behavior").is_none());
    }

    #[test]
    fn behavior_passes_through_and_pause_flags_disable_a_direction() {
        let so = so(
            json!({"minReplicaCount": 2, "advanced": {"horizontalPodAutoscalerConfig": {
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}}}),
        );
        let pause = PauseState {
            scale_in_paused: true,
            scale_out_paused: true,
            ..Default::default()
        };
        let hpa = desired_hpa(
            &so,
            "h",
            &[],
            &[metric(5.0, MetricType::AverageValue)],
            pause,
            HpaVersion::V2beta2,
        );
        assert_eq!(hpa["apiVersion"], "autoscaling/v2beta2");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            30
        );
        assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Disabled");
        assert_eq!(hpa["spec"]["behavior"]["scaleUp"]["selectPolicy"], "Disabled");
    }

    #[test]
    fn drift_is_detected_but_server_defaults_are_not_drift() {
        let desired = desired_hpa(
            &so(json!({})),
            "h",
            &[],
            &[metric(10.0, MetricType::AverageValue)],
            PauseState::default(),
            HpaVersion::V2,
        );
        let mut live = desired.clone();
        live["spec"]["behavior"] = json!({"scaleUp": {"stabilizationWindowSeconds": 0}});
        live["metadata"]["resourceVersion"] = json!("42");
        assert!(!needs_apply(&desired, Some(&live)));
        live["spec"]["maxReplicas"] = json!(50);
        assert!(needs_apply(&desired, Some(&live)));
        assert!(needs_apply(&desired, None));
    }

    #[test]
    fn target_matching_ignores_the_version() {
        let hpa = json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1beta1", "kind": "Deployment", "name": "w"}}});
        assert!(targets(&hpa, "apps/v1", "Deployment", "w"));
        assert!(!targets(&hpa, "apps/v1", "StatefulSet", "w"));
    }
}
