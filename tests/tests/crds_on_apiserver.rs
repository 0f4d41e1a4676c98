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
        ebb_crds::TriggerMetricType::AverageValue
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

/// A ScaledJob as raw JSON, so that invalid values reach the server unchanged.
fn scaled_job(name: &str, spec: serde_json::Value) -> kube::api::DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("test object deserialises")
}

fn raw_job_api(client: &kube::Client, ns: &str) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<ebb_crds::ScaledJob>(&()),
    )
}

/// A JobSpec with the pod-template fields that stress a structural schema: int-or-string
/// probe ports, resource quantities, list-map keys, an init container and template metadata.
fn job_target() -> serde_json::Value {
    json!({
        "backoffLimit": 2,
        "ttlSecondsAfterFinished": 60,
        "template": {
            "metadata": {"labels": {"app": "worker"}, "annotations": {"a": "b"}},
            "spec": {
                "restartPolicy": "Never",
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{
                    "name": "worker", "image": "busybox", "command": ["sh", "-c", "sleep 1"],
                    "env": [{"name": "QUEUE", "value": "q"}],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "readinessProbe": {"tcpSocket": {"port": 8080}}
                }]
            }
        }
    })
}

#[tokio::test]
async fn valid_scaled_job_reads_back_with_keda_defaults() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("crd-job-defaults").await.unwrap();
    let dynamic = raw_job_api(&env.client, &ns.name);
    let spec = json!({"jobTargetRef": job_target(),
        "triggers": [{"type": "rabbitmq", "metadata": {"queueName": "q", "host": "amqp://h/"}}]});
    dynamic
        .create(&PostParams::default(), &scaled_job("batch", spec))
        .await
        .unwrap();
    let api: Api<ebb_crds::ScaledJob> = Api::namespaced(env.client.clone(), &ns.name);
    let back = api.get("batch").await.unwrap();
    assert_eq!(back.spec.polling_interval, 30);
    assert_eq!(
        (
            back.spec.successful_jobs_history_limit,
            back.spec.failed_jobs_history_limit
        ),
        (100, 100)
    );
    assert_eq!(
        (back.spec.min_replica_count, back.spec.max_replica_count),
        (0, 100)
    );
    // The stored object carries the defaults (not only our serde defaults), and the JobSpec
    // survives pruning whole.
    let stored = dynamic.get("batch").await.unwrap();
    let s = &stored.data["spec"];
    assert_eq!(s["successfulJobsHistoryLimit"], 100);
    assert_eq!(s["scalingStrategy"]["strategy"], "default");
    assert_eq!(s["scalingStrategy"]["multipleScalersCalculation"], "max");
    let container = &s["jobTargetRef"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(container["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(
        s["jobTargetRef"]["template"]["metadata"]["labels"]["app"],
        "worker"
    );
    assert_eq!(s["jobTargetRef"]["ttlSecondsAfterFinished"], 60);
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn schema_rejects_invalid_scaled_jobs() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("crd-job-invalid").await.unwrap();
    let api = raw_job_api(&env.client, &ns.name);
    let trigger = json!([{"type": "rabbitmq", "metadata": {}}]);
    let with = |extra: serde_json::Value| {
        let mut spec = json!({"jobTargetRef": job_target(), "triggers": trigger});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let schema_cases = [
        ("no-job", json!({"triggers": trigger}), "spec.jobTargetRef"),
        ("no-triggers", with(json!({"triggers": []})), "spec.triggers"),
        (
            "history-negative",
            with(json!({"failedJobsHistoryLimit": -1})),
            "spec.failedJobsHistoryLimit",
        ),
        (
            "bad-strategy",
            with(json!({"scalingStrategy": {"strategy": "greedy"}})),
            "spec.scalingStrategy.strategy",
        ),
        (
            "bad-calculation",
            with(json!({"scalingStrategy": {"multipleScalersCalculation": "median"}})),
            "spec.scalingStrategy.multipleScalersCalculation",
        ),
        (
            "bad-rollout",
            with(json!({"rollout": {"strategy": "sometimes"}})),
            "spec.rollout.strategy",
        ),
    ];
    for (name, spec, field) in schema_cases {
        let err = api
            .create(&PostParams::default(), &scaled_job(name, spec))
            .await
            .expect_err(name);
        let kube::Error::Api(status) = err else {
            panic!("{name}: unexpected error {err}")
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert!(status.message.contains(field), "{name}: {}", status.message);
    }
    // The cross-field rules are CEL rules: only servers that evaluate CEL reject these.
    let cel_cases = [
        (
            "min-above-max",
            with(json!({"minReplicaCount": 5, "maxReplicaCount": 2})),
            "spec.minReplicaCount",
            "minReplicaCount must be less than or equal to maxReplicaCount",
        ),
        (
            "percentage-text",
            with(
                json!({"scalingStrategy": {"strategy": "custom", "customScalingRunningJobPercentage": "half"}}),
            ),
            "spec.scalingStrategy.customScalingRunningJobPercentage",
            "customScalingRunningJobPercentage must be a number between 0 and 1",
        ),
        (
            "percentage-above-one",
            with(
                json!({"scalingStrategy": {"strategy": "custom", "customScalingRunningJobPercentage": "1.5"}}),
            ),
            "spec.scalingStrategy.customScalingRunningJobPercentage",
            "customScalingRunningJobPercentage must be a number between 0 and 1",
        ),
    ];
    for (name, spec, field, message) in cel_cases {
        let result = api.create(&PostParams::default(), &scaled_job(name, spec)).await;
        if env.evaluates_cel() {
            let Err(kube::Error::Api(status)) = result else {
                panic!("{name}: CEL rule did not reject it: {result:?}")
            };
            assert!(status.message.contains(field), "{name}: {}", status.message);
            assert!(status.message.contains(message), "{name}: {}", status.message);
        } else {
            eprintln!("{}: no CEL at admission; {name} accepted", env.kube_flavor());
            assert!(result.is_ok(), "{name}: {result:?}");
        }
    }
    // A percentage the rule accepts, and any text under another strategy (KEDA ignores it there).
    for (name, strategy, percentage) in [
        ("custom-ok", "custom", "0.5"),
        ("accurate-any", "accurate", "half"),
    ] {
        let spec = with(
            json!({"scalingStrategy": {"strategy": strategy, "customScalingRunningJobPercentage": percentage}}),
        );
        api.create(&PostParams::default(), &scaled_job(name, spec))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    ns.delete().await.unwrap();
}

/// `kubectl get ebbso` as the API server renders it (a Table): the Triggers column lists every
/// trigger type of a multi-trigger object (a JSONPath over `spec.triggers[*]` shows only the
/// first), and Kind the target's kind, both from the status the operator writes.
#[tokio::test]
async fn kubectl_get_shows_every_trigger_type_and_the_target_kind() {
    use ebb_tests::objects::deployment;
    use ebb_tests::operator::OperatorProcess;
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("crd-table").await.unwrap();
    deployment(&env.client, &ns.name, "worker", 0).await.unwrap();
    let operator = OperatorProcess::start(&env, &ns.name, "op", &[]).await.unwrap();
    let so = scaled_object(
        "worker",
        json!({"scaleTargetRef": {"name": "worker"}, "triggers": [
            {"type": "metrics-api", "metadata": {"url": "http://127.0.0.1:1/", "valueLocation": "v", "targetValue": "1"}},
            {"type": "kafka", "metadata": {"bootstrapServers": "127.0.0.1:1", "consumerGroup": "g", "topic": "t", "lagThreshold": "5"}}
        ]}),
    );
    raw_api(&env.client, &ns.name)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();
    let path = format!("/apis/ebb.dev/v1alpha1/namespaces/{}/scaledobjects", ns.name);
    let table = ebb_tests::wait_for(
        "the Triggers column",
        std::time::Duration::from_secs(30),
        || async {
            let request = http::Request::get(&path)
                .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
                .body(Vec::new())
                .unwrap();
            let table: serde_json::Value = env.client.request(request).await.ok()?;
            let column = |name: &str| {
                table["columnDefinitions"]
                    .as_array()?
                    .iter()
                    .position(|c| c["name"] == name)
            };
            let cells = table["rows"][0]["cells"].as_array()?.clone();
            let triggers = cells.get(column("Triggers")?)?.as_str()?.to_string();
            let kind = cells.get(column("Kind")?)?.as_str()?.to_string();
            (!triggers.is_empty()).then_some((triggers, kind))
        },
    )
    .await;
    operator.terminate().await;
    let _ = ns.delete().await;
    let (triggers, kind) = table.unwrap();
    let mut types: Vec<&str> = triggers.split(',').collect();
    types.sort_unstable();
    assert_eq!(types, ["kafka", "metrics-api"], "{triggers}");
    assert_eq!(kind, "apps/v1.Deployment");
}
