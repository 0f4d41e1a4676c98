//! The reconciler's decisions, pure: from a ScaledObject and what the lookups found ([`Facts`]:
//! the compiled triggers, the resolved target, conflicts, the target's replica count, the live
//! HPA) to a [`Plan`]: whether the object is ready and why not, what to do with the HPA (apply,
//! delete, leave), whether the scale loop runs, the original replica count to remember, the
//! Events to record and when to look again.
//!
//! The lookups are made in order by [`crate::reconcile::apply`], each only while
//! [`Facts::proceed`] says so: nothing blocks the object yet, and no lookup failed for a reason
//! that may pass. Such a failure (a 429, a 5xx, a timeout: anything but a 404 or a 403) says
//! nothing about the object, so [`plan`] then plans nothing ([`Unsettled`]): the running loop, the
//! HPA (with its stabilisation state) and the status stay as they are, and the pass is retried.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_crds::annotations::{self, flag};
use ebb_crds::conditions;
use ebb_crds::validation::validate_spec;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use serde_json::Value as Json;

use crate::cache::hpas::CachedHpa;
use crate::compile::inputs::TransientLookup;
use crate::reasons;
use crate::reconcile::conflicts::{Conflict, owned_by};
use crate::reconcile::hpa::{HpaMetric, HpaVersion, desired_hpa, needs_apply};
use crate::scale::decision::PauseState;
use crate::scale::targets::{TargetError, TargetRef};
use crate::status::{Readiness, ReconcileView, condition_status};
use ebb_scalers::resource_metric::ResourceMetric;

/// Why an object cannot be scaled: the message of `Ready=False`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The spec, a trigger, an annotation or the target is not usable.
    Invalid(String),
    /// Someone else scales the target.
    Conflict(String),
}

/// Some triggers cannot be used; one line per trigger, naming it (secret values hidden).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidTriggers(pub Vec<String>);

/// Why the triggers cannot be used now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriggerError {
    /// Some triggers are invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidTriggers),
    /// Reading a trigger's inputs failed for a reason that may pass.
    #[error(transparent)]
    Transient(#[from] TransientLookup),
}

/// A lookup failed for a reason that may pass (throttled, a server error, a timeout, no
/// connection): the pass changes nothing and is retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unsettled {
    /// Reading a trigger's inputs (a Secret, ConfigMap, TriggerAuthentication, the workload).
    #[error(transparent)]
    Inputs(TransientLookup),
    /// Resolving the scale target or reading its replica count.
    #[error(transparent)]
    Target(TargetError),
}

/// What stops the lookups.
enum Finding {
    Blocked(Blocked),
    Unsettled(Unsettled),
}

/// What the compiled triggers tell the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerFacts {
    /// The triggers' External metrics, one per trigger: the HPA's, unless `composite` is set.
    pub metrics: Vec<HpaMetric>,
    /// With scalingModifiers: the HPA's one External metric, the formula's result.
    pub composite: Option<HpaMetric>,
    /// The Resource metrics of the cpu and memory triggers: the HPA's, with or without
    /// `composite`.
    pub resources: Vec<ResourceMetric>,
    /// Every trigger is one the HPA reads itself: the object is always active (KEDA's rule).
    pub always_active: bool,
    /// Warnings of the triggers' declarations (shown in the Ready message).
    pub warnings: Vec<String>,
    /// A digest of what the triggers' inputs resolved to (credentials included): a rotated
    /// Secret changes it, and with it the loop's fingerprint.
    pub inputs_digest: u64,
}

/// What the reconciler found out about one ScaledObject. `None`: not looked up, because an
/// earlier finding already blocks the object.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The object.
    pub so: &'a ScaledObject,
    /// The compiled triggers (looked up when the spec is valid).
    pub triggers: Option<Result<TriggerFacts, TriggerError>>,
    /// The resolved scale target.
    pub target: Option<Result<TargetRef, TargetError>>,
    /// Conflicts: `Ok(Some(name))` adopts the HPA `name`.
    pub conflict: Option<Result<Option<String>, Conflict>>,
    /// The target's replica count, read when no original count was known yet.
    pub current_replicas: Option<Result<i32, TargetError>>,
    /// The original replica count this operator remembers for the object.
    pub remembered_original: Option<i32>,
    /// The HPA API the cluster serves.
    pub hpa_version: HpaVersion,
    /// The live HPA named [`Facts::hpa_name`], from the HPA cache.
    pub live_hpa: Option<Arc<CachedHpa>>,
    /// The names of the HPAs this object owns (on its target, or named in its status).
    pub owned_hpas: Vec<String>,
}

impl<'a> Facts<'a> {
    /// Facts about `so` before any lookup.
    pub fn new(so: &'a ScaledObject, hpa_version: HpaVersion, remembered_original: Option<i32>) -> Self {
        Facts {
            so,
            triggers: None,
            target: None,
            conflict: None,
            current_replicas: None,
            remembered_original,
            hpa_version,
            live_hpa: None,
            owned_hpas: Vec::new(),
        }
    }

