//! `ebb validate`: offline checks of ScaledObject / ScaledJob / TriggerAuthentication manifests.
//!
//! Each document is checked the way the cluster and the operator will see it: the CRD schema
//! (types, required fields, minimums, enums, unknown fields), KEDA's defaults, the cross-field rules
//! and every trigger's parameters. Objects under KEDA's `keda.sh/v1alpha1` are accepted too, so KEDA
//! manifests can be checked before migrating. Deployments and StatefulSets with scaling
//! annotations are checked as the ScaledObject they generate ([`crate::cli::annotated`]), which
//! the report carries.

use ebb_crds::validation::{FieldError, validate_spec};
use ebb_crds::{ClusterTriggerAuthentication, ScaledJob, ScaledObject, TriggerAuthentication, schema_check};

use crate::cli::annotated::{annotations_of, check_workload};
use crate::cli::bundle::str_at;
pub use crate::cli::bundle::{BundleObjects, CLUSTER_AUTH_NAMESPACE};
use crate::cli::scaled_job::check_scaled_job;
use crate::cli::trigger_report::report_triggers;
use crate::compile::triggers::compile;
use ebb_crds::annotated::WorkloadKind;
use kube::CustomResourceExt;
use serde::Serialize;
use serde_json::{Value as Json, json};

/// A YAML stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The text is not valid YAML.
    #[error("{source_name}: invalid YAML: {message}")]
    Yaml {
        /// File name (or `-`).
        source_name: String,
        /// Parser message, with line and column.
        message: String,
    },
}

/// One YAML document of the input.
#[derive(Debug, Clone)]
pub struct InputDocument {
    /// `file` or `file#N` for the N-th document (1-based) of a multi-document file.
    pub source: String,
    /// The document as JSON.
    pub value: Json,
}

/// Splits a YAML stream into documents; empty documents are skipped. A list (`kind: List`, as
/// `kubectl get -o yaml` writes, or `<Kind>List`) becomes its items, `file#N.items[i]`.
pub fn read_documents(source_name: &str, text: &str) -> Result<Vec<InputDocument>, BundleError> {
    let values: Vec<Json> = serde_saphyr::from_multiple(text).map_err(|e| BundleError::Yaml {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate().filter(|(_, v)| !v.is_null()) {
        let source = format!("{source_name}#{}", i + 1);
        match list_items(value) {
            Ok(items) => docs.extend(items.into_iter().enumerate().map(|(j, value)| InputDocument {
                source: format!("{source}.items[{j}]"),
                value,
            })),
            Err(value) => docs.push(InputDocument { source, value }),
        }
    }
    Ok(docs)
}

/// The items of a list document (an item without `apiVersion`/`kind`, as the API answers a
/// `<Kind>List`, gets the list's); `Err` gives back any other document.
fn list_items(mut value: Json) -> Result<Vec<Json>, Json> {
    let kind = str_at(&value, "/kind").unwrap_or_default();
    let item_kind = match kind.strip_suffix("List") {
        Some(k) if value.get("items").is_some_and(Json::is_array) => k.to_string(),
        _ => return Err(value),
    };
    let api_version = value.get("apiVersion").cloned();
    let Some(Json::Array(items)) = value.get_mut("items").map(Json::take) else {
        return Err(value);
    };
    Ok(items
        .into_iter()
        .map(|mut item| {
            if let Some(obj) = item.as_object_mut()
                && !item_kind.is_empty()
            {
                obj.entry("kind").or_insert_with(|| json!(item_kind));
                if let Some(v) = &api_version {
                    obj.entry("apiVersion").or_insert_with(|| v.clone());
                }
            }
            item
        })
        .collect())
}

/// The kinds `ebb validate` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckedKind {
    /// A ScaledObject.
    ScaledObject,
    /// A ScaledJob.
    ScaledJob,
    /// A TriggerAuthentication.
    TriggerAuthentication,
    /// A ClusterTriggerAuthentication.
    ClusterTriggerAuthentication,
    /// A Deployment with scaling annotations.
    Deployment,
    /// A StatefulSet with scaling annotations.
    StatefulSet,
}

/// The result for one trigger.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerReport {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// Trigger type.
    #[serde(rename = "type")]
    pub type_: String,
    /// External metric name the HPA will use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    /// Parsed parameters, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Json>,
    /// The pod identity provider the authentication sets (`none`, `aws`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<ebb_crds::PodIdentityProvider>,
}

