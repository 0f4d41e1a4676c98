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
//! The external-metrics APIService is cluster-wide: [`LOCK`] serialises the tests of this binary
//! and `ebb_tests::adapter::lock` those of other processes.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::adapter as apiservice;
use ebb_tests::external_scaler::ExternalScalerProcess;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::{TestEnv, TestNamespace, install_crds, wait_for};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generous bound for anything that involves the HPA (2 s sync).
const WITHIN: Duration = Duration::from_secs(60);
const WORKER: &str = "worker";

/// One test's cluster side: a namespace, an operator serving the external metrics through the
/// aggregator, and a Deployment at 0.
struct Cluster {
    env: TestEnv,
    ns: TestNamespace,
    _operator: OperatorProcess,
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _apiservice_lock: std::fs::File,
}

impl Cluster {
    async fn start(prefix: &str) -> Cluster {
        let serial = LOCK.lock().await;
        let apiservice_lock = apiservice::lock().await;
        let env = TestEnv::load().await.unwrap();
        install_crds(&env.client).await.unwrap();
        let ns = env.namespace(prefix).await.unwrap();
        apiservice::wait_until_free(&env.client).await;
        let port = ebb_tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let health = ebb_tests::leader::free_local_addr();
        let kubeconfig = std::path::PathBuf::from(env.var("EBB_KUBECONFIG").unwrap());
        let operator = OperatorProcess::start_with(
            &kubeconfig,
            &health,
            &ns.name,
            "op",
            &["--metrics-adapter-addr", &addr],
        )
        .await
        .unwrap();
        apiservice::register(&env.client, &ns.name, port).await.unwrap();
        deployment(&env.client, &ns.name, WORKER, 0).await.unwrap();
        let so_api: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns.name);
        wait_for("ScaledObjects listable", Duration::from_secs(30), || async {
            so_api.list(&ListParams::default()).await.ok().map(|_| ())
        })
        .await
        .unwrap();
        Cluster {
            env,
            ns,
            _operator: operator,
            _serial: serial,
            _apiservice_lock: apiservice_lock,
        }
    }

    async fn create_so(&self, polling_interval: u32, trigger: serde_json::Value) {
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": WORKER},
            "spec": {"scaleTargetRef": {"name": WORKER}, "pollingInterval": polling_interval,
                     "cooldownPeriod": 2, "maxReplicaCount": 10, "triggers": [trigger]}}))
        .unwrap();
        Api::<ScaledObject>::namespaced(self.env.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &so)
            .await
            .unwrap();
    }

    /// Waits until the Deployment has `want` replicas; how long that took.
    async fn wait_replicas(&self, want: i32) -> Duration {
        let start = Instant::now();
        let (client, ns) = (self.env.client.clone(), self.ns.name.clone());
        let result = wait_for(&format!("{WORKER} at {want} replicas"), WITHIN, || {
            let (client, ns) = (client.clone(), ns.clone());
            async move { (replicas(&client, &ns, WORKER).await.ok()? == want).then_some(()) }
        })
        .await;
        if let Err(e) = result {
            let owner = apiservice::owner(&self.env.client).await;
            panic!(
                "{e}; the APIService belongs to {owner:?}, this test is {}",
                self.ns.name
            );
        }
        start.elapsed()
    }
}

#[tokio::test]
async fn external_scales_zero_to_n_and_back() {
    let mut server = ExternalScalerProcess::start().await.unwrap();
    let cluster = Cluster::start("ext").await;
    cluster
        .create_so(
            1,
            json!({"type": "external", "metadata": {
                "scalerAddress": server.address, "targetSize": "5", "queue": "orders"}}),
        )
        .await;
    // Inactive: stays at 0.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replicas(&cluster.env.client, &cluster.ns.name, WORKER)
            .await
            .unwrap(),
        0
    );
    // 12 against a target of 5 per replica: 3 replicas.
    server.set_value(12.0).await.unwrap();
    server.set_active(true).await.unwrap();
    let up = cluster.wait_replicas(3).await;
    eprintln!("[{}] 0 → 3 in {up:?}", cluster.ns.name);
    let last = server.last().await.unwrap();
    assert_eq!(
        (last.name.as_str(), last.namespace.as_str()),
        (WORKER, cluster.ns.name.as_str())
    );
    assert_eq!(last.metadata.get("queue").map(String::as_str), Some("orders"));
    // 20 against 5: 4 (within one step of the HPA's scale-up policy, and out of its tolerance).
    server.set_value(20.0).await.unwrap();
    cluster.wait_replicas(4).await;
    // Inactive and empty: back to 0 after the cooldown.
    server.set_value(0.0).await.unwrap();
    server.set_active(false).await.unwrap();
    let down = cluster.wait_replicas(0).await;
    eprintln!("[{}] 4 → 0 in {down:?}", cluster.ns.name);
}

#[tokio::test]
async fn external_push_wakes_an_object_at_zero_at_once() {
    let mut server = ExternalScalerProcess::start().await.unwrap();
    let cluster = Cluster::start("extpush").await;
    // The default polling interval: only the push can wake the object quickly.
    cluster
        .create_so(
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
    cluster.wait_replicas(1).await;
    let woke = pushed.elapsed();
    eprintln!("[{}] pushed true → 1 replica in {woke:?}", cluster.ns.name);
    assert!(
        woke < Duration::from_secs(5),
        "the push woke the object in {woke:?}, not at once"
    );
}
