//! The registry of scaler kinds: one static list of every trigger type ebb supports, each with
//! its declaration (parameters, rules, warnings) and its `build`; and parsing a trigger by its
//! type.
//!
//! Adding a scaler is its folder (`src/<scaler>/`: the declaration, the typed config, the client
//! and a `build` at the end of its `mod.rs`) plus one line in [`KINDS`]. A kind has one of two
//! shapes ([`Shape`]): *polled* (`build` makes a [`Scaler`] that ebb samples and serves as an
//! External metric) or *resource* (a [`ResourceFn`] makes the HPA's Resource or
//! ContainerResource metric; ebb never samples it, and it never counts for activity).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::factory::ScalerFactory;
use crate::metric_name::metric_name;
use crate::params::{ParamError, ParsedParams, ScalerDecl, TriggerInput, TriggerParseError, parse};
use crate::resource_metric::{ResourceFn, ResourceMetric, TargetType};
use crate::{Scaler, ScalerError};
use crate::{
    aws_sqs, cpu_memory, cron, external, kafka, metrics_api, nats_jetstream, postgresql, prometheus,
    rabbitmq, redis,
};

/// Builds one trigger's scaler, taking its shared clients from the factory
/// ([`ScalerFactory::shared`]). Needs no async runtime.
pub type BuildFn = fn(&ScalerFactory, &ParsedTrigger) -> Result<Arc<dyn Scaler>, ScalerError>;

/// One supported trigger type.
#[derive(Debug)]
pub struct ScalerKind {
    /// Its parameters, rules, thresholds and warnings.
    pub declaration: &'static ScalerDecl,
    /// What ebb does with its triggers.
    pub shape: Shape,
    /// Whether `useCachedMetrics` may be set on its triggers (not for kinds the HPA reads
    /// itself, nor for those whose value is cheap and exact at every request, as KEDA).
    pub cached_metrics: bool,
}

/// What ebb does with a kind's triggers.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// ebb builds a [`Scaler`], polls (or watches) it, and serves it to the HPA as an External
    /// metric.
    Polled(BuildFn),
    /// The HPA reads the metric itself (a Resource or ContainerResource metric from the metrics
    /// server): ebb only writes it into the HPA. Such triggers never count for activity, and an
    /// object whose triggers are all of this shape is always active.
    Resource(ResourceFn),
}

impl ScalerKind {
    /// A trigger type whose scaler ebb polls (or watches) and serves to the HPA as an external
    /// metric.
    pub const fn polled(declaration: &'static ScalerDecl, build: BuildFn) -> Self {
        Self {
            declaration,
            shape: Shape::Polled(build),
            cached_metrics: true,
        }
    }

    /// The same kind, refusing `useCachedMetrics` (KEDA refuses it for cron, cpu and memory).
    pub const fn without_cached_metrics(mut self) -> Self {
        self.cached_metrics = false;
        self
    }

    /// A trigger type the HPA reads itself: `metric` makes its HPA metric from the parsed
    /// parameters and the trigger's `metricType`.
    pub const fn resource(declaration: &'static ScalerDecl, metric: ResourceFn) -> Self {
        Self {
            declaration,
            shape: Shape::Resource(metric),
            cached_metrics: false,
        }
    }

    /// Whether the HPA reads this kind's metric itself (ebb never polls it).
    pub fn is_resource(&self) -> bool {
        matches!(self.shape, Shape::Resource(_))
    }
}

/// Every trigger type ebb supports, in the order error messages list them.
pub static KINDS: &[ScalerKind] = &[
    ScalerKind::polled(&kafka::DECL, kafka::build),
    ScalerKind::polled(&rabbitmq::DECL, rabbitmq::build),
    ScalerKind::polled(&nats_jetstream::DECL, nats_jetstream::build),
    ScalerKind::polled(&aws_sqs::DECL, aws_sqs::build),
    ScalerKind::polled(&metrics_api::DECL, metrics_api::build),
    ScalerKind::polled(&redis::DECL, redis::build),
    ScalerKind::polled(&redis::STREAMS_DECL, redis::build_streams),
    ScalerKind::polled(&postgresql::DECL, postgresql::build),
    ScalerKind::polled(&prometheus::DECL, prometheus::build),
    ScalerKind::polled(&cron::DECL, cron::build).without_cached_metrics(),
    ScalerKind::resource(&cpu_memory::CPU_DECL, cpu_memory::cpu),
    ScalerKind::resource(&cpu_memory::MEMORY_DECL, cpu_memory::memory),
    ScalerKind::polled(&external::DECL, external::build),
    ScalerKind::polled(&external::PUSH_DECL, external::build_push),
];

