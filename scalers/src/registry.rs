//! Trigger type → scaler declaration, and parsing a trigger by its type.

use std::collections::BTreeMap;

use crate::metric_name::metric_name;
use crate::params::{ParamError, ParsedParams, ScalerDecl, TriggerInput, TriggerParseError, parse};
use crate::{aws_sqs, kafka, metrics_api, nats_jetstream, rabbitmq};

static DECLS: &[&ScalerDecl] = &[
    &kafka::DECL,
    &rabbitmq::DECL,
    &nats_jetstream::DECL,
    &aws_sqs::DECL,
    &metrics_api::DECL,
];

/// The declaration of a trigger type, if ebb supports it.
pub fn declaration(trigger_type: &str) -> Option<&'static ScalerDecl> {
    DECLS.iter().copied().find(|d| d.trigger_type == trigger_type)
}

/// The trigger types ebb supports.
pub fn supported_types() -> impl Iterator<Item = &'static str> {
    DECLS.iter().map(|d| d.trigger_type)
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
}

impl ParsedTrigger {
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
            ty in prop::sample::select(vec!["kafka", "rabbitmq", "nats-jetstream", "aws-sqs-queue", "metrics-api", "x"]),
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
            ty in prop::sample::select(vec!["kafka", "rabbitmq", "nats-jetstream", "aws-sqs-queue", "metrics-api"]),
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
