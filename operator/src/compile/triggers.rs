//! A ScaledObject's or ScaledJob's triggers, compiled: each trigger's inputs resolved through an
//! [`ObjectSource`], then parsed by its scaler declaration (typed parameters, metric name,
//! thresholds), with every parameter whose value came from a Secret marked secret. `ebb validate`
//! and the reconciler both call [`compile`]; what they do with a trigger that does not compile
//! differs (a report per field, or one `Ready=False` message).

use ebb_crds::{MetricType, PodIdentityProvider, ScaledJob, ScaledObject, Trigger, TriggerMetricType};
use std::sync::Arc;

use ebb_scalers::registry::{ParsedTrigger, kind};
use ebb_scalers::resource_metric::{ResourceMetric, TargetType};
use ebb_scalers::{ParamError, Scaler, ScalerFactory, TriggerParseError};

use crate::compile::inputs::{EnvSource, ObjectSource, ResolvedInputs, TransientLookup, resolve};

/// A compiled trigger's scaler, or why there is none ([`CompiledTrigger::build`]).
pub enum Built<'a> {
    /// The scaler, and the parsed trigger it was built from.
    Scaler(&'a ParsedTrigger, Arc<dyn Scaler>),
    /// A trigger the HPA reads itself (cpu, memory): its HPA metric; nothing to poll.
    Resource(&'a ResourceMetric),
    /// Why the trigger cannot be used, one line naming it (secrets scrubbed).
    Problem(String),
    /// Neither usable nor invalid: a lookup failed for a reason that may pass.
    Skipped,
}

/// One trigger of a ScaledObject, resolved and parsed.
#[derive(Debug, Clone)]
pub struct CompiledTrigger {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// Trigger type, as written.
    pub trigger_type: String,
    /// HPA target type of its External metric (AverageValue for a resource trigger).
    pub metric_type: MetricType,
    /// For a trigger the HPA reads itself (cpu, memory): its Resource or ContainerResource
    /// metric, when it parsed.
    pub resource: Option<ResourceMetric>,
    /// `useCachedMetrics`.
    pub use_cached_metrics: bool,
    /// Its resolved inputs: auth params, container env, what is missing or wrong, what is secret.
    pub inputs: ResolvedInputs,
    /// The parsed trigger (secret parameters marked), or each parameter problem.
    pub parsed: Result<ParsedTrigger, TriggerParseError>,
}

impl CompiledTrigger {
    /// `spec.triggers[<index>]`, the field path of the trigger.
    pub fn field(&self) -> String {
        format!("spec.triggers[{}]", self.index)
    }

    /// The parsed trigger, when its inputs resolved without error and it parsed.
    pub fn usable(&self) -> Option<&ParsedTrigger> {
        if !self.inputs.errors.is_empty() || !self.inputs.transient.is_empty() {
            return None;
        }
        self.parsed.as_ref().ok()
    }

    /// The first lookup of its inputs that failed for a reason that may pass: the trigger is then
    /// neither usable nor invalid (its parameters were parsed without what could not be read).
    pub fn transient(&self) -> Option<&TransientLookup> {
        self.inputs.transient.first()
    }

    /// Why the trigger cannot be used, as one line naming the trigger (secret values hidden):
    /// the input problems when there are any, else the parameter problems.
    pub fn problem(&self) -> Option<String> {
        if !self.inputs.errors.is_empty() {
            return Some(format!(
                "{} ({}): {}",
                self.field(),
                self.trigger_type,
                self.inputs.errors.join("; ")
            ));
        }
        match &self.parsed {
            Ok(_) => None,
            Err(e) => Some(self.inputs.scrub(&format!("spec.{e}"))),
        }
    }

    /// The trigger's scaler, built through `factory` (clients shared), or why there is none.
    pub fn build(&self, factory: &ScalerFactory) -> Built<'_> {
        if let Some(problem) = self.problem() {
            return Built::Problem(problem);
        }
        let Some(parsed) = self.usable() else {
            return Built::Skipped;
        };
        if let Some(resource) = &self.resource {
            return Built::Resource(resource);
        }
        match factory.build(parsed) {
            Ok(scaler) => Built::Scaler(parsed, scaler),
            Err(e) => Built::Problem(self.inputs.scrub(&format!(
                "{} ({}): {e}",
                self.field(),
                self.trigger_type
            ))),
        }
    }

    /// Configuration that works but often surprises, from the trigger's declaration, each
    /// prefixed with `triggers[<index>]: `. Empty when the trigger did not parse.
    pub fn warnings(&self) -> Vec<String> {
        match &self.parsed {
            Ok(parsed) => parsed
                .warnings()
                .into_iter()
                .map(|w| format!("triggers[{}]: {w}", self.index))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A digest of what every trigger's inputs resolved to: auth params, container env, pod identity.
/// Credentials go into it but never out of it (a 64-bit hash, kept instead of the values), so a
/// loop can tell that a Secret rotated without holding the secret twice.
pub fn inputs_digest(compiled: &[CompiledTrigger]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for c in compiled {
        c.index.hash(&mut h);
        c.inputs.auth_params.hash(&mut h);
        c.inputs.env.hash(&mut h);
        format!("{:?}", c.inputs.pod_identity).hash(&mut h);
    }
    h.finish()
}

/// Compiles every trigger of `so`, whose objects are looked up in `namespace` through `source`.
pub async fn compile(source: &dyn ObjectSource, namespace: &str, so: &ScaledObject) -> Vec<CompiledTrigger> {
    let env = EnvSource::Workload(&so.spec.scale_target_ref);
    let compiled = compile_triggers(source, namespace, env, &so.spec.triggers).await;
    named(compiled, so.metadata.name.as_deref())
}

/// Tells every parsed trigger the name of its object (external scalers pass it on).
fn named(mut compiled: Vec<CompiledTrigger>, name: Option<&str>) -> Vec<CompiledTrigger> {
    for parsed in compiled.iter_mut().filter_map(|c| c.parsed.as_mut().ok()) {
        parsed.context.object_name = name.map(str::to_string);
    }
    compiled
}

/// Compiles every trigger of `sj`: `<param>FromEnv` reads the container of its Job template
/// named by `envSourceContainerName` (else the first).
pub async fn compile_scaled_job(
    source: &dyn ObjectSource,
    namespace: &str,
    sj: &ScaledJob,
) -> Vec<CompiledTrigger> {
    let what = format!(
        "ScaledJob {namespace}/{} jobTargetRef.template",
        sj.metadata.name.as_deref().unwrap_or_default()
    );
    let env = EnvSource::Template {
        what: &what,
        template: &sj.spec.job_target_ref.template,
        container: sj.spec.env_source_container_name.as_deref(),
    };
    let compiled = compile_triggers(source, namespace, env, &sj.spec.triggers).await;
    let mut compiled = named(compiled, sj.metadata.name.as_deref());
    for c in &mut compiled {
        if c.resource.take().is_some() {
            c.parsed = Err(TriggerParseError {
                index: c.index,
                trigger_type: c.trigger_type.clone(),
                errors: vec![ParamError::new(
                    "type",
                    format!(
                        "{} is a metric the HPA reads, and a ScaledJob has no HPA: use an event trigger",
                        c.trigger_type
                    ),
                )],
            });
        }
    }
    compiled
}

/// Whether every trigger is one the HPA reads itself (cpu, memory): such an object cannot
/// notice load at zero replicas, so it is always active (KEDA's rule).
pub fn only_resource_triggers(compiled: &[CompiledTrigger]) -> bool {
    !compiled.is_empty()
        && compiled
            .iter()
            .all(|c| kind(&c.trigger_type).is_some_and(|k| k.is_resource()))
}

/// `spec.minReplicaCount` is 0 while every trigger is one the HPA reads itself: nothing could
/// scale the object up from zero (KEDA's webhook refuses this too). The message names the field.
pub fn scale_from_zero_problem(min_replica_count: i32, compiled: &[CompiledTrigger]) -> Option<String> {
    if min_replica_count > 0 || !only_resource_triggers(compiled) {
        return None;
    }
    let mut types: Vec<&str> = compiled.iter().map(|c| c.trigger_type.as_str()).collect();
    types.dedup();
    Some(format!(
        "spec.minReplicaCount: is {min_replica_count}, but every trigger is {} (read by the HPA from the metrics server), which cannot scale up from zero replicas: set minReplicaCount to 1 or more, or add an event trigger",
        types.join("/")
    ))
}

/// Compiles `triggers`, whose objects are looked up in `namespace` through `source` and whose
/// container env comes from `env`.
pub async fn compile_triggers(
    source: &dyn ObjectSource,
    namespace: &str,
    env: EnvSource<'_>,
    triggers: &[Trigger],
) -> Vec<CompiledTrigger> {
    let mut out = Vec::with_capacity(triggers.len());
    for (index, trigger) in triggers.iter().enumerate() {
        let inputs = resolve(source, namespace, env, trigger).await;
        let mut compiled = compile_one(index, trigger, inputs);
        if let Ok(parsed) = &mut compiled.parsed {
            parsed.context.namespace = Some(namespace.to_string());
        }
        out.push(compiled);
    }
    out
}

/// Parses one trigger from its resolved inputs and marks the parameters that came from a Secret.
pub fn compile_one(index: usize, trigger: &Trigger, inputs: ResolvedInputs) -> CompiledTrigger {
    let mut resource = None;
    let parsed = ebb_scalers::parse_trigger(
        index,
        &trigger.type_,
        &trigger.metadata,
        inputs.auth_params.as_ref(),
        inputs.env.as_ref(),
    )
    .map(|mut parsed| {
        for name in inputs.sensitive_params(trigger) {
            parsed.params.mark_secret(&name);
        }
        // Only an explicit `podIdentity.provider: aws` lets an AWS trigger use ebb's own identity.
        parsed.context.aws_pod_identity = inputs.pod_identity == Some(PodIdentityProvider::Aws);
        parsed
    })
    .and_then(|parsed| match kind_rules(trigger, &parsed) {
        Ok(metric) => {
            resource = metric;
            Ok(parsed)
        }
        Err(errors) => Err(TriggerParseError {
            index,
            trigger_type: trigger.type_.clone(),
            errors,
        }),
    });
    CompiledTrigger {
        index,
        trigger_type: trigger.type_.clone(),
        metric_type: trigger.metric_type.external().unwrap_or_default(),
        resource,
        use_cached_metrics: trigger.use_cached_metrics,
        inputs,
        parsed,
    }
}

/// The rules of the trigger's kind beyond its parameters: `metricType` (Utilization only for a
/// kind the HPA reads itself), `useCachedMetrics` (refused where the kind refuses it), and a
/// resource kind's HPA metric.
fn kind_rules(trigger: &Trigger, parsed: &ParsedTrigger) -> Result<Option<ResourceMetric>, Vec<ParamError>> {
    let mut errors = Vec::new();
    if trigger.use_cached_metrics && kind(&trigger.type_).is_some_and(|k| !k.cached_metrics) {
        errors.push(ParamError::new(
            "useCachedMetrics",
            format!("not supported for {} triggers", trigger.type_),
        ));
    }
    let target = match trigger.metric_type {
        TriggerMetricType::AverageValue => TargetType::AverageValue,
        TriggerMetricType::Value => TargetType::Value,
        TriggerMetricType::Utilization => TargetType::Utilization,
    };
    let metric = match parsed.resource_metric(target) {
        Some(Ok(metric)) => Some(metric),
        Some(Err(problems)) => {
            errors.extend(problems);
            None
        }
        None if trigger.metric_type == TriggerMetricType::Utilization => {
            errors.push(ParamError::new(
                "metricType",
                "Utilization is only for cpu and memory triggers: use AverageValue or Value",
            ));
            None
        }
        None => None,
    };
    if errors.is_empty() {
        Ok(metric)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::validate::{BundleObjects, read_documents};

    fn compiled(yaml: &str) -> Vec<CompiledTrigger> {
        let docs = read_documents("t.yaml", yaml).unwrap();
        let bundle = BundleObjects::from_documents(&docs);
        let so: ScaledObject = serde_json::from_value(docs[0].value.clone()).unwrap();
        futures::executor::block_on(compile(&bundle, "default", &so))
    }

    fn rabbit(metadata: &str) -> String {
        format!(
            r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {{name: x}}
spec:
  scaleTargetRef: {{name: w}}
  triggers:
  - type: rabbitmq
    metadata: {metadata}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: w}}
spec:
  template:
    spec:
      containers:
      - name: c
        env:
        - {{name: X, value: "amqp://h/"}}
"#
        )
    }

    #[test]
    fn amqp_queue_length_is_warned_about() {
        let warnings = |metadata: &str| {
            let t = compiled(&rabbit(metadata));
            assert!(t[0].problem().is_none(), "{:?}", t[0].problem());
            t[0].warnings()
        };
        let w = warnings(r#"{host: "amqp://h/", queueName: q}"#);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("triggers[0]: "), "{w:?}");
        assert!(warnings(r#"{host: "http://h/", queueName: q}"#).is_empty());
        assert!(warnings(r#"{host: "amqp://h/", protocol: http, queueName: q}"#).is_empty());
        assert_eq!(
            warnings(r#"{hostFromEnv: X, protocol: amqp, queueName: q}"#).len(),
            1
        );
    }

    #[test]
    fn problems_name_the_trigger_and_hide_secrets() {
        let yaml = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: w}
  triggers:
  - type: metrics-api
    metadata: {url: "http://s/", valueLocation: v, targetValue: "-1"}
  - type: nope
    metadata: {}
"#;
        let t = compiled(yaml);
        assert!(t[0].usable().is_none());
        let p0 = t[0].problem().unwrap();
        assert!(
            p0.starts_with("spec.triggers[0] (metrics-api): targetValue"),
            "{p0}"
        );
        assert!(
            t[1].problem()
                .unwrap()
                .starts_with("spec.triggers[1] (nope): type")
        );
        let ok = compiled(&yaml.replace("\"-1\"", "\"5\""));
        let parsed = ok[0].usable().expect("parses");
        assert_eq!(parsed.metric_name, "s0-metrics-api-v");
        assert_eq!(parsed.thresholds.target, 5.0);
    }

    #[test]
    fn the_pod_identity_and_the_namespace_reach_the_scaler() {
        let yaml = |provider: &str| {
            format!(
                r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {{name: x}}
spec:
  scaleTargetRef: {{name: w}}
  triggers:
  - type: aws-sqs-queue
    metadata: {{queueURL: q, awsRegion: eu-west-1}}
    authenticationRef: {{name: aws}}
---
apiVersion: ebb.dev/v1alpha1
kind: TriggerAuthentication
metadata: {{name: aws}}
spec:
  podIdentity: {{provider: {provider}}}
"#
            )
        };
        let with = compiled(&yaml("aws"));
        let parsed = with[0].usable().expect("parses");
        assert!(parsed.context.aws_pod_identity);
        assert_eq!(parsed.context.namespace.as_deref(), Some("default"));
        assert_eq!(parsed.context.object_name.as_deref(), Some("x"));
        let without = compiled(&yaml("none"));
        assert!(!without[0].usable().expect("parses").context.aws_pod_identity);
    }

    fn object(triggers: &str, extra: &str) -> String {
        format!(
            r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {{name: x}}
spec:
  scaleTargetRef: {{name: w}}
  {extra}
  triggers: {triggers}
"#
        )
    }

    #[test]
    fn cpu_and_memory_compile_to_hpa_metrics_not_scalers() {
        let t = compiled(&object(
            r#"[{type: cpu, metricType: Utilization, metadata: {value: "60"}},
                {type: memory, metadata: {value: 512Mi, containerName: app}},
                {type: memory, metadata: {type: Utilization, value: "70"}}]"#,
            "minReplicaCount: 1",
        ));
        let factory = ScalerFactory::default();
        let targets: Vec<ResourceTarget> = t
            .iter()
            .map(|c| match c.build(&factory) {
                Built::Resource(m) => m.target.clone(),
                _ => panic!("{:?}", c.problem()),
            })
            .collect();
        use ebb_scalers::resource_metric::ResourceTarget;
        assert_eq!(
            targets,
            [
                ResourceTarget::Utilization(60),
                ResourceTarget::AverageValue("512Mi".into()),
                ResourceTarget::Utilization(70)
            ]
        );
        assert_eq!(t[1].resource.as_ref().unwrap().container.as_deref(), Some("app"));
        assert!(only_resource_triggers(&t));
        assert_eq!(scale_from_zero_problem(1, &t), None);
    }

    #[test]
    fn kind_rules_name_the_field() {
        let problem = |triggers: &str| {
            let t = compiled(&object(triggers, "minReplicaCount: 1"));
            t[0].problem().unwrap_or_default()
        };
        let p = problem(
            r#"[{type: metrics-api, metricType: Utilization, metadata: {url: "http://s/", valueLocation: v, targetValue: "5"}}]"#,
        );
        assert!(
            p.starts_with("spec.triggers[0] (metrics-api): metricType: Utilization is only"),
            "{p}"
        );
        let p = problem(r#"[{type: cpu, metricType: Value, metadata: {value: "60"}}]"#);
        assert!(
            p.contains("metricType: cpu supports Utilization or AverageValue"),
            "{p}"
        );
        let p = problem(r#"[{type: cpu, metricType: Utilization, metadata: {value: "1.5"}}]"#);
        assert!(p.contains("value: \"1.5\" is not a whole percentage"), "{p}");
        for ty in ["cpu", "cron"] {
            let p = problem(&format!(
                r#"[{{type: {ty}, useCachedMetrics: true, metadata: {{value: "60", timezone: UTC, start: "0 8 * * *", end: "0 9 * * *", desiredReplicas: "2"}}}}]"#
            ));
            assert!(p.contains("useCachedMetrics: not supported for"), "{ty}: {p}");
        }
        assert_eq!(
            problem(
                r#"[{type: cron, metadata: {timezone: UTC, start: "0 8 * * *", end: "0 9 * * *", desiredReplicas: "2"}}]"#
            ),
            ""
        );
    }

    #[test]
    fn only_cpu_and_memory_at_min_zero_is_refused_naming_the_field() {
        for extra in ["", "minReplicaCount: 0"] {
            let t = compiled(&object(
                r#"[{type: cpu, metricType: Utilization, metadata: {value: "60"}}, {type: memory, metadata: {value: 1Gi}}]"#,
                extra,
            ));
            let p = scale_from_zero_problem(0, &t).unwrap();
            assert!(
                p.starts_with("spec.minReplicaCount: is 0, but every trigger is cpu/memory"),
                "{p}"
            );
        }
        // An event trigger beside it can scale from zero.
        let t = compiled(&object(
            r#"[{type: cpu, metricType: Utilization, metadata: {value: "60"}},
                {type: cron, metadata: {timezone: UTC, start: "0 8 * * *", end: "0 9 * * *", desiredReplicas: "2"}}]"#,
            "",
        ));
        assert!(!only_resource_triggers(&t));
        assert_eq!(scale_from_zero_problem(0, &t), None);
    }

    #[test]
    fn a_scaled_job_refuses_cpu_and_memory() {
        let yaml = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledJob
metadata: {name: j}
spec:
  jobTargetRef:
    template:
      spec:
        containers: [{name: c, image: i}]
        restartPolicy: Never
  triggers:
  - type: memory
    metadata: {value: 1Gi}
"#;
        let docs = read_documents("t.yaml", yaml).unwrap();
        let bundle = BundleObjects::from_documents(&docs);
        let sj: ScaledJob = serde_json::from_value(docs[0].value.clone()).unwrap();
        let t = futures::executor::block_on(compile_scaled_job(&bundle, "default", &sj));
        let p = t[0].problem().unwrap();
        assert!(
            p.contains("type: memory is a metric the HPA reads, and a ScaledJob has no HPA"),
            "{p}"
        );
        assert!(t[0].resource.is_none());
    }
}
