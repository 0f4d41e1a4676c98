//! The Jobs ScaledJobs created, and their pods, kept by watches of objects labelled
//! `scaledjob.ebb.dev/name` only (ebb's own Jobs, never every Job or Pod in the cluster), so a
//! ScaledJob's tick counts its running and pending Jobs without a list call.
//!
//! [`JobIndex`] files each Job under `(namespace, ScaledJob name)` as a [`JobEntry`] (finished or
//! not, and when), and each pod under `(namespace, Job name)` as a [`PodEntry`] (running or done,
//! and which of its conditions are true). [`JobIndex::counts`] applies KEDA's rule for pending
//! Jobs: no pod running or succeeded, or, with `pendingPodConditions`, no pod with all of them.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;

use crate::cache::index::{Projection, WatchIndex};
use crate::scale::jobs::JobCounts;
use ebb_crds::annotations::SCALED_JOB_NAME_LABEL;

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Its `Complete` condition is true.
    Complete,
    /// Its `Failed` condition is true.
    Failed,
}

/// What the index keeps of a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    /// The Job's name.
    pub name: Arc<str>,
    /// How it ended, if it did.
    pub finished: Option<Finished>,
    /// When it ended (RFC 3339, `status.completionTime` or the condition's transition time).
    pub finished_at: Option<String>,
    /// The ScaledJob generation it was created from (`scaledjob.ebb.dev/generation`).
    pub generation: Option<i64>,
}

/// Keeps a Job's state; files it under `(namespace, its ScaledJob)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobView;

impl Projection<Job> for JobView {
    type Value = JobEntry;
    type Lookup = (String, String);

    fn value(&self, job: &Job) -> JobEntry {
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        let ended = conditions
            .into_iter()
            .flatten()
            .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"));
        let finished = ended.map(|c| match c.type_.as_str() {
            "Complete" => Finished::Complete,
            _ => Finished::Failed,
        });
        let finished_at = ended.and_then(|c| {
            job.status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .or(c.last_transition_time.as_ref())
                .map(|t| t.0.to_string())
        });
        JobEntry {
            name: job.meta().name.as_deref().unwrap_or_default().into(),
            finished,
            finished_at,
            generation: job
                .meta()
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::scale::job_template::GENERATION_ANNOTATION))
                .and_then(|g| g.trim().parse().ok()),
        }
    }

    fn lookup(&self, job: &Job) -> Option<(String, String)> {
        let meta = job.meta();
        let owner = meta.labels.as_ref()?.get(SCALED_JOB_NAME_LABEL)?;
        Some((meta.namespace.clone()?, owner.clone()))
    }
}

/// What the index keeps of a pod of a ScaledJob's Job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodEntry {
    /// Its phase is Running or Succeeded.
    pub running_or_done: bool,
    /// Its conditions whose status is True.
    pub true_conditions: Vec<String>,
}

/// Keeps a pod's phase and true conditions; files it under `(namespace, its Job)` (the
/// `job-name` label the Job controller sets).
#[derive(Debug, Default, Clone, Copy)]
pub struct PodView;

impl Projection<Pod> for PodView {
    type Value = PodEntry;
    type Lookup = (String, String);

    fn value(&self, pod: &Pod) -> PodEntry {
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or_default();
        PodEntry {
            running_or_done: phase == "Running" || phase == "Succeeded",
            true_conditions: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.status == "True")
                .map(|c| c.type_.clone())
                .collect(),
        }
    }

    fn lookup(&self, pod: &Pod) -> Option<(String, String)> {
        let meta = pod.meta();
        let job = meta.labels.as_ref()?.get("job-name")?;
        Some((meta.namespace.clone()?, job.clone()))
    }
}

/// ScaledJobs' Jobs and their pods. Share it as `Arc`.
#[derive(Debug, Default)]
pub struct JobIndex {
    jobs: WatchIndex<Job, JobView>,
    pods: WatchIndex<Pod, PodView>,
}

impl JobIndex {
    /// The Job index, to feed it.
    pub fn jobs(&self) -> &WatchIndex<Job, JobView> {
        &self.jobs
    }

    /// The pod index, to feed it.
    pub fn pods(&self) -> &WatchIndex<Pod, PodView> {
        &self.pods
    }

    /// Whether both watches have listed once.
    pub fn is_synced(&self) -> bool {
        self.jobs.is_synced() && self.pods.is_synced()
    }

