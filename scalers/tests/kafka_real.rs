//! The kafka scaler against the real Kafka-protocol broker (Tansu) of the test environment.
//!
//! Start it with `tests/env/testenv.sh up`; the address comes from the env file it writes
//! (`$EBB_TESTENV_FILE`, else `~/.cache/ebb-testenv/run/env`). Without that file every test here
//! fails (never passes silently). Each test uses its own topics and groups (random names) and
//! leaves the shared broker running.
//!
//! Records are produced with ordinary batching: each `produce` call sends its records as one record
//! batch (the broker is Tansu's SQLite build, whose ListOffsets(latest) is exact for batches of any
//! size; its memory build was not, see `multi_record_batches_give_the_exact_log_end_offset`).
//! Offsets are committed with standalone OffsetCommit requests (generation -1, no member), through
//! ebb's own protocol connection.

mod common;
use common::unique;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_scalers::kafka::{KafkaClusters, KafkaConfig, KafkaOptions, KafkaSample, KafkaScaler};
use ebb_scalers::parse_trigger;
use ebb_scalers::{Scaler, ScalerError, ScalerFactory};
use ebb_tests::kafka::KafkaAdmin;
use kafka_protocol::messages::ApiKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// The test environment
// ---------------------------------------------------------------------------------------------

/// `EBB_KAFKA_BOOTSTRAP` from the env file; panics (fails the test) without it.
fn bootstrap() -> String {
    common::var(&common::testenv(), "EBB_KAFKA_BOOTSTRAP").to_string()
}

// ---------------------------------------------------------------------------------------------
// Producing and committing: the shared test admin, failing the test on errors
// ---------------------------------------------------------------------------------------------

/// [`KafkaAdmin`] (`ebb_tests::kafka`) with every error a test failure.
struct Admin(KafkaAdmin);

impl Admin {
    async fn connect(addr: &str) -> Admin {
        Admin(
            KafkaAdmin::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the broker at {addr}: {e}")),
        )
    }

    async fn create_topic(&mut self, name: &str, partitions: i32) {
        self.0
            .create_topic(name, partitions)
            .await
            .unwrap_or_else(|e| panic!("CreateTopics {name}: {e}"));
    }

    /// Produces `n` records to one partition as one record batch, in one request; returns the
    /// base offset the batch got (its records take `base..base + n`).
    async fn produce(&mut self, topic: &str, partition: i32, n: usize) -> i64 {
        let ends = self
            .0
            .end_offsets(topic, partition + 1)
            .await
            .unwrap_or_else(|e| panic!("ListOffsets {topic}: {e}"));
        let values: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        self.0
            .produce_batch(topic, partition, &values)
            .await
            .unwrap_or_else(|e| panic!("Produce {topic}/{partition}: {e}"));
        ends[partition as usize]
    }

