//! The README's demo: a queue consumer scaled on its queue's depth by ebb, on a real
//! kube-apiserver and kube-controller-manager. ebb does 0↔1 itself; the HPA it owns does 1↔N from
//! the metrics ebb serves through the aggregation layer. Run through `tests/demo.sh`.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Watches the Deployment for `secs` seconds and prints every replica change.
async fn watch(client: &kube::Client, ns: &str, start: Instant, last: &mut i32, secs: u64, until: i32) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(r) = replicas(client, ns, "worker").await
            && r != *last
        {
            let who = if *last == 0 || r == 0 {
                "ebb (0↔1)"
            } else {
                "HPA (1↔N)"
            };
            println!(
                "[{:>5.1}s] replicas {last} → {r}   by {who}",
                start.elapsed().as_secs_f64()
            );
            *last = r;
        }
        if *last == until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = TestEnv::load().await?;
    let client = env.client.clone();
    install_crds(&client).await?;
    let ns = env.namespace("ebb-demo").await?;
    println!(
        "ebb demo on a real control plane ({}), namespace {}",
        env.kube_flavor(),
        ns.name
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let operator = OperatorProcess::start(&env, &ns.name, "demo", &["--metrics-adapter-addr", &addr]).await?;
    ebb_tests::adapter::register(&client, &ns.name, port).await?;
    println!("ebb operator running; its metrics adapter serves external.metrics.k8s.io on {addr}");

    let queue = MetricSource::start(0).await;
    deployment(&client, &ns.name, "worker", 0).await?;
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 5, "maxReplicaCount": 10,
                 "triggers": [{"type": "metrics-api", "metadata": {
                     "url": queue.url, "valueLocation": "queue.depth", "targetValue": "5"}}]}
    }))?;
    Api::<ScaledObject>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &so)
        .await?;
    println!(
        "Deployment worker at 0 replicas; ScaledObject: 5 messages per replica, at most 10, cooldown 5 s\n"
    );

    let start = Instant::now();
    let mut last = 0;
    for (depth, expect, note) in [
        (
            23,
            5,
            "23 messages arrive: ebb wakes the worker, the HPA asks for ceil(23/5) = 5",
        ),
        (
            9,
            2,
            "the backlog drains to 9: the HPA scales in to ceil(9/5) = 2",
        ),
        (
            0,
            0,
            "the queue is empty: the HPA goes to 1, ebb parks the worker at 0 after the cooldown",
        ),
    ] {
        println!(
            "[{:>5.1}s] queue depth → {depth}: {note}",
            start.elapsed().as_secs_f64()
        );
        queue.set_depth(depth);
        watch(&client, &ns.name, start, &mut last, 60, expect).await;
    }
    let status = Api::<ScaledObject>::namespaced(client.clone(), &ns.name)
        .get("worker")
        .await?
        .status;
    if let Some(status) = status {
        println!("\nScaledObject status:");
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
    ebb_tests::adapter::unregister(&client).await;
    operator.terminate().await;
    ns.delete().await?;
    Ok(())
}
