//! The `rabbitmq` trigger: queue length or rates, over AMQP 0-9-1 (lapin) or the management HTTP
//! API. This file holds the declaration (parameters, rules, checks, warnings); the pieces are:
//! [`stats`] (modes and the value maths), [`address`] (the `host` URL), [`tls`], [`amqp`]
//! (pooled connections), [`management`] (the HTTP API), [`clients`] (the pools shared by a
//! factory), [`watch`] (cold activation), [`scaler`] ([`RabbitMqScaler`]) and [`errors`].
//!
//! # AMQP counts ready messages only
//!
//! Over AMQP the scaler makes a passive `queue.declare` and reads its `message-count`. RabbitMQ
//! counts only *ready* messages there: messages that consumers have received but not yet
//! acknowledged are not in it. A queue whose whole backlog sits unacked in busy workers therefore
//! reads 0, and the workload can be scaled in (or to zero) while it is still working. This is
//! KEDA users' most common RabbitMQ surprise; [`amqp_hides_unacked_note`] gives the text shown as
//! a warning for such triggers. To count unacked messages too, use the management API
//! (`protocol: http` or an `http(s)://` host): there the value is `messages` (ready + unacked),
//! or `messages_ready` with `excludeUnacknowledged: true`. Only `QueueLength` works over AMQP;
//! `useRegex`, `excludeUnacknowledged` and `timeout` need the management API.
//!
//! # Addresses
//!
//! `host` is `amqp[s]://[user:password@]host[:port]/<vhost>` or
//! `http[s]://[user:password@]host[:port][/<path prefix>]/<vhost>`. The vhost is the last path
//! segment, percent-decoded (`%2F` is `/`); an empty one (`amqp://h:5672`, `http://h:15672/`)
//! means the default vhost `/`. `vhostName` overrides it. Over HTTP the segments before the
//! vhost are a path prefix (management behind a reverse proxy). `username` and `password` from
//! the auth params override the URL's credentials; over HTTP they are sent as basic auth.
//!
//! # Connections
//!
//! One [`RabbitMqClients`] serves every rabbitmq trigger of a
//! [`ScalerFactory`](crate::ScalerFactory): one AMQP connection per (URL, vhost, credentials,
//! TLS settings) with a few idle channels, dialled by the first sample or watcher round that needs
//! it and redialled the same way after a failure; one
//! pooled HTTP client per TLS setting. AMQP dials and declares are bounded by the factory's HTTP
//! timeout; a management request by `timeout` (milliseconds) or else that timeout.
//!
//! # TLS
//!
//! `amqps://` and `https://` use TLS (rustls with ring), verified against the system's roots.
//! `unsafeSsl: true` disables verification. With `tls: enable`, `ca` adds a PEM CA bundle to the
//! roots and `cert` + `key` (PEM) present a client certificate; over AMQP, a client certificate
//! without a username uses SASL EXTERNAL. Encrypted keys (`keyPassword`) are not supported.
//! `tls: enable` with a plain `amqp://` or `http://` host is an error rather than a silent
//! plain-text connection.
//!
//! # Cold activation
//!
//! Triggers register, when built, with a watcher that reads their queues every 0.5 s
//! ([`WATCH_TICK`]) and flips their [`Scaler::activity_changes`](crate::Scaler::activity_changes)
//! channel when the activity (computed as a sample does, with [`evaluate`]) changes, so that a
//! ScaledObject at zero polls at once instead of at its next `pollingInterval` tick: one
//! management listing per vhost, or one passive `queue.declare` per queue over the pooled AMQP
//! connection, which the watcher dials itself if no poll has yet (see [`watch`]): an object at
//! zero is woken within a second even before its first poll. Management statistics lag the broker by up to its
//! `collect_statistics_interval` (5 s by default). `useRegex` triggers stay poll-only.
//!
//! # Values
//!
//! The value is the mode's number (see [`evaluate`]); activity follows KEDA (strictly greater
//! than `activationValue`, plus the OR-rules of the rate modes). Credentials never appear in
//! errors or in `Debug` output: URLs are shown with `user:password@` masked.

