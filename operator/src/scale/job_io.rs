//! The ScaledJob loops' I/O against the cluster ([`ClusterJobs`], a [`JobHost`]): Job counts from
//! the watch-fed [`JobIndex`], Job creates and deletes (each after the leader guard), and each
//! tick's report: the status (server-side apply, only when it changed) and Events (Jobs created,
//! creates refused, a trigger that starts failing, activity transitions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ebb_crds::ScaledJob;
use ebb_crds::conditions::{ACTIVE, Condition, PAUSED, READY, reason};

use crate::reasons;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::cache::jobs::{JobEntry, JobIndex};
use crate::context::Shared;
use crate::infra::client_limits::TokenBucket;
use crate::scale::job_loop::{JobHost, JobKey, JobTick};
use crate::scale::jobs::JobCounts;

/// Field manager of ScaledJob status writes.
const FIELD_MANAGER: &str = "ebb-operator";
/// Job creates per second across every ScaledJob, and their burst: a ScaledJob asking for 100
/// Jobs takes about 9 s instead of emptying the client's budget (50/s, burst 100 by default),
/// which ScaledObjects' `/scale`, HPA and status writes share; they keep at least 40/s.
pub const JOB_CREATES_PER_SECOND: f32 = 10.0;
/// See [`JOB_CREATES_PER_SECOND`].
pub const JOB_CREATE_BURST: u32 = 10;

/// The process-wide budget of Job creates.
pub fn job_create_budget() -> TokenBucket {
    TokenBucket::new(JOB_CREATES_PER_SECOND, JOB_CREATE_BURST).expect("positive constants")
}

/// What was last written or said per ScaledJob, so steady state writes nothing.
#[derive(Debug, Default, Clone, PartialEq)]
struct Reported {
    active: Option<bool>,
    failing: bool,
    status: Option<serde_json::Value>,
}

/// The cluster behind the ScaledJob loops.
pub struct ClusterJobs {
    /// Client, leader guard, Events.
    pub shared: Arc<Shared>,
    /// ebb's Jobs and their pods.
    pub index: Arc<JobIndex>,
    /// The ScaledJob controller's cache.
    scaled_jobs: Store<ScaledJob>,
    /// Trigger and authentication names per ScaledJob (for `status.triggersTypes` and
    /// `status.authenticationsTypes`), set by the reconcile.
    pub trigger_types: Mutex<HashMap<JobKey, StatusTypes>>,
    reported: Mutex<HashMap<JobKey, Reported>>,
    creates: Mutex<TokenBucket>,
}

impl ClusterJobs {
    /// A host over `shared`, `index` and the ScaledJob controller's cache.
    pub fn new(shared: Arc<Shared>, index: Arc<JobIndex>, scaled_jobs: Store<ScaledJob>) -> ClusterJobs {
        ClusterJobs {
            shared,
            index,
            scaled_jobs,
            trigger_types: Mutex::default(),
            reported: Mutex::default(),
            creates: Mutex::new(job_create_budget()),
        }
    }

    /// Forgets what was reported of a ScaledJob (it went away, or its loop restarts).
    pub fn forget(&self, key: &JobKey) {
        self.reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    async fn event(&self, key: &JobKey, warning: bool, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some(ebb_crds::API_VERSION.into()),
            kind: Some("ScaledJob".into()),
            namespace: Some(key.0.clone()),
            name: Some(key.1.clone()),
            ..ObjectReference::default()
        };
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.shared.event_for(&reference, type_, reason, note).await;
    }

    /// Writes `status` (server-side apply) unless it is what was last written.
    pub async fn write_status(&self, key: &JobKey, status: serde_json::Value) {
        let unchanged = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .and_then(|r| r.status.as_ref())
            == Some(&status);
        if unchanged || self.shared.leader.check().is_err() {
            return;
        }
        let api: Api<ScaledJob> = Api::namespaced(self.shared.client.clone(), &key.0);
        let patch = json!({"apiVersion": ebb_crds::API_VERSION, "kind": "ScaledJob", "status": status});
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(&key.1, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                self.reported
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(key.clone())
                    .or_default()
                    .status = Some(status);
            }
            Err(e) => {
                tracing::debug!(namespace = %key.0, scaled_job = %key.1, error = %e, "ScaledJob status not written")
            }
        }
    }
}

