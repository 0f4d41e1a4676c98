//! ebb's CRDs on a real kube-apiserver: install, defaults, schema rejections.

use ebb_crds::ScaledObject;
use ebb_tests::{TestEnv, install_crds};
use kube::api::{Api, PostParams};
use serde_json::json;

/// A ScaledObject as raw JSON, so that invalid values reach the server unchanged.
fn scaled_object(name: &str, spec: serde_json::Value) -> kube::api::DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("test object deserialises")
}

fn raw_api(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<ScaledObject>(&()),
    )
}

#[tokio::test]
async fn valid_scaled_object_reads_back_with_keda_defaults() {
    let env = TestEnv::load().await.unwrap();
    eprintln!("control plane: {}", env.kube_flavor());
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("crd-defaults").await.unwrap();
    let api: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns.name);
    // Sent as raw JSON without the defaulted fields, so the defaults must come from the server.
    let raw = json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"},
                 "triggers": [{"type": "metrics-api", "metadata": {"url": "http://x/", "valueLocation": "v", "targetValue": "1"}}]}
    });
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<ScaledObject>(&()),
    );
    dynamic
        .create(&PostParams::default(), &serde_json::from_value(raw).unwrap())
        .await
        .unwrap();
    let back = api.get("worker").await.unwrap();
    assert_eq!(back.spec.polling_interval, 30);
    assert_eq!(back.spec.cooldown_period, 300);
    assert_eq!(back.spec.initial_cooldown_period, 0);
    assert_eq!(back.spec.min_replica_count, 0);
    assert_eq!(back.spec.max_replica_count, 100);
    assert_eq!(
        back.spec.triggers[0].metric_type,
        ebb_crds::MetricType::AverageValue
    );
    // The raw object as stored carries the defaults too (not only our serde defaults).
    let stored = dynamic.get("worker").await.unwrap();
    assert_eq!(stored.data["spec"]["pollingInterval"], 30);
    assert_eq!(stored.data["spec"]["maxReplicaCount"], 100);
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn schema_rejects_invalid_scaled_objects() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("crd-invalid").await.unwrap();
    let api = raw_api(&env.client, &ns.name);
    let trigger = json!([{"type": "kafka", "metadata": {}}]);
    let cases = [
        (
            "polling-zero",
            json!({"scaleTargetRef": {"name": "w"}, "pollingInterval": 0, "triggers": trigger}),
            "spec.pollingInterval",
        ),
        (
            "no-triggers",
            json!({"scaleTargetRef": {"name": "w"}, "triggers": []}),
            "spec.triggers",
        ),
        (
            "max-zero",
            json!({"scaleTargetRef": {"name": "w"}, "maxReplicaCount": 0, "triggers": trigger}),
            "spec.maxReplicaCount",
        ),
        (
            "bad-fallback",
            json!({"scaleTargetRef": {"name": "w"}, "triggers": trigger,
            "fallback": {"failureThreshold": 1, "replicas": 1, "behavior": "sometimes"}}),
            "spec.fallback.behavior",
        ),
        (
            "empty-target",
            json!({"scaleTargetRef": {"name": ""}, "triggers": trigger}),
            "spec.scaleTargetRef.name",
        ),
    ];
    for (name, spec, field) in cases {
        let err = api
            .create(&PostParams::default(), &scaled_object(name, spec))
            .await
            .expect_err(name);
        let kube::Error::Api(status) = err else {
            panic!("{name}: unexpected error {err}")
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert!(status.message.contains(field), "{name}: {}", status.message);
    }
    // Cross-field rules are CEL rules: only servers that evaluate CEL reject these at admission
    // (the operator enforces the same rules everywhere).
    let min_above_max = scaled_object(
        "min-above-max",
        json!({"scaleTargetRef": {"name": "w"}, "minReplicaCount": 5, "maxReplicaCount": 2, "triggers": trigger}),
    );
    let result = api.create(&PostParams::default(), &min_above_max).await;
    if env.evaluates_cel() {
        let Err(kube::Error::Api(status)) = result else {
            panic!("CEL rule did not reject min > max: {result:?}")
        };
        assert!(
            status
                .message
                .contains("minReplicaCount must be less than or equal to maxReplicaCount"),
            "{}",
            status.message
        );
    } else {
        eprintln!(
            "{}: no CEL at admission; min > max accepted by the server as expected",
            env.kube_flavor()
        );
        assert!(result.is_ok(), "{result:?}");
    }
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn trigger_authentications_round_trip() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("crd-auth").await.unwrap();
    let api: Api<ebb_crds::TriggerAuthentication> = Api::namespaced(env.client.clone(), &ns.name);
    let ta: ebb_crds::TriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": "creds"},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "s", "key": "p"}],
                 "podIdentity": {"provider": "aws"}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &ta).await.unwrap();
    let back = api.get("creds").await.unwrap();
    assert_eq!(back.spec, ta.spec);
    let bad: ebb_crds::TriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": "bad"},
        "spec": {"secretTargetRef": [{"parameter": "", "name": "s", "key": "p"}]}
    }))
    .unwrap();
    assert!(api.create(&PostParams::default(), &bad).await.is_err());
    let cta_api: Api<ebb_crds::ClusterTriggerAuthentication> = Api::all(env.client.clone());
    let cta_name = format!("{}-cta", ns.name);
    let cta: ebb_crds::ClusterTriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ClusterTriggerAuthentication", "metadata": {"name": cta_name},
        "spec": {"env": [{"parameter": "host", "name": "RABBIT_URL"}]}
    }))
    .unwrap();
    cta_api.create(&PostParams::default(), &cta).await.unwrap();
    assert_eq!(cta_api.get(&cta_name).await.unwrap().spec, cta.spec);
    cta_api.delete(&cta_name, &Default::default()).await.unwrap();
    ns.delete().await.unwrap();
}
