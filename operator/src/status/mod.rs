//! The ScaledObject status, composed from what the reconciler and the scale loop know, so that it
//! is written only when something a user can see changed (steady state costs no API writes).
//!
//! - `lastActiveTime` is written when activity starts and when it stops (the last poll that saw it),
//!   not on every active poll; while `Active=True` the object is active now.
//! - `health[].numberOfFailures` counts up to the fallback threshold (or 1 without fallback) and then
//!   stays, so a long outage does not write on every poll; the live count is a Prometheus metric.

pub mod writer;

use std::collections::BTreeMap;

use ebb_crds::conditions::{self, Condition, reason};
use ebb_crds::{HealthStatus, MetricHealth, ScaledObjectStatus};
use jiff::Timestamp;

use crate::scale::outcome::Activity;

/// Whether the object can be acted on, as the reconciler found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Valid and not in conflict.
    Ok,
    /// The spec or a trigger is invalid; the message names the field.
    Invalid(String),
    /// Another ScaledObject or a foreign HPA already scales the target.
    Conflict(String),
}

/// The reconciler's part of the status.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileView {
    /// Valid / invalid / conflict.
    pub readiness: Readiness,
    /// `paused` or `paused-replicas` set.
    pub paused: bool,
    /// `paused-replicas` value.
    pub paused_replicas: Option<i32>,
    /// The HPA's name (none while paused or invalid).
    pub hpa_name: Option<String>,
    /// External metric names, one per trigger.
    pub metric_names: Vec<String>,
    /// The composite metric's name, with scalingModifiers.
    pub composite_metric: Option<String>,
    /// Replica count found when ebb first took the target over.
    pub original_replica_count: Option<i32>,
    /// `group/version.Kind` of the target.
    pub scale_target_kind: Option<String>,
    /// `metadata.generation` this view was built from.
    pub generation: Option<i64>,
    /// Fallback threshold, if a fallback is configured.
    pub fallback_threshold: Option<u32>,
    /// Warnings about the configuration that do not block scaling (shown in the Ready message).
    pub warnings: Vec<String>,
    /// `triggersTypes`: each trigger type once, comma-separated.
    pub triggers_types: Option<String>,
    /// `authenticationsTypes`: each authenticationRef name once, comma-separated.
    pub authentications_types: Option<String>,
}

/// One trigger's health, as the scale loop saw it in the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerHealth {
    /// Metric name.
    pub metric_name: String,
    /// Consecutive failed polls of this trigger.
    pub failures: u32,
    /// The last error, if the last poll failed (never contains secrets).
    pub error: Option<String>,
}

/// The scale loop's part of the status.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopView {
    /// Activity from the last decision.
    pub activity: Activity,
    /// Whether the fallback is engaged.
    pub fallback: bool,
    /// Last time a trigger was seen active.
    pub last_active: Option<Timestamp>,
    /// Per-trigger health.
    pub triggers: Vec<TriggerHealth>,
}

fn condition(type_: &str, status: &str, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.into()),
        last_transition_time: None,
    }
}

