//! `ebb migrate`: KEDA's objects (`keda.sh/v1alpha1` ScaledObjects, ScaledJobs,
//! TriggerAuthentications and ClusterTriggerAuthentications) rewritten as ebb's. [`migrate`] is
//! pure: documents in, converted documents and a list of [`Finding`]s out (every change made and
//! every field ebb does not support, each naming the object and the field). Every other document
//! passes through unchanged. The binary prints the result, runs `ebb validate`'s checks on it and
//! chooses the exit code.

use std::collections::BTreeMap;

use ebb_crds::annotations;
use serde_json::{Map, Value as Json, json};

use crate::cli::bundle::str_at;
use crate::cli::validate::InputDocument;

/// What `ebb migrate` may add besides the rewrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Add `scaledobject.ebb.dev/transfer-hpa-ownership: "true"` to every ScaledObject, so that it
    /// adopts the HPA KEDA created (the cutover, see docs/migration.md).
    pub transfer_hpa_ownership: bool,
}

/// One thing `ebb migrate` did or could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where the document came from (`file#N`, `file#N.items[i]`).
    pub source: String,
    /// `Kind namespace/name` (no namespace for a ClusterTriggerAuthentication).
    pub object: String,
    /// The field path from the object's root.
    pub field: String,
    /// What was done, or why ebb cannot do it.
    pub message: String,
    /// ebb does not support the field: the object will not behave as it did under KEDA.
    pub unsupported: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = if self.unsupported { "unsupported: " } else { "" };
        write!(
            f,
            "{}: {}: {}: {tag}{}",
            self.source, self.object, self.field, self.message
        )
    }
}

/// The converted input.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    /// Every input document, in order: KEDA's objects converted, the rest unchanged.
    pub documents: Vec<InputDocument>,
    /// What was changed and what is not supported, in document order.
    pub findings: Vec<Finding>,
    /// How many KEDA objects were converted.
    pub converted: usize,
}

impl Migration {
    /// Whether some field is not supported by ebb.
    pub fn has_unsupported(&self) -> bool {
        self.findings.iter().any(|f| f.unsupported)
    }
}

/// KEDA's annotation keys and ebb's equivalents.
const ANNOTATIONS: &[(&str, &str)] = &[
    ("autoscaling.keda.sh/paused", annotations::PAUSED),
    (
        "autoscaling.keda.sh/paused-replicas",
        annotations::PAUSED_REPLICAS,
    ),
    (
        "autoscaling.keda.sh/paused-scale-in",
        annotations::PAUSED_SCALE_IN,
    ),
    (
        "autoscaling.keda.sh/paused-scale-out",
        annotations::PAUSED_SCALE_OUT,
    ),
    (
        "autoscaling.keda.sh/force-activation",
        annotations::FORCE_ACTIVATION,
    ),
    (
        "scaledobject.keda.sh/transfer-hpa-ownership",
        annotations::TRANSFER_HPA_OWNERSHIP,
    ),
    (
        "scaledjob.keda.sh/job-excluded-labels",
        annotations::SCALED_JOB_EXCLUDED_LABELS,
    ),
];

/// KEDA's webhook escape hatch: ebb has no webhook, and its conflict check has no bypass.
const HPA_OWNERSHIP_VALIDATION: &str = "validations.keda.sh/hpa-ownership";

/// Labels KEDA adds to its own objects.
const KEDA_LABELS: &[&str] = &["scaledobject.keda.sh/name", "scaledjob.keda.sh/name"];

/// Fields the API server sets; a copy from `kubectl get -o yaml` must not carry them over.
const SERVER_SET: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The authentication fields ebb reads; KEDA's others are secret stores ebb does not have.
const AUTH_FIELDS: &[&str] = &["podIdentity", "secretTargetRef", "configMapTargetRef", "env"];

/// The `podIdentity` fields ebb reads.
const POD_IDENTITY_FIELDS: &[&str] = &["provider", "roleArn", "externalID", "identityOwner"];

