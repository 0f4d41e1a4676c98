//! Scenario: from the first message to a consumer that runs. A Kafka consumer Deployment at 0
//! replicas (the real rdkafka consumer image `ebb.test/kafka-consumer:dev` on the test node), a
//! ScaledObject at the defaults (only the target and the trigger), one message produced; measured:
//! - **activation:** the message → the Deployment at 1 replica (ebb's part);
//! - **pod running:** the message → the first consumer pod `Running` (adds the scheduler, the
//!   kubelet and containerd on this node);
//! - **first consumed:** the message → the group's committed offset covering it (the consumer
//!   joined the group, fetched, processed and committed).
//!
//! Samples run one after the other, each on its own topic, group, Deployment and ScaledObject,
//! which are deleted afterwards, so pods of earlier samples do not load later ones. The broker is
//! a private Tansu on the node's bridge gateway (pods reach it there). t0 is taken just before the
//! produce request; the three moments are polled every 25 ms.
//!
//! Needs the test environment with its node (`tests/env/testenv.sh up`) and the consumer image
//! (`tests/env/images.sh kafka-consumer`); `bench/run.sh pod_start_latency` does both.
//! `EBB_BENCH_SAMPLES` (default 20) sets the number of samples.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use ebb_bench::operator_under_test::OperatorUnderTest;
use ebb_bench::{quantile_ms, write_result};
use ebb_crds::ScaledObject;
use ebb_tests::kafka::{KafkaAdmin, TansuBroker, unique_name};
use ebb_tests::pods::{self, KAFKA_CONSUMER_IMAGE};
use ebb_tests::{TestEnv, install_crds, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

/// How long one sample may take before it counts as failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// The three moments of one sample, from the produce.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    activation: Duration,
    running: Duration,
    consumed: Duration,
}

fn figures(mut d: Vec<Duration>) -> Value {
    d.sort();
    let r = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "count": d.len(), "min_ms": r(quantile_ms(&d, 0.0)), "p50_ms": r(quantile_ms(&d, 0.5)),
        "p90_ms": r(quantile_ms(&d, 0.9)), "p99_ms": r(quantile_ms(&d, 0.99)), "max_ms": r(quantile_ms(&d, 1.0)),
    })
}

