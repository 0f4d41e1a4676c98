//! One client per Kafka cluster (one bootstrap set + TLS + SASL identity): the triggers that
//! read it (registered with its [`ActivityWatcher`]), the snapshot they all read, and the
//! watcher's round ([`KafkaRound`]) that runs every tick ([`crate::ACTIVITY_WATCH_TICK`], 0.5 s,
//! by default), publishes its snapshot and flips the triggers' activity channels.
//!
//! The pieces: [`snapshot`] (what a round learned, and each trigger's view of it), `brokers`
//! (connections, broker addresses, Metadata and FindCoordinator), `round` (one round: the batched
//! ListOffsets and OffsetFetch requests, every broker concurrently).
//!
//! Rounds are made one at a time (under the engine lock) either by the watcher's task or by a
//! sample that finds the snapshot stale; the task skips its round when a sample's round just ran.

mod brokers;
mod round;
pub(crate) mod snapshot;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use kafka_protocol::ResponseError;

use self::brokers::Engine;
use self::snapshot::{Snapshot, activity_of};
use super::config::TriggerSpec;
use super::pool::{KafkaOptions, PoolShared};
use super::wire::{ConnectOptions, WireCounters};
use crate::common::activity::{ActivityRound, ActivityWatcher, Registration, RoundInput, RoundReport};

/// A trigger's registration with its cluster's watcher (unregisters when dropped).
pub(crate) type TriggerRegistration = Registration<Arc<TriggerSpec>>;

/// The registered triggers as one round reads them.
type Triggers = RoundInput<Arc<TriggerSpec>>;

/// The name of a Kafka error code, for messages.
fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| "no error".to_string(), |e| e.to_string())
}

/// The client of one cluster (one bootstrap set + TLS + SASL identity).
pub(crate) struct Cluster {
    /// `kafka://host:port,…` (no credentials), for errors.
    pub endpoint: String,
    bootstrap: Vec<String>,
    connect: ConnectOptions,
    options: KafkaOptions,
    shared: Arc<PoolShared>,
    watcher: Arc<ActivityWatcher<Arc<TriggerSpec>>>,
    engine: tokio::sync::Mutex<Engine>,
    published: Mutex<Option<Arc<Snapshot>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is short and leaves the data consistent, even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    pub(crate) fn new(
        bootstrap: Vec<String>,
        connect: ConnectOptions,
        options: KafkaOptions,
        shared: Arc<PoolShared>,
    ) -> Self {
        Cluster {
            endpoint: format!("kafka://{}", bootstrap.join(",")),
            bootstrap,
            connect,
            watcher: ActivityWatcher::new(options.tick),
            options,
            shared,
            engine: tokio::sync::Mutex::new(Engine::default()),
            published: Mutex::new(None),
        }
    }

    /// How long a sample waits for a fresh snapshot: a round makes up to three sequential
    /// exchanges (metadata, coordinators, offsets), each bounded by the request timeout, and the
    /// watcher's round may be under way.
    pub(crate) fn sample_timeout(&self) -> Duration {
        self.options.request_timeout.saturating_mul(4)
    }

    fn counters(&self) -> Arc<WireCounters> {
        self.shared.counters.clone()
    }

    /// Registers a trigger: its partitions are in every round until the registration is
    /// dropped. With no trigger left, the watcher's task stops and closes the connections.
    pub(crate) fn register(self: &Arc<Self>, spec: Arc<TriggerSpec>) -> TriggerRegistration {
        let registration = self.watcher.register(spec);
        self.ensure_watching();
        registration
    }

    /// How many triggers read this cluster.
    pub(crate) fn trigger_count(&self) -> usize {
        self.watcher.trigger_count()
    }

    /// Starts the watcher's task if it is not running and an async runtime is at hand.
    pub(crate) fn ensure_watching(self: &Arc<Self>) {
        self.watcher.ensure_running(|| KafkaRound {
            cluster: Arc::downgrade(self),
        });
    }

    /// The latest snapshot, with the caller's activity channel marked as seen at the same moment
    /// (so a flip after this snapshot still wakes the caller): [`Self::publish`] flips channels
    /// under the same lock.
    pub(crate) fn current(&self, seen: Option<&TriggerRegistration>) -> Option<Arc<Snapshot>> {
        let published = lock(&self.published);
        if let Some(registration) = seen {
            registration.mark_seen();
        }
        published.clone()
    }

    fn is_fresh(&self, snap: &Snapshot, generation: u64) -> bool {
        snap.generation >= generation && snap.taken.elapsed() <= self.options.snapshot_max_age
    }

