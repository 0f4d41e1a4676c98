//! State shared by the reconciler, every scale loop and the metrics adapter's provider: the
//! Kubernetes client and caches, the per-object slots (status bookkeeping, the running scale loop,
//! the original replica count), Events, and writing an object's status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_scalers::ScalerFactory;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};

use crate::adapter::metric_cache::MetricCache;
use crate::cache::auth_refs::AuthRefs;
use crate::cache::hpas::HpaCache;
use crate::cache::kinds::KindCache;
use crate::cache::listed::Listed;
use crate::cache::target_index::TargetIndex;
use crate::infra::hpa_discovery::HpaRecheck;
use crate::infra::leadership::LeaderGuard;
use crate::infra::telemetry::OperatorMetrics;
use crate::reconcile::RequeueBackoff;
use crate::reconcile::credentials::Requesters;
use crate::reconcile::hpa::HpaVersion;
use crate::scale::scale_loop::{LoopConfig, LoopHandle};
use crate::scale::targets::Targets;
use crate::status::writer::{self, StatusBook};

/// `namespace/name` of a ScaledObject.
pub type ObjectKey = (String, String);

/// Per-object runtime state, of one incarnation of the object (its UID): a ScaledObject deleted
/// and created again under the same name starts from a fresh slot.
#[derive(Default)]
pub struct ObjectSlot {
    /// The object's UID (empty: created by a status write before the reconciler saw the object).
    pub uid: String,
    /// Status bookkeeping; the lock also serialises status writes of one object.
    pub status: tokio::sync::Mutex<StatusBook>,
    /// The scale loop, when running.
    pub scale_loop: Mutex<Option<LoopHandle>>,
    /// Original replica count found when ebb first looked at the target.
    pub original_replicas: Mutex<Option<i32>>,
}

impl ObjectSlot {
    /// Stops the object's scale loop, if one runs.
    pub fn stop_loop(&self) {
        if let Some(handle) = self
            .scale_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            handle.stop();
        }
    }
}

/// Every object's slot, by `namespace/name`.
pub type Slots = Mutex<HashMap<ObjectKey, Arc<ObjectSlot>>>;

/// The slot of `key` for the object with `uid`, and the slot it replaced: one of another
/// incarnation (another UID), which must not lend the new object its original replica count,
/// its written status or its loop.
pub fn slot_for(slots: &Slots, key: &ObjectKey, uid: &str) -> (Arc<ObjectSlot>, Option<Arc<ObjectSlot>>) {
    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    match slots.get(key) {
        Some(slot) if slot.uid == uid => (slot.clone(), None),
        _ => {
            let fresh = Arc::new(ObjectSlot {
                uid: uid.to_string(),
                ..ObjectSlot::default()
            });
            (fresh.clone(), slots.insert(key.clone(), fresh))
        }
    }
}

/// Takes out the slots of objects that are gone, or whose object is another incarnation now.
/// `live` gives the UID of the object a key names, if it exists.
pub fn take_stale(
    slots: &Slots,
    live: impl Fn(&ObjectKey) -> Option<String>,
) -> Vec<(ObjectKey, Arc<ObjectSlot>)> {
    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    let stale: Vec<ObjectKey> = slots
        .iter()
        .filter(|(key, slot)| match live(key) {
            None => true,
            Some(uid) => !slot.uid.is_empty() && slot.uid != uid,
        })
        .map(|(key, _)| key.clone())
        .collect();
    stale
        .into_iter()
        .filter_map(|key| slots.remove(&key).map(|slot| (key, slot)))
        .collect()
}