pub mod address;
pub mod amqp;
pub mod clients;
pub mod config;
pub mod errors;
pub mod management;
pub mod scaler;
pub mod stats;
pub mod tls;
pub mod watch;

pub use amqp::MAX_IDLE_CHANNELS;
pub use clients::RabbitMqClients;
pub use config::{ConfigProblem, RabbitMqConfig, RabbitMqConfigError};
pub use management::{
    LISTED_QUEUE_BYTES, MAX_LISTING_BYTES, QUEUE_MAX_BODY_BYTES, WATCH_LISTING_MAX_BODY_BYTES,
    regex_listing_cap,
};
pub use scaler::RabbitMqScaler;
pub use stats::{
    MessageStats, Mode, Operation, QueueDoc, QueueListing, QueueStats, RateDetails, StatsError, aggregate,
    evaluate, queue_stats, regex_stats,
};
pub use watch::{LISTING_COLUMNS, WATCH_TICK, WatcherStats, index_listing, listed_activity};

use crate::params::{
    AUTH, AUTH_ENV, DeclDocs, META, META_AUTH, META_AUTH_ENV, Param, ParamError, ParsedParams, Rule,
    ScalerDecl, Thresholds,
};

/// The modes of the rabbitmq trigger.
pub const MODES: &[&str] = &[
    "QueueLength",
    "MessageRate",
    "DeliverGetRate",
    "PublishedToDeliveredRatio",
    "ExpectedQueueConsumptionTime",
];

/// Every parameter of the rabbitmq trigger.
pub static PARAMS: &[Param] = &[
    Param::string("host")
        .required()
        .from(META_AUTH_ENV)
        .masks_userinfo()
        .doc("The broker: `amqp[s]://[user:password@]host[:port]/vhost` for AMQP, or `http[s]://[user:password@]host[:port][/prefix]/vhost` for the management API."),
    Param::one_of("protocol", &["auto", "amqp", "http"])
        .default("auto")
        .from(META_AUTH)
        .doc("`amqp`, or `http` for the management API; `auto` takes it from the scheme of `host`."),
    Param::string("queueName")
        .required()
        .doc("The queue measured; a regular expression with `useRegex`."),
    // KEDA's defaults when neither is given: QueueLength with a target of 20. Given, each needs
    // the other (checked in `check`, since a default does not count as given).
    Param::one_of("mode", MODES)
        .default("QueueLength")
        .doc("What is measured: messages (`QueueLength`), the publish rate (`MessageRate`), the deliver-and-get rate (`DeliverGetRate`), publish / deliver (`PublishedToDeliveredRatio`) or seconds to drain the backlog (`ExpectedQueueConsumptionTime`); all but QueueLength need the management API."),
    Param::float("value")
        .above(0.0)
        .default("20")
        .doc("The target per replica of what `mode` measures; given together with `mode`."),
    Param::float("activationValue")
        .default("0")
        .doc("The trigger is active (scales up from zero) when the measured value is above this."),
    Param::float("queueLength")
        .above(0.0)
        .deprecated("use mode: QueueLength with value")
        .doc("The target number of messages per replica: the old spelling of `mode: QueueLength` with `value`."),
    Param::string("vhostName")
        .from(META_AUTH)
        .doc("The vhost, instead of the one in the path of `host`."),
    Param::bool("useRegex")
        .default("false")
        .doc("`queueName` is a regular expression the broker matches; the matching queues are combined by `operation` (management API only)."),
    Param::int("pageSize")
        .default("100")
        .min(1.0)
        .doc("With `useRegex`, how many matching queues the listing returns (only those are combined)."),
    Param::one_of("operation", &["sum", "avg", "max"])
        .default("sum")
        .doc("With `useRegex`, how the matching queues' numbers are combined."),
    Param::bool("excludeUnacknowledged")
        .default("false")
        .doc("Count ready messages only, leaving out those delivered to consumers and not yet acknowledged (management API only)."),
    Param::int("timeout")
        .min(1.0)
        .doc("Timeout of one management API request, in milliseconds (default: the operator's HTTP timeout)."),
    Param::string("username")
        .from(AUTH_ENV)
        .doc("The user name, instead of the one in `host`; given with `password`."),
    Param::string("password")
        .from(AUTH_ENV)
        .secret()
        .doc("The password, instead of the one in `host`; given with `username`."),
    Param::one_of("tls", &["enable", "disable"])
        .default("disable")
        .from(AUTH)
        .doc("`enable` uses `ca`, `cert` and `key`; `host` must then be an `amqps://` or `https://` URL."),
    Param::string("ca")
        .from(AUTH)
        .doc("With `tls: enable`, PEM CA certificates trusted in addition to the system's roots."),
    Param::string("cert")
        .from(AUTH)
        .doc("With `tls: enable`, the client certificate (PEM), given with `key`; over AMQP without a user name it authenticates with SASL EXTERNAL."),
    Param::string("key")
        .from(AUTH)
        .secret()
        .doc("With `tls: enable`, the client certificate's private key (PEM, unencrypted)."),
    Param::string("keyPassword")
        .from(AUTH)
        .secret()
        .doc("The password of an encrypted `key`: not supported, a trigger that sets it with `tls: enable` fails."),
    Param::bool("unsafeSsl")
        .default("false")
        .from(META)
        .doc("Accept any server certificate on `amqps://` and `https://` hosts, without verifying it."),
];

