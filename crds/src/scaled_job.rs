//! The ScaledJob resource: KEDA's ScaledJob spec under `ebb.dev/v1alpha1`. ebb creates one
//! Kubernetes Job per unit of queued work, up to a maximum, and lets each run to completion.
// clippy reads the repeated `printcolumn(type_ = ..)` keys of the derive as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::batch::v1::JobSpec;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Trigger;
use crate::conditions::Condition;

// Doc comments on these structs become the CRD's field descriptions, so they are written for users.

/// ScaledJob runs batch work as Kubernetes Jobs: on each poll it creates Jobs for the queued work,
/// up to maxReplicaCount running at once, and never stops a Job half-way.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "ScaledJob",
    doc = "ScaledJob runs batch work as Kubernetes Jobs on event sources: each poll it creates Jobs for the queued work, up to maxReplicaCount running at once, and never stops a Job half-way.",
    plural = "scaledjobs",
    singular = "scaledjob",
    shortname = "ebbsj",
    category = "ebb",
    namespaced,
    status = "ScaledJobStatus",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(name = "Triggers", type_ = "string", json_path = ".status.triggersTypes"),
    printcolumn(
        name = "Authentications",
        type_ = "string",
        json_path = ".status.authenticationsTypes"
    ),
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
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicaCount <= self.maxReplicaCount")
        .message("minReplicaCount must be less than or equal to maxReplicaCount")
        .field_path(".minReplicaCount"),
    validation = Rule::new(PERCENTAGE_RULE)
        .message("customScalingRunningJobPercentage must be a number between 0 and 1 when the strategy is custom")
        .field_path(".scalingStrategy.customScalingRunningJobPercentage")
)]
pub struct ScaledJobSpec {
    /// The Job to create for each unit of work: a full batch/v1 JobSpec.
    pub job_target_ref: JobSpec,
    /// Seconds between two polls of the triggers.
    #[serde(default = "defaults::polling_interval")]
    #[schemars(range(min = 1))]
    pub polling_interval: i32,
    /// Finished successful Jobs to keep; older ones are deleted.
    #[serde(default = "defaults::history_limit")]
    #[schemars(range(min = 0))]
    pub successful_jobs_history_limit: i32,
    /// Failed Jobs to keep; older ones are deleted.
    #[serde(default = "defaults::history_limit")]
    #[schemars(range(min = 0))]
    pub failed_jobs_history_limit: i32,
    /// Deprecated: use rollout.strategy. When set, it wins over rollout.strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,
    /// What happens to running Jobs when jobTargetRef changes or the ScaledJob is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Container of the Job's pod template whose environment feeds `<param>FromEnv`; the first
    /// container when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept running even when no trigger is active.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replica_count: i32,
    /// Most Jobs running at once.
    #[serde(default = "defaults::max_replica_count")]
    #[schemars(range(min = 1))]
    pub max_replica_count: i32,
    /// How many Jobs to create from the queue length and the Jobs already running.
    #[serde(default)]
    pub scaling_strategy: ScalingStrategy,
    /// The event sources.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
}

/// The CEL rule for `customScalingRunningJobPercentage`: when the strategy is custom, a decimal
/// number in [0, 1]. The pattern comes first so that `double()` never sees text it cannot convert.
const PERCENTAGE_RULE: &str = "!has(self.scalingStrategy) || !has(self.scalingStrategy.strategy) \
    || self.scalingStrategy.strategy != 'custom' \
    || !has(self.scalingStrategy.customScalingRunningJobPercentage) \
    || (self.scalingStrategy.customScalingRunningJobPercentage.matches('^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$') \
    && double(self.scalingStrategy.customScalingRunningJobPercentage) >= 0.0 \
    && double(self.scalingStrategy.customScalingRunningJobPercentage) <= 1.0)";

/// How changes to jobTargetRef, and the deletion of the ScaledJob, treat running Jobs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// default (or immediate, KEDA's schema spelling of it) deletes the Jobs of the previous
    /// jobTargetRef; gradual leaves them to finish.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Deletion propagation used when Jobs are deleted by the default strategy.
    #[serde(default)]
    pub propagation_policy: PropagationPolicy,
}

/// Rollout strategy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    /// Delete the Jobs of the previous jobTargetRef.
    #[default]
    Default,
    /// Same as default (the spelling in KEDA's CRD schema).
    Immediate,
    /// Leave running Jobs alone; new Jobs use the new jobTargetRef.
    Gradual,
}

/// Kubernetes deletion propagation for the Jobs ebb deletes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum PropagationPolicy {
    /// The Job goes at once; its pods are deleted in the background.
    #[default]
    Background,
    /// The Job goes after its pods.
    Foreground,
}

/// How many Jobs to create on each poll.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// default: queue length minus running Jobs; custom: minus a deduction and a share of running
    /// Jobs; accurate: counts pending Jobs; eager: fills every free slot up to maxReplicaCount.
    #[serde(default)]
    pub strategy: JobScalingStrategy,
    /// custom only: subtracted from the queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// custom only: the share of running Jobs subtracted from the queue length, a number between 0
    /// and 1 written as a string (for example "0.5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod conditions that must all be True for a Job's pod to count as running, not pending (for
    /// example Ready or PodScheduled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_pod_conditions: Vec<String>,
    /// How the triggers' queue lengths combine.
    #[serde(default)]
    pub multiple_scalers_calculation: MultipleScalersCalculation,
}

