//! [`ObjectSource`] over the cluster: the operator resolves trigger inputs with the same code as
//! `ebb validate`, reading Secrets, ConfigMaps, TriggerAuthentications and workloads from the API.
//! Only a 404 (missing) and a 403 (not allowed) say something about the object; any other failure
//! is [`Lookup::Transient`], which leaves the object unjudged and the reconcile retried.

use std::collections::BTreeMap;
use std::sync::Arc;

use ebb_crds::{ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject};

use crate::cache::kinds::KindCache;
use crate::compile::inputs::{Lookup, ObjectSource, TransientLookup, decode_secret};
use crate::scale::targets::{ApiFailure, classify};

/// Looks objects up in the cluster.
pub struct ClusterObjects {
    /// Client.
    pub client: Client,
    /// Namespace of ClusterTriggerAuthentication Secrets and ConfigMaps (the operator's).
    pub cluster_auth_namespace: String,
    /// Discovery answers per kind, shared across reconciles.
    pub kinds: Arc<KindCache>,
}

/// What a GET of `what` means for the trigger: found, missing (404), not allowed (403), or a
/// failure that may pass (429, 5xx, a timeout, no connection).
fn lookup<T>(r: Result<Option<T>, kube::Error>, what: String) -> Lookup<T> {
    let e = match r {
        Ok(Some(v)) => return Lookup::Found(v),
        Ok(None) => return Lookup::Missing,
        Err(e) => e,
    };
    match classify(&e) {
        ApiFailure::NotFound => Lookup::Missing,
        ApiFailure::Forbidden => Lookup::Unavailable(format!("{what}: access denied (check ebb's RBAC)")),
        ApiFailure::Transient => Lookup::Transient(TransientLookup {
            what,
            source: Arc::new(e),
        }),
    }
}

#[async_trait::async_trait]
impl ObjectSource for ClusterObjects {
    async fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        lookup(api.get_opt(name).await, format!("Secret {namespace}/{name}")).and_then(
            |s| match decode_secret(s.data.as_ref(), s.string_data.as_ref()) {
                Ok(d) => Lookup::Found(d),
                Err(problem) => Lookup::Unavailable(format!("Secret {namespace}/{name}: {problem}")),
            },
        )
    }
    async fn service_account_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Lookup<BTreeMap<String, String>> {
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), namespace);
        lookup(
            api.get_opt(name).await,
            format!("ServiceAccount {namespace}/{name}"),
        )
        .and_then(|sa| Lookup::Found(sa.metadata.annotations.unwrap_or_default()))
    }
    async fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        lookup(api.get_opt(name).await, format!("ConfigMap {namespace}/{name}"))
            .and_then(|c| Lookup::Found(c.data.unwrap_or_default()))
    }
    async fn trigger_authentication(&self, namespace: &str, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        let api: Api<TriggerAuthentication> = Api::namespaced(self.client.clone(), namespace);
        lookup(
            api.get_opt(name).await,
            format!("TriggerAuthentication {namespace}/{name}"),
        )
        .and_then(|t| Lookup::Found(t.spec))
    }
    async fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec> {
        let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
        lookup(
            api.get_opt(name).await,
            format!("ClusterTriggerAuthentication {name}"),
        )
        .and_then(|t| Lookup::Found(t.spec.auth))
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
            Err(e) => return discovery_failed(e, api_version, kind),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        lookup(api.get_opt(name).await, format!("{kind} {namespace}/{name}")).and_then(|o| {
            match o
                .data
                .pointer("/spec/template")
                .map(|t| serde_json::from_value(t.clone()))
            {
                Some(Ok(t)) => Lookup::Found(t),
                _ => Lookup::Unavailable(format!(
                    "{kind} {namespace}/{name} has no pod template (spec.template)"
                )),
            }
        })
    }
    fn cluster_auth_namespace(&self) -> &str {
        &self.cluster_auth_namespace
    }
    fn missing_is_error(&self) -> bool {
        true
    }
}

/// A failed discovery of the workload's kind: "not served" makes the reference unusable, any
/// other failure may pass.
fn discovery_failed<T>(e: kube::Error, api_version: &str, kind: &str) -> Lookup<T> {
    match classify(&e) {
        ApiFailure::Transient => Lookup::Transient(TransientLookup {
            what: format!("the API of {kind} in {api_version}"),
            source: Arc::new(e),
        }),
        ApiFailure::NotFound | ApiFailure::Forbidden => Lookup::Unavailable(format!(
            "{kind} in {api_version} is not served by the cluster: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::targets::tests::{api_error, no_answer};

    fn get(e: kube::Error) -> Lookup<()> {
        lookup(Err(e), "Secret ns/s".into())
    }

    #[test]
    fn only_404_and_403_judge_the_object() {
        assert_eq!(lookup(Ok(Some(1)), "x".into()), Lookup::Found(1));
        assert_eq!(lookup::<()>(Ok(None), "x".into()), Lookup::Missing);
        assert_eq!(get(api_error(404)), Lookup::Missing);
        assert!(
            matches!(get(api_error(403)), Lookup::Unavailable(ref m) if m.contains("access denied")),
            "{:?}",
            get(api_error(403))
        );
        for e in [api_error(429), api_error(500), api_error(503), no_answer()] {
            match get(e) {
                Lookup::Transient(t) => assert_eq!(t.what, "Secret ns/s"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_discovery_blip_is_transient_and_an_unserved_kind_is_not() {
        assert!(matches!(
            discovery_failed::<()>(api_error(503), "apps/v1", "Deployment"),
            Lookup::Transient(_)
        ));
        assert!(matches!(
            discovery_failed::<()>(api_error(404), "x.io/v1", "Thing"),
            Lookup::Unavailable(_)
        ));
    }
}
