//! Real pods on the test node (`tests/env/node.sh`): the images it holds, and waiting on pods.
//!
//! Images are imported by `tests/env/images.sh` (ebb, the Kafka consumer) and by every node start
//! (pause, busybox); pods use them with `imagePullPolicy: Never`, so nothing is pulled.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, LogParams};

use crate::{HarnessError, TestEnv, wait_for};

/// A busybox shell (`sh`, `sleep`, `httpd`, `wget`, `nc`, …), imported at every node start.
pub const BUSYBOX_IMAGE: &str = "ebb.test/busybox:1";
/// The release `ebb` binary laid out as the Dockerfile does (`tests/env/images.sh`).
pub const EBB_IMAGE: &str = "ebb.test/ebb:dev";
/// The rdkafka consumer of `tests/src/bin/kafka-consumer.rs` (`tests/env/images.sh`).
pub const KAFKA_CONSUMER_IMAGE: &str = "ebb.test/kafka-consumer:dev";

/// Whether the environment has a node that runs pods (`EBB_NODE` in the env file).
pub fn node_present(env: &TestEnv) -> bool {
    env.var("EBB_NODE").is_ok_and(|n| !n.is_empty())
}

/// Fails with a clear message when the environment has no node: tests of real pods need one.
pub fn require_node(env: &TestEnv) -> Result<(), HarnessError> {
    if node_present(env) {
        Ok(())
    } else {
        Err(HarnessError::MissingVar {
            key: "EBB_NODE (no node: start it with `tests/env/testenv.sh up`)".into(),
            path: crate::env_file().display().to_string(),
        })
    }
}

/// Waits until the namespace's `default` ServiceAccount has its token: until then (a second or
/// so after the namespace is created, on 1.20) the API server refuses to create pods in it.
pub async fn wait_service_account(client: &kube::Client, ns: &str) -> Result<(), HarnessError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("the default ServiceAccount of {ns} to have its token"),
        Duration::from_secs(30),
        || async {
            let sa = api.get_opt("default").await.ok()??;
            sa.secrets.is_some_and(|s| !s.is_empty()).then_some(())
        },
    )
    .await
}

/// Why a pod is not running, from its container statuses (e.g. `ErrImageNeverPull`), if it says.
pub fn waiting_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status.container_statuses.iter().flatten().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.clone()?;
        Some(match &w.message {
            Some(m) => format!("{}: {reason}: {m}", c.name),
            None => format!("{}: {reason}", c.name),
        })
    })
}

/// The pod's phase (`Pending`, `Running`, `Succeeded`, …).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
}

/// Whether every container of the pod is ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until pod `name` is in `phase` (e.g. `Running`, `Succeeded`). An image the node lacks
/// fails at once, naming the image script.
pub async fn wait_phase(
    client: &kube::Client,
    ns: &str,
    name: &str,
    want: &str,
    timeout: Duration,
) -> Result<Pod, HarnessError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let what = format!("pod {ns}/{name} {want}");
    let last = std::sync::Mutex::new(String::new());
    let result = wait_for(&what, timeout, || {
        let api = api.clone();
        let last = &last;
        async move {
            let pod = api.get_opt(name).await.ok()??;
            *last.lock().unwrap_or_else(|e| e.into_inner()) = format!(
                "phase {}{}",
                phase(&pod),
                waiting_reason(&pod).map(|r| format!(", {r}")).unwrap_or_default()
            );
            (phase(&pod) == want).then_some(pod)
        }
    })
    .await;
    result.map_err(|_| {
        let last = last.into_inner().unwrap_or_else(|e| e.into_inner());
        let hint = if last.contains("ErrImageNeverPull") {
            " (build and import the images: tests/env/images.sh)"
        } else {
            ""
        };
        HarnessError::Timeout(format!("{what}: last seen {last}{hint}"))
    })
}

/// The pods in `ns` matching `selector` (a label selector such as `app=worker`).
pub async fn list(client: &kube::Client, ns: &str, selector: &str) -> Result<Vec<Pod>, HarnessError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(api.list(&ListParams::default().labels(selector)).await?.items)
}

/// How many pods matching `selector` are Running and Ready (and not being deleted).
pub async fn ready_count(client: &kube::Client, ns: &str, selector: &str) -> Result<usize, HarnessError> {
    Ok(list(client, ns, selector)
        .await?
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running" && is_ready(p))
        .count())
}

/// The log of the pod's first container, read through the API server and the kubelet.
pub async fn log(client: &kube::Client, ns: &str, name: &str) -> Result<String, HarnessError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(api.logs(name, &LogParams::default()).await?)
}

/// Waits until no pod in `ns` matches `selector` (scaled in, deleted and terminated).
pub async fn wait_gone(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    timeout: Duration,
) -> Result<(), HarnessError> {
    wait_for(&format!("every pod {selector} in {ns} gone"), timeout, || async {
        list(client, ns, selector).await.ok()?.is_empty().then_some(())
    })
    .await
}
