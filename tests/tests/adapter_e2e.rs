//! The metrics adapter behind the real API server's aggregation layer: the real
//! kube-controller-manager's HPA controller scales a Deployment 1↔N from ebb's metrics, and ebb
//! does 0↔1. (A standby forwarding to the leader needs pods: `chart_e2e`.) The APIService is
//! cluster-wide, so this is the only test that registers it.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds, wait_for};
use kube::api::{Api, PostParams};
use serde_json::json;

#[tokio::test]
async fn hpa_scales_one_to_n_from_ebb_metrics_through_the_aggregator() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("e2e-adapter").await.unwrap();
    let client = env.client.clone();

    // One replica, behind the aggregator. Forwarding from a standby needs pods (the standby finds
    // the leader as the Pod the Lease holder names, and forwards with a TokenRequest token of the
    // operator's ServiceAccount): `chart_e2e` covers it with the chart's real pods.
    let port = ebb_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let leader = OperatorProcess::start(&env, &ns.name, "op-leader", &["--metrics-adapter-addr", &addr])
        .await
        .unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the operator leads", Duration::from_secs(30), || async {
        let lease = leases.get_opt("ebb-operator").await.ok()??;
        (lease.spec?.holder_identity? == "op-leader").then_some(())
    })
    .await
    .unwrap();
    ebb_tests::adapter::register(&client, &ns.name, port)
        .await
        .unwrap();

    let source = MetricSource::start(0).await;
    deployment(&client, &ns.name, "worker", 0).await.unwrap();
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 2, "maxReplicaCount": 10,
                 "triggers": [{"type": "metrics-api", "metadata": {
                     "url": source.url, "valueLocation": "queue.depth", "targetValue": "5"}}]}
    }))
    .unwrap();
    Api::<ScaledObject>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();

    let at = |want: i32, within: u64| {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let start = Instant::now();
            wait_for(&format!("worker at {want}"), Duration::from_secs(within), || {
                let client = client.clone();
                let ns = ns.clone();
                async move { (replicas(&client, &ns, "worker").await.ok()? == want).then_some(()) }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            start.elapsed()
        }
    };
    // 23 waiting, 5 per replica: ebb activates 0→1, the HPA takes it to ceil(23/5) = 5.
    source.set_depth(23);
    let took = at(5, 60).await;
    eprintln!("0 → 5 replicas in {took:?}");
    // The metric as the HPA sees it, through the API server.
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/s0-metrics-api-queue-depth?labelSelector=scaledobject.ebb.dev%2Fname%3Dworker",
        ns.name
    );
    let body = client
        .request_text(http::Request::get(&path).body(Vec::new()).unwrap())
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "ExternalMetricValueList", "{body}");
    assert_eq!(list["items"][0]["value"], "23", "{body}");
    assert_eq!(list["items"][0]["metricName"], "s0-metrics-api-queue-depth");
    // Unknown metric: a proper 404 Status through the aggregator.
    let missing = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/s9-nope?labelSelector=scaledobject.ebb.dev%2Fname%3Dworker",
        ns.name
    );
    match client
        .request_text(http::Request::get(&missing).body(Vec::new()).unwrap())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404, "{s:?}"),
        other => panic!("expected 404, got {other:?}"),
    }
    // Less work: the HPA scales in to ceil(9/5) = 2.
    source.set_depth(9);
    at(2, 60).await;
    // No work: the HPA goes to its minimum (1), then ebb parks it at 0 after the cooldown.
    source.set_depth(0);
    at(0, 60).await;

    ebb_tests::adapter::unregister(&client).await;
    leader.terminate().await;
    ns.delete().await.unwrap();
}
