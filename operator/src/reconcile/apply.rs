//! The reconciler's executor: it makes the lookups (`observe`: compiling the triggers and
//! building their scalers, resolving the target, conflicts, the replica count, the live HPA),
//! asks [`plan::plan`] what to do, and does it (HPA apply or delete, the scale loop, Events, the
//! status). [`cleanup`] undoes ebb's work when an object with a finalizer is deleted.

use std::sync::{Arc, PoisonError};

use ebb_crds::ScaledObject;
use ebb_crds::conditions;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::compile::cluster_objects::ClusterObjects;
use crate::compile::triggers::{Built, compile};
use crate::context::{ObjectKey, ObjectSlot, Shared};
use crate::reconcile::hpa::HpaMetric;
use crate::reconcile::plan::{
    self, Facts, HpaStep, InvalidTriggers, LoopSettings, LoopStep, TriggerError, TriggerFacts,
};
use crate::reconcile::{Error, conflicts};
use crate::scale::composite::Composite;
use crate::scale::decision::{LoopMemory, ScalingSpec, restore_on_delete};
use crate::scale::scale_loop::{LoopConfig, LoopHandle, LoopTrigger, first_delay};
use crate::scale::targets::{TargetError, TargetRef};
use crate::status::condition_status;
use crate::status::writer::FIELD_MANAGER;
use ebb_scalers::metric_name::COMPOSITE_METRIC_NAME;

/// `namespace/name` of a ScaledObject.
pub fn key_of(so: &ScaledObject) -> ObjectKey {
    (so.namespace().unwrap_or_default(), so.name_any())
}

/// One reconcile pass over a live (not deleted) ScaledObject.
pub async fn apply(so: Arc<ScaledObject>, shared: &Arc<Shared>) -> Result<Action, Error> {
    let key = key_of(&so);
    let slot = shared.slot_of(&key, &so.uid().unwrap_or_default());
    {
        let mut book = slot.status.lock().await;
        if book.written.is_none() {
            book.written = so.status.clone();
        }
    }
    let remembered = *slot
        .original_replicas
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let (facts, triggers) = observe(&so, shared, remembered).await;
    // A lookup that failed for a reason that may pass changes nothing: the error retries the pass.
    let plan = plan::plan(&facts)?;
    if let Some(n) = plan.remember_original {
        *slot
            .original_replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(n);
    }
    // The reconciler's view goes into the status book before a loop starts, so that the loop's
    // first poll writes the whole status at once (one write for a new object, not two).
    {
        let mut book = slot.status.lock().await;
        book.reconcile = Some(plan.view);
        if plan.clear_loop_view {
            book.loop_view = None;
        }
    }
    for name in plan.delete_stale_hpas {
        apply_hpa(shared, &key.0, HpaStep::Delete { name }).await?;
    }
    let mut loop_polls_now = false;
    match plan.scale_loop {
        LoopStep::Run(settings) => {
            release_adopted_hpa(shared, &key.0, &so, &plan.hpa).await?;
            apply_hpa(shared, &key.0, plan.hpa).await?;
            let cfg = loop_config(&so, key.clone(), settings, triggers);
            loop_polls_now = ensure_loop(shared, &slot, &so, cfg);
        }
        LoopStep::Stop => {
            slot.stop_loop();
            apply_hpa(shared, &key.0, plan.hpa).await?;
        }
    }
    for e in plan.events {
        shared.event(&so, e.type_, e.reason, e.note).await;
    }
    // Status: written here unless the loop is about to poll and write it anyway.
    if !loop_polls_now {
        shared.write_status(&key).await?;
    }
    Ok(Action::requeue(plan.requeue))
}

