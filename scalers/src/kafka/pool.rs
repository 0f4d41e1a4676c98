//! The pool of kafka cluster clients of one [`crate::ScalerFactory`]: one client per cluster
//! identity (bootstrap servers, TLS, SASL; keyed by a SHA-256 of them, never shown), shared by
//! every trigger naming it, with the pool's options and counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use super::cluster::Cluster;
use super::config::ClusterConfig;
use super::wire::{ConnectOptions, WireCounters};
use crate::ScalerError;
use crate::common::errors::error_chain;

/// Settings of a [`KafkaClusters`] pool.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaOptions {
    /// Bounds connecting (TCP, TLS, ApiVersions, SASL) and each request. Default 3 s.
    pub request_timeout: Duration,
    /// How often each cluster client makes a round while it has triggers. Default
    /// [`crate::ACTIVITY_WATCH_TICK`] (0.5 s); zero
    /// disables the activity watcher's task (rounds are then made by [`crate::Scaler::sample`] only, and
    /// [`crate::Scaler::activity_changes`] never fires).
    pub tick: Duration,
    /// A snapshot older than this makes [`crate::Scaler::sample`] run a round itself. Default 2 s.
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
    /// An empty pool. Needs no async runtime (the watchers' tasks start with the first sample or
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
    pub(super) fn cluster(&self, identity: &ClusterConfig) -> Result<Arc<Cluster>, ScalerError> {
        let key = identity.key();
        let mut clusters = self.lock_clusters();
        clusters.retain(|_, c| c.strong_count() > 0);
        if let Some(cluster) = clusters.get(&key).and_then(Weak::upgrade) {
            return Ok(cluster);
        }
        let tls = match &identity.tls {
            None => None,
            Some(t) => {
                Some(super::tls::client_config(t).map_err(|e| ScalerError::InvalidConfig(error_chain(&e)))?)
            }
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
