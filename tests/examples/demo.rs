//! The README's demo: a Kafka consumer scaled on its consumer group's lag by ebb, on a real
//! kube-apiserver and kube-controller-manager and a Kafka-protocol broker (Tansu). ebb does 0↔1
//! itself; the HPA it owns does 1↔N from the metrics ebb serves through the aggregation layer.
//! The Deployment declares its scaling in annotations; ebb generates the ScaledObject.
//!
//! The consumers are real pods on the test node (`ebb.test/kafka-consumer:dev`, an rdkafka consumer
//! that takes [`PROCESS_DELAY_MS`] per message and commits it): they start, drain the topic and
//! go away. Nothing commits offsets in their place. The broker is a private Tansu on the node's
//! bridge gateway, which both the pods and ebb reach.
//! Run through `tests/demo.sh` (or, with the environment and the images up,
//! `EBB_TESTENV_FILE=$(tests/env/testenv.sh env) cargo run -p ebb-tests --example demo`).

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::kafka::{KafkaAdmin, TansuBroker, unique_name};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::pods::{self, KAFKA_CONSUMER_IMAGE};
use ebb_tests::{TestEnv, install_crds, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;

type Error = Box<dyn std::error::Error>;

/// Partitions of the topic: the most replicas that can share the work.
const PARTITIONS: i32 = 6;
/// `lagThreshold`: messages waiting per replica.
const LAG_THRESHOLD: i64 = 20;
/// The burst produced at once.
const BURST: usize = 200;
/// Time each consumer spends on one message: 4 per second per pod.
const PROCESS_DELAY_MS: u64 = 250;
/// The ScaledObject ebb generates from the consumer Deployment's annotations.
const GENERATED: &str = "consumer-deployment";
/// `pollingInterval` and `cooldownPeriod` of the ScaledObject, in seconds.
const POLLING_INTERVAL: i64 = 5;
const COOLDOWN: i64 = 10;
/// The timeline gives up after this long.
const TIMELINE_LIMIT: Duration = Duration::from_secs(120);

/// The Deployment's replica count as `/scale` reads it (an omitted count is 0).
async fn scale_replicas(client: &kube::Client, ns: &str) -> Result<i32, Error> {
    let scale = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_scale("consumer")
        .await?;
    Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
}

/// `min(ceil(lag / threshold), partitions)`: the count ebb asks for.
fn desired(lag: i64) -> i64 {
    ((lag + LAG_THRESHOLD - 1) / LAG_THRESHOLD).min(PARTITIONS as i64)
}

/// What the timeline saw, for the summary.
#[derive(Default)]
struct Seen {
    activated: Option<f64>,
    first_ready: Option<f64>,
    peak: i32,
    peak_at: f64,
    drained: Option<f64>,
    parked: Option<f64>,
}

async fn timeline(
    client: &kube::Client,
    ns: &str,
    admin: &mut KafkaAdmin,
    group: &str,
    topic: &str,
) -> Result<Seen, Error> {
    println!("     time    lag  desired  replicas  ready");
    let start = Instant::now();
    let produced = start.elapsed();
    admin.produce(topic, PARTITIONS, BURST).await?;
    println!(
        "  [{:>5.1}s]  burst: {BURST} messages produced over {PARTITIONS} partitions (in {} ms)",
        produced.as_secs_f64(),
        (start.elapsed() - produced).as_millis()
    );
    let mut seen = Seen::default();
    let mut last: Option<(i64, i32, usize)> = None;
    let mut printed = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = start.elapsed().as_secs_f64();
        let replicas = scale_replicas(client, ns).await?;
        let ready = pods::ready_count(client, ns, "app=consumer").await?;
        let lag: i64 = admin.lag(group, topic, PARTITIONS).await?.iter().sum();
        // A line when a count changes, and every 3 s while the lag moves.
        let changed = match last {
            None => true,
            Some((l, r, p)) => {
                r != replicas
                    || p != ready
                    || desired(l) != desired(lag)
                    || (l != lag && printed.elapsed() >= Duration::from_secs(3))
            }
        };
        if changed {
            printed = Instant::now();
            let note = match last {
                Some((_, before, _)) if before != replicas => {
                    let who = if before == 0 {
                        "ebb activates the consumer"
                    } else if replicas == 0 {
                        "ebb parks it at zero after the cooldown"
                    } else {
                        "the HPA follows the lag"
                    };
                    format!("{before} → {replicas}: {who}")
                }
                Some((_, _, before)) if before < ready => format!("a consumer pod is ready ({ready})"),
                Some((_, _, before)) if before > ready => format!("a consumer pod stopped ({ready} ready)"),
                _ => String::new(),
            };
            let bar = "■".repeat(ready);
            println!(
                "  [{now:>5.1}s] {lag:>5} {:>6} {replicas:>7} {ready:>6}  {bar:<10} {note}",
                desired(lag)
            );
            last = Some((lag, replicas, ready));
        }
        if ready > 0 && seen.first_ready.is_none() {
            seen.first_ready = Some(now);
        }
        if replicas > 0 && seen.activated.is_none() {
            seen.activated = Some(now);
        }
        if replicas > seen.peak {
            seen.peak = replicas;
            seen.peak_at = now;
        }
        if lag == 0 && seen.activated.is_some() && seen.drained.is_none() {
            seen.drained = Some(now);
        }
        if lag == 0 && replicas == 0 && ready == 0 && seen.activated.is_some() {
            seen.parked = Some(now);
            return Ok(seen);
        }
        if start.elapsed() > TIMELINE_LIMIT {
            return Err(format!("the demo did not return to 0 replicas within {TIMELINE_LIMIT:?}").into());
        }
    }
}