/// The rabbitmq trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "rabbitmq",
    params: PARAMS,
    rules: &[
        Rule::Exclusive(&["queueLength", "mode"]),
        Rule::Exclusive(&["queueLength", "value"]),
        Rule::Together(&["username", "password"]),
        Rule::Together(&["cert", "key"]),
    ],
    check,
    metric_detail,
    thresholds,
    warnings,
    docs: DeclDocs {
        summary: "Scales on a RabbitMQ queue: its length or its message rates, read over AMQP or the management API.",
        checks: &[
            "`mode` and `value` are given together; with neither (nor `queueLength`) the trigger measures QueueLength with a target of 20.",
            "With `protocol: auto`, `host` must start with `amqp://`, `amqps://`, `http://` or `https://`.",
            "Over AMQP only `mode: QueueLength` works, and `useRegex`, `excludeUnacknowledged` and `timeout` are refused.",
        ],
        example_metadata: &[
            ("host", "http://rabbitmq.messaging.svc:15672/"),
            ("queueName", "orders"),
            ("mode", "QueueLength"),
            ("value", "50"),
            ("activationValue", "0"),
        ],
        example_auth: &[("username", "ebb"), ("password", "from-a-secret")],
        keda_differences: &[
            "Over AMQP RabbitMQ counts ready messages only, in ebb as in KEDA; ebb warns about such triggers (Ready message, `ebb validate --warnings`), since messages being worked on unacknowledged are not counted. The management API (`http://`) counts them.",
            "A watcher reads the queues every half second (one management listing per vhost, or one passive declare per queue over AMQP), so an object at zero activates within about a second instead of at its next poll; `useRegex` triggers wait for their poll.",
            "Encrypted client keys (`keyPassword`) and KEDA's Azure workload identity and OAuth parameters are not supported.",
            "`tls: enable` with a plain `amqp://` or `http://` host is an error, never a plain-text connection.",
        ],
    },
};

/// The wire protocol a rabbitmq trigger uses, once `auto` is resolved from the host's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AMQP 0-9-1: ready messages only.
    Amqp,
    /// The management HTTP API.
    Http,
}