/// The result for one object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    /// Where it came from.
    pub source: String,
    /// Kind, when recognised.
    pub kind: Option<CheckedKind>,
    /// `apiVersion` as written.
    pub api_version: String,
    /// Namespace (ScaledObject, ScaledJob, TriggerAuthentication), defaulted to `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Whether the object passes every check.
    pub valid: bool,
    /// Problems: each makes the object invalid.
    pub problems: Vec<Problem>,
    /// Notes that do not make it invalid.
    pub warnings: Vec<String>,
    /// Per-trigger results (ScaledObjects and ScaledJobs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerReport>,
    /// The object with defaults applied, as ebb will store it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized: Option<Json>,
    /// For an annotated workload, the ScaledObject the operator generates from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<Json>,
}

/// One problem, located by field path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Field path from the object root.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl From<FieldError> for Problem {
    fn from(e: FieldError) -> Self {
        Problem {
            field: e.field,
            message: e.message,
        }
    }
}

impl ObjectReport {
    /// `Kind namespace/name` for messages.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            Some(k) => format!("{k:?}"),
            None => "object".to_string(),
        };
        match &self.namespace {
            Some(ns) => format!("{kind} {ns}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }
}

/// Everything `ebb validate` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BundleReport {
    /// One entry per checked object; documents of other kinds are skipped.
    pub objects: Vec<ObjectReport>,
    /// Documents of kinds ebb does not check, as `source: Kind name`.
    pub skipped: Vec<String>,
}

impl BundleReport {
    /// Whether every object is valid.
    pub fn is_valid(&self) -> bool {
        self.objects.iter().all(|o| o.valid)
    }
    /// One line per problem: `source: Kind ns/name: field: message`.
    pub fn problem_lines(&self) -> Vec<String> {
        self.objects
            .iter()
            .flat_map(|o| {
                o.problems
                    .iter()
                    .map(move |p| format!("{}: {}: {}: {}", o.source, o.label(), p.field, p.message))
            })
            .collect()
    }
    /// One line per warning.
    pub fn warning_lines(&self) -> Vec<String> {
        self.objects
            .iter()
            .flat_map(|o| {
                o.warnings
                    .iter()
                    .map(move |w| format!("{}: {}: warning: {w}", o.source, o.label()))
            })
            .collect()
    }
}

/// How `ebb validate` treats references to objects that are not in its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Missing Secrets, ConfigMaps, TriggerAuthentications or workloads are errors, not warnings.
    pub strict: bool,
    /// Say nothing of missing references (the operator's generator: the cluster has them, and
    /// the ScaledObject's reconcile reports what it cannot find).
    pub quiet_missing: bool,
}

/// Checks every document (missing references are warnings).
pub fn check_documents(docs: &[InputDocument]) -> BundleReport {
    check_documents_with(docs, CheckOptions::default())
}

/// Checks every document, resolving triggers' auth params and env from the other documents.
pub fn check_documents_with(docs: &[InputDocument], options: CheckOptions) -> BundleReport {
    let bundle = BundleObjects::from_documents(docs);
    let mut report = BundleReport::default();
    for doc in docs {
        let api_version = str_at(&doc.value, "/apiVersion").unwrap_or_default().to_string();
        let kind_name = str_at(&doc.value, "/kind").unwrap_or_default().to_string();
        let ours = api_version == ebb_crds::API_VERSION || api_version == ebb_crds::KEDA_API_VERSION;
        let kind = match kind_name.as_str() {
            "ScaledObject" if ours => CheckedKind::ScaledObject,
            "ScaledJob" if ours => CheckedKind::ScaledJob,
            "TriggerAuthentication" if ours => CheckedKind::TriggerAuthentication,
            "ClusterTriggerAuthentication" if ours => CheckedKind::ClusterTriggerAuthentication,
            _ if let Some(workload) = WorkloadKind::of(&api_version, &kind_name)
                && let Some(checked) = check_annotated(doc, workload, &bundle, options) =>
            {
                report.objects.push(checked);
                continue;
            }
            _ => {
                if !doc.value.is_object() || kind_name.is_empty() {
                    report.objects.push(not_an_object(doc, &api_version));
                } else {
                    let name = str_at(&doc.value, "/metadata/name").unwrap_or("(unnamed)");
                    report
                        .skipped
                        .push(format!("{}: {api_version} {kind_name} {name}", doc.source));
                }
                continue;
            }
        };
        report
            .objects
            .push(check_object(doc, kind, &api_version, &bundle, options));
    }
    ignore_conflicting_declarations(&mut report);
    report
}