/// How often the slots of objects that went away unseen are swept.
pub const SLOT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Sweeps stale slots every `every` ([`Shared::sweep_slots`]) until `shared` is dropped.
pub fn spawn_slot_sweeper(shared: &Arc<Shared>, every: Duration) -> tokio::task::JoinHandle<()> {
    let shared: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(shared) = shared.upgrade() else { return };
            shared.sweep_slots();
        }
    })
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
    /// Whether the controller's watch has listed every ScaledObject (read this, never the
    /// store's own readiness future: see [`Listed`]).
    pub so_listed: Listed,
    /// Which objects use which authentications (fed by the ScaledObject and ScaledJob watches).
    pub auth_refs: Arc<AuthRefs>,
    /// Asks for ScaledObject and ScaledJob reconciles when credentials must be read again.
    pub reresolve: Arc<Requesters>,
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
    /// Whether this replica leads now; every write checks it first.
    pub leader: LeaderGuard,
    /// Re-discovery of the HPA API after a 404 from it.
    pub hpa_recheck: Arc<HpaRecheck>,
    /// Reconcile failures per object, for the requeue backoff.
    pub requeue: RequeueBackoff,
    /// Discovery answers per kind (pod templates of `<param>FromEnv`).
    pub kinds: Arc<KindCache>,
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

    /// The slot of the object `key` with `uid`; a slot of an earlier object of the same name is
    /// dropped (its loop stopped, its cached metrics forgotten).
    pub fn slot_of(&self, key: &ObjectKey, uid: &str) -> Arc<ObjectSlot> {
        let (slot, replaced) = slot_for(&self.objects, key, uid);
        if let Some(old) = replaced {
            old.stop_loop();
            if !old.uid.is_empty() {
                self.cache.remove_object(&key.0, &key.1);
            }
        }
        slot
    }

    /// Drops the slots (loops, cached metrics) of objects that are gone or were re-created:
    /// objects without a finalizer go away without a last reconcile, and invalid or conflicting
    /// ones have no loop to notice. Does nothing until the watch has listed every object.
    pub fn sweep_slots(&self) {
        if !self.objects_listed() {
            return;
        }
        let stale = take_stale(&self.objects, |key| {
            self.so_store
                .get(&ObjectRef::new(&key.1).within(&key.0))
                .map(|so| so.metadata.uid.clone().unwrap_or_default())
        });
        for (key, slot) in stale {
            slot.stop_loop();
            self.cache.remove_object(&key.0, &key.1);
        }
    }

    /// The running scale loop's config of an object, if it has one.
    pub fn loop_config(&self, key: &ObjectKey) -> Option<Arc<LoopConfig>> {
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
            slot.stop_loop();
        }
        self.cache.remove_object(&key.0, &key.1);
    }

    /// Whether the object is still in the watch cache (false once it was deleted).
    pub fn object_exists(&self, key: &ObjectKey) -> bool {
        self.so_store
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .is_some()
    }

    /// Whether the watch of ScaledObjects has delivered its first complete list.
    pub fn objects_listed(&self) -> bool {
        self.so_listed.is_listed()
    }

    /// Publishes an Event about a ScaledObject; failures are logged, never fatal.
    pub async fn event(&self, so: &ScaledObject, type_: EventType, reason: &str, note: String) {
        self.event_for(&so.object_ref(&()), type_, reason, note).await;
    }

    /// Publishes an Event about an object reference; failures are logged, never fatal. A
    /// replica that no longer leads says nothing (its view may be stale).
    pub async fn event_for(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        if let Err(e) = self.leader.check() {
            tracing::debug!(error = %e, reason, "not publishing an event: not leading");
            return;
        }
        // kube's Recorder folds Events with the same object, reason and action into one series
        // and keeps the first note; the note's digest in the action makes a changed note a new
        // Event (a problem fixed and the next one found must not show the old message).
        let action = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            note.hash(&mut h);
            format!("{reason}-{:08x}", h.finish() as u32)
        };
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action,
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::debug!(error = %e, "could not publish event");
        }
    }

    /// Composes the status of an object and writes it if it changed (see [`writer::write`]).
    pub async fn write_status(&self, key: &ObjectKey) -> Result<(), writer::WriteError> {
        let slot = self.slot(key);
        let mut book = slot.status.lock().await;
        writer::write(&self.client, &self.leader, &key.0, &key.1, &mut book).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("ns".into(), name.into())
    }

    #[test]
    fn a_recreated_object_gets_a_fresh_slot() {
        let slots = Slots::default();
        let (first, replaced) = slot_for(&slots, &key("a"), "uid-1");
        assert!(replaced.is_none());
        *first.original_replicas.lock().unwrap() = Some(7);
        let (again, replaced) = slot_for(&slots, &key("a"), "uid-1");
        assert!(Arc::ptr_eq(&first, &again) && replaced.is_none());
        // Deleted and created again under the same name: nothing of the old one carries over.
        let (second, replaced) = slot_for(&slots, &key("a"), "uid-2");
        assert!(replaced.is_some_and(|old| Arc::ptr_eq(&old, &first)));
        assert_eq!(*second.original_replicas.lock().unwrap(), None);
        assert_eq!(second.uid, "uid-2");
        // A slot a status write created before the reconciler saw the object is not trusted.
        slots.lock().unwrap().insert(key("b"), Arc::default());
        let (b, replaced) = slot_for(&slots, &key("b"), "uid-b");
        assert!(replaced.is_some());
        assert_eq!(b.uid, "uid-b");
    }

    #[test]
    fn slots_of_objects_that_are_gone_or_recreated_are_swept() {
        let slots = Slots::default();
        for (name, uid) in [("live", "u-live"), ("gone", "u-gone"), ("recreated", "u-old")] {
            slot_for(&slots, &key(name), uid);
        }
        slots.lock().unwrap().insert(key("unknown-uid"), Arc::default());
        let live = |k: &ObjectKey| match k.1.as_str() {
            "live" => Some("u-live".to_string()),
            "recreated" => Some("u-new".to_string()),
            "unknown-uid" => Some("u-x".to_string()),
            _ => None,
        };
        let mut stale: Vec<String> = take_stale(&slots, live).into_iter().map(|(k, _)| k.1).collect();
        stale.sort();
        assert_eq!(stale, ["gone", "recreated"]);
        let mut left: Vec<String> = slots.lock().unwrap().keys().map(|k| k.1.clone()).collect();
        left.sort();
        assert_eq!(left, ["live", "unknown-uid"]);
        assert!(
            take_stale(&slots, live).is_empty(),
            "a second sweep finds nothing"
        );
    }
}
