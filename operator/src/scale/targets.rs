//! Scale targets: any kind with a `/scale` subresource, found through discovery. Replica counts of
//! Deployments and StatefulSets come from a watch-fed index (no GET per poll); other kinds are read
//! through `/scale`. Writes always go through `/scale`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde_json::json;

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
    fn indexed_kind(&self) -> Option<IndexedKind> {
        match (self.api_version.as_str(), self.kind.as_str()) {
            ("apps/v1", "Deployment") => Some(IndexedKind::Deployment),
            ("apps/v1", "StatefulSet") => Some(IndexedKind::StatefulSet),
            _ => None,
        }
    }
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IndexedKind {
    Deployment,
    StatefulSet,
}

type IndexKey = (IndexedKind, String, String);

/// Replica counts of Deployments and StatefulSets, kept current by watches.
#[derive(Default)]
struct ReplicaIndex {
    replicas: HashMap<IndexKey, i32>,
    synced: HashMap<IndexedKind, bool>,
}

/// Resolves, reads and writes scale targets.
#[derive(Clone)]
pub struct Targets {
    client: Client,
    kinds: Arc<Mutex<HashMap<(String, String), ApiResource>>>,
    index: Arc<Mutex<ReplicaIndex>>,
}

impl Targets {
    /// Creates the target accessor and starts the Deployment/StatefulSet watches (in `namespace`, or
    /// cluster-wide). The watches end when the returned handles are aborted or the runtime stops.
    pub fn start(client: Client, namespace: Option<&str>) -> (Targets, Vec<tokio::task::JoinHandle<()>>) {
        let targets = Targets {
            client: client.clone(),
            kinds: Arc::default(),
            index: Arc::default(),
        };
        let deployments: Api<Deployment> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let statefulsets: Api<StatefulSet> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client),
        };
        let handles = vec![
            tokio::spawn(index_loop(
                targets.index.clone(),
                IndexedKind::Deployment,
                deployments,
                |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            )),
            tokio::spawn(index_loop(
                targets.index.clone(),
                IndexedKind::StatefulSet,
                statefulsets,
                |s: &StatefulSet| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            )),
        ];
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
        if let Some(kind) = target.indexed_kind() {
            let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            if index.synced.get(&kind).copied().unwrap_or(false) {
                return match index
                    .replicas
                    .get(&(kind, target.namespace.clone(), target.name.clone()))
                {
                    Some(r) => Ok(*r),
                    None => Err(self.not_found(target)),
                };
            }
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
        if let Some(kind) = target.indexed_kind() {
            // The watch will confirm; until then the poll loop must not act on the old count.
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            index
                .replicas
                .insert((kind, target.namespace.clone(), target.name.clone()), replicas);
        }
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

async fn index_loop<K>(
    index: Arc<Mutex<ReplicaIndex>>,
    kind: IndexedKind,
    api: Api<K>,
    replicas: fn(&K) -> i32,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let key = |o: &K| {
        (
            kind,
            o.meta().namespace.clone().unwrap_or_default(),
            o.meta().name.clone().unwrap_or_default(),
        )
    };
    let mut fresh: HashMap<IndexKey, i32> = HashMap::new();
    let mut stream = watcher::watcher(api, watcher::Config::default().any_semantic()).boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue }; // the watcher retries with backoff by itself
        let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Apply(o) => {
                index.replicas.insert(key(&o), replicas(&o));
            }
            Event::Delete(o) => {
                index.replicas.remove(&key(&o));
            }
            Event::Init => fresh.clear(),
            Event::InitApply(o) => {
                fresh.insert(key(&o), replicas(&o));
            }
            Event::InitDone => {
                index.replicas.retain(|k, _| k.0 != kind);
                index.replicas.extend(fresh.drain());
                index.synced.insert(kind, true);
            }
        }
    }
}
