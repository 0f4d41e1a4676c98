//! `ebb simulate` against the real thing: the same inputs give the same 0↔1 decisions.
//!
//! A RabbitMQ queue (AMQP, so its scaler pushes activity changes) drives a ScaledObject on the
//! real API server with the operator running (pollingInterval 2 s, cooldownPeriod 4 s): empty,
//! then 5 messages, then drained. Every 250 ms the test records the queue's depth (a passive
//! declare, what the scaler reads) and the Deployment's replicas. The recorded depths and the
//! same ScaledObject go through the built `ebb simulate`; its Activated and ScaledToZero events
//! must be the observed 0→1 and 1→0 transitions, in the same order, each within a polling
//! interval (+ 1 s of sampling and watcher latency) of the observed one.
//!
//! No metrics adapter is registered: the HPA cannot read its metric and leaves 1 alone, as the
//! simulated HPA does for 5 messages at a target of 100.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::{OperatorProcess, ebb_binary};
use ebb_tests::rabbitmq::TestQueue;
use ebb_tests::{TestEnv, install_crds, wait_for};
use kube::api::{Api, PostParams};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};

const POLLING: f64 = 2.0;
const SAMPLE: Duration = Duration::from_millis(250);

/// The queue's depth as the AMQP scaler reads it (ready messages, by passive declare).
async fn depth(queue: &TestQueue) -> Option<u32> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    queue
        .channel
        .queue_declare(queue.name.as_str().into(), options, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count())
}

/// The times (seconds) of the 0→≥1 and ≥1→0 transitions in `samples` of (time, replicas),
/// labelled as `ebb simulate` names them.
fn transitions(samples: &[(f64, i32)]) -> Vec<(&'static str, f64)> {
    samples
        .windows(2)
        .filter_map(|w| match (w[0].1, w[1].1) {
            (0, n) if n > 0 => Some(("Activated", w[1].0)),
            (n, 0) if n > 0 => Some(("ScaledToZero", w[1].0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simulated_decisions_match_the_operator() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("simulate").await.unwrap();
    let client = env.client.clone();
    deployment(&client, &ns.name, "worker", 0).await.unwrap();
    let queue = TestQueue::create(&env, "ebb-simulate").await;
    let operator = OperatorProcess::start(&env, &ns.name, "op", &[]).await.unwrap();

    let so_value: Value = json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "worker", "namespace": ns.name},
        "spec": {
            "scaleTargetRef": {"name": "worker"}, "pollingInterval": POLLING as i32,
            "cooldownPeriod": 4, "maxReplicaCount": 5,
            "triggers": [{"type": "rabbitmq", "name": "queue", "metadata": {
                "host": env.var("EBB_RABBITMQ_AMQP_URL").unwrap(), "queueName": queue.name,
                "mode": "QueueLength", "value": "100"}}]}
    });
    let so: ScaledObject = serde_json::from_value(so_value.clone()).unwrap();
    let so_api: Api<ScaledObject> = Api::namespaced(client.clone(), &ns.name);
    wait_for("ScaledObject created", Duration::from_secs(30), || async {
        so_api.create(&PostParams::default(), &so).await.ok().map(|_| ())
    })
    .await
    .unwrap();
    wait_for("Ready", Duration::from_secs(60), || async {
        let so = so_api.get("worker").await.ok()?;
        let ready = so.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await
    .unwrap();

    // The run: empty for 3 s, 5 messages at 3 s, drained at 11 s, observed until 22 s.
    let start = Instant::now();
    let mut series = String::from("time,queue\n");
    let mut observed: Vec<(f64, i32)> = Vec::new();
    let (mut published, mut drained) = (false, false);
    let mut next = start;
    while start.elapsed() < Duration::from_secs(22) {
        let t = start.elapsed().as_secs_f64();
        if !published && t >= 3.0 {
            queue.publish(5).await;
            published = true;
        }
        if !drained && t >= 11.0 {
            queue.consume(5).await;
            drained = true;
        }
        let t = start.elapsed().as_secs_f64();
        match depth(&queue).await {
            Some(d) => series.push_str(&format!("{t:.3},{d}\n")),
            None => series.push_str(&format!("{t:.3},error\n")),
        }
        if let Ok(n) = replicas(&client, &ns.name, "worker").await {
            observed.push((start.elapsed().as_secs_f64(), n));
        }
        next += SAMPLE;
        tokio::time::sleep_until(next.into()).await;
    }
    let observed = transitions(&observed);
    eprintln!("[{}] observed: {observed:?}", ns.name);

    // The same ScaledObject and the recorded series through `ebb simulate`.
    let dir = std::env::temp_dir().join(format!("ebb-simulate-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("so.yaml"),
        serde_json::to_string_pretty(&so_value).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("series.csv"), &series).unwrap();
    let out = tokio::process::Command::new(ebb_binary())
        .args([
            "simulate",
            "-f",
            "so.yaml",
            "--input",
            "series.csv",
            "--step",
            "250ms",
            "-o",
            "json",
        ])
        .args(["--svg", "plot.svg"])
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "ebb simulate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let simulated: Vec<(String, f64)> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Activated" || e["reason"] == "ScaledToZero")
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_string(),
                e["time"].as_f64().unwrap(),
            )
        })
        .collect();
    eprintln!(
        "[{}] simulated: {simulated:?} (files in {})",
        ns.name,
        dir.display()
    );

    let names = |v: &[(&str, f64)]| v.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    let simulated_names: Vec<String> = simulated.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names(&observed),
        ["Activated", "ScaledToZero"],
        "series:\n{series}"
    );
    assert_eq!(simulated_names, names(&observed), "series:\n{series}");
    for ((name, real), (_, sim)) in observed.iter().zip(&simulated) {
        assert!(
            (real - sim).abs() <= POLLING + 1.0,
            "{name}: observed at {real:.2}s, simulated at {sim:.2}s\nseries:\n{series}"
        );
    }
    assert!(
        std::fs::read_to_string(dir.join("plot.svg"))
            .unwrap()
            .contains("id=\"replicas\"")
    );

    operator.terminate().await;
    queue.delete().await;
    ns.delete().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
