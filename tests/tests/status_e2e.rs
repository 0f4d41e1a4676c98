//! `ebb status` against a real cluster: an operator serving the external metrics through the
//! aggregator, a RabbitMQ queue (over AMQP, so the count is exact at once) with a backlog, the
//! real HPA. The built `ebb status` binary must print the queue's depth as the trigger's value,
//! the target's replicas, and the HPA's view; the list form names the object.
//!
//! The external-metrics APIService is cluster-wide: this binary is in nextest's `apiservice`
//! group (`.config/nextest.toml`), and the file lock plus the wait for a free APIService keep
//! other test processes from taking it over meanwhile.

use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_tests::adapter as apiservice;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::{OperatorProcess, ebb_binary};
use ebb_tests::rabbitmq::TestQueue;
use ebb_tests::{TestEnv, install_crds, wait_for};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// Anything that involves the HPA (15 s sync by default, 2 s in the test environment).
const WITHIN: Duration = Duration::from_secs(60);

/// Messages in the queue and the target per replica: ceil(12 / 5) = 3 replicas.
const DEPTH: usize = 12;
const TARGET: usize = 5;

/// Runs the built `ebb status ARGS` against the test cluster; returns its stdout.
async fn ebb_status(env: &TestEnv, args: &[&str]) -> String {
    let out = tokio::process::Command::new(ebb_binary())
        .arg("status")
        .args(args)
        .env("KUBECONFIG", env.var("EBB_KUBECONFIG").unwrap())
        .output()
        .await
        .expect("ebb status runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ebb status {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn status_explains_the_replicas_with_the_queue_depth() {
    let _apiservice_lock = apiservice::lock().await;
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("e2e-status").await.unwrap();
    apiservice::wait_until_free(&env.client).await;
    let port = ebb_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let operator = OperatorProcess::start(&env, &ns.name, "op", &["--metrics-adapter-addr", &addr])
        .await
        .unwrap();
    apiservice::register(&env.client, &ns.name, port).await.unwrap();
    deployment(&env.client, &ns.name, "worker", 0).await.unwrap();

    let queue = TestQueue::create(&env, "ebb-status").await;
    queue.publish(DEPTH).await;
    let so_api: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns.name);
    wait_for("ScaledObjects listable", Duration::from_secs(30), || async {
        so_api.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await
    .unwrap();
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 2,
            "maxReplicaCount": 10, "triggers": [{"type": "rabbitmq", "metadata": {
                "host": env.var("EBB_RABBITMQ_AMQP_URL").unwrap(), "queueName": queue.name,
                "mode": "QueueLength", "value": TARGET.to_string()}}]}}))
    .unwrap();
    so_api.create(&PostParams::default(), &so).await.unwrap();

    let want = DEPTH.div_ceil(TARGET) as i32;
    let client = env.client.clone();
    wait_for("worker at 3 replicas, as the HPA sees it", WITHIN, || async {
        let at = replicas(&client, &ns.name, "worker").await.ok()?;
        let report: Value =
            serde_json::from_str(&ebb_status(&env, &["worker", "-n", &ns.name, "-o", "json"]).await).ok()?;
        (at == want && report["hpa"]["currentReplicas"] == want).then_some(())
    })
    .await
    .unwrap();

    let report: Value =
        serde_json::from_str(&ebb_status(&env, &["worker", "-n", &ns.name, "-o", "json"]).await).unwrap();
    let trigger = &report["triggers"][0];
    assert_eq!(trigger["type"], "rabbitmq", "{report:#}");
    assert_eq!(
        trigger["metric"],
        format!("s0-rabbitmq-{}", queue.name.to_lowercase()),
        "{report:#}"
    );
    let value = trigger["value"]
        .as_str()
        .and_then(ebb_scalers::common::quantity::parse_quantity);
    assert_eq!(value, Some(DEPTH as f64), "{report:#}");
    assert_eq!(trigger["target"], format!("AverageValue {TARGET}"), "{report:#}");
    assert_eq!(trigger["health"], "Happy", "{report:#}");
    assert_eq!(report["replicas"], want, "{report:#}");
    assert_eq!(report["hpa"]["desiredReplicas"], want, "{report:#}");
    assert!(
        report["why"].as_str().unwrap().starts_with("Active:"),
        "{report:#}"
    );
    assert!(
        report["events"].as_array().is_some_and(|e| !e.is_empty()),
        "no Events: {report:#}"
    );

    let text = ebb_status(&env, &["worker", "-n", &ns.name]).await;
    eprintln!("ebb status worker:\n{text}");
    assert!(
        text.contains(&format!("    value {DEPTH}, target AverageValue {TARGET}")),
        "{text}"
    );
    assert!(text.contains(&format!("at {want} replicas")), "{text}");
    let list = ebb_status(&env, &["-n", &ns.name]).await;
    eprintln!("ebb status:\n{list}");
    let row: Vec<&str> = list
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "worker",
            "Deployment/worker",
            "True",
            "True",
            "0-10",
            &want.to_string()
        ],
        "{list}"
    );

    so_api.delete("worker", &Default::default()).await.unwrap();
    wait_for("the ScaledObject gone", WITHIN, || async {
        matches!(so_api.get_opt("worker").await, Ok(None)).then_some(())
    })
    .await
    .unwrap();
    queue.delete().await;
    apiservice::unregister(&env.client).await;
    operator.terminate().await;
    ns.delete().await.unwrap();
}