/// An annotated workload's report: its annotations' problems and the ScaledObject they
/// generate; `None` when it has no scaling annotation.
fn check_annotated(
    doc: &InputDocument,
    kind: WorkloadKind,
    bundle: &BundleObjects,
    options: CheckOptions,
) -> Option<ObjectReport> {
    let namespace = str_at(&doc.value, "/metadata/namespace").unwrap_or("default");
    let name = str_at(&doc.value, "/metadata/name").unwrap_or("(unnamed)");
    let (annotations, not_text) = annotations_of(&doc.value);
    let checked = check_workload(kind, namespace, name, &annotations, bundle, options)?;
    let problem = |line: &String| {
        let (field, message) = line.split_once(": ").unwrap_or((line.as_str(), ""));
        Problem {
            field: field.to_string(),
            message: message.to_string(),
        }
    };
    let mut problems: Vec<Problem> = checked.problems.iter().map(problem).collect();
    problems.extend(not_text.into_iter().map(|k| Problem {
        field: format!("metadata.annotations.{k}"),
        message: "must be a string".into(),
    }));
    Some(ObjectReport {
        source: doc.source.clone(),
        kind: Some(match kind {
            WorkloadKind::Deployment => CheckedKind::Deployment,
            WorkloadKind::StatefulSet => CheckedKind::StatefulSet,
        }),
        api_version: "apps/v1".into(),
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
        valid: problems.is_empty(),
        problems,
        warnings: checked.warnings,
        triggers: Vec::new(),
        normalized: None,
        generated: checked.object.and_then(|so| serde_json::to_value(so).ok()),
    })
}

/// A ScaledObject of the input that targets an annotated workload wins over the annotations, as
/// in the cluster: the workload's report then generates nothing and says why.
fn ignore_conflicting_declarations(report: &mut BundleReport) {
    let written: Vec<(String, String, String, String)> = report
        .objects
        .iter()
        .filter(|o| o.kind == Some(CheckedKind::ScaledObject))
        .filter_map(|o| {
            let n = o.normalized.as_ref()?;
            let target = n.pointer("/spec/scaleTargetRef")?;
            let kind = target.get("kind").and_then(Json::as_str).unwrap_or("Deployment");
            let name = target.get("name").and_then(Json::as_str)?;
            Some((
                o.namespace.clone()?,
                kind.to_string(),
                name.to_string(),
                o.name.clone(),
            ))
        })
        .collect();
    for o in &mut report.objects {
        let kind = match o.kind {
            Some(CheckedKind::Deployment) => "Deployment",
            Some(CheckedKind::StatefulSet) => "StatefulSet",
            _ => continue,
        };
        let namespace = o.namespace.clone().unwrap_or_default();
        if let Some((_, _, _, so)) = written
            .iter()
            .find(|(ns, k, n, _)| *ns == namespace && k == kind && *n == o.name)
        {
            o.warnings.push(format!(
                "scaling annotations ignored: ScaledObject {namespace}/{so} targets this {kind}, and a written ScaledObject wins"
            ));
            o.generated = None;
        }
    }
}

/// Checks one ScaledObject given as JSON (`source` names it in the report).
pub fn check_scaled_object_value(
    source: &str,
    value: &Json,
    bundle: &BundleObjects,
    options: CheckOptions,
) -> ObjectReport {
    let doc = InputDocument {
        source: source.to_string(),
        value: value.clone(),
    };
    let api_version = str_at(value, "/apiVersion")
        .unwrap_or(ebb_crds::API_VERSION)
        .to_string();
    check_object(&doc, CheckedKind::ScaledObject, &api_version, bundle, options)
}

