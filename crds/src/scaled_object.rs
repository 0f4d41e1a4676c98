//! The ScaledObject resource: KEDA's spec shape under `ebb.dev/v1alpha1`.
// clippy reads the repeated `printcolumn(type_ = ..)` keys of the derive as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

// Doc comments on these structs become the CRD's field descriptions, so they are written for users.

/// ScaledObject scales a workload on event sources: ebb itself handles 0↔1 and an HPA it owns handles 1↔N.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "ScaledObject",
    doc = "ScaledObject scales a Deployment, StatefulSet or any workload with a /scale subresource on event sources (queues, streams, HTTP metrics): ebb sets 0 and 1 replicas itself and creates an HPA for 1 to maxReplicaCount.",
    plural = "scaledobjects",
    singular = "scaledobject",
    shortname = "ebbso",
    category = "ebb",
    namespaced,
    status = "ScaledObjectStatus",
    printcolumn(name = "Kind", type_ = "string", json_path = ".status.scaleTargetKind"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.scaleTargetRef.name"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Fallback\")].status"
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status"
    ),
    printcolumn(name = "Triggers", type_ = "string", json_path = ".status.triggersTypes"),
    printcolumn(
        name = "Authentications",
        type_ = "string",
        json_path = ".status.authenticationsTypes"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicaCount <= self.maxReplicaCount")
        .message("minReplicaCount must be less than or equal to maxReplicaCount")
        .field_path(".minReplicaCount"),
    validation = Rule::new("!has(self.idleReplicaCount) || self.idleReplicaCount < self.minReplicaCount")
        .message("idleReplicaCount must be less than minReplicaCount")
        .field_path(".idleReplicaCount")
)]
pub struct ScaledObjectSpec {
    /// The workload to scale. It must expose the /scale subresource.
    pub scale_target_ref: ScaleTargetRef,
    /// Seconds between two polls of the triggers.
    #[serde(default = "defaults::polling_interval")]
    #[schemars(range(min = 1))]
    pub polling_interval: i32,
    /// Seconds every trigger must stay inactive before scaling to idle or zero.
    #[serde(default = "defaults::cooldown_period")]
    #[schemars(range(min = 0))]
    pub cooldown_period: i32,
    /// Seconds after creation before the first scale to zero, while no activity was ever seen.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: i32,
    /// Replicas while inactive, instead of zero. Must be less than minReplicaCount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub idle_replica_count: Option<i32>,
    /// Lowest replica count while active. The HPA gets max(minReplicaCount, 1).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replica_count: i32,
    /// Highest replica count.
    #[serde(default = "defaults::max_replica_count")]
    #[schemars(range(min = 1))]
    pub max_replica_count: i32,
    /// What to do when triggers keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// HPA settings and other advanced options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Advanced>,
    /// The event sources.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
}

/// Reference to the scaled workload.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// API version of the target, apps/v1 when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the target, Deployment when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the target, in the ScaledObject's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Container whose environment feeds `<param>FromEnv`; the first container when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

impl ScaleTargetRef {
    /// The API version, defaulted to `apps/v1`.
    pub fn api_version_or_default(&self) -> &str {
        self.api_version
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("apps/v1")
    }
    /// The kind, defaulted to `Deployment`.
    pub fn kind_or_default(&self) -> &str {
        self.kind
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("Deployment")
    }
}

/// Replicas to hold while triggers keep failing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failed polls before the fallback applies.
    #[schemars(range(min = 0))]
    pub failure_threshold: i32,
    /// Replica count while the fallback applies.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// How `replicas` combines with the current replica count.
    #[serde(default)]
    pub behavior: FallbackBehavior,
}

/// How the fallback replica count combines with the current one.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum FallbackBehavior {
    /// Always the fallback replica count.
    #[default]
    Static,
    /// Keep the current replica count.
    CurrentReplicas,
    /// The current count when it is higher than the fallback count.
    CurrentReplicasIfHigher,
    /// The current count when it is lower than the fallback count.
    CurrentReplicasIfLower,
    /// With `advanced.scalingModifiers`: a trigger failing for `failureThreshold` polls is nil in
    /// the formula (`a ?? b` then uses `b`); a nil result means `replicas`.
    ScalingModifiers,
}

/// Advanced options.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    /// Settings of the HPA that ebb creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    /// On deletion of the ScaledObject, put back the replica count it found.
    #[serde(default)]
    pub restore_to_original_replica_count: bool,
    /// Combine the triggers into one composite metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// Settings of the owned HPA.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    /// HPA name, `ebb-hpa-<ScaledObject name>` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// HPA scaling behavior, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// A formula over named triggers that yields one composite metric.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    /// Expression over trigger names.
    #[schemars(length(min = 1))]
    pub formula: String,
    /// Target of the composite metric (a number greater than 0).
    #[schemars(length(min = 1))]
    pub target: String,
    /// Activation threshold of the composite metric.
    #[serde(default = "defaults::activation_target")]
    pub activation_target: String,
    /// Target type of the composite metric.
    #[serde(default)]
    pub metric_type: MetricType,
}

