//! The scale loop's I/O seams, so that one tick runs as well against fakes as against a cluster.
//! Sampling a trigger is already one (`Arc<dyn ebb_scalers::Scaler>`); besides it
//! [`TargetReplicas`] reads and writes the target's replica count, and [`LoopHost`] is everything
//! else a loop touches: the decisions' clock, whether its object still exists, the poll cache,
//! Events, the status and telemetry. In production both are the operator's [`Shared`] state
//! ([`Targets`] for the replicas), doing what the loop did before the seams existed.

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use crate::adapter::metric_cache::{CachedMetric, MetricKey};
use crate::context::{ObjectKey, Shared};
use crate::infra::telemetry::OperatorMetrics;
use crate::scale::outcome::{EventKind, EventNote};
use crate::scale::targets::{TargetError, TargetRef, Targets};
use crate::status::LoopView;

/// Reads and writes a scale target's replica count.
#[async_trait]
pub trait TargetReplicas: Send + Sync {
    /// The target's replica count (`spec.replicas`).
    async fn replicas(&self, target: &TargetRef) -> Result<i32, TargetError>;
    /// Writes the target's replica count (through `/scale`).
    async fn set_replicas(&self, target: &TargetRef, replicas: i32) -> Result<(), TargetError>;
}

#[async_trait]
impl TargetReplicas for Targets {
    async fn replicas(&self, target: &TargetRef) -> Result<i32, TargetError> {
        Targets::replicas(self, target).await
    }
    async fn set_replicas(&self, target: &TargetRef, replicas: i32) -> Result<(), TargetError> {
        Targets::set_replicas(self, target, replicas).await
    }
}

/// Everything a scale loop touches besides its scalers and its target.
#[async_trait]
pub trait LoopHost: Send + Sync + 'static {
    /// How the target's replicas are read and written.
    type Targets: TargetReplicas;
    /// The target accessor.
    fn targets(&self) -> &Self::Targets;
    /// Now, for the decisions (cooldowns, `lastActiveTime`).
    fn now(&self) -> Timestamp;
    /// Whether the ScaledObject still exists (its loop ends itself when not).
    fn object_exists(&self, key: &ObjectKey) -> bool;
    /// Drops everything kept about an object that is gone.
    fn forget(&self, key: &ObjectKey);
    /// Stores a value the metrics adapter serves.
    fn put_metric(&self, key: MetricKey, metric: CachedMetric);
    /// Records an Event about the ScaledObject; failures are logged, never fatal.
    async fn record_event(&self, reference: &ObjectReference, event: &EventNote);
    /// Hands the loop's view to the status and writes the status if it changed; failures are
    /// logged, never fatal.
    async fn report_status(&self, key: &ObjectKey, view: LoopView);
    /// Prometheus metrics.
    fn telemetry(&self) -> &OperatorMetrics;
}

#[async_trait]
impl LoopHost for Shared {
    type Targets = Targets;
    fn targets(&self) -> &Targets {
        &self.targets
    }
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn object_exists(&self, key: &ObjectKey) -> bool {
        Shared::object_exists(self, key)
    }
    fn forget(&self, key: &ObjectKey) {
        Shared::forget(self, key)
    }
    fn put_metric(&self, key: MetricKey, metric: CachedMetric) {
        self.cache.put(key, metric);
    }
    async fn record_event(&self, reference: &ObjectReference, event: &EventNote) {
        let type_ = match event.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        };
        self.event_for(reference, type_, event.reason, event.note.clone())
            .await;
    }
    async fn report_status(&self, key: &ObjectKey, view: LoopView) {
        let slot = self.slot(key);
        slot.status.lock().await.loop_view = Some(view);
        if let Err(e) = self.write_status(key).await {
            tracing::warn!(scaled_object = %key.1, namespace = %key.0, error = %e, "cannot write status");
        }
    }
    fn telemetry(&self) -> &OperatorMetrics {
        &self.metrics
    }
}