    /// Commits `offsets` (partition → offset) of `topic` for `group` (standalone commit).
    async fn commit(&mut self, group: &str, topic: &str, offsets: &[(i32, i64)]) {
        self.0
            .commit(group, topic, offsets)
            .await
            .unwrap_or_else(|e| panic!("OffsetCommit {group} {topic}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Building scalers
// ---------------------------------------------------------------------------------------------

fn trigger_meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn scaler(clusters: &KafkaClusters, pairs: &[(&str, &str)]) -> KafkaScaler {
    let meta = trigger_meta(pairs);
    let trigger = parse_trigger(0, "kafka", &meta, Some(&BTreeMap::new()), None)
        .unwrap_or_else(|e| panic!("trigger does not parse: {e}"));
    let config = KafkaConfig::try_from(&trigger.params).expect("kafka config");
    KafkaScaler::new(clusters.clone(), config).expect("kafka scaler")
}

async fn detailed(s: &KafkaScaler) -> KafkaSample {
    s.sample_detailed()
        .await
        .unwrap_or_else(|e| panic!("sample failed: {e}"))
}

/// Samples until `ok` holds (the broker may take a moment to expose a commit), or panics.
async fn sample_until(s: &KafkaScaler, what: &str, ok: impl Fn(&KafkaSample) -> bool) -> KafkaSample {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = s.sample_detailed().await;
        if let Ok(sample) = &last
            && ok(sample)
        {
            return *sample;
        }
        if Instant::now() > deadline {
            panic!("{what}: last sample {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Lag accuracy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_with_a_committed_group_and_each_missing_commit_policy() {
    let bootstrap = bootstrap();
    let topic = unique("lag");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 3).await;
    admin.produce(&topic, 0, 5).await;
    admin.produce(&topic, 1, 3).await;
    admin.produce(&topic, 2, 2).await;
    // p0 committed at 2 (lag 3), p1 at 3 (lag 0), p2 never committed (log end 2).
    admin.commit(&group, &topic, &[(0, 2), (1, 3)]).await;

    let clusters = KafkaClusters::new(KafkaOptions::default());
    let base = [
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
        ("lagThreshold", "2"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut pairs: Vec<(&str, &str)> = base.to_vec();
        pairs.extend_from_slice(extra);
        scaler(&clusters, &pairs)
    };
    let latest = with(&[]);
    let latest_zero = with(&[("scaleToZeroOnInvalidOffset", "true")]);
    let earliest = with(&[("offsetResetPolicy", "earliest")]);
    let earliest_zero = with(&[
        ("offsetResetPolicy", "earliest"),
        ("scaleToZeroOnInvalidOffset", "true"),
    ]);

    let s = sample_until(&latest, "latest: lag 3 + 0 + 1", |s| s.lag.total_lag == 4).await;
    assert_eq!((s.lag.partitions, s.lag.partitions_with_lag), (3, 2));
    assert_eq!(s.desired_replicas, 2);
    assert!(
        (s.value - 3.9).abs() < 1e-9,
        "uncapped: (2 − 0.05) × 2, got {}",
        s.value
    );
    assert!(s.active);
    assert_eq!(detailed(&latest_zero).await.lag.total_lag, 3);
    assert_eq!(detailed(&earliest).await.lag.total_lag, 5);
    assert_eq!(detailed(&earliest_zero).await.lag.total_lag, 3);

    // One cluster client serves all four triggers (and the samples read one snapshot).
    let stats = clusters.stats();
    assert_eq!((stats.clusters, stats.triggers), (1, 4), "{stats:?}");

    // Consuming everything: lag 0 with a commit everywhere, inactive.
    admin.commit(&group, &topic, &[(0, 5), (1, 3), (2, 2)]).await;
    let s = sample_until(&latest, "all committed", |s| s.lag.total_lag == 0).await;
    assert!(!s.active);
    assert_eq!((s.desired_replicas, s.value), (0, 0.0));

    // A lag of 7 on 3 partitions with lagThreshold 1 asks for 3 replicas, never more (KEDA #4483).
    admin.produce(&topic, 0, 7).await;
    let capped = with(&[("lagThreshold", "1")]);
    let s = sample_until(&capped, "capped", |s| s.lag.total_lag == 7).await;
    assert_eq!((s.desired_replicas, s.value), (3, 3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_record_batches_give_the_exact_log_end_offset() {
    // Tansu's memory build answered ListOffsets(latest) with "base offset of the last batch + 1":
    // 1 instead of 10 here, then 11 instead of 20.
    let bootstrap = bootstrap();
    let topic = unique("batch");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 1).await;
    admin.commit(&group, &topic, &[(0, 0)]).await;
    assert_eq!(
        admin.produce(&topic, 0, 10).await,
        0,
        "first batch: offsets 0..10"
    );

    let clusters = KafkaClusters::new(KafkaOptions::default());
    let s = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("lagThreshold", "4"),
        ],
    );
    let first = sample_until(&s, "one batch of 10", |x| x.lag.total_lag >= 10).await;
    assert_eq!(first.lag.total_lag, 10, "{first:?}");
    assert_eq!(first.desired_replicas, 1, "capped at the one partition");

    assert_eq!(
        admin.produce(&topic, 0, 10).await,
        10,
        "second batch: offsets 10..20"
    );
    let second = sample_until(&s, "two batches of 10", |x| x.lag.total_lag >= 20).await;
    assert_eq!(second.lag.total_lag, 20, "{second:?}");
    // A commit in the middle of a batch: the lag counts records, not batches.
    admin.commit(&group, &topic, &[(0, 13)]).await;
    let third = sample_until(&s, "committed at 13", |x| x.lag.total_lag < 20).await;
    assert_eq!(third.lag.total_lag, 7, "{third:?}");
    assert!(third.active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_topic_reads_every_topic_the_group_committed() {
    let bootstrap = bootstrap();
    let (a, b, c) = (unique("ta"), unique("tb"), unique("tc"));
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&a, 2).await;
    admin.create_topic(&b, 1).await;
    admin.create_topic(&c, 1).await;
    admin.produce(&a, 0, 4).await;
    admin.produce(&a, 1, 2).await;
    admin.produce(&b, 0, 6).await;
    admin.produce(&c, 0, 9).await;
    // The group committed on a/0 and b/0 only; c is not its topic.
    admin.commit(&group, &a, &[(0, 1)]).await;
    admin.commit(&group, &b, &[(0, 5)]).await;

    let clusters = KafkaClusters::new(KafkaOptions::default());
    let all = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("lagThreshold", "1"),
        ],
    );
    // a/0: 3, a/1: no commit (latest) 1, b/0: 1 → 5 over 3 partitions; c is not counted.
    let s = sample_until(&all, "group topics", |s| s.lag.partitions == 3).await;
    assert_eq!(s.lag.total_lag, 5, "{s:?}");
    assert_eq!(s.desired_replicas, 3);
    assert_eq!(s.value, 3.0, "capped at the 3 partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_limitation_counts_only_the_listed_partitions() {
    let bootstrap = bootstrap();
    let topic = unique("limit");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 4).await;
    for p in 0..4 {
        admin.produce(&topic, p, (p + 1) as usize).await;
    }
    admin
        .commit(&group, &topic, &[(0, 0), (1, 0), (2, 0), (3, 0)])
        .await;
    let clusters = KafkaClusters::new(KafkaOptions::default());
    let limited = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("partitionLimitation", "1,3"),
        ],
    );
    let all = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("topic", &topic),
        ],
    );
    let s = sample_until(&limited, "limited", |s| s.lag.total_lag == 2 + 4).await;
    assert_eq!(s.lag.partitions, 2);
    let s = sample_until(&all, "all", |s| s.lag.total_lag == 1 + 2 + 3 + 4).await;
    assert_eq!(s.lag.partitions, 4);

    // limitToPartitionsWithLag: only partitions 1 and 3 lag once 0 and 2 are consumed.
    admin.commit(&group, &topic, &[(0, 1), (2, 3)]).await;
    let with_lag = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("lagThreshold", "1"),
            ("limitToPartitionsWithLag", "true"),
        ],
    );
    let s = sample_until(&with_lag, "with lag", |s| s.lag.total_lag == 6).await;
    assert_eq!((s.lag.partitions_with_lag, s.desired_replicas), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_lag_counts_for_activation_only() {
    let bootstrap = bootstrap();
    let topic = unique("stuck");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 1).await;
    admin.produce(&topic, 0, 4).await;
    admin.commit(&group, &topic, &[(0, 1)]).await;
    let clusters = KafkaClusters::new(KafkaOptions::default());
    let s = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("excludePersistentLag", "true"),
        ],
    );
    let first = sample_until(&s, "first poll", |x| x.lag.total_lag_with_persistent == 3).await;
    assert_eq!(first.lag.total_lag, 3, "first poll: no previous offset, counts");
    // The next poll reads a newer snapshot; the commit did not move: 0 for the metric, still active.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = detailed(&s).await;
    assert_eq!(
        (second.lag.total_lag, second.lag.total_lag_with_persistent),
        (0, 3)
    );
    assert!(second.active);
    assert_eq!(second.value, 0.0);
    // Polling again on the same snapshot gives the same answer (no self-comparison).
    let again = detailed(&s).await;
    assert_eq!(again.lag, second.lag);
    // The consumer moves: counts again.
    admin.commit(&group, &topic, &[(0, 2)]).await;
    sample_until(&s, "moved", |x| x.lag.total_lag == 2).await;
}

