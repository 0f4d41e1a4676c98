//! The `external` and `external-push` triggers end to end: a real external scaler process
//! (`ebb-external-scaler`, gRPC on loopback), the operator with its embedded metrics adapter behind
//! the real API server's aggregation layer, and the real kube-controller-manager's HPA. ebb does
//! 0↔1, the HPA 1↔N from the value the server gives against its target.
//!
//! - `external_scales_zero_to_n_and_back`: the server's activity and value go up → 0 → 1 (ebb) →
//!   N = ceil(value / targetSize) (HPA); back down → 0 after the cooldown.
//! - `external_push_wakes_an_object_at_zero_at_once`: with the default 30 s polling interval, a
//!   `true` pushed on the StreamIsActive stream takes the Deployment from 0 to 1 within seconds.
//!
//! The external-metrics APIService is cluster-wide: [`AdapterCase`] serialises the tests of this
//! binary and those of other processes.

use std::time::{Duration, Instant};

use ebb_tests::adapter_case::AdapterCase;
use ebb_tests::external_scaler::ExternalScalerProcess;
use serde_json::json;

/// Generous bound for anything that involves the HPA (2 s sync).
const WITHIN: Duration = Duration::from_secs(60);
const WORKER: &str = "worker";

/// One test's cluster side: a namespace, an operator serving the external metrics through the
/// aggregator, and a Deployment at 0.
async fn start(prefix: &str) -> AdapterCase {
    let cluster = AdapterCase::start(prefix, WITHIN, &[]).await;
    cluster.deployment(WORKER, 0).await;
    cluster
}

/// Creates the ScaledObject on the worker with one `trigger`, polled every `polling_interval` s.
async fn create_so(cluster: &AdapterCase, polling_interval: u32, trigger: serde_json::Value) {
    let spec = json!({"scaleTargetRef": {"name": WORKER}, "pollingInterval": polling_interval,
                      "cooldownPeriod": 2, "maxReplicaCount": 10, "triggers": [trigger]});
    cluster.create(WORKER, spec).await;
}

#[tokio::test]
async fn external_scales_zero_to_n_and_back() {
    let mut server = ExternalScalerProcess::start().await.unwrap();
    let cluster = start("ext").await;
    create_so(
        &cluster,
        1,
        json!({"type": "external", "metadata": {
                "scalerAddress": server.address, "targetSize": "5", "queue": "orders"}}),
    )
    .await;
    // Inactive: stays at 0.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.replicas(WORKER).await, 0);
    // 12 against a target of 5 per replica: 3 replicas.
    server.set_value(12.0).await.unwrap();
    server.set_active(true).await.unwrap();
    let up = cluster.wait_replicas(WORKER, 3).await;
    eprintln!("[{}] 0 → 3 in {up:?}", cluster.ns.name);
    let last = server.last().await.unwrap();
    assert_eq!(
        (last.name.as_str(), last.namespace.as_str()),
        (WORKER, cluster.ns.name.as_str())
    );
    assert_eq!(last.metadata.get("queue").map(String::as_str), Some("orders"));
    // 20 against 5: 4 (within one step of the HPA's scale-up policy, and out of its tolerance).
    server.set_value(20.0).await.unwrap();
    cluster.wait_replicas(WORKER, 4).await;
    // Inactive and empty: back to 0 after the cooldown.
    server.set_value(0.0).await.unwrap();
    server.set_active(false).await.unwrap();
    let down = cluster.wait_replicas(WORKER, 0).await;
    eprintln!("[{}] 4 → 0 in {down:?}", cluster.ns.name);
    cluster.finish().await;
}

#[tokio::test]
async fn external_push_wakes_an_object_at_zero_at_once() {
    let mut server = ExternalScalerProcess::start().await.unwrap();
    let cluster = start("extpush").await;
    // The default polling interval: only the push can wake the object quickly.
    create_so(
        &cluster,
        30,
        json!({"type": "external-push", "metadata": {
                "scalerAddress": server.address, "targetSize": "5"}}),
    )
    .await;
    let deadline = Instant::now() + WITHIN;
    while server.last().await.unwrap().streams == 0 {
        assert!(Instant::now() < deadline, "the activity stream never opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.set_value(4.0).await.unwrap();
    let pushed = Instant::now();
    server.set_active(true).await.unwrap();
    cluster.wait_replicas(WORKER, 1).await;
    let woke = pushed.elapsed();
    eprintln!("[{}] pushed true → 1 replica in {woke:?}", cluster.ns.name);
    assert!(
        woke < Duration::from_secs(5),
        "the push woke the object in {woke:?}, not at once"
    );
    cluster.finish().await;
}
