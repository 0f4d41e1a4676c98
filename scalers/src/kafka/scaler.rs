//! One kafka trigger ([`KafkaScaler`]): its settings, its registration with its cluster client,
//! and its samples, computed from the client's latest snapshot with the pure rules of
//! [`super::lag`] (see the folder's front page, [`crate::kafka`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cluster::{Cluster, TriggerRegistration};
use super::config::{KafkaConfig, TriggerSpec};
use super::lag::LagSummary;
use super::pool::KafkaClusters;
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// One poll's detail: the lag, the replica count it asks for, the value reported and activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KafkaSample {
    /// Lag over the trigger's partitions.
    pub lag: LagSummary,
    /// [`super::lag::desired_replicas`].
    pub desired_replicas: u64,
    /// [`super::lag::hpa_metric_value`]: the metric value reported.
    pub value: f64,
    /// Lag (persistent included) above `activationLagThreshold`.
    pub active: bool,
    /// Age of the snapshot the sample was computed from.
    pub snapshot_age: Duration,
}

/// What `excludePersistentLag` remembers between polls.
#[derive(Default)]
struct Persistence {
    /// The snapshot the latest poll read.
    snapshot_taken: Option<Instant>,
    /// Committed offsets seen by the poll before that snapshot (what "unchanged" compares with).
    compare_to: HashMap<(String, i32), i64>,
    /// Committed offsets seen by the latest poll.
    latest: HashMap<(String, i32), i64>,
}

/// One kafka trigger: reads its lag from its cluster client's snapshot.
pub struct KafkaScaler {
    cluster: Arc<Cluster>,
    /// The trigger's place in its cluster's watcher (unregisters on drop) and its activity.
    registration: TriggerRegistration,
    spec: Arc<TriggerSpec>,
    target: f64,
    persistence: Mutex<Persistence>,
}

impl KafkaScaler {
    /// Builds the scaler from the trigger's typed configuration and registers it with its
    /// cluster client in `clusters` (created on first use; fails only when its TLS settings
    /// cannot be used). Needs no async runtime.
    pub fn new(clusters: KafkaClusters, config: KafkaConfig) -> Result<Self, ScalerError> {
        let KafkaConfig { cluster, trigger } = config;
        // The HPA target: the same value the declaration's thresholds report.
        let target = trigger.lag_threshold as f64;
        let spec = Arc::new(trigger);
        let cluster = clusters.cluster(&cluster)?;
        let registration = cluster.register(spec.clone());
        Ok(KafkaScaler {
            cluster,
            registration,
            spec,
            target,
            persistence: Mutex::new(Persistence::default()),
        })
    }

    /// The trigger's settings.
    pub fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    /// Polls with the detail (lag, desired replicas, value, activity).
    pub async fn sample_detailed(&self) -> Result<KafkaSample, ScalerError> {
        let cluster = &self.cluster;
        cluster.ensure_watching();
        let bound = cluster.sample_timeout();
        tokio::time::timeout(bound, cluster.fresh_snapshot(self.registration.generation()))
            .await
            .map_err(|_| ScalerError::timeout(&cluster.endpoint, bound))?;
        let snap = cluster
            .current(Some(&self.registration))
            .ok_or_else(|| ScalerError::bad_response(&cluster.endpoint, "no snapshot"))?;
        let offsets = super::cluster::snapshot::offsets_for(&self.spec, &snap, &cluster.endpoint)?;
        let policy = self.spec.lag_policy;
        let mut memory = self.persistence.lock().unwrap_or_else(|p| p.into_inner());
        if memory.snapshot_taken != Some(snap.taken) {
            memory.compare_to = std::mem::take(&mut memory.latest);
            memory.snapshot_taken = Some(snap.taken);
        }
        let mut latest = HashMap::new();
        let summary = LagSummary::of(offsets.iter().map(|o| {
            let key = (o.topic.clone(), o.partition);
            let previous = memory.compare_to.get(&key).copied();
            if let Some(c) = o.committed.filter(|c| *c >= 0) {
                latest.insert(key, c);
            }
            super::lag::partition_lag(o.committed, o.log_end, previous, &policy)
        }));
        memory.latest = latest;
        drop(memory);
        let desired = super::lag::desired_replicas(&summary, self.spec.lag_threshold, self.spec.cap_policy);
        let value = super::lag::hpa_metric_value(&summary, self.spec.lag_threshold, self.spec.cap_policy);
        Ok(KafkaSample {
            lag: summary,
            desired_replicas: desired,
            value,
            active: super::lag::is_active(&summary, self.spec.activation_lag_threshold),
            snapshot_age: snap.taken.elapsed(),
        })
    }
}

