//! The kafka trigger end to end: `ebb operator` with its embedded metrics adapter behind the real
//! API server's aggregation layer, the real kube-controller-manager's HPA (1↔N), ebb (0↔1), and the
//! test environment's Tansu broker. A consumer Deployment at 0 replicas reads a 6-partition topic
//! with `lagThreshold: 5`. Two tests control the lag exactly: they produce and commit offsets
//! themselves, and the Deployment's pods stay Pending. The real-consumer test runs
//! `ebb.test/kafka-consumer:dev` pods (rdkafka, `tests/src/bin/kafka-consumer.rs`) on the test node
//! against a private broker on the node's bridge gateway: the pods consume and commit, nothing
//! commits in their place.
//!
//! The outage test runs a private Tansu broker of its own ([`ebb_tests::kafka::TansuBroker`], SQLite
//! storage, the test environment's `EBB_TANSU_BIN`) and stops the process mid-test, then starts it
//! again on the same port and data dir: the shared broker keeps running for every other test.
//!
//! The external-metrics APIService is cluster-wide: nextest runs this binary's tests one at a time
//! with the other binaries that register it (`.config/nextest.toml`), and [`LOCK`] serialises them
//! inside the binary (for `cargo test`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::kafka::{KafkaAdmin, TansuBroker, unique_name};
use ebb_tests::objects::deployment;
use ebb_tests::operator::OperatorProcess;
use ebb_tests::pods::{self, KAFKA_CONSUMER_IMAGE};
use ebb_tests::{TestEnv, TestNamespace, install_crds, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: i32 = 6;

struct Setup {
    env: TestEnv,
    ns: TestNamespace,
    operator: Option<OperatorProcess>,
    /// The broker the topic lives on (`host:port`).
    bootstrap: String,
    /// The test's own connection to it.
    admin: KafkaAdmin,
    topic: String,
    group: String,
}

impl Setup {
    /// A namespace, an operator with its adapter registered, a 6-partition topic whose group has
    /// committed offset 0 everywhere on `broker` (default: the shared `EBB_KAFKA_BOOTSTRAP`), and
    /// the Deployment `worker` at 0 replicas.
    async fn start(prefix: &str, broker: Option<&str>) -> Setup {
        let env = TestEnv::load().await.unwrap();
        install_crds(&env.client).await.unwrap();
        let ns = env.namespace(prefix).await.unwrap();
        let port = ebb_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let operator = OperatorProcess::start(&env, &ns.name, "op", &["--metrics-adapter-addr", &addr])
            .await
            .unwrap();
        ebb_tests::adapter::register(&env.client, &ns.name, port)
            .await
            .unwrap();
        let bootstrap = match broker {
            Some(addr) => addr.to_string(),
            None => env.var("EBB_KAFKA_BOOTSTRAP").unwrap().to_string(),
        };
        let mut admin = KafkaAdmin::connect(&bootstrap).await.unwrap();
        let topic = unique_name("orders");
        let group = unique_name("workers");
        admin.create_topic(&topic, PARTITIONS).await.unwrap();
        let zeros: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        admin.commit(&group, &topic, &zeros).await.unwrap();
        deployment(&env.client, &ns.name, "worker", 0).await.unwrap();
        Setup {
            env,
            ns,
            operator: Some(operator),
            bootstrap,
            admin,
            topic,
            group,
        }
    }

    fn client(&self) -> Client {
        self.env.client.clone()
    }

    /// Creates the ScaledObject `worker` on the topic's lag (threshold 5) with `extra` spec fields,
    /// and waits until it is Ready.
    async fn create_so(&self, extra: Value) {
        let mut spec = json!({
            "scaleTargetRef": {"name": "worker"},
            "cooldownPeriod": 3,
            "maxReplicaCount": 10,
            "triggers": [{"type": "kafka", "metadata": {
                "bootstrapServers": self.bootstrap, "consumerGroup": self.group, "topic": self.topic,
                "lagThreshold": "5"}}]
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "worker"}, "spec": spec,
        }))
        .unwrap();
        let api: Api<ScaledObject> = Api::namespaced(self.client(), &self.ns.name);
        // A CRD created moments ago may answer 503 for a little while.
        wait_for("ScaledObject created", Duration::from_secs(30), || async {
            api.create(&PostParams::default(), &so).await.ok().map(|_| ())
        })
        .await
        .unwrap();
        self.wait_condition("Ready", "True", Duration::from_secs(30))
            .await;
    }

    async fn condition(&self, type_: &str) -> Option<(String, String)> {
        let api: Api<ScaledObject> = Api::namespaced(self.client(), &self.ns.name);
        let so = api.get("worker").await.ok()?;
        let c = so.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((c.status, c.reason.unwrap_or_default()))
    }

    async fn wait_condition(&self, type_: &str, status: &str, within: Duration) -> Duration {
        let start = Instant::now();
        wait_for(&format!("worker {type_}={status}"), within, || async {
            self.condition(type_)
                .await
                .filter(|(s, _)| s == status)
                .map(|_| ())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        start.elapsed()
    }

    /// Waits until `/scale` reads `want`; returns how long it took.
    async fn wait_replicas(&self, want: i32, within: Duration) -> Duration {
        let start = Instant::now();
        let client = self.client();
        let ns = self.ns.name.clone();
        wait_for(&format!("worker at {want} replicas"), within, || {
            let client = client.clone();
            let ns = ns.clone();
            async move { (scale_replicas(&client, &ns).await? == want).then_some(()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        start.elapsed()
    }

    async fn finish(mut self) {
        ebb_tests::adapter::unregister(&self.env.client).await;
        if let Some(op) = self.operator.take() {
            op.terminate().await;
        }
        self.ns.delete().await.unwrap();
    }
}

/// The worker's replica count as `/scale` reads it (an omitted count is 0).
async fn scale_replicas(client: &Client, ns: &str) -> Option<i32> {
    let scale = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_scale("worker")
        .await
        .ok()?;
    Some(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
}

/// Reads `/scale` every 200 ms in the background until stopped.
struct Sampler {
    samples: Arc<Mutex<Vec<(Duration, i32)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(client: Client, ns: &str) -> Sampler {
        let samples: Arc<Mutex<Vec<(Duration, i32)>>> = Arc::default();
        let into = samples.clone();
        let ns = ns.to_string();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Some(r) = scale_replicas(&client, &ns).await {
                    into.lock().unwrap().push((start.elapsed(), r));
                }
            }
        });
        Sampler { samples, task }
    }

    fn snapshot(&self) -> Vec<(Duration, i32)> {
        self.samples.lock().unwrap().clone()
    }

    fn stop(self) -> Vec<(Duration, i32)> {
        self.task.abort();
        self.snapshot()
    }
}

/// `0 → 1 → 6` as `counts@seconds`, one entry per change.
fn transitions(samples: &[(Duration, i32)]) -> String {
    let mut out = Vec::new();
    let mut last = None;
    for (at, r) in samples {
        if last != Some(*r) {
            out.push(format!("{r}@{:.1}s", at.as_secs_f64()));
            last = Some(*r);
        }
    }
    out.join(" → ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_scales_zero_to_one_to_partition_count_and_back_to_zero() {
    let _serial = LOCK.lock().await;
    let mut s = Setup::start("e2e-kafka", None).await;
    // Default pollingInterval (30 s): the cold activation must come from the scaler's activity
    // channel, not from a poll.
    s.create_so(json!({})).await;
    assert_eq!(scale_replicas(&s.client(), &s.ns.name).await, Some(0));

    // A few messages: ebb activates the worker within 2 s.
    let produced = Instant::now();
    s.admin.produce(&s.topic, PARTITIONS, 3).await.unwrap();
    s.wait_replicas(1, Duration::from_secs(10)).await;
    let activation = produced.elapsed();
    eprintln!("activation: 3 messages → 1 replica in {activation:?} (pollingInterval 30 s)");
    assert!(
        activation <= Duration::from_secs(2),
        "activation took {activation:?}"
    );

    // 100 more: lag 103, ceil(103/5) = 21, capped at the 6 partitions. The HPA may pass through
    // intermediate counts but never goes above 6.
    let sampler = Sampler::start(s.client(), &s.ns.name);
    s.admin.produce(&s.topic, PARTITIONS, 100).await.unwrap();
    let to_six = s.wait_replicas(PARTITIONS, Duration::from_secs(90)).await;
    // Hold for a few HPA syncs (2 s each in the test environment) to catch an overshoot.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let samples = sampler.stop();
    let max = samples.iter().map(|(_, r)| *r).max().unwrap_or(0);
    eprintln!(
        "lag 103: 1 → 6 replicas in {to_six:?}; samples every 200 ms: {} (max {max}, {} samples)",
        transitions(&samples),
        samples.len()
    );
    assert_eq!(max, PARTITIONS, "{}", transitions(&samples));
    assert_eq!(samples.last().map(|(_, r)| *r), Some(PARTITIONS));

    // Everything consumed: the HPA goes to 1, ebb parks the worker at 0 after the cooldown.
    let committed = Instant::now();
    s.admin
        .commit_to_end(&s.group, &s.topic, PARTITIONS)
        .await
        .unwrap();
    s.wait_replicas(0, Duration::from_secs(90)).await;
    eprintln!(
        "all offsets committed → 0 replicas in {:?} (cooldown 3 s, pollingInterval 30 s)",
        committed.elapsed()
    );
    s.wait_condition("Active", "False", Duration::from_secs(10)).await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_engages_fallback_and_scaling_resumes_after_it() {
    let _serial = LOCK.lock().await;
    // A broker of this test's own, so stopping it leaves the shared one alone.
    let bin = TestEnv::load()
        .await
        .unwrap()
        .var("EBB_TANSU_BIN")
        .unwrap()
        .to_string();
    let mut broker = TansuBroker::start(Path::new(&bin)).await.unwrap();
    let mut s = Setup::start("e2e-kafka-outage", Some(&broker.addr)).await;
    s.create_so(json!({"pollingInterval": 2, "fallback": {"failureThreshold": 2, "replicas": 3}}))
        .await;

    // Lag 7 (one record batch per partition): ceil(7/5) = 2 replicas.
    s.admin.produce(&s.topic, PARTITIONS, 7).await.unwrap();
    s.wait_replicas(2, Duration::from_secs(60)).await;
    s.wait_condition("Fallback", "False", Duration::from_secs(10))
        .await;

    // The outage: SIGTERM to the broker. Tansu stops its storage at once (requests fail from
    // then on) and exits after draining its open connections (~5 s while ebb stays connected).
    let sampler = Sampler::start(s.client(), &s.ns.name);
    let outage = Instant::now();
    broker.stop().await;
    let stopped = outage.elapsed();
    assert!(!broker.is_running());
    assert!(
        KafkaAdmin::connect(&broker.addr).await.is_err(),
        "broker still answers"
    );
    s.wait_condition("Fallback", "True", Duration::from_secs(30))
        .await;
    let engaged = outage.elapsed();
    s.wait_replicas(3, Duration::from_secs(30)).await;
    let three_from = outage.elapsed();
    eprintln!(
        "outage: broker process gone {stopped:?} after SIGTERM; Fallback=True after {engaged:?}, \
         3 replicas after {three_from:?}"
    );
    // Several polling intervals without a broker: the fallback count holds, never 0.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = sampler.snapshot();
    eprintln!("during the outage: {}", transitions(&during));
    assert!(
        during.iter().all(|(_, r)| *r > 0),
        "scaled to 0 during the outage: {}",
        transitions(&during)
    );
    assert!(
        during
            .iter()
            .filter(|(at, _)| *at > three_from + Duration::from_millis(500))
            .all(|(_, r)| *r == 3),
        "fallback count not held: {}",
        transitions(&during)
    );
    assert_eq!(s.condition("Fallback").await.unwrap().0, "True");

    // The broker starts again on the same port and data dir: topic, records and the group's
    // commits are still there (SQLite), so the lag is still 7.
    broker.resume().await.unwrap();
    let restarted = Instant::now();
    s.admin = KafkaAdmin::connect(&broker.addr).await.unwrap();
    let ends = s.admin.end_offsets(&s.topic, PARTITIONS).await.unwrap();
    assert_eq!(ends, vec![2, 1, 1, 1, 1, 1], "log ends after the restart");
    assert_eq!(
        s.admin
            .lag(&s.group, &s.topic, PARTITIONS)
            .await
            .unwrap()
            .iter()
            .sum::<i64>(),
        7
    );
    // The fallback clears and the HPA follows the lag again: 3 → 2 (lag 7).
    let cleared = s
        .wait_condition("Fallback", "False", Duration::from_secs(30))
        .await;
    s.wait_replicas(2, Duration::from_secs(60)).await;
    eprintln!(
        "broker restarted: Fallback=False after {cleared:?}, 2 replicas (lag 7) after {:?}",
        restarted.elapsed()
    );
    // And keeps following it: 15 more, lag 22 → 5.
    let produced = Instant::now();
    s.admin.produce(&s.topic, PARTITIONS, 15).await.unwrap();
    s.wait_replicas(5, Duration::from_secs(60)).await;
    wait_for("the sampler to see 5", Duration::from_secs(5), || async {
        (sampler.snapshot().last().map(|(_, r)| *r) == Some(5)).then_some(())
    })
    .await
    .unwrap();
    let samples = sampler.stop();
    eprintln!(
        "lag 22 → 5 replicas after {:?}; whole run: {}",
        produced.elapsed(),
        transitions(&samples)
    );
    assert!(samples.iter().all(|(_, r)| *r > 0), "{}", transitions(&samples));

    // And back to 0 once everything is consumed.
    s.admin
        .commit_to_end(&s.group, &s.topic, PARTITIONS)
        .await
        .unwrap();
    s.wait_replicas(0, Duration::from_secs(60)).await;
    s.finish().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_consumers_drain_a_burst_zero_to_n_and_back_to_zero() {
    let _serial = LOCK.lock().await;
    let env = TestEnv::load().await.unwrap();
    pods::require_node(&env).unwrap();
    // The broker listens on the node's bridge gateway, which host processes (the test, ebb) and
    // pods all reach, and advertises that address.
    let bin = env.var("EBB_TANSU_BIN").unwrap().to_string();
    let gateway = env.var("EBB_NODE_GATEWAY").unwrap().to_string();
    let mut broker = TansuBroker::start_on(Path::new(&bin), &gateway).await.unwrap();
    let mut s = Setup::start("e2e-kafka-pods", Some(&broker.addr)).await;
    // The worker becomes a real consumer: each message takes it 100 ms, then it commits.
    let template = json!({"spec": {"template": {"spec": {
        "nodeSelector": null,
        "terminationGracePeriodSeconds": 10,
        "containers": [{"name": "worker", "image": KAFKA_CONSUMER_IMAGE, "imagePullPolicy": "Never",
            "env": [{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": s.bootstrap},
                    {"name": "KAFKA_TOPIC", "value": s.topic},
                    {"name": "KAFKA_GROUP", "value": s.group},
                    {"name": "PROCESS_DELAY_MS", "value": "100"}]}]}}}});
    Api::<Deployment>::namespaced(s.client(), &s.ns.name)
        .patch("worker", &PatchParams::default(), &Patch::Merge(template))
        .await
        .unwrap();
    s.create_so(json!({})).await;
    assert_eq!(scale_replicas(&s.client(), &s.ns.name).await, Some(0));

    // A burst of 300: lag 300 wants ceil(300/5) = 60, capped at the 6 partitions.
    let sampler = Sampler::start(s.client(), &s.ns.name);
    let produced = Instant::now();
    s.admin.produce(&s.topic, PARTITIONS, 300).await.unwrap();
    s.wait_replicas(1, Duration::from_secs(10)).await;
    let activated = produced.elapsed();
    let first_pod = wait_for("a consumer pod ready", Duration::from_secs(60), || async {
        (pods::ready_count(&s.client(), &s.ns.name, "app=worker")
            .await
            .ok()?
            >= 1)
            .then_some(())
    })
    .await;
    let pod_ready = produced.elapsed();
    if let Err(e) = first_pod {
        panic!("{e}; pods: {}", describe_pods(&s).await);
    }
    // The HPA adds consumers while the lag lasts: at least two pods run at once.
    let many = wait_for(
        "two or more consumer pods ready",
        Duration::from_secs(60),
        || async {
            let n = pods::ready_count(&s.client(), &s.ns.name, "app=worker")
                .await
                .ok()?;
            (n >= 2).then_some(n)
        },
    )
    .await;
    let most_ready = match many {
        Ok(n) => n,
        Err(e) => panic!("{e}; pods: {}", describe_pods(&s).await),
    };

    // They consume everything and commit it: the group's lag reaches 0 with no help.
    let drained = wait_for("the group's lag at 0", Duration::from_secs(120), || async {
        let mut admin = KafkaAdmin::connect(&s.bootstrap).await.ok()?;
        let lag = admin.lag(&s.group, &s.topic, PARTITIONS).await.ok()?;
        (lag.iter().sum::<i64>() == 0).then_some(())
    })
    .await;
    if let Err(e) = drained {
        panic!("{e}; pods: {}", describe_pods(&s).await);
    }
    let drained_after = produced.elapsed();
    let ends = s.admin.end_offsets(&s.topic, PARTITIONS).await.unwrap();
    let committed = s.admin.committed(&s.group, &s.topic, PARTITIONS).await.unwrap();
    assert_eq!(ends.iter().sum::<i64>(), 300);
    let ends: Vec<Option<i64>> = ends.into_iter().map(Some).collect();
    assert_eq!(committed, ends, "committed offsets = log ends");

    // ebb parks the consumers at 0 after the cooldown, and their pods go away.
    s.wait_replicas(0, Duration::from_secs(90)).await;
    // (Each pod gets SIGTERM, leaves the group and exits; the kubelet then tears the sandbox
    // down and deletes the pod object. Usually seconds; generous on a loaded 2-core machine.)
    let gone = pods::wait_gone(&s.client(), &s.ns.name, "app=worker", Duration::from_secs(120)).await;
    if let Err(e) = gone {
        panic!("{e}; pods: {}", describe_pods(&s).await);
    }
    let samples = sampler.stop();
    let max = samples.iter().map(|(_, r)| *r).max().unwrap_or(0);
    eprintln!(
        "300 messages: 1 replica after {activated:?}, first consumer ready after {pod_ready:?}, \
         {most_ready} ready at once, lag 0 after {drained_after:?}; replicas: {}",
        transitions(&samples)
    );
    assert!((2..=PARTITIONS).contains(&max), "{}", transitions(&samples));
    s.finish().await;
    broker.stop().await;
}

/// One line per pod of the worker: name, phase and why it waits (for failure messages).
async fn describe_pods(s: &Setup) -> String {
    match pods::list(&s.client(), &s.ns.name, "app=worker").await {
        Ok(list) => list
            .iter()
            .map(|p| {
                format!(
                    "{} {}{}{}",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    pods::phase(p),
                    if p.metadata.deletion_timestamp.is_some() {
                        " (terminating)"
                    } else {
                        ""
                    },
                    pods::waiting_reason(p)
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("cannot list: {e}"),
    }
}
