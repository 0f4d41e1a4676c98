//! What to do about one annotated (or formerly annotated) workload: a pure function of what the
//! caches say. [`plan`] returns the one write ([`Action`]) and the Events ([`Note`]);
//! `worker.rs` carries them out.

use std::collections::BTreeMap;

use ebb_crds::ScaledObject;
use ebb_crds::annotated::{GENERATED_DIGEST, GENERATED_FROM, GENERATED_LABEL, PASSED_THROUGH};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::cache::workloads::WorkloadRef;
use crate::cli::annotated::WorkloadCheck;

/// Event reason: a ScaledObject was generated from the workload's annotations.
pub const GENERATED: &str = "ScaledObjectGenerated";
/// Event reason: the generated ScaledObject follows edited annotations.
pub const UPDATED: &str = "ScaledObjectUpdated";
/// Event reason: the annotations are gone, and so is the generated ScaledObject.
pub const REMOVED: &str = "ScaledObjectRemoved";
/// Event reason (Warning): the annotations cannot produce a ScaledObject.
pub const INVALID: &str = "ScalingAnnotationsInvalid";
/// Event reason (Warning): a written ScaledObject (or a foreign one under the name) wins.
pub const IGNORED: &str = "ScalingAnnotationsIgnored";
/// Event reason (Warning): keys that were ignored.
pub const WARNINGS: &str = "ScalingAnnotationsWarning";
/// Event reason (Warning, on the generated object): a hand edit was undone.
pub const REVERTED: &str = "GeneratedObjectReverted";

/// What the caches say about one workload.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The workload.
    pub workload: &'a WorkloadRef,
    /// Whether the workload exists.
    pub exists: bool,
    /// Its UID, when it exists and has scaling annotations.
    pub uid: Option<&'a str>,
    /// Its checked annotations (`None`: it has none, or it is gone).
    pub check: Option<&'a WorkloadCheck>,
    /// The ScaledObject under the generated name, if any.
    pub existing: Option<&'a ScaledObject>,
    /// Written ScaledObjects (not generated from this workload) that target it, by name.
    pub written: &'a [String],
}

/// The one write a plan asks for.
#[derive(Debug, Clone)]
pub enum Action {
    /// Nothing to write.
    Nothing,
    /// Create this object.
    Create(Box<ScaledObject>),
    /// Replace the generated object's spec and ebb's labels and annotations with these.
    Update {
        /// The object as it should be.
        object: Box<ScaledObject>,
        /// The UID of the object to change.
        uid: String,
    },
    /// Delete the generated object with this name and UID.
    Delete {
        /// Its name.
        name: String,
        /// Its UID.
        uid: String,
    },
}

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    /// The workload.
    Workload,
    /// The generated ScaledObject with this name.
    Generated(String),
}

/// One Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What it is about.
    pub about: About,
    /// Warning (else Normal).
    pub warning: bool,
    /// Reason.
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Note {
        Note {
            about: About::Workload,
            warning: false,
            reason,
            message,
        }
    }
    fn warning(reason: &'static str, message: String) -> Note {
        Note {
            about: About::Workload,
            warning: true,
            reason,
            message,
        }
    }
}

/// The write and the Events for one workload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The write.
    pub action: Action,
    /// The Events.
    pub notes: Vec<Note>,
}

impl Plan {
    fn new(action: Action, notes: Vec<Note>) -> Plan {
        Plan { action, notes }
    }
}

/// Whether `so` was generated from `workload`: ebb's label and a controller reference to a
/// workload of that kind and name (any incarnation: one from a deleted workload of the same name
/// is going away with it anyway).
pub fn generated_from(so: &ScaledObject, workload: &WorkloadRef) -> bool {
    let labelled = so
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.get(GENERATED_LABEL).map(String::as_str) == Some("true"));
    labelled && controller_of(so).is_some_and(|o| o.kind == workload.kind.as_str() && o.name == workload.name)
}

/// The controller owner reference of `so` to an `apps/v1` object.
pub fn controller_of(so: &ScaledObject) -> Option<&OwnerReference> {
    so.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.api_version == "apps/v1")
}

