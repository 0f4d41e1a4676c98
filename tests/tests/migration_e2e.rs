//! The cutover from KEDA to ebb for one workload (docs/migration.md), against the real API
//! server and kube-controller-manager (whose garbage collector runs). KEDA itself cannot run
//! here: its side is a minimal `keda.sh` ScaledObject CRD, a KEDA ScaledObject and the HPA KEDA
//! would have made for it (`keda-hpa-<name>`, owned by the ScaledObject as its controller).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use ebb_tests::fixture::Fixture;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::wait_for;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const START: i32 = 3;

/// Installs KEDA's ScaledObject CRD, reduced to what the test needs (any spec), unless it is
/// there: cluster-scoped and shared by tests running in parallel, so a lost create race is fine
/// and an existing definition (perhaps a real KEDA's) is left alone.
async fn install_keda_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "scaledobjects.keda.sh"},
        "spec": {
            "group": "keda.sh", "scope": "Namespaced",
            "names": {"kind": "ScaledObject", "plural": "scaledobjects", "singular": "scaledobject",
                      "listKind": "ScaledObjectList", "shortNames": ["so"]},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    if api.get_opt("scaledobjects.keda.sh").await.unwrap().is_none() {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create the keda.sh CRD: {e}"),
        }
    }
    wait_for("keda.sh CRD Established", Duration::from_secs(30), || async {
        let crd = api.get("scaledobjects.keda.sh").await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await
    .unwrap();
}

fn keda_api(f: &Fixture) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    );
    Api::namespaced_with(f.client(), &f.ns.name, &ar)
}

/// The served HPA API (autoscaling/v2, else v2beta2).
async fn hpa_api(f: &Fixture) -> (Api<DynamicObject>, String) {
    for version in ["v2", "v2beta2"] {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler"),
            "horizontalpodautoscalers",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(f.client(), &f.ns.name, &ar);
        if api.list(&Default::default()).await.is_ok() {
            return (api, format!("autoscaling/{version}"));
        }
    }
    panic!("no HPA API served");
}

/// KEDA's side for workload `name`: the Deployment at [`START`], the KEDA ScaledObject, the HPA
/// KEDA made for it and, as the garbage collector's witness, a ConfigMap only the ScaledObject
/// owns. Returns the ScaledObject's UID.
async fn keda_side(f: &Fixture, name: &str) -> String {
    deployment(&f.client(), &f.ns.name, name, START).await.unwrap();
    let so: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 1,
                 "triggers": [{"type": "metrics-api", "metadata": {"url": f.source.url, "valueLocation": "queue.depth", "targetValue": "5"}}]}
    }))
    .unwrap();
    let api = keda_api(f);
    let created = wait_for("KEDA ScaledObject created", Duration::from_secs(30), || async {
        api.create(&PostParams::default(), &so).await.ok()
    })
    .await
    .unwrap();
    let uid = created.uid().unwrap();
    let owner = json!([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": name,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    let (hpas, version) = hpa_api(f).await;
    let hpa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": version, "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": format!("keda-hpa-{name}"), "ownerReferences": owner,
                     "labels": {"app.kubernetes.io/managed-by": "keda-operator", "scaledobject.keda.sh/name": name}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "s0-metric-api-queue", "selector": {"matchLabels": {"scaledobject.keda.sh/name": name}}},
                     "target": {"type": "AverageValue", "averageValue": "5"}}}]}
    }))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    let witness: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-owned-by-keda"), "ownerReferences": owner}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(f.client(), &f.ns.name)
        .create(&PostParams::default(), &witness)
        .await
        .unwrap();
    uid
}

/// Samples the workload's replicas every 100 ms until stopped; the lowest count seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    lowest: Arc<AtomicI32>,
    task: tokio::task::JoinHandle<u64>,
}

impl Sampler {
    fn start(client: Client, ns: String, name: &'static str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let lowest = Arc::new(AtomicI32::new(i32::MAX));
        let task = tokio::spawn({
            let (stop, lowest) = (stop.clone(), lowest.clone());
            async move {
                let mut samples = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = replicas(&client, &ns, name).await {
                        lowest.fetch_min(n, Ordering::SeqCst);
                        samples += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                samples
            }
        });
        Sampler { stop, lowest, task }
    }

    async fn finish(self) -> (i32, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let samples = self.task.await.unwrap();
        (self.lowest.load(Ordering::SeqCst), samples)
    }
}

fn owners(hpa: &DynamicObject) -> Vec<(String, String, bool)> {
    hpa.metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| (o.api_version.clone(), o.uid.clone(), o.controller == Some(true)))
        .collect()
}