/// A condition with the current time as its transition time.
pub fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_transition_time: None,
    }
}

/// What a ScaledJob's status lists of its triggers, as KEDA writes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusTypes {
    /// `triggersTypes`: each trigger type once, comma-separated.
    pub triggers: Option<String>,
    /// `authenticationsTypes`: each authenticationRef name once, comma-separated.
    pub authentications: Option<String>,
}

/// The status a tick reports: Ready, Active and Paused, `lastActiveTime`, the trigger and
/// authentication types.
pub fn tick_status(
    tick: &JobTick,
    paused: bool,
    types: &StatusTypes,
    last_active: Option<String>,
) -> serde_json::Value {
    let ready = if tick.trigger_errors.is_empty() {
        condition(
            READY,
            true,
            reasons::SCALED_JOB_READY,
            "ScaledJob is defined correctly and is ready for scaling",
        )
    } else {
        condition(
            READY,
            false,
            reason::TRIGGER_ERROR,
            &tick.trigger_errors.join("; "),
        )
    };
    let active = match tick.decision.active {
        Some(true) => condition(
            ACTIVE,
            true,
            reason::SCALER_ACTIVE,
            "Jobs are created because triggers are active",
        ),
        Some(false) => condition(ACTIVE, false, reason::SCALER_NOT_ACTIVE, "No trigger is active"),
        None => Condition {
            status: "Unknown".into(),
            ..condition(
                ACTIVE,
                false,
                reason::TRIGGER_ERROR,
                "A trigger failed; its activity is unknown",
            )
        },
    };
    let paused = if paused {
        condition(
            PAUSED,
            true,
            reasons::SCALED_JOB_PAUSED,
            "autoscaling.ebb.dev/paused: no Jobs are created",
        )
    } else {
        condition(
            PAUSED,
            false,
            reasons::SCALED_JOB_UNPAUSED,
            "Jobs are created as the triggers ask",
        )
    };
    let mut status = json!({"conditions": [ready, active, paused], "triggersTypes": types.triggers});
    if let Some(a) = &types.authentications {
        status["authenticationsTypes"] = json!(a);
    }
    if let Some(t) = last_active {
        status["lastActiveTime"] = json!(t);
    }
    status
}

#[async_trait]
impl JobHost for ClusterJobs {
    fn counts(&self, key: &JobKey, pending_conditions: &[String]) -> Option<JobCounts> {
        self.index
            .is_synced()
            .then(|| self.index.counts(&key.0, &key.1, pending_conditions))
    }

    fn jobs(&self, key: &JobKey) -> Vec<JobEntry> {
        self.index.jobs_of(&key.0, &key.1)
    }

    fn exists(&self, key: &JobKey) -> bool {
        self.scaled_jobs
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .is_some()
    }