/// Makes the lookups in order, each only while nothing blocks the object yet. Returns the facts
/// and, when the triggers compiled, their scalers for the loop.
async fn observe<'a>(
    so: &'a ScaledObject,
    shared: &Shared,
    remembered: Option<i32>,
) -> (Facts<'a>, LoopTriggers) {
    let mut facts = Facts::new(so, shared.hpa.version, remembered);
    let mut loop_triggers = LoopTriggers::default();
    if plan::spec_problem(so).is_none() {
        facts.triggers = Some(build_triggers(so, shared).await.map(|(t, l)| {
            loop_triggers = l;
            t
        }));
    }
    let ns = so.namespace().unwrap_or_default();
    if facts.proceed() {
        let r = &so.spec.scale_target_ref;
        let target = shared
            .targets
            .resolve(&ns, r.api_version_or_default(), r.kind_or_default(), &r.name)
            .await;
        facts.target = Some(target);
    }
    if facts.proceed()
        && let Some(Ok(target)) = &facts.target
    {
        facts.conflict = Some(conflicts::detect(shared, so, target));
        if facts.proceed() && facts.known_original().is_none() {
            facts.current_replicas = Some(shared.targets.replicas(target).await);
        }
    }
    facts.live_hpa = shared.hpas.get(&ns, &facts.hpa_name());
    facts.owned_hpas = owned_hpas(so, shared);
    (facts, loop_triggers)
}

/// The HPAs `so` owns, from the cache: those on its target and the one its status names.
fn owned_hpas(so: &ScaledObject, shared: &Shared) -> Vec<String> {
    let ns = so.namespace().unwrap_or_default();
    let uid = so.uid().unwrap_or_default();
    let mut owned: Vec<String> = shared
        .hpas
        .targeting(&ns, &so.spec.scale_target_ref.name)
        .iter()
        .filter(|h| conflicts::owned_by(h, &uid))
        .map(|h| h.name.clone())
        .collect();
    if let Some(named) = so.status.as_ref().and_then(|s| s.hpa_name.as_ref())
        && !owned.contains(named)
        && shared
            .hpas
            .get(&ns, named)
            .is_some_and(|h| conflicts::owned_by(&h, &uid))
    {
        owned.push(named.clone());
    }
    owned
}

/// Compiles every trigger (the same path as `ebb validate`, over the cluster) and builds its
/// scaler. Problems name the trigger index, type and parameter, never a secret value. A lookup
/// that failed for a reason that may pass makes the whole set unsettled, not invalid.
async fn build_triggers(
    so: &ScaledObject,
    shared: &Shared,
) -> Result<(TriggerFacts, LoopTriggers), TriggerError> {
    let source = ClusterObjects {
        client: shared.client.clone(),
        cluster_auth_namespace: shared.cluster_auth_namespace.clone(),
        kinds: shared.kinds.clone(),
    };
    let compiled = compile(&source, &so.namespace().unwrap_or_default(), so).await;
    if let Some(t) = compiled.iter().find_map(|c| c.transient()) {
        return Err(TriggerError::Transient(t.clone()));
    }
    let mut facts = TriggerFacts {
        inputs_digest: crate::compile::triggers::inputs_digest(&compiled),
        ..TriggerFacts::default()
    };
    let mut triggers = Vec::new();
    let mut problems = Vec::new();
    let mut used = Vec::new();
    for c in &compiled {
        match c.build(&shared.scalers) {
            Built::Scaler(parsed, scaler) => {
                used.push(c.index);
                facts.metrics.push(HpaMetric {
                    name: parsed.metric_name.clone(),
                    target: parsed.thresholds.target,
                    metric_type: c.metric_type,
                });
                facts.warnings.extend(c.warnings());
                triggers.push(LoopTrigger {
                    metric_name: parsed.metric_name.clone(),
                    scaler,
                    thresholds: parsed.thresholds,
                    metric_type: c.metric_type,
                    use_cached_metrics: c.use_cached_metrics,
                });
            }
            Built::Resource(metric) => facts.resources.push(metric.clone()),
            Built::Problem(problem) => problems.push(problem),
            Built::Skipped => {}
        }
    }
    facts.always_active = crate::compile::triggers::only_resource_triggers(&compiled);
    problems.extend(crate::compile::triggers::scale_from_zero_problem(
        so.spec.min_replica_count,
        &compiled,
    ));
    // With scalingModifiers the HPA reads one metric, the formula's result.
    let composite = match Composite::from_spec(&so.spec, &used) {
        Some(Ok(c)) => {
            facts.composite = Some(HpaMetric {
                name: COMPOSITE_METRIC_NAME.to_string(),
                target: c.target,
                metric_type: c.metric_type,
            });
            Some(c)
        }
        Some(Err(e)) => {
            problems.push(e.to_string());
            None
        }
        None => None,
    };
    if problems.is_empty() {
        Ok((facts, LoopTriggers { triggers, composite }))
    } else {
        Err(InvalidTriggers(problems).into())
    }
}

