//! Triggers the HPA reads itself: `cpu` and `memory` become Resource (or ContainerResource)
//! metrics of the HPA, served by the cluster's metrics server; ebb never polls them. Their kinds
//! are registered with [`crate::ScalerKind::resource`] and a [`ResourceFn`].

use crate::params::{ParamError, ParsedParams};

/// The trigger's `metricType` field, as the registry sees it (the operator maps its own type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    /// `AverageValue`: a quantity per pod (also the CRD's default, so ebb cannot tell it apart
    /// from no `metricType` at all).
    AverageValue,
    /// `Value`: not valid for resource metrics.
    Value,
    /// `Utilization`: a percentage of the pods' requests.
    Utilization,
}

/// The HPA target of a resource metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceTarget {
    /// `averageUtilization`: percent of the containers' requests, above 0.
    Utilization(i32),
    /// `averageValue`: a Kubernetes quantity per pod, above 0, as written.
    AverageValue(String),
}

/// One Resource or ContainerResource metric of the HPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceMetric {
    /// The resource: `cpu` or `memory`.
    pub resource: &'static str,
    /// With a container name: a ContainerResource metric of that container.
    pub container: Option<String>,
    /// The target.
    pub target: ResourceTarget,
}

/// Turns a resource trigger's parsed parameters and its `metricType` into its HPA metric, or
/// every problem (the `metricType` field is named `metricType`).
pub type ResourceFn = fn(&ParsedParams, TargetType) -> Result<ResourceMetric, Vec<ParamError>>;