/// Scaling strategy of a ScaledJob.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum JobScalingStrategy {
    /// Jobs to create = queue length - running Jobs.
    #[default]
    Default,
    /// Jobs to create = queue length - deduction - running Jobs × percentage.
    Custom,
    /// Counts pending Jobs, so queued work that already has a Job gets no second one.
    Accurate,
    /// Fills every free slot up to maxReplicaCount while work is queued.
    Eager,
}

/// How several triggers' queue lengths combine.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum MultipleScalersCalculation {
    /// The largest.
    #[default]
    Max,
    /// The smallest.
    Min,
    /// The mean.
    Avg,
    /// The sum.
    Sum,
}

/// Observed state of a ScaledJob.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    /// Ready, Active and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last time a trigger was active (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<String>,
    /// The trigger types, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// The authentications the triggers use, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// Generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// KEDA's ScaledJob defaults.
pub mod defaults {
    /// Default `pollingInterval` in seconds.
    pub const POLLING_INTERVAL: i32 = 30;
    /// Default `successfulJobsHistoryLimit` and `failedJobsHistoryLimit`.
    pub const HISTORY_LIMIT: i32 = 100;
    /// Default `maxReplicaCount`.
    pub const MAX_REPLICA_COUNT: i32 = 100;

    pub(crate) fn polling_interval() -> i32 {
        POLLING_INTERVAL
    }
    pub(crate) fn history_limit() -> i32 {
        HISTORY_LIMIT
    }
    pub(crate) fn max_replica_count() -> i32 {
        MAX_REPLICA_COUNT
    }
}

impl ScaledJobSpec {
    /// The rollout strategy in force: the deprecated `rolloutStrategy` when set (as KEDA does),
    /// else `rollout.strategy`, else default. `immediate` reads as default.
    pub fn effective_rollout_strategy(&self) -> RolloutStrategy {
        let written = self
            .rollout_strategy
            .or_else(|| self.rollout.as_ref().map(|r| r.strategy))
            .unwrap_or_default();
        match written {
            RolloutStrategy::Immediate => RolloutStrategy::Default,
            other => other,
        }
    }

    /// The deletion propagation for Jobs deleted on rollout or deletion.
    pub fn propagation_policy(&self) -> PropagationPolicy {
        self.rollout
            .as_ref()
            .map(|r| r.propagation_policy)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> ScaledJobSpec {
        let mut v = json!({
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}],
                "restartPolicy": "Never"}}},
            "triggers": [{"type": "rabbitmq", "metadata": {}}]
        });
        for (k, x) in extra.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_are_kedas() {
        let s = spec(json!({}));
        assert_eq!(s.polling_interval, 30);
        assert_eq!(
            (s.successful_jobs_history_limit, s.failed_jobs_history_limit),
            (100, 100)
        );
        assert_eq!((s.min_replica_count, s.max_replica_count), (0, 100));
        assert_eq!(s.scaling_strategy.strategy, JobScalingStrategy::Default);
        assert_eq!(
            s.scaling_strategy.multiple_scalers_calculation,
            MultipleScalersCalculation::Max
        );
        assert_eq!(s.effective_rollout_strategy(), RolloutStrategy::Default);
        assert_eq!(s.propagation_policy(), PropagationPolicy::Background);
    }

    #[test]
    fn the_deprecated_rollout_strategy_wins_as_in_keda() {
        let s = spec(json!({"rolloutStrategy": "gradual", "rollout": {"strategy": "default"}}));
        assert_eq!(s.effective_rollout_strategy(), RolloutStrategy::Gradual);
        let s = spec(json!({"rolloutStrategy": "immediate", "rollout": {"strategy": "gradual"}}));
        assert_eq!(s.effective_rollout_strategy(), RolloutStrategy::Default);
        let s = spec(json!({"rollout": {"strategy": "gradual", "propagationPolicy": "foreground"}}));
        assert_eq!(s.effective_rollout_strategy(), RolloutStrategy::Gradual);
        assert_eq!(s.propagation_policy(), PropagationPolicy::Foreground);
    }

    #[test]
    fn strategies_and_calculations_read_keda_spelling() {
        for (text, want) in [
            ("default", JobScalingStrategy::Default),
            ("custom", JobScalingStrategy::Custom),
            ("accurate", JobScalingStrategy::Accurate),
            ("eager", JobScalingStrategy::Eager),
        ] {
            let s = spec(json!({"scalingStrategy": {"strategy": text}}));
            assert_eq!(s.scaling_strategy.strategy, want);
        }
        let s = spec(json!({"scalingStrategy": {"multipleScalersCalculation": "sum"}}));
        assert_eq!(
            s.scaling_strategy.multiple_scalers_calculation,
            MultipleScalersCalculation::Sum
        );
        let bad: Result<ScaledJobSpec, _> = serde_json::from_value(json!({
            "jobTargetRef": {"template": {}}, "triggers": [],
            "scalingStrategy": {"strategy": "greedy"}}));
        assert!(bad.is_err());
    }
}