/// Before ebb applies onto an HPA it adopts, removes what ties it to another controller (KEDA's
/// ScaledObject among them: see [`conflicts::release_patch`]).
async fn release_adopted_hpa(
    shared: &Shared,
    ns: &str,
    so: &ScaledObject,
    step: &HpaStep,
) -> Result<(), Error> {
    let HpaStep::Apply { name, .. } = step else {
        return Ok(());
    };
    let Some(live) = shared.hpas.get(ns, name) else {
        return Ok(());
    };
    let Some(ops) = conflicts::release_patch(&live, &so.uid().unwrap_or_default()) else {
        return Ok(());
    };
    let patch = serde_json::from_value(ops)?;
    shared.leader.check()?;
    let api: Api<DynamicObject> = Api::namespaced_with(shared.client.clone(), ns, &shared.hpa.resource);
    let released = api
        .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| super::hpa_error(shared, e))?;
    // The apply that follows compares against the cache: keep it current.
    shared.hpas.index().apply(&released);
    Ok(())
}

/// Applies (server-side, forced) or deletes the HPA as planned.
async fn apply_hpa(shared: &Shared, ns: &str, step: HpaStep) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(shared.client.clone(), ns, &shared.hpa.resource);
    if !matches!(step, HpaStep::Leave) {
        shared.leader.check()?;
    }
    match step {
        HpaStep::Leave => Ok(()),
        HpaStep::Apply { name, desired } => {
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(|e| super::hpa_error(shared, e))?;
            Ok(())
        }
        HpaStep::Delete { name } => match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

/// What a loop runs on: the built triggers and, with scalingModifiers, the compiled composite.
#[derive(Default)]
struct LoopTriggers {
    triggers: Vec<LoopTrigger>,
    composite: Option<Composite>,
}

fn loop_config(so: &ScaledObject, key: ObjectKey, s: LoopSettings, t: LoopTriggers) -> LoopConfig {
    LoopConfig {
        key,
        uid: so.uid().unwrap_or_default(),
        created: creation_time(so),
        spec: ScalingSpec::from_spec(&so.spec),
        triggers: t.triggers,
        composite: t.composite,
        target: s.target,
        pause: s.pause,
        force_activation: s.force_activation,
        polling_interval: s.polling_interval,
        fingerprint: s.fingerprint,
    }
}

fn creation_time(so: &ScaledObject) -> Timestamp {
    so.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now)
}

/// Starts the object's loop or hands it the new config; true when the loop will poll (and write
/// the status) at once: a new loop without a start-up delay, or a changed config.
fn ensure_loop(shared: &Arc<Shared>, slot: &Arc<ObjectSlot>, so: &ScaledObject, cfg: LoopConfig) -> bool {
    let mut current = slot.scale_loop.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = current.as_ref()
        && !handle.is_finished()
    {
        return handle.update(cfg);
    }
    let memory = LoopMemory {
        last_active: initial_last_active(so),
        consecutive_failures: 0,
    };
    let immediate = first_delay(shared.started.elapsed(), &cfg).is_zero();
    *current = Some(LoopHandle::spawn(shared.clone(), cfg, memory));
    immediate
}