fn not_an_object(doc: &InputDocument, api_version: &str) -> ObjectReport {
    ObjectReport {
        source: doc.source.clone(),
        kind: None,
        api_version: api_version.to_string(),
        namespace: None,
        name: "(unnamed)".to_string(),
        valid: false,
        problems: vec![Problem {
            field: "kind".into(),
            message: "not a Kubernetes object: a mapping with apiVersion and kind is expected".into(),
        }],
        warnings: Vec::new(),
        triggers: Vec::new(),
        normalized: None,
        generated: None,
    }
}

fn check_object(
    doc: &InputDocument,
    kind: CheckedKind,
    api_version: &str,
    bundle: &BundleObjects,
    options: CheckOptions,
) -> ObjectReport {
    let namespaced = kind != CheckedKind::ClusterTriggerAuthentication;
    let mut report = ObjectReport {
        source: doc.source.clone(),
        kind: Some(kind),
        api_version: api_version.to_string(),
        namespace: namespaced.then(|| {
            str_at(&doc.value, "/metadata/namespace")
                .unwrap_or("default")
                .to_string()
        }),
        name: str_at(&doc.value, "/metadata/name")
            .unwrap_or("(unnamed)")
            .to_string(),
        valid: true,
        problems: Vec::new(),
        warnings: Vec::new(),
        triggers: Vec::new(),
        normalized: None,
        generated: None,
    };
    if str_at(&doc.value, "/metadata/name").is_none_or(str::is_empty) {
        report.problems.push(Problem {
            field: "metadata.name".into(),
            message: "is required".into(),
        });
    }
    if api_version == ebb_crds::KEDA_API_VERSION {
        report.warnings.push(format!(
            "KEDA apiVersion {api_version}: checked as {}; change apiVersion to migrate",
            ebb_crds::API_VERSION
        ));
    }
    keda_annotation_warnings(&doc.value, &mut report.warnings);
    // The schema first: it is what the API server enforces.
    let findings = schema_check::check(schema_of(kind), &doc.value, "");
    report
        .problems
        .extend(findings.errors.into_iter().map(Problem::from));
    report.warnings.extend(
        findings
            .unknown_fields
            .into_iter()
            .map(|f| format!("{f}: unknown field, the API server would drop it")),
    );
    // Then the typed view, which applies the defaults.
    let mut value = doc.value.clone();
    value["apiVersion"] = json!(ebb_crds::API_VERSION);
    let typed = match kind {
        CheckedKind::ScaledObject => typed::<ScaledObject>(value).map(|so| {
            check_scaled_object(&so, &mut report, bundle, options);
            serde_json::to_value(&so)
        }),
        CheckedKind::ScaledJob => typed::<ScaledJob>(value).map(|sj| {
            check_scaled_job(&sj, &mut report, bundle, options);
            serde_json::to_value(&sj)
        }),
        CheckedKind::TriggerAuthentication => {
            typed::<TriggerAuthentication>(value).map(|o| serde_json::to_value(&o))
        }
        CheckedKind::ClusterTriggerAuthentication => {
            typed::<ClusterTriggerAuthentication>(value).map(|o| serde_json::to_value(&o))
        }
        // Workloads are checked by `check_annotated`, never here.
        CheckedKind::Deployment | CheckedKind::StatefulSet => return report,
    };
    match typed {
        Ok(Ok(normalized)) => report.normalized = Some(normalized),
        Ok(Err(e)) => report.problems.push(Problem {
            field: "(object)".into(),
            message: e.to_string(),
        }),
        // The schema walk usually names the same problem already (at that field or, for a missing
        // required field, below it); add it only when it did not.
        Err(p) if !report.problems.iter().any(|q| within(&q.field, &p.field)) => report.problems.push(p),
        Err(_) => {}
    }
    report.valid = report.problems.is_empty();
    report
}

/// Whether `field` is `parent` or a field under it.
fn within(field: &str, parent: &str) -> bool {
    field
        .strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

fn typed<T: serde::de::DeserializeOwned>(value: Json) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Problem {
            field: if field == "." { "(object)".into() } else { field },
            message: e.into_inner().to_string(),
        }
    })
}