/// Converts every KEDA object of `docs`; other documents pass through unchanged.
pub fn migrate(docs: &[InputDocument], options: MigrateOptions) -> Migration {
    let mut out = Migration::default();
    for doc in docs {
        let mut value = doc.value.clone();
        if let Some(kind) = keda_kind(&value) {
            let mut object = Object {
                source: &doc.source,
                label: label(kind, &value),
                findings: &mut out.findings,
            };
            convert(kind, &mut value, options, &mut object);
            out.converted += 1;
        }
        out.documents.push(InputDocument {
            source: doc.source.clone(),
            value,
        });
    }
    out
}

/// The kind of a KEDA object `ebb migrate` converts.
fn keda_kind(value: &Json) -> Option<&'static str> {
    if str_at(value, "/apiVersion") != Some(ebb_crds::KEDA_API_VERSION) {
        return None;
    }
    [
        "ScaledObject",
        "ScaledJob",
        "TriggerAuthentication",
        "ClusterTriggerAuthentication",
    ]
    .into_iter()
    .find(|k| str_at(value, "/kind") == Some(k))
}

fn label(kind: &str, value: &Json) -> String {
    let name = str_at(value, "/metadata/name").unwrap_or("(unnamed)");
    match kind {
        "ClusterTriggerAuthentication" => format!("{kind} {name}"),
        _ => format!(
            "{kind} {}/{name}",
            str_at(value, "/metadata/namespace").unwrap_or("default")
        ),
    }
}

/// One object being converted: where findings go.
struct Object<'a> {
    source: &'a str,
    label: String,
    findings: &'a mut Vec<Finding>,
}

impl Object<'_> {
    fn note(&mut self, field: impl Into<String>, message: impl Into<String>, unsupported: bool) {
        self.findings.push(Finding {
            source: self.source.to_string(),
            object: self.label.clone(),
            field: field.into(),
            message: message.into(),
            unsupported,
        });
    }
    fn changed(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.note(field, message, false);
    }
    fn unsupported(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.note(field, message, true);
    }
}

fn convert(kind: &str, value: &mut Json, options: MigrateOptions, o: &mut Object<'_>) {
    value["apiVersion"] = json!(ebb_crds::API_VERSION);
    o.changed(
        "apiVersion",
        format!("{} -> {}", ebb_crds::KEDA_API_VERSION, ebb_crds::API_VERSION),
    );
    if let Some(root) = value.as_object_mut()
        && root.remove("status").is_some()
    {
        o.changed("status", "removed (ebb writes its own)");
    }
    if let Some(meta) = value.get_mut("metadata").and_then(Json::as_object_mut) {
        metadata(meta, o);
    }
    if kind == "ScaledObject" && options.transfer_hpa_ownership {
        let annotations = value["metadata"]
            .as_object_mut()
            .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
        if let Some(Json::Object(a)) = annotations {
            a.insert(annotations::TRANSFER_HPA_OWNERSHIP.to_string(), json!("true"));
            o.changed(
                format!("metadata.annotations.{}", annotations::TRANSFER_HPA_OWNERSHIP),
                "added: adopt the HPA that scales the target (KEDA's)",
            );
        }
    }
    match kind {
        "ScaledObject" | "ScaledJob" => triggers(value, o),
        "TriggerAuthentication" | "ClusterTriggerAuthentication" => {
            if let Some(spec) = value.get_mut("spec").and_then(Json::as_object_mut) {
                authentication(spec, o);
            }
        }
        _ => {}
    }
}

