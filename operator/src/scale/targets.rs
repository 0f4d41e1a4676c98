//! Scale targets: any kind with a `/scale` subresource, found through discovery. Replica counts of
//! Deployments and StatefulSets come from the watch-fed [`WorkloadIndex`] (no GET per poll); other
//! kinds are read through `/scale`. Writes always go through `/scale`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::cache::workloads::{DeclarationChanges, Replicas, WorkloadIndex};

/// How a failed API call reads: a definite answer about the object, or a failure that says
/// nothing about it and may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFailure {
    /// 404, or discovery does not list the kind: the object or its API does not exist.
    NotFound,
    /// 403: ebb is not allowed to read or write it.
    Forbidden,
    /// Anything else (429, 5xx, timeouts, no connection, an answer that did not decode): retry.
    Transient,
}

/// Classifies a failed API call (a discovery call included).
pub fn classify(e: &kube::Error) -> ApiFailure {
    match e {
        kube::Error::Api(s) if s.code == 404 => ApiFailure::NotFound,
        kube::Error::Api(s) if s.code == 403 => ApiFailure::Forbidden,
        // Discovery answered, and the group/version does not serve the kind (or is malformed).
        kube::Error::Discovery(_) => ApiFailure::NotFound,
        _ => ApiFailure::Transient,
    }
}

/// A scale target could not be resolved, read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    /// `apiVersion`/`kind` does not name a resource the cluster serves.
    #[error("scaleTargetRef: {kind} in {api_version} is not served by the cluster: {source}")]
    UnknownKind {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// Discovery's answer.
        #[source]
        source: Arc<kube::Error>,
    },
    /// Discovery failed for a reason that may pass (throttled, a server error, a timeout): the
    /// kind is neither known nor unknown yet.
    #[error("scaleTargetRef: discovery of {kind} in {api_version} failed: {source}")]
    Discovery {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// The client error.
        #[source]
        source: Arc<kube::Error>,
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
        source: Arc<kube::Error>,
    },
}

impl TargetError {
    /// Whether the failure may pass by itself (retry, judge nothing): a discovery failure other
    /// than "not served", or a call that failed with anything but 404 or 403.
    pub fn is_transient(&self) -> bool {
        match self {
            TargetError::Discovery { .. } => true,
            TargetError::Api { source, .. } => classify(source) == ApiFailure::Transient,
            TargetError::UnknownKind { .. } | TargetError::NotFound { .. } => false,
        }
    }
}

/// The error of a failed discovery of `kind` in `api_version`: only "not served" (a 404, a kind
/// the group/version does not list) makes the kind unknown; any other failure is transient.
pub fn discovery_error(api_version: &str, kind: &str, e: kube::Error) -> TargetError {
    let (api_version, kind, source) = (api_version.to_string(), kind.to_string(), Arc::new(e));
    match classify(&source) {
        ApiFailure::NotFound | ApiFailure::Forbidden => TargetError::UnknownKind {
            api_version,
            kind,
            source,
        },
        ApiFailure::Transient => TargetError::Discovery {
            api_version,
            kind,
            source,
        },
    }
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
    /// cluster-wide), which send changes of workloads' scaling annotations to `changes`. The
    /// watches end when the returned handles are aborted or the runtime stops.
    pub fn start(
        client: Client,
        namespace: Option<&str>,
        changes: Option<DeclarationChanges>,
    ) -> (Targets, Vec<tokio::task::JoinHandle<()>>) {
        let (workloads, handles) = WorkloadIndex::start(client.clone(), namespace, changes);
        let targets = Targets {
            client,
            kinds: Arc::default(),
            workloads,
        };
        (targets, handles)
    }

    /// The watch-fed index of Deployments and StatefulSets.
    pub fn workloads(&self) -> &Arc<WorkloadIndex> {
        &self.workloads
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
                    .map_err(|e| discovery_error(api_version, kind, e))?;
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
                source: Arc::new(e),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kube::core::Status;

    /// A failed API call with this HTTP status.
    pub(crate) fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("failed", "Reason").with_code(code).boxed())
    }

    /// A call that never got an answer (a timeout, a refused connection).
    pub(crate) fn no_answer() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )))
    }

    #[test]
    fn only_404_and_403_are_answers_about_the_object() {
        assert_eq!(classify(&api_error(404)), ApiFailure::NotFound);
        assert_eq!(classify(&api_error(403)), ApiFailure::Forbidden);
        let missing = kube::Error::Discovery(kube::error::DiscoveryError::MissingKind("X".into()));
        assert_eq!(classify(&missing), ApiFailure::NotFound);
        for code in [401, 409, 429, 500, 502, 503, 504] {
            assert_eq!(classify(&api_error(code)), ApiFailure::Transient, "{code}");
        }
        assert_eq!(classify(&no_answer()), ApiFailure::Transient);
    }

    #[test]
    fn only_a_kind_discovery_does_not_serve_is_unknown() {
        let unknown = discovery_error("apps/v1", "Deployment", api_error(404));
        assert!(matches!(unknown, TargetError::UnknownKind { .. }), "{unknown:?}");
        assert!(!unknown.is_transient());
        let missing = kube::Error::Discovery(kube::error::DiscoveryError::MissingKind("X".into()));
        assert!(matches!(
            discovery_error("apps/v1", "Nope", missing),
            TargetError::UnknownKind { .. }
        ));
        for e in [api_error(503), api_error(429), no_answer()] {
            let blip = discovery_error("apps/v1", "Deployment", e);
            assert!(matches!(blip, TargetError::Discovery { .. }), "{blip:?}");
            assert!(blip.is_transient());
        }
    }

    #[test]
    fn a_failed_scale_call_is_transient_unless_forbidden() {
        let api = |e: kube::Error| TargetError::Api {
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "w".into(),
            source: Arc::new(e),
        };
        assert!(api(api_error(500)).is_transient());
        assert!(api(no_answer()).is_transient());
        assert!(!api(api_error(403)).is_transient());
    }
}
