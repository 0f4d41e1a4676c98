//! The generator's executor: reads what the caches say about a workload, asks [`plan`] what to
//! do, writes it and publishes its Events. Every write checks the leader guard first; a failed
//! write is retried with backoff (1 s doubling to 60 s per workload).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ebb_crds::ScaledObject;
use ebb_crds::annotated::generated_name;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cache::workloads::WorkloadRef;
use crate::cli::annotated::check_workload;
use crate::cli::bundle::BundleObjects;
use crate::cli::validate::CheckOptions;
use crate::context::Shared;
use crate::generate::plan::{About, Action, Facts, Note, generated_from, plan};
use crate::generate::queue::WorkQueue;
use crate::infra::leadership::NotLeading;

/// Workloads handled at once.
const WORKERS: usize = 4;
/// Event reason (Warning): writing the generated ScaledObject failed.
pub const WRITE_FAILED: &str = "ScaledObjectGenerationFailed";

/// Why a generator write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This replica does not lead.
    #[error("not leading")]
    NotLeading(#[from] NotLeading),
    /// The API server refused or failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// The patch could not be built.
    #[error("building the patch: {0}")]
    Patch(#[source] serde_json::Error),
}

/// The generator of ScaledObjects from workloads' scaling annotations.
pub struct Generator {
    shared: Arc<Shared>,
    queue: WorkQueue,
    /// The last Event published per workload, so that a repeated trigger repeats nothing.
    last_note: Mutex<HashMap<WorkloadRef, (&'static str, String)>>,
    failures: Mutex<HashMap<WorkloadRef, u32>>,
}

impl Generator {
    /// Starts the generator: `changes` (workloads whose scaling annotations or generated objects
    /// changed) feed its queue; its workers start once the workload and ScaledObject caches are
    /// complete. The tasks end when the returned handles are aborted.
    pub fn start(
        shared: Arc<Shared>,
        mut changes: UnboundedReceiver<WorkloadRef>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let generator = Arc::new(Generator {
            shared,
            queue: WorkQueue::default(),
            last_note: Mutex::default(),
            failures: Mutex::default(),
        });
        let mut tasks = vec![tokio::spawn({
            let generator = generator.clone();
            async move {
                while let Some(w) = changes.recv().await {
                    tracing::debug!(workload = ?w, "generator: queued");
                    generator.queue.push(w);
                }
            }
        })];
        for _ in 0..WORKERS {
            let generator = generator.clone();
            tasks.push(tokio::spawn(async move {
                generator.shared.targets.workloads().wait_until_synced().await;
                generator.shared.so_listed.wait().await;
                tracing::debug!("generator: caches synced");
                loop {
                    let w = generator.queue.pop().await;
                    generator.clone().handle(&w).await;
                    generator.queue.done(&w);
                }
            }));
        }
        tasks
    }

    async fn handle(self: Arc<Self>, w: &WorkloadRef) {
        let shared = &self.shared;
        let entry = shared.targets.workloads().entry(w);
        let declared = entry.as_ref().and_then(|e| e.declared.clone());
        let check = declared.as_ref().and_then(|d| {
            check_workload(
                w.kind,
                &w.namespace,
                &w.name,
                &d.annotations,
                &BundleObjects::default(),
                CheckOptions {
                    quiet_missing: true,
                    ..CheckOptions::default()
                },
            )
        });
        let name = generated_name(w.kind, &w.name);
        let existing = shared.so_store.get(&ObjectRef::new(&name).within(&w.namespace));
        let written = self.written_on(w);
        tracing::debug!(workload = ?w, exists = entry.is_some(), declared = declared.is_some(), existing = existing.is_some(), "generator: handling");
        let plan = plan(Facts {
            workload: w,
            exists: entry.is_some(),
            uid: declared.as_ref().map(|d| d.uid.as_str()),
            check: check.as_ref(),
            existing: existing.as_deref(),
            written: &written,
        });
        match self.write(w, plan.action).await {
            Ok(()) => {
                self.failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(w);
                for note in plan.notes {
                    self.publish(w, note).await;
                }
            }
            Err(WriteError::NotLeading(_)) => {}
            Err(e) => {
                let message = format!("writing ScaledObject {name} failed: {e}");
                tracing::warn!(namespace = %w.namespace, workload = %w.name, error = %e, "generated ScaledObject not written");
                self.publish(
                    w,
                    Note {
                        about: About::Workload,
                        warning: true,
                        reason: WRITE_FAILED,
                        message,
                    },
                )
                .await;
                self.retry_later(w.clone());
            }
        }
    }

    /// Written ScaledObjects on the workload: those targeting it that were not generated from it.
    fn written_on(&self, w: &WorkloadRef) -> Vec<String> {
        let shared = &self.shared;
        shared
            .so_targets
            .candidates(&w.namespace, &w.name)
            .into_iter()
            .filter(|name| {
                shared
                    .so_store
                    .get(&ObjectRef::new(name).within(&w.namespace))
                    .is_some_and(|so| {
                        let t = &so.spec.scale_target_ref;
                        t.api_version_or_default() == "apps/v1"
                            && t.kind_or_default() == w.kind.as_str()
                            && !generated_from(&so, w)
                    })
            })
            .collect()
    }

    async fn write(&self, w: &WorkloadRef, action: Action) -> Result<(), WriteError> {
        let api: Api<ScaledObject> = Api::namespaced(self.shared.client.clone(), &w.namespace);
        match action {
            Action::Nothing => Ok(()),
            Action::Create(so) => {
                self.shared.leader.check()?;
                match api.create(&PostParams::default(), &so).await {
                    // Created meanwhile (by this replica's previous term): the watch brings it,
                    // and with it another look.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    other => other.map(drop).map_err(WriteError::from),
                }
            }
            Action::Update { object, uid } => {
                let name = object.metadata.name.clone().unwrap_or_default();
                let current = self
                    .shared
                    .so_store
                    .get(&ObjectRef::new(&name).within(&w.namespace));
                let mut labels = current
                    .as_ref()
                    .and_then(|so| so.metadata.labels.clone())
                    .unwrap_or_default();
                labels.extend(object.metadata.labels.clone().unwrap_or_default());
                let mut annotations = current
                    .as_ref()
                    .and_then(|so| so.metadata.annotations.clone())
                    .unwrap_or_default();
                annotations.retain(|k, _| !managed_key(k));
                annotations.extend(object.metadata.annotations.clone().unwrap_or_default());
                // Replaces the whole spec (a merge would keep fields added by hand), on the
                // same object only.
                let patch = json!([
                    {"op": "test", "path": "/metadata/uid", "value": uid},
                    {"op": "replace", "path": "/spec", "value": object.spec},
                    {"op": "add", "path": "/metadata/labels", "value": labels},
                    {"op": "add", "path": "/metadata/annotations", "value": annotations},
                    {"op": "add", "path": "/metadata/ownerReferences", "value": object.metadata.owner_references},
                ]);
                let patch = serde_json::from_value(patch).map_err(WriteError::Patch)?;
                self.shared.leader.check()?;
                match api
                    .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                    .await
                {
                    // Deleted meanwhile: the watch brings another look.
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    other => other.map(drop).map_err(WriteError::from),
                }
            }
            Action::Delete { name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                self.shared.leader.check()?;
                match api.delete(&name, &params).await {
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                    other => other.map(drop).map_err(WriteError::from),
                }
            }
        }
    }

    async fn publish(&self, w: &WorkloadRef, note: Note) {
        // A hand edit is news each time; any other Event only when it differs from the last.
        if note.reason != crate::generate::plan::REVERTED {
            let mut last = self.last_note.lock().unwrap_or_else(PoisonError::into_inner);
            let this = (note.reason, note.message.clone());
            if last.get(w) == Some(&this) {
                return;
            }
            last.insert(w.clone(), this);
        }
        let reference = match &note.about {
            About::Workload => ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some(w.kind.as_str().into()),
                namespace: Some(w.namespace.clone()),
                name: Some(w.name.clone()),
                ..ObjectReference::default()
            },
            About::Generated(name) => ObjectReference {
                api_version: Some(ebb_crds::API_VERSION.into()),
                kind: Some("ScaledObject".into()),
                namespace: Some(w.namespace.clone()),
                name: Some(name.clone()),
                ..ObjectReference::default()
            },
        };
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.shared
            .event_for(&reference, type_, note.reason, note.message)
            .await;
    }

    fn retry_later(self: &Arc<Self>, w: WorkloadRef) {
        let failures = {
            let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let n = f.entry(w.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay =
            Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60));
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(me) = me.upgrade() {
                me.queue.push(w);
            }
        });
    }
}

/// Whether ebb manages the annotation `key` on a generated object.
fn managed_key(key: &str) -> bool {
    ebb_crds::annotated::PASSED_THROUGH.contains(&key)
        || key == ebb_crds::annotated::GENERATED_FROM
        || key == ebb_crds::annotated::GENERATED_DIGEST
}
