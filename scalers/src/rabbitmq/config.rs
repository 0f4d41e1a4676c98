//! [`RabbitMqConfig`]: a rabbitmq trigger's parameters read once, typed and checked together.
//!
//! This is the only place outside the declaration that reads the parsed parameters by name. The
//! conversion reports every problem at once ([`RabbitMqConfigError`]). Declared defaults are
//! already applied by the parser, so none is restated here.

use std::time::Duration;

use lapin::types::ShortString;

use super::address::{AddressError, BrokerAddress};
use super::stats::{Mode, Operation};
use super::tls::{TlsError, TlsRequest, TlsSettings};
use super::{Protocol, UnknownScheme, amqp_rule_errors, protocol};
use crate::params::{ConfigErrors, ParamError, ParsedParams, Thresholds};

/// A rabbitmq trigger's configuration, resolved from its parsed parameters.
///
/// `Debug` never shows the credentials or the TLS key material: the address is shown with
/// `user:password@` masked.
#[derive(Debug, Clone, PartialEq)]
pub struct RabbitMqConfig {
    /// The wire protocol, `auto` resolved from the host's scheme.
    pub protocol: Protocol,
    /// Where the broker is, the vhost and the credentials (`vhostName`, `username` and
    /// `password` applied).
    pub address: BrokerAddress,
    /// `queueName`: the queue, or the regex with `useRegex`.
    pub queue: String,
    /// `mode` (QueueLength when not given).
    pub mode: Mode,
    /// The target (`value`, or the deprecated `queueLength`) and `activationValue`.
    pub thresholds: Thresholds,
    /// `operation`: how the queues a regex matches are combined.
    pub operation: Operation,
    /// `pageSize`: how many queues one regex listing returns.
    pub page_size: i64,
    /// `useRegex`: `queue` is a regex the broker matches (management API only).
    pub use_regex: bool,
    /// `excludeUnacknowledged`: count ready messages only (management API only).
    pub exclude_unacknowledged: bool,
    /// `timeout` of one management request; `None` uses the factory's timeout.
    pub timeout: Option<Duration>,
    /// `tls`, `ca`, `cert`, `key` and `unsafeSsl`.
    pub tls: TlsSettings,
}

/// One problem with a rabbitmq trigger's parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// A parameter the trigger needs has no value (unresolved, or a declared default missing).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// `protocol: auto` and the host's scheme names no protocol.
    #[error("host: {0}")]
    Scheme(#[source] UnknownScheme),
    /// `host` cannot be used.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// An explicit `protocol` that the host's scheme contradicts.
    #[error("protocol is {protocol} but host {shown} is not an {schemes} URL")]
    ProtocolMismatch {
        /// The protocol asked for.
        protocol: &'static str,
        /// The host, credentials masked.
        shown: String,
        /// The schemes that protocol needs.
        schemes: &'static str,
    },
    /// A parameter that does not work over AMQP (see [`amqp_rule_errors`]).
    #[error("{0}")]
    AmqpRule(ParamError),
    /// An AMQP queue name must fit in a short string.
    #[error("queueName is longer than 255 bytes")]
    QueueNameTooLong,
    /// `timeout` below one millisecond.
    #[error("timeout must be at least 1 (milliseconds)")]
    Timeout,
    /// The TLS parameters cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Every problem found in a rabbitmq trigger's parameters.
pub type RabbitMqConfigError = ConfigErrors<ConfigProblem>;

impl From<ConfigProblem> for RabbitMqConfigError {
    fn from(problem: ConfigProblem) -> Self {
        Self {
            trigger_type: "rabbitmq",
            problems: vec![problem],
        }
    }
}

impl TryFrom<&ParsedParams> for RabbitMqConfig {
    type Error = RabbitMqConfigError;

    fn try_from(p: &ParsedParams) -> Result<Self, Self::Error> {
        let mut problems = Vec::new();
        let mut need = Need(&mut problems);
        let host = need.get(p.str("host"), "host");
        let queue = need.get(p.str("queueName"), "queueName");
        let operation = need.get(p.str("operation").and_then(Operation::from_name), "operation");
        let page_size = need.get(p.int("pageSize"), "pageSize");
        let use_regex = need.get(p.bool("useRegex"), "useRegex");
        let exclude_unacknowledged = need.get(p.bool("excludeUnacknowledged"), "excludeUnacknowledged");
        // `tls` comes from the auth params, which may be unresolved here: then it is not enabled.
        let tls_enable = p.str("tls") == Some("enable");
        let unsafe_ssl = need.get(p.bool("unsafeSsl"), "unsafeSsl");
        // No declared default: QueueLength unless a mode is given (queueLength is that mode).
        let mode = match p.str("mode") {
            None => Some(Mode::QueueLength),
            Some(name) => need.get(Mode::from_name(name), "mode"),
        };
        let protocol = match protocol(p) {
            Some(Ok(protocol)) => Some(protocol),
            Some(Err(unknown)) => {
                problems.push(ConfigProblem::Scheme(unknown));
                None
            }
            // Host missing: reported above.
            None => None,
        };
        let timeout = match p.int("timeout") {
            None => None,
            Some(ms) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            Some(_) => {
                problems.push(ConfigProblem::Timeout);
                None
            }
        };
        if protocol == Some(Protocol::Amqp) {
            problems.extend(amqp_rule_errors(p).into_iter().map(ConfigProblem::AmqpRule));
            if queue.is_some_and(|q| ShortString::try_new(q).is_err()) {
                problems.push(ConfigProblem::QueueNameTooLong);
            }
        }
        let address = host.and_then(|host| {
            BrokerAddress::parse(
                host,
                p.str("vhostName").filter(|v| !v.is_empty()),
                p.str("username"),
                p.str("password"),
            )
            .map_err(|e| problems.push(e.into()))
            .ok()
        });
        if let (Some(address), Some(protocol)) = (&address, protocol)
            && let Some(mismatch) = protocol_mismatch(protocol, address)
        {
            problems.push(mismatch);
        }
        let tls = match (&address, unsafe_ssl) {
            (Some(address), Some(unsafe_ssl)) => {
                let request = TlsRequest {
                    enable: tls_enable,
                    unsafe_ssl,
                    ca: p.str("ca"),
                    cert: p.str("cert"),
                    key: p.str("key"),
                    key_password: p.str("keyPassword"),
                };
                TlsSettings::resolve(&request, address)
                    .map_err(|e| problems.push(e.into()))
                    .ok()
            }
            _ => None,
        };
        match (
            protocol,
            address,
            queue,
            mode,
            operation,
            page_size,
            use_regex,
            exclude_unacknowledged,
            tls,
        ) {
            (
                Some(protocol),
                Some(address),
                Some(queue),
                Some(mode),
                Some(operation),
                Some(page_size),
                Some(use_regex),
                Some(exclude_unacknowledged),
                Some(tls),
            ) if problems.is_empty() => Ok(Self {
                protocol,
                address,
                queue: queue.to_string(),
                mode,
                thresholds: (super::DECL.thresholds)(p),
                operation,
                page_size,
                use_regex,
                exclude_unacknowledged,
                timeout,
                tls,
            }),
            _ => Err(RabbitMqConfigError {
                trigger_type: "rabbitmq",
                problems,
            }),
        }
    }
}

/// Records a [`ConfigProblem::Missing`] for each value that is not there.
struct Need<'a>(&'a mut Vec<ConfigProblem>);