/// One event source.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Scaler type, for example kafka, rabbitmq, nats-jetstream, aws-sqs-queue or metrics-api.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub type_: String,
    /// Trigger name, unique within the ScaledObject; used by scalingModifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scaler parameters. `<param>FromEnv` reads the value from the target container's environment.
    pub metadata: BTreeMap<String, String>,
    /// Where the trigger's credentials come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// HPA target type of this trigger's metric: AverageValue or Value for event triggers;
    /// Utilization or AverageValue for cpu and memory.
    #[serde(default)]
    pub metric_type: TriggerMetricType,
    /// Let the HPA read the value from ebb's poll cache.
    #[serde(default)]
    pub use_cached_metrics: bool,
}

/// HPA target type of an external metric.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MetricType {
    /// desired = ceil(value / target): the value is a total spread over the replicas.
    #[default]
    AverageValue,
    /// desired = ceil(current × value / target): the value is a gauge.
    Value,
}

impl MetricType {
    /// The name used in the HPA spec.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::AverageValue => "AverageValue",
            MetricType::Value => "Value",
        }
    }
}

/// HPA target type of a trigger's metric: [`MetricType`]'s two for external metrics, and
/// `Utilization` for the resource metrics (cpu, memory) only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TriggerMetricType {
    /// The value is a total spread over the replicas (a quantity per pod for cpu and memory).
    #[default]
    AverageValue,
    /// The value is a gauge.
    Value,
    /// A percentage of the pods' resource requests (cpu and memory only).
    Utilization,
}

impl TriggerMetricType {
    /// The name used in the HPA spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AverageValue => "AverageValue",
            Self::Value => "Value",
            Self::Utilization => "Utilization",
        }
    }

    /// The external metric's target type, or `None` for `Utilization`.
    pub fn external(self) -> Option<MetricType> {
        match self {
            Self::AverageValue => Some(MetricType::AverageValue),
            Self::Value => Some(MetricType::Value),
            Self::Utilization => None,
        }
    }
}

/// Reference to a TriggerAuthentication or ClusterTriggerAuthentication.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// Name of the authentication object.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Kind of the authentication object.
    #[serde(default)]
    pub kind: AuthenticationRefKind,
}

/// Kinds an authenticationRef may name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthenticationRefKind {
    /// A namespaced TriggerAuthentication in the ScaledObject's namespace.
    #[default]
    TriggerAuthentication,
    /// A cluster-scoped ClusterTriggerAuthentication.
    ClusterTriggerAuthentication,
}

/// Observed state of a ScaledObject.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    /// Ready, Active, Fallback and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Kind of the scale target, as `group/version.Kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// Last time a trigger was active (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// Replica count of the target when ebb first took it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// Names of the external metrics served for the HPA, one per trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_metric_names: Vec<String>,
    /// Health of each metric, by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, MetricHealth>,
    /// Replica count held by the paused-replicas annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    /// Name of the HPA owned by this ScaledObject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// `composite-metric` when `advanced.scalingModifiers` combines the triggers into the one
    /// metric the HPA reads (KEDA's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_scaler_name: Option<String>,
    /// Generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The trigger types, each once, comma-separated (as KEDA writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// The authenticationRef names, each once, comma-separated (as KEDA writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
}

/// Health of one metric.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetricHealth {
    /// Consecutive failed polls.
    pub number_of_failures: i32,
    /// Happy or Failing.
    pub status: HealthStatus,
}

/// Health of a metric.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// The last poll succeeded.
    Happy,
    /// The last poll failed.
    Failing,
}

/// KEDA's defaults.
pub mod defaults {
    /// Default `pollingInterval` in seconds.
    pub const POLLING_INTERVAL: i32 = 30;
    /// Default `cooldownPeriod` in seconds.
    pub const COOLDOWN_PERIOD: i32 = 300;
    /// Default `maxReplicaCount`.
    pub const MAX_REPLICA_COUNT: i32 = 100;

    pub(crate) fn polling_interval() -> i32 {
        POLLING_INTERVAL
    }
    pub(crate) fn cooldown_period() -> i32 {
        COOLDOWN_PERIOD
    }
    pub(crate) fn max_replica_count() -> i32 {
        MAX_REPLICA_COUNT
    }
    pub(crate) fn activation_target() -> String {
        "0".to_string()
    }
}

impl ScaledObject {
    /// Name of the HPA this object owns.
    pub fn hpa_name(&self) -> String {
        self.spec
            .advanced
            .as_ref()
            .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
            .and_then(|c| c.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("ebb-hpa-{}", self.metadata.name.as_deref().unwrap_or_default()))
    }
}
