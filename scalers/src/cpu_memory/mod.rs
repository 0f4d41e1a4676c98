//! The `cpu` and `memory` triggers: HPA Resource metrics (ContainerResource with
//! `containerName`), read by the HPA from the cluster's metrics server. ebb does not poll them;
//! they never make an object active, and an object whose triggers are all of them is always
//! active (it cannot scale from zero, so `minReplicaCount` must be at least 1).

use crate::params::{DeclDocs, Param, ParamError, ParsedParams, ScalerDecl, Thresholds};
use crate::resource_metric::{ResourceMetric, ResourceTarget, TargetType};

/// The longest `value` or `containerName` accepted.
const MAX_LEN: usize = 253;

/// The parameters both triggers share.
pub static PARAMS: &[Param] = &[
    Param::string("value")
        .required()
        .doc("The target: a whole percentage of the pods' requests for `Utilization`, a quantity per pod (`500m`, `512Mi`) for `AverageValue`."),
    Param::string("containerName")
        .doc("Scale on this container's usage only (an HPA ContainerResource metric) instead of the whole pod's."),
    Param::one_of("type", &["Utilization", "AverageValue"])
        .deprecated("use the trigger's `metricType` field instead")
        .doc("The target type, `Utilization` (a percentage of the requests) or `AverageValue`, as the trigger's `metricType` now says it."),
];

const CHECKS: &[&str] = &[
    "The target type is `type` when set (deprecated), else the trigger's `metricType`, which must be `Utilization` or `AverageValue`; `type` and a `metricType` of `Utilization` or `Value` must agree.",
    "With `Utilization`, `value` must be a whole number above 0; with `AverageValue`, a Kubernetes quantity above 0.",
    "`containerName` must be a DNS-1123 label.",
    "An object whose triggers are all `cpu` or `memory` must have `minReplicaCount` of at least 1 (they cannot scale from zero); such an object is always active.",
    "`useCachedMetrics` is not allowed (the HPA reads the value), and the trigger is not allowed in a ScaledJob.",
];

const DIFFERENCES: &[&str] = &[
    "A bad `AverageValue` quantity is refused with a message (KEDA panics), a `Utilization` of 0 or below is refused (the HPA would reject it).",
    "ebb's CRD defaults `metricType` to `AverageValue`, so a trigger without `type` and `metricType` is an AverageValue target (KEDA refuses it), and `type` wins over a `metricType: AverageValue` (KEDA lets `metricType` win).",
    "Only cpu/memory with `minReplicaCount: 0` is refused by the operator (Ready=False naming `spec.minReplicaCount`, the HPA removed, replicas left as they are) and by `ebb validate`, as KEDA's webhook refuses it; the containers' requests are not checked.",
    "With scalingModifiers, ContainerResource metrics stay on the HPA beside the composite metric, as Resource metrics do (KEDA drops them).",
];

/// The cpu trigger's declaration.
pub static CPU_DECL: ScalerDecl = decl(
    "cpu",
    "Scales on the pods' CPU usage: an HPA Resource metric (ContainerResource with `containerName`), read by the HPA from the metrics server; ebb does not poll it.",
    &[("value", "500m")],
);

/// The memory trigger's declaration.
pub static MEMORY_DECL: ScalerDecl = decl(
    "memory",
    "Scales on the pods' memory usage: an HPA Resource metric (ContainerResource with `containerName`), read by the HPA from the metrics server; ebb does not poll it.",
    &[("value", "512Mi"), ("containerName", "app")],
);

