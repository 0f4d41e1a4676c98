//! The objects `ebb validate` was given, as an [`ObjectSource`]: triggers' Secrets, ConfigMaps,
//! (Cluster)TriggerAuthentications and workloads are looked up among the input documents, so a
//! bundle is checked with the same trigger compilation the operator runs against the cluster.

use std::collections::BTreeMap;

use ebb_crds::TriggerAuthenticationSpec;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value as Json;

use crate::cli::validate::InputDocument;
use crate::compile::inputs::{self as trigger_inputs, Lookup, ObjectSource, SecretDecodeError};

/// The text at a JSON pointer, when it is a string.
pub(crate) fn str_at<'a>(v: &'a Json, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Json::as_str)
}

/// The objects of a bundle that triggers may reference: Secrets, ConfigMaps, TriggerAuthentications,
/// ClusterTriggerAuthentications and workloads (for their container env).
#[derive(Default)]
pub struct BundleObjects {
    secrets: BTreeMap<(String, String), Result<BTreeMap<String, String>, SecretDecodeError>>,
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    trigger_auths: BTreeMap<(String, String), TriggerAuthenticationSpec>,
    cluster_trigger_auths: BTreeMap<String, TriggerAuthenticationSpec>,
    workloads: BTreeMap<(String, String, String), PodTemplateSpec>,
    service_accounts: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl BundleObjects {
    /// Indexes the documents by kind, namespace and name.
    pub fn from_documents(docs: &[InputDocument]) -> Self {
        let mut b = BundleObjects::default();
        for doc in docs {
            let v = &doc.value;
            let kind = str_at(v, "/kind").unwrap_or_default();
            let api_version = str_at(v, "/apiVersion").unwrap_or_default();
            let name = str_at(v, "/metadata/name").unwrap_or_default().to_string();
            let ns = str_at(v, "/metadata/namespace").unwrap_or("default").to_string();
            let ours = api_version == ebb_crds::API_VERSION || api_version == ebb_crds::KEDA_API_VERSION;
            match (api_version, kind) {
                ("v1", "Secret") => {
                    b.secrets.insert((ns, name), decode_secret_json(v));
                }
                ("v1", "ServiceAccount") => {
                    let annotations = v
                        .pointer("/metadata/annotations")
                        .and_then(Json::as_object)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                                .collect()
                        })
                        .unwrap_or_default();
                    b.service_accounts.insert((ns, name), annotations);
                }
                ("v1", "ConfigMap") => {
                    let data = v
                        .get("data")
                        .and_then(Json::as_object)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), scalar_text(v)?)))
                                .collect()
                        })
                        .unwrap_or_default();
                    b.config_maps.insert((ns, name), data);
                }
                (_, "TriggerAuthentication") if ours => {
                    if let Ok(spec) = serde_json::from_value(v.get("spec").cloned().unwrap_or_default()) {
                        b.trigger_auths.insert((ns, name), spec);
                    }
                }
                (_, "ClusterTriggerAuthentication") if ours => {
                    if let Ok(spec) = serde_json::from_value(v.get("spec").cloned().unwrap_or_default()) {
                        b.cluster_trigger_auths.insert(name, spec);
                    }
                }
                (av, k)
                    if av.starts_with("apps/")
                        && matches!(k, "Deployment" | "StatefulSet" | "ReplicaSet") =>
                {
                    if let Some(Ok(t)) = v
                        .pointer("/spec/template")
                        .map(|t| serde_json::from_value(t.clone()))
                    {
                        b.workloads.insert((ns, k.to_string(), name), t);
                    }
                }
                _ => {}
            }
        }
        b
    }
}

/// Renders a YAML scalar as the string Kubernetes would store (numbers and booleans as text).
fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn decode_secret_json(v: &Json) -> Result<BTreeMap<String, String>, SecretDecodeError> {
    let mut out = BTreeMap::new();
    for (k, val) in v.get("data").and_then(Json::as_object).into_iter().flatten() {
        let text = val
            .as_str()
            .ok_or_else(|| SecretDecodeError::NotAString(k.clone()))?;
        out.insert(k.clone(), trigger_inputs::decode_base64(k, text)?);
    }
    for (k, val) in v
        .get("stringData")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        out.insert(
            k.clone(),
            scalar_text(val).ok_or_else(|| SecretDecodeError::StringDataNotText(k.clone()))?,
        );
    }
    Ok(out)
}

#[async_trait::async_trait]
impl ObjectSource for BundleObjects {
    async fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        match self.secrets.get(&(namespace.to_string(), name.to_string())) {
            Some(Ok(data)) => Lookup::Found(data.clone()),
            Some(Err(problem)) => Lookup::Unavailable(format!("Secret {namespace}/{name}: {problem}")),
            None => Lookup::Missing,
        }
    }
    async fn service_account_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Lookup<BTreeMap<String, String>> {
        self.service_accounts
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .map_or(Lookup::Missing, Lookup::Found)
    }
    async fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        self.config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .map_or(Lookup::Missing, Lookup::Found)
    }
    async fn trigger_authentication(&self, namespace: &str, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        self.trigger_auths
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .map_or(Lookup::Missing, Lookup::Found)
    }
    async fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        self.cluster_trigger_auths
            .get(name)
            .cloned()
            .map_or(Lookup::Missing, Lookup::Found)
    }
    async fn pod_template(
        &self,
        namespace: &str,
        _api_version: &str,
        kind: &str,
        name: &str,
    ) -> Lookup<PodTemplateSpec> {
        self.workloads
            .get(&(namespace.to_string(), kind.to_string(), name.to_string()))
            .cloned()
            .map_or(Lookup::Missing, Lookup::Found)
    }
    fn cluster_auth_namespace(&self) -> &str {
        // Offline there is no operator namespace; ClusterTriggerAuthentication secrets are looked up
        // in the namespace ebb's chart installs into by default.
        CLUSTER_AUTH_NAMESPACE
    }
    fn missing_is_error(&self) -> bool {
        false
    }
}

/// Namespace assumed offline for ClusterTriggerAuthentication Secrets and ConfigMaps.
pub const CLUSTER_AUTH_NAMESPACE: &str = "ebb-system";