    async fn create(&self, job: &Job) -> Result<(), String> {
        let wait = self
            .creates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reserve(tokio::time::Instant::now());
        tokio::time::sleep(wait).await;
        self.shared.leader.check().map_err(|e| e.to_string())?;
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.shared.client.clone(), &ns);
        api.create(&PostParams::default(), job)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), String> {
        self.shared.leader.check().map_err(|e| e.to_string())?;
        let api: Api<Job> = Api::namespaced(self.shared.client.clone(), namespace);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn report(&self, key: &JobKey, tick: &JobTick) {
        let metrics = &self.shared.metrics;
        if tick.created > 0 {
            metrics.scale_action("job_created");
            self.event(
                key,
                false,
                reasons::JOBS_CREATED,
                format!("created {} Jobs", tick.created),
            )
            .await;
        }
        if let (n, Some(error)) = &tick.create_failures {
            self.event(
                key,
                true,
                reasons::JOB_CREATE_FAILED,
                format!("{n} Job creates refused: {error}"),
            )
            .await;
        }
        let (was_active, was_failing) = {
            let r = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            r.get(key).map(|r| (r.active, r.failing)).unwrap_or((None, false))
        };
        let failing = !tick.trigger_errors.is_empty();
        if failing && !was_failing {
            self.event(
                key,
                true,
                reasons::TRIGGER_FAILING,
                tick.trigger_errors.join("; "),
            )
            .await;
        }
        let active = tick.decision.active;
        if active == Some(true) && was_active != Some(true) {
            self.event(
                key,
                false,
                reasons::SCALED_JOB_ACTIVE,
                "Jobs are created because triggers are active".into(),
            )
            .await;
        } else if active == Some(false) && was_active == Some(true) {
            self.event(
                key,
                false,
                reasons::SCALED_JOB_INACTIVE,
                "No trigger is active".into(),
            )
            .await;
        }
        {
            let mut r = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = r.entry(key.clone()).or_default();
            entry.failing = failing;
            if active.is_some() {
                entry.active = active;
            }
        }
        let types = self
            .trigger_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
            .unwrap_or_default();
        // lastActiveTime moves on activity transitions only, so steady state writes nothing.
        let last_active =
            (active == Some(true) && was_active != Some(true)).then(|| jiff::Timestamp::now().to_string());
        let previous_last_active = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .and_then(|r| r.status.as_ref())
            .and_then(|s| s.get("lastActiveTime"))
            .and_then(|t| t.as_str().map(str::to_string));
        let status = tick_status(
            tick,
            tick.decision.reason == crate::scale::jobs::JobReason::Paused,
            &types,
            last_active.or(previous_last_active),
        );
        self.write_status(key, status).await;
    }
    fn credentials_refused(&self, key: &JobKey) {
        self.shared.reresolve.scaled_jobs.refused(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(triggers: &str) -> StatusTypes {
        StatusTypes {
            triggers: Some(triggers.into()),
            authentications: Some("rabbit-auth".into()),
        }
    }
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn a_hundred_job_creates_are_spread_and_leave_the_client_budget_to_scaled_objects() {
        let mut budget = job_create_budget();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..100).map(|_| budget.reserve(now)).collect();
        assert_eq!(
            waits.iter().filter(|w| w.is_zero()).count(),
            JOB_CREATE_BURST as usize
        );
        let last = *waits.last().unwrap();
        assert!(last >= Duration::from_secs(8), "100 creates span {last:?}");
    }

    fn tick(active: Option<bool>, errors: Vec<String>) -> JobTick {
        use crate::scale::jobs::{JobDecision, JobReason};
        JobTick {
            decision: JobDecision {
                create: 0,
                active,
                queue_length: 0,
                max_scale: 0,
                reason: JobReason::Strategy,
            },
            counts: JobCounts::default(),
            created: 0,
            create_failures: (0, None),
            trimmed: 0,
            trigger_errors: errors,
        }
    }

    #[test]
    fn the_status_says_ready_active_and_paused() {
        let s = tick_status(
            &tick(Some(true), vec![]),
            false,
            &types("rabbitmq,kafka"),
            Some("t".into()),
        );
        let c = s["conditions"].as_array().unwrap();
        assert_eq!(
            (c[0]["type"].as_str(), c[0]["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        assert_eq!(
            (c[1]["type"].as_str(), c[1]["status"].as_str()),
            (Some("Active"), Some("True"))
        );
        assert_eq!(
            (c[2]["type"].as_str(), c[2]["status"].as_str()),
            (Some("Paused"), Some("False"))
        );
        assert_eq!(s["triggersTypes"], "rabbitmq,kafka");
        assert_eq!(s["authenticationsTypes"], "rabbit-auth");
        assert_eq!(s["lastActiveTime"], "t");
        let failing = tick_status(
            &tick(None, vec!["metrics-api: down".into()]),
            false,
            &types("metrics-api"),
            None,
        );
        let c = failing["conditions"].as_array().unwrap();
        assert_eq!(c[0]["status"], "False");
        assert_eq!(c[0]["message"], "metrics-api: down");
        assert_eq!(
            c[1]["status"], "Unknown",
            "a failing trigger's activity is unknown, not inactive"
        );
        assert!(failing.get("lastActiveTime").is_none());
    }
}