async fn run(env: &TestEnv, ns: &str, operator_addr: &str, bootstrap: &str) -> Result<(), Error> {
    let client = env.client.clone();
    let mut admin = KafkaAdmin::connect(bootstrap).await?;
    let topic = unique_name("orders");
    let group = unique_name("orders-consumer");
    admin.create_topic(&topic, PARTITIONS).await?;
    let zeros: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    admin.commit(&group, &topic, &zeros).await?;
    println!("Kafka (Tansu at {bootstrap}): topic {topic}, {PARTITIONS} partitions; consumer group {group}");

    // The one-object path: the Deployment declares its scaling in annotations, and ebb
    // generates (and owns) the ScaledObject `consumer-deployment` from them.
    let annotations = json!({
        "autoscaling.ebb.dev/trigger": "kafka",
        "autoscaling.ebb.dev/max-replicas": "10",
        "autoscaling.ebb.dev/polling-interval": POLLING_INTERVAL.to_string(),
        "autoscaling.ebb.dev/cooldown-period": COOLDOWN.to_string(),
        "kafka.autoscaling.ebb.dev/bootstrapServers": bootstrap,
        "kafka.autoscaling.ebb.dev/consumerGroup": group,
        "kafka.autoscaling.ebb.dev/topic": topic,
        "kafka.autoscaling.ebb.dev/lagThreshold": LAG_THRESHOLD.to_string(),
    });
    let consumer: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "consumer", "annotations": annotations},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "consumer"}},
                 "template": {"metadata": {"labels": {"app": "consumer"}}, "spec": {
                     "terminationGracePeriodSeconds": 10,
                     "containers": [{"name": "consumer", "image": KAFKA_CONSUMER_IMAGE,
                                     "imagePullPolicy": "Never",
                                     "env": [{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": bootstrap},
                                             {"name": "KAFKA_TOPIC", "value": topic},
                                             {"name": "KAFKA_GROUP", "value": group},
                                             {"name": "PROCESS_DELAY_MS", "value": PROCESS_DELAY_MS.to_string()}]}]}}}
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &consumer)
        .await?;
    println!("Deployment consumer at 0 replicas, annotated:");
    for (k, v) in annotations.as_object().into_iter().flatten() {
        println!("  {k}: {}", v.as_str().unwrap_or_default());
    }
    let api = Api::<ScaledObject>::namespaced(client.clone(), ns);
    wait_for(
        "ebb to generate ScaledObject consumer-deployment and find it Ready",
        Duration::from_secs(60),
        || async {
            let status = api.get(GENERATED).await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    println!(
        "ebb generated ScaledObject {GENERATED} (owned by the Deployment): lagThreshold {LAG_THRESHOLD}, \
         at most 10 replicas (the {PARTITIONS} partitions cap it), pollingInterval {POLLING_INTERVAL} s, \
         cooldown {COOLDOWN} s"
    );
    println!("ebb's metrics adapter serves external.metrics.k8s.io on {operator_addr}\n");
    println!(
        "The consumers are real pods on the test node ({KAFKA_CONSUMER_IMAGE}, rdkafka): each takes \
         {PROCESS_DELAY_MS} ms\n  per message and commits it.\n  \
         desired = min(ceil(lag / {LAG_THRESHOLD}), {PARTITIONS} partitions); replicas = the \
         Deployment's /scale; ready = consumer pods Running and Ready.\n"
    );

    let seen = timeline(&client, ns, &mut admin, &group, &topic).await?;
    println!();
    if let Some(a) = seen.activated {
        println!("0 → 1 within {a:.1} s of the burst (ebb, woken by the Kafka client's activity signal)");
    }
    if let Some(r) = seen.first_ready {
        println!("first consumer pod ready at {r:.1} s (its start on this node)");
    }
    println!(
        "peak {} replicas at {:.1} s: ceil({BURST} / {LAG_THRESHOLD}) = {} wanted, capped at the \
         {PARTITIONS} partitions",
        seen.peak,
        seen.peak_at,
        (BURST as i64 + LAG_THRESHOLD - 1) / LAG_THRESHOLD
    );
    if let (Some(d), Some(p)) = (seen.drained, seen.parked) {
        println!("lag 0 at {d:.1} s; back to 0 replicas at {p:.1} s (cooldown {COOLDOWN} s)");
    }
    if let Some(status) = api.get(GENERATED).await?.status {
        println!("\nScaledObject {GENERATED} status:");
        for c in status.conditions {
            println!(
                "  {:<9} {:<8} {}",
                c.type_,
                c.status,
                c.reason.unwrap_or_default()
            );
        }
        println!(
            "  hpaName {}, metrics {:?}",
            status.hpa_name.unwrap_or_default(),
            status.external_metric_names
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = TestEnv::load().await?;
    let client = env.client.clone();
    install_crds(&client).await?;
    let ns = env.namespace("ebb-demo").await?;
    println!(
        "ebb demo on a real control plane ({}), namespace {}: ebb's CRDs installed",
        env.kube_flavor(),
        ns.name
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    pods::require_node(&env)?;
    // A broker of the demo's own on the node's bridge gateway: pods and ebb both reach it there.
    let broker = TansuBroker::start_on(
        std::path::Path::new(env.var("EBB_TANSU_BIN")?),
        env.var("EBB_NODE_GATEWAY")?,
    )
    .await?;
    let operator = OperatorProcess::start(&env, &ns.name, "demo", &["--metrics-adapter-addr", &addr]).await?;
    let result = match ebb_tests::adapter::register(&client, &ns.name, port).await {
        Ok(()) => {
            println!(
                "ebb operator running; APIService {} and the HPA controller's RBAC point at its \
                 metrics adapter",
                ebb_tests::adapter::APISERVICE
            );
            run(&env, &ns.name, &addr, &broker.addr).await
        }
        Err(e) => Err(e.into()),
    };
    println!("\ncleaning up: APIService, operator, namespace {}", ns.name);
    ebb_tests::adapter::unregister(&client).await;
    operator.terminate().await;
    ns.delete().await?;
    result
}
