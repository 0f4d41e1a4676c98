//! What a ScaledJob creates, pure: the [`JobPolicy`] its spec gives the decision, and the Job
//! manifest ([`job_for`]) — KEDA's shape under ebb's names: `generateName: <ScaledJob>-`, the
//! `jobTargetRef` as the spec (`restartPolicy` OnFailure when unset, which a Job needs), the
//! label `scaledjob.ebb.dev/name` on the Job and its pod template (the Job and pod watches select
//! on it), the ScaledJob's labels minus those `scaledjob.ebb.dev/job-excluded-labels` lists, its
//! annotations and generation, and a controller reference to the ScaledJob.

use std::collections::BTreeMap;

use ebb_crds::annotations::{SCALED_JOB_EXCLUDED_LABELS, SCALED_JOB_NAME_LABEL};
use ebb_crds::{JobScalingStrategy, MultipleScalersCalculation, ScaledJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::scale::jobs::{Calculation, JobPolicy, Strategy};

/// Annotation on each Job: the ScaledJob generation it was created from.
pub const GENERATION_ANNOTATION: &str = "scaledjob.ebb.dev/generation";

/// Why a Job cannot be built from a ScaledJob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The ScaledJob has no name or UID (not read from the API server).
    #[error("the ScaledJob has no name or uid")]
    Unnamed,
    /// The name does not fit a label value (63 characters), which every Job carries.
    #[error("metadata.name: {0} characters; a ScaledJob's name must fit a label value (at most 63)")]
    NameTooLong(usize),
}

/// The decision's policy from a ScaledJob's spec. An unparsable custom percentage falls back to
/// the default strategy, as in KEDA (the schema rejects one anyway); a custom strategy without a
/// percentage keeps its deduction with a percentage of 0 (KEDA falls back to the default strategy
/// and drops the deduction).
pub fn policy_of(sj: &ScaledJob) -> JobPolicy {
    let s = &sj.spec.scaling_strategy;
    let strategy = match s.strategy {
        JobScalingStrategy::Default => Strategy::Default,
        JobScalingStrategy::Accurate => Strategy::Accurate,
        JobScalingStrategy::Eager => Strategy::Eager,
        JobScalingStrategy::Custom => {
            let percentage = s
                .custom_scaling_running_job_percentage
                .as_deref()
                .map(|p| p.trim().parse::<f64>());
            match percentage {
                Some(Err(_)) => Strategy::Default,
                other => Strategy::Custom {
                    deduction: i64::from(s.custom_scaling_queue_length_deduction.unwrap_or(0)),
                    running_percentage: other.and_then(Result::ok).unwrap_or(0.0),
                },
            }
        }
    };
    let calculation = match s.multiple_scalers_calculation {
        MultipleScalersCalculation::Max => Calculation::Max,
        MultipleScalersCalculation::Min => Calculation::Min,
        MultipleScalersCalculation::Avg => Calculation::Avg,
        MultipleScalersCalculation::Sum => Calculation::Sum,
    };
    JobPolicy {
        min: i64::from(sj.spec.min_replica_count),
        max: i64::from(sj.spec.max_replica_count),
        strategy,
        calculation,
    }
}

/// The Job a ScaledJob creates (one manifest; the API server names each from `generateName`).
pub fn job_for(sj: &ScaledJob) -> Result<Job, TemplateError> {
    let meta = sj.meta();
    let (Some(name), Some(uid)) = (meta.name.clone(), meta.uid.clone()) else {
        return Err(TemplateError::Unnamed);
    };
    if name.len() > 63 {
        return Err(TemplateError::NameTooLong(name.len()));
    }
    let excluded: Vec<&str> = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCALED_JOB_EXCLUDED_LABELS))
        .map(|list| list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !excluded.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("app.kubernetes.io/name", name.as_str()),
        ("app.kubernetes.io/part-of", name.as_str()),
        ("app.kubernetes.io/managed-by", "ebb"),
        (SCALED_JOB_NAME_LABEL, name.as_str()),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    let mut annotations: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(
        GENERATION_ANNOTATION.to_string(),
        meta.generation.unwrap_or_default().to_string(),
    );
    let mut spec = sj.spec.job_target_ref.clone();
    let template_meta = spec.template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(SCALED_JOB_NAME_LABEL.to_string(), name.clone());
    if let Some(pod) = spec.template.spec.as_mut()
        && pod.restart_policy.as_deref().is_none_or(str::is_empty)
    {
        pod.restart_policy = Some("OnFailure".to_string());
    }
    Ok(Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: meta.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: ebb_crds::API_VERSION.to_string(),
                kind: "ScaledJob".to_string(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scaled_job(extra: serde_json::Value) -> ScaledJob {
        let mut sj = json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "invoices", "namespace": "billing", "uid": "sj-uid", "generation": 3,
                "labels": {"team": "billing", "secret-sauce": "x"},
                "annotations": {
                    "scaledjob.ebb.dev/job-excluded-labels": "secret-sauce, other",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"
                }},
            "spec": {
                "jobTargetRef": {"template": {"spec": {"containers": [{"name": "w", "image": "w:1"}]}}},
                "triggers": [{"type": "rabbitmq", "metadata": {"queueName": "q"}}]
            }
        });
        if let (Some(spec), Some(extra)) = (sj["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(sj).expect("a ScaledJob")
    }

    #[test]
    fn a_job_carries_the_label_the_watches_select_and_a_controller_reference() {
        let job = job_for(&scaled_job(json!({}))).expect("job");
        let meta = &job.metadata;
        assert_eq!(meta.generate_name.as_deref(), Some("invoices-"));
        assert_eq!(meta.namespace.as_deref(), Some("billing"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[SCALED_JOB_NAME_LABEL], "invoices");
        assert_eq!(labels["team"], "billing");
        assert!(!labels.contains_key("secret-sauce"), "excluded by the annotation");
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[GENERATION_ANNOTATION], "3");
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("ScaledJob", "invoices", "sj-uid", Some(true))
        );
        let spec = job.spec.unwrap();
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            template_labels[SCALED_JOB_NAME_LABEL], "invoices",
            "pods are selected too"
        );
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("OnFailure"),
            "a Job refuses restartPolicy Always"
        );
    }

    #[test]
    fn a_name_that_does_not_fit_a_label_is_an_error_not_a_refused_create() {
        let mut sj = scaled_job(json!({}));
        sj.metadata.name = Some("x".repeat(64));
        assert_eq!(job_for(&sj).unwrap_err(), TemplateError::NameTooLong(64));
        sj.metadata.uid = None;
        assert_eq!(job_for(&sj).unwrap_err(), TemplateError::Unnamed);
    }

    #[test]
    fn the_policy_follows_the_spec() {
        let sj = scaled_job(
            json!({"minReplicaCount": 1, "maxReplicaCount": 7, "scalingStrategy": {
            "strategy": "custom", "customScalingQueueLengthDeduction": 2,
            "customScalingRunningJobPercentage": "0.25", "multipleScalersCalculation": "sum"}}),
        );
        let p = policy_of(&sj);
        assert_eq!((p.min, p.max, p.calculation), (1, 7, Calculation::Sum));
        assert_eq!(
            p.strategy,
            Strategy::Custom {
                deduction: 2,
                running_percentage: 0.25
            }
        );
        let defaults = policy_of(&scaled_job(json!({})));
        assert_eq!((defaults.min, defaults.max), (0, 100), "KEDA's defaults");
        assert_eq!(defaults.strategy, Strategy::Default);
    }
}