    /// A snapshot that covers `generation` and is not older than the configured maximum age:
    /// the published one, or a round made now (one at a time; concurrent callers share it).
    pub(crate) async fn fresh_snapshot(&self, generation: u64) -> Arc<Snapshot> {
        if let Some(snap) = self.current(None)
            && self.is_fresh(&snap, generation)
        {
            return snap;
        }
        let mut engine = self.engine.lock().await;
        if let Some(snap) = self.current(None)
            && self.is_fresh(&snap, generation)
        {
            return snap;
        }
        let snap = Arc::new(self.round(&mut engine, self.watcher.input()).await);
        self.publish(snap.clone());
        snap
    }

    /// Publishes a snapshot and flips the activity channels that changed (under the `published`
    /// lock, see [`Self::current`]).
    fn publish(&self, snap: Arc<Snapshot>) {
        let mut published = lock(&self.published);
        *published = Some(snap.clone());
        self.watcher
            .publish_with(|spec| activity_of(spec, &snap, &self.endpoint));
    }

    /// One step of the watcher's task: a round unless one (forced by a sample) ran less than half
    /// a tick ago and covers `input`.
    async fn tick(&self, input: Triggers) -> RoundReport {
        let mut engine = self.engine.lock().await;
        if let Some(snap) = self.current(None)
            && snap.generation >= input.generation
        {
            let age = snap.taken.elapsed();
            if age < self.options.tick / 2 {
                return RoundReport::skipped(age);
            }
        }
        let snap = Arc::new(self.round(&mut engine, input).await);
        drop(engine);
        let failed = snap.failure.is_some() || snap.wire_errors > 0;
        self.publish(snap);
        // Activity is published with the snapshot above, not through the report.
        if failed {
            RoundReport::failed(Vec::new())
        } else {
            RoundReport::succeeded(Vec::new())
        }
    }

    /// Drops every connection (no trigger left).
    async fn close_connections(&self) {
        self.engine.lock().await.conns.clear();
    }
}

/// The round of a cluster's [`ActivityWatcher`]: one batched round for all its triggers per tick
/// (see [`Cluster::tick`]); closes the connections when no trigger is left. Holds the cluster
/// weakly, so that dropping the last scaler drops the cluster.
struct KafkaRound {
    cluster: Weak<Cluster>,
}

impl ActivityRound for KafkaRound {
    type Spec = Arc<TriggerSpec>;
    const SOURCE: &'static str = "kafka";

    async fn round(&mut self, input: Triggers) -> RoundReport {
        match self.cluster.upgrade() {
            Some(cluster) => cluster.tick(input).await,
            // The cluster is gone; its registrations went with it, so the task is about to end.
            None => RoundReport::succeeded(Vec::new()),
        }
    }

    async fn idle(&mut self) {
        if let Some(cluster) = self.cluster.upgrade() {
            cluster.close_connections().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::config::KafkaConfig;
    use crate::kafka::pool::KafkaClusters;
    use crate::params::tests_support::parse_with;

    /// An address nothing listens on (a port just released).
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    #[tokio::test]
    async fn failed_rounds_back_off_flip_nothing_and_the_task_stops_without_triggers() {
        let ms = Duration::from_millis;
        let clusters = KafkaClusters::new(KafkaOptions {
            tick: ms(100),
            request_timeout: ms(200),
            ..KafkaOptions::default()
        });
        let addr = closed_port();
        let meta = [
            ("bootstrapServers", addr.as_str()),
            ("consumerGroup", "g"),
            ("topic", "t"),
        ];
        let config = KafkaConfig::try_from(&parse_with(&crate::kafka::DECL, &meta, &[]).unwrap()).unwrap();
        let cluster = clusters.cluster(&config.cluster).unwrap();
        let registration = cluster.register(Arc::new(config.trigger));
        assert!(cluster.watcher.is_running(), "registering starts the task");
        let changes = registration.changes();
        tokio::time::sleep(ms(1_000)).await;
        // Every round fails (nothing listens): rounds at 0, 200, 600 ms (then 1,400), not every
        // 100 ms.
        let rounds = clusters.stats().rounds;
        assert!((2..=5).contains(&rounds), "{rounds} rounds");
        let snap = cluster.current(Some(&registration)).expect("rounds publish");
        assert!(snap.failure.is_some());
        assert!(!changes.has_changed().unwrap(), "failed rounds flip nothing");
        drop(registration);
        assert_eq!(cluster.trigger_count(), 0);
        tokio::time::sleep(ms(1_500)).await;
        assert!(!cluster.watcher.is_running(), "no trigger left: the task ends");
        let after = clusters.stats().rounds;
        tokio::time::sleep(ms(300)).await;
        assert_eq!(clusters.stats().rounds, after);
        assert!(cluster.engine.lock().await.conns.is_empty());
    }
}
