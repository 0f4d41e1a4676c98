//! State shared by the reconciler, every scale loop and the metrics adapter's provider: the
//! Kubernetes client and caches, the per-object slots (status bookkeeping, the running scale loop,
//! the original replica count), Events, and writing an object's status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use ebb_crds::ScaledObject;
use ebb_scalers::ScalerFactory;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};

use crate::adapter::metric_cache::MetricCache;
use crate::cache::hpas::HpaCache;
use crate::cache::kinds::KindCache;
use crate::cache::target_index::TargetIndex;
use crate::infra::hpa_discovery::HpaRecheck;
use crate::infra::leadership::LeaderGuard;
use crate::infra::telemetry::OperatorMetrics;
use crate::reconcile::RequeueBackoff;
use crate::reconcile::hpa::HpaVersion;
use crate::scale::scale_loop::{LoopConfig, LoopHandle};
use crate::scale::targets::Targets;
use crate::status::writer::{self, StatusBook};

/// `namespace/name` of a ScaledObject.
pub type ObjectKey = (String, String);

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
        use futures::FutureExt as _;
        matches!(self.so_store.wait_until_ready().now_or_never(), Some(Ok(())))
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

    /// Composes the status of an object and writes it if it changed (see [`writer::write`]).
    pub async fn write_status(&self, key: &ObjectKey) -> Result<(), writer::WriteError> {
        let slot = self.slot(key);
        let mut book = slot.status.lock().await;
        writer::write(&self.client, &self.leader, &key.0, &key.1, &mut book).await
    }
}
