//! The test node (`tests/env/node.sh`): real pods on containerd, scheduled by kube-scheduler, with
//! Services through kube-proxy, and the API server reachable from pods through the `kubernetes`
//! Service as in users' clusters. Each test has its own namespace.

use std::time::Duration;

use ebb_tests::pods::{self, BUSYBOX_IMAGE, EBB_IMAGE};
use ebb_tests::{TestEnv, TestNamespace, install_crds, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The environment (which must have a node) and a namespace of the test's own whose default
/// ServiceAccount can run pods.
async fn setup(prefix: &str) -> (TestEnv, TestNamespace) {
    let env = TestEnv::load().await.unwrap();
    pods::require_node(&env).unwrap();
    let ns = env.namespace(prefix).await.unwrap();
    pods::wait_service_account(&env.client, &ns.name).await.unwrap();
    (env, ns)
}

fn pod(name: &str, labels: Value, image: &str, command: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_pod_runs_and_its_log_can_be_read() {
    let (env, ns) = setup("node-log").await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &ns.name);
    let p = pod(
        "hello",
        json!({}),
        BUSYBOX_IMAGE,
        json!(["sh", "-c", "echo hello from $(hostname); exec sleep 3600"]),
    );
    api.create(&PostParams::default(), &p).await.unwrap();
    let running = pods::wait_phase(&env.client, &ns.name, "hello", "Running", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        running.spec.as_ref().unwrap().node_name.as_deref(),
        Some(env.var("EBB_NODE").unwrap()),
        "scheduled onto the test node"
    );
    let pod_ip = running.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(
        pod_ip.starts_with("10.244.0."),
        "pod IP {pod_ip} from the bridge's range"
    );
    assert_eq!(
        running.status.as_ref().unwrap().host_ip.as_deref(),
        Some("10.244.0.1")
    );
    // The log is served by the kubelet, through the API server.
    let log = wait_for("the pod's log", Duration::from_secs(20), || async {
        let log = pods::log(&env.client, &ns.name, "hello").await.ok()?;
        log.contains("hello from hello").then_some(log)
    })
    .await
    .unwrap();
    assert_eq!(log.trim(), "hello from hello");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_service_reaches_a_pod() {
    let (env, ns) = setup("node-svc").await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &ns.name);
    let web = pod(
        "web",
        json!({"app": "web"}),
        BUSYBOX_IMAGE,
        json!([
            "sh",
            "-c",
            "echo served by $(hostname) > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"
        ]),
    );
    api.create(&PostParams::default(), &web).await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let svc = Api::<Service>::namespaced(env.client.clone(), &ns.name)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    pods::wait_phase(&env.client, &ns.name, "web", "Running", Duration::from_secs(60))
        .await
        .unwrap();
    // Another pod fetches the page through the Service's cluster IP (kube-proxy), retrying while
    // the endpoints and the proxy rules catch up.
    // (busybox-static's wget resolves names through glibc's NSS, which a static binary cannot
    // load; nc with an IP does no lookup.)
    let client_cmd = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
           printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {cluster_ip} 80 > /tmp/out && \
           grep -q 'served by' /tmp/out && exec grep 'served by' /tmp/out; sleep 1; done; exit 1"
    );
    let client = pod(
        "client",
        json!({}),
        BUSYBOX_IMAGE,
        json!(["sh", "-c", client_cmd]),
    );
    api.create(&PostParams::default(), &client).await.unwrap();
    let done = pods::wait_phase(
        &env.client,
        &ns.name,
        "client",
        "Succeeded",
        Duration::from_secs(60),
    )
    .await;
    let log = pods::log(&env.client, &ns.name, "client")
        .await
        .unwrap_or_default();
    done.unwrap_or_else(|e| panic!("{e}; client log: {log}"));
    assert_eq!(log.trim(), "served by web");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn pods_of_a_deployment_scaled_to_zero_are_deleted() {
    let (env, ns) = setup("node-scale").await;
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sleeper"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "sleeper"}},
            "template": {"metadata": {"labels": {"app": "sleeper"}}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}]}}
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &d).await.unwrap();
    wait_for("2 pods ready", Duration::from_secs(90), || async {
        (pods::ready_count(&env.client, &ns.name, "app=sleeper")
            .await
            .ok()?
            == 2)
            .then_some(())
    })
    .await
    .unwrap();
    deployments
        .patch(
            "sleeper",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    pods::wait_gone(&env.client, &ns.name, "app=sleeper", Duration::from_secs(60))
        .await
        .unwrap();
    ns.delete().await.unwrap();
}

/// ebb's image runs in a pod and reaches the API server the way it does in users' clusters: the
/// in-cluster configuration (`KUBERNETES_SERVICE_HOST`, the ServiceAccount token and CA) through
/// the `kubernetes` Service. Proof: it takes its leader Lease. (The rights are cluster-admin here:
/// this tests connectivity; the chart's RBAC is tested with the chart.)
#[tokio::test]
async fn ebb_runs_in_a_pod_and_reaches_the_api_server_through_the_kubernetes_service() {
    let (env, ns) = setup("node-ebb").await;
    install_crds(&env.client).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("ebb-test-{}", ns.name)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name}]
    }))
    .unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(env.client.clone());
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let p: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ebb"},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "ebb", "image": EBB_IMAGE, "imagePullPolicy": "Never",
                "args": ["operator", "--namespace", ns.name, "--health-addr", "0.0.0.0:8080"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1}
            }]
        }
    }))
    .unwrap();
    Api::<Pod>::namespaced(env.client.clone(), &ns.name)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    let running = pods::wait_phase(&env.client, &ns.name, "ebb", "Running", Duration::from_secs(60)).await;
    let log = || async { pods::log(&env.client, &ns.name, "ebb").await.unwrap_or_default() };
    running.unwrap_or_else(|e| panic!("{e}"));
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns.name);
    let held = wait_for("ebb's Lease held by its pod", Duration::from_secs(60), || async {
        let lease = leases.get_opt("ebb-operator").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        (holder == "ebb").then_some(holder)
    })
    .await;
    if let Err(e) = held {
        panic!("{e}; ebb's log:\n{}", log().await);
    }
    // Its readiness probe is answered over the pod network by the kubelet.
    wait_for("ebb's pod Ready", Duration::from_secs(30), || async {
        let pod = Api::<Pod>::namespaced(env.client.clone(), &ns.name)
            .get("ebb")
            .await
            .ok()?;
        pods::is_ready(&pod).then_some(())
    })
    .await
    .unwrap();
    Api::<Pod>::namespaced(env.client.clone(), &ns.name)
        .delete("ebb", &DeleteParams::default())
        .await
        .unwrap();
    bindings
        .delete(&format!("ebb-test-{}", ns.name), &DeleteParams::default())
        .await
        .unwrap();
    ns.delete().await.unwrap();
}
