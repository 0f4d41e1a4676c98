//! Writes a ScaledObject's status: the reconciler's and the scale loop's views are composed
//! ([`crate::status::compose`]) and the result is applied to the status subresource by
//! server-side apply (field manager [`FIELD_MANAGER`], forced), only when it differs from what was
//! last written. In a steady state nothing changes and nothing is written, so the object's
//! resourceVersion stays put.
//!
//! Guarantees: a field ebb wrote before and no longer composes (e.g. `pausedReplicaCount` after
//! an unpause) is removed by the apply, because ebb's field manager owns it.
//! Caveats: a status field another manager wrote (not ebb's apply) is left alone.

use ebb_crds::{ScaledObject, ScaledObjectStatus};
use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value as Json, json};

use crate::infra::leadership::{LeaderGuard, NotLeading};
use crate::status::{LoopView, ReconcileView, compose};

/// Field manager of every server-side apply ebb makes (HPAs and status).
pub const FIELD_MANAGER: &str = "ebb-operator";

/// Status bookkeeping of one ScaledObject: both writers' views and what was last written.
#[derive(Debug, Default)]
pub struct StatusBook {
    /// The reconciler's view.
    pub reconcile: Option<ReconcileView>,
    /// The scale loop's view.
    pub loop_view: Option<LoopView>,
    /// The status as last written (or as read from the object).
    pub written: Option<ScaledObjectStatus>,
}

impl StatusBook {
    /// The status to write now, if any: `None` until the reconciler has given its view, and
    /// `None` when the composed status equals the one last written.
    pub fn pending(&self, now: Timestamp) -> Option<ScaledObjectStatus> {
        let reconcile = self.reconcile.as_ref()?;
        let next = compose(self.written.as_ref(), reconcile, self.loop_view.as_ref(), now);
        (self.written.as_ref() != Some(&next)).then_some(next)
    }
}

/// The server-side apply body that sets a ScaledObject's status to `status`.
pub fn apply_body(status: &ScaledObjectStatus) -> Json {
    json!({
        "apiVersion": ebb_crds::API_VERSION,
        "kind": "ScaledObject",
        "status": status,
    })
}

/// A status write that failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or failed the apply.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// This replica does not lead: nothing was written.
    #[error(transparent)]
    NotLeading(#[from] NotLeading),
}

/// Composes the status of `namespace/name` from `book` and applies it if it changed and this
/// replica leads; on success the book remembers it as written. A ScaledObject that is gone is not
/// an error.
pub async fn write(
    client: &Client,
    leader: &LeaderGuard,
    namespace: &str,
    name: &str,
    book: &mut StatusBook,
) -> Result<(), WriteError> {
    let Some(next) = book.pending(Timestamp::now()) else {
        return Ok(());
    };
    leader.check()?;
    let api: Api<ScaledObject> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(name, &params, &Patch::Apply(apply_body(&next)))
        .await
    {
        Ok(_) => {
            book.written = Some(next);
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::outcome::Activity;
    use crate::status::{Readiness, TriggerHealth};

    fn reconcile_view() -> ReconcileView {
        ReconcileView {
            readiness: Readiness::Ok,
            paused: false,
            paused_replicas: None,
            hpa_name: Some("ebb-hpa-x".into()),
            metric_names: vec!["s0-t-v".into()],
            composite_metric: None,
            original_replica_count: Some(1),
            scale_target_kind: Some("apps/v1.Deployment".into()),
            generation: Some(1),
            fallback_threshold: None,
            warnings: Vec::new(),
            triggers_types: None,
            authentications_types: None,
        }
    }

    fn loop_view(error: Option<&str>) -> LoopView {
        LoopView {
            activity: Activity::Inactive { in_cooldown: false },
            fallback: false,
            last_active: None,
            triggers: vec![TriggerHealth {
                metric_name: "s0-t-v".into(),
                failures: u32::from(error.is_some()),
                error: error.map(str::to_string),
            }],
        }
    }

    #[test]
    fn nothing_is_written_before_the_reconciler_has_a_view() {
        let book = StatusBook {
            loop_view: Some(loop_view(None)),
            ..StatusBook::default()
        };
        assert_eq!(book.pending(Timestamp::now()), None);
    }

    #[test]
    fn writes_only_when_the_composed_status_changes() {
        let now = Timestamp::now();
        let mut book = StatusBook {
            reconcile: Some(reconcile_view()),
            ..StatusBook::default()
        };
        // First write: nothing written yet.
        let first = book.pending(now).expect("a first status is written");
        assert_eq!(first.hpa_name.as_deref(), Some("ebb-hpa-x"));
        book.written = Some(first);
        // Same facts, later: steady state, no write.
        assert_eq!(book.pending(now + jiff::SignedDuration::from_secs(60)), None);
        // The loop's first poll changes what a user sees: one write.
        book.loop_view = Some(loop_view(None));
        let second = book.pending(now).expect("the loop's view is written");
        book.written = Some(second);
        assert_eq!(book.pending(now), None);
        // A failing trigger is a change; the same failure again is not.
        book.loop_view = Some(loop_view(Some("down")));
        let third = book.pending(now).expect("a failure is written");
        book.written = Some(third);
        assert_eq!(book.pending(now), None);
    }

    #[test]
    fn the_apply_body_names_the_kind_and_omits_absent_fields() {
        let status = ScaledObjectStatus {
            hpa_name: Some("h".into()),
            ..ScaledObjectStatus::default()
        };
        assert_eq!(
            apply_body(&status),
            json!({"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "status": {"hpaName": "h"}})
        );
    }
}
