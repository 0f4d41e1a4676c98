//! One client per Kafka cluster: the registry of the triggers that read it, the batched round
//! (Metadata and FindCoordinator only when needed, then one ListOffsets per leader and one
//! OffsetFetch per coordinator), the snapshot every trigger reads, and the ticker that keeps the
//! snapshot fresh and flips the triggers' activity channels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetFetchRequest, OffsetFetchResponse,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::sync::watch;

use super::lag::{LagPolicy, LagSummary, is_active, partition_lag};
use super::plan::{
    GroupFetch, RoundPlan, TopicLeaders, Watch, WatchSet, list_offsets_request, offset_fetch_requests,
    plan_round, topic_name,
};
use super::scaler::{KafkaOptions, PoolShared, TriggerSpec};
use super::wire::{ConnectOptions, Connection, WireCounters, WireError};
use crate::ScalerError;

/// What one round learned. Every trigger of the cluster reads its lag from the latest one.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// When the round ended.
    pub taken: Instant,
    /// The registry generation the round covered (triggers registered up to it are in).
    pub generation: u64,
    /// Nothing could be learned (e.g. no broker reachable for metadata).
    pub failure: Option<ScalerError>,
    /// Partition ids per watched topic.
    pub topics: HashMap<String, Result<Vec<i32>, ScalerError>>,
    /// Log-end offsets; a partition absent here was absent from the ListOffsets answer.
    pub log_end: HashMap<(String, i32), Result<i64, ScalerError>>,
    /// Committed offsets per group.
    pub groups: HashMap<String, Result<GroupOffsets, ScalerError>>,
    /// Whether a broker could not be reached or answered garbage (for the ticker's backoff).
    pub wire_errors: usize,
}

impl Snapshot {
    fn new(generation: u64) -> Self {
        Snapshot {
            taken: Instant::now(),
            generation,
            failure: None,
            topics: HashMap::new(),
            log_end: HashMap::new(),
            groups: HashMap::new(),
            wire_errors: 0,
        }
    }
}

/// A group's committed offsets: `Ok(offset)` (`-1`: none) or a partition-level error code.
#[derive(Debug, Default)]
pub(crate) struct GroupOffsets {
    pub committed: HashMap<(String, i32), Result<i64, i16>>,
}

impl GroupOffsets {
    /// Topics with at least one committed offset (what a trigger without `topic` reads).
    pub fn topics_with_commits(&self) -> BTreeSet<String> {
        self.committed
            .iter()
            .filter(|(_, c)| matches!(c, Ok(o) if *o >= 0))
            .map(|((topic, _), _)| topic.clone())
            .collect()
    }
}

/// One partition as a trigger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
}

/// The partitions a trigger reads, with their offsets, from a snapshot.
pub(crate) fn offsets_for(
    spec: &TriggerSpec,
    snap: &Snapshot,
    endpoint: &str,
) -> Result<Vec<PartitionOffsets>, ScalerError> {
    if let Some(failure) = &snap.failure {
        return Err(failure.clone());
    }
    let not_yet = || ScalerError::bad_response(endpoint, "no data for this trigger yet");
    let group = match snap.groups.get(&spec.watch.group) {
        None => return Err(not_yet()),
        Some(Err(e)) => return Err(e.clone()),
        Some(Ok(g)) => g,
    };
    let topics: Vec<String> = match &spec.watch.topic {
        Some(topic) => vec![topic.clone()],
        None => group.topics_with_commits().into_iter().collect(),
    };
    let mut out = Vec::new();
    for topic in topics {
        let partitions = match snap.topics.get(&topic) {
            None => return Err(not_yet()),
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(p)) => p,
        };
        for &partition in partitions {
            if let Some(only) = &spec.watch.partitions
                && only.binary_search(&partition).is_err()
            {
                continue;
            }
            let key = (topic.clone(), partition);
            let log_end = match snap.log_end.get(&key) {
                None => None,
                Some(Err(e)) => return Err(e.clone()),
                Some(Ok(v)) => Some(*v),
            };
            let committed = match group.committed.get(&key) {
                None => None,
                Some(Ok(v)) => Some(*v),
                Some(Err(code)) => {
                    return Err(ScalerError::bad_response(
                        endpoint,
                        format!(
                            "OffsetFetch for group {:?}, {topic}/{partition}: {}",
                            spec.watch.group,
                            error_name(*code)
                        ),
                    ));
                }
            };
            out.push(PartitionOffsets {
                topic: topic.clone(),
                partition,
                committed,
                log_end,
            });
        }
    }
    Ok(out)
}

