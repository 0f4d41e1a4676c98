//! The `kafka` scaler: consumer-group lag with KEDA's parameters and semantics, at a broker cost
//! that grows with the number of brokers, not with the number of ScaledObjects.
//!
//! # Protocol route
//!
//! librdkafka (the `rdkafka` crate) reads committed offsets through a consumer bound to one group
//! (or the admin `ListConsumerGroupOffsets`, one group per call), so serving many groups means a
//! client, threads and buffers per group: KEDA's 35 GiB case (#7453) had one client per
//! ScaledObject. ebb speaks the protocol itself with the pure-Rust `kafka-protocol` crate over
//! tokio TCP (TLS through tokio-rustls with ring): ApiVersions negotiation, SASL PLAIN and
//! SCRAM-SHA-256/512 ([`sasl`]), one connection per broker, one request at a time per connection
//! with its correlation id checked, and a connection dropped (closed) after any error, reopened on
//! the next use ([`wire`]). DescribeGroups is never used (Tansu answers it wrongly).
//!
//! # One client per cluster, one batched round per tick
//!
//! [`KafkaClusters`] (one per [`crate::ScalerFactory`]) keeps one client per cluster
//! identity: the bootstrap set, TLS settings and SASL credentials, keyed by a SHA-256 of them
//! (never shown). Every trigger naming that cluster registers its watch (group, topic, partitions)
//! when built and unregisters when its scaler is dropped. A round reads, for all of them at once
//! ([`plan`]): Metadata of the watched topics only when the set changes, after an error, or once a
//! minute; FindCoordinator only for groups without a known coordinator; then one ListOffsets per
//! partition-leader broker for the union of watched partitions and one OffsetFetch per group
//! coordinator with every group it coordinates (v8+, else one per group). At 1,000 ScaledObjects
//! over 10 topics × 10 partitions on 3 brokers that is at most 6 requests per round, where KEDA
//! sends 2 + brokers per ScaledObject per poll.
//!
//! # Cold activation within a second
//!
//! Each cluster client runs its own ticker: one round every half second (by default) for the whole
//! cluster, whatever the number of triggers, kept as a snapshot. [`Scaler::sample`] reads the
//! snapshot (making a round only when it is older than two ticks or predates the trigger), so the
//! operator's polls add no broker load. After each round the ticker recomputes every trigger's
//! activity (lag including persistent lag > `activationLagThreshold`) and flips the trigger's
//! [`Scaler::activity_changes`] channel when it changed: the operator's scale loop then polls at
//! once, so a ScaledObject at zero notices its first message about one tick after it is written,
//! at a fleet-wide cost of (leaders + coordinators) requests per tick. A ticker whose cluster
//! has no trigger left stops and closes its connections; after failed rounds it backs off (up to
//! 5 s). The channel handed out is synchronised with the last sample: a flip that happened after
//! the snapshot the operator last saw still wakes it.
//!
//! # Semantics
//!
//! See [`lag`]: KEDA's per-partition rules, and the replica cap computed explicitly, reported as a
//! value the HPA maps back to exactly the desired count (no replica beyond the partition count).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use tokio::sync::watch;

use super::cluster::Cluster;
use super::lag::{CapPolicy, LagPolicy, LagSummary, OffsetResetPolicy};
use super::plan::Watch;
use super::sasl::Mechanism;
use super::wire::{ConnectOptions, SaslCredentials, WireCounters};
use crate::kafka::parse_partition_limitation;
use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// Settings of a [`KafkaClusters`] pool.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaOptions {
    /// Bounds connecting (TCP, TLS, ApiVersions, SASL) and each request. Default 3 s.
    pub request_timeout: Duration,
    /// How often each cluster client makes a round while it has triggers. Default
    /// [`crate::ACTIVITY_WATCH_TICK`] (0.5 s); zero
    /// disables the ticker (rounds are then made by [`Scaler::sample`] only, and
    /// [`Scaler::activity_changes`] never fires).
    pub tick: Duration,
    /// A snapshot older than this makes [`Scaler::sample`] run a round itself. Default 2 s.
    pub snapshot_max_age: Duration,
    /// Metadata of the watched topics is fetched again at least this often (new partitions).
    /// Default 60 s.
    pub metadata_max_age: Duration,
    /// Addresses to dial instead of the ones brokers advertise (and of bootstrap servers):
    /// `advertised host:port` → `host:port` to connect to. Empty by default.
    pub address_map: BTreeMap<String, String>,
    /// The client id sent with each request. Default `ebb`.
    pub client_id: String,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(3),
            tick: crate::ACTIVITY_WATCH_TICK,
            snapshot_max_age: Duration::from_secs(2),
            metadata_max_age: Duration::from_secs(60),
            address_map: BTreeMap::new(),
            client_id: "ebb".to_string(),
        }
    }
}

/// What the pool's clusters share: the wire counters and the round counter.
#[derive(Debug, Default)]
pub(crate) struct PoolShared {
    pub counters: Arc<WireCounters>,
    pub rounds: AtomicU64,
}

/// The kafka cluster clients of one [`crate::ScalerFactory`]: one per cluster identity
/// (bootstrap servers, TLS, SASL), shared by every trigger naming it. Cheap to clone.
#[derive(Clone)]
pub struct KafkaClusters {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    options: KafkaOptions,
    shared: Arc<PoolShared>,
    clusters: Mutex<HashMap<[u8; 32], Weak<Cluster>>>,
}

