//! The reconciler: one pass per ScaledObject change. [`reconcile`] dispatches: a deleted object
//! is cleaned up (its finalizer released), a live one gets ebb's finalizer added or removed as
//! [`needs_finalizer`] says, then [`apply::apply`] looks things up, [`plan::plan`] decides (pure)
//! and the executor acts: validity, [`conflicts`], the owned HPA ([`hpa`], re-applied only when
//! it drifted), the object's scale loop, the original replica count, Events and the status.
//! A failed pass is retried after a per-object exponential backoff with jitter
//! ([`RequeueBackoff`]); every write first checks that this replica still leads.

pub mod apply;
pub mod conflicts;
pub mod credentials;
pub mod hpa;
pub mod plan;
pub mod scaled_job;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::context::{ObjectKey, Shared};
use crate::infra::backoff::{Backoff, jitter};
use crate::infra::hpa_discovery::hpa_api_gone;
use crate::infra::leadership::NotLeading;
use crate::scale::targets::TargetError;
use crate::status::writer::WriteError;

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
    /// This replica does not lead (any more): nothing was written.
    #[error(transparent)]
    NotLeading(#[from] NotLeading),
    /// A JSON patch ebb built did not parse as one (a defect, reported rather than sent).
    #[error("building a JSON patch: {0}")]
    Patch(#[from] serde_json::Error),
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Error {
        match e {
            WriteError::Kube(e) => Error::Kube(e),
            WriteError::NotLeading(e) => Error::NotLeading(e),
        }
    }
}

/// Maps an error of the HPA API; a 404 (this HPA version is not served) also asks for HPA
/// discovery again, so a controller on a version the cluster dropped restarts on the served one.
pub fn hpa_error(shared: &Shared, e: kube::Error) -> Error {
    if hpa_api_gone(&e) {
        shared.hpa_recheck.request(Arc::new(shared.client.clone()));
    }
    Error::Kube(e)
}

impl Error {
    /// Short label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Target(_) => "target",
            Error::Unsettled(_) => "unsettled",
            Error::NoNamespace => "no_namespace",
            Error::NotLeading(_) => "not_leading",
            Error::Patch(_) => "patch",
        }
    }
}

/// Reconciles one ScaledObject.
pub async fn reconcile(so: Arc<ScaledObject>, shared: Arc<Shared>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = so.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ScaledObject> = Api::namespaced(shared.client.clone(), &ns);
    let key = apply::key_of(&so);
    let span = tracing::info_span!("reconcile", kind = "ScaledObject", namespace = %ns, object = %key.1);
    let result = dispatch(so, &shared, &api).instrument(span).await;
    if result.is_ok() {
        shared.requeue.succeeded(&key);
    }
    shared
        .metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    shared.metrics.set_scaled_objects(shared.so_store.len() as i64);
    result
}

/// What to do after a failed reconcile: try again after the object's next backoff delay.
pub fn error_policy(so: Arc<ScaledObject>, error: &Error, shared: Arc<Shared>) -> Action {
    let key = apply::key_of(&so);
    let delay = shared.requeue.failed(&key, |k| shared.object_exists(k));
    tracing::warn!(scaled_object = %so.name_any(), namespace = ?so.namespace(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Backoff of a failing object's reconciles: 1 s doubling to 5 min, ±25 %.
pub const REQUEUE_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(300),
};

/// Consecutive reconcile failures per object, for [`REQUEUE_BACKOFF`].
#[derive(Debug, Default)]
pub struct RequeueBackoff {
    failures: Mutex<HashMap<ObjectKey, u32>>,
}

/// Objects remembered before the failure counts of deleted objects are pruned.
const PRUNE_AT: usize = 256;

impl RequeueBackoff {
    /// Records a failure of `key` and returns the delay before its next reconcile. When many
    /// objects are remembered, those `exists` denies (deleted while failing) are forgotten.
    pub fn failed(&self, key: &ObjectKey, exists: impl Fn(&ObjectKey) -> bool) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= PRUNE_AT && failures.len().is_power_of_two() {
            failures.retain(|k, _| k == key || exists(k));
        }
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        REQUEUE_BACKOFF.delay(*n, jitter((key, *n)))
    }
    /// Forgets `key`'s failures (its reconcile succeeded).
    pub fn succeeded(&self, key: &ObjectKey) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
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
            set_finalizer(shared, api, &so, false).await?;
        } else {
            shared.forget(&apply::key_of(&so));
        }
        return Ok(Action::await_change());
    }
    let needs = needs_finalizer(&so);
    if needs != has {
        set_finalizer(shared, api, &so, needs).await?;
    }
    apply::apply(so, shared).await
}

/// Adds or removes ebb's finalizer; the patch carries the object's resourceVersion, so it fails
/// (and the reconcile retries) instead of overwriting a finalizer list someone changed meanwhile.
async fn set_finalizer(
    shared: &Shared,
    api: &Api<ScaledObject>,
    so: &ScaledObject,
    present: bool,
) -> Result<(), Error> {
    shared.leader.check()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("ns".to_string(), name.to_string())
    }

    /// The delay with its ±25 % jitter taken out (the nominal delay is within [0.8, 1.34) of it).
    fn within(delay: Duration, nominal_secs: f64) -> bool {
        (0.75 * nominal_secs..1.25 * nominal_secs).contains(&delay.as_secs_f64())
    }

    #[test]
    fn a_failing_object_backs_off_exponentially_and_a_success_resets_it() {
        let book = RequeueBackoff::default();
        let delays: Vec<Duration> = (0..12).map(|_| book.failed(&key("a"), |_| true)).collect();
        for (delay, nominal) in delays
            .iter()
            .zip([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0])
        {
            assert!(within(*delay, nominal), "{delays:?}");
        }
        // Another object starts from the beginning.
        assert!(within(book.failed(&key("b"), |_| true), 1.0));
        book.succeeded(&key("a"));
        assert!(within(book.failed(&key("a"), |_| true), 1.0));
    }

    #[test]
    fn failures_of_deleted_objects_are_pruned() {
        let book = RequeueBackoff::default();
        for i in 0..PRUNE_AT {
            book.failed(&key(&format!("gone-{i}")), |_| true);
        }
        book.failed(&key("live"), |k| k.1 == "live");
        assert_eq!(book.failures.lock().expect("lock").len(), 1);
    }
}
