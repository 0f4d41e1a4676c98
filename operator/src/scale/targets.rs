//! Scale targets: any kind with a `/scale` subresource, found through discovery. Replica counts of
//! Deployments and StatefulSets come from the watch-fed [`WorkloadIndex`] (no GET per poll); other
//! kinds are read through `/scale`. Writes always go through `/scale`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::cache::workloads::{Replicas, WorkloadIndex};

/// A scale target could not be resolved, read or written.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `apiVersion`/`kind` does not name a resource the cluster serves.
    #[error("scaleTargetRef: {kind} in {api_version} is not served by the cluster: {message}")]
    UnknownKind {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// Discovery's answer.
        message: String,
    },
    /// The target object does not exist.
    #[error("scaleTargetRef: {kind} {namespace}/{name} not found")]
    NotFound {
        /// Kind.
        kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The API server refused or failed the call.
    #[error("scale subresource of {kind} {namespace}/{name}: {source}")]
    Api {
        /// Kind.
        kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// A resolved scale target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `group/version`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name, from discovery.
    pub plural: String,
}

impl TargetRef {
    /// `group/version.Kind`, as KEDA shows it.
    pub fn kind_label(&self) -> String {
        format!("{}.{}", self.api_version, self.kind)
    }
    fn api_resource(&self) -> ApiResource {
        let gvk = gvk_of(&self.api_version, &self.kind);
        ApiResource::from_gvk_with_plural(&gvk, &self.plural)
    }
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// Resolves, reads and writes scale targets.
#[derive(Clone)]
pub struct Targets {
    client: Client,
    kinds: Arc<Mutex<HashMap<(String, String), ApiResource>>>,
    workloads: Arc<WorkloadIndex>,
}

impl Targets {
    /// Creates the target accessor and starts the Deployment/StatefulSet watches (in `namespace`, or
    /// cluster-wide). The watches end when the returned handles are aborted or the runtime stops.
    pub fn start(client: Client, namespace: Option<&str>) -> (Targets, Vec<tokio::task::JoinHandle<()>>) {
        let (workloads, handles) = WorkloadIndex::start(client.clone(), namespace);
        let targets = Targets {
            client,
            kinds: Arc::default(),
            workloads,
        };
        (targets, handles)
    }

    /// Resolves a `scaleTargetRef` through discovery (cached per kind).
    pub async fn resolve(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<TargetRef, TargetError> {
        let key = (api_version.to_string(), kind.to_string());
        let cached = self
            .kinds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let ar = match cached {
            Some(ar) => ar,
            None => {
                let gvk = gvk_of(api_version, kind);
                let (ar, _caps) = kube::discovery::pinned_kind(&self.client, &gvk)
                    .await
                    .map_err(|e| TargetError::UnknownKind {
                        api_version: api_version.into(),
                        kind: kind.into(),
                        message: e.to_string(),
                    })?;
                self.kinds
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, ar.clone());
                ar
            }
        };
        Ok(TargetRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            plural: ar.plural.clone(),
        })
    }

    /// The target's replica count (`spec.replicas`).
    pub async fn replicas(&self, target: &TargetRef) -> Result<i32, TargetError> {
        match self
            .workloads
            .replicas(&target.api_version, &target.kind, &target.namespace, &target.name)
        {
            Replicas::Known(r) => return Ok(r),
            Replicas::Absent => return Err(self.not_found(target)),
            Replicas::NotWatched => {}
        }
        let scale = self
            .api(target)
            .get_scale(&target.name)
            .await
            .map_err(|e| self.api_error(target, e))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Writes the target's replica count through `/scale`.
    pub async fn set_replicas(&self, target: &TargetRef, replicas: i32) -> Result<(), TargetError> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        self.api(target)
            .patch_scale(&target.name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| self.api_error(target, e))?;
        // The watch will confirm; until then the poll loop must not act on the old count.
        self.workloads.record_write(
            &target.api_version,
            &target.kind,
            &target.namespace,
            &target.name,
            replicas,
        );
        Ok(())
    }

    fn api(&self, target: &TargetRef) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &target.namespace, &target.api_resource())
    }

    fn not_found(&self, target: &TargetRef) -> TargetError {
        TargetError::NotFound {
            kind: target.kind.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        }
    }

    fn api_error(&self, target: &TargetRef, e: kube::Error) -> TargetError {
        match &e {
            kube::Error::Api(s) if s.code == 404 => self.not_found(target),
            _ => TargetError::Api {
                kind: target.kind.clone(),
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                source: e,
            },
        }
    }
}
