//! Scaling declared on a Deployment or StatefulSet through annotations, turned into the
//! ScaledObject ebb generates for it. Pure: no I/O.
//!
//! Two forms (see `docs/annotations.md`):
//! - **short**: `autoscaling.ebb.dev/trigger: <type>`, flat keys for the common fields
//!   (`autoscaling.ebb.dev/min-replicas`, …) and the trigger's metadata as
//!   `<type>.autoscaling.ebb.dev/<key>`;
//! - **full**: `autoscaling.ebb.dev/scaled-object`, a ScaledObject `spec` in YAML without
//!   `scaleTargetRef` (the annotated workload is the target).
//!
//! [`declare`] reads a workload's annotations into a [`Declared`]: nothing, problems (each naming
//! its annotation), or a [`Declaration`] holding the ScaledObject as JSON. The caller checks that
//! object as it checks a hand-written one (schema, cross-field rules, trigger parameters) and
//! names the annotation behind each problem with [`Declaration::annotation_for`].

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value as Json, json};

use crate::annotations::{
    FORCE_ACTIVATION, PAUSED, PAUSED_REPLICAS, PAUSED_SCALE_IN, PAUSED_SCALE_OUT, TRANSFER_HPA_OWNERSHIP,
};

/// The prefix of ebb's workload-level keys.
pub const PREFIX: &str = "autoscaling.ebb.dev/";
/// The domain of trigger metadata keys: `<type>.autoscaling.ebb.dev/<key>`.
pub const METADATA_DOMAIN: &str = ".autoscaling.ebb.dev/";
/// Short form: the trigger type.
pub const TRIGGER: &str = "autoscaling.ebb.dev/trigger";
/// Full form: a ScaledObject `spec` in YAML, without `scaleTargetRef`.
pub const SCALED_OBJECT: &str = "autoscaling.ebb.dev/scaled-object";
/// Label on every generated ScaledObject (value `"true"`).
pub const GENERATED_LABEL: &str = "autoscaling.ebb.dev/generated";
/// Annotation on a generated ScaledObject naming its source, `Kind/name`.
pub const GENERATED_FROM: &str = "autoscaling.ebb.dev/generated-from";
/// Annotation on a generated ScaledObject: a digest of the scaling annotations it was generated
/// from, which tells an edit of the annotations from a hand edit of the object.
pub const GENERATED_DIGEST: &str = "autoscaling.ebb.dev/generated-digest";
/// The longest generated name, so that `ebb-hpa-<name>` stays a valid object name (253).
pub const MAX_GENERATED_NAME: usize = 245;

/// A workload kind that may carry scaling annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind named by `api_version` and `kind`, if it is one.
    pub fn of(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        match (api_version, kind) {
            ("apps/v1", "Deployment") => Some(WorkloadKind::Deployment),
            ("apps/v1", "StatefulSet") => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }

    /// The kind's name, as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem or warning, naming the annotation it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The annotation key, possibly followed by `: <field>` inside the full form.
    pub annotation: String,
    /// What is wrong.
    pub message: String,
}

impl Issue {
    fn new(annotation: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            annotation: annotation.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.annotation, self.message)
    }
}

/// What a workload's annotations declare.
#[derive(Debug, Clone, PartialEq)]
pub enum Declared {
    /// No scaling annotation at all.
    Nothing,
    /// Scaling annotations that cannot produce a ScaledObject; each problem names its annotation.
    Invalid(Vec<Issue>),
    /// A ScaledObject to generate.
    Valid(Declaration),
}

/// Which form declared the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// `autoscaling.ebb.dev/trigger` and flat keys, for one trigger of this type.
    Short(String),
    /// `autoscaling.ebb.dev/scaled-object`.
    Full,
}

/// A ScaledObject declared by annotations, before the checks every ScaledObject goes through.
#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    /// The form used.
    pub form: Form,
    /// The generated ScaledObject as JSON (`apiVersion`, `kind`, `metadata` without owner
    /// references, `spec`).
    pub object: Json,
    /// Keys that were ignored, each naming its annotation.
    pub warnings: Vec<Issue>,
}