// ---------------------------------------------------------------------------------------------
// Cold activation and cost
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_activation_through_activity_changes_within_a_second() {
    let bootstrap = bootstrap();
    let topic = unique("cold");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 2).await;
    admin.commit(&group, &topic, &[(0, 0), (1, 0)]).await;
    // Default settings (tick 1 s), built through the factory like the operator does.
    let factory = ScalerFactory::default();
    let meta = trigger_meta(&[
        ("bootstrapServers", &bootstrap),
        ("consumerGroup", &group),
        ("topic", &topic),
    ]);
    let trigger = parse_trigger(0, "kafka", &meta, Some(&BTreeMap::new()), None).expect("parses");
    let scaler: Arc<dyn Scaler> = factory.build(&trigger).expect("kafka scaler");
    assert_eq!(scaler.trigger_type(), "kafka");
    assert_eq!(scaler.metric_target().target_value, 10.0);

    let mut measured = Vec::new();
    for round in 0..3 {
        let idle = scaler.sample().await.expect("sample");
        assert!(!idle.active, "round {round}: {idle:?}");
        let mut changes = scaler.activity_changes().expect("kafka pushes activity");
        // Let the ticker settle into its rhythm at a random phase.
        tokio::time::sleep(Duration::from_millis(300 + 250 * round)).await;
        let start = Instant::now();
        admin.produce(&topic, round as i32 % 2, 1).await;
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("activity flips within 5 s")
            .expect("channel open");
        let latency = start.elapsed();
        assert!(*changes.borrow(), "flipped to active");
        let active = scaler.sample().await.expect("sample");
        assert!(active.active && active.value > 0.0, "{active:?}");
        measured.push(latency);
        // Consume it: inactive again, and the channel flips back.
        let mut changes = scaler.activity_changes().expect("channel");
        let end = (round / 2 + 1) as i64;
        admin.commit(&group, &topic, &[(round as i32 % 2, end)]).await;
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("activity flips back within 5 s")
            .expect("channel open");
        assert!(!*changes.borrow());
    }
    println!("cold activation latency (message written → activity_changes fired): {measured:?}");
    for latency in &measured {
        assert!(*latency < Duration::from_millis(1500), "{measured:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_triggers_cost_one_round_of_leaders_plus_coordinators_per_tick() {
    let bootstrap = bootstrap();
    let topics: Vec<String> = (0..5).map(|_| unique("fleet")).collect();
    let groups: Vec<String> = (0..10).map(|_| unique("fg")).collect();
    let mut admin = Admin::connect(&bootstrap).await;
    for t in &topics {
        admin.create_topic(t, 4).await;
        admin.produce(t, 0, 2).await;
    }
    for g in &groups {
        for t in &topics {
            admin.commit(g, t, &[(0, 1)]).await;
        }
    }
    let clusters = KafkaClusters::new(KafkaOptions::default());
    let scalers: Vec<KafkaScaler> = (0..100)
        .map(|i| {
            scaler(
                &clusters,
                &[
                    ("bootstrapServers", &bootstrap),
                    ("consumerGroup", &groups[i % 10]),
                    ("topic", &topics[i % 5]),
                ],
            )
        })
        .collect();
    // Warm up: metadata, coordinators, connections.
    for s in &scalers {
        sample_until(s, "warm up", |x| x.lag.total_lag == 1 + 3).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = clusters.stats();
    let window = Instant::now();
    // Every trigger polls several times during the window, as 100 operator loops would.
    while window.elapsed() < Duration::from_secs(5) {
        for s in &scalers {
            s.sample().await.expect("sample");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = clusters.stats();
    let rounds = after.rounds - before.rounds;
    let delta = |k: ApiKey| after.requests_of(k) - before.requests_of(k);
    // One broker: it leads every partition and coordinates every group.
    let (leaders, coordinators) = (1, 1);
    println!(
        "100 triggers, 10 groups × 5 topics × 4 partitions, over {:?}: {rounds} rounds; ListOffsets {}, \
         OffsetFetch {}, Metadata {}, FindCoordinator {}, ApiVersions {}; open connections {}",
        window.elapsed(),
        delta(ApiKey::ListOffsets),
        delta(ApiKey::OffsetFetch),
        delta(ApiKey::Metadata),
        delta(ApiKey::FindCoordinator),
        delta(ApiKey::ApiVersions),
        after.open_connections,
    );
    // One round per tick, started a tick apart (the round's own time is not added).
    let ticks = (window.elapsed().as_secs_f64() / clusters.options().tick.as_secs_f64()).round() as u64;
    assert!(
        rounds.abs_diff(ticks) <= 2,
        "one round per tick: {rounds} rounds in {ticks} ticks"
    );
    // The window may cut one round between its start and its requests.
    assert!(delta(ApiKey::ListOffsets).abs_diff(rounds * leaders) <= 1);
    assert!(delta(ApiKey::OffsetFetch).abs_diff(rounds * coordinators) <= 1);
    assert_eq!(delta(ApiKey::Metadata), 0);
    assert_eq!(delta(ApiKey::FindCoordinator), 0);
    assert_eq!(delta(ApiKey::ApiVersions), 0, "no reconnection");
    assert_eq!(after.open_connections, 1);

    // Dropping every scaler unregisters them; the ticker stops and closes its connection.
    drop(scalers);
    let deadline = Instant::now() + Duration::from_secs(5);
    while clusters.stats().open_connections > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = clusters.stats();
    assert_eq!((idle.clusters, idle.open_connections), (0, 0), "{idle:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        clusters.stats().rounds,
        idle.rounds,
        "no ticking without triggers"
    );
}

// ---------------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_gives_errors_and_no_connections() {
    // Port 1 on loopback: nothing listens there.
    let clusters = KafkaClusters::new(KafkaOptions {
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let s = scaler(
        &clusters,
        &[
            ("bootstrapServers", "127.0.0.1:1"),
            ("consumerGroup", "g"),
            ("topic", "t"),
        ],
    );
    for _ in 0..5 {
        let e = s.sample().await.expect_err("no broker");
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        assert_eq!(clusters.stats().open_connections, 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The samples share the failed rounds' snapshots: one connection attempt per round, not
    // one per sample.
    let stats = clusters.stats();
    println!(
        "unreachable broker: 5 failed samples, {} rounds, {} failed connects",
        stats.rounds, stats.failed_connects
    );
    assert!(
        stats.failed_connects >= 1 && stats.failed_connects <= stats.rounds,
        "{stats:?}"
    );
    assert_eq!(stats.connections_opened, 0);
}

/// A TCP relay to the broker that can be cut (every relayed connection closed, listener gone)
/// and restored on the same port.
struct Relay {
    addr: String,
    target: String,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut relay = Relay {
            addr,
            target: target.to_string(),
            tasks: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                pipes.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every relayed connection.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(&self.addr)
            .await
            .expect("bind the same port again");
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_gives_errors_without_leaks_and_recovers_without_restart() {
    let bootstrap = bootstrap();
    let topic = unique("outage");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 2).await;
    admin.produce(&topic, 0, 3).await;
    admin.commit(&group, &topic, &[(0, 1), (1, 0)]).await;

    let mut relay = Relay::start(&bootstrap).await;
    // Every address (bootstrap and advertised) goes through the relay.
    let clusters = KafkaClusters::new(KafkaOptions {
        request_timeout: Duration::from_millis(800),
        address_map: BTreeMap::from([(bootstrap.clone(), relay.addr.clone())]),
        ..Default::default()
    });
    let s = scaler(
        &clusters,
        &[
            ("bootstrapServers", &relay.addr),
            ("consumerGroup", &group),
            ("topic", &topic),
        ],
    );
    sample_until(&s, "through the relay", |x| x.lag.total_lag == 2).await;
    assert_eq!(clusters.stats().open_connections, 1);

    relay.cut().await;
    let mut errors = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(6) {
        match s.sample().await {
            Err(e) => {
                errors += 1;
                assert!(!e.to_string().is_empty());
            }
            Ok(x) => assert!(outage.elapsed() < Duration::from_secs(2), "stale success {x:?}"),
        }
        let open = clusters.stats().open_connections;
        assert!(open <= 1, "connections grow during the outage: {open}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(errors > 5, "errors during the outage: {errors}");
    let during = clusters.stats();
    println!(
        "outage: {errors} failed samples, {} failed connects, open connections {}",
        during.failed_connects, during.open_connections
    );

    relay.restore().await;
    admin.produce(&topic, 1, 2).await;
    let recovered = Instant::now();
    sample_until(&s, "recovered", |x| x.lag.total_lag == 4).await;
    println!("recovered {:?} after the relay came back", recovered.elapsed());
    assert_eq!(clusters.stats().open_connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_does_not_exist_is_an_error_naming_it() {
    let bootstrap = bootstrap();
    let clusters = KafkaClusters::new(KafkaOptions::default());
    let missing = unique("nope");
    let s = scaler(
        &clusters,
        &[
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", "g"),
            ("topic", &missing),
        ],
    );
    let e = s.sample().await.expect_err("no such topic");
    assert!(e.to_string().contains(&missing), "{e}");
}

// ---------------------------------------------------------------------------------------------
// TLS (a TLS-terminating relay in front of the broker)
// ---------------------------------------------------------------------------------------------

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, as PEM.
struct TestPki {
    ca_pem: String,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ebb kafka test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "ebb kafka test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("signed");
        (cert, key)
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
    TestPki {
        ca_pem: ca.pem(),
        server_chain: vec![server.der().clone()],
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// Accepts TLS on 127.0.0.1 (requiring a client certificate of the test CA when `client_auth`)
/// and relays the plain bytes to `upstream`. Stops when dropped.
struct TlsRelay {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_relay(pki: &TestPki, client_auth: bool, upstream: String) -> TlsRelay {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).expect("server key");
    let config = builder
        .with_single_cert(pki.server_chain.clone(), key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            connections.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsRelay { addr, task }
}

fn scaler_with_auth(clusters: &KafkaClusters, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> KafkaScaler {
    let trigger = parse_trigger(0, "kafka", &trigger_meta(meta), Some(&trigger_meta(auth)), None)
        .unwrap_or_else(|e| panic!("trigger does not parse: {e}"));
    let config = KafkaConfig::try_from(&trigger.params).expect("kafka config");
    KafkaScaler::new(clusters.clone(), config).expect("kafka scaler")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_and_client_certificate_or_unsafe_ssl() {
    let bootstrap = bootstrap();
    let topic = unique("tls");
    let group = unique("g");
    let mut admin = Admin::connect(&bootstrap).await;
    admin.create_topic(&topic, 1).await;
    admin.produce(&topic, 0, 3).await;
    admin.commit(&group, &topic, &[(0, 1)]).await;

    let pki = test_pki();
    let mtls = tls_relay(&pki, true, bootstrap.clone()).await;
    let tls = tls_relay(&pki, false, bootstrap.clone()).await;
    let through = |relay: &TlsRelay| {
        KafkaClusters::new(KafkaOptions {
            request_timeout: Duration::from_secs(2),
            address_map: BTreeMap::from([(bootstrap.clone(), relay.addr.clone())]),
            ..Default::default()
        })
    };

    // Mutual TLS: CA, client certificate and key from the TriggerAuthentication.
    let clusters = through(&mtls);
    let meta = [
        ("bootstrapServers", mtls.addr.as_str()),
        ("consumerGroup", &group),
        ("topic", &topic),
    ];
    let ok = scaler_with_auth(
        &clusters,
        &meta,
        &[
            ("tls", "enable"),
            ("ca", &pki.ca_pem),
            ("cert", &pki.client_cert_pem),
            ("key", &pki.client_key_pem),
        ],
    );
    let s = sample_until(&ok, "over mutual TLS", |x| x.lag.total_lag == 2).await;
    assert!(s.active);
    // Without the client certificate the relay refuses the handshake: an error, no connection.
    let no_cert = scaler_with_auth(&clusters, &meta, &[("tls", "enable"), ("ca", &pki.ca_pem)]);
    let e = no_cert.sample().await.expect_err("client certificate required");
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    assert_eq!(
        clusters.stats().clusters,
        2,
        "different credentials, different clients"
    );
    assert_eq!(clusters.stats().open_connections, 1);
    let debug = format!("{clusters:?} {ok:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");

    // Server-only TLS: an unknown CA fails verification, unsafeSsl skips it.
    let clusters = through(&tls);
    let meta = [
        ("bootstrapServers", tls.addr.as_str()),
        ("consumerGroup", &group),
        ("topic", &topic),
    ];
    let untrusted = scaler_with_auth(&clusters, &meta, &[("tls", "enable")]);
    let e = untrusted.sample().await.expect_err("unknown issuer");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let mut unsafe_meta = meta.to_vec();
    unsafe_meta.push(("unsafeSsl", "true"));
    let skip = scaler_with_auth(&clusters, &unsafe_meta, &[("tls", "enable")]);
    let s = sample_until(&skip, "unsafeSsl", |x| x.lag.total_lag == 2).await;
    assert_eq!(s.desired_replicas, 1);
}