/// Composes the status. Transition times are kept from `previous` for conditions whose status did
/// not change, so composing twice from the same facts gives the same status.
pub fn compose(
    previous: Option<&ScaledObjectStatus>,
    r: &ReconcileView,
    l: Option<&LoopView>,
    now: Timestamp,
) -> ScaledObjectStatus {
    let failing: Vec<&TriggerHealth> = l
        .map(|l| l.triggers.iter().filter(|t| t.error.is_some()).collect())
        .unwrap_or_default();
    let total = l.map(|l| l.triggers.len()).unwrap_or(0);
    let ready = match &r.readiness {
        Readiness::Invalid(m) => condition(
            conditions::READY,
            "False",
            reason::SCALED_OBJECT_CHECK_FAILED,
            m.clone(),
        ),
        Readiness::Conflict(m) => condition(conditions::READY, "False", reason::TARGET_CONFLICT, m.clone()),
        Readiness::Ok if total > 0 && failing.len() == total && r.fallback_threshold.is_none() => condition(
            conditions::READY,
            "False",
            reason::TRIGGER_ERROR,
            format!("every trigger fails: {}", describe(&failing)),
        ),
        Readiness::Ok if !failing.is_empty() => condition(
            conditions::READY,
            "Unknown",
            reason::PARTIAL_TRIGGER_ERROR,
            format!("failing: {}", describe(&failing)),
        ),
        Readiness::Ok => {
            let mut message = "ScaledObject is defined correctly and is ready for scaling".to_string();
            for w in &r.warnings {
                message.push_str("; warning: ");
                message.push_str(w);
            }
            condition(conditions::READY, "True", reason::SCALED_OBJECT_READY, message)
        }
    };
    let active = match (r.paused, l.map(|l| l.activity)) {
        (true, _) | (_, Some(Activity::Paused)) => condition(
            conditions::ACTIVE,
            "False",
            reason::SCALED_OBJECT_PAUSED,
            "scaling is paused",
        ),
        (_, Some(Activity::Active)) => condition(
            conditions::ACTIVE,
            "True",
            reason::SCALER_ACTIVE,
            "a trigger is active",
        ),
        (_, Some(Activity::Inactive { in_cooldown: true })) => condition(
            conditions::ACTIVE,
            "False",
            reason::SCALER_COOLDOWN,
            "no trigger is active; waiting out the cooldown",
        ),
        (_, Some(Activity::Inactive { in_cooldown: false })) => condition(
            conditions::ACTIVE,
            "False",
            reason::SCALER_NOT_ACTIVE,
            "no trigger is active",
        ),
        (_, Some(Activity::Unknown)) | (_, None) => condition(
            conditions::ACTIVE,
            "Unknown",
            reason::UNKNOWN_STATE,
            "activity unknown",
        ),
    };
    let fallback = match (r.fallback_threshold, l.is_some_and(|l| l.fallback)) {
        (Some(_), true) => condition(
            conditions::FALLBACK,
            "True",
            reason::FALLBACK_EXISTS,
            "triggers keep failing: fallback replicas apply",
        ),
        _ => condition(
            conditions::FALLBACK,
            "False",
            reason::NO_FALLBACK_FOUND,
            "no fallback in effect",
        ),
    };
    let paused = if r.paused {
        let message = match r.paused_replicas {
            Some(n) => format!("paused at {n} replicas"),
            None => "paused".to_string(),
        };
        condition(conditions::PAUSED, "True", reason::SCALED_OBJECT_PAUSED, message)
    } else {
        condition(
            conditions::PAUSED,
            "False",
            reason::SCALED_OBJECT_UNPAUSED,
            "not paused",
        )
    };
    // Before the loop's first poll after a (re)start, the written loop-derived conditions still
    // stand: recomputing them from nothing would write "Unknown" and then the same value back.
    let written = |type_: &str| {
        previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .cloned()
    };
    let (ready, active, fallback) = if l.is_none() && r.readiness == Readiness::Ok && !r.paused {
        let ready = written(conditions::READY)
            .filter(|c| {
                matches!(
                    c.reason.as_deref(),
                    Some(reason::TRIGGER_ERROR | reason::PARTIAL_TRIGGER_ERROR)
                )
            })
            .unwrap_or(ready);
        let active = written(conditions::ACTIVE).unwrap_or(active);
        let fallback = match r.fallback_threshold {
            Some(_) => written(conditions::FALLBACK).unwrap_or(fallback),
            None => fallback,
        };
        (ready, active, fallback)
    } else {
        (ready, active, fallback)
    };
    let mut conditions = vec![ready, active, fallback, paused];
    for c in &mut conditions {
        let prev = previous.and_then(|p| p.conditions.iter().find(|pc| pc.type_ == c.type_));
        c.last_transition_time = match prev {
            Some(pc) if pc.status == c.status => pc.last_transition_time.clone(),
            _ => Some(now.to_string()),
        };
    }
    let cap = r.fallback_threshold.unwrap_or(1).max(1);
    let health: BTreeMap<String, MetricHealth> = l
        .map(|l| {
            l.triggers
                .iter()
                .map(|t| {
                    let failing = t.error.is_some();
                    let health = MetricHealth {
                        number_of_failures: if failing { t.failures.min(cap) as i32 } else { 0 },
                        status: if failing {
                            HealthStatus::Failing
                        } else {
                            HealthStatus::Happy
                        },
                    };
                    (t.metric_name.clone(), health)
                })
                .collect()
        })
        .or_else(|| previous.map(|p| p.health.clone()))
        .unwrap_or_default();
    // lastActiveTime: keep the written value while the activity did not change; write the loop's
    // value when it did.
    let was_active = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == conditions::ACTIVE))
        .map(|c| c.status == "True");
    let is_active = l.map(|l| l.activity == Activity::Active);
    let last_active_time = match (was_active, is_active, l.and_then(|l| l.last_active)) {
        (Some(was), Some(is), Some(t)) if was != is => Some(t.to_string()),
        (None, Some(_), Some(t)) => Some(t.to_string()),
        _ => previous
            .and_then(|p| p.last_active_time.clone())
            .or_else(|| l.and_then(|l| l.last_active).map(|t| t.to_string())),
    };
    ScaledObjectStatus {
        conditions,
        scale_target_kind: r.scale_target_kind.clone(),
        last_active_time,
        original_replica_count: r
            .original_replica_count
            .or_else(|| previous.and_then(|p| p.original_replica_count)),
        external_metric_names: r.metric_names.clone(),
        health,
        paused_replica_count: r.paused_replicas,
        hpa_name: r.hpa_name.clone(),
        composite_scaler_name: r.composite_metric.clone(),
        observed_generation: r.generation,
        triggers_types: r.triggers_types.clone(),
        authentications_types: r.authentications_types.clone(),
    }
}