/// The registered kind of a trigger type, if ebb supports it.
pub fn kind(trigger_type: &str) -> Option<&'static ScalerKind> {
    KINDS.iter().find(|k| k.declaration.trigger_type == trigger_type)
}

/// The declaration of a trigger type, if ebb supports it.
pub fn declaration(trigger_type: &str) -> Option<&'static ScalerDecl> {
    kind(trigger_type).map(|k| k.declaration)
}

/// The trigger types ebb supports.
pub fn supported_types() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|k| k.declaration.trigger_type)
}

/// A trigger parsed by its declaration.
#[derive(Debug, Clone)]
pub struct ParsedTrigger {
    /// Its declaration.
    pub decl: &'static ScalerDecl,
    /// Its typed parameters.
    pub params: ParsedParams,
    /// The external metric name the HPA uses for it.
    pub metric_name: String,
    /// Its HPA target and activation threshold.
    pub thresholds: crate::params::Thresholds,
    /// What the operator knows about the trigger beyond its parameters (empty offline).
    pub context: TriggerContext,
}

/// What a trigger's scaler needs to know about its object beyond the parameters: set by the
/// operator after [`parse_trigger`], empty (the default) offline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerContext {
    /// The ScaledObject's namespace: per-namespace limits (metrics-api) count against it.
    pub namespace: Option<String>,
    /// The ScaledObject's (or ScaledJob's) name, which external scalers are told.
    pub object_name: Option<String>,
    /// The trigger's authentication sets `podIdentity.provider: aws`: only then may an AWS
    /// trigger without keys use the operator's own (ambient) AWS credentials.
    pub aws_pod_identity: bool,
}

impl ParsedTrigger {
    /// For a trigger of a resource kind ([`Shape::Resource`]): its HPA metric for the trigger's
    /// `metricType`, or every problem. `None` for polled kinds.
    pub fn resource_metric(
        &self,
        metric_type: TargetType,
    ) -> Option<Result<ResourceMetric, Vec<ParamError>>> {
        match kind(self.decl.trigger_type)?.shape {
            Shape::Resource(metric) => Some(metric(&self.params, metric_type)),
            Shape::Polled(_) => None,
        }
    }

    /// Configuration that works but often surprises (e.g. rabbitmq over AMQP counts ready
    /// messages only), from the trigger's declaration.
    pub fn warnings(&self) -> Vec<String> {
        (self.decl.warnings)(&self.params)
    }
}