/// Short-form keys: annotation suffix, the spec field it sets (a JSON pointer under `spec`), and
/// how its value is read.
const SHORT_KEYS: &[(&str, &str, Value)] = &[
    ("min-replicas", "/minReplicaCount", Value::Int),
    ("max-replicas", "/maxReplicaCount", Value::Int),
    ("idle-replicas", "/idleReplicaCount", Value::Int),
    ("polling-interval", "/pollingInterval", Value::Int),
    ("cooldown-period", "/cooldownPeriod", Value::Int),
    ("initial-cooldown-period", "/initialCooldownPeriod", Value::Int),
    (
        "fallback-failure-threshold",
        "/fallback/failureThreshold",
        Value::Int,
    ),
    ("fallback-replicas", "/fallback/replicas", Value::Int),
    ("fallback-behavior", "/fallback/behavior", Value::Text),
    (
        "restore-to-original-replica-count",
        "/advanced/restoreToOriginalReplicaCount",
        Value::Bool,
    ),
    ("trigger-name", "/triggers/0/name", Value::Text),
    ("metric-type", "/triggers/0/metricType", Value::Text),
    ("use-cached-metrics", "/triggers/0/useCachedMetrics", Value::Bool),
    (
        "authentication-ref",
        "/triggers/0/authenticationRef/name",
        Value::Text,
    ),
    (
        "authentication-kind",
        "/triggers/0/authenticationRef/kind",
        Value::Text,
    ),
];

/// Keys read in both forms: annotation suffix and the spec field it sets.
const TARGET_KEYS: &[(&str, &str)] = &[(
    "env-source-container-name",
    "/scaleTargetRef/envSourceContainerName",
)];

/// Annotations copied onto the generated ScaledObject, where the operator reads them.
pub const PASSED_THROUGH: &[&str] = &[
    PAUSED,
    PAUSED_REPLICAS,
    PAUSED_SCALE_IN,
    PAUSED_SCALE_OUT,
    FORCE_ACTIVATION,
    TRANSFER_HPA_OWNERSHIP,
];

#[derive(Debug, Clone, Copy)]
enum Value {
    Int,
    Bool,
    Text,
}

/// Whether `key` declares scaling (`autoscaling.ebb.dev/…` or `<type>.autoscaling.ebb.dev/…`).
/// The pause annotations ([`PASSED_THROUGH`]) do not: on their own they declare nothing.
pub fn is_scaling_key(key: &str) -> bool {
    (key.starts_with(PREFIX) || metadata_key(key).is_some()) && !PASSED_THROUGH.contains(&key)
}

