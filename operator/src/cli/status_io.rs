//! `ebb status`'s cluster side: reads what [`super::status::compose`] needs (a thin executor, no
//! decisions): the ScaledObject, each metric through the external metrics API with the selector
//! ebb's adapter reads (`scaledobject.ebb.dev/name=<name>`), the target's `/scale`, the owned HPA
//! (`autoscaling/v2` or `v2beta2`, whichever the cluster serves) and the object's Events.

use ebb_crds::ScaledObject;
use ebb_metrics_adapter::SCALED_OBJECT_LABEL;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::explain::OutputFormat;
use super::status::{Gathered, MetricReading, StatusArgs, compose, list_lines};
use super::status_text::{list_text, report_text};
use crate::infra::hpa_discovery::{discover_once, hpa_api};

/// Why `ebb status` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("connecting to the cluster: {0}")]
    Connect(#[source] kube::Error),
    /// The ScaledObject could not be read.
    #[error("reading ScaledObject {namespace}/{name}: {source}")]
    Object {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The ScaledObjects could not be listed.
    #[error("listing ScaledObjects in {namespace}: {source}")]
    List {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The report could not be serialised.
    #[error("serialising the report: {0}")]
    Json(#[from] serde_json::Error),
    /// The report could not be serialised as YAML.
    #[error("serialising the report as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// What `ebb status` prints, read from the cluster `kube::Client::try_default` connects to.
pub async fn run(args: &StatusArgs) -> Result<String, StatusError> {
    let client = Client::try_default().await.map_err(StatusError::Connect)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    match &args.name {
        Some(name) => {
            let gathered = gather(&client, &namespace, name).await?;
            let report = compose(&gathered);
            match args.output {
                OutputFormat::Text => Ok(report_text(&report)),
                format => render(&report, format),
            }
        }
        None => {
            let api: Api<ScaledObject> = Api::namespaced(client.clone(), &namespace);
            let objects = api
                .list(&ListParams::default())
                .await
                .map_err(|source| StatusError::List {
                    namespace: namespace.clone(),
                    source,
                })?
                .items;
            let hpas = hpa_replicas(&client, &namespace).await;
            let lines = list_lines(&objects, &|name| {
                hpas.iter().find(|(n, _)| n == name).map(|(_, r)| *r)
            });
            match args.output {
                OutputFormat::Text => Ok(list_text(&lines)),
                format => render(&lines, format),
            }
        }
    }
}

/// A report as JSON or YAML (`-o text` is rendered by [`super::status_text`]).
fn render<T: serde::Serialize>(value: &T, format: OutputFormat) -> Result<String, StatusError> {
    Ok(match format {
        OutputFormat::Yaml => serde_saphyr::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}

/// The current replicas of every HPA of the namespace, by name (empty when unreadable).
async fn hpa_replicas(client: &Client, namespace: &str) -> Vec<(String, i64)> {
    let Ok(Some(version)) = discover_once(client).await else {
        return Vec::new();
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &hpa_api(version).resource);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter_map(|h| {
            let replicas = h.data.pointer("/status/currentReplicas")?.as_i64()?;
            Some((h.name_any(), replicas))
        })
        .collect()
}

/// Reads everything about one ScaledObject. Only the object itself is required; anything else
/// that cannot be read shows as unknown in the report.
pub async fn gather(client: &Client, namespace: &str, name: &str) -> Result<Gathered, StatusError> {
    let api: Api<ScaledObject> = Api::namespaced(client.clone(), namespace);
    let object = api.get(name).await.map_err(|source| StatusError::Object {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    })?;
    let status = object.status.clone().unwrap_or_default();
    let mut metric_names = status.external_metric_names.clone();
    metric_names.extend(status.composite_scaler_name.clone());
    let mut metrics = Vec::new();
    for metric in metric_names {
        let value = metric_value(client, namespace, name, &metric).await;
        metrics.push(MetricReading { metric, value });
    }
    let scale = target_scale(client, namespace, &object).await;
    let hpa = hpa(
        client,
        namespace,
        &status.hpa_name.clone().unwrap_or_else(|| object.hpa_name()),
    )
    .await;
    let events = events(client, namespace, &object).await;
    Ok(Gathered {
        object,
        now: jiff::Timestamp::now(),
        metrics,
        scale,
        hpa,
        events,
    })
}

/// One metric's value, as the HPA would read it.
async fn metric_value(client: &Client, namespace: &str, name: &str, metric: &str) -> Result<String, String> {
    let selector = format!("{SCALED_OBJECT_LABEL}={name}");
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{}?labelSelector={}",
        utf8_percent_encode(namespace, NON_ALPHANUMERIC),
        utf8_percent_encode(metric, NON_ALPHANUMERIC),
        utf8_percent_encode(&selector, NON_ALPHANUMERIC)
    );
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let answer: Value = client.request(request).await.map_err(|e| e.to_string())?;
    let items = answer.get("items").and_then(Value::as_array);
    match items
        .and_then(|items| items.first())
        .and_then(|item| item.get("value"))
    {
        Some(Value::String(v)) => Ok(v.clone()),
        _ => Err("the answer holds no value".to_string()),
    }
}

/// The target's `/scale`: (`spec.replicas`, `status.replicas`).
async fn target_scale(client: &Client, namespace: &str, object: &ScaledObject) -> Result<(i32, i32), String> {
    let target = &object.spec.scale_target_ref;
    let (group, version) = match target.api_version_or_default().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), target.api_version_or_default().to_string()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, target.kind_or_default());
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let scale = api.get_scale(&target.name).await.map_err(|e| e.to_string())?;
    let spec = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    let current = scale.status.map_or(0, |s| s.replicas);
    Ok((spec, current))
}

/// The owned HPA as JSON, when the cluster has it.
async fn hpa(client: &Client, namespace: &str, name: &str) -> Option<Value> {
    let version = discover_once(client).await.ok()??;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &hpa_api(version).resource);
    let hpa = api.get_opt(name).await.ok()??;
    serde_json::to_value(hpa).ok()
}

/// The object's Events (core/v1, by its UID); none when unreadable.
async fn events(client: &Client, namespace: &str, object: &ScaledObject) -> Vec<Event> {
    let Some(uid) = object.metadata.uid.as_deref() else {
        return Vec::new();
    };
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    api.list(&params).await.map(|l| l.items).unwrap_or_default()
}