fn metadata(meta: &mut Map<String, Json>, o: &mut Object<'_>) {
    let removed: Vec<&str> = SERVER_SET
        .iter()
        .copied()
        .filter(|k| meta.remove(*k).is_some())
        .collect();
    if !removed.is_empty() {
        o.changed(
            "metadata",
            format!("removed server-set fields {}", removed.join(", ")),
        );
    }
    if let Some(Json::Array(finalizers)) = meta.get_mut("finalizers") {
        let before = finalizers.len();
        finalizers.retain(|f| !f.as_str().is_some_and(|f| f.ends_with("keda.sh")));
        if finalizers.len() != before {
            o.changed("metadata.finalizers", "removed KEDA's finalizer");
        }
        if finalizers.is_empty() {
            meta.remove("finalizers");
        }
    }
    if let Some(Json::Object(labels)) = meta.get_mut("labels") {
        for key in KEDA_LABELS {
            if labels.remove(*key).is_some() {
                o.changed(
                    format!("metadata.labels.{key}"),
                    "removed (KEDA sets it on its objects)",
                );
            }
        }
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
    let Some(Json::Object(annotations)) = meta.get_mut("annotations") else {
        return;
    };
    let old = std::mem::take(annotations);
    let mut renamed = BTreeMap::new();
    for (key, v) in old {
        let field = format!("metadata.annotations.{key}");
        if let Some((_, ebb)) = ANNOTATIONS.iter().find(|(keda, _)| *keda == key) {
            o.changed(field, format!("renamed to {ebb}"));
            renamed.insert((*ebb).to_string(), v);
        } else if key == HPA_OWNERSHIP_VALIDATION {
            o.changed(
                field,
                format!(
                    "removed: ebb has no admission webhook; an HPA it does not own on the target is a conflict unless {} is set",
                    annotations::TRANSFER_HPA_OWNERSHIP
                ),
            );
        } else if key == "kubectl.kubernetes.io/last-applied-configuration" {
            o.changed(field, "removed (it describes the KEDA object)");
        } else {
            if key
                .split_once('/')
                .is_some_and(|(prefix, _)| prefix.ends_with("keda.sh"))
            {
                o.unsupported(field, "ebb has no equivalent; left as it is and ignored");
            }
            annotations.insert(key, v);
        }
    }
    // A KEDA key and its ebb equivalent both given: ebb's own value stands.
    for (key, v) in renamed {
        annotations.entry(key).or_insert(v);
    }
    if annotations.is_empty() {
        meta.remove("annotations");
    }
}

fn triggers(value: &Json, o: &mut Object<'_>) {
    let Some(triggers) = value.pointer("/spec/triggers").and_then(Json::as_array) else {
        return;
    };
    for (i, trigger) in triggers.iter().enumerate() {
        let type_ = trigger.get("type").and_then(Json::as_str).unwrap_or_default();
        if ebb_scalers::declaration(type_).is_none() {
            let known: Vec<&str> = ebb_scalers::supported_types().collect();
            o.unsupported(
                format!("spec.triggers[{i}].type"),
                format!(
                    "trigger type {type_:?} is not supported by ebb (it supports {})",
                    known.join(", ")
                ),
            );
        }
    }
}

fn authentication(spec: &mut Map<String, Json>, o: &mut Object<'_>) {
    let unknown: Vec<String> = spec
        .keys()
        .filter(|k| !AUTH_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        spec.remove(&key);
        o.unsupported(
            format!("spec.{key}"),
            "removed: ebb reads secretTargetRef, configMapTargetRef, env and podIdentity (none, aws) only",
        );
    }
    let Some(Json::Object(identity)) = spec.get_mut("podIdentity") else {
        return;
    };
    let provider = identity.get("provider").and_then(Json::as_str).unwrap_or("none");
    if !matches!(provider, "none" | "aws") {
        let provider = provider.to_string();
        spec.remove("podIdentity");
        o.unsupported(
            "spec.podIdentity.provider",
            format!(
                "removed: pod identity provider {provider:?} is not supported (ebb supports none and aws)"
            ),
        );
        return;
    }
    let extra: Vec<String> = identity
        .keys()
        .filter(|k| !POD_IDENTITY_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in extra {
        identity.remove(&key);
        o.unsupported(format!("spec.podIdentity.{key}"), "removed: ebb does not read it");
    }
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
