//! The `nats-jetstream` trigger: a consumer's pending plus unacknowledged messages.
//!
//! Two ways to read the consumer, chosen by which parameters are set (at least one of the two):
//! - `natsServerMonitoringEndpoint` (KEDA's way): the monitoring port's `/jsz`, with the consumer's
//!   leader found and cached in a cluster. Needs `account` or `accountID`.
//! - `natsServerURL` (ebb's addition, e.g. `nats://user:password@nats:4222`): the JetStream API's
//!   consumer info over the client port, which asks the consumer's leader for this one consumer
//!   instead of the whole account. The account is the one of the connection's credentials, so
//!   `account`/`accountID` are not needed. Wins when both are set.

pub mod scaler;

use crate::params::{META, META_AUTH, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds};

/// Every parameter of the nats-jetstream trigger.
pub static PARAMS: &[Param] = &[
    Param::string("natsServerMonitoringEndpoint").from(META_AUTH),
    Param::string("natsServerURL").from(META_AUTH).masks_userinfo(),
    Param::string("account").from(META_AUTH),
    Param::string("accountID").from(META_AUTH),
    Param::string("stream").required().from(META),
    Param::string("consumer").required().from(META),
    Param::int("lagThreshold").default("10").above(0.0),
    Param::int("activationLagThreshold").default("0").min(0.0),
    Param::bool("useHttps").default("false"),
];

/// The nats-jetstream trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "nats-jetstream",
    params: PARAMS,
    rules: &[Rule::AnyOf(&["natsServerMonitoringEndpoint", "natsServerURL"])],
    check,
    metric_detail,
    thresholds,
    warnings: crate::params::no_warnings,
};

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    // The account only matters for `/jsz`; the JetStream API path uses the connection's account.
    if p.get("natsServerMonitoringEndpoint").is_some()
        && p.get("natsServerURL").is_none()
        && p.get("account").is_none()
        && p.get("accountID").is_none()
    {
        errors.push(ParamError::new(
            "account, accountID",
            "one of these is required with natsServerMonitoringEndpoint",
        ));
    }
    if let Some(url) = p.str("natsServerURL") {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "nats" | "tls") && u.host_str().is_some_and(|h| !h.is_empty()) => {}
            // Not quoted: `user:password@host` parses with `user` as the scheme, so the credentials
            // could not be masked reliably.
            _ => errors.push(ParamError::new(
                "natsServerURL",
                "must be a NATS client URL like nats://host:4222 or tls://host:4222 \
                 (credentials as nats://user:password@host:4222 or nats://token@host:4222)",
            )),
        }
    }
    if let Some(endpoint) = p.str("natsServerMonitoringEndpoint")
        && (endpoint.contains("://") || endpoint.contains('/'))
    {
        errors.push(ParamError::new(
            "natsServerMonitoringEndpoint",
            "must be host:port of the monitoring port, without scheme or path (set useHttps for https)",
        ));
    }
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("lagThreshold").unwrap_or(1.0),
        activation: p.float("activationLagThreshold").unwrap_or(0.0),
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    format!("nats-jetstream-{}", p.str("stream").unwrap_or("stream"))
}

/// Builds a nats-jetstream scaler on the factory's shared NATS connections, whose monitoring
/// requests go through the metrics-api HTTP client shared with the metrics-api triggers (see
/// [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    use crate::metrics_api::scaler::MetricsApiClient;
    use std::sync::Arc;
    let http = factory.shared(|o| MetricsApiClient::new(o.http_timeout).map(Arc::new));
    let http = Result::clone(&http)?;
    let clients = factory.shared(|o| scaler::NatsJetStreamClients::new(http, o.http_timeout));
    Ok(Arc::new(scaler::NatsJetStreamScaler::new(
        clients,
        &trigger.params,
        trigger.thresholds,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_meta;

    #[test]
    fn parses_and_validates() {
        let ok = [
            ("natsServerMonitoringEndpoint", "nats:8222"),
            ("account", "$G"),
            ("stream", "S"),
            ("consumer", "c"),
        ];
        let p = parse_meta(&DECL, &ok).unwrap();
        assert_eq!(p.int("lagThreshold"), Some(10));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("stream", "S"),
                    ("consumer", "c"),
                ],
                "account, accountID",
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "http://n:8222"),
                    ("account", "a"),
                    ("stream", "S"),
                    ("consumer", "c"),
                ],
                "natsServerMonitoringEndpoint",
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("account", "a"),
                    ("consumer", "c"),
                ],
                "stream",
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("account", "a"),
                    ("stream", "S"),
                    ("consumer", "c"),
                    ("lagThreshold", "0"),
                ],
                "lagThreshold",
            ),
        ];
        for (meta, param) in cases {
            assert_eq!(parse_meta(&DECL, meta).unwrap_err()[0].param, *param, "{meta:?}");
        }
    }

    #[test]
    fn the_client_url_is_an_alternative_to_the_monitoring_endpoint() {
        // The JetStream API path needs no account: the connection's credentials decide it.
        let p = parse_meta(
            &DECL,
            &[
                ("natsServerURL", "nats://u:hunter2@nats:4222"),
                ("stream", "S"),
                ("consumer", "c"),
            ],
        )
        .unwrap();
        assert_eq!(p.str("natsServerURL"), Some("nats://u:hunter2@nats:4222"));
        let json = p.redacted_json().to_string();
        assert!(!json.contains("hunter2"), "{json}");

        let neither = parse_meta(&DECL, &[("account", "a"), ("stream", "S"), ("consumer", "c")]).unwrap_err();
        assert_eq!(neither[0].param, "natsServerMonitoringEndpoint, natsServerURL");

        for bad in [
            "http://nats:4222",
            "u:hunter2@nats:4222",
            "nats://",
            "nats//u:hunter2@h",
        ] {
            let errors = parse_meta(
                &DECL,
                &[("natsServerURL", bad), ("stream", "S"), ("consumer", "c")],
            )
            .unwrap_err();
            assert_eq!(errors[0].param, "natsServerURL", "{bad}");
            assert!(!errors[0].problem.contains("hunter2"), "{}", errors[0].problem);
        }
    }
}