/// Counters of a [`KafkaClusters`] pool, for tests and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaStats {
    /// Cluster clients alive (with at least one scaler holding them).
    pub clusters: usize,
    /// Triggers registered over all clusters.
    pub triggers: usize,
    /// Rounds made so far.
    pub rounds: u64,
    /// Connections open now.
    pub open_connections: usize,
    /// Connections opened so far.
    pub connections_opened: u64,
    /// Connection attempts that failed so far.
    pub failed_connects: u64,
    /// Requests sent so far, by API key (`ApiKey as i16`).
    pub requests: BTreeMap<i16, u64>,
}

impl KafkaStats {
    /// Requests sent so far with this API key.
    pub fn requests_of(&self, key: ApiKey) -> u64 {
        self.requests.get(&(key as i16)).copied().unwrap_or(0)
    }
}

/// The API keys the kafka client sends (for [`KafkaStats::requests`]).
const COUNTED_KEYS: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::FindCoordinator,
    ApiKey::OffsetFetch,
    ApiKey::ListOffsets,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
];

impl KafkaClusters {
    /// An empty pool. Needs no async runtime (the tickers start with the first sample or
    /// subscription inside one).
    pub fn new(options: KafkaOptions) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                options,
                shared: Arc::new(PoolShared::default()),
                clusters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The pool's options.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    /// The pool's counters now.
    pub fn stats(&self) -> KafkaStats {
        let live: Vec<Arc<Cluster>> = self.lock_clusters().values().filter_map(Weak::upgrade).collect();
        let counters = &self.inner.shared.counters;
        KafkaStats {
            clusters: live.len(),
            triggers: live.iter().map(|c| c.trigger_count()).sum(),
            rounds: self.inner.shared.rounds.load(Ordering::Relaxed),
            open_connections: counters.open_connections(),
            connections_opened: counters.connections_opened(),
            failed_connects: counters.failed_connects(),
            requests: COUNTED_KEYS
                .iter()
                .map(|k| (*k as i16, counters.requests(*k)))
                .collect(),
        }
    }

    fn lock_clusters(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Weak<Cluster>>> {
        self.inner
            .clusters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cluster client for this identity, created on first use.
    fn cluster(&self, identity: &ClusterIdentity) -> Result<Arc<Cluster>, ScalerError> {
        let key = identity.key();
        let mut clusters = self.lock_clusters();
        clusters.retain(|_, c| c.strong_count() > 0);
        if let Some(cluster) = clusters.get(&key).and_then(Weak::upgrade) {
            return Ok(cluster);
        }
        let tls = match &identity.tls {
            None => None,
            Some(t) => Some(
                super::tls::client_config(
                    t.ca.as_deref(),
                    t.cert.as_deref(),
                    t.key.as_deref(),
                    t.key_password.as_deref(),
                    t.unsafe_ssl,
                )
                .map_err(ScalerError::InvalidConfig)?,
            ),
        };
        let options = &self.inner.options;
        let connect = ConnectOptions {
            timeout: options.request_timeout,
            tls,
            sasl: identity.sasl.clone(),
            client_id: options.client_id.clone(),
        };
        let cluster = Arc::new(Cluster::new(
            identity.bootstrap.clone(),
            connect,
            options.clone(),
            self.inner.shared.clone(),
        ));
        clusters.insert(key, Arc::downgrade(&cluster));
        Ok(cluster)
    }
}

impl Default for KafkaClusters {
    fn default() -> Self {
        Self::new(KafkaOptions::default())
    }
}

impl fmt::Debug for KafkaClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaClusters")
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish()
    }
}

/// `tls: enable` settings (PEM text from the TriggerAuthentication).
#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsParams {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    key_password: Option<String>,
    unsafe_ssl: bool,
}

/// What makes two triggers share a cluster client.
#[derive(Clone, PartialEq, Eq)]
struct ClusterIdentity {
    /// Sorted, without duplicates.
    bootstrap: Vec<String>,
    tls: Option<TlsParams>,
    sasl: Option<SaslCredentials>,
}

impl fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("bootstrap", &self.bootstrap)
            .field("tls", &self.tls.as_ref().map(|t| t.unsafe_ssl))
            .field("sasl", &self.sasl.as_ref().map(|s| (s.mechanism, &s.username)))
            .finish()
    }
}

impl ClusterIdentity {
    /// SHA-256 over every field, length-prefixed: the pool key (never shown).
    fn key(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        for b in &self.bootstrap {
            field(b.as_bytes());
        }
        field(b"|tls");
        if let Some(t) = &self.tls {
            for part in [&t.ca, &t.cert, &t.key, &t.key_password] {
                match part {
                    Some(v) => field(v.as_bytes()),
                    None => field(b"\0none"),
                }
            }
            field(if t.unsafe_ssl { b"unsafe" } else { b"safe" });
        }
        field(b"|sasl");
        if let Some(s) = &self.sasl {
            field(s.mechanism.name().as_bytes());
            field(s.username.as_bytes());
            field(s.password.as_bytes());
        }
        let digest = ctx.finish();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

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
        let offsets = super::cluster::offsets_for(&self.spec, &snap, &cluster.endpoint)?;
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