async fn one_sample(client: &kube::Client, ns: &str, bootstrap: &str, i: usize) -> anyhow::Result<Sample> {
    let name = format!("consumer-{i}");
    let topic = unique_name("bench-orders");
    let group = unique_name("bench-consumers");
    let mut admin = KafkaAdmin::connect(bootstrap).await?;
    admin.create_topic(&topic, 1).await?;
    admin.commit(&group, &topic, &[(0, 0)]).await?;
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "consumer", "image": KAFKA_CONSUMER_IMAGE, "imagePullPolicy": "Never",
                                     "env": [{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": bootstrap},
                                             {"name": "KAFKA_TOPIC", "value": topic},
                                             {"name": "KAFKA_GROUP", "value": group},
                                             {"name": "PROCESS_DELAY_MS", "value": "0"}]}]}}}
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments.create(&PostParams::default(), &d).await?;
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"name": name}, "triggers": [{"type": "kafka", "metadata": {
            "bootstrapServers": bootstrap, "consumerGroup": group, "topic": topic}}]}
    }))?;
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    wait_for("ScaledObject created", Duration::from_secs(30), || async {
        sos.create(&PostParams::default(), &so).await.ok().map(|_| ())
    })
    .await?;
    wait_for("ScaledObject Ready", Duration::from_secs(60), || async {
        let so = sos.get(&name).await.ok()?;
        so.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await?;

    let t0 = Instant::now();
    admin.produce_one(&topic, 0, "work").await?;
    let mut sample = Sample::default();
    let (mut scaled, mut running, mut consumed) = (false, false, false);
    let selector = format!("app={name}");
    while !(scaled && running && consumed) {
        if t0.elapsed() > GIVE_UP_AFTER {
            return Err(anyhow!(
                "sample {i}: after {GIVE_UP_AFTER:?} scaled={scaled} running={running} consumed={consumed}"
            ));
        }
        if !scaled {
            let scale = deployments.get_scale(&name).await?;
            if scale.spec.and_then(|s| s.replicas).unwrap_or(0) >= 1 {
                scaled = true;
                sample.activation = t0.elapsed();
            }
        }
        if !running
            && pods::list(client, ns, &selector)
                .await?
                .iter()
                .any(|p| pods::phase(p) == "Running")
        {
            running = true;
            sample.running = t0.elapsed();
        }
        if !consumed
            && admin
                .committed(&group, &topic, 1)
                .await?
                .first()
                .copied()
                .flatten()
                == Some(1)
        {
            consumed = true;
            sample.consumed = t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sos.delete(&name, &DeleteParams::default()).await?;
    deployments.delete(&name, &DeleteParams::default()).await?;
    // Wait for the pod to go, so that it does not load the next sample.
    pods::wait_gone(client, ns, &selector, Duration::from_secs(60)).await?;
    Ok(sample)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let samples: usize = std::env::var("EBB_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let env = TestEnv::load().await?;
    pods::require_node(&env)?;
    install_crds(&env.client).await?;
    let ns = env.namespace("bench-podstart").await?;
    pods::wait_service_account(&env.client, &ns.name).await?;
    let broker = TansuBroker::start_on(Path::new(env.var("EBB_TANSU_BIN")?), env.var("EBB_NODE_GATEWAY")?)
        .await
        .context("private broker on the node's gateway")?;
    let operator = OperatorUnderTest::start(env.var("EBB_KUBECONFIG")?, &ns.name, &[]).await?;
    let mut taken = Vec::new();
    for i in 0..samples {
        let s = one_sample(&env.client, &ns.name, &broker.addr, i).await?;
        eprintln!(
            "sample {i}: activation {:?}, pod running {:?}, first consumed {:?}",
            s.activation, s.running, s.consumed
        );
        taken.push(s);
    }
    operator.stop().await;
    ns.delete().await?;

    let activation = figures(taken.iter().map(|s| s.activation).collect());
    let running = figures(taken.iter().map(|s| s.running).collect());
    let consumed = figures(taken.iter().map(|s| s.consumed).collect());
    let pod_start = figures(
        taken
            .iter()
            .map(|s| s.running.saturating_sub(s.activation))
            .collect(),
    );
    let join_and_consume = figures(
        taken
            .iter()
            .map(|s| s.consumed.saturating_sub(s.running))
            .collect(),
    );
    let summary = format!(
        "pod_start_latency: {samples} samples: message → 1 replica p50 {} / p99 {} ms (ebb), → consumer pod \
         Running p50 {} / p99 {} ms, → first message consumed p50 {} / p99 {} ms",
        activation["p50_ms"],
        activation["p99_ms"],
        running["p50_ms"],
        running["p99_ms"],
        consumed["p50_ms"],
        consumed["p99_ms"]
    );
    write_result(
        "pod-start-latency",
        json!({
            "parameters": {"samples": samples, "scaled_object": "defaults (pollingInterval 30 s, lagThreshold 10)",
                           "consumer": KAFKA_CONSUMER_IMAGE, "process_delay_ms": 0, "poll_every_ms": 25},
            "from_message": {"activation": activation.clone(), "pod_running": running, "first_consumed": consumed},
            "split": {"ebb_activation": activation, "pod_start_after_activation": pod_start,
                      "join_fetch_commit_after_running": join_and_consume},
            "samples_ms": taken.iter().map(|s| json!([s.activation.as_millis(), s.running.as_millis(), s.consumed.as_millis()])).collect::<Vec<_>>(),
        }),
        &summary,
    )?;
    Ok(())
}