/// Where the cooldown starts after a restart or failover: the status' lastActiveTime, or now when
/// the object was active (conservative: a new leader never scales in early).
fn initial_last_active(so: &ScaledObject) -> Option<Timestamp> {
    let status = so.status.as_ref();
    if condition_status(status, conditions::ACTIVE) == Some("True") {
        return Some(Timestamp::now());
    }
    status
        .and_then(|s| s.last_active_time.as_deref())
        .and_then(|t| t.parse().ok())
}

/// Where the original replica count goes back to on deletion: the resolved target; nothing when
/// the target or its kind is gone (the restore is moot); an error, which keeps the finalizer and
/// retries, when the lookup failed for a reason that may pass.
fn restore_target(looked_up: Result<TargetRef, TargetError>) -> Result<Option<TargetRef>, TargetError> {
    match looked_up {
        Ok(target) => Ok(Some(target)),
        Err(TargetError::NotFound { .. } | TargetError::UnknownKind { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Undoes ebb's work for an object being deleted: stops its loop, deletes the HPA it owns,
/// restores the original replica count when asked to, and forgets the object.
pub async fn cleanup(so: Arc<ScaledObject>, shared: &Arc<Shared>) -> Result<Action, Error> {
    let key = key_of(&so);
    let slot = shared.slot_of(&key, &so.uid().unwrap_or_default());
    slot.stop_loop();
    let restore = so
        .spec
        .advanced
        .as_ref()
        .is_some_and(|a| a.restore_to_original_replica_count);
    let original = so.status.as_ref().and_then(|s| s.original_replica_count).or(*slot
        .original_replicas
        .lock()
        .unwrap_or_else(PoisonError::into_inner));
    for name in owned_hpas(&so, shared) {
        apply_hpa(shared, &key.0, HpaStep::Delete { name }).await?;
    }
    if restore && let Some(original) = original {
        let r = &so.spec.scale_target_ref;
        let looked_up = shared
            .targets
            .resolve(&key.0, r.api_version_or_default(), r.kind_or_default(), &r.name)
            .await;
        // A discovery blip is an error (the finalizer stays and the pass is retried), never a skip.
        if let Some(target) = restore_target(looked_up)? {
            let current = shared.targets.replicas(&target).await.ok();
            if let Some(n) = restore_on_delete(true, Some(original), current.unwrap_or(-1)) {
                shared.leader.check()?;
                match shared.targets.set_replicas(&target, n).await {
                    Ok(()) => {
                        shared.metrics.scale_action("restore");
                        shared
                            .event(
                                &so,
                                EventType::Normal,
                                crate::reasons::REPLICAS_RESTORED,
                                format!("restored {} to {n} replicas", r.name),
                            )
                            .await;
                    }
                    // Deleted meanwhile: nothing left to restore.
                    Err(TargetError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    shared.forget(&key);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::targets::discovery_error;
    use crate::scale::targets::tests::{api_error, no_answer};

    #[test]
    fn a_discovery_blip_at_delete_time_retries_the_restore_instead_of_skipping_it() {
        for blip in [api_error(503), api_error(429), no_answer()] {
            let looked_up = Err(discovery_error("apps/v1", "Deployment", blip));
            assert!(
                restore_target(looked_up).is_err(),
                "the finalizer must stay until the target is known"
            );
        }
        // Only a kind the cluster does not serve, or a target that is gone, skips the restore.
        let unserved = Err(discovery_error("x.io/v1", "Thing", api_error(404)));
        assert!(matches!(restore_target(unserved), Ok(None)));
        let gone = Err(TargetError::NotFound {
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "w".into(),
        });
        assert!(matches!(restore_target(gone), Ok(None)));
    }
}
