//! The `nats-jetstream` trigger: a JetStream consumer's lag, `num_pending + num_ack_pending`.
//!
//! Two ways to read the consumer, chosen by which parameters are set (at least one of the two):
//! - `natsServerMonitoringEndpoint` (KEDA's way): the monitoring port's
//!   `GET http(s)://<endpoint>/jsz?acc=<account>&config=true&consumers=true`, the consumer looked
//!   up under account → stream → consumer. Needs `account` or `accountID`; `useHttps` picks https.
//!   In a cluster (`meta_cluster.cluster_size > 1`) only the consumer's leader reports correct
//!   numbers, so its monitoring endpoint is found as KEDA finds it (through `/varz`) and cached
//!   until it stops leading.
//! - `natsServerURL` (ebb's addition, e.g. `nats://user:password@nats:4222` or
//!   `nats://token@nats:4222`): the JetStream API's consumer info
//!   (`$JS.API.CONSUMER.INFO.<stream>.<consumer>`) over the client port, which asks the consumer's
//!   leader for this one consumer instead of the whole account. The account is the one of the
//!   connection's credentials, so `account`/`accountID` are not needed. Wins when both are set.
//!
//! # Cold activation
//!
//! Monitoring triggers share one `/jsz` watcher per (endpoint, account). While it has triggers
//! it reads `/jsz` every 0.5 s ([`crate::ACTIVITY_WATCH_TICK`]) and flips a trigger's
//! [`Scaler::activity_changes`](crate::Scaler::activity_changes) channel when its activity
//! changes, so a ScaledObject at zero polls within about a second of its first message instead
//! of at its next `pollingInterval` tick. Cost: 1 + (leader nodes) requests per tick per endpoint
//! and account, whatever the number of triggers. `natsServerURL` triggers stay poll-only: the
//! JetStream API has no per-server batch (`CONSUMER.LIST` is per stream).
//!
//! # Where things are
//!
//! - `config`: [`NatsJetStreamConfig`], the trigger's typed settings, built once from its
//!   parameters (the only reader of parameters by name besides the declaration below).
//! - `jsz`: the monitoring JSON (`/jsz`, `/varz`) and the lag and activity it gives (pure).
//! - `leaders`: reading the lag through the monitoring port; finding and caching the leader.
//! - `connections`: the JetStream API path: pooled NATS connections and consumer info.
//! - `watch`: the `/jsz` activity watchers and a trigger's registration with one.
//! - `scaler`: [`NatsJetStreamScaler`] and the per-factory [`NatsJetStreamClients`].
//!
//! Errors never show credentials: URLs are shown with `user:password@` masked.

mod config;
mod connections;
mod jsz;
mod leaders;
mod scaler;
#[cfg(test)]
mod testing;
mod watch;

use crate::common::errors::error_chain;
use std::sync::{Mutex, MutexGuard};

pub use config::{ConfigProblem, NatsJetStreamConfig, NatsJetStreamConfigError};
pub use jsz::{ConsumerLag, JszConsumer, JszView, MonitoringDocError, jsz_activity, read_jsz};
pub use scaler::{NatsJetStreamClients, NatsJetStreamScaler};
pub use watch::{WATCH_TICK, WatcherStats};

use crate::params::{
    DeclDocs, META, META_AUTH, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds,
};

/// Every parameter of the nats-jetstream trigger.
pub static PARAMS: &[Param] = &[
    Param::string("natsServerMonitoringEndpoint")
        .from(META_AUTH)
        .doc("The server's monitoring port as `host:port` (no scheme, no path): the consumer is read from its `/jsz`."),
    Param::string("natsServerURL")
        .from(META_AUTH)
        .masks_userinfo()
        .doc("ebb's addition: a client URL (`nats://host:4222`, `tls://...`, credentials as `user:password@` or `token@`); the consumer is then read through the JetStream API, and this wins over `natsServerMonitoringEndpoint`."),
    Param::string("account")
        .from(META_AUTH)
        .doc("The account that holds the stream, for the monitoring endpoint (`accountID` wins when both are given)."),
    Param::string("accountID")
        .from(META_AUTH)
        .doc("The account's ID, for the monitoring endpoint; used instead of `account` when both are given."),
    Param::string("stream")
        .required()
        .from(META)
        .doc("The stream the consumer reads."),
    Param::string("consumer")
        .required()
        .from(META)
        .doc("The consumer whose lag is measured: messages not yet delivered plus those delivered and not yet acknowledged."),
    Param::int("lagThreshold")
        .default("10")
        .above(0.0)
        .doc("Target lag per replica."),
    Param::int("activationLagThreshold")
        .default("0")
        .min(0.0)
        .doc("The trigger is active (scales up from zero) when the lag is above this."),
    Param::bool("useHttps")
        .default("false")
        .doc("Read the monitoring endpoint over HTTPS."),
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
    docs: DeclDocs {
        summary: "Scales on a NATS JetStream consumer's lag: its pending plus unacknowledged messages.",
        checks: &[
            "With `natsServerMonitoringEndpoint` and no `natsServerURL`, `account` or `accountID` is required.",
            "`natsServerURL` must be a `nats://` or `tls://` URL with a host.",
            "`natsServerMonitoringEndpoint` is `host:port`, without scheme or path (`useHttps` picks HTTPS).",
        ],
        example_metadata: &[
            ("natsServerMonitoringEndpoint", "nats.messaging.svc:8222"),
            ("account", "$G"),
            ("stream", "ORDERS"),
            ("consumer", "orders-workers"),
            ("lagThreshold", "20"),
        ],
        example_auth: &[],
        keda_differences: &[
            "`natsServerURL` is ebb's addition: the consumer's numbers come from its leader through the JetStream API over the client port, for this one consumer instead of the whole account, with the connection's credentials.",
            "A watcher reads `/jsz` every half second per monitoring endpoint and account, so an object at zero activates within about a second instead of at its next poll; `natsServerURL` triggers wait for their poll.",
        ],
    },
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
    let http = crate::metrics_api::shared_client(factory)?;
    let clients = factory.shared(|o| NatsJetStreamClients::new(http, o.http_timeout));
    Ok(std::sync::Arc::new(NatsJetStreamScaler::new(
        clients,
        NatsJetStreamConfig::try_from(&trigger.params)?,
    )))
}

/// Locks `m`. Every critical section in this folder is one map or channel call, so a poisoned
/// lock still guards consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
