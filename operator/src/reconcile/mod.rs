//! The reconciler: one pass per ScaledObject change. It validates the object, detects conflicts,
//! keeps the owned HPA in sync (re-applying it only when it drifted), starts or updates the
//! object's scale loop, records the original replica count, and restores it on deletion.

pub mod hpa;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_crds::annotations::{self, flag};
use ebb_crds::conditions;
use ebb_crds::validation::validate_spec;
use ebb_crds::{ScaledObject, ScaledObjectStatus};
use ebb_scalers::ScalerFactory;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value as Json, json};

use crate::adapter::metric_cache::MetricCache;
use crate::cache::hpas::HpaCache;
use crate::cache::target_index::TargetIndex;
use crate::compile::cluster_objects::ClusterObjects;
use crate::compile::inputs::resolve as resolve_inputs;
use crate::infra::telemetry::OperatorMetrics;
use crate::reconcile::hpa::{HpaMetric, HpaVersion, desired_hpa, needs_apply, targets as hpa_targets};
use crate::scale::decision::{LoopMemory, PauseState, ScalingSpec};
use crate::scale::scale_loop::{LoopConfig, LoopHandle, LoopTrigger, first_delay};
use crate::scale::targets::{TargetError, TargetRef, Targets};
use crate::status::{LoopView, Readiness, ReconcileView, compose, condition_status};

/// Finalizer that lets ebb restore replicas and remove its HPA before a ScaledObject goes away.
pub const FINALIZER: &str = "ebb.dev/finalizer";
/// Field manager of every server-side apply ebb makes.
pub const FIELD_MANAGER: &str = "ebb-operator";

/// Errors of one reconcile pass (each has a metric label).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes call failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The scale target could not be read or written.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The object has no namespace (cannot happen for a namespaced kind).
    #[error("ScaledObject without namespace")]
    NoNamespace,
}

impl Error {
    /// Short label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Target(_) => "target",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// `namespace/name` of a ScaledObject.
pub type ObjectKey = (String, String);

/// Status bookkeeping of one ScaledObject: both writers' views and what was last written.
#[derive(Default)]
pub struct StatusBook {
    /// The reconciler's view.
    pub reconcile: Option<ReconcileView>,
    /// The scale loop's view.
    pub loop_view: Option<LoopView>,
    /// The status as last written (or as read from the object).
    pub written: Option<ScaledObjectStatus>,
}

/// Per-object runtime state.
#[derive(Default)]
pub struct ObjectSlot {
    /// Status bookkeeping; the lock also serialises status writes of one object.
    pub status: tokio::sync::Mutex<StatusBook>,
    /// The scale loop, when running.
    pub scale_loop: Mutex<Option<LoopHandle>>,
    /// Original replica count found when ebb first looked at the target.
    pub original_replicas: Mutex<Option<i32>>,
}

/// The HPA API the cluster serves.
#[derive(Clone)]
pub struct HpaApi {
    /// v2 or v2beta2.
    pub version: HpaVersion,
    /// Its API resource.
    pub resource: ApiResource,
}

/// State shared by the reconciler and every scale loop.
pub struct Shared {
    /// Kubernetes client (rate-limited).
    pub client: Client,
    /// Scale target access.
    pub targets: Targets,
    /// Builds scalers, sharing clients.
    pub scalers: ScalerFactory,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<OperatorMetrics>,
    /// HPA API.
    pub hpa: HpaApi,
    /// Every HPA in scope (what ebb reads of them), kept by a watch.
    pub hpas: Arc<HpaCache>,
    /// Every ScaledObject in scope, kept by the controller's watch.
    pub so_store: Store<ScaledObject>,
    /// ScaledObjects by the name of their scale target (fed by the same watch).
    pub so_targets: Arc<TargetIndex>,
    /// Runtime state per object.
    pub objects: Mutex<HashMap<ObjectKey, Arc<ObjectSlot>>>,
    /// Poll cache for the metrics adapter.
    pub cache: Arc<MetricCache>,
    /// When the operator started (first ticks are spread over the polling interval after a start).
    pub started: Instant,
    /// Namespace of ClusterTriggerAuthentication Secrets and ConfigMaps.
    pub cluster_auth_namespace: String,
}

impl Shared {
    /// The slot of an object, created on first use.
    pub fn slot(&self, key: &ObjectKey) -> Arc<ObjectSlot> {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The running scale loop's config of an object, if it has one.
    pub fn loop_config(&self, key: &ObjectKey) -> Option<Arc<crate::scale::scale_loop::LoopConfig>> {
        let slot = self
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()?;
        let handle = slot.scale_loop.lock().unwrap_or_else(PoisonError::into_inner);
        handle.as_ref().map(|h| h.config())
    }

    /// Drops everything kept about an object that is going away: its loop, cached metrics and slot.
    pub fn forget(&self, key: &ObjectKey) {
        let slot = self
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if let Some(slot) = slot {
            stop_loop(&slot);
        }
        self.cache.remove_object(&key.0, &key.1);
    }

    /// Whether the object is still in the watch cache (false once it was deleted).
    pub fn object_exists(&self, key: &ObjectKey) -> bool {
        self.so_store
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .is_some()
    }

    /// Publishes an Event about a ScaledObject; failures are logged, never fatal.
    pub async fn event(&self, so: &ScaledObject, type_: EventType, reason: &str, note: String) {
        self.event_for(&so.object_ref(&()), type_, reason, note).await;
    }

    /// Publishes an Event about an object reference; failures are logged, never fatal.
    pub async fn event_for(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::debug!(error = %e, "could not publish event");
        }
    }

