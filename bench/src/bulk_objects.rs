//! Many Deployments and ScaledObjects at once, for the fleet and burst scenarios.
//!
//! The Deployments are created with `spec.paused: true` and 0 replicas: the deployment controller
//! then creates no ReplicaSet for them, so the API server's load is ebb's (and the HPA
//! controller's), not tens of thousands of ReplicaSets. `/scale` works on them as on any other
//! Deployment.

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// Requests the bench keeps in flight while creating or patching objects.
pub const CONCURRENCY: usize = 32;

/// The API resource of ebb's ScaledObject.
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ebb.dev", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// The API resource of HPAs: autoscaling/v2, or v2beta2 on a control plane without v2
/// (`env.kube_flavor() == "plain-1.20.2"`).
pub fn hpa_resource(v2: bool) -> ApiResource {
    let version = if v2 { "v2" } else { "v2beta2" };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    )
}

/// A paused Deployment at 0 replicas named `name` (its pods, if any, would match no node).
pub fn parked_deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "paused": true,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"nodeSelector": {"ebb.test/no-such-node": "true"},
                                  "containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]}}
        }
    }))
    .expect("deployment json")
}

/// A ScaledObject named `name` on the Deployment of the same name, with `trigger`; every other
/// field keeps its default (pollingInterval 30 s, cooldownPeriod 300 s, minReplicaCount 0).
pub fn scaled_object(name: &str, trigger: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"name": name}, "triggers": [trigger]}
    }))
    .expect("scaledobject json")
}

/// Creates `deployments` in `ns`, `CONCURRENCY` at a time; existing ones are kept.
pub async fn create_deployments(
    client: &Client,
    ns: &str,
    deployments: Vec<Deployment>,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    stream::iter(deployments)
        .map(|d| {
            let api = api.clone();
            async move { create_or_keep(api.create(&PostParams::default(), &d).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Creates `objects` (ScaledObjects) in `ns`, `CONCURRENCY` at a time.
pub async fn create_scaled_objects(
    client: &Client,
    ns: &str,
    objects: Vec<DynamicObject>,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &scaled_object_resource());
    stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move { create_or_keep(api.create(&PostParams::default(), &o).await) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn create_or_keep<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// How far along a set of ScaledObjects is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetProgress {
    /// ScaledObjects in the namespace.
    pub objects: usize,
    /// Of those, with `Ready=True`.
    pub ready: usize,
    /// HPAs in the namespace.
    pub hpas: usize,
}

/// Counts ScaledObjects, `Ready=True` ones and HPAs (of API resource `hpa`) in `ns` (two
/// paged lists).
pub async fn progress(client: &Client, ns: &str, hpa: &ApiResource) -> anyhow::Result<FleetProgress> {
    let sos = list_all(client, ns, &scaled_object_resource()).await?;
    let ready = sos.iter().filter(|o| is_ready(&o.data)).count();
    let hpas = list_all(client, ns, hpa).await?.len();
    Ok(FleetProgress {
        objects: sos.len(),
        ready,
        hpas,
    })
}

/// Whether a ScaledObject's status has `Ready=True`.
pub fn is_ready(data: &Value) -> bool {
    data.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn list_all(client: &Client, ns: &str, resource: &ApiResource) -> anyhow::Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(2000);
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        out.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// Waits until `done(progress)` holds, checking every `every`; gives up after `within`.
pub async fn wait_progress(
    client: &Client,
    ns: &str,
    hpa: &ApiResource,
    every: Duration,
    within: Duration,
    done: impl Fn(&FleetProgress) -> bool,
) -> anyhow::Result<FleetProgress> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let p = progress(client, ns, hpa).await?;
        if done(&p) {
            return Ok(p);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("gave up after {within:?} at {p:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes the finalizers of every ScaledObject in `ns` that has some (the operator is gone by
/// then), then deletes the namespace.
pub async fn tear_down(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &scaled_object_resource());
    let names: Vec<String> = list_all(client, ns, &scaled_object_resource())
        .await?
        .into_iter()
        .filter(|o| o.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()))
        .filter_map(|o| o.metadata.name)
        .collect();
    stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                let _ = api.patch(&name, &PatchParams::default(), &patch).await;
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &Default::default()).await;
    Ok(())
}

/// Creates namespace `ns` (kept if it exists).
pub async fn create_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let n =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
    create_or_keep(namespaces.create(&PostParams::default(), &n).await)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_true_ready_condition() {
        assert!(is_ready(
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        ));
        assert!(!is_ready(
            &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
        ));
        assert!(!is_ready(&json!({"status": {}})));
    }

    #[test]
    fn objects_keep_defaults_and_target_their_namesake() {
        let so = scaled_object("w-1", json!({"type": "metrics-api", "metadata": {}}));
        assert_eq!(so.data["spec"]["scaleTargetRef"]["name"], "w-1");
        assert!(so.data["spec"].get("pollingInterval").is_none());
        let d = parked_deployment("w-1");
        let spec = d.spec.unwrap();
        assert_eq!((spec.replicas, spec.paused), (Some(0), Some(true)));
    }
}