    /// The Jobs of ScaledJob `namespace/name`.
    pub fn jobs_of(&self, namespace: &str, name: &str) -> Vec<JobEntry> {
        self.jobs.values_under(&(namespace.to_string(), name.to_string()))
    }

    /// Running (not finished) and pending Jobs of ScaledJob `namespace/name`. A running Job is
    /// pending while none of its pods runs or has succeeded, or, when `pending_conditions` is not
    /// empty, while none of its pods has all those conditions true.
    pub fn counts(&self, namespace: &str, name: &str, pending_conditions: &[String]) -> JobCounts {
        let mut counts = JobCounts::default();
        for job in self
            .jobs_of(namespace, name)
            .iter()
            .filter(|j| j.finished.is_none())
        {
            counts.running += 1;
            let pods = self
                .pods
                .values_under(&(namespace.to_string(), job.name.to_string()));
            let started = pods.iter().any(|p| {
                if pending_conditions.is_empty() {
                    p.running_or_done
                } else {
                    pending_conditions.iter().all(|c| p.true_conditions.contains(c))
                }
            });
            if !started {
                counts.pending += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, owner: &str, ended: Option<(&str, &str)>) -> Job {
        let conditions = ended
            .map(|(type_, at)| serde_json::json!([{"type": type_, "status": "True", "lastTransitionTime": at}]))
            .unwrap_or(serde_json::json!([]));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {SCALED_JOB_NAME_LABEL: owner}},
            "spec": {"template": {}},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn pod(name: &str, job: &str, phase: &str, conditions: &[&str]) -> Pod {
        let conditions: Vec<_> = conditions
            .iter()
            .map(|c| serde_json::json!({"type": c, "status": "True"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"job-name": job, SCALED_JOB_NAME_LABEL: "sj"}},
            "status": {"phase": phase, "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn running_and_pending_jobs_are_counted_per_scaled_job() {
        let index = JobIndex::default();
        index.jobs().reset(&[
            job("sj-a", "sj", None),
            job("sj-b", "sj", None),
            job("sj-c", "sj", None),
            job("sj-done", "sj", Some(("Complete", "2026-01-01T00:00:00Z"))),
            job("sj-failed", "sj", Some(("Failed", "2026-01-01T00:00:00Z"))),
            job("other-a", "other", None),
        ]);
        index.pods().reset(&[
            pod("sj-a-1", "sj-a", "Running", &["PodScheduled", "Ready"]),
            pod("sj-b-1", "sj-b", "Pending", &["PodScheduled"]),
        ]);
        // a runs; b's pod is pending; c has no pod yet. Finished Jobs are not running (KEDA
        // #5264: failed Jobs are not pending either).
        assert_eq!(
            index.counts("ns", "sj", &[]),
            JobCounts {
                running: 3,
                pending: 2
            }
        );
        assert_eq!(
            index.counts("ns", "other", &[]),
            JobCounts {
                running: 1,
                pending: 1
            }
        );
        // With pendingPodConditions, a Job is pending until a pod has all of them.
        let ready = ["Ready".to_string()];
        assert_eq!(
            index.counts("ns", "sj", &ready),
            JobCounts {
                running: 3,
                pending: 2
            }
        );
        let scheduled = ["PodScheduled".to_string()];
        assert_eq!(
            index.counts("ns", "sj", &scheduled),
            JobCounts {
                running: 3,
                pending: 1
            }
        );
        let both = ["PodScheduled".to_string(), "Custom".to_string()];
        assert_eq!(
            index.counts("ns", "sj", &both),
            JobCounts {
                running: 3,
                pending: 3
            }
        );
    }

    #[test]
    fn a_finished_job_keeps_how_and_when_it_ended() {
        let index = JobIndex::default();
        index
            .jobs()
            .apply(&job("sj-x", "sj", Some(("Failed", "2026-02-03T04:05:06Z"))));
        let entries = index.jobs_of("ns", "sj");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].finished, Some(Finished::Failed));
        assert!(
            entries[0]
                .finished_at
                .as_deref()
                .unwrap_or_default()
                .starts_with("2026-02-03T04:05:06")
        );
        // Jobs without ebb's label are never filed under a ScaledJob.
        let mut foreign = job("plain", "sj", None);
        foreign.metadata.labels = None;
        index.jobs().apply(&foreign);
        assert_eq!(index.jobs_of("ns", "sj").len(), 1);
    }
}