/// The scaling annotations among `annotations`, plus the passed-through ones when there are any
/// (none at all when only passed-through ones are set).
pub fn scaling_annotations(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let scaling: BTreeMap<String, String> = annotations
        .iter()
        .filter(|(k, _)| is_scaling_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if scaling.is_empty() {
        return scaling;
    }
    let mut out = scaling;
    for key in PASSED_THROUGH {
        if let Some(v) = annotations.get(*key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    out
}

/// `(type, key)` of a `<type>.autoscaling.ebb.dev/<key>` annotation.
fn metadata_key(key: &str) -> Option<(&str, &str)> {
    let at = key.find(METADATA_DOMAIN)?;
    let (ty, rest) = (&key[..at], &key[at + METADATA_DOMAIN.len()..]);
    (!ty.is_empty() && !ty.contains('/')).then_some((ty, rest))
}

/// The name of the ScaledObject generated for a workload: `<name>-deployment` or
/// `<name>-statefulset`, so two workloads never share one. Names too long for that are cut and
/// keep a hash of the whole name.
pub fn generated_name(kind: WorkloadKind, name: &str) -> String {
    let suffix = match kind {
        WorkloadKind::Deployment => "-deployment",
        WorkloadKind::StatefulSet => "-statefulset",
    };
    if name.len() + suffix.len() <= MAX_GENERATED_NAME {
        return format!("{name}{suffix}");
    }
    let hash = format!("-{:08x}", fnv1a(name.as_bytes()) as u32);
    let keep = MAX_GENERATED_NAME - suffix.len() - hash.len();
    let mut cut = &name[..keep.min(name.len())];
    cut = cut.trim_end_matches(['-', '.']);
    format!("{cut}{hash}{suffix}")
}

/// A digest of a workload's scaling annotations (hex, stable across versions of ebb).
pub fn digest(scaling: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (k, v) in scaling {
        text.push_str(k);
        text.push('\0');
        text.push_str(v);
        text.push('\0');
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads the scaling annotations of the `kind` workload `namespace/name`.
pub fn declare(
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Declared {
    let scaling = scaling_annotations(annotations);
    if scaling.is_empty() {
        return Declared::Nothing;
    }
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let (form, mut spec) = match (scaling.get(TRIGGER), scaling.get(SCALED_OBJECT)) {
        (Some(_), Some(_)) => {
            return Declared::Invalid(vec![Issue::new(
                SCALED_OBJECT,
                format!("set either {TRIGGER} (short form) or {SCALED_OBJECT} (full form), not both"),
            )]);
        }
        (None, None) => {
            return Declared::Invalid(vec![Issue::new(
                scaling.keys().next().cloned().unwrap_or_default(),
                format!("no trigger declared: add {TRIGGER} (short form) or {SCALED_OBJECT} (full form)"),
            )]);
        }
        (Some(ty), None) => {
            let ty = ty.trim().to_string();
            if ty.is_empty() {
                return Declared::Invalid(vec![Issue::new(
                    TRIGGER,
                    "is empty: name a trigger type, e.g. kafka",
                )]);
            }
            let spec = short_form(&ty, &scaling, &mut problems, &mut warnings);
            (Form::Short(ty), spec)
        }
        (None, Some(text)) => {
            match full_form(text) {
                Ok(spec) => {
                    for key in scaling.keys() {
                        let shortish = key
                            .strip_prefix(PREFIX)
                            .is_some_and(|k| SHORT_KEYS.iter().any(|(s, _, _)| *s == k));
                        if shortish || metadata_key(key).is_some() {
                            problems.push(Issue::new(
                            key.clone(),
                            format!("a short-form key next to {SCALED_OBJECT}: set the field in its spec instead"),
                        ));
                        }
                    }
                    (Form::Full, spec)
                }
                Err(issue) => return Declared::Invalid(vec![issue]),
            }
        }
    };
    for key in scaling.keys() {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let known = rest == "trigger"
            || rest == "scaled-object"
            || SHORT_KEYS.iter().any(|(s, _, _)| *s == rest)
            || TARGET_KEYS.iter().any(|(s, _)| *s == rest)
            || PASSED_THROUGH.contains(&key.as_str());
        if !known {
            warnings.push(Issue::new(key.clone(), "unknown key, ignored"));
        }
    }
    let mut target = Map::new();
    target.insert("apiVersion".into(), json!("apps/v1"));
    target.insert("kind".into(), json!(kind.as_str()));
    target.insert("name".into(), json!(name));
    for (suffix, pointer) in TARGET_KEYS {
        if let Some(v) = scaling.get(&format!("{PREFIX}{suffix}")) {
            let field = pointer.rsplit('/').next().unwrap_or_default();
            target.insert(field.to_string(), json!(v.trim()));
        }
    }
    spec.insert("scaleTargetRef".into(), Json::Object(target));
    if !problems.is_empty() {
        return Declared::Invalid(problems);
    }
    let passed: Map<String, Json> = PASSED_THROUGH
        .iter()
        .filter_map(|k| scaling.get(*k).map(|v| (k.to_string(), json!(v))))
        .chain([
            (GENERATED_FROM.to_string(), json!(format!("{kind}/{name}"))),
            (GENERATED_DIGEST.to_string(), json!(digest(&scaling))),
        ])
        .collect();
    let object = json!({
        "apiVersion": crate::API_VERSION,
        "kind": "ScaledObject",
        "metadata": {
            "name": generated_name(kind, name),
            "namespace": namespace,
            "labels": {GENERATED_LABEL: "true", "app.kubernetes.io/managed-by": "ebb"},
            "annotations": passed,
        },
        "spec": spec,
    });
    Declared::Valid(Declaration {
        form,
        object,
        warnings,
    })
}

fn short_form(
    ty: &str,
    scaling: &BTreeMap<String, String>,
    problems: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) -> Map<String, Json> {
    let mut spec = json!({"triggers": [{"type": ty, "metadata": {}}]});
    for (suffix, pointer, kind) in SHORT_KEYS {
        let key = format!("{PREFIX}{suffix}");
        let Some(raw) = scaling.get(&key) else { continue };
        let text = raw.trim();
        let value = match kind {
            Value::Int => match text.parse::<i32>() {
                Ok(n) => json!(n),
                Err(_) => {
                    problems.push(Issue::new(key, format!("{raw:?} is not a whole number")));
                    continue;
                }
            },
            Value::Bool => match text.to_ascii_lowercase().as_str() {
                "true" => json!(true),
                "false" => json!(false),
                _ => {
                    problems.push(Issue::new(key, format!("{raw:?} is neither true nor false")));
                    continue;
                }
            },
            Value::Text => json!(text),
        };
        set(&mut spec, pointer, value);
    }
    let has = |suffix: &str| scaling.contains_key(&format!("{PREFIX}{suffix}"));
    if has("fallback-behavior") && !(has("fallback-failure-threshold") && has("fallback-replicas")) {
        problems.push(Issue::new(
            format!("{PREFIX}fallback-behavior"),
            format!("needs {PREFIX}fallback-failure-threshold and {PREFIX}fallback-replicas"),
        ));
    } else if has("fallback-failure-threshold") != has("fallback-replicas") {
        let (set, missing) = if has("fallback-replicas") {
            ("fallback-replicas", "fallback-failure-threshold")
        } else {
            ("fallback-failure-threshold", "fallback-replicas")
        };
        problems.push(Issue::new(
            format!("{PREFIX}{set}"),
            format!("needs {PREFIX}{missing} too"),
        ));
    }
    if has("authentication-kind") && !has("authentication-ref") {
        problems.push(Issue::new(
            format!("{PREFIX}authentication-kind"),
            format!("needs {PREFIX}authentication-ref"),
        ));
    }
    for (key, value) in scaling {
        let Some((key_type, param)) = metadata_key(key) else {
            continue;
        };
        if key_type != ty {
            warnings.push(Issue::new(
                key.clone(),
                format!("for trigger type {key_type}, but {TRIGGER} is {ty}: ignored"),
            ));
        } else if param.is_empty() {
            problems.push(Issue::new(key.clone(), "names no metadata key"));
        } else {
            spec["triggers"][0]["metadata"][param] = json!(value);
        }
    }
    match spec {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// Sets `pointer` (under `spec`) to `value`, creating the objects on the way; `/triggers/0/…`
/// addresses the one trigger.
fn set(spec: &mut Json, pointer: &str, value: Json) {
    let mut at = spec;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = match at {
            Json::Array(items) => part.parse::<usize>().ok().and_then(|n| items.get_mut(n)),
            Json::Object(map) => Some(map.entry(part.to_string()).or_insert_with(|| json!({}))),
            _ => None,
        };
        let Some(next) = next else { return };
        if last {
            *next = value;
            return;
        }
        at = next;
    }
}

fn full_form(text: &str) -> Result<Map<String, Json>, Issue> {
    let value: Json = serde_saphyr::from_str(text)
        .map_err(|e| Issue::new(SCALED_OBJECT, format!("not valid YAML: {e}")))?;
    let Json::Object(spec) = value else {
        return Err(Issue::new(
            SCALED_OBJECT,
            "must be a ScaledObject spec: a mapping with triggers",
        ));
    };
    if spec.contains_key("scaleTargetRef") {
        return Err(Issue::new(
            format!("{SCALED_OBJECT}: spec.scaleTargetRef"),
            "leave it out: the annotated workload is the target",
        ));
    }
    Ok(spec)
}

impl Declaration {
    /// The annotation behind a field of the generated object (`spec.minReplicaCount` →
    /// `autoscaling.ebb.dev/min-replicas`), for problems found by the checks every ScaledObject
    /// goes through. Inside the full form: `autoscaling.ebb.dev/scaled-object: <field>`.
    pub fn annotation_for(&self, field: &str) -> String {
        let field = field.strip_prefix('.').unwrap_or(field);
        for (suffix, pointer) in TARGET_KEYS {
            if field == pointer_field(pointer) {
                return format!("{PREFIX}{suffix}");
            }
        }
        let Form::Short(ty) = &self.form else {
            return format!("{SCALED_OBJECT}: {field}");
        };
        if let Some(param) = field.strip_prefix("spec.triggers[0].metadata.") {
            return format!("{ty}{METADATA_DOMAIN}{param}");
        }
        if field == "spec.triggers[0].type" || field == "spec.triggers[0]" || field == "spec.triggers" {
            return TRIGGER.to_string();
        }
        // The short-form key whose field holds the path (the most specific one), else the
        // first whose field is under it (a problem about a whole object, e.g. `spec.fallback`).
        let fields = || {
            SHORT_KEYS
                .iter()
                .map(|(suffix, pointer, _)| (suffix, pointer_field(pointer)))
        };
        let holding = fields()
            .filter(|(_, f)| field == f || field.starts_with(&format!("{f}.")))
            .max_by_key(|(_, f)| f.len());
        let under = || fields().find(|(_, f)| f.starts_with(&format!("{field}.")));
        holding
            .or_else(under)
            .map(|(suffix, _)| format!("{PREFIX}{suffix}"))
            .unwrap_or_else(|| TRIGGER.to_string())
    }

    /// The generated object's name.
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default()
    }
}

/// `/triggers/0/metricType` → `spec.triggers[0].metricType`.
fn pointer_field(pointer: &str) -> String {
    let mut out = String::from("spec");
    for part in pointer.trim_start_matches('/').split('/') {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests;
