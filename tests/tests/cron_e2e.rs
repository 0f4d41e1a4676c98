//! The `cron`, `cpu` and `memory` triggers end to end, on the real API server, its aggregation
//! layer and kube-controller-manager's HPA.
//!
//! - `a_cron_window_starting_now_scales_zero_to_n_and_back`: a one-minute window in Asia/Kolkata
//!   opening at the next minute, `desiredReplicas: 3`, created before the window opens: the
//!   Deployment goes 0 → 1 (ebb) → 3 (the HPA, value 3 at target 1), and back to 0 after the
//!   window closes. `pollingInterval` is
//!   30 s: the opening activates within a second, and the closing turns Active=False within
//!   seconds, only through the trigger's activity timer.
//! - `cpu_and_memory_become_resource_metrics_of_the_hpa`: the HPA carries Resource metrics (read
//!   back; `1.5Gi` comes back as the server writes it, and is not re-applied), the object is
//!   Ready and Active without any poll; only cpu/memory with `minReplicaCount: 0` is Ready=False
//!   naming `spec.minReplicaCount`, has no HPA, and its workload keeps its replicas. (The test
//!   cluster, Kubernetes 1.20, refuses ContainerResource metrics without a feature gate: those are
//!   covered by the operator's unit tests.)
//!
//! The external-metrics APIService is cluster-wide: this binary is in nextest's `apiservice`
//! test group (`.config/nextest.toml`), and [`AdapterCase`] takes the same locks as the other
//! binaries that register it.

use std::time::{Duration, Instant};

use ebb_tests::adapter_case::AdapterCase;
use ebb_tests::wait_for;
use jiff::{Timestamp, ToSpan};
use serde_json::json;

/// Bound for anything that waits on the HPA (2 s sync).
const WITHIN: Duration = Duration::from_secs(90);

/// A namespace and an operator serving external metrics through the aggregator (the
/// APIService held while it lives), its cron scaler logging at debug.
async fn start(prefix: &str) -> AdapterCase {
    AdapterCase::start(prefix, WITHIN, &["--log-level", "info,ebb_scalers::cron=debug"]).await
}

/// `minute hour * * *` of `at` on the wall clock of `zone`.
fn cron_at(at: Timestamp, zone: &str) -> String {
    let civil = at.in_tz(zone).unwrap().datetime();
    format!("{} {} * * *", civil.minute(), civil.hour())
}

#[tokio::test]
async fn a_cron_window_starting_now_scales_zero_to_n_and_back() {
    let s = start("cron").await;
    s.deployment("worker", 0).await;
    const ZONE: &str = "Asia/Kolkata";
    // The window opens at the next minute (or the one after, when fewer than 20 s are left to
    // create the object) and lasts one minute.
    let now = Timestamp::now();
    let minute_start = Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(60)).unwrap();
    let left = 60 - now.as_second().rem_euclid(60);
    let start = minute_start + if left >= 20 { 1.minute() } else { 2.minutes() };
    let end = start + 1.minute();
    let spec = json!({
        "scaleTargetRef": {"name": "worker"}, "cooldownPeriod": 1, "maxReplicaCount": 10,
        "triggers": [{"type": "cron", "metadata": {
            "timezone": ZONE, "start": cron_at(start, ZONE), "end": cron_at(end, ZONE),
            "desiredReplicas": "3"}}]});
    eprintln!("[{}] window {spec}", s.ns.name);
    let created = Instant::now();
    s.create("worker", spec).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.replicas("worker").await, 0, "before the window");

    let until = |at: Timestamp| Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(until(start)).await;
    let to_one = s.wait_replicas("worker", 1).await;
    let to_three = s.wait_replicas("worker", 3).await;
    eprintln!(
        "[{}] window opened → 1 in {to_one:?}, then → 3 in {to_three:?}",
        s.ns.name
    );
    assert!(
        to_one < Duration::from_secs(10),
        "{to_one:?}: the timer did not wake the loop"
    );
    let hpa = s.hpa("worker").await.expect("the HPA");
    let metric = &hpa.data["spec"]["metrics"][0]["external"];
    assert!(
        metric["metric"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("s0-cron-asia-kolkata-")),
        "{metric}"
    );
    assert_eq!(
        metric["target"],
        json!({"type": "AverageValue", "averageValue": "1"})
    );
    let (active, _, _) = s.condition("worker", "Active").await.unwrap();
    assert_eq!(active, "True");

    // The window closes at `end`: the timer wakes the loop at once (Active=False within
    // seconds); the cooldown starts then, and the scale to 0 comes at the first poll after it
    // (KEDA's rule), so within cooldownPeriod + pollingInterval (30 s).
    assert!(until(end) > Duration::ZERO, "the window closed before 3 replicas");
    tokio::time::sleep(until(end)).await;
    let closed = Instant::now();
    s.wait_condition("worker", "Active", "False").await;
    let inactive = closed.elapsed();
    let to_zero = s.wait_replicas("worker", 0).await + inactive;
    eprintln!(
        "[{}] window closed → Active=False in {inactive:?}, → 0 in {to_zero:?} (whole run {:?})",
        s.ns.name,
        created.elapsed()
    );
    assert!(
        inactive < Duration::from_secs(10),
        "{inactive:?}: the timer did not wake the loop"
    );
    assert!(to_zero < Duration::from_secs(45), "{to_zero:?}");
    s.finish().await;
}

