//! Control-plane faults (issue 15): the shared kube-apiserver, then etcd, SIGKILLed while
//! ScaledObjects are active, kept down longer than the operator's Lease, and started again over
//! their kept state (`tests/env/testenv.sh proc-down` / `proc-up`).
//!
//! One operator (`--lease-duration 4`, its metrics adapter registered as the external metrics
//! APIService), kept running the way a kubelet keeps a container: started again whenever it
//! exits. Four ScaledObjects on real brokers: Kafka and NATS JetStream, one of each at 0 with an
//! idle source and one of each at N > 1 through its HPA. A watch records every replica count of
//! every Deployment across the outage. Afterwards:
//! - nothing changed while the control plane was away (no active object went to 0, no idle one
//!   left it);
//! - scaling resumes within [`RESUME_BOUND`] of the API server's readiness: a message to each idle
//!   source scales it 0 → 1; then each busy source's lag drops and the HPA scales it in, and
//!   once drained ebb parks it at 0 after its cooldown, without flapping;
//! - every object has its owned HPA and Ready=True, and the operator leads and stays up.
//!
//! These tests stop servers every other test uses: they are `#[ignore]`d and `tests/run-all.sh`
//! runs them after the other tests. Each holds the APIService lock (which also keeps the two
//! apart), and an [`Outage`] brings its process back even when the test fails.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use ebb_tests::adapter as apiservice;
use ebb_tests::control_plane::{
    ControlPlaneProcess, Outage, ReplicaRecord, Supervised, changes_after, monotonic, signed_secs,
};
use ebb_tests::fixture::Fixture;
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use ebb_tests::leader::{free_local_addr, wait_holder, wait_leader_gauge};
use ebb_tests::nats::stream_with_worker;
use ebb_tests::objects::deployment;
use ebb_tests::wait_for;
use futures::StreamExt;
use serde_json::{Value, json};

/// `--lease-duration` of the operator.
const LEASE_SECS: u64 = 4;

/// How long the process stays down: well over the Lease, so the operator has stepped down (after
/// two thirds of it) and its Lease has run out before the control plane returns.
const OUTAGE: Duration = Duration::from_secs(15);

/// From the API server's readiness to the first scaling decision carried out (an idle object's
/// 0 → 1). The operator stepped down during the outage (its renewals failed), exited, was started
/// again after 1 s and waits the outage out in its start-up retries (1 s doubling to 5 s, ±25 %).
/// Measured on 2026-12-03 (15 s outages, two runs each):
/// - after the API server's restart 6.9 s and 7.9 s (an earlier run: 9.0 / 9.6 s), nearly all of
///   it one ScaledObject list that got a 503 while the restarted API server was not ready yet and
///   then slept in kube-rs's own retry of 503s (5 ms doubling, up to ×3 jitter: the list returned
///   10.1 s after its first 503);
/// - after etcd's restart 1.7 s and 10.6 s: in the slower run the apiextensions-apiserver (a
///   process of its own here, with its own etcd connections in gRPC's reconnect backoff) served
///   ScaledObjects only 8.7 s after the API server's readiness; from then on the operator took
///   1.8 s (the start-up retry, one second's head start given to a standby, one poll).
///
/// Bound: the slowest measurement plus half as much again.
const RESUME_BOUND: Duration = Duration::from_secs(16);

/// `cooldownPeriod` of every object.
const COOLDOWN: u64 = 5;

/// `pollingInterval` of every object.
const POLLING: u64 = 2;

/// Partitions of every Kafka topic.
const PARTITIONS: i32 = 6;

/// `lagThreshold` of every trigger.
const THRESHOLD: i64 = 5;

/// Messages waiting on each busy source: ceil(23 / 5) = 5 replicas on Kafka.
const KAFKA_BUSY: usize = 23;
/// ceil(12 / 5) = 3 replicas on NATS.
const NATS_BUSY: usize = 12;
/// What each busy source keeps after its lag drops: ceil(9 / 5) = 2 replicas on Kafka; ceil(8 /
/// 5) = 2 on NATS.
const KAFKA_LOWER: i64 = 9;
const NATS_LOWER: usize = 8;