/// The trigger's lag with persistent lag included and no memory of previous polls: what
/// activation compares.
pub(crate) fn activity_of(spec: &TriggerSpec, snap: &Snapshot, endpoint: &str) -> Option<bool> {
    let offsets = offsets_for(spec, snap, endpoint).ok()?;
    let policy = LagPolicy {
        exclude_persistent_lag: false,
        ..spec.lag_policy
    };
    let summary = LagSummary::of(
        offsets
            .iter()
            .map(|o| partition_lag(o.committed, o.log_end, None, &policy)),
    );
    Some(is_active(&summary, spec.activation_lag_threshold))
}

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

#[derive(Default)]
struct Engine {
    conns: HashMap<String, Connection>,
    brokers: HashMap<i32, String>,
    leaders: HashMap<String, TopicLeaders>,
    topic_errors: HashMap<String, ScalerError>,
    meta_topics: BTreeSet<String>,
    meta_at: Option<Instant>,
    meta_retry_at: Option<Instant>,
    meta_dirty: bool,
    coordinators: HashMap<String, i32>,
    discovered: HashMap<String, BTreeSet<String>>,
    failed_rounds: u32,
}

/// Kafka error codes after which metadata (leaders) must be fetched again.
const METADATA_ERRORS: &[i16] = &[3, 5, 6, 74, 75];
/// Kafka error codes after which a group's coordinator must be found again.
const COORDINATOR_ERRORS: &[i16] = &[14, 15, 16];
/// How long a topic that does not exist (or failed) waits before its metadata is asked again.
const TOPIC_ERROR_RETRY: Duration = Duration::from_secs(5);

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

    fn map_addr(&self, addr: String) -> String {
        self.options.address_map.get(&addr).cloned().unwrap_or(addr)
    }

    fn endpoint_of(addr: &str) -> String {
        format!("kafka://{addr}")
    }

    fn wire_error(addr: &str, e: WireError) -> ScalerError {
        let endpoint = Self::endpoint_of(addr);
        match e {
            WireError::Timeout(after) => ScalerError::timeout(&endpoint, after),
            WireError::Io(m) | WireError::Tls(m) => ScalerError::unreachable(&endpoint, m),
            WireError::Auth(m) => ScalerError::unauthorized(&endpoint, m),
            e @ (WireError::Protocol(_) | WireError::Unsupported(_)) => {
                ScalerError::bad_response(&endpoint, e.to_string())
            }
        }
    }

    /// One round: metadata and coordinators when needed, then the batched offset requests.
    async fn round(&self, engine: &mut Engine) -> Snapshot {
        self.shared.rounds.fetch_add(1, Ordering::Relaxed);
        let (generation, watches) = self.watches();
        let set = WatchSet::of(&watches);
        engine
            .discovered
            .retain(|g, _| set.groups.get(g).is_some_and(|w| w.all_topics));
        engine.coordinators.retain(|g, _| set.groups.contains_key(g));
        if set.groups.is_empty() {
            engine.conns.clear();
            return Snapshot::new(generation);
        }
        let mut snap = Snapshot::new(generation);
        for attempt in 0..2 {
            snap = Snapshot::new(generation);
            let needed = set.topics(&engine.discovered);
            if let Err(e) = self.ensure_metadata(engine, &needed).await {
                snap.failure = Some(e);
                snap.wire_errors += 1;
                return snap;
            }
            let mut group_errors: HashMap<String, ScalerError> = HashMap::new();
            let missing: Vec<String> = set
                .groups
                .keys()
                .filter(|g| !engine.coordinators.contains_key(*g))
                .cloned()
                .collect();
            if !missing.is_empty()
                && let Err(e) = self.find_coordinators(engine, missing, &mut group_errors).await
            {
                snap.failure = Some(e);
                snap.wire_errors += 1;
                return snap;
            }
            let plan = plan_round(&set, &engine.discovered, &engine.leaders, &engine.coordinators);
            let retry = self.execute(engine, &plan, &set, group_errors, &mut snap).await;
            for topic in set.topics(&engine.discovered) {
                let entry = match (engine.leaders.get(&topic), engine.topic_errors.get(&topic)) {
                    (Some(meta), _) => Ok(meta.leaders.keys().copied().collect()),
                    (None, Some(e)) => Err(e.clone()),
                    (None, None) => Err(ScalerError::bad_response(
                        &self.endpoint,
                        format!("no metadata for topic {topic:?} yet"),
                    )),
                };
                snap.topics.insert(topic, entry);
            }
            if !retry || attempt == 1 {
                break;
            }
        }
        snap.taken = Instant::now();
        snap
    }

    fn metadata_needed(&self, engine: &Engine, needed: &BTreeSet<String>) -> bool {
        if needed.is_empty() {
            return false;
        }
        let now = Instant::now();
        engine.meta_dirty
            || !needed.is_subset(&engine.meta_topics)
            || engine
                .meta_at
                .is_none_or(|at| now.duration_since(at) >= self.options.metadata_max_age)
            || engine.meta_retry_at.is_some_and(|at| now >= at)
    }

    async fn ensure_metadata(
        &self,
        engine: &mut Engine,
        needed: &BTreeSet<String>,
    ) -> Result<(), ScalerError> {
        if !self.metadata_needed(engine, needed) {
            return Ok(());
        }
        let topics: Vec<MetadataRequestTopic> = needed
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
            .collect();
        let (response, _) = self
            .send_any(engine, |conn| {
                let version = conn.require_version::<MetadataRequest>(1)?;
                let request = MetadataRequest::default()
                    .with_topics(Some(topics.clone()))
                    .with_allow_auto_topic_creation(false);
                Ok((request, version))
            })
            .await?;
        self.apply_metadata(engine, needed, response);
        Ok(())
    }

    fn apply_metadata(&self, engine: &mut Engine, needed: &BTreeSet<String>, response: MetadataResponse) {
        // The answer is the cluster's current broker list (coordinators are among them).
        engine.brokers.clear();
        for broker in &response.brokers {
            let addr = self.map_addr(format!("{}:{}", broker.host.as_str(), broker.port));
            engine.brokers.insert(broker.node_id.0, addr);
        }
        engine.leaders.clear();
        engine.topic_errors.clear();
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.as_str().to_string()) else {
                continue;
            };
            if topic.error_code != 0 {
                let hint = if topic.error_code == 3 {
                    " (does the topic exist?)"
                } else {
                    ""
                };
                engine.topic_errors.insert(
                    name.clone(),
                    ScalerError::bad_response(
                        &self.endpoint,
                        format!(
                            "metadata of topic {name:?}: {}{hint}",
                            error_name(topic.error_code)
                        ),
                    ),
                );
                continue;
            }
            let leaders = topic
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            engine.leaders.insert(name, TopicLeaders { leaders });
        }
        for topic in needed {
            if !engine.leaders.contains_key(topic) && !engine.topic_errors.contains_key(topic) {
                engine.topic_errors.insert(
                    topic.clone(),
                    ScalerError::bad_response(
                        &self.endpoint,
                        format!("topic {topic:?} is missing from the metadata answer"),
                    ),
                );
            }
        }
        // Connections to addresses that are neither brokers nor bootstrap servers any more (a
        // broker left the cluster) are closed.
        let known: BTreeSet<String> = engine
            .brokers
            .values()
            .cloned()
            .chain(self.bootstrap.iter().map(|b| self.map_addr(b.clone())))
            .collect();
        engine.conns.retain(|addr, _| known.contains(addr));
        let now = Instant::now();
        engine.meta_topics = needed.clone();
        engine.meta_at = Some(now);
        engine.meta_dirty = false;
        engine.meta_retry_at = (!engine.topic_errors.is_empty()).then(|| now + TOPIC_ERROR_RETRY);
    }

    async fn find_coordinators(
        &self,
        engine: &mut Engine,
        mut pending: Vec<String>,
        group_errors: &mut HashMap<String, ScalerError>,
    ) -> Result<(), ScalerError> {
        while !pending.is_empty() {
            let (response, version) = self
                .send_any(engine, |conn| {
                    let version = conn.require_version::<FindCoordinatorRequest>(0)?;
                    let request = if version >= 4 {
                        FindCoordinatorRequest::default().with_coordinator_keys(
                            pending.iter().map(|g| StrBytes::from_string(g.clone())).collect(),
                        )
                    } else {
                        FindCoordinatorRequest::default().with_key(StrBytes::from_string(pending[0].clone()))
                    };
                    Ok((request, version))
                })
                .await?;
            let answered: Vec<String> = if version >= 4 {
                std::mem::take(&mut pending)
            } else {
                vec![pending.remove(0)]
            };
            self.apply_coordinators(engine, &answered, version, response, group_errors);
        }
        Ok(())
    }

    fn apply_coordinators(
        &self,
        engine: &mut Engine,
        asked: &[String],
        version: i16,
        response: FindCoordinatorResponse,
        group_errors: &mut HashMap<String, ScalerError>,
    ) {
        let answers: Vec<(String, i16, i32, String, i32)> = if version >= 4 {
            response
                .coordinators
                .iter()
                .map(|c| {
                    let key = c.key.as_str().to_string();
                    (
                        key,
                        c.error_code,
                        c.node_id.0,
                        c.host.as_str().to_string(),
                        c.port,
                    )
                })
                .collect()
        } else {
            asked
                .first()
                .map(|g| {
                    let host = response.host.as_str().to_string();
                    (
                        g.clone(),
                        response.error_code,
                        response.node_id.0,
                        host,
                        response.port,
                    )
                })
                .into_iter()
                .collect()
        };
        for group in asked {
            match answers.iter().find(|a| &a.0 == group) {
                Some((_, 0, node, host, port)) if *node >= 0 => {
                    engine.coordinators.insert(group.clone(), *node);
                    let addr = self.map_addr(format!("{host}:{port}"));
                    engine.brokers.insert(*node, addr);
                }
                Some((_, code, ..)) => {
                    group_errors.insert(
                        group.clone(),
                        ScalerError::bad_response(
                            &self.endpoint,
                            format!("no coordinator for group {group:?}: {}", error_name(*code)),
                        ),
                    );
                }
                None => {
                    group_errors.insert(
                        group.clone(),
                        ScalerError::bad_response(
                            &self.endpoint,
                            format!("FindCoordinator did not answer for group {group:?}"),
                        ),
                    );
                }
            }
        }
    }

    /// The addresses to try for a cluster-wide request: connected brokers, then the bootstrap
    /// servers, then the known brokers.
    fn candidates(&self, engine: &Engine) -> Vec<String> {
        let mut out: Vec<String> = engine.conns.keys().cloned().collect();
        out.sort();
        let known: BTreeSet<&String> = engine.brokers.values().collect();
        for addr in self
            .bootstrap
            .iter()
            .map(|b| self.map_addr(b.clone()))
            .chain(known.into_iter().cloned())
        {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// Sends a request to any broker that answers (connected ones first). Returns the answer and
    /// the version used. A connection that fails is dropped.
    async fn send_any<R: Request>(
        &self,
        engine: &mut Engine,
        build: impl Fn(&Connection) -> Result<(R, i16), WireError>,
    ) -> Result<(R::Response, i16), ScalerError> {
        let mut last: Option<ScalerError> = None;
        for addr in self.candidates(engine) {
            if !engine.conns.contains_key(&addr) {
                match Connection::connect(&addr, &self.connect, self.counters()).await {
                    Ok(conn) => {
                        engine.conns.insert(addr.clone(), conn);
                    }
                    Err(e) => {
                        last = Some(Self::wire_error(&addr, e));
                        continue;
                    }
                }
            }
            let Some(conn) = engine.conns.get_mut(&addr) else {
                continue;
            };
            let (request, version) = match build(conn) {
                Ok(built) => built,
                Err(e) => {
                    last = Some(Self::wire_error(&addr, e));
                    continue;
                }
            };
            match conn.request(&request, version).await {
                Ok(response) => return Ok((response, version)),
                Err(e) => {
                    engine.conns.remove(&addr);
                    last = Some(Self::wire_error(&addr, e));
                }
            }
        }
        Err(last.unwrap_or_else(|| ScalerError::unreachable(&self.endpoint, "no broker address to try")))
    }

    /// Sends the plan's requests, every broker concurrently, and fills the snapshot. Returns
    /// whether another pass is worth it (stale leaders or coordinators, newly discovered topics).
    async fn execute(
        &self,
        engine: &mut Engine,
        plan: &RoundPlan,
        set: &WatchSet,
        mut group_errors: HashMap<String, ScalerError>,
        snap: &mut Snapshot,
    ) -> bool {
        let mut retry = false;
        let mut tasks = tokio::task::JoinSet::new();
        let mut spawned: HashMap<tokio::task::Id, (i32, String)> = HashMap::new();
        for node in plan.brokers() {
            let work = NodeWork {
                list_offsets: plan.list_offsets.get(&node).cloned(),
                offset_fetch: plan.offset_fetch.get(&node).cloned().unwrap_or_default(),
            };
            let Some(addr) = engine.brokers.get(&node).cloned() else {
                let e = ScalerError::bad_response(
                    &self.endpoint,
                    format!("broker id {node} has no known address"),
                );
                fail_work(&work, &e, snap, &mut group_errors);
                engine.meta_dirty = true;
                continue;
            };
            let conn = engine.conns.remove(&addr);
            let handle = tasks.spawn(run_node(
                addr.clone(),
                conn,
                self.connect.clone(),
                self.counters(),
                work,
            ));
            spawned.insert(handle.id(), (node, addr));
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            let result = match joined {
                Ok((_, result)) => result,
                Err(e) => {
                    // A panic in a node task: its work counts as failed, nothing else is hurt.
                    let (node, addr) = spawned.get(&e.id()).cloned().unwrap_or((-1, String::new()));
                    let work = NodeWork {
                        list_offsets: plan.list_offsets.get(&node).cloned(),
                        offset_fetch: plan.offset_fetch.get(&node).cloned().unwrap_or_default(),
                    };
                    let err = ScalerError::bad_response(&Self::endpoint_of(&addr), "request task failed");
                    fail_work(&work, &err, snap, &mut group_errors);
                    continue;
                }
            };
            let addr = result.addr.clone();
            if let Some(conn) = result.conn {
                engine.conns.insert(addr.clone(), conn);
            }
            if let Some((asked, answer)) = result.list_offsets {
                retry |= self.apply_list_offsets(engine, &addr, &asked, answer, snap);
            }
            for (groups, answer) in result.offset_fetch {
                retry |= self.apply_offset_fetch(engine, &addr, &groups, answer, snap, &mut group_errors);
            }
        }
        for (topic, partition) in &plan.leaderless {
            engine.meta_dirty = true;
            snap.log_end.insert(
                (topic.clone(), *partition),
                Err(ScalerError::bad_response(
                    &self.endpoint,
                    format!("{topic}/{partition} has no leader right now"),
                )),
            );
        }
        for group in &plan.uncoordinated {
            let e = group_errors.remove(group).unwrap_or_else(|| {
                ScalerError::bad_response(
                    &self.endpoint,
                    format!("no coordinator known for group {group:?}"),
                )
            });
            snap.groups.insert(group.clone(), Err(e));
        }
        for (group, e) in group_errors {
            snap.groups.entry(group).or_insert(Err(e));
        }
        // Groups read without a topic: their committed topics decide what the next pass reads.
        for (group, watch) in &set.groups {
            if !watch.all_topics {
                continue;
            }
            if let Some(Ok(offsets)) = snap.groups.get(group) {
                let found = offsets.topics_with_commits();
                if found.iter().any(|t| !engine.meta_topics.contains(t)) {
                    retry = true;
                }
                engine.discovered.insert(group.clone(), found);
            }
        }
        retry
    }

    fn apply_list_offsets(
        &self,
        engine: &mut Engine,
        addr: &str,
        asked: &BTreeMap<String, Vec<i32>>,
        answer: Result<ListOffsetsResponse, WireError>,
        snap: &mut Snapshot,
    ) -> bool {
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                let e = Self::wire_error(addr, e);
                snap.wire_errors += 1;
                engine.meta_dirty = true;
                for (topic, partitions) in asked {
                    for p in partitions {
                        snap.log_end.insert((topic.clone(), *p), Err(e.clone()));
                    }
                }
                return false;
            }
        };
        let mut retry = false;
        for topic in &response.topics {
            let name = topic.name.as_str();
            for p in &topic.partitions {
                let value = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    if METADATA_ERRORS.contains(&p.error_code) {
                        engine.meta_dirty = true;
                        retry = true;
                    }
                    Err(ScalerError::bad_response(
                        &Self::endpoint_of(addr),
                        format!(
                            "ListOffsets {name}/{}: {}",
                            p.partition_index,
                            error_name(p.error_code)
                        ),
                    ))
                };
                snap.log_end.insert((name.to_string(), p.partition_index), value);
            }
        }
        retry
    }

    fn apply_offset_fetch(
        &self,
        engine: &mut Engine,
        addr: &str,
        groups: &[String],
        answer: Result<(OffsetFetchResponse, i16), WireError>,
        snap: &mut Snapshot,
        group_errors: &mut HashMap<String, ScalerError>,
    ) -> bool {
        let endpoint = Self::endpoint_of(addr);
        let (response, version) = match answer {
            Ok(r) => r,
            Err(e) => {
                let e = Self::wire_error(addr, e);
                snap.wire_errors += 1;
                for group in groups {
                    // The coordinator may have moved: ask again next round.
                    engine.coordinators.remove(group);
                    snap.groups.insert(group.clone(), Err(e.clone()));
                }
                return false;
            }
        };
        // (group, group-level error, partitions)
        let mut answers: Vec<(String, i16, GroupOffsets)> = Vec::new();
        if version >= 8 {
            for g in &response.groups {
                let mut offsets = GroupOffsets::default();
                for t in &g.topics {
                    for p in &t.partitions {
                        let value = if p.error_code == 0 {
                            Ok(p.committed_offset)
                        } else {
                            Err(p.error_code)
                        };
                        offsets
                            .committed
                            .insert((t.name.as_str().to_string(), p.partition_index), value);
                    }
                }
                answers.push((g.group_id.as_str().to_string(), g.error_code, offsets));
            }
        } else if let Some(group) = groups.first() {
            let mut offsets = GroupOffsets::default();
            for t in &response.topics {
                for p in &t.partitions {
                    let value = if p.error_code == 0 {
                        Ok(p.committed_offset)
                    } else {
                        Err(p.error_code)
                    };
                    offsets
                        .committed
                        .insert((t.name.as_str().to_string(), p.partition_index), value);
                }
            }
            answers.push((group.clone(), response.error_code, offsets));
        }
        let mut retry = false;
        for group in groups {
            let Some(index) = answers.iter().position(|a| &a.0 == group) else {
                snap.groups.insert(
                    group.clone(),
                    Err(ScalerError::bad_response(
                        &endpoint,
                        format!("OffsetFetch did not answer for group {group:?}"),
                    )),
                );
                continue;
            };
            let (_, code, offsets) = answers.swap_remove(index);
            if code == 0 {
                group_errors.remove(group);
                snap.groups.insert(group.clone(), Ok(offsets));
                continue;
            }
            if COORDINATOR_ERRORS.contains(&code) {
                engine.coordinators.remove(group);
                retry = true;
            }
            snap.groups.insert(
                group.clone(),
                Err(ScalerError::bad_response(
                    &endpoint,
                    format!("OffsetFetch for group {group:?}: {}", error_name(code)),
                )),
            );
        }
        retry
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

fn fail_work(
    work: &NodeWork,
    e: &ScalerError,
    snap: &mut Snapshot,
    group_errors: &mut HashMap<String, ScalerError>,
) {
    if let Some(topics) = &work.list_offsets {
        for (topic, partitions) in topics {
            for p in partitions {
                snap.log_end.insert((topic.clone(), *p), Err(e.clone()));
            }
        }
    }
    for group in work.offset_fetch.keys() {
        group_errors.remove(group);
        snap.groups.insert(group.clone(), Err(e.clone()));
    }
}

/// What one round asks of one broker.
struct NodeWork {
    list_offsets: Option<BTreeMap<String, Vec<i32>>>,
    offset_fetch: BTreeMap<String, GroupFetch>,
}

type ListOffsetsAnswer = (BTreeMap<String, Vec<i32>>, Result<ListOffsetsResponse, WireError>);
type OffsetFetchAnswer = (Vec<String>, Result<(OffsetFetchResponse, i16), WireError>);

struct NodeResult {
    addr: String,
    conn: Option<Connection>,
    list_offsets: Option<ListOffsetsAnswer>,
    offset_fetch: Vec<OffsetFetchAnswer>,
}

/// Sends one broker's share of a round over its connection (opened if needed). After the first
/// connection error the rest of the work fails with it, without reconnecting.
async fn run_node(
    addr: String,
    conn: Option<Connection>,
    options: ConnectOptions,
    counters: Arc<WireCounters>,
    work: NodeWork,
) -> NodeResult {
    let mut conn = match conn {
        Some(c) => Ok(c),
        None => Connection::connect(&addr, &options, counters).await,
    };
    let mut result = NodeResult {
        addr,
        conn: None,
        list_offsets: None,
        offset_fetch: Vec::new(),
    };
    if let Some(topics) = work.list_offsets {
        let answer = match &mut conn {
            Err(e) => Err(e.clone()),
            Ok(c) => match c.require_version::<ListOffsetsRequest>(1) {
                Err(e) => Err(e),
                Ok(version) => {
                    let answer = c.request(&list_offsets_request(&topics), version).await;
                    if let Err(e) = &answer {
                        conn = Err(e.clone());
                    }
                    answer
                }
            },
        };
        result.list_offsets = Some((topics, answer));
    }
    if !work.offset_fetch.is_empty() {
        let version = match &conn {
            Err(e) => Err(e.clone()),
            Ok(c) => c.require_version::<OffsetFetchRequest>(1),
        };
        match version {
            Err(e) => result
                .offset_fetch
                .push((work.offset_fetch.keys().cloned().collect(), Err(e))),
            Ok(version) => {
                for (groups, request) in offset_fetch_requests(&work.offset_fetch, version) {
                    let answer = match &mut conn {
                        Err(e) => Err(e.clone()),
                        Ok(c) => {
                            let answer = c.request(&request, version).await;
                            if let Err(e) = &answer {
                                conn = Err(e.clone());
                            }
                            answer
                        }
                    };
                    result.offset_fetch.push((groups, answer.map(|r| (r, version))));
                }
            }
        }
    }
    result.conn = conn.ok();
    result
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