#[tokio::test]
async fn cpu_and_memory_become_resource_metrics_of_the_hpa() {
    let s = start("cpu-memory").await;
    s.deployment("web", 2).await;
    s.deployment("lonely", 2).await;
    s.create(
        "web",
        json!({
        "scaleTargetRef": {"name": "web"}, "minReplicaCount": 1, "maxReplicaCount": 5,
        "triggers": [
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
            {"type": "memory", "metadata": {"value": "1.5Gi"}}]}),
    )
    .await;
    let hpa = wait_for("the HPA", WITHIN, || async { s.hpa("web").await })
        .await
        .unwrap();
    let metrics = hpa.data["spec"]["metrics"].clone();
    let by_name = |name: &str| {
        metrics
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["resource"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} metric: {metrics}"))
    };
    assert_eq!(
        by_name("cpu"),
        json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60}}})
    );
    let memory = by_name("memory");
    assert_eq!(memory["type"], "Resource");
    assert_eq!(memory["resource"]["target"]["type"], "AverageValue");
    eprintln!(
        "[{}] memory target as the server wrote it: {}",
        s.ns.name, memory["resource"]["target"]["averageValue"]
    );
    assert_eq!(metrics.as_array().map(Vec::len), Some(2));
    // Ready and Active without a poll; the workload keeps its replicas.
    let (ready, _, message) = s.wait_condition("web", "Ready", "True").await;
    eprintln!("[{}] web Ready={ready}: {message}", s.ns.name);
    s.wait_condition("web", "Active", "True").await;
    // The server's rewrite of 1.5Gi is not drift: the HPA is not applied again.
    let version = hpa.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = s.hpa("web").await.unwrap();
    let changed = again.metadata.resource_version != version && again.data["spec"] != hpa.data["spec"];
    assert!(!changed, "the HPA spec was re-applied: {}", again.data["spec"]);
    assert_eq!(s.replicas("web").await, 2);

    // Only cpu, minReplicaCount 0: refused naming the field; no HPA; replicas left alone.
    s.create(
        "lonely",
        json!({
        "scaleTargetRef": {"name": "lonely"}, "minReplicaCount": 0,
        "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}]}),
    )
    .await;
    let (_, _, message) = s.wait_condition("lonely", "Ready", "False").await;
    eprintln!("[{}] lonely Ready=False: {message}", s.ns.name);
    assert!(
        message.starts_with("spec.minReplicaCount: is 0, but every trigger is cpu"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.hpa("lonely").await.is_none(), "an HPA for the refused object");
    assert_eq!(s.replicas("lonely").await, 2);
    s.finish().await;
}