fn check_scaled_object(
    so: &ScaledObject,
    report: &mut ObjectReport,
    bundle: &BundleObjects,
    options: CheckOptions,
) {
    report
        .problems
        .extend(validate_spec(&so.spec).into_iter().map(Problem::from));
    let namespace = so.metadata.namespace.as_deref().unwrap_or("default");
    // The same compilation the operator runs against the cluster, over the files given.
    let compiled = futures::executor::block_on(compile(bundle, namespace, so));
    if let Some(problem) =
        crate::compile::triggers::scale_from_zero_problem(so.spec.min_replica_count, &compiled)
        && let Some((field, message)) = problem.split_once(": ")
    {
        report.problems.push(Problem {
            field: field.to_string(),
            message: message.to_string(),
        });
    }
    report_triggers(&so.spec.triggers, compiled, report, options);
}

fn keda_annotation_warnings(value: &Json, warnings: &mut Vec<String>) {
    let Some(annotations) = value.pointer("/metadata/annotations").and_then(Json::as_object) else {
        return;
    };
    for key in annotations.keys() {
        let ebb_key = key
            .replace("autoscaling.keda.sh/", "autoscaling.ebb.dev/")
            .replace("scaledobject.keda.sh/", "scaledobject.ebb.dev/")
            .replace("scaledjob.keda.sh/", "scaledjob.ebb.dev/");
        if &ebb_key != key {
            warnings.push(format!(
                "metadata.annotations.{key}: KEDA annotation, ebb reads {ebb_key}"
            ));
        }
    }
}