impl Need<'_> {
    fn get<T>(&mut self, value: Option<T>, name: &'static str) -> Option<T> {
        if value.is_none() {
            self.0.push(ConfigProblem::Missing(name));
        }
        value
    }
}

/// The problem when an explicit `protocol` contradicts the host's scheme.
fn protocol_mismatch(protocol: Protocol, address: &BrokerAddress) -> Option<ConfigProblem> {
    let scheme_protocol = if address.scheme.starts_with("amqp") {
        Protocol::Amqp
    } else {
        Protocol::Http
    };
    (scheme_protocol != protocol).then(|| {
        let (name, schemes) = match protocol {
            Protocol::Amqp => ("amqp", "amqp:// or amqps://"),
            Protocol::Http => ("http", "http:// or https://"),
        };
        ConfigProblem::ProtocolMismatch {
            protocol: name,
            shown: address.shown(),
            schemes,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScalerError;
    use crate::params::tests_support::parse_with;

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<RabbitMqConfig, RabbitMqConfigError> {
        RabbitMqConfig::try_from(&parse_with(&super::super::DECL, meta, auth).unwrap())
    }

    #[test]
    fn declared_defaults_are_applied() {
        let c = config(&[("host", "amqp://u:p@h/vh"), ("queueName", "q")], &[]).unwrap();
        assert_eq!(c.protocol, Protocol::Amqp);
        assert_eq!(c.queue, "q");
        assert_eq!(c.address.vhost, "vh");
        assert_eq!(c.mode, Mode::QueueLength);
        assert_eq!(c.operation, Operation::Sum);
        assert_eq!(c.page_size, 100);
        assert!(!c.use_regex && !c.exclude_unacknowledged);
        assert_eq!(c.timeout, None);
        assert_eq!(c.tls, TlsSettings::default());
        assert_eq!(
            c.thresholds,
            Thresholds {
                target: 20.0,
                activation: 0.0
            }
        );

        let c = config(
            &[
                ("host", "https://h/prefix/vh"),
                ("queueName", "^q-.*$"),
                ("mode", "MessageRate"),
                ("value", "2.5"),
                ("activationValue", "1"),
                ("useRegex", "true"),
                ("operation", "max"),
                ("pageSize", "7"),
                ("excludeUnacknowledged", "true"),
                ("timeout", "250"),
                ("vhostName", "other"),
                ("unsafeSsl", "true"),
            ],
            &[("username", "u"), ("password", "p")],
        )
        .unwrap();
        assert_eq!(c.protocol, Protocol::Http);
        assert_eq!(
            (c.mode, c.operation, c.page_size),
            (Mode::MessageRate, Operation::Max, 7)
        );
        assert!(c.use_regex && c.exclude_unacknowledged && c.tls.unsafe_ssl);
        assert_eq!(c.timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.address.vhost, "other");
        assert_eq!(c.address.username.as_deref(), Some("u"));
        assert_eq!(c.thresholds.target, 2.5);
        assert_eq!(c.thresholds.activation, 1.0);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let long_queue = "q".repeat(256);
        let e = config(
            &[
                ("host", "http://u:hunter2@h/"),
                ("protocol", "amqp"),
                ("queueName", &long_queue),
            ],
            &[("tls", "enable")],
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e:?}");
        assert!(e.problems.contains(&ConfigProblem::QueueNameTooLong), "{e:?}");
        assert!(
            e.problems
                .iter()
                .any(|p| matches!(p, ConfigProblem::ProtocolMismatch { protocol: "amqp", .. })),
            "{e:?}"
        );
        assert!(
            e.problems
                .iter()
                .any(|p| matches!(p, ConfigProblem::Tls(TlsError::PlainScheme(_)))),
            "{e:?}"
        );
        let text = format!("{e} {e:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.starts_with("rabbitmq: "), "{text}");

        // Nothing parsed: every needed parameter is named, in one error.
        let e = RabbitMqConfig::try_from(&ParsedParams::default()).unwrap_err();
        for name in [
            "host",
            "queueName",
            "operation",
            "pageSize",
            "useRegex",
            "unsafeSsl",
        ] {
            assert!(
                e.problems.contains(&ConfigProblem::Missing(name)),
                "{name}: {e:?}"
            );
        }
        let scaler_error = ScalerError::from(e);
        assert_eq!(scaler_error.kind(), "invalid_config");
    }

    #[test]
    fn credentials_are_absent_from_debug() {
        let c = config(
            &[("host", "amqps://admin:hunter2@h/vh"), ("queueName", "q")],
            &[
                ("tls", "enable"),
                ("ca", "ca-material"),
                ("cert", "cert-material"),
                ("key", "key-material"),
            ],
        )
        .unwrap();
        assert_eq!(c.address.password.as_deref(), Some("hunter2"));
        let text = format!("{c:?}");
        for secret in ["hunter2", "admin", "key-material", "cert-material", "ca-material"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("amqps://<redacted>@h:5671/vh"), "{text}");
    }

    fn parse(meta: &[(&str, &str)]) -> Result<ParsedParams, Vec<ParamError>> {
        parse_with(&super::super::DECL, meta, &[])
    }

    #[test]
    fn value_without_mode_is_rejected_as_keda_does() {
        // KEDA's own case: a value, no mode, and a host with no address part.
        let errors = parse(&[("value", "20"), ("queueName", "sample"), ("host", "https://")]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].param.as_str(), errors[0].problem.as_str()),
            ("value", "needs mode to be set")
        );
        // With any host.
        assert!(parse(&[("value", "5"), ("queueName", "q"), ("host", "amqp://h/")]).is_err());
        // And the other way round.
        let errors =
            parse(&[("mode", "QueueLength"), ("queueName", "q"), ("host", "amqp://h/")]).unwrap_err();
        assert_eq!(errors[0].param, "mode");
        // Together they are fine.
        parse(&[
            ("mode", "QueueLength"),
            ("value", "5"),
            ("queueName", "q"),
            ("host", "amqp://h/"),
        ])
        .unwrap();
    }

    #[test]
    fn neither_mode_nor_value_is_queue_length_twenty_and_says_so() {
        let p = parse(&[("queueName", "q"), ("host", "amqp://h/")]).unwrap();
        // What `ebb validate` shows: the defaults, not an absent (zero) value.
        let shown = p.redacted_json();
        assert_eq!(shown["mode"]["value"], "QueueLength", "{shown}");
        assert_eq!(shown["value"]["value"], 20.0, "{shown}");
        assert_eq!(shown["value"]["from"], "default", "{shown}");
        let c = RabbitMqConfig::try_from(&p).unwrap();
        assert_eq!((c.mode, c.thresholds.target), (Mode::QueueLength, 20.0));
        // The deprecated queueLength is the target, not value's default.
        let p = parse(&[("queueName", "q"), ("host", "amqp://h/"), ("queueLength", "7")]).unwrap();
        let c = RabbitMqConfig::try_from(&p).unwrap();
        assert_eq!((c.mode, c.thresholds.target), (Mode::QueueLength, 7.0));
        // queueLength with mode or value is still rejected.
        assert!(
            parse(&[
                ("queueName", "q"),
                ("host", "amqp://h/"),
                ("queueLength", "7"),
                ("value", "3")
            ])
            .is_err()
        );
        assert!(
            parse(&[
                ("queueName", "q"),
                ("host", "amqp://h/"),
                ("queueLength", "7"),
                ("mode", "QueueLength")
            ])
            .is_err()
        );
    }
}