impl fmt::Debug for KafkaScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaScaler")
            .field("cluster", &self.cluster.endpoint)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for KafkaScaler {
    fn trigger_type(&self) -> &'static str {
        "kafka"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let s = self.sample_detailed().await?;
        Ok(TriggerSample {
            value: s.value,
            active: s.active,
        })
    }

    fn samples_are_cheap(&self) -> bool {
        // Samples read the cluster's latest round (at most ~2 s old); no broker request.
        true
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        self.cluster.ensure_watching();
        Some(self.registration.changes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_with;

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> KafkaConfig {
        let params = parse_with(&crate::kafka::DECL, meta, auth).unwrap();
        KafkaConfig::try_from(&params).unwrap()
    }

    const BASE: [(&str, &str); 3] = [
        ("bootstrapServers", "b:9092, a:9092, b:9092"),
        ("consumerGroup", "g"),
        ("topic", "orders"),
    ];

    #[test]
    fn identities_share_or_not_and_never_show_secrets() {
        let sasl = |pw: &'static str| [("sasl", "scram_sha512"), ("username", "svc"), ("password", pw)];
        let a = config(&BASE, &sasl("hunter2")).cluster;
        let mut other_order = BASE.to_vec();
        other_order[0] = ("bootstrapServers", "a:9092,b:9092");
        let b = config(&other_order, &sasl("hunter2")).cluster;
        let c = config(&BASE, &sasl("other")).cluster;
        let plain = config(&BASE, &[]).cluster;
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_ne!(a.key(), plain.key());

        // Built without an async runtime; two triggers on one identity share one client.
        let clusters = KafkaClusters::default();
        let s1 = KafkaScaler::new(clusters.clone(), config(&BASE, &sasl("hunter2"))).unwrap();
        let s2 = KafkaScaler::new(clusters.clone(), config(&BASE, &sasl("hunter2"))).unwrap();
        let s3 = KafkaScaler::new(clusters.clone(), config(&BASE, &sasl("other"))).unwrap();
        let stats = clusters.stats();
        assert_eq!((stats.clusters, stats.triggers), (2, 3));
        for text in [
            format!("{s1:?}"),
            format!("{clusters:?}"),
            format!("{:?}", a.sasl),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        drop((s1, s3));
        assert_eq!((clusters.stats().clusters, clusters.stats().triggers), (1, 1));
        drop(s2);
        assert_eq!(clusters.stats().clusters, 0);
    }

    #[test]
    fn unusable_tls_is_invalid_config() {
        let tls = [("tls", "enable"), ("ca", "not pem")];
        let e = KafkaScaler::new(KafkaClusters::default(), config(&BASE, &tls)).unwrap_err();
        assert!(
            matches!(&e, ScalerError::InvalidConfig(m) if m.contains("ca")),
            "{e}"
        );
    }

    #[test]
    fn metric_target_is_the_declared_threshold() {
        let mut meta = BASE.to_vec();
        meta.push(("lagThreshold", "7"));
        let params = parse_with(&crate::kafka::DECL, &meta, &[]).unwrap();
        let thresholds = (crate::kafka::DECL.thresholds)(&params);
        let scaler =
            KafkaScaler::new(KafkaClusters::default(), KafkaConfig::try_from(&params).unwrap()).unwrap();
        assert_eq!(scaler.metric_target().target_value, thresholds.target);
        assert_eq!(thresholds.target, 7.0);
    }
}