/// `protocol: auto` with a host whose scheme names no protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must start with amqp://, amqps://, http:// or https:// when protocol is auto")]
pub struct UnknownScheme;

/// Resolves the protocol: an explicit `protocol` wins, else the scheme of `host`.
/// `None` when the host is not known (read from env that is not available).
pub fn protocol(p: &ParsedParams) -> Option<Result<Protocol, UnknownScheme>> {
    match p.str("protocol") {
        Some("amqp") => return Some(Ok(Protocol::Amqp)),
        Some("http") => return Some(Ok(Protocol::Http)),
        _ => {}
    }
    let host = p.str("host")?;
    let scheme = host.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    Some(match scheme.as_deref() {
        Some("amqp" | "amqps") => Ok(Protocol::Amqp),
        Some("http" | "https") => Ok(Protocol::Http),
        _ => Err(UnknownScheme),
    })
}

/// The status warning for a rabbitmq trigger that reads its queue over AMQP: the count there
/// excludes unacknowledged messages.
pub fn amqp_hides_unacked_note() -> &'static str {
    "rabbitmq over AMQP counts ready messages only: messages that consumers hold unacknowledged are \
     not counted, so a queue whose backlog is being worked on can read 0 and the workload can be \
     scaled in while it is still busy; use protocol: http (the management API) to count \
     unacknowledged messages too"
}

/// Warns when the trigger counts QueueLength over AMQP, which sees ready messages only.
fn warnings(p: &ParsedParams) -> Vec<String> {
    let amqp = matches!(protocol(p), Some(Ok(Protocol::Amqp)));
    let queue_length = p.str("mode").is_none_or(|m| m == "QueueLength");
    if amqp && queue_length {
        vec![amqp_hides_unacked_note().to_string()]
    } else {
        Vec::new()
    }
}

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    // As KEDA: `mode` and `value` come together (or `queueLength` alone, or neither).
    match (p.is_set("mode"), p.is_set("value")) {
        (true, false) => errors.push(ParamError::new("mode", "needs value to be set")),
        (false, true) => errors.push(ParamError::new("value", "needs mode to be set")),
        _ => {}
    }
    let proto = match protocol(p) {
        Some(Ok(proto)) => Some(proto),
        Some(Err(unknown)) => {
            errors.push(ParamError::new("host", unknown.to_string()));
            None
        }
        None => None,
    };
    if proto == Some(Protocol::Amqp) {
        errors.extend(amqp_rule_errors(p));
    }
    errors
}

/// The AMQP rules, for a trigger that uses AMQP: only `mode: QueueLength` works there, and
/// `useRegex`, `excludeUnacknowledged` and `timeout` need the management API. The one place these
/// rules live (the declaration's check and [`RabbitMqConfig`] both use it).
pub fn amqp_rule_errors(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if p.str("mode").is_some_and(|m| m != "QueueLength") {
        errors.push(ParamError::new(
            "mode",
            "only QueueLength works over AMQP; use protocol http for rates",
        ));
    }
    for http_only in ["useRegex", "excludeUnacknowledged", "timeout"] {
        if p.is_set(http_only) {
            errors.push(ParamError::new(http_only, "only works with protocol http"));
        }
    }
    errors
}

/// KEDA's default target when neither `value` nor `queueLength` is given (the declared default
/// of `value`; this stands in only for parameters built by hand).
const DEFAULT_VALUE: f64 = 20.0;

