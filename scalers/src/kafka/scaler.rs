//! One kafka trigger ([`KafkaScaler`]): its settings, its registration with its cluster client,
//! and its samples, computed from the client's latest snapshot with the pure rules of
//! [`super::lag`] (see the folder's front page, [`crate::kafka`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cluster::Cluster;
use super::lag::{CapPolicy, LagPolicy, LagSummary, OffsetResetPolicy};
use super::plan::Watch;
use super::pool::{ClusterIdentity, KafkaClusters, TlsParams};
use super::sasl::Mechanism;
use super::wire::SaslCredentials;
use crate::kafka::parse_partition_limitation;
use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// One kafka trigger's settings, parsed from its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// Group, topic and partitions read.
    pub watch: Watch,
    /// `lagThreshold`.
    pub lag_threshold: i64,
    /// `activationLagThreshold`.
    pub activation_lag_threshold: i64,
    /// How partition lag is read.
    pub lag_policy: LagPolicy,
    /// How the replica count is capped.
    pub cap_policy: CapPolicy,
}

impl TriggerSpec {
    /// Reads the trigger's parameters (see [`crate::kafka`]).
    pub fn from_params(params: &ParsedParams) -> Result<Self, ScalerError> {
        let invalid = |m: String| ScalerError::InvalidConfig(format!("kafka: {m}"));
        let group = params
            .str("consumerGroup")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| invalid("consumerGroup has no value".into()))?;
        let topic = params.str("topic").filter(|t| !t.is_empty()).map(str::to_string);
        let partitions = match params.str("partitionLimitation") {
            Some(text) if topic.is_some() => Some(
                parse_partition_limitation(text).map_err(|e| invalid(format!("partitionLimitation: {e}")))?,
            ),
            _ => None,
        };
        let offset_reset = match params.str("offsetResetPolicy") {
            Some("earliest") => OffsetResetPolicy::Earliest,
            _ => OffsetResetPolicy::Latest,
        };
        let flag = |name: &str| params.bool(name).unwrap_or(false);
        let lag_threshold = params.int("lagThreshold").unwrap_or(10);
        if lag_threshold <= 0 {
            return Err(invalid("lagThreshold must be greater than 0".into()));
        }
        Ok(TriggerSpec {
            watch: Watch {
                group: group.to_string(),
                topic,
                partitions,
            },
            lag_threshold,
            activation_lag_threshold: params.int("activationLagThreshold").unwrap_or(0),
            lag_policy: LagPolicy {
                offset_reset,
                scale_to_zero_on_invalid_offset: flag("scaleToZeroOnInvalidOffset"),
                exclude_persistent_lag: flag("excludePersistentLag"),
            },
            cap_policy: CapPolicy {
                allow_idle_consumers: flag("allowIdleConsumers"),
                limit_to_partitions_with_lag: flag("limitToPartitionsWithLag"),
                ensure_even_distribution: flag("ensureEvenDistributionOfPartitions"),
            },
        })
    }
}

fn cluster_identity(params: &ParsedParams) -> Result<ClusterIdentity, ScalerError> {
    let invalid = |m: String| ScalerError::InvalidConfig(format!("kafka: {m}"));
    let mut bootstrap: Vec<String> = params
        .list("bootstrapServers")
        .ok_or_else(|| invalid("bootstrapServers has no value".into()))?
        .to_vec();
    for server in &bootstrap {
        let port_ok = server
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid(format!(
                "bootstrapServers entry {server:?} is not host:port"
            )));
        }
    }
    bootstrap.sort();
    bootstrap.dedup();
    let tls = match params.str("tls") {
        Some("enable") => Some(TlsParams {
            ca: params.str("ca").map(str::to_string),
            cert: params.str("cert").map(str::to_string),
            key: params.str("key").map(str::to_string),
            key_password: params.str("keyPassword").map(str::to_string),
            unsafe_ssl: params.bool("unsafeSsl").unwrap_or(false),
        }),
        _ => None,
    };
    let mechanism = match params.str("sasl").unwrap_or("none") {
        "none" => None,
        "plaintext" => Some(Mechanism::Plain),
        "scram_sha256" => Some(Mechanism::ScramSha256),
        "scram_sha512" => Some(Mechanism::ScramSha512),
        other => {
            return Err(invalid(format!(
                "sasl {other} is not supported yet (ebb supports none, plaintext, scram_sha256, scram_sha512)"
            )));
        }
    };
    let sasl = match mechanism {
        None => None,
        Some(mechanism) => {
            let username = params
                .str("username")
                .ok_or_else(|| invalid("sasl needs username (in the TriggerAuthentication)".into()))?;
            let password = params
                .str("password")
                .ok_or_else(|| invalid("sasl needs password (in the TriggerAuthentication)".into()))?;
            Some(SaslCredentials {
                mechanism,
                username: username.to_string(),
                password: password.to_string(),
            })
        }
    };
    Ok(ClusterIdentity { bootstrap, tls, sasl })
}

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

/// Unregisters the trigger from its cluster when the scaler is dropped.
struct Registration {
    cluster: Arc<Cluster>,
    id: u64,
    generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cluster.unregister(self.id);
    }
}