/// Decides what to do about one workload.
pub fn plan(f: Facts<'_>) -> Plan {
    let w = f.workload;
    let ours = f.existing.filter(|so| generated_from(so, w));
    let delete = |so: &ScaledObject| Action::Delete {
        name: so.metadata.name.clone().unwrap_or_default(),
        uid: so.metadata.uid.clone().unwrap_or_default(),
    };
    let (Some(check), Some(uid)) = (f.check, f.uid) else {
        // No annotations any more: what was generated goes. (A deleted workload takes it along
        // by its owner reference.)
        return match ours {
            Some(so) if f.exists => Plan::new(
                delete(so),
                vec![Note::normal(
                    REMOVED,
                    format!(
                        "scaling annotations removed: deleted ScaledObject {}; replicas stay as they are",
                        so.metadata.name.as_deref().unwrap_or_default()
                    ),
                )],
            ),
            _ => Plan::new(Action::Nothing, Vec::new()),
        };
    };
    if !f.written.is_empty() {
        let message = format!(
            "scaling annotations ignored: ScaledObject {} targets this {} and wins over them",
            f.written.join(", "),
            w.kind
        );
        let action = ours.map(delete).unwrap_or(Action::Nothing);
        return Plan::new(action, vec![Note::warning(IGNORED, message)]);
    }
    if let Some(foreign) = f.existing.filter(|_| ours.is_none()) {
        let message = format!(
            "scaling annotations ignored: a ScaledObject named {} exists and was not generated from this {}; rename or delete it",
            foreign.metadata.name.as_deref().unwrap_or_default(),
            w.kind
        );
        return Plan::new(Action::Nothing, vec![Note::warning(IGNORED, message)]);
    }
    let Some(desired) = check.object.as_ref().filter(|_| check.problems.is_empty()) else {
        let mut message = check.problems.join("; ");
        if let Some(so) = ours {
            message.push_str(&format!(
                " (ScaledObject {} keeps its last valid spec)",
                so.metadata.name.as_deref().unwrap_or_default()
            ));
        } else {
            message.push_str(" (nothing is scaled until this is fixed)");
        }
        return Plan::new(Action::Nothing, vec![Note::warning(INVALID, message)]);
    };
    let desired = owned(desired.clone(), w, uid);
    let warnings = (!check.warnings.is_empty()).then(|| Note::warning(WARNINGS, check.warnings.join("; ")));
    let name = desired.metadata.name.clone().unwrap_or_default();
    match ours {
        None => {
            let mut notes = vec![Note::normal(
                GENERATED,
                format!("generated ScaledObject {name} from the scaling annotations"),
            )];
            notes.extend(warnings);
            Plan::new(Action::Create(Box::new(desired)), notes)
        }
        Some(so) if same(so, &desired) => Plan::new(Action::Nothing, Vec::new()),
        Some(so) => {
            let edited_by_hand = annotation(so, GENERATED_DIGEST) == annotation(&desired, GENERATED_DIGEST);
            let mut notes = if edited_by_hand {
                vec![Note {
                    about: About::Generated(name.clone()),
                    warning: true,
                    reason: REVERTED,
                    message: format!(
                        "edited by hand; restored from the scaling annotations of {} {}, its source: edit those instead",
                        w.kind, w.name
                    ),
                }]
            } else {
                vec![Note::normal(
                    UPDATED,
                    format!("updated ScaledObject {name} from the edited scaling annotations"),
                )]
            };
            notes.extend(warnings.filter(|_| !edited_by_hand));
            let uid = so.metadata.uid.clone().unwrap_or_default();
            Plan::new(
                Action::Update {
                    object: Box::new(desired),
                    uid,
                },
                notes,
            )
        }
    }
}

/// The object with its controller reference to the workload.
fn owned(mut so: ScaledObject, w: &WorkloadRef, uid: &str) -> ScaledObject {
    so.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: w.kind.as_str().into(),
        name: w.name.clone(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    so
}

fn annotation<'a>(so: &'a ScaledObject, key: &str) -> Option<&'a str> {
    so.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The annotations ebb manages on a generated object.
fn managed_annotations(so: &ScaledObject) -> BTreeMap<&str, Option<&str>> {
    PASSED_THROUGH
        .iter()
        .chain(&[GENERATED_FROM, GENERATED_DIGEST])
        .map(|k| (*k, annotation(so, k)))
        .collect()
}

/// Whether `so` already is what `desired` says, in everything ebb manages: the spec, ebb's
/// labels and annotations, the controller reference.
fn same(so: &ScaledObject, desired: &ScaledObject) -> bool {
    let labels_hold = desired.metadata.labels.iter().flatten().all(|(k, v)| {
        so.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|have| have == v)
    });
    let owner_holds = controller_of(so).map(|o| &o.uid) == controller_of(desired).map(|o| &o.uid);
    so.spec == desired.spec
        && labels_hold
        && owner_holds
        && managed_annotations(so) == managed_annotations(desired)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