    /// The first finding that blocks the object: an annotation problem, else the spec's
    /// problems, the triggers', the target's, a conflict, or failing to read the replica count.
    /// `None` too when a lookup before the blocking one failed for a reason that may pass.
    pub fn blocked(&self) -> Option<Blocked> {
        match self.finding()? {
            Finding::Blocked(b) => Some(b),
            Finding::Unsettled(_) => None,
        }
    }

    /// The first lookup that failed for a reason that may pass, when nothing before it blocks.
    pub fn unsettled(&self) -> Option<Unsettled> {
        match self.finding()? {
            Finding::Unsettled(u) => Some(u),
            Finding::Blocked(_) => None,
        }
    }

    /// Whether the next lookup is worth making: nothing blocks the object and nothing is
    /// unsettled yet.
    pub fn proceed(&self) -> bool {
        self.finding().is_none()
    }

    /// The findings in lookup order; the first that blocks or is unsettled wins.
    fn finding(&self) -> Option<Finding> {
        let failed = |text: String| Some(Finding::Blocked(Blocked::Invalid(text)));
        if let Some(problem) = annotation_problem(self.so) {
            return failed(problem);
        }
        if let Some(problem) = spec_problem(self.so) {
            return failed(problem);
        }
        match &self.triggers {
            Some(Err(TriggerError::Invalid(e))) => return failed(e.to_string()),
            Some(Err(TriggerError::Transient(t))) => {
                return Some(Finding::Unsettled(Unsettled::Inputs(t.clone())));
            }
            _ => {}
        }
        let target_failed = |e: &TargetError| {
            if e.is_transient() {
                Some(Finding::Unsettled(Unsettled::Target(e.clone())))
            } else {
                failed(e.to_string())
            }
        };
        if let Some(Err(e)) = &self.target {
            return target_failed(e);
        }
        if let Some(Err(c)) = &self.conflict {
            return Some(Finding::Blocked(Blocked::Conflict(c.to_string())));
        }
        if let Some(Err(e)) = &self.current_replicas {
            return target_failed(e);
        }
        if let Some(live) = &self.live_hpa
            && !owned_by(live, &self.so.uid().unwrap_or_default())
            && !matches!(&self.conflict, Some(Ok(Some(adopted))) if *adopted == live.name)
        {
            // Never apply onto an HPA ebb does not own and was not asked to adopt.
            let taken = Conflict::NameTaken {
                hpa: live.name.clone(),
            };
            return Some(Finding::Blocked(Blocked::Conflict(taken.to_string())));
        }
        None
    }

    /// The original replica count known before reading the target: remembered, else the status'.
    pub fn known_original(&self) -> Option<i32> {
        self.remembered_original.or(status_original(self.so))
    }

    /// The HPA's name: an adopted HPA's, else the ScaledObject's default.
    pub fn hpa_name(&self) -> String {
        match &self.conflict {
            Some(Ok(Some(adopted))) => adopted.clone(),
            _ => self.so.hpa_name(),
        }
    }

    fn resolved_target(&self) -> Option<&TargetRef> {
        self.target.as_ref().and_then(|t| t.as_ref().ok())
    }

    fn trigger_facts(&self) -> Option<&TriggerFacts> {
        self.triggers.as_ref().and_then(|t| t.as_ref().ok())
    }
}

/// What to do with the HPA.
#[derive(Debug, Clone, PartialEq)]
pub enum HpaStep {
    /// Server-side apply `desired` (it is missing or drifted).
    Apply {
        /// HPA name.
        name: String,
        /// The HPA as ebb wants it.
        desired: Json,
    },
    /// Delete the HPA ebb owns (the object is blocked or paused).
    Delete {
        /// HPA name.
        name: String,
    },
    /// Nothing to do.
    Leave,
}

/// What the scale loop is told, when it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSettings {
    /// The resolved target.
    pub target: TargetRef,
    /// Pause annotations.
    pub pause: PauseState,
    /// `force-activation` (ignored while paused).
    pub force_activation: bool,
    /// `pollingInterval`, at least one second.
    pub polling_interval: Duration,
    /// Hash of the spec and ebb's annotations: the loop is only updated when it changes.
    pub fingerprint: u64,
}

/// Whether the scale loop runs.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopStep {
    /// Start the loop, or hand it these settings.
    Run(LoopSettings),
    /// Stop the loop.
    Stop,
}

/// An Event to record about the object.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// Reason, e.g. `Paused`.
    pub reason: &'static str,
    /// Message.
    pub note: String,
}

/// Everything one reconcile pass does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The reconciler's part of the status.
    pub view: ReconcileView,
    /// Forget the scale loop's part of the status (the object is blocked).
    pub clear_loop_view: bool,
    /// The original replica count to remember (set when the object is usable).
    pub remember_original: Option<i32>,
    /// The HPA.
    pub hpa: HpaStep,
    /// HPAs this object owns besides [`Plan::hpa`]'s, to delete (left over from a rename or an
    /// adoption).
    pub delete_stale_hpas: Vec<String>,
    /// The scale loop.
    pub scale_loop: LoopStep,
    /// Events on transitions (pause, unpause, newly blocked).
    pub events: Vec<PlannedEvent>,
    /// When to reconcile again without a change.
    pub requeue: Duration,
}