/// One kafka trigger: reads its lag from its cluster client's snapshot.
pub struct KafkaScaler {
    registration: Registration,
    spec: Arc<TriggerSpec>,
    target: f64,
    seen: Mutex<watch::Receiver<bool>>,
    persistence: Mutex<Persistence>,
}

impl KafkaScaler {
    /// Builds the scaler from the trigger's parsed parameters (see [`crate::kafka`]) and
    /// thresholds, and registers it with its cluster client in `clusters`. Needs no async runtime.
    pub fn new(
        clusters: KafkaClusters,
        params: &ParsedParams,
        thresholds: Thresholds,
    ) -> Result<Self, ScalerError> {
        let identity = cluster_identity(params)?;
        let spec = Arc::new(TriggerSpec::from_params(params)?);
        let cluster = clusters.cluster(&identity)?;
        let ticket = cluster.register(spec.clone());
        Ok(KafkaScaler {
            registration: Registration {
                cluster,
                id: ticket.id,
                generation: ticket.generation,
            },
            spec,
            target: thresholds.target,
            seen: Mutex::new(ticket.activity),
            persistence: Mutex::new(Persistence::default()),
        })
    }

    /// The trigger's settings.
    pub fn spec(&self) -> &TriggerSpec {
        &self.spec
    }

    /// Polls with the detail (lag, desired replicas, value, activity).
    pub async fn sample_detailed(&self) -> Result<KafkaSample, ScalerError> {
        let cluster = &self.registration.cluster;
        cluster.ensure_ticker();
        let bound = cluster.sample_timeout();
        tokio::time::timeout(bound, cluster.fresh_snapshot(self.registration.generation))
            .await
            .map_err(|_| ScalerError::timeout(&cluster.endpoint, bound))?;
        let snap = cluster
            .current(Some(&self.seen))
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
            .field("cluster", &self.registration.cluster.endpoint)
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
        self.registration.cluster.ensure_ticker();
        Some(self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_with;

    fn params(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ParsedParams {
        parse_with(&crate::kafka::DECL, meta, auth).unwrap()
    }

    const BASE: [(&str, &str); 3] = [
        ("bootstrapServers", "b:9092, a:9092, b:9092"),
        ("consumerGroup", "g"),
        ("topic", "orders"),
    ];

    #[test]
    fn spec_from_params() {
        let mut meta = BASE.to_vec();
        meta.extend([
            ("partitionLimitation", "3,1-2"),
            ("lagThreshold", "7"),
            ("activationLagThreshold", "4"),
            ("offsetResetPolicy", "earliest"),
            ("excludePersistentLag", "true"),
            ("limitToPartitionsWithLag", "true"),
        ]);
        let spec = TriggerSpec::from_params(&params(&meta, &[])).unwrap();
        assert_eq!(spec.watch.partitions, Some(vec![1, 2, 3]));
        assert_eq!((spec.lag_threshold, spec.activation_lag_threshold), (7, 4));
        assert_eq!(spec.lag_policy.offset_reset, OffsetResetPolicy::Earliest);
        assert!(spec.lag_policy.exclude_persistent_lag && spec.cap_policy.limit_to_partitions_with_lag);
        let id = cluster_identity(&params(&meta, &[])).unwrap();
        assert_eq!(id.bootstrap, ["a:9092", "b:9092"], "sorted, without duplicates");
    }

    #[test]
    fn identities_share_or_not_and_never_show_secrets() {
        let sasl = |pw: &'static str| [("sasl", "scram_sha512"), ("username", "svc"), ("password", pw)];
        let a = cluster_identity(&params(&BASE, &sasl("hunter2"))).unwrap();
        let mut other_order = BASE.to_vec();
        other_order[0] = ("bootstrapServers", "a:9092,b:9092");
        let b = cluster_identity(&params(&other_order, &sasl("hunter2"))).unwrap();
        let c = cluster_identity(&params(&BASE, &sasl("other"))).unwrap();
        let plain = cluster_identity(&params(&BASE, &[])).unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_ne!(a.key(), plain.key());

        // Built without an async runtime; two triggers on one identity share one client.
        let clusters = KafkaClusters::default();
        let p = params(&BASE, &sasl("hunter2"));
        let thresholds = Thresholds {
            target: 10.0,
            activation: 0.0,
        };
        let s1 = KafkaScaler::new(clusters.clone(), &p, thresholds).unwrap();
        let s2 = KafkaScaler::new(clusters.clone(), &p, thresholds).unwrap();
        let s3 = KafkaScaler::new(clusters.clone(), &params(&BASE, &sasl("other")), thresholds).unwrap();
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
    fn bad_configs_are_invalid_config() {
        let mut meta = BASE.to_vec();
        meta[0] = ("bootstrapServers", "no-port");
        let e = cluster_identity(&params(&meta, &[])).unwrap_err();
        assert!(
            matches!(&e, ScalerError::InvalidConfig(m) if m.contains("no-port")),
            "{e}"
        );
        let tls = [("tls", "enable"), ("ca", "not pem")];
        let e = KafkaScaler::new(
            KafkaClusters::default(),
            &params(&BASE, &tls),
            Thresholds {
                target: 10.0,
                activation: 0.0,
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, ScalerError::InvalidConfig(m) if m.contains("ca")),
            "{e}"
        );
    }
}