    /// Composes the status of an object and writes it if it changed.
    pub async fn write_status(&self, key: &ObjectKey) -> Result<(), kube::Error> {
        let slot = self.slot(key);
        let mut book = slot.status.lock().await;
        let Some(reconcile) = book.reconcile.clone() else {
            return Ok(());
        };
        let next = compose(
            book.written.as_ref(),
            &reconcile,
            book.loop_view.as_ref(),
            Timestamp::now(),
        );
        if book.written.as_ref() == Some(&next) {
            return Ok(());
        }
        let prev = book
            .written
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or_default());
        let patch =
            json!({ "status": merge_patch(prev.as_ref(), &serde_json::to_value(&next).unwrap_or_default()) });
        let api: Api<ScaledObject> = Api::namespaced(self.client.clone(), &key.0);
        match api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                book.written = Some(next);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A JSON merge patch turning `prev` into `next`: keys that disappeared become `null`.
pub fn merge_patch(prev: Option<&Json>, next: &Json) -> Json {
    match (prev, next) {
        (Some(Json::Object(p)), Json::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, nv) in n {
                out.insert(k.clone(), merge_patch(p.get(k), nv));
            }
            for k in p.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Json::Null);
                }
            }
            Json::Object(out)
        }
        _ => next.clone(),
    }
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

/// Reconciles one ScaledObject.
pub async fn reconcile(so: Arc<ScaledObject>, shared: Arc<Shared>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = so.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ScaledObject> = Api::namespaced(shared.client.clone(), &ns);
    let result = reconcile_lifecycle(so, &shared, &api).await;
    shared
        .metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    shared.metrics.set_scaled_objects(shared.so_store.len() as i64);
    result
}

/// Whether ebb must act before the object goes away: only to restore the target's replica count.
/// The HPA needs no finalizer (its owner reference lets the garbage collector remove it), so
/// most objects carry none: they cost one write less to create, and deleting them never waits
/// for ebb (nor hangs when ebb is not running).
pub fn needs_finalizer(so: &ScaledObject) -> bool {
    so.spec
        .advanced
        .as_ref()
        .is_some_and(|a| a.restore_to_original_replica_count)
}

/// Deletion, the finalizer when [`needs_finalizer`] says so, then [`apply`].
async fn reconcile_lifecycle(
    so: Arc<ScaledObject>,
    shared: &Arc<Shared>,
    api: &Api<ScaledObject>,
) -> Result<Action, Error> {
    let has = so.finalizers().iter().any(|f| f == FINALIZER);
    if so.metadata.deletion_timestamp.is_some() {
        if has {
            cleanup(so.clone(), shared).await?;
            set_finalizer(api, &so, false).await?;
        } else {
            shared.forget(&key_of(&so));
        }
        return Ok(Action::await_change());
    }
    let needs = needs_finalizer(&so);
    if needs != has {
        set_finalizer(api, &so, needs).await?;
    }
    apply(so, shared).await
}

