//! The `external` and `external-push` triggers: KEDA's external scaler protocol
//! (`externalscaler.proto`) over gRPC, with ebb as the client of a server the user runs.
//!
//! This file holds both declarations ([`DECL`], [`PUSH_DECL`]: the same parameters) and their
//! `build`s; [`config`] reads the parsed parameters into an [`ExternalConfig`], [`client`] holds the
//! shared channels ([`ExternalClients`]: one per server address and TLS settings), [`scaler`] is
//! the [`Scaler`](crate::Scaler) itself, [`push`] the `external-push` activity stream, and
//! [`proto`] the generated protocol.

pub mod client;
pub mod config;
pub mod proto;
pub mod push;
pub mod scaler;

pub use client::{ExternalClients, GrpcServer};
pub use config::{ExternalConfig, ScalerAddress};
pub use scaler::ExternalScaler;

use std::sync::Arc;

use crate::params::{AUTH, DeclDocs, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds};

/// Every parameter of both external triggers (every other metadata key is passed on).
pub static PARAMS: &[Param] = &[
    Param::string("scalerAddress").required().doc(
        "The external scaler's gRPC address: `host:port` (also `dns:///host:port`; without a port, 443).",
    ),
    Param::bool("enableTLS")
        .default("false")
        .doc("Dial the server over TLS (also implied by `caCert` or a client certificate)."),
    Param::bool("unsafeSsl")
        .default("false")
        .doc("Over TLS, accept any server certificate without verifying it."),
    Param::string("caCert")
        .from(AUTH)
        .doc("PEM CA certificates trusted besides the system's roots; implies TLS."),
    Param::string("tlsClientCert")
        .from(AUTH)
        .doc("PEM client certificate presented to the server; implies TLS."),
    Param::string("tlsClientKey")
        .from(AUTH)
        .secret()
        .doc("The unencrypted PEM private key of `tlsClientCert`."),
];

static RULES: &[Rule] = &[
    Rule::Together(&["tlsClientCert", "tlsClientKey"]),
    Rule::PassMetadata,
];

const CHECKS: &[&str] =
    &["`scalerAddress` must be `host:port`, `[ipv6]:port` or `host`, optionally after `dns:///`."];

const EXAMPLE: &[(&str, &str)] = &[
    ("scalerAddress", "queue-scaler.shop.svc:9090"),
    ("queue", "orders"),
    ("targetSize", "10"),
];

const DIFFERENCES_COMMON: [&str; 4] = [
    "The HPA gets one metric per trigger, `s<index>-<type>-<host>`, against a target of 1: its value is the largest value/target ratio over the metrics `GetMetricSpec` names (which gives the replicas KEDA's one HPA metric per spec gives); KEDA names them `s<index>-<metricName>`.",
    "`GetMetricSpec` is asked on every poll (KEDA asks when it builds the HPA); at most 16 metrics, and a metric whose target is not positive, or an answer without a value, is an error rather than a 0.",
    "`tlsClientCert` without `tlsClientKey` (or the reverse) is an error; KEDA ignores the half pair.",
    "A `<key>FromEnv` key naming a variable the container does not set is an error; KEDA leaves the key out. At most 100 metadata keys and 64 KiB are passed on.",
];

/// The `external` trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "external",
    params: PARAMS,
    rules: RULES,
    check,
    metric_detail: |p| metric_detail("external", p),
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "Scales on the metrics and activity of an external scaler, a gRPC server speaking KEDA's externalscaler.proto (IsActive, GetMetricSpec, GetMetrics), polled.",
        checks: CHECKS,
        example_metadata: EXAMPLE,
        example_auth: &[],
        keda_differences: &DIFFERENCES_COMMON,
    },
};

/// The `external-push` trigger's declaration.
pub static PUSH_DECL: ScalerDecl = ScalerDecl {
    trigger_type: "external-push",
    params: PARAMS,
    rules: RULES,
    check,
    metric_detail: |p| metric_detail("external-push", p),
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "As `external`, and also keeps KEDA's StreamIsActive stream open: a change of activity the server pushes makes ebb poll the trigger at once (a push of true wakes an object at zero within a second).",
        checks: CHECKS,
        example_metadata: EXAMPLE,
        example_auth: &[],
        keda_differences: &[
            DIFFERENCES_COMMON[0],
            DIFFERENCES_COMMON[1],
            DIFFERENCES_COMMON[2],
            DIFFERENCES_COMMON[3],
            "A pushed `true` makes ebb poll at once, and the trigger counts as active while the stream's latest message says so, whatever IsActive answers; KEDA scales on the pushed value itself. A stream that ends or fails is opened again after 0.5 s, doubling to 30 s (KEDA: 2 s to 1 min).",
        ],
    },
};

fn check(p: &ParsedParams) -> Vec<ParamError> {
    match p.str("scalerAddress").map(ScalerAddress::parse) {
        Some(Err(e)) => vec![ParamError::new("scalerAddress", e.to_string())],
        _ => Vec::new(),
    }
}

fn thresholds(_: &ParsedParams) -> Thresholds {
    Thresholds {
        target: 1.0,
        activation: 0.0,
    }
}

fn metric_detail(trigger_type: &str, p: &ParsedParams) -> String {
    match p.str("scalerAddress").map(ScalerAddress::parse) {
        Some(Ok(address)) => format!("{trigger_type}-{}", address.host),
        _ => trigger_type.to_string(),
    }
}

fn clients(factory: &crate::ScalerFactory) -> Arc<ExternalClients> {
    factory.shared(|o| ExternalClients::new(o.http_timeout))
}

fn build_either(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
    push: bool,
) -> Result<Arc<dyn crate::Scaler>, crate::ScalerError> {
    let config = ExternalConfig::try_from(&trigger.params)?;
    let server = clients(factory).server(&config)?;
    Ok(Arc::new(ExternalScaler::new(
        trigger.decl.trigger_type,
        server,
        &config,
        trigger.context.object_name.as_deref().unwrap_or_default(),
        trigger.context.namespace.as_deref().unwrap_or_default(),
        push,
    )))
}

/// Builds an `external` scaler on the factory's shared channels (see [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<Arc<dyn crate::Scaler>, crate::ScalerError> {
    build_either(factory, trigger, false)
}

/// Builds an `external-push` scaler on the factory's shared channels (see [`crate::registry`]).
pub fn build_push(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<Arc<dyn crate::Scaler>, crate::ScalerError> {
    build_either(factory, trigger, true)
}

#[cfg(test)]
mod tests;
