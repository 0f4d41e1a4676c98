//! [`ObjectSource`] over the cluster: the operator resolves trigger inputs with the same code as
//! `ebb validate`, reading Secrets, ConfigMaps, TriggerAuthentications and workloads from the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use ebb_crds::{ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject};

use crate::cache::kinds::KindCache;
use crate::compile::inputs::{Lookup, ObjectSource, decode_secret};

/// Looks objects up in the cluster.
pub struct ClusterObjects {
    /// Client.
    pub client: Client,
    /// Namespace of ClusterTriggerAuthentication Secrets and ConfigMaps (the operator's).
    pub cluster_auth_namespace: String,
    /// Discovery answers per kind, shared across reconciles.
    pub kinds: Arc<KindCache>,
}

fn lookup<T>(r: Result<Option<T>, kube::Error>, what: String) -> Lookup<T> {
    match r {
        Ok(Some(v)) => Lookup::Found(v),
        Ok(None) => Lookup::Missing,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            Lookup::Unavailable(format!("{what}: access denied (check ebb's RBAC)"))
        }
        Err(e) => Lookup::Unavailable(format!("{what}: {e}")),
    }
}

#[async_trait::async_trait]
impl ObjectSource for ClusterObjects {
    async fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match lookup(api.get_opt(name).await, format!("Secret {namespace}/{name}")) {
            Lookup::Found(s) => match decode_secret(s.data.as_ref(), s.string_data.as_ref()) {
                Ok(d) => Lookup::Found(d),
                Err(problem) => Lookup::Unavailable(format!("Secret {namespace}/{name}: {problem}")),
            },
            Lookup::Missing => Lookup::Missing,
            Lookup::Unavailable(m) => Lookup::Unavailable(m),
        }
    }
    async fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match lookup(api.get_opt(name).await, format!("ConfigMap {namespace}/{name}")) {
            Lookup::Found(c) => Lookup::Found(c.data.unwrap_or_default()),
            Lookup::Missing => Lookup::Missing,
            Lookup::Unavailable(m) => Lookup::Unavailable(m),
        }
    }
    async fn trigger_authentication(&self, namespace: &str, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        let api: Api<TriggerAuthentication> = Api::namespaced(self.client.clone(), namespace);
        match lookup(
            api.get_opt(name).await,
            format!("TriggerAuthentication {namespace}/{name}"),
        ) {
            Lookup::Found(t) => Lookup::Found(t.spec),
            Lookup::Missing => Lookup::Missing,
            Lookup::Unavailable(m) => Lookup::Unavailable(m),
        }
    }
    async fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
        match lookup(
            api.get_opt(name).await,
            format!("ClusterTriggerAuthentication {name}"),
        ) {
            Lookup::Found(t) => Lookup::Found(t.spec.auth),
            Lookup::Missing => Lookup::Missing,
            Lookup::Unavailable(m) => Lookup::Unavailable(m),
        }
    }
    async fn pod_template(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Lookup<PodTemplateSpec> {
        let ar = match self.kinds.resolve(&self.client, api_version, kind).await {
            Ok(ar) => ar,
            Err(e) => return Lookup::Unavailable(format!("{kind} in {api_version}: {e}")),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        match lookup(api.get_opt(name).await, format!("{kind} {namespace}/{name}")) {
            Lookup::Found(o) => match o
                .data
                .pointer("/spec/template")
                .map(|t| serde_json::from_value(t.clone()))
            {
                Some(Ok(t)) => Lookup::Found(t),
                _ => Lookup::Unavailable(format!(
                    "{kind} {namespace}/{name} has no pod template (spec.template)"
                )),
            },
            Lookup::Missing => Lookup::Missing,
            Lookup::Unavailable(m) => Lookup::Unavailable(m),
        }
    }
    fn cluster_auth_namespace(&self) -> &str {
        &self.cluster_auth_namespace
    }
    fn missing_is_error(&self) -> bool {
        true
    }
}
