//! One client per Kafka cluster (one bootstrap set + TLS + SASL identity): the registry of the
//! triggers that read it, the snapshot they all read, and the ticker that makes a round every
//! tick ([`crate::ACTIVITY_WATCH_TICK`], 0.5 s, by default), publishes its snapshot and flips the
//! triggers' activity channels.
//!
//! The pieces: [`snapshot`] (what a round learned, and each trigger's view of it), `brokers`
//! (connections, broker addresses, Metadata and FindCoordinator), `round` (one round: the batched
//! ListOffsets and OffsetFetch requests, every broker concurrently).

mod brokers;
mod round;
pub(crate) mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::sync::watch;

use self::brokers::Engine;
use self::snapshot::{Snapshot, activity_of};
use super::config::TriggerSpec;
use super::plan::Watch;
use super::pool::{KafkaOptions, PoolShared};
use super::wire::{ConnectOptions, WireCounters};

struct Registered {
    spec: Arc<TriggerSpec>,
    activity: watch::Sender<bool>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    generation: u64,
    triggers: HashMap<u64, Registered>,
}

/// A trigger's place in its cluster's registry.
pub(crate) struct Ticket {
    pub id: u64,
    pub generation: u64,
    pub activity: watch::Receiver<bool>,
}

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
    registry: Mutex<Registry>,
    engine: tokio::sync::Mutex<Engine>,
    published: Mutex<Option<Arc<Snapshot>>>,
    ticker_running: Mutex<bool>,
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
            options,
            shared,
            registry: Mutex::new(Registry::default()),
            engine: tokio::sync::Mutex::new(Engine::default()),
            published: Mutex::new(None),
            ticker_running: Mutex::new(false),
        }
    }

    /// How long a sample waits for a fresh snapshot: a round makes up to three sequential
    /// exchanges (metadata, coordinators, offsets), each bounded by the request timeout, and the
    /// ticker's round may be under way.
    pub(crate) fn sample_timeout(&self) -> Duration {
        self.options.request_timeout.saturating_mul(4)
    }

    fn counters(&self) -> Arc<WireCounters> {
        self.shared.counters.clone()
    }

    /// Registers a trigger; its partitions are in every round from now on.
    pub(crate) fn register(self: &Arc<Self>, spec: Arc<TriggerSpec>) -> Ticket {
        let ticket = {
            let mut registry = lock(&self.registry);
            registry.next_id += 1;
            registry.generation += 1;
            let id = registry.next_id;
            let (activity, receiver) = watch::channel(false);
            registry.triggers.insert(id, Registered { spec, activity });
            Ticket {
                id,
                generation: registry.generation,
                activity: receiver,
            }
        };
        self.ensure_ticker();
        ticket
    }

    /// Removes a trigger. With no trigger left, the ticker stops and closes the connections.
    pub(crate) fn unregister(&self, id: u64) {
        let mut registry = lock(&self.registry);
        if registry.triggers.remove(&id).is_some() {
            registry.generation += 1;
        }
    }

    /// How many triggers read this cluster.
    pub(crate) fn trigger_count(&self) -> usize {
        lock(&self.registry).triggers.len()
    }

    /// Starts the ticker if it is not running and an async runtime is at hand.
    pub(crate) fn ensure_ticker(self: &Arc<Self>) {
        if self.options.tick.is_zero() {
            return;
        }
        let mut running = lock(&self.ticker_running);
        if *running {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *running = true;
        runtime.spawn(ticker(Arc::downgrade(self)));
    }

    /// The latest snapshot, with the caller's activity channel marked as seen at the same moment
    /// (so a flip after this snapshot still wakes the caller).
    pub(crate) fn current(&self, seen: Option<&Mutex<watch::Receiver<bool>>>) -> Option<Arc<Snapshot>> {
        let published = lock(&self.published);
        if let Some(seen) = seen {
            lock(seen).borrow_and_update();
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
        let snap = Arc::new(self.round(&mut engine).await);
        self.publish(snap.clone());
        snap
    }

    /// Publishes a snapshot and flips the activity channels that changed.
    fn publish(&self, snap: Arc<Snapshot>) {
        let registry = lock(&self.registry);
        let mut published = lock(&self.published);
        *published = Some(snap.clone());
        for trigger in registry.triggers.values() {
            if let Some(active) = activity_of(&trigger.spec, &snap, &self.endpoint) {
                trigger.activity.send_if_modified(|current| {
                    let changed = *current != active;
                    *current = active;
                    changed
                });
            }
        }
    }

    /// One ticker step: a round unless a forced one just ran. Returns the pause before the next
    /// round, counted from this round's start.
    async fn tick(&self) -> Duration {
        let mut engine = self.engine.lock().await;
        let generation = lock(&self.registry).generation;
        if let Some(snap) = self.current(None)
            && snap.generation >= generation
        {
            let age = snap.taken.elapsed();
            if age < self.options.tick / 2 {
                return self.options.tick - age;
            }
        }
        // Rounds start a tick apart: the round's own time is not added to the pause.
        let started = Instant::now();
        let snap = Arc::new(self.round(&mut engine).await);
        engine.failed_rounds = if snap.failure.is_some() || snap.wire_errors > 0 {
            engine.failed_rounds.saturating_add(1)
        } else {
            0
        };
        let backoff = self
            .options
            .tick
            .saturating_mul(1 << engine.failed_rounds.min(3))
            .min(self.options.tick.max(Duration::from_secs(5)));
        drop(engine);
        self.publish(snap);
        backoff.saturating_sub(started.elapsed())
    }

    fn watches(&self) -> (u64, Vec<Watch>) {
        let registry = lock(&self.registry);
        let watches = registry.triggers.values().map(|t| t.spec.watch.clone()).collect();
        (registry.generation, watches)
    }

    /// Drops every connection (no trigger left).
    async fn close_connections(&self) {
        self.engine.lock().await.conns.clear();
    }

    fn finish_ticker_if_idle(&self) -> bool {
        let mut running = lock(&self.ticker_running);
        if lock(&self.registry).triggers.is_empty() {
            *running = false;
            return true;
        }
        false
    }
}

/// The ticker of one cluster: a round every tick while triggers are registered; stops (closing
/// the connections) when none is left, and when the cluster is dropped.
async fn ticker(cluster: Weak<Cluster>) {
    loop {
        let Some(strong) = cluster.upgrade() else {
            return;
        };
        if strong.finish_ticker_if_idle() {
            strong.close_connections().await;
            return;
        }
        let pause = strong.tick().await;
        drop(strong);
        tokio::time::sleep(pause).await;
    }
}