/// Adds or removes ebb's finalizer; the patch carries the object's resourceVersion, so it fails
/// (and the reconcile retries) instead of overwriting a finalizer list someone changed meanwhile.
async fn set_finalizer(api: &Api<ScaledObject>, so: &ScaledObject, present: bool) -> Result<(), Error> {
    let others = so.finalizers().iter().filter(|f| *f != FINALIZER).cloned();
    let next: Vec<String> = if present {
        others.chain([FINALIZER.to_string()]).collect()
    } else {
        others.collect()
    };
    let patch = json!({"metadata": {
        "finalizers": next,
        "resourceVersion": so.resource_version(),
    }});
    match api
        .patch(&so.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to hold back.
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What to do after a failed reconcile.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, _shared: Arc<Shared>) -> Action {
    tracing::warn!(scaled_object = %so.name_any(), namespace = ?so.namespace(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn key_of(so: &ScaledObject) -> ObjectKey {
    (so.namespace().unwrap_or_default(), so.name_any())
}

/// Why an object cannot be scaled, as the message of `Ready=False`.
enum Blocked {
    Invalid(String),
    Conflict(String),
}

async fn apply(so: Arc<ScaledObject>, shared: &Arc<Shared>) -> Result<Action, Error> {
    let key = key_of(&so);
    let slot = shared.slot(&key);
    {
        let mut book = slot.status.lock().await;
        if book.written.is_none() {
            book.written = so.status.clone();
        }
    }
    let pause = pause_state(&so);
    let hpa_name_default = so.hpa_name();
    let spec_target = &so.spec.scale_target_ref;

    // 1. Validation: the spec rules, then every trigger.
    let mut blocked = None;
    let problems = validate_spec(&so.spec);
    if !problems.is_empty() {
        let text = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        blocked = Some(Blocked::Invalid(text));
    }
    let mut triggers = Vec::new();
    let mut hpa_metrics = Vec::new();
    if blocked.is_none() {
        match build_triggers(&so, shared).await {
            Ok((t, m)) => {
                triggers = t;
                hpa_metrics = m;
            }
            Err(text) => blocked = Some(Blocked::Invalid(text)),
        }
    }
    if let Some(bad) = annotation_problem(&so) {
        blocked = Some(Blocked::Invalid(bad));
    }
    // 2. The target.
    let mut target = None;
    if blocked.is_none() {
        match shared
            .targets
            .resolve(
                &key.0,
                spec_target.api_version_or_default(),
                spec_target.kind_or_default(),
                &spec_target.name,
            )
            .await
        {
            Ok(t) => target = Some(t),
            Err(e) => blocked = Some(Blocked::Invalid(e.to_string())),
        }
    }
    // 3. Conflicts with other ScaledObjects and foreign HPAs.
    let mut hpa_name = hpa_name_default.clone();
    if let (None, Some(t)) = (&blocked, &target) {
        match conflicts(&so, t, shared) {
            Ok(adopted) => {
                if let Some(name) = adopted {
                    hpa_name = name;
                }
            }
            Err(text) => blocked = Some(Blocked::Conflict(text)),
        }
    }
    // 4. The original replica count, once.
    let mut original = so.status.as_ref().and_then(|s| s.original_replica_count);
    if let (None, Some(t)) = (&blocked, &target) {
        let mut remembered = slot
            .original_replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .or(original);
        if remembered.is_none() {
            match shared.targets.replicas(t).await {
                Ok(r) => remembered = Some(r),
                Err(e) => blocked = Some(Blocked::Invalid(e.to_string())),
            }
        }
        *slot
            .original_replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = remembered;
        original = remembered;
    }

    // 5. HPA and scale loop.
    let metric_names: Vec<String> = hpa_metrics.iter().map(|m: &HpaMetric| m.name.clone()).collect();
    let previously_blocked = condition_status(so.status.as_ref(), conditions::READY) == Some("False");
    let readiness = match &blocked {
        None => Readiness::Ok,
        Some(Blocked::Invalid(m)) => Readiness::Invalid(m.clone()),
        Some(Blocked::Conflict(m)) => Readiness::Conflict(m.clone()),
    };
    let hpa_in_use = blocked.is_none() && target.is_some() && !pause.is_paused();
    // The reconciler's view goes into the status book before a loop starts, so that the loop's
    // first poll writes the whole status at once (one write for a new object, not two).
    {
        let mut book = slot.status.lock().await;
        book.reconcile = Some(ReconcileView {
            readiness,
            paused: pause.is_paused(),
            paused_replicas: pause.paused_replicas,
            hpa_name: hpa_in_use.then(|| hpa_name.clone()),
            metric_names,
            original_replica_count: original,
            scale_target_kind: target.as_ref().map(TargetRef::kind_label),
            generation: so.metadata.generation,
            fallback_threshold: so
                .spec
                .fallback
                .as_ref()
                .map(|f| f.failure_threshold.max(1) as u32),
            warnings: config_warnings(&so),
        });
        if blocked.is_some() {
            book.loop_view = None;
        }
    }
    let mut loop_polls_now = false;
    match (&blocked, &target) {
        (None, Some(t)) => {
            let paused = pause.is_paused();
            if paused {
                // Paused: no HPA (it would keep scaling); the loop applies paused-replicas.
                delete_owned_hpa(shared, &so, &hpa_name).await?;
            } else {
                let desired = desired_hpa(&so, &hpa_name, &hpa_metrics, pause, shared.hpa.version);
                sync_hpa(shared, &key.0, &hpa_name, &desired).await?;
            }
            let cfg = LoopConfig {
                key: key.clone(),
                uid: so.uid().unwrap_or_default(),
                created: creation_time(&so),
                spec: ScalingSpec::from_spec(&so.spec),
                triggers,
                target: t.clone(),
                pause,
                force_activation: !paused
                    && flag(so.metadata.annotations.as_ref(), annotations::FORCE_ACTIVATION),
                polling_interval: Duration::from_secs(so.spec.polling_interval.max(1) as u64),
                fingerprint: fingerprint(&so),
            };
            loop_polls_now = ensure_loop(shared, &slot, &so, cfg);
        }
        _ => {
            stop_loop(&slot);
            delete_owned_hpa(shared, &so, &hpa_name).await?;
        }
    }

    // 6. Events on transitions.
    let was_paused = condition_status(so.status.as_ref(), conditions::PAUSED) == Some("True");
    if pause.is_paused() != was_paused {
        let (reason, note) = if pause.is_paused() {
            (
                "Paused",
                match pause.paused_replicas {
                    Some(n) => format!("paused at {n} replicas"),
                    None => "scaling paused".to_string(),
                },
            )
        } else {
            ("Unpaused", "scaling resumed".to_string())
        };
        shared.event(&so, EventType::Normal, reason, note).await;
    }
    match &blocked {
        Some(Blocked::Invalid(m)) if !previously_blocked => {
            shared
                .event(&so, EventType::Warning, "ScaledObjectCheckFailed", m.clone())
                .await
        }
        Some(Blocked::Conflict(m)) if !previously_blocked => {
            shared
                .event(&so, EventType::Warning, "TargetConflict", m.clone())
                .await
        }
        _ => {}
    }

    // 7. Status: written here unless the loop is about to poll and write it anyway.
    if !loop_polls_now {
        shared.write_status(&key).await?;
    }
    Ok(match blocked {
        // A conflict or a missing target may resolve without this object changing.
        Some(_) => Action::requeue(Duration::from_secs(15)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// Configuration that works but often surprises: shown in the Ready condition's message.
fn config_warnings(so: &ScaledObject) -> Vec<String> {
    let mut out = Vec::new();
    for (i, t) in so.spec.triggers.iter().enumerate() {
        if t.type_ != "rabbitmq" {
            continue;
        }
        let m = &t.metadata;
        let explicit = m.get("protocol").map(|p| p.to_ascii_lowercase());
        let host = m.get("host").map(|h| h.to_ascii_lowercase()).unwrap_or_default();
        let amqp = match explicit.as_deref() {
            Some("amqp") => true,
            Some("http") => false,
            _ => host.starts_with("amqp"),
        };
        let queue_length = m
            .get("mode")
            .is_none_or(|mode| mode.eq_ignore_ascii_case("QueueLength"));
        if amqp && queue_length {
            out.push(format!(
                "triggers[{i}]: {}",
                ebb_scalers::rabbitmq::amqp_hides_unacked_note()
            ));
        }
    }
    out
}

fn creation_time(so: &ScaledObject) -> Timestamp {
    so.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now)
}

/// A hash of everything that, when changed, must reach the scale loop (a hash, not the text: at
/// thousands of loops the text would be a good part of the operator's memory).
fn fingerprint(so: &ScaledObject) -> u64 {
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
    hasher.finish()
}

fn annotation_problem(so: &ScaledObject) -> Option<String> {
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

/// Resolves every trigger's inputs (the same code as `ebb validate`), parses it and builds its
/// scaler. Errors name the trigger index, type and parameter, never a secret value.
async fn build_triggers(
    so: &ScaledObject,
    shared: &Shared,
) -> Result<(Vec<LoopTrigger>, Vec<HpaMetric>), String> {
    let source = ClusterObjects {
        client: shared.client.clone(),
        cluster_auth_namespace: shared.cluster_auth_namespace.clone(),
    };
    let namespace = so.namespace().unwrap_or_default();
    let mut triggers = Vec::new();
    let mut metrics = Vec::new();
    let mut problems = Vec::new();
    for (index, trigger) in so.spec.triggers.iter().enumerate() {
        let inputs = resolve_inputs(&source, &namespace, &so.spec.scale_target_ref, trigger).await;
        if !inputs.errors.is_empty() {
            problems.push(format!(
                "spec.triggers[{index}] ({}): {}",
                trigger.type_,
                inputs.errors.join("; ")
            ));
            continue;
        }
        let parsed = ebb_scalers::parse_trigger(
            index,
            &trigger.type_,
            &trigger.metadata,
            inputs.auth_params.as_ref(),
            inputs.env.as_ref(),
        );
        let mut parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                problems.push(inputs.scrub(&format!("spec.{e}")));
                continue;
            }
        };
        for name in inputs.sensitive_params(trigger) {
            parsed.params.mark_secret(&name);
        }
        match shared.scalers.build(&parsed) {
            Ok(scaler) => {
                metrics.push(HpaMetric {
                    name: parsed.metric_name.clone(),
                    target: parsed.thresholds.target,
                    metric_type: trigger.metric_type,
                });
                triggers.push(LoopTrigger {
                    metric_name: parsed.metric_name.clone(),
                    scaler,
                    thresholds: parsed.thresholds,
                    use_cached_metrics: trigger.use_cached_metrics,
                });
            }
            Err(e) => {
                problems.push(inputs.scrub(&format!("spec.triggers[{index}] ({}): {e}", trigger.type_)))
            }
        }
    }
    if problems.is_empty() {
        Ok((triggers, metrics))
    } else {
        Err(problems.join("; "))
    }
}

/// Another ScaledObject (older, or same age and smaller name) or a foreign HPA already scales the
/// target. Returns the name of an HPA to adopt when `transfer-hpa-ownership` allows it.
fn conflicts(so: &ScaledObject, target: &TargetRef, shared: &Shared) -> Result<Option<String>, String> {
    let me = (so.metadata.creation_timestamp.clone(), so.name_any());
    let candidates = shared
        .so_targets
        .candidates(&target.namespace, &target.name)
        .into_iter()
        .filter_map(|name| {
            shared
                .so_store
                .get(&ObjectRef::new(&name).within(&target.namespace))
        });
    for other in candidates {
        if other.uid() == so.uid()
            || other.namespace() != so.namespace()
            || other.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let r = &other.spec.scale_target_ref;
        let same = r.name == target.name
            && r.kind_or_default() == target.kind
            && group(r.api_version_or_default()) == group(&target.api_version);
        if same && (other.metadata.creation_timestamp.clone(), other.name_any()) < me {
            return Err(format!(
                "{} {}/{} is already scaled by ScaledObject {}",
                target.kind,
                target.namespace,
                target.name,
                other.name_any()
            ));
        }
    }
    let my_uid = so.uid().unwrap_or_default();
    for hpa in shared.hpas.targeting(&target.namespace, &target.name) {
        if !hpa_targets(&hpa.drift_view(), &target.api_version, &target.kind, &target.name) {
            continue;
        }
        let ours = hpa.owner_references.iter().any(|o| o.uid == my_uid);
        if ours {
            // An HPA adopted through transfer-hpa-ownership keeps its own name.
            let adopted = hpa.name.clone() != so.hpa_name()
                && flag(
                    so.metadata.annotations.as_ref(),
                    annotations::TRANSFER_HPA_OWNERSHIP,
                );
            return Ok(adopted.then(|| hpa.name.clone()));
        }
        let owned_by_other_so = hpa.owner_references.iter().any(|o| o.kind == "ScaledObject");
        if owned_by_other_so {
            continue; // the ScaledObject check above names it
        }
        if flag(
            so.metadata.annotations.as_ref(),
            annotations::TRANSFER_HPA_OWNERSHIP,
        ) {
            return Ok(Some(hpa.name.clone()));
        }
        return Err(format!(
            "{} {}/{} is already scaled by HorizontalPodAutoscaler {}; set annotation {}: \"true\" to adopt it",
            target.kind,
            target.namespace,
            target.name,
            hpa.name.clone(),
            annotations::TRANSFER_HPA_OWNERSHIP
        ));
    }
    Ok(None)
}

fn group(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

async fn sync_hpa(shared: &Shared, ns: &str, name: &str, desired: &Json) -> Result<(), Error> {
    let live = shared.hpas.get(ns, name).map(|h| h.drift_view());
    if !needs_apply(desired, live.as_ref()) {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(shared.client.clone(), ns, &shared.hpa.resource);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(())
}

async fn delete_owned_hpa(shared: &Shared, so: &ScaledObject, name: &str) -> Result<(), Error> {
    let ns = so.namespace().unwrap_or_default();
    let uid = so.uid().unwrap_or_default();
    let owned = shared
        .hpas
        .get(&ns, name)
        .is_some_and(|h| h.owner_references.iter().any(|o| o.uid == uid));
    if !owned {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(shared.client.clone(), &ns, &shared.hpa.resource);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
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

fn stop_loop(slot: &ObjectSlot) {
    if let Some(handle) = slot
        .scale_loop
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        handle.stop();
    }
}

async fn cleanup(so: Arc<ScaledObject>, shared: &Arc<Shared>) -> Result<Action, Error> {
    let key = key_of(&so);
    let slot = shared.slot(&key);
    stop_loop(&slot);
    let restore = so
        .spec
        .advanced
        .as_ref()
        .is_some_and(|a| a.restore_to_original_replica_count);
    let original = so.status.as_ref().and_then(|s| s.original_replica_count).or(*slot
        .original_replicas
        .lock()
        .unwrap_or_else(PoisonError::into_inner));
    let hpa_name = so
        .status
        .as_ref()
        .and_then(|s| s.hpa_name.clone())
        .unwrap_or_else(|| so.hpa_name());
    delete_owned_hpa(shared, &so, &hpa_name).await?;
    if restore && let Some(original) = original {
        let r = &so.spec.scale_target_ref;
        match shared
            .targets
            .resolve(&key.0, r.api_version_or_default(), r.kind_or_default(), &r.name)
            .await
        {
            Ok(target) => {
                let current = shared.targets.replicas(&target).await.ok();
                if let Some(n) =
                    crate::scale::decision::restore_on_delete(true, Some(original), current.unwrap_or(-1))
                {
                    shared.targets.set_replicas(&target, n).await?;
                    shared.metrics.scale_action("restore");
                    shared
                        .event(
                            &so,
                            EventType::Normal,
                            "ReplicasRestored",
                            format!("restored {} to {n} replicas", r.name),
                        )
                        .await;
                }
            }
            Err(TargetError::NotFound { .. } | TargetError::UnknownKind { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    shared.forget(&key);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_nulls_removed_keys() {
        let prev = json!({"hpaName": "h", "health": {"a": {"status": "Happy"}, "b": 1}, "conditions": [1]});
        let next = json!({"health": {"a": {"status": "Failing"}}, "conditions": [2]});
        assert_eq!(
            merge_patch(Some(&prev), &next),
            json!({"hpaName": null, "health": {"a": {"status": "Failing"}, "b": null}, "conditions": [2]})
        );
        assert_eq!(merge_patch(None, &next), next);
    }

    #[test]
    fn amqp_queue_length_is_warned_about() {
        let so = |metadata: serde_json::Value| -> ScaledObject {
            serde_json::from_value(json!({
                "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
                "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"type": "rabbitmq", "metadata": metadata}]}
            }))
            .unwrap()
        };
        assert_eq!(
            config_warnings(&so(json!({"host": "amqp://h/", "queueName": "q"}))).len(),
            1
        );
        assert!(config_warnings(&so(json!({"host": "http://h/", "queueName": "q"}))).is_empty());
        assert!(
            config_warnings(&so(
                json!({"host": "amqp://h/", "protocol": "http", "queueName": "q"})
            ))
            .is_empty()
        );
        assert_eq!(
            config_warnings(&so(
                json!({"hostFromEnv": "X", "protocol": "amqp", "queueName": "q"})
            ))
            .len(),
            1
        );
    }

    #[test]
    fn pause_annotations_are_read() {
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "x", "annotations": {
                "autoscaling.ebb.dev/paused-replicas": " 3 ", "autoscaling.ebb.dev/paused-scale-in": "true"}},
            "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"type": "t", "metadata": {}}]}
        }))
        .unwrap();
        let p = pause_state(&so);
        assert_eq!(p.paused_replicas, Some(3));
        assert!(p.scale_in_paused && !p.scale_out_paused && !p.paused);
        assert!(annotation_problem(&so).is_none());
    }
}