/// Plans one reconcile pass from the facts; nothing at all when a lookup failed for a reason that
/// may pass (the caller retries, and the loop, the HPA and the status stay as they are).
pub fn plan(f: &Facts) -> Result<Plan, Unsettled> {
    if let Some(unsettled) = f.unsettled() {
        return Err(unsettled);
    }
    let so = f.so;
    let pause = pause_state(so);
    let paused = pause.is_paused();
    let blocked = f.blocked();
    let target = f.resolved_target().filter(|_| blocked.is_none());
    let triggers = f.trigger_facts();
    let hpa_name = f.hpa_name();
    let original = match target {
        Some(_) => f
            .known_original()
            .or(f.current_replicas.as_ref().and_then(|r| r.as_ref().ok().copied())),
        None => status_original(so),
    };
    let view = ReconcileView {
        readiness: match &blocked {
            None => Readiness::Ok,
            Some(Blocked::Invalid(m)) => Readiness::Invalid(m.clone()),
            Some(Blocked::Conflict(m)) => Readiness::Conflict(m.clone()),
        },
        paused,
        paused_replicas: pause.paused_replicas,
        hpa_name: (target.is_some() && !paused).then(|| hpa_name.clone()),
        metric_names: triggers
            .map(|t| t.metrics.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default(),
        composite_metric: triggers
            .and_then(|t| t.composite.as_ref())
            .map(|c| c.name.clone()),
        original_replica_count: original,
        scale_target_kind: f.resolved_target().map(TargetRef::kind_label),
        generation: so.metadata.generation,
        fallback_threshold: so
            .spec
            .fallback
            .as_ref()
            .map(|f| f.failure_threshold.max(1) as u32),
        warnings: triggers.map(|t| t.warnings.clone()).unwrap_or_default(),
        triggers_types: crate::cache::auth_refs::triggers_types(&so.spec.triggers),
        authentications_types: crate::cache::auth_refs::authentications_types(&so.spec.triggers),
    };
    let owned_hpa = f
        .live_hpa
        .as_ref()
        .filter(|h| owned_by(h, &so.uid().unwrap_or_default()));
    let delete_owned = || match owned_hpa {
        Some(_) => HpaStep::Delete {
            name: hpa_name.clone(),
        },
        None => HpaStep::Leave,
    };
    let (hpa, scale_loop) = match target {
        Some(target) => {
            let hpa = if paused {
                // Paused: no HPA (it would keep scaling); the loop applies paused-replicas.
                delete_owned()
            } else {
                let metrics = match triggers {
                    Some(TriggerFacts {
                        composite: Some(c), ..
                    }) => std::slice::from_ref(c),
                    Some(t) => t.metrics.as_slice(),
                    None => &[],
                };
                let resources = triggers.map_or(&[][..], |t| t.resources.as_slice());
                let desired = desired_hpa(so, &hpa_name, resources, metrics, pause, f.hpa_version);
                let live = f.live_hpa.as_ref().map(|h| h.drift_view());
                if needs_apply(&desired, live.as_ref()) {
                    HpaStep::Apply {
                        name: hpa_name.clone(),
                        desired,
                    }
                } else {
                    HpaStep::Leave
                }
            };
            let settings = LoopSettings {
                target: target.clone(),
                pause,
                force_activation: !paused
                    && (flag(so.metadata.annotations.as_ref(), annotations::FORCE_ACTIVATION)
                        || triggers.is_some_and(|t| t.always_active)),
                polling_interval: Duration::from_secs(so.spec.polling_interval.max(1) as u64),
                fingerprint: fingerprint(so, triggers.map_or(0, |t| t.inputs_digest)),
            };
            (hpa, LoopStep::Run(settings))
        }
        None => (delete_owned(), LoopStep::Stop),
    };
    Ok(Plan {
        events: events(so, pause, blocked.as_ref()),
        clear_loop_view: blocked.is_some(),
        remember_original: target.and(original),
        requeue: match blocked {
            // A conflict or a missing target may resolve without this object changing.
            Some(_) => Duration::from_secs(15),
            None => Duration::from_secs(300),
        },
        view,
        hpa,
        delete_stale_hpas: f.owned_hpas.iter().filter(|n| **n != hpa_name).cloned().collect(),
        scale_loop,
    })
}

/// Events on transitions: paused or unpaused, and newly blocked (not on every pass).
fn events(so: &ScaledObject, pause: PauseState, blocked: Option<&Blocked>) -> Vec<PlannedEvent> {
    let status = so.status.as_ref();
    let mut out = Vec::new();
    let was_paused = condition_status(status, conditions::PAUSED) == Some("True");
    if pause.is_paused() != was_paused {
        out.push(if pause.is_paused() {
            PlannedEvent {
                type_: EventType::Normal,
                reason: reasons::PAUSED,
                note: match pause.paused_replicas {
                    Some(n) => format!("paused at {n} replicas"),
                    None => "scaling paused".to_string(),
                },
            }
        } else {
            PlannedEvent {
                type_: EventType::Normal,
                reason: reasons::UNPAUSED,
                note: "scaling resumed".to_string(),
            }
        });
    }
    let previously_blocked = condition_status(status, conditions::READY) == Some("False");
    if !previously_blocked && let Some(b) = blocked {
        let (reason, note) = match b {
            Blocked::Invalid(m) => (reasons::SCALED_OBJECT_CHECK_FAILED, m),
            Blocked::Conflict(m) => (reasons::TARGET_CONFLICT, m),
        };
        out.push(PlannedEvent {
            type_: EventType::Warning,
            reason,
            note: note.clone(),
        });
    }
    out
}

fn status_original(so: &ScaledObject) -> Option<i32> {
    so.status.as_ref().and_then(|s| s.original_replica_count)
}

/// Reads the pause annotations.
pub fn pause_state(so: &ScaledObject) -> PauseState {
    let a = so.metadata.annotations.as_ref();
    PauseState {
        paused_replicas: a
            .and_then(|a| a.get(annotations::PAUSED_REPLICAS))
            .and_then(|v| v.trim().parse::<i32>().ok()),
        paused: flag(a, annotations::PAUSED),
        scale_in_paused: flag(a, annotations::PAUSED_SCALE_IN),
        scale_out_paused: flag(a, annotations::PAUSED_SCALE_OUT),
    }
}

/// The spec's problems (cross-field rules), as one message.
pub fn spec_problem(so: &ScaledObject) -> Option<String> {
    let problems = validate_spec(&so.spec);
    (!problems.is_empty()).then(|| {
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// An annotation ebb reads whose value is unusable (`paused-replicas` not a whole number ≥ 0).
pub fn annotation_problem(so: &ScaledObject) -> Option<String> {
    let value = so
        .metadata
        .annotations
        .as_ref()?
        .get(annotations::PAUSED_REPLICAS)?;
    match value.trim().parse::<i32>() {
        Ok(n) if n >= 0 => None,
        _ => Some(format!(
            "metadata.annotations.{}: must be a whole number ≥ 0, got {value:?}",
            annotations::PAUSED_REPLICAS
        )),
    }
}

/// A hash of everything that, when changed, must reach the scale loop (a hash, not the text: at
/// thousands of loops the text would be a good part of the operator's memory): the spec, ebb's
/// annotations and the digest of the triggers' resolved inputs.
pub fn fingerprint(so: &ScaledObject, inputs_digest: u64) -> u64 {
    let annotations: Vec<(&String, &String)> = so
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("autoscaling.ebb.dev/"))
        .collect();
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_string(&so.spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    annotations.hash(&mut hasher);
    inputs_digest.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::targets::discovery_error;
    use crate::scale::targets::tests::{api_error, no_answer};
    use ebb_crds::MetricType;
    use kube::api::DynamicObject;
    use serde_json::json;

    fn object(annotations: Json, status: Json) -> ScaledObject {
        serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u-x", "generation": 2,
                         "annotations": annotations},
            "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"type": "t", "metadata": {}}]},
            "status": status,
        }))
        .unwrap()
    }

    fn target() -> TargetRef {
        TargetRef {
            namespace: "ns".into(),
            name: "w".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        }
    }

    fn trigger_facts() -> TriggerFacts {
        TriggerFacts {
            metrics: vec![HpaMetric {
                name: "s0-t-v".into(),
                target: 5.0,
                metric_type: MetricType::AverageValue,
            }],
            warnings: vec!["triggers[0]: careful".into()],
            inputs_digest: 0,
            composite: None,
            resources: Vec::new(),
            always_active: false,
        }
    }

    /// Every lookup made and fine: the target has 2 replicas, no HPA exists yet.
    fn usable(so: &ScaledObject) -> Facts<'_> {
        Facts {
            triggers: Some(Ok(trigger_facts())),
            target: Some(Ok(target())),
            conflict: Some(Ok(None)),
            current_replicas: Some(Ok(2)),
            ..Facts::new(so, HpaVersion::V2, None)
        }
    }

    /// The plan of facts without an unsettled lookup.
    fn planned(f: &Facts) -> Plan {
        plan(f).expect("nothing unsettled")
    }

    fn cached(hpa: &Json) -> Arc<CachedHpa> {
        let obj: DynamicObject = serde_json::from_value(hpa.clone()).unwrap();
        Arc::new(CachedHpa::from_object(&obj))
    }

    fn ready_false(reason: &str) -> Json {
        json!({"conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "m"}]})
    }

    #[test]
    fn normal_applies_the_hpa_runs_the_loop_and_remembers_the_count() {
        let so = object(json!({}), json!(null));
        let p = planned(&usable(&so));
        assert_eq!(p.view.readiness, Readiness::Ok);
        assert_eq!(p.view.hpa_name.as_deref(), Some("ebb-hpa-x"));
        assert_eq!(p.view.metric_names, ["s0-t-v"]);
        assert_eq!(p.view.warnings, ["triggers[0]: careful"]);
        assert_eq!(p.view.original_replica_count, Some(2));
        assert_eq!(p.view.scale_target_kind.as_deref(), Some("apps/v1.Deployment"));
        assert_eq!(p.remember_original, Some(2));
        assert!(!p.clear_loop_view);
        let HpaStep::Apply { name, desired } = &p.hpa else {
            panic!("{:?}", p.hpa)
        };
        assert_eq!(name, "ebb-hpa-x");
        assert_eq!(
            desired["spec"]["metrics"][0]["external"]["metric"]["name"],
            "s0-t-v"
        );
        let LoopStep::Run(settings) = &p.scale_loop else {
            panic!("{:?}", p.scale_loop)
        };
        assert_eq!(settings.target, target());
        assert_eq!(settings.polling_interval, Duration::from_secs(30));
        assert!(!settings.force_activation);
        assert!(p.events.is_empty());
        assert_eq!(p.requeue, Duration::from_secs(300));
    }

    #[test]
    fn with_scaling_modifiers_the_hpa_reads_only_the_composite() {
        let so = object(json!({}), json!(null));
        let mut facts = trigger_facts();
        facts.metrics.push(HpaMetric {
            name: "s1-t-w".into(),
            target: 1.0,
            metric_type: MetricType::Value,
        });
        facts.composite = Some(HpaMetric {
            name: "composite-metric".into(),
            target: 2.5,
            metric_type: MetricType::AverageValue,
        });
        let f = Facts {
            triggers: Some(Ok(facts)),
            ..usable(&so)
        };
        let p = planned(&f);
        // The status keeps the triggers' metric names (their health is per trigger), as KEDA's.
        assert_eq!(p.view.metric_names, ["s0-t-v", "s1-t-w"]);
        assert_eq!(p.view.composite_metric.as_deref(), Some("composite-metric"));
        let HpaStep::Apply { desired, .. } = &p.hpa else {
            panic!("{:?}", p.hpa)
        };
        assert_eq!(
            desired["spec"]["metrics"],
            json!([{"type": "External", "external": {
                "metric": {"name": "composite-metric", "selector": {"matchLabels": {"scaledobject.ebb.dev/name": "x"}}},
                "target": {"type": "AverageValue", "averageValue": "2500m"}}}])
        );
    }

    #[test]
    fn cpu_and_memory_reach_the_hpa_and_only_they_make_the_object_always_active() {
        use ebb_scalers::resource_metric::ResourceTarget;
        let so = object(json!({}), json!(null));
        let cpu = ResourceMetric {
            resource: "cpu",
            container: None,
            target: ResourceTarget::Utilization(50),
        };
        // Beside an event trigger: both metrics, activity from the event trigger.
        let mut facts = trigger_facts();
        facts.resources.push(cpu.clone());
        let f = Facts {
            triggers: Some(Ok(facts.clone())),
            ..usable(&so)
        };
        let p = planned(&f);
        let HpaStep::Apply { desired, .. } = &p.hpa else {
            panic!("{:?}", p.hpa)
        };
        let types: Vec<&str> = desired["spec"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Resource", "External"]);
        let LoopStep::Run(settings) = &p.scale_loop else {
            panic!("{:?}", p.scale_loop)
        };
        assert!(!settings.force_activation);
        // The only trigger: always active, and with scalingModifiers the resource stays.
        let only = TriggerFacts {
            metrics: Vec::new(),
            resources: vec![cpu],
            always_active: true,
            ..trigger_facts()
        };
        let f = Facts {
            triggers: Some(Ok(only)),
            ..usable(&so)
        };
        let p = planned(&f);
        let LoopStep::Run(settings) = &p.scale_loop else {
            panic!("{:?}", p.scale_loop)
        };
        assert!(settings.force_activation);
        let HpaStep::Apply { desired, .. } = &p.hpa else {
            panic!("{:?}", p.hpa)
        };
        assert_eq!(desired["spec"]["metrics"][0]["resource"]["name"], "cpu");
        assert_eq!(desired["spec"]["metrics"].as_array().map(Vec::len), Some(1));
        facts.composite = Some(HpaMetric {
            name: "composite-metric".into(),
            target: 2.0,
            metric_type: MetricType::AverageValue,
        });
        let f = Facts {
            triggers: Some(Ok(facts)),
            ..usable(&so)
        };
        let HpaStep::Apply { desired, .. } = &planned(&f).hpa else {
            panic!()
        };
        let names: Vec<&Json> = desired["spec"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["type"])
            .collect();
        assert_eq!(names, [&json!("Resource"), &json!("External")]);
        assert_eq!(
            desired["spec"]["metrics"][1]["external"]["metric"]["name"],
            "composite-metric"
        );
    }

    #[test]
    fn a_remembered_count_wins_over_the_status_and_the_target() {
        let so = object(json!({}), json!({"originalReplicaCount": 7}));
        let mut f = usable(&so);
        f.current_replicas = None;
        assert_eq!(planned(&f).view.original_replica_count, Some(7));
        f.remembered_original = Some(4);
        assert_eq!(f.known_original(), Some(4));
        assert_eq!(planned(&f).remember_original, Some(4));
    }

    #[test]
    fn drift_is_reapplied_and_an_unchanged_hpa_left_alone() {
        let so = object(json!({}), json!(null));
        let mut f = usable(&so);
        let HpaStep::Apply { desired, .. } = planned(&f).hpa else {
            panic!("no HPA planned")
        };
        f.live_hpa = Some(cached(&desired));
        assert_eq!(planned(&f).hpa, HpaStep::Leave);
        let mut edited = desired.clone();
        edited["spec"]["maxReplicas"] = json!(3);
        f.live_hpa = Some(cached(&edited));
        assert!(matches!(planned(&f).hpa, HpaStep::Apply { .. }));
    }

    #[test]
    fn invalid_stops_the_loop_deletes_the_owned_hpa_and_warns_once() {
        let so = object(json!({}), json!(null));
        let mut f = Facts::new(&so, HpaVersion::V2, None);
        f.triggers = Some(Err(InvalidTriggers(vec![
            "spec.triggers[0] (t): bad".into(),
            "two".into(),
        ])
        .into()));
        let p = planned(&f);
        assert_eq!(
            p.view.readiness,
            Readiness::Invalid("spec.triggers[0] (t): bad; two".into())
        );
        assert_eq!(p.view.hpa_name, None);
        assert!(p.view.metric_names.is_empty());
        assert_eq!(p.scale_loop, LoopStep::Stop);
        assert_eq!(p.hpa, HpaStep::Leave, "no HPA of ours exists");
        assert!(p.clear_loop_view);
        assert_eq!(p.remember_original, None);
        assert_eq!(p.requeue, Duration::from_secs(15));
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].reason, "ScaledObjectCheckFailed");
        assert_eq!(p.events[0].type_, EventType::Warning);

        // An HPA we own is deleted; one we do not own is left.
        let owned = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "ebb-hpa-x", "ownerReferences": [
                {"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "name": "x", "uid": "u-x"}]},
            "spec": {}});
        f.live_hpa = Some(cached(&owned));
        assert_eq!(
            planned(&f).hpa,
            HpaStep::Delete {
                name: "ebb-hpa-x".into()
            }
        );
        let mut foreign = owned.clone();
        foreign["metadata"]["ownerReferences"] = json!([]);
        f.live_hpa = Some(cached(&foreign));
        assert_eq!(planned(&f).hpa, HpaStep::Leave);

        // Already Ready=False: no second Event.
        let blocked_before = object(json!({}), ready_false("ScaledObjectCheckFailed"));
        let mut f = Facts::new(&blocked_before, HpaVersion::V2, None);
        f.triggers = Some(Err(InvalidTriggers(vec!["bad".into()]).into()));
        assert!(planned(&f).events.is_empty());
    }

    #[test]
    fn an_annotation_problem_overrides_the_other_findings() {
        let so = object(json!({"autoscaling.ebb.dev/paused-replicas": "-1"}), json!(null));
        let mut f = Facts::new(&so, HpaVersion::V2, None);
        f.triggers = Some(Err(InvalidTriggers(vec!["bad".into()]).into()));
        let Some(Blocked::Invalid(m)) = f.blocked() else {
            panic!("not blocked")
        };
        assert!(
            m.starts_with("metadata.annotations.autoscaling.ebb.dev/paused-replicas"),
            "{m}"
        );
        // The triggers that compiled still name their metrics.
        f.triggers = Some(Ok(trigger_facts()));
        assert_eq!(planned(&f).view.metric_names, ["s0-t-v"]);
    }

    #[test]
    fn a_missing_target_is_invalid() {
        let so = object(json!({}), json!(null));
        let mut f = usable(&so);
        f.target = Some(Err(TargetError::NotFound {
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "w".into(),
        }));
        f.conflict = None;
        f.current_replicas = None;
        let p = planned(&f);
        assert_eq!(
            p.view.readiness,
            Readiness::Invalid("scaleTargetRef: Deployment ns/w not found".into())
        );
        assert_eq!(p.view.scale_target_kind, None);
        assert_eq!(p.scale_loop, LoopStep::Stop);
    }

    /// An HPA this object owns, as the cache holds it.
    fn owned_hpa() -> Arc<CachedHpa> {
        cached(
            &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "ebb-hpa-x", "ownerReferences": [
                {"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "name": "x", "uid": "u-x"}]},
            "spec": {}}),
        )
    }

    fn target_api_error(e: kube::Error) -> TargetError {
        TargetError::Api {
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "w".into(),
            source: Arc::new(e),
        }
    }

    #[test]
    fn a_lookup_that_may_pass_keeps_the_hpa_the_loop_and_the_status() {
        // A running object (Ready, its HPA live) whose next pass meets a 429, a 5xx or a timeout
        // in any lookup: nothing is planned (no HPA delete, no loop stop, no Ready=False, no
        // Event); the executor returns the error and the pass is retried.
        let so = object(
            json!({}),
            json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": ""}]}),
        );
        let running = |f: &mut Facts| f.live_hpa = Some(owned_hpa());
        let secret_throttled = TransientLookup {
            what: "Secret ns/creds".into(),
            source: Arc::new(api_error(429)),
        };

        let mut f = usable(&so);
        running(&mut f);
        f.triggers = Some(Err(secret_throttled.clone().into()));
        assert!(!f.proceed(), "no further lookups");
        assert_eq!(f.blocked(), None);
        assert!(matches!(plan(&f), Err(Unsettled::Inputs(ref t)) if t.what == "Secret ns/creds"));

        let mut f = usable(&so);
        running(&mut f);
        f.target = Some(Err(discovery_error("apps/v1", "Deployment", api_error(503))));
        assert!(matches!(plan(&f), Err(Unsettled::Target(_))));

        let mut f = usable(&so);
        running(&mut f);
        f.current_replicas = Some(Err(target_api_error(no_answer())));
        assert!(matches!(plan(&f), Err(Unsettled::Target(_))));

        // An invalid finding before the unsettled one still blocks: the annotation is wrong
        // whatever the Secret holds.
        let bad = object(json!({"autoscaling.ebb.dev/paused-replicas": "x"}), json!(null));
        let mut f = Facts::new(&bad, HpaVersion::V2, None);
        f.triggers = Some(Err(secret_throttled.into()));
        assert!(matches!(plan(&f), Ok(ref p) if matches!(p.view.readiness, Readiness::Invalid(_))));
    }

    #[test]
    fn a_404_or_a_403_still_blocks_and_deletes_the_owned_hpa() {
        let so = object(json!({}), json!(null));
        // The Secret is missing: the trigger compiles to a problem (an input error).
        let mut f = usable(&so);
        f.live_hpa = Some(owned_hpa());
        f.triggers = Some(Err(InvalidTriggers(vec![
            "spec.triggers[0] (t): Secret ns/creds not found".into(),
        ])
        .into()));
        let p = planned(&f);
        assert!(matches!(p.view.readiness, Readiness::Invalid(ref m) if m.contains("not found")));
        assert_eq!(p.scale_loop, LoopStep::Stop);
        assert_eq!(
            p.hpa,
            HpaStep::Delete {
                name: "ebb-hpa-x".into()
            }
        );
        // The target's kind is not served (discovery 404), or ebb may not read its replicas (403).
        let unserved = |f: &mut Facts| {
            f.target = Some(Err(discovery_error("x.io/v1", "Thing", api_error(404))));
        };
        let forbidden = |f: &mut Facts| f.current_replicas = Some(Err(target_api_error(api_error(403))));
        for finding in [&unserved as &dyn Fn(&mut Facts), &forbidden] {
            let mut f = usable(&so);
            f.live_hpa = Some(owned_hpa());
            finding(&mut f);
            let p = planned(&f);
            assert!(
                matches!(p.view.readiness, Readiness::Invalid(_)),
                "{:?}",
                p.view.readiness
            );
            assert_eq!(
                p.hpa,
                HpaStep::Delete {
                    name: "ebb-hpa-x".into()
                }
            );
            assert_eq!(p.scale_loop, LoopStep::Stop);
        }
    }

    #[test]
    fn a_conflict_blocks_and_keeps_the_status_original_count() {
        let so = object(json!({}), json!({"originalReplicaCount": 3}));
        let mut f = usable(&so);
        f.conflict = Some(Err(Conflict::ScaledObject {
            target: "Deployment ns/w".into(),
            other: "a".into(),
        }));
        f.current_replicas = None;
        let p = planned(&f);
        assert_eq!(
            p.view.readiness,
            Readiness::Conflict("Deployment ns/w is already scaled by ScaledObject a".into())
        );
        assert_eq!(p.view.scale_target_kind.as_deref(), Some("apps/v1.Deployment"));
        assert_eq!(p.view.original_replica_count, Some(3));
        assert_eq!(p.remember_original, None);
        assert_eq!(p.scale_loop, LoopStep::Stop);
        assert_eq!(p.events[0].reason, "TargetConflict");
        assert_eq!(p.requeue, Duration::from_secs(15));
    }

    #[test]
    fn a_foreign_hpa_conflicts_and_an_adopted_one_is_applied_under_its_name() {
        let so = object(json!({}), json!(null));
        let mut f = usable(&so);
        f.conflict = Some(Err(Conflict::ForeignHpa {
            target: "Deployment ns/w".into(),
            hpa: "theirs".into(),
        }));
        f.current_replicas = None;
        let p = planned(&f);
        assert!(
            matches!(p.view.readiness, Readiness::Conflict(ref m) if m.contains("HorizontalPodAutoscaler theirs"))
        );
        assert_eq!(p.scale_loop, LoopStep::Stop);

        let mut f = usable(&so);
        f.conflict = Some(Ok(Some("theirs".into())));
        assert_eq!(f.hpa_name(), "theirs");
        let p = planned(&f);
        assert_eq!(p.view.hpa_name.as_deref(), Some("theirs"));
        assert!(matches!(p.hpa, HpaStep::Apply { ref name, .. } if name == "theirs"));
    }

    #[test]
    fn an_hpa_of_the_same_name_that_ebb_does_not_own_is_never_applied_onto() {
        let so = object(json!({}), json!(null));
        let mut f = usable(&so);
        f.live_hpa = Some(cached(&json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "ebb-hpa-x"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "other"}}
        })));
        let p = planned(&f);
        assert!(
            matches!(p.view.readiness, Readiness::Conflict(ref m) if m.contains("ebb-hpa-x") && m.contains("horizontalPodAutoscalerConfig.name")),
            "{:?}",
            p.view.readiness
        );
        assert_eq!(p.hpa, HpaStep::Leave);
        assert_eq!(p.scale_loop, LoopStep::Stop);
        // Adopting that very HPA is allowed.
        f.conflict = Some(Ok(Some("ebb-hpa-x".into())));
        assert!(matches!(planned(&f).hpa, HpaStep::Apply { ref name, .. } if name == "ebb-hpa-x"));
    }

    #[test]
    fn owned_hpas_other_than_the_one_in_use_are_deleted() {
        let so = object(json!({}), json!(null));
        let mut f = usable(&so);
        f.conflict = Some(Ok(Some("legacy".into())));
        f.owned_hpas = vec!["ebb-hpa-x".into(), "legacy".into()];
        let p = planned(&f);
        assert_eq!(p.view.hpa_name.as_deref(), Some("legacy"));
        assert_eq!(p.delete_stale_hpas, ["ebb-hpa-x"]);
        // Blocked: the one in use goes through the HPA step, the rest as stale.
        f.conflict = Some(Err(Conflict::ForeignHpa {
            target: "Deployment ns/w".into(),
            hpa: "legacy".into(),
        }));
        f.owned_hpas = vec!["ebb-hpa-x".into(), "renamed-before".into()];
        let p = planned(&f);
        assert_eq!(p.delete_stale_hpas, ["renamed-before"]);
    }

    #[test]
    fn paused_deletes_the_hpa_keeps_the_loop_and_records_the_transitions() {
        let so = object(
            json!({"autoscaling.ebb.dev/paused-replicas": "1", "autoscaling.ebb.dev/force-activation": "true"}),
            json!(null),
        );
        let mut f = usable(&so);
        f.live_hpa = Some(cached(
            &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "ebb-hpa-x", "ownerReferences": [
                {"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "name": "x", "uid": "u-x"}]},
            "spec": {}}),
        ));
        let p = planned(&f);
        assert!(p.view.paused);
        assert_eq!(p.view.paused_replicas, Some(1));
        assert_eq!(p.view.hpa_name, None);
        assert_eq!(
            p.hpa,
            HpaStep::Delete {
                name: "ebb-hpa-x".into()
            }
        );
        let LoopStep::Run(settings) = &p.scale_loop else {
            panic!("{:?}", p.scale_loop)
        };
        assert!(
            !settings.force_activation,
            "force-activation does not apply while paused"
        );
        assert_eq!(settings.pause.paused_replicas, Some(1));
        assert_eq!(
            p.events,
            [PlannedEvent {
                type_: EventType::Normal,
                reason: "Paused",
                note: "paused at 1 replicas".into()
            }]
        );
        // Unpausing records the other transition.
        let was_paused = object(
            json!({}),
            json!({"conditions": [{"type": "Paused", "status": "True", "reason": "r", "message": "m"}]}),
        );
        assert_eq!(planned(&usable(&was_paused)).events[0].reason, "Unpaused");
    }

    #[test]
    fn pause_annotations_are_read() {
        let so = object(
            json!({"autoscaling.ebb.dev/paused-replicas": " 3 ", "autoscaling.ebb.dev/paused-scale-in": "true"}),
            json!(null),
        );
        let p = pause_state(&so);
        assert_eq!(p.paused_replicas, Some(3));
        assert!(p.scale_in_paused && !p.scale_out_paused && !p.paused);
        assert!(annotation_problem(&so).is_none());
    }

    #[test]
    fn the_fingerprint_follows_the_spec_ebbs_annotations_and_the_resolved_inputs_only() {
        let a = object(json!({}), json!(null));
        let mut b = a.clone();
        b.metadata
            .annotations
            .get_or_insert_default()
            .insert("other/x".into(), "1".into());
        assert_eq!(fingerprint(&a, 0), fingerprint(&b, 0));
        b.metadata
            .annotations
            .get_or_insert_default()
            .insert(annotations::PAUSED.into(), "true".into());
        assert_ne!(fingerprint(&a, 0), fingerprint(&b, 0));
        let mut c = a.clone();
        c.spec.polling_interval = 5;
        assert_ne!(fingerprint(&a, 0), fingerprint(&c, 0));
        assert_ne!(
            fingerprint(&a, 0),
            fingerprint(&a, 1),
            "rotated credentials reach the loop"
        );
    }
}