fn ebb_so_spec(f: &Fixture, name: &str) -> Value {
    json!({
        "scaleTargetRef": {"name": name},
        "pollingInterval": 1,
        "minReplicaCount": 1,
        "maxReplicaCount": 10,
        "triggers": [{"type": "metrics-api", "metadata": {
            "url": f.source.url, "valueLocation": "queue.depth", "targetValue": "5", "activationTargetValue": "0"}}]
    })
}

#[tokio::test]
async fn cutover_from_keda_keeps_replicas_and_the_adopted_hpa() {
    // The source says 3 replicas' worth (15 at a target of 5): what the workload runs.
    let f = Fixture::start("e2e-migrate", 15).await.unwrap();
    install_keda_crd(&f.client()).await;
    let keda_uid = keda_side(&f, "orders").await;
    keda_side(&f, "blocked").await;
    let operator = OperatorProcess::start(&f.env, &f.ns.name, "op-a", &[])
        .await
        .unwrap();
    let sampler = Sampler::start(f.client(), f.ns.name.clone(), "orders");
    let (hpas, _) = hpa_api(&f).await;

    // Without the annotation, KEDA's HPA is a conflict: Ready=False naming it, nothing touched.
    f.create_so_spec("blocked", ebb_so_spec(&f, "blocked"), json!({}))
        .await;
    let reason = f
        .wait_condition("blocked", "Ready", "False", Duration::from_secs(20))
        .await;
    assert_eq!(reason, "TargetConflict");
    let message = f
        .so_api()
        .get("blocked")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message)
        .unwrap_or_default();
    assert!(
        message.contains("HorizontalPodAutoscaler keda-hpa-blocked")
            && message.contains("transfer-hpa-ownership"),
        "{message}"
    );
    let blocked_hpa = hpas.get("keda-hpa-blocked").await.unwrap();
    assert!(
        owners(&blocked_hpa).iter().all(|o| o.0 == "keda.sh/v1alpha1"),
        "{:?}",
        owners(&blocked_hpa)
    );
    assert!(!f.has_hpa("ebb-hpa-blocked").await);
    assert_eq!(f.replicas("blocked").await, START);

    // The cutover: ebb's ScaledObject with the transfer annotation adopts KEDA's HPA.
    f.create_so_spec(
        "orders",
        ebb_so_spec(&f, "orders"),
        json!({"scaledobject.ebb.dev/transfer-hpa-ownership": "true"}),
    )
    .await;
    f.wait_condition("orders", "Ready", "True", Duration::from_secs(20))
        .await;
    let ebb_uid = f.so_api().get("orders").await.unwrap().uid().unwrap();
    let adopted = wait_for("keda-hpa-orders adopted", Duration::from_secs(15), || async {
        let h = hpas.get("keda-hpa-orders").await.ok()?;
        (owners(&h) == [("ebb.dev/v1alpha1".to_string(), ebb_uid.clone(), true)]).then_some(h)
    })
    .await
    .unwrap();
    let labels = adopted.labels();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("ebb")
    );
    assert!(!labels.contains_key("scaledobject.keda.sh/name"), "{labels:?}");
    let metric = &adopted.data["spec"]["metrics"][0]["external"]["metric"];
    assert_eq!(
        metric["selector"]["matchLabels"]["scaledobject.ebb.dev/name"], "orders",
        "{metric}"
    );
    assert!(!f.has_hpa("ebb-hpa-orders").await, "one HPA on the workload");

    // KEDA's ScaledObject goes; the garbage collector deletes what it still owns (the witness)
    // and leaves the adopted HPA alone.
    keda_api(&f)
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(f.client(), &f.ns.name);
    wait_for(
        "the garbage collector removed the witness",
        Duration::from_secs(60),
        || async {
            configmaps
                .get_opt("orders-owned-by-keda")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(keda_api(&f).get_opt("orders").await.unwrap().is_none());
    // A few more seconds under ebb alone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = hpas
        .get("keda-hpa-orders")
        .await
        .expect("the adopted HPA survives KEDA's deletion");
    assert_eq!(
        owners(&after),
        [("ebb.dev/v1alpha1".to_string(), ebb_uid.clone(), true)]
    );
    assert!(!owners(&after).iter().any(|o| o.1 == keda_uid));
    assert_eq!(
        f.condition("orders", "Ready").await.map(|c| c.0).as_deref(),
        Some("True")
    );
    let (lowest, samples) = sampler.finish().await;
    assert!(samples > 20, "{samples} samples");
    assert!(lowest >= START, "replicas dropped to {lowest} during the cutover");
    f.finish(vec![operator]).await;
}