/// The `openAPIV3Schema` of a kind's CRD, as JSON.
fn schema_of(kind: CheckedKind) -> &'static Json {
    use std::sync::OnceLock;
    // Generating a CRD's schema (the ScaledJob's embeds a whole JobSpec) costs far more than
    // checking a document against it: each is generated once per process.
    static SCHEMAS: [OnceLock<Json>; 4] = [const { OnceLock::new() }; 4];
    static NONE: Json = Json::Null;
    let (slot, crd): (
        usize,
        fn() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) = match kind {
        CheckedKind::ScaledObject => (0, ScaledObject::crd),
        CheckedKind::ScaledJob => (1, ScaledJob::crd),
        CheckedKind::TriggerAuthentication => (2, TriggerAuthentication::crd),
        CheckedKind::ClusterTriggerAuthentication => (3, ClusterTriggerAuthentication::crd),
        CheckedKind::Deployment | CheckedKind::StatefulSet => return &NONE,
    };
    SCHEMAS[slot].get_or_init(|| ebb_crds::generate::openapi_schema(&crd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> BundleReport {
        check_documents(&read_documents("t.yaml", yaml).unwrap())
    }

    const VALID: &str = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: worker, namespace: jobs}
spec:
  scaleTargetRef: {name: worker}
  triggers:
  - type: metrics-api
    metadata: {url: "http://src:8080/", valueLocation: depth, targetValue: "5"}
"#;

    #[test]
    fn only_cpu_and_memory_at_min_zero_is_a_problem_of_min_replica_count() {
        let only_cpu = VALID.replace(
            "  - type: metrics-api\n    metadata: {url: \"http://src:8080/\", valueLocation: depth, targetValue: \"5\"}",
            "  - type: cpu\n    metricType: Utilization\n    metadata: {value: \"60\"}",
        );
        assert!(only_cpu.contains("type: cpu"), "{only_cpu}");
        let r = check(&only_cpu);
        assert!(!r.is_valid());
        let lines = r.problem_lines().join("\n");
        assert!(lines.contains("spec.minReplicaCount"), "{lines}");
        assert!(lines.contains("cannot scale up from zero"), "{lines}");
        let with_min = only_cpu.replace("  triggers:", "  minReplicaCount: 1\n  triggers:");
        let r = check(&with_min);
        assert!(r.is_valid(), "{:?}", r.problem_lines());
        let hpa_metric = &r.objects[0].triggers[0];
        assert!(hpa_metric.metric_name.is_some() || hpa_metric.params.is_some());
    }

    #[test]
    fn valid_object_is_normalised_with_defaults() {
        let r = check(VALID);
        assert!(r.is_valid(), "{:?}", r.problem_lines());
        let n = r.objects[0].normalized.as_ref().unwrap();
        assert_eq!(n["spec"]["pollingInterval"], 30);
        assert_eq!(n["spec"]["cooldownPeriod"], 300);
        assert_eq!(n["spec"]["maxReplicaCount"], 100);
        assert_eq!(n["spec"]["triggers"][0]["metricType"], "AverageValue");
        assert_eq!(
            r.objects[0].triggers[0].metric_name.as_deref(),
            Some("s0-metrics-api-depth")
        );
        assert_eq!(
            r.objects[0].triggers[0].params.as_ref().unwrap()["targetValue"]["value"],
            5.0
        );
    }

    #[test]
    fn each_problem_names_object_trigger_and_field() {
        let yaml = VALID
            .replace("targetValue: \"5\"", "targetValue: \"-1\"")
            .replace(
                "name: worker}\n  triggers",
                "name: worker}\n  minReplicaCount: 3\n  maxReplicaCount: 2\n  triggers",
            );
        let lines = check(&yaml).problem_lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("t.yaml#1: ScaledObject jobs/worker: spec.minReplicaCount: "),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with(
                "t.yaml#1: ScaledObject jobs/worker: spec.triggers[0].metadata.targetValue: (metrics-api)"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn schema_errors_are_reported_once() {
        let yaml = VALID.replace("targetValue: \"5\"}", "targetValue: 5}");
        let r = check(&yaml);
        let lines = r.problem_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("spec.triggers[0].metadata.targetValue: must be of type string"),
            "{lines:?}"
        );
    }

    #[test]
    fn keda_manifests_are_accepted_with_a_warning() {
        let r = check(&VALID.replace("ebb.dev/v1alpha1", "keda.sh/v1alpha1"));
        assert!(r.is_valid());
        assert!(
            r.objects[0]
                .warnings
                .iter()
                .any(|w| w.contains("KEDA apiVersion"))
        );
        assert_eq!(
            r.objects[0].normalized.as_ref().unwrap()["apiVersion"],
            "ebb.dev/v1alpha1"
        );
    }

    #[test]
    fn other_kinds_are_skipped_and_garbage_is_a_problem() {
        let r = check("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\n---\n- 1\n- 2\n---\n");
        assert_eq!(r.skipped, ["t.yaml#1: apps/v1 Deployment w"]);
        assert_eq!(r.objects.len(), 1);
        assert!(!r.is_valid());
    }

    #[test]
    fn invalid_yaml_is_an_error_not_a_panic() {
        let e = read_documents("bad.yaml", "spec: [unclosed").unwrap_err();
        assert!(e.to_string().starts_with("bad.yaml: invalid YAML"), "{e}");
    }

    #[test]
    fn secrets_in_auth_or_urls_never_reach_the_output() {
        let yaml = VALID.replace("http://src:8080/", "http://admin:Sup3rSecret@src:8080/");
        let r = check(&yaml);
        let out = serde_json::to_string(&r.objects[0].triggers).unwrap();
        assert!(!out.contains("Sup3rSecret"), "{out}");
    }

    proptest::proptest! {
        // Arbitrary text never panics the reader or the checker.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            if let Ok(docs) = read_documents("p", &text) {
                let _ = check_documents(&docs);
            }
        }
        // Arbitrary metadata maps in a well-formed ScaledObject never panic, for every trigger type.
        #[test]
        fn arbitrary_metadata_never_panics(
            ty in proptest::sample::select(vec!["kafka", "rabbitmq", "nats-jetstream", "aws-sqs-queue", "metrics-api", "nope"]),
            meta in proptest::collection::btree_map("[a-zA-Z]{1,20}", ".{0,30}", 0..10),
        ) {
            let doc = serde_json::json!({"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "p"}, "spec": {"scaleTargetRef": {"name": "w"},
                "triggers": [{"type": ty, "metadata": meta}]}});
            let r = check_documents(&[InputDocument { source: "p".into(), value: doc }]);
            proptest::prop_assert_eq!(r.objects.len(), 1);
        }
    }
}