fn thresholds(p: &ParsedParams) -> Thresholds {
    // The deprecated queueLength excludes value, so when given it is the target.
    let target = p
        .is_set("queueLength")
        .then(|| p.float("queueLength"))
        .flatten()
        .or_else(|| p.float("value"))
        .unwrap_or(DEFAULT_VALUE);
    Thresholds {
        target,
        activation: p.float("activationValue").unwrap_or(0.0),
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    format!("rabbitmq-{}", p.str("queueName").unwrap_or("queue"))
}

/// Builds a rabbitmq scaler on the factory's shared AMQP pool and HTTP clients (see
/// [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    let clients = factory.shared(|o| RabbitMqClients::new(o.http_timeout));
    Ok(std::sync::Arc::new(RabbitMqScaler::new(
        clients,
        RabbitMqConfig::try_from(&trigger.params)?,
        trigger.thresholds,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::{parse_meta, parse_with};

    #[test]
    fn amqp_queue_length_is_warned_about_and_http_is_not() {
        let warned = |meta: &[(&str, &str)]| !(DECL.warnings)(&parse_meta(&DECL, meta).unwrap()).is_empty();
        let amqp = [("host", "amqp://h/"), ("queueName", "q")];
        assert!(warned(&amqp));
        assert!(warned(&[
            ("host", "amqp://h/"),
            ("queueName", "q"),
            ("mode", "QueueLength"),
            ("value", "5")
        ]));
        assert!(!warned(&[("host", "http://h:15672/"), ("queueName", "q")]));
        assert!(!warned(&[
            ("host", "amqp://h/"),
            ("protocol", "http"),
            ("queueName", "q")
        ]));
    }

    #[test]
    fn protocol_follows_the_scheme() {
        let p = parse_meta(&DECL, &[("host", "amqp://u:p@h:5672/vh"), ("queueName", "q")]).unwrap();
        assert_eq!(protocol(&p), Some(Ok(Protocol::Amqp)));
        let p = parse_meta(&DECL, &[("host", "https://h:15672/vh"), ("queueName", "q")]).unwrap();
        assert_eq!(protocol(&p), Some(Ok(Protocol::Http)));
        let p = parse_meta(&DECL, &[("hostFromEnv", "RABBIT"), ("queueName", "q")]).unwrap();
        assert_eq!(protocol(&p), None);
    }

    #[test]
    fn table_of_invalid_metadata() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("host", "amqp://h/"),
                    ("queueName", "q"),
                    ("mode", "MessageRate"),
                    ("value", "5"),
                ],
                "mode",
            ),
            (
                &[("host", "amqp://h/"), ("queueName", "q"), ("useRegex", "true")],
                "useRegex",
            ),
            (
                &[("host", "amqp://h/"), ("queueName", "q"), ("timeout", "1000")],
                "timeout",
            ),
            (
                &[("host", "http://h/"), ("queueName", "q"), ("mode", "QueueLength")],
                "mode",
            ),
            (
                &[
                    ("host", "http://h/"),
                    ("queueName", "q"),
                    ("queueLength", "5"),
                    ("value", "5"),
                ],
                "queueLength, value",
            ),
            (
                &[("host", "http://h/"), ("queueName", "q"), ("operation", "median")],
                "operation",
            ),
            (&[("host", "ftp://h/"), ("queueName", "q")], "host"),
            (&[("host", "http://h/")], "queueName"),
        ];
        for (meta, param) in cases {
            let errors = parse_meta(&DECL, meta).expect_err(param);
            assert_eq!(errors[0].param, *param, "{meta:?}: {errors:?}");
        }
    }

    #[test]
    fn credentials_never_show() {
        let errors =
            parse_with(&DECL, &[("host", "ftp://user:pa55@h/"), ("queueName", "q")], &[]).unwrap_err();
        assert!(!format!("{errors:?}").contains("pa55"));
        let p = parse_with(&DECL, &[("host", "amqp://user:pa55@h/"), ("queueName", "q")], &[]).unwrap();
        let json = p.redacted_json().to_string();
        assert!(
            !json.contains("pa55") && json.contains("amqp://<redacted>@h/"),
            "{json}"
        );
    }

    #[test]
    fn the_unacked_note_says_what_to_do() {
        let note = amqp_hides_unacked_note();
        assert!(note.contains("ready messages only") && note.contains("protocol: http"));
    }
}
