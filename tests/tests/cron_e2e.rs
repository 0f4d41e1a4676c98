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
//! test group (`.config/nextest.toml`), and takes the same file lock as the other binaries that
//! register it.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::adapter as apiservice;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::{TestEnv, TestNamespace, install_crds, wait_for};
use jiff::{Timestamp, ToSpan};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};

/// Bound for anything that waits on the HPA (2 s sync).
const WITHIN: Duration = Duration::from_secs(90);

/// A namespace and an operator serving external metrics through the aggregator (the
/// APIService lock held while it lives).
struct Setup {
    _apiservice_lock: std::fs::File,
    ns: TestNamespace,
    client: Client,
    operator: OperatorProcess,
    so_api: Api<ScaledObject>,
}

impl Setup {
    async fn start(prefix: &str) -> Setup {
        let apiservice_lock = apiservice::lock().await;
        let env = TestEnv::load().await.unwrap();
        install_crds(&env.client).await.unwrap();
        let ns = env.namespace(prefix).await.unwrap();
        let client = env.client.clone();
        apiservice::wait_until_free(&client).await;
        let port = ebb_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let operator = OperatorProcess::start(
            &env,
            &ns.name,
            "op",
            &[
                "--metrics-adapter-addr",
                &addr,
                "--log-level",
                "info,ebb_scalers::cron=debug",
            ],
        )
        .await
        .unwrap();
        apiservice::register(&client, &ns.name, port).await.unwrap();
        let so_api = Api::namespaced(client.clone(), &ns.name);
        Setup {
            _apiservice_lock: apiservice_lock,
            ns,
            client,
            operator,
            so_api,
        }
    }

    async fn create(&self, name: &str, spec: Value) {
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap();
        wait_for("ScaledObject created", Duration::from_secs(30), || async {
            self.so_api
                .create(&PostParams::default(), &so)
                .await
                .ok()
                .map(|_| ())
        })
        .await
        .unwrap();
    }

    async fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let so = self.so_api.get(name).await.ok()?;
        let c = so.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((c.status, c.message.unwrap_or_default()))
    }

    async fn wait_replicas(&self, name: &str, want: i32) -> Duration {
        let start = Instant::now();
        wait_for(&format!("{name} at {want} replicas"), WITHIN, || async {
            (replicas(&self.client, &self.ns.name, name).await.ok()? == want).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        start.elapsed()
    }

    /// The HPA ebb owns for the ScaledObject `name`.
    async fn hpa(&self, name: &str) -> Option<DynamicObject> {
        let gvk = GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.ns.name, &ar);
        let list = api.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|h| h.data["spec"]["scaleTargetRef"]["name"] == name)
    }

    async fn finish(self) {
        for so in self.so_api.list(&ListParams::default()).await.unwrap().items {
            let name = so.metadata.name.unwrap_or_default();
            self.so_api.delete(&name, &Default::default()).await.unwrap();
        }
        apiservice::unregister(&self.client).await;
        self.operator.terminate().await;
        self.ns.delete().await.unwrap();
    }
}

/// `minute hour * * *` of `at` on the wall clock of `zone`.
fn cron_at(at: Timestamp, zone: &str) -> String {
    let civil = at.in_tz(zone).unwrap().datetime();
    format!("{} {} * * *", civil.minute(), civil.hour())
}

#[tokio::test]
async fn a_cron_window_starting_now_scales_zero_to_n_and_back() {
    let s = Setup::start("cron").await;
    deployment(&s.client, &s.ns.name, "worker", 0).await.unwrap();
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
    assert_eq!(
        replicas(&s.client, &s.ns.name, "worker").await.unwrap(),
        0,
        "before the window"
    );

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
    let (active, _) = s.condition("worker", "Active").await.unwrap();
    assert_eq!(active, "True");

    // The window closes at `end`: the timer wakes the loop at once (Active=False within
    // seconds); the cooldown starts then, and the scale to 0 comes at the first poll after it
    // (KEDA's rule), so within cooldownPeriod + pollingInterval (30 s).
    assert!(until(end) > Duration::ZERO, "the window closed before 3 replicas");
    tokio::time::sleep(until(end)).await;
    let closed = Instant::now();
    wait_for("Active=False", WITHIN, || async {
        s.condition("worker", "Active").await.filter(|c| c.0 == "False")
    })
    .await
    .unwrap();
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
    let s = Setup::start("cpu-memory").await;
    deployment(&s.client, &s.ns.name, "web", 2).await.unwrap();
    deployment(&s.client, &s.ns.name, "lonely", 2).await.unwrap();
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
    let (ready, message) = wait_for("Ready", WITHIN, || async {
        s.condition("web", "Ready").await.filter(|c| c.0 == "True")
    })
    .await
    .unwrap();
    eprintln!("[{}] web Ready={ready}: {message}", s.ns.name);
    wait_for("Active", WITHIN, || async {
        s.condition("web", "Active").await.filter(|c| c.0 == "True")
    })
    .await
    .unwrap();
    // The server's rewrite of 1.5Gi is not drift: the HPA is not applied again.
    let version = hpa.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = s.hpa("web").await.unwrap();
    let changed = again.metadata.resource_version != version && again.data["spec"] != hpa.data["spec"];
    assert!(!changed, "the HPA spec was re-applied: {}", again.data["spec"]);
    assert_eq!(replicas(&s.client, &s.ns.name, "web").await.unwrap(), 2);

    // Only cpu, minReplicaCount 0: refused naming the field; no HPA; replicas left alone.
    s.create(
        "lonely",
        json!({
        "scaleTargetRef": {"name": "lonely"}, "minReplicaCount": 0,
        "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}]}),
    )
    .await;
    let (_, message) = wait_for("lonely Ready=False", WITHIN, || async {
        s.condition("lonely", "Ready").await.filter(|c| c.0 == "False")
    })
    .await
    .unwrap();
    eprintln!("[{}] lonely Ready=False: {message}", s.ns.name);
    assert!(
        message.starts_with("spec.minReplicaCount: is 0, but every trigger is cpu"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.hpa("lonely").await.is_none(), "an HPA for the refused object");
    assert_eq!(replicas(&s.client, &s.ns.name, "lonely").await.unwrap(), 2);
    s.finish().await;
}
