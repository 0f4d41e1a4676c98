//! Registering an ebb process' metrics adapter with the API server's aggregation layer.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{HarnessError, wait_for};

/// Name of the (cluster-wide, single) external metrics APIService.
pub const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";

async fn create_or_replace<K>(api: &Api<K>, obj: K) -> Result<(), HarnessError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &obj).await?;
        }
        Some(existing) => {
            let mut obj = obj;
            obj.meta_mut().resource_version = existing.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &obj).await?;
        }
    }
    Ok(())
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("static manifest")
}

/// Points the external metrics APIService at an adapter on 127.0.0.1:`port` (through an
/// ExternalName Service in `namespace`: Endpoints may not hold loopback addresses), lets the
/// HPA controller read external metrics, and waits until the APIService is Available.
pub async fn register(client: &kube::Client, namespace: &str, port: u16) -> Result<(), HarnessError> {
    let addr = format!("127.0.0.1:{port}");
    wait_for("adapter listening", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
    })
    .await?;
    let role: ClusterRole = from_json(json!({
        "metadata": {"name": "ebb-external-metrics-reader"},
        "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
    }));
    create_or_replace(&Api::all(client.clone()), role).await?;
    let binding: ClusterRoleBinding = from_json(json!({
        "metadata": {"name": "ebb-hpa-external-metrics"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ebb-external-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}]
    }));
    create_or_replace(&Api::all(client.clone()), binding).await?;
    let svc: Service = from_json(json!({
        "metadata": {"name": "ebb-metrics"},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]}
    }));
    create_or_replace(&Api::namespaced(client.clone(), namespace), svc).await?;
    let apiservice: APIService = from_json(json!({
        "metadata": {"name": APISERVICE},
        "spec": {"service": {"name": "ebb-metrics", "namespace": namespace, "port": port},
                 "group": "external.metrics.k8s.io", "version": "v1beta1",
                 "insecureSkipTLSVerify": true, "groupPriorityMinimum": 100, "versionPriority": 100}
    }));
    let apiservices: Api<APIService> = Api::all(client.clone());
    create_or_replace(&apiservices, apiservice).await?;
    wait_available(client, Duration::from_secs(60)).await
}

/// Waits until the external metrics APIService reports `Available: True`.
pub async fn wait_available(client: &kube::Client, within: Duration) -> Result<(), HarnessError> {
    let apiservices: Api<APIService> = Api::all(client.clone());
    wait_for("APIService Available", within, || async {
        let a = apiservices.get(APISERVICE).await.ok()?;
        let ok = a
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        ok.then_some(())
    })
    .await
}

/// An exclusive lock on `apiservice.lock` next to the env file, held while a test owns the
/// APIService: serialises the test processes that take it (nextest's `apiservice` test group
/// only serialises within one run). Processes that do not take it are waited out by
/// [`wait_until_free`].
pub async fn lock() -> std::fs::File {
    let path = crate::env_file().with_file_name("apiservice.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        file
    })
    .await
    .expect("the lock task does not panic")
}

/// Where the external-metrics APIService points: `(namespace, port)`.
pub async fn owner(client: &kube::Client) -> Option<(String, i32)> {
    let api: Api<APIService> = Api::all(client.clone());
    let service = api.get_opt(APISERVICE).await.ok()??.spec?.service?;
    Some((service.namespace?, service.port?))
}

/// Other processes (another `cargo nextest` run, `tests/demo.sh`) register the same
/// cluster-wide APIService and take it over while they run. Waits (up to 3 min, then goes
/// ahead) until nobody serves it: absent, or left behind by a process that is gone (nothing
/// listens on its port on loopback).
pub async fn wait_until_free(client: &kube::Client) {
    let announced = std::sync::Mutex::new(String::new());
    let free = wait_for(
        "the external-metrics APIService is free",
        Duration::from_secs(180),
        || async {
            let Some((namespace, port)) = owner(client).await else {
                return Some(());
            };
            let port = u16::try_from(port).ok()?;
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => {
                    let mut last = announced
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *last != namespace {
                        eprintln!("waiting: the APIService is in use by namespace {namespace}");
                        *last = namespace;
                    }
                    None
                }
                Err(_) => Some(()),
            }
        },
    )
    .await;
    if let Err(e) = free {
        eprintln!("{e}; taking the APIService over");
    }
}

/// Removes the APIService (best effort).
pub async fn unregister(client: &kube::Client) {
    let _ = Api::<APIService>::all(client.clone())
        .delete(APISERVICE, &Default::default())
        .await;
}