const fn decl(
    trigger_type: &'static str,
    summary: &'static str,
    example: &'static [(&'static str, &'static str)],
) -> ScalerDecl {
    ScalerDecl {
        trigger_type,
        params: PARAMS,
        rules: &[],
        check,
        metric_detail,
        thresholds,
        warnings: crate::params::no_warnings,
        docs: DeclDocs {
            summary,
            checks: CHECKS,
            example_metadata: example,
            example_auth: &[],
            keda_differences: DIFFERENCES,
        },
    }
}

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if let Some(c) = p.str("containerName")
        && !is_dns_label(c)
    {
        errors.push(ParamError::new(
            "containerName",
            "must be a container name (a DNS-1123 label: lower-case letters, digits and '-', at most 63)",
        ));
    }
    if p.str("value").is_some_and(|v| v.len() > MAX_LEN) {
        errors.push(ParamError::new(
            "value",
            format!("longer than {MAX_LEN} characters"),
        ));
    }
    errors
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Not used by the HPA (the metric is a resource's); kept for the declaration's shape.
fn thresholds(_: &ParsedParams) -> Thresholds {
    Thresholds {
        target: 1.0,
        activation: 0.0,
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    p.str("containerName").unwrap_or("pod").to_string()
}

/// The cpu trigger's HPA metric.
pub fn cpu(p: &ParsedParams, metric_type: TargetType) -> Result<ResourceMetric, Vec<ParamError>> {
    resource_metric("cpu", p, metric_type)
}

/// The memory trigger's HPA metric.
pub fn memory(p: &ParsedParams, metric_type: TargetType) -> Result<ResourceMetric, Vec<ParamError>> {
    resource_metric("memory", p, metric_type)
}

fn resource_metric(
    resource: &'static str,
    p: &ParsedParams,
    metric_type: TargetType,
) -> Result<ResourceMetric, Vec<ParamError>> {
    let from_type = match p.str("type") {
        Some("Utilization") => Some(TargetType::Utilization),
        Some("AverageValue") => Some(TargetType::AverageValue),
        _ => None,
    };
    let wanted = match (from_type, metric_type) {
        // `metricType: AverageValue` is also what an unset field reads as: `type` decides.
        (Some(t), TargetType::AverageValue) => t,
        (Some(t), m) if t == m => t,
        (Some(_), _) => {
            return Err(vec![ParamError::new(
                "type",
                "the deprecated `type` and the trigger's `metricType` disagree: drop `type`",
            )]);
        }
        (None, TargetType::Value) => {
            return Err(vec![ParamError::new(
                "metricType",
                format!("{resource} supports Utilization or AverageValue, not Value"),
            )]);
        }
        (None, m) => m,
    };
    let Some(value) = p.str("value").map(str::trim) else {
        return Err(vec![ParamError::new("value", "has no value")]);
    };
    let target = match wanted {
        TargetType::Utilization => match value.parse::<i32>() {
            Ok(n) if n > 0 => ResourceTarget::Utilization(n),
            _ => {
                return Err(vec![ParamError::new(
                    "value",
                    format!("{value:?} is not a whole percentage above 0 (Utilization)"),
                )]);
            }
        },
        _ => match crate::common::quantity::parse_quantity(value) {
            Some(q) if q > 0.0 && q.is_finite() => ResourceTarget::AverageValue(value.to_string()),
            _ => {
                return Err(vec![ParamError::new(
                    "value",
                    format!(
                        "{value:?} is not a Kubernetes quantity above 0 such as 500m or 512Mi (AverageValue)"
                    ),
                )]);
            }
        },
    };
    Ok(ResourceMetric {
        resource,
        container: p.str("containerName").map(str::to_string),
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_meta;

    fn metric(
        decl: &ScalerDecl,
        meta: &[(&str, &str)],
        metric_type: TargetType,
    ) -> Result<ResourceMetric, String> {
        let p = parse_meta(decl, meta).map_err(|e| format!("{e:?}"))?;
        let f = if decl.trigger_type == "cpu" { cpu } else { memory };
        f(&p, metric_type).map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }

    #[test]
    fn keda_parse_table() {
        use TargetType::*;
        // KEDA's cases: (metricType, metadata, error?)
        assert!(metric(&CPU_DECL, &[], Utilization).is_err());
        assert_eq!(
            metric(&CPU_DECL, &[("value", "50")], Utilization).unwrap().target,
            ResourceTarget::Utilization(50)
        );
        assert_eq!(
            metric(&CPU_DECL, &[("value", "50")], AverageValue)
                .unwrap()
                .target,
            ResourceTarget::AverageValue("50".into())
        );
        assert!(
            metric(&CPU_DECL, &[("value", "50")], Value)
                .unwrap_err()
                .contains("not Value")
        );
        assert!(metric(&CPU_DECL, &[("value", "")], AverageValue).is_err());
        // Container metrics.
        let m = metric(
            &CPU_DECL,
            &[("value", "50"), ("containerName", "foo")],
            Utilization,
        )
        .unwrap();
        assert_eq!((m.resource, m.container.as_deref()), ("cpu", Some("foo")));
        let m = metric(&MEMORY_DECL, &[("value", "512Mi")], AverageValue).unwrap();
        assert_eq!((m.resource, m.container), ("memory", None));
        assert_eq!(m.target, ResourceTarget::AverageValue("512Mi".into()));
    }

    #[test]
    fn the_deprecated_type_and_metric_type() {
        use TargetType::*;
        let u = |meta: &[(&str, &str)], t| metric(&MEMORY_DECL, meta, t);
        // `type` wins over the default AverageValue.
        assert_eq!(
            u(&[("value", "70"), ("type", "Utilization")], AverageValue)
                .unwrap()
                .target,
            ResourceTarget::Utilization(70)
        );
        assert_eq!(
            u(&[("value", "70"), ("type", "utilization")], Utilization)
                .unwrap()
                .target,
            ResourceTarget::Utilization(70)
        );
        assert!(
            u(&[("value", "70"), ("type", "AverageValue")], Utilization)
                .unwrap_err()
                .contains("disagree")
        );
        assert!(
            u(&[("value", "70"), ("type", "Utilization")], Value)
                .unwrap_err()
                .contains("disagree")
        );
        assert!(parse_meta(&MEMORY_DECL, &[("value", "70"), ("type", "Value")]).is_err());
        let p = parse_meta(&MEMORY_DECL, &[("value", "70"), ("type", "Utilization")]).unwrap();
        assert!(!p.warnings.is_empty(), "type is deprecated");
    }

    #[test]
    fn bad_values_are_refused_cleanly() {
        use TargetType::*;
        for (value, t) in [
            ("fifty", Utilization),
            ("50.5", Utilization),
            ("0", Utilization),
            ("-5", Utilization),
            ("99999999999", Utilization),
            ("500x", AverageValue),
            ("0", AverageValue),
            ("-1Gi", AverageValue),
            ("Mi", AverageValue),
        ] {
            let e = metric(&CPU_DECL, &[("value", value)], t).unwrap_err();
            assert!(e.starts_with("value:"), "{value}: {e}");
        }
        assert!(
            metric(
                &CPU_DECL,
                &[("value", "1"), ("containerName", "Bad_Name")],
                Utilization
            )
            .is_err()
        );
        let long = "9".repeat(300);
        assert!(metric(&CPU_DECL, &[("value", &long)], AverageValue).is_err());
    }
}
