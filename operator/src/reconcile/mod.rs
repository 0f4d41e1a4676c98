//! The reconciler: one pass per ScaledObject change. [`reconcile`] dispatches: a deleted object
//! is cleaned up (its finalizer released), a live one gets ebb's finalizer added or removed as
//! [`needs_finalizer`] says, then [`apply::apply`] looks things up, [`plan::plan`] decides (pure)
//! and the executor acts: validity, [`conflicts`], the owned HPA ([`hpa`], re-applied only when
//! it drifted), the object's scale loop, the original replica count, Events and the status.

pub mod apply;
pub mod conflicts;
pub mod hpa;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::Shared;
use crate::scale::targets::TargetError;

/// Finalizer that lets ebb restore replicas and remove its HPA before a ScaledObject goes away.
pub const FINALIZER: &str = "ebb.dev/finalizer";

/// Errors of one reconcile pass (each has a metric label).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes call failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The scale target could not be read or written.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A lookup failed for a reason that may pass; nothing was changed.
    #[error("lookup failed, nothing changed: {0}")]
    Unsettled(#[from] plan::Unsettled),
    /// The object has no namespace (cannot happen for a namespaced kind).
    #[error("ScaledObject without namespace")]
    NoNamespace,
}

impl Error {
    /// Short label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Target(_) => "target",
            Error::Unsettled(_) => "unsettled",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// Reconciles one ScaledObject.
pub async fn reconcile(so: Arc<ScaledObject>, shared: Arc<Shared>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = so.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ScaledObject> = Api::namespaced(shared.client.clone(), &ns);
    let result = dispatch(so, &shared, &api).await;
    shared
        .metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    shared.metrics.set_scaled_objects(shared.so_store.len() as i64);
    result
}

/// What to do after a failed reconcile.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, _shared: Arc<Shared>) -> Action {
    tracing::warn!(scaled_object = %so.name_any(), namespace = ?so.namespace(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Whether ebb must act before the object goes away: only to restore the target's replica count.
/// The HPA needs no finalizer (its owner reference lets the garbage collector remove it), so
/// most objects carry none: they cost one write less to create, and deleting them never waits
/// for ebb (nor hangs when ebb is not running).
pub fn needs_finalizer(so: &ScaledObject) -> bool {
    so.spec
        .advanced
        .as_ref()
        .is_some_and(|a| a.restore_to_original_replica_count)
}

/// Deletion, the finalizer when [`needs_finalizer`] says so, then [`apply::apply`].
async fn dispatch(
    so: Arc<ScaledObject>,
    shared: &Arc<Shared>,
    api: &Api<ScaledObject>,
) -> Result<Action, Error> {
    let has = so.finalizers().iter().any(|f| f == FINALIZER);
    if so.meta().deletion_timestamp.is_some() {
        if has {
            apply::cleanup(so.clone(), shared).await?;
            set_finalizer(api, &so, false).await?;
        } else {
            shared.forget(&apply::key_of(&so));
        }
        return Ok(Action::await_change());
    }
    let needs = needs_finalizer(&so);
    if needs != has {
        set_finalizer(api, &so, needs).await?;
    }
    apply::apply(so, shared).await
}

/// Adds or removes ebb's finalizer; the patch carries the object's resourceVersion, so it fails
/// (and the reconcile retries) instead of overwriting a finalizer list someone changed meanwhile.
async fn set_finalizer(api: &Api<ScaledObject>, so: &ScaledObject, present: bool) -> Result<(), Error> {
    let others = so.finalizers().iter().filter(|f| *f != FINALIZER).cloned();
    let next: Vec<String> = if present {
        others.chain([FINALIZER.to_string()]).collect()
    } else {
        others.collect()
    };
    let patch = json!({"metadata": {
        "finalizers": next,
        "resourceVersion": so.resource_version(),
    }});
    match api
        .patch(&so.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to hold back.
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(()),
        Err(e) => Err(e.into()),
    }
}