fn describe(failing: &[&TriggerHealth]) -> String {
    failing
        .iter()
        .map(|t| format!("{}: {}", t.metric_name, t.error.as_deref().unwrap_or("error")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status of a condition type, if present.
pub fn condition_status<'a>(status: Option<&'a ScaledObjectStatus>, type_: &str) -> Option<&'a str> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ReconcileView {
        ReconcileView {
            readiness: Readiness::Ok,
            paused: false,
            paused_replicas: None,
            hpa_name: Some("ebb-hpa-x".into()),
            metric_names: vec!["s0-metrics-api-v".into()],
            composite_metric: None,
            original_replica_count: Some(0),
            scale_target_kind: Some("apps/v1.Deployment".into()),
            generation: Some(1),
            fallback_threshold: None,
            warnings: Vec::new(),
            triggers_types: None,
            authentications_types: None,
        }
    }

    fn loop_view(activity: Activity, error: Option<&str>, failures: u32) -> LoopView {
        LoopView {
            activity,
            fallback: false,
            last_active: Some(Timestamp::from_second(1_700_000_000).unwrap()),
            triggers: vec![TriggerHealth {
                metric_name: "s0-metrics-api-v".into(),
                failures,
                error: error.map(String::from),
            }],
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn same_facts_give_the_same_status() {
        let first = compose(None, &view(), Some(&loop_view(Activity::Active, None, 0)), t(1));
        let second = compose(
            Some(&first),
            &view(),
            Some(&loop_view(Activity::Active, None, 0)),
            t(99),
        );
        assert_eq!(first, second, "no write is needed when nothing changed");
        assert_eq!(condition_status(Some(&first), "Ready"), Some("True"));
        assert_eq!(condition_status(Some(&first), "Active"), Some("True"));
        assert_eq!(condition_status(Some(&first), "Paused"), Some("False"));
    }

    #[test]
    fn a_restart_before_the_first_poll_keeps_the_written_status() {
        for activity in [Activity::Active, Activity::Inactive { in_cooldown: false }] {
            let written = compose(None, &view(), Some(&loop_view(activity, None, 0)), t(1));
            let restarted = compose(Some(&written), &view(), None, t(50));
            assert_eq!(written, restarted, "{activity:?}: no write after a restart");
        }
        let failing = compose(
            None,
            &view(),
            Some(&loop_view(Activity::Unknown, Some("boom"), 1)),
            t(1),
        );
        assert_eq!(compose(Some(&failing), &view(), None, t(50)), failing);
        // Without a written status there is nothing to keep.
        let fresh = compose(None, &view(), None, t(1));
        assert_eq!(condition_status(Some(&fresh), "Active"), Some("Unknown"));
        // A fixed spec is not held back by the old Ready=False.
        let mut invalid = view();
        invalid.readiness = Readiness::Invalid("bad".into());
        let was_invalid = compose(None, &invalid, None, t(1));
        assert_eq!(
            condition_status(Some(&compose(Some(&was_invalid), &view(), None, t(2))), "Ready"),
            Some("True")
        );
    }

    #[test]
    fn failure_counts_stop_changing_at_the_cap() {
        let mut r = view();
        r.fallback_threshold = Some(3);
        let s5 = compose(
            None,
            &r,
            Some(&loop_view(Activity::Unknown, Some("boom"), 5)),
            t(1),
        );
        let s9 = compose(
            Some(&s5),
            &r,
            Some(&loop_view(Activity::Unknown, Some("boom"), 9)),
            t(2),
        );
        assert_eq!(s5, s9);
        assert_eq!(s5.health["s0-metrics-api-v"].number_of_failures, 3);
        assert_eq!(condition_status(Some(&s5), "Ready"), Some("Unknown"));
    }

    #[test]
    fn all_failing_without_fallback_is_not_ready() {
        let s = compose(
            None,
            &view(),
            Some(&loop_view(Activity::Unknown, Some("connection refused"), 1)),
            t(1),
        );
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("TriggerError"))
        );
        assert!(ready.message.as_deref().unwrap().contains("connection refused"));
    }

    #[test]
    fn invalid_and_paused() {
        let mut r = view();
        r.readiness = Readiness::Invalid("spec.minReplicaCount: too big".into());
        r.paused = true;
        r.paused_replicas = Some(2);
        let s = compose(None, &r, None, t(1));
        assert_eq!(s.conditions[0].reason.as_deref(), Some("ScaledObjectCheckFailed"));
        assert_eq!(condition_status(Some(&s), "Paused"), Some("True"));
        assert_eq!(s.paused_replica_count, Some(2));
    }

    #[test]
    fn last_active_time_is_written_on_transitions_only() {
        let a = compose(
            None,
            &view(),
            Some(&LoopView {
                last_active: Some(t(10)),
                ..loop_view(Activity::Active, None, 0)
            }),
            t(10),
        );
        assert_eq!(a.last_active_time, Some(t(10).to_string()));
        let b = compose(
            Some(&a),
            &view(),
            Some(&LoopView {
                last_active: Some(t(20)),
                ..loop_view(Activity::Active, None, 0)
            }),
            t(20),
        );
        assert_eq!(
            b.last_active_time,
            Some(t(10).to_string()),
            "still active: no rewrite"
        );
        let c = compose(
            Some(&b),
            &view(),
            Some(&LoopView {
                last_active: Some(t(25)),
                ..loop_view(Activity::Inactive { in_cooldown: true }, None, 0)
            }),
            t(30),
        );
        assert_eq!(
            c.last_active_time,
            Some(t(25).to_string()),
            "activity stopped: last seen active"
        );
    }
}