/// Parses trigger `index` of type `trigger_type`. Unknown types are an error naming the supported ones.
pub fn parse_trigger(
    index: usize,
    trigger_type: &str,
    metadata: &BTreeMap<String, String>,
    auth_params: Option<&BTreeMap<String, String>>,
    resolved_env: Option<&BTreeMap<String, String>>,
) -> Result<ParsedTrigger, TriggerParseError> {
    let fail = |errors| TriggerParseError {
        index,
        trigger_type: trigger_type.to_string(),
        errors,
    };
    let Some(decl) = declaration(trigger_type) else {
        let known = supported_types().collect::<Vec<_>>().join(", ");
        return Err(fail(vec![ParamError::new(
            "type",
            format!("unknown trigger type {trigger_type:?}; ebb supports {known}"),
        )]));
    };
    let params = parse(
        decl,
        &TriggerInput {
            metadata,
            auth_params,
            resolved_env,
        },
    )
    .map_err(fail)?;
    let metric_name = metric_name(index, &(decl.metric_detail)(&params));
    let thresholds = (decl.thresholds)(&params);
    Ok(ParsedTrigger {
        decl,
        params,
        metric_name,
        thresholds,
        context: TriggerContext::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unknown_type_names_the_supported_ones() {
        let e = parse_trigger(3, "kafak", &BTreeMap::new(), Some(&BTreeMap::new()), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("triggers[3] (kafak): type: unknown trigger type"),
            "{text}"
        );
        assert!(text.contains("kafka") && text.contains("aws-sqs-queue"));
    }

    #[test]
    fn kinds_are_unique_and_found_by_type() {
        let types: Vec<&str> = supported_types().collect();
        assert_eq!(
            types,
            [
                "kafka",
                "rabbitmq",
                "nats-jetstream",
                "aws-sqs-queue",
                "metrics-api",
                "redis",
                "redis-streams",
                "postgresql",
                "prometheus",
                "cron",
                "cpu",
                "memory",
                "external",
                "external-push"
            ]
        );
        for ty in &types {
            assert_eq!(types.iter().filter(|t| *t == ty).count(), 1, "{ty}");
            assert_eq!(kind(ty).map(|k| k.declaration.trigger_type), Some(*ty));
        }
        assert!(kind("kafak").is_none() && declaration("kafak").is_none());
    }

    #[test]
    fn every_type_and_parameter_is_described_and_the_examples_parse() {
        for kind in KINDS {
            let decl = kind.declaration;
            let ty = decl.trigger_type;
            assert!(!decl.docs.summary.trim().is_empty(), "{ty}: no summary");
            for p in decl.params {
                let doc = p.doc.trim();
                assert!(!doc.is_empty(), "{ty}: parameter {} has no description", p.name);
                assert!(!doc.contains('\n'), "{ty}: {}: a description is one line", p.name);
            }
            let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            assert!(!decl.docs.example_metadata.is_empty(), "{ty}: no example");
            let (meta, auth) = (map(decl.docs.example_metadata), map(decl.docs.example_auth));
            let parsed = parse_trigger(0, ty, &meta, Some(&auth), Some(&BTreeMap::new()))
                .unwrap_or_else(|e| panic!("{ty}: the example does not parse: {e}"));
            assert!(
                parsed.params.warnings.is_empty(),
                "{ty}: {:?}",
                parsed.params.warnings
            );
            for (name, _) in decl.docs.example_auth {
                let from = decl.param(name).map(|p| p.from).unwrap_or_default();
                assert!(
                    from.contains(&crate::params::Source::AuthParams),
                    "{ty}: {name} is not an auth param"
                );
            }
        }
    }

    #[test]
    fn metric_names_carry_the_index() {
        let meta: BTreeMap<String, String> = [
            ("bootstrapServers", "b:9092"),
            ("consumerGroup", "g"),
            ("topic", "Orders"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let t = parse_trigger(1, "kafka", &meta, Some(&BTreeMap::new()), None).unwrap();
        assert_eq!(t.metric_name, "s1-kafka-orders");
    }

    proptest! {
        // Arbitrary metadata never panics the parser, for any type, and errors always name the trigger.
        #[test]
        fn arbitrary_metadata_never_panics(
            ty in prop::sample::select(vec!["kafka", "rabbitmq", "nats-jetstream", "aws-sqs-queue", "metrics-api", "redis", "redis-streams", "postgresql", "prometheus", "cron", "cpu", "memory", "external", "external-push", "x"]),
            meta in prop::collection::btree_map("[a-zA-Z]{1,24}", ".{0,40}", 0..12),
            auth in prop::collection::btree_map("[a-zA-Z]{1,24}", ".{0,40}", 0..4),
        ) {
            match parse_trigger(0, ty, &meta, Some(&auth), Some(&BTreeMap::new())) {
                Ok(t) => prop_assert!(t.metric_name.starts_with("s0-")),
                Err(e) => {
                    let prefix = format!("triggers[0] ({}):", ty);
                    prop_assert!(e.to_string().starts_with(&prefix));
                }
            }
        }

        // Known keys with arbitrary values: still no panic.
        #[test]
        fn arbitrary_values_for_known_keys(
            ty in prop::sample::select(vec!["kafka", "rabbitmq", "nats-jetstream", "aws-sqs-queue", "metrics-api", "redis", "redis-streams", "postgresql", "prometheus", "cron", "cpu", "memory", "external", "external-push"]),
            values in prop::collection::vec(".{0,30}", 30),
        ) {
            let decl = declaration(ty).unwrap();
            let meta: BTreeMap<String, String> =
                decl.params.iter().zip(values).map(|(p, v)| (p.name.to_string(), v)).collect();
            let _ = parse_trigger(0, ty, &meta, Some(&meta), None);
            let _ = parse_trigger(0, ty, &meta, None, None);
        }
    }
}
