//! The `metrics-api` trigger: a number read from a JSON document served over HTTP.
//!
//! This file is the declaration ([`DECL`]); [`config`] turns the parsed parameters into a
//! [`MetricsApiConfig`], [`client`] holds the shared HTTP side ([`MetricsApiClient`], [`Endpoint`];
//! nats-jetstream uses it too), [`value`] reads the number out of the document, and [`scaler`] is
//! the [`Scaler`](crate::Scaler) itself.

pub mod client;
pub mod config;
pub mod scaler;
pub mod value;

pub use client::{
    Endpoint, MAX_BODY_BYTES, MetricsApiClient, NATS_MAX_BODY_BYTES, NamespaceSlots, PER_NAMESPACE_IN_FLIGHT,
};
pub use config::{ConfigError, ConfigProblem, Format, MetricsApiConfig};
pub use scaler::MetricsApiScaler;
pub use value::{ValueError, lookup, value_at};

use crate::params::{DeclDocs, Param, ParamError, ParsedParams, ScalerDecl, Thresholds};

/// Every parameter of the metrics-api trigger.
pub static PARAMS: &[Param] = &[
    Param::string("url")
        .required()
        .masks_userinfo()
        .doc("The `http://` or `https://` URL of the document; a `user:password@` in it is sent as basic auth."),
    Param::string("valueLocation")
        .required()
        .doc("Dotted path to the value in the JSON document, e.g. `queue.depth` or `items.0.count`: a number, or a string holding a number or a Kubernetes quantity."),
    Param::float("targetValue")
        .required()
        .above(0.0)
        .doc("Target value per replica."),
    Param::float("activationTargetValue")
        .default("0")
        .doc("The trigger is active (scales up from zero) when the value is above this."),
    Param::one_of("format", &["json"])
        .default("json")
        .doc("The document's format: only `json`."),
    Param::bool("unsafeSsl")
        .default("false")
        .doc("Accept any server certificate without verifying it."),
];

/// The metrics-api trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "metrics-api",
    params: PARAMS,
    rules: &[],
    check,
    metric_detail,
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "Scales on a number read from a JSON document served over HTTP.",
        checks: &[
            "`url` must be an `http://` or `https://` URL.",
            "`valueLocation` is a dotted path without empty segments.",
        ],
        example_metadata: &[
            ("url", "http://backlog.shop.svc:8080/stats"),
            ("valueLocation", "queue.depth"),
            ("targetValue", "25"),
        ],
        example_auth: &[],
        keda_differences: &[
            "Only `format: json`: KEDA's `prometheus`, `xml` and `yaml` formats are not supported.",
            "KEDA's `authMode` (API key, basic, bearer, TLS), `aggregateFromKubeServiceEndpoints`, `aggregationType` and `timeout` are not supported; a `user:password@` in `url` is sent as basic auth, and unknown parameters are ignored with a warning.",
            "Answers are read up to 1 MiB, and at most 8 requests per namespace run at once.",
        ],
    },
};

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if let Some(raw) = p.str("url") {
        match url::Url::parse(raw) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => errors.push(ParamError::new("url", "must be an http:// or https:// URL")),
        }
    }
    if let Some(loc) = p.str("valueLocation")
        && loc.split('.').any(str::is_empty)
    {
        errors.push(ParamError::new(
            "valueLocation",
            format!("{loc:?} is not a dotted path like queue.depth"),
        ));
    }
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("targetValue").unwrap_or(1.0),
        activation: p.float("activationTargetValue").unwrap_or(0.0),
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    format!("metrics-api-{}", p.str("valueLocation").unwrap_or("value"))
}

/// The factory's one HTTP client for metrics-api triggers and NATS monitoring requests, created
/// on first use with the factory's HTTP timeout.
pub fn shared_client(
    factory: &crate::ScalerFactory,
) -> Result<std::sync::Arc<MetricsApiClient>, crate::ScalerError> {
    let client = factory.shared(|o| MetricsApiClient::new(o.http_timeout).map(std::sync::Arc::new));
    Result::clone(&client)
}

/// Builds a metrics-api scaler on the factory's shared HTTP client (see [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    Ok(std::sync::Arc::new(scaler::MetricsApiScaler::new(
        shared_client(factory)?,
        &trigger.params,
        trigger.thresholds,
        trigger.context.namespace.as_deref().unwrap_or_default(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_meta;

    #[test]
    fn parses_and_validates() {
        let ok = [
            ("url", "http://127.0.0.1:8080/q"),
            ("valueLocation", "queue.depth"),
            ("targetValue", "5"),
        ];
        let p = parse_meta(&DECL, &ok).unwrap();
        assert_eq!(p.float("targetValue"), Some(5.0));
        assert_eq!(p.float("activationTargetValue"), Some(0.0));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("url", "ftp://x"), ("valueLocation", "a"), ("targetValue", "1")],
                "url",
            ),
            (
                &[
                    ("url", "http://x"),
                    ("valueLocation", "a..b"),
                    ("targetValue", "1"),
                ],
                "valueLocation",
            ),
            (
                &[("url", "http://x"), ("valueLocation", "a"), ("targetValue", "0")],
                "targetValue",
            ),
            (
                &[
                    ("url", "http://x"),
                    ("valueLocation", "a"),
                    ("targetValue", "1"),
                    ("format", "xml"),
                ],
                "format",
            ),
        ];
        for (meta, param) in cases {
            assert_eq!(parse_meta(&DECL, meta).unwrap_err()[0].param, *param);
        }
    }
}
