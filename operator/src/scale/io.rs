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
use crate::infra::leadership::NotLeading;
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
    /// A source refused a trigger's credentials: read them again (rate-limited per object).
    fn credentials_refused(&self, _key: &ObjectKey) {}
}

/// The leader's targets: reads as [`Targets`], and every write first checks that this replica
/// still leads (a refusal is the write's error, with [`NotLeading`] as its source).
#[async_trait]
impl TargetReplicas for Shared {
    async fn replicas(&self, target: &TargetRef) -> Result<i32, TargetError> {
        self.targets.replicas(target).await
    }
    async fn set_replicas(&self, target: &TargetRef, replicas: i32) -> Result<(), TargetError> {
        self.leader.check().map_err(|e| not_leading(target, e))?;
        self.targets.set_replicas(target, replicas).await
    }
}

fn not_leading(target: &TargetRef, e: NotLeading) -> TargetError {
    TargetError::Api {
        kind: target.kind.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        source: std::sync::Arc::new(kube::Error::Service(Box::new(e))),
    }
}

#[async_trait]
impl LoopHost for Shared {
    type Targets = Shared;
    fn targets(&self) -> &Shared {
        self
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
    fn credentials_refused(&self, key: &ObjectKey) {
        self.reresolve.scaled_objects.refused(key);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ebb_scalers::{FactoryOptions, ScalerFactory};
    use kube::runtime::events::{Recorder, Reporter};

    use super::*;
    use crate::adapter::metric_cache::MetricCache;
    use crate::cache::hpas::HpaCache;
    use crate::cache::kinds::KindCache;
    use crate::cache::target_index::TargetIndex;
    use crate::infra::hpa_discovery::{HpaRecheck, hpa_api};
    use crate::infra::leadership::{LeaderGuard, LeaseTiming};
    use crate::reconcile::RequeueBackoff;
    use crate::reconcile::hpa::HpaVersion;

    /// The operator's shared state over a fake API server that answers every PATCH (counted) with
    /// a Scale and leaves every other request pending (the workload watches).
    fn shared(leader: LeaderGuard) -> (Shared, Arc<AtomicUsize>) {
        let patches = Arc::new(AtomicUsize::new(0));
        let seen = patches.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let patch = req.method() == http::Method::PATCH;
            if patch {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                if !patch {
                    std::future::pending::<()>().await;
                }
                let body = br#"{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"web","namespace":"ns"},"spec":{"replicas":1}}"#;
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(body.to_vec()))
                        .expect("response"),
                )
            }
        });
        let client = kube::Client::new(service, "default");
        let (targets, _watches) = Targets::start(client.clone(), None, None);
        let version = HpaVersion::V2;
        let shared = Shared {
            client: client.clone(),
            targets,
            scalers: ScalerFactory::new(FactoryOptions {
                http_timeout: Duration::from_secs(1),
            }),
            recorder: Recorder::new(client, Reporter::from("test")),
            metrics: Arc::new(OperatorMetrics::new()),
            hpa: hpa_api(version),
            hpas: Arc::new(HpaCache::default()),
            so_store: kube::runtime::reflector::store().0,
            so_listed: crate::cache::listed::Listed::default(),
            auth_refs: Default::default(),
            reresolve: Arc::new(crate::reconcile::credentials::Requesters {
                scaled_objects: Arc::new(crate::reconcile::credentials::Reresolve::channel().0),
                scaled_jobs: Arc::new(crate::reconcile::credentials::Reresolve::channel().0),
            }),
            so_targets: Arc::new(TargetIndex::default()),
            objects: Mutex::new(HashMap::new()),
            cache: Arc::new(MetricCache::default()),
            started: std::time::Instant::now(),
            cluster_auth_namespace: "ebb".into(),
            leader,
            hpa_recheck: Arc::new(HpaRecheck::new(version)),
            requeue: RequeueBackoff::default(),
            kinds: Arc::new(KindCache::default()),
        };
        (shared, patches)
    }

    fn web() -> TargetRef {
        TargetRef {
            namespace: "ns".into(),
            name: "web".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        }
    }

    fn timing() -> LeaseTiming {
        LeaseTiming::from_secs(15).expect("valid")
    }

    #[tokio::test(start_paused = true)]
    async fn scale_is_written_only_within_the_renew_deadline() {
        let (host, patches) = shared(LeaderGuard::renewed_now(timing()));
        host.targets()
            .set_replicas(&web(), 1)
            .await
            .expect("leading: written");
        assert_eq!(patches.load(Ordering::SeqCst), 1);
        // No renewal for the renew deadline (10 s of a 15 s Lease): nothing reaches the API.
        tokio::time::advance(Duration::from_secs(10)).await;
        let refused = host.targets().set_replicas(&web(), 0).await.expect_err("refused");
        assert!(refused.to_string().contains("not the leader"), "{refused}");
        assert_eq!(patches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_never_renewed_writes_neither_scale_nor_status() {
        let (host, patches) = shared(LeaderGuard::new(timing()));
        assert!(host.targets().set_replicas(&web(), 1).await.is_err());
        let key = ("ns".to_string(), "so".to_string());
        host.slot(&key).status.lock().await.reconcile = Some(crate::status::ReconcileView {
            readiness: crate::status::Readiness::Ok,
            paused: false,
            paused_replicas: None,
            hpa_name: None,
            metric_names: Vec::new(),
            composite_metric: None,
            original_replica_count: None,
            scale_target_kind: None,
            generation: None,
            fallback_threshold: None,
            warnings: Vec::new(),
            triggers_types: None,
            authentications_types: None,
        });
        let refused = host.write_status(&key).await.expect_err("refused");
        assert!(matches!(
            refused,
            crate::status::writer::WriteError::NotLeading(_)
        ));
        assert_eq!(patches.load(Ordering::SeqCst), 0);
        // Nor Events: the fake leaves every POST pending, so an Event sent would never return.
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("ScaledObject".into()),
            namespace: Some("ns".into()),
            name: Some("so".into()),
            ..Default::default()
        };
        let event = host.event_for(
            &reference,
            kube::runtime::events::EventType::Normal,
            "ScaledUp",
            "note".into(),
        );
        tokio::time::timeout(Duration::from_secs(30), event)
            .await
            .expect("no Event is sent by a replica that does not lead");
    }
}