const KAFKA_IDLE: &str = "k-idle";
const KAFKA_BUSY_SO: &str = "k-busy";
const NATS_IDLE: &str = "n-idle";
const NATS_BUSY_SO: &str = "n-busy";
const OBJECTS: [&str; 4] = [KAFKA_IDLE, KAFKA_BUSY_SO, NATS_IDLE, NATS_BUSY_SO];

/// A Kafka topic and its consumer group, one per object.
struct KafkaSource {
    topic: String,
    group: String,
}

/// A NATS stream with its durable consumer `worker`, one per object.
struct NatsSource {
    stream: String,
    subject: String,
    consumer: jetstream::consumer::PullConsumer,
}

struct Scenario {
    f: Fixture,
    operator: Supervised,
    health: String,
    kafka: KafkaAdmin,
    bootstrap: String,
    k_idle: KafkaSource,
    k_busy: KafkaSource,
    js: jetstream::Context,
    n_idle: NatsSource,
    n_busy: NatsSource,
    record: ReplicaRecord,
    _apiservice_lock: std::fs::File,
}

impl Scenario {
    /// The operator with its adapter registered, the four objects settled (idle at 0, busy at
    /// their HPA's count), and the replica record running.
    async fn start(prefix: &str) -> Scenario {
        let lock = apiservice::lock().await;
        let f = Fixture::start(prefix, 0).await.unwrap();
        apiservice::wait_until_free(&f.client()).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let adapter = format!("127.0.0.1:{port}");
        let health = free_local_addr();
        let lease = LEASE_SECS.to_string();
        let operator = Supervised::start(
            &f.kubeconfig(),
            &health,
            &f.ns.name,
            "op",
            &["--lease-duration", &lease, "--metrics-adapter-addr", &adapter],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        wait_holder(&f.client(), &f.ns.name, "op", Duration::from_secs(30))
            .await
            .unwrap();
        apiservice::register(&f.client(), &f.ns.name, port).await.unwrap();
        let record = ReplicaRecord::start(&f.client(), &f.ns.name);

        let bootstrap = f.env.var("EBB_KAFKA_BOOTSTRAP").unwrap().to_string();
        let mut kafka = KafkaAdmin::connect(&bootstrap).await.unwrap();
        let k_idle = kafka_source(&mut kafka).await;
        let k_busy = kafka_source(&mut kafka).await;
        kafka
            .produce(&k_busy.topic, PARTITIONS, KAFKA_BUSY)
            .await
            .unwrap();
        let nats = async_nats::connect(f.env.var("EBB_NATS_URL").unwrap())
            .await
            .unwrap();
        let js = jetstream::new(nats);
        let n_idle = nats_source(&js).await;
        let n_busy = nats_source(&js).await;
        publish(&js, &n_busy, NATS_BUSY).await;

        let s = Scenario {
            f,
            operator,
            health,
            kafka,
            bootstrap,
            k_idle,
            k_busy,
            js,
            n_idle,
            n_busy,
            record,
            _apiservice_lock: lock,
        };
        for name in OBJECTS {
            deployment(&s.f.client(), &s.f.ns.name, name, 0).await.unwrap();
        }
        s.create(KAFKA_IDLE, s.kafka_trigger(&s.k_idle)).await;
        s.create(KAFKA_BUSY_SO, s.kafka_trigger(&s.k_busy)).await;
        s.create(NATS_IDLE, s.nats_trigger(&s.n_idle)).await;
        s.create(NATS_BUSY_SO, s.nats_trigger(&s.n_busy)).await;
        let since = Instant::now();
        for (name, want) in [(KAFKA_BUSY_SO, 5), (NATS_BUSY_SO, 3)] {
            let took =
                s.f.wait_replicas(name, want, since, Duration::from_secs(90))
                    .await;
            eprintln!("{name} at {want} {took:?} after creation");
        }
        s.check_recovered().await;
        s
    }

    fn kafka_trigger(&self, source: &KafkaSource) -> Value {
        json!({"type": "kafka", "metadata": {
            "bootstrapServers": self.bootstrap, "consumerGroup": source.group, "topic": source.topic,
            "lagThreshold": THRESHOLD.to_string()}})
    }

    fn nats_trigger(&self, source: &NatsSource) -> Value {
        json!({"type": "nats-jetstream", "metadata": {
            "natsServerMonitoringEndpoint": self.f.env.var("EBB_NATS_MONITORING").unwrap(), "account": "$G",
            "stream": source.stream, "consumer": "worker", "lagThreshold": THRESHOLD.to_string()}})
    }

    async fn create(&self, name: &str, trigger: Value) {
        let spec = json!({
            "scaleTargetRef": {"name": name},
            "pollingInterval": POLLING,
            "cooldownPeriod": COOLDOWN,
            "maxReplicaCount": 10,
            "triggers": [trigger],
        });
        self.f.create_so_spec(name, spec, json!({})).await;
    }

    /// Every object Ready=True with its owned HPA named in its status, and the operator leading.
    async fn check_recovered(&self) {
        for name in OBJECTS {
            self.f
                .wait_condition(name, "Ready", "True", Duration::from_secs(30))
                .await;
            let hpa = format!("ebb-hpa-{name}");
            let owned = wait_for(
                &format!("{hpa} owned by {name}"),
                Duration::from_secs(30),
                || async {
                    let found = self
                        .f
                        .hpas()
                        .await
                        .into_iter()
                        .find(|h| h.metadata.name.as_deref() == Some(hpa.as_str()))?;
                    let owners = found.metadata.owner_references.unwrap_or_default();
                    owners
                        .iter()
                        .any(|o| o.kind == "ScaledObject" && o.name == name)
                        .then_some(())
                },
            )
            .await;
            owned.unwrap_or_else(|e| panic!("{e}"));
            let status = self.f.so_api().get(name).await.unwrap().status.unwrap();
            assert_eq!(status.hpa_name.as_deref(), Some(hpa.as_str()));
        }
        wait_leader_gauge(&self.health, true, Duration::from_secs(10))
            .await
            .unwrap();
    }

    /// The whole fault: settle, stop `process`, keep it down for [`OUTAGE`], start it again, and
    /// check the objects through their next moves.
    async fn outage(mut self, process: ControlPlaneProcess) {
        // Settled: nothing moves for a few seconds.
        let origin = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let settled = Instant::now();
        for (name, want) in [
            (KAFKA_IDLE, 0),
            (KAFKA_BUSY_SO, 5),
            (NATS_IDLE, 0),
            (NATS_BUSY_SO, 3),
        ] {
            assert_eq!(self.f.replicas(name).await, want, "{name} before the outage");
        }

        let outage = Outage::begin(&self.f.env, process, "KILL").await.unwrap();
        let down = Instant::now();
        eprintln!("{} killed", process.name());
        tokio::time::sleep(OUTAGE).await;
        let up = Instant::now();
        outage.end(&self.f.client()).await.unwrap();
        let ready = Instant::now();
        eprintln!(
            "{} down {:.1} s; ready {:.1} s after proc-up",
            process.name(),
            (up - down).as_secs_f64(),
            (ready - up).as_secs_f64()
        );
        let crds = wait_for("ScaledObjects listed", Duration::from_secs(60), || async {
            self.f.so_api().list(&Default::default()).await.ok().map(|_| ())
        })
        .await;
        crds.unwrap_or_else(|e| panic!("{e}"));
        eprintln!("ScaledObjects served {:?} after readiness", ready.elapsed());

        // Resume: a message to each idle source.
        self.kafka
            .produce_one(&self.k_idle.topic, 0, "wake")
            .await
            .unwrap();
        publish(&self.js, &self.n_idle, 1).await;
        let woken = Instant::now();
        let mut resumed = Vec::new();
        for name in [KAFKA_IDLE, NATS_IDLE] {
            let took = self
                .f
                .wait_replicas(name, 1, ready, Duration::from_secs(90))
                .await;
            eprintln!("{name} 0 → 1 {took:?} after readiness (bound {RESUME_BOUND:?})");
            resumed.push((name, took));
        }

        // The busy objects held their counts all along; now their lag drops: the HPA scales in.
        let lowered = Instant::now();
        for (name, want) in [(KAFKA_BUSY_SO, 5), (NATS_BUSY_SO, 3)] {
            assert_eq!(self.f.replicas(name).await, want, "{name} after the outage");
        }
        self.lower_kafka().await;
        consume(&self.n_busy, NATS_BUSY - NATS_LOWER).await;
        for name in [KAFKA_BUSY_SO, NATS_BUSY_SO] {
            let took = self
                .f
                .wait_replicas(name, 2, lowered, Duration::from_secs(60))
                .await;
            eprintln!("{name} → 2 {took:?} after its lag dropped");
        }
        // Drained: ebb parks every object at 0 after its cooldown.
        let drained = Instant::now();
        self.kafka
            .commit_to_end(&self.k_busy.group, &self.k_busy.topic, PARTITIONS)
            .await
            .unwrap();
        self.kafka
            .commit_to_end(&self.k_idle.group, &self.k_idle.topic, PARTITIONS)
            .await
            .unwrap();
        consume(&self.n_busy, NATS_LOWER).await;
        consume(&self.n_idle, 1).await;
        let mut parked = Vec::new();
        for name in OBJECTS {
            let took = self
                .f
                .wait_replicas(name, 0, drained, Duration::from_secs(COOLDOWN + 30))
                .await;
            eprintln!("{name} → 0 {took:?} after its source drained (cooldown {COOLDOWN} s)");
            parked.push((name, took));
        }
        self.check_recovered().await;
        self.record
            .final_read(&self.f.client(), &self.f.ns.name)
            .await
            .unwrap();

        // --- the record ---
        eprintln!(
            "--- {} outage: replica record (s from settling) ---",
            process.name()
        );
        eprintln!("{}", self.record.render(settled));
        let lists: Vec<String> = self
            .record
            .lists()
            .iter()
            .map(|t| format!("{:.1}", signed_secs(settled, *t)))
            .collect();
        eprintln!("watch (re)lists at {lists:?} s");
        let exits = self.operator.exits();
        for e in &exits {
            eprintln!(
                "operator exited at {:.1} s ({}), outage {:.1} → {:.1} s",
                signed_secs(settled, e.at),
                e.status,
                signed_secs(settled, down),
                signed_secs(settled, ready)
            );
        }
        let log = std::fs::read_to_string(self.f.log("op")).unwrap_or_default();
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();

        // Nothing moved while the control plane was away, nor until the next move was asked for.
        for name in [KAFKA_IDLE, NATS_IDLE] {
            let moves = changes_after(&self.record.of(name), settled);
            let early: Vec<_> = self
                .record
                .of(name)
                .into_iter()
                .filter(|s| s.at > settled && s.at < woken)
                .collect();
            assert!(early.is_empty(), "{name} moved before it was woken: {early:?}");
            assert_eq!(
                moves,
                [1, 0],
                "{name} after settling (1 when woken, 0 when drained)"
            );
        }
        for name in [KAFKA_BUSY_SO, NATS_BUSY_SO] {
            let record = self.record.of(name);
            let early: Vec<_> = record
                .iter()
                .filter(|s| s.at > settled && s.at < lowered)
                .collect();
            assert!(early.is_empty(), "{name} moved before its lag dropped: {early:?}");
            let moves = changes_after(&record, settled);
            assert!(
                monotonic(&moves) && moves.first() == Some(&2) && moves.last() == Some(&0),
                "{name} after its lag dropped: {moves:?} (expected 2, maybe 1, then 0)"
            );
            assert!(
                !record
                    .iter()
                    .any(|s| s.replicas == 0 && s.at > origin && s.at < drained),
                "{name} went to 0 while active: {record:?}"
            );
        }
        // The API server's restart ends every watch, so the record's watch must have listed again;
        // while etcd is away the API server keeps its watches open (they only go quiet).
        if process == ControlPlaneProcess::ApiServer {
            assert!(
                self.record.lists().len() >= 2,
                "the watch never listed again after the outage"
            );
        }
        for (name, took) in resumed {
            assert!(
                took <= RESUME_BOUND,
                "{name} resumed {took:?} after readiness (bound {RESUME_BOUND:?})"
            );
        }
        for (name, took) in parked {
            assert!(
                took >= Duration::from_secs(COOLDOWN) - Duration::from_secs(POLLING),
                "{name} parked {took:?} after draining: the cooldown of {COOLDOWN} s was cut short"
            );
        }
        assert!(panics.is_empty(), "the operator panicked: {panics:?}");
        // Stepping down during the outage is expected; exiting after the control plane is back
        // would be a crash loop.
        let late: Vec<f64> = exits
            .iter()
            .filter(|e| e.at > ready)
            .map(|e| signed_secs(ready, e.at))
            .collect();
        assert!(late.is_empty(), "the operator exited {late:?} s after readiness");
        self.finish().await;
    }

    /// Commits the busy group so that [`KAFKA_LOWER`] messages stay behind.
    async fn lower_kafka(&mut self) {
        let ends = self
            .kafka
            .end_offsets(&self.k_busy.topic, PARTITIONS)
            .await
            .unwrap();
        let mut keep = KAFKA_LOWER;
        let mut offsets = Vec::new();
        for (p, end) in ends.iter().enumerate() {
            let kept = keep.min(*end).min(2);
            keep -= kept;
            offsets.push((p as i32, end - kept));
        }
        assert_eq!(
            keep, 0,
            "the topic holds fewer than {KAFKA_LOWER} messages: {ends:?}"
        );
        self.kafka
            .commit(&self.k_busy.group, &self.k_busy.topic, &offsets)
            .await
            .unwrap();
    }

    async fn finish(self) {
        // While the operator runs: it takes its finalizers off.
        for name in OBJECTS {
            let _ = self.f.so_api().delete(name, &Default::default()).await;
        }
        let _ = wait_for("ScaledObjects gone", Duration::from_secs(20), || async {
            let list = self.f.so_api().list(&Default::default()).await.ok()?;
            list.items.is_empty().then_some(())
        })
        .await;
        apiservice::unregister(&self.f.client()).await;
        self.operator.stop().await;
        for s in [&self.n_idle, &self.n_busy] {
            let _ = self.js.delete_stream(&s.stream).await;
        }
        drop(self.record);
        self.f.finish(Vec::new()).await;
    }
}

async fn kafka_source(admin: &mut KafkaAdmin) -> KafkaSource {
    let topic = unique_name("cp-orders");
    let group = unique_name("cp-workers");
    admin.create_topic(&topic, PARTITIONS).await.unwrap();
    let zeros: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    admin.commit(&group, &topic, &zeros).await.unwrap();
    KafkaSource { topic, group }
}

async fn nats_source(js: &jetstream::Context) -> NatsSource {
    let stream = unique_name("EBB_CP").replace('-', "_").to_uppercase();
    let subject = stream.to_lowercase();
    let consumer = stream_with_worker(js, &stream, &subject).await.unwrap();
    NatsSource {
        stream,
        subject,
        consumer,
    }
}

async fn publish(js: &jetstream::Context, source: &NatsSource, n: usize) {
    for i in 0..n {
        js.publish(format!("{}.{i}", source.subject), format!("job {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Fetches and double-acks `n` messages (the lag has dropped when this returns).
async fn consume(source: &NatsSource, n: usize) {
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while done < n {
        assert!(
            Instant::now() < deadline,
            "fetched {done} of {n} from {}",
            source.stream
        );
        let mut batch = source
            .consumer
            .fetch()
            .max_messages(n - done)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            message.unwrap().double_ack().await.unwrap();
            done += 1;
        }
    }
}

#[tokio::test]
#[ignore = "disruptive: restarts the shared control plane; tests/run-all.sh runs it after the other tests"]
async fn api_server_killed_while_objects_are_active() {
    let s = Scenario::start("cp-api").await;
    s.outage(ControlPlaneProcess::ApiServer).await;
}

#[tokio::test]
#[ignore = "disruptive: restarts the shared control plane; tests/run-all.sh runs it after the other tests"]
async fn etcd_killed_while_objects_are_active() {
    let s = Scenario::start("cp-etcd").await;
    s.outage(ControlPlaneProcess::Etcd).await;
}
