//! ebb's scalers: what the operator polls, one folder per trigger type.
//!
//! This crate owns the [`Scaler`] trait (one poll of one trigger: a [`TriggerSample`] or a
//! [`ScalerError`]), every trigger type's parameter declaration ([`params`]), the [`registry`]
//! of supported kinds, and the clients that talk to the brokers, shared across triggers through
//! one [`ScalerFactory`]. Pieces used by several scalers (TLS settings, the activity watcher)
//! live in [`common`].
//!
//! **Adding a scaler** is its folder plus one registry line: write `src/<scaler>/mod.rs` (its
//! `ScalerDecl` and a `build` that takes its clients from [`ScalerFactory::shared`]) with the
//! client beside it, add `ScalerKind::polled(&<scaler>::DECL, <scaler>::build)` to [`registry::KINDS`], and declare
//! the module (`pub mod <scaler>;`) below. Nothing outside the folder names its client type.
//! A trigger the HPA reads itself (`cpu`, `memory`) registers with `ScalerKind::resource` and a
//! function making its HPA metric ([`resource_metric`]) instead of a `build`.
//!
//! Errors ([`ScalerError`]) name the endpoint with any `user:password@` masked and never carry
//! credentials, tokens or auth headers.

pub mod aws_sqs;
pub mod common;
pub mod cpu_memory;
pub mod cron;
pub mod external;
pub mod factory;
pub mod kafka;
pub mod metric_name;
pub mod metrics_api;
pub mod nats_jetstream;
pub mod params;
pub mod postgresql;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod registry;
pub mod resource_metric;

pub use factory::{FactoryOptions, ScalerFactory};
pub use params::{ParamError, ParsedParams, ScalerDecl, Thresholds, TriggerInput, TriggerParseError};
pub use registry::{ScalerKind, TriggerContext, declaration, parse_trigger, supported_types};

use std::time::Duration;

use crate::params::mask_userinfo;

/// One poll's result for one trigger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerSample {
    /// The metric value the HPA divides by the target.
    pub value: f64,
    /// Whether the trigger asks for at least one replica (value above the activation threshold).
    pub active: bool,
}

impl TriggerSample {
    /// A sample whose activity follows KEDA: active when `value` is strictly greater than
    /// `activation_threshold` (equal is not active).
    pub fn with_activation(value: f64, activation_threshold: f64) -> Self {
        Self {
            value,
            active: is_active(value, activation_threshold),
        }
    }
}

/// KEDA's activation rule: active when `value > activation_threshold` (strictly greater).
pub fn is_active(value: f64, activation_threshold: f64) -> bool {
    value > activation_threshold
}

/// How the HPA should treat the metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricTarget {
    /// The per-replica target (`AverageValue`) or the target value (`Value`), depending on the
    /// trigger's `metricType`.
    pub target_value: f64,
}

/// Why a scaler could not be built or could not produce a sample.
///
/// `Display` never shows credentials: endpoints are shown with `user:password@` masked (also when a
/// variant is constructed directly with an unmasked endpoint), and messages never quote auth
/// headers or tokens. Prefer the constructors ([`ScalerError::unreachable`] and friends), which
/// mask the stored endpoint too, so that `Debug` is safe as well.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScalerError {
    /// The endpoint could not be reached (connection refused, DNS, TLS handshake, reset).
    #[error("cannot reach {}: {message}", mask_userinfo(.endpoint))]
    Unreachable {
        /// The endpoint, credentials masked.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The endpoint answered, but not with something usable (status, body, value).
    #[error("bad response from {}: {message}", mask_userinfo(.endpoint))]
    BadResponse {
        /// The endpoint, credentials masked.
        endpoint: String,
        /// What was wrong with the answer.
        message: String,
    },
    /// The endpoint refused the credentials (e.g. HTTP 401 or 403).
    #[error("access to {} denied: {message}", mask_userinfo(.endpoint))]
    Unauthorized {
        /// The endpoint, credentials masked.
        endpoint: String,
        /// What the endpoint said (never the credentials).
        message: String,
    },
    /// No complete answer within the configured timeout.
    #[error("no answer from {} within {after:?}", mask_userinfo(.endpoint))]
    Timeout {
        /// The endpoint, credentials masked.
        endpoint: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// ebb declares this trigger type but has no client for it yet.
    #[error("scaler client for {trigger_type} is not implemented yet")]
    Unsupported {
        /// The trigger type.
        trigger_type: String,
    },
    /// The trigger's parameters cannot be used to build a client.
    #[error("invalid scaler configuration: {0}")]
    InvalidConfig(String),
    /// ebb would not read the answer now: its in-flight byte budget or the namespace's concurrency
    /// limit is used up. The next poll tries again.
    #[error("not reading {} now: {message}", mask_userinfo(.endpoint))]
    Overloaded {
        /// The endpoint, credentials masked.
        endpoint: String,
        /// Which limit is used up.
        message: String,
    },
}

impl ScalerError {
    /// An [`ScalerError::Unreachable`], with the endpoint's credentials masked.
    pub fn unreachable(endpoint: &str, message: impl Into<String>) -> Self {
        Self::Unreachable {
            endpoint: mask_userinfo(endpoint),
            message: message.into(),
        }
    }

    /// A [`ScalerError::BadResponse`], with the endpoint's credentials masked.
    pub fn bad_response(endpoint: &str, message: impl Into<String>) -> Self {
        Self::BadResponse {
            endpoint: mask_userinfo(endpoint),
            message: message.into(),
        }
    }

    /// An [`ScalerError::Unauthorized`], with the endpoint's credentials masked.
    pub fn unauthorized(endpoint: &str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            endpoint: mask_userinfo(endpoint),
            message: message.into(),
        }
    }

    /// An [`ScalerError::Overloaded`], with the endpoint's credentials masked.
    pub fn overloaded(endpoint: &str, message: impl Into<String>) -> Self {
        Self::Overloaded {
            endpoint: mask_userinfo(endpoint),
            message: message.into(),
        }
    }

    /// A [`ScalerError::Timeout`], with the endpoint's credentials masked.
    pub fn timeout(endpoint: &str, after: Duration) -> Self {
        Self::Timeout {
            endpoint: mask_userinfo(endpoint),
            after,
        }
    }

    /// A short, stable label for metrics (e.g. a Prometheus `reason` label): `unreachable`,
    /// `bad_response`, `unauthorized`, `timeout`, `unsupported`, `invalid_config` or `overloaded`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::BadResponse { .. } => "bad_response",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Timeout { .. } => "timeout",
            Self::Unsupported { .. } => "unsupported",
            Self::InvalidConfig(_) => "invalid_config",
            Self::Overloaded { .. } => "overloaded",
        }
    }
}

/// One trigger's event-source client, polled by the operator's scale loop.
///
/// Object-safe: the operator keeps `Arc<dyn Scaler>`. Implementations share their connections
/// through the [`ScalerFactory`] that built them.
#[async_trait::async_trait]
pub trait Scaler: Send + Sync {
    /// The trigger type, e.g. `metrics-api`.
    fn trigger_type(&self) -> &'static str;

    /// The target the HPA compares the metric with.
    fn metric_target(&self) -> MetricTarget;

    /// Polls the event source once.
    async fn sample(&self) -> Result<TriggerSample, ScalerError>;

    /// For sources that watch between polls (push or cheap batched polling): a channel whose value
    /// flips to the trigger's current activity as soon as it changes, so the operator's scale loop
    /// polls at once instead of waiting for its next tick. Return a fresh subscription
    /// (`watch::Sender::subscribe`) on each call, so that only later changes wake the loop.
    /// `None` (the default) for poll-only scalers. `aws-sqs-queue` and `metrics-api` stay
    /// poll-only: SQS has no batch read of several queues and bills every request, and a
    /// metrics-api endpoint is an arbitrary user URL that ebb should not call every second.
    fn activity_changes(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    /// Whether [`Scaler::sample`] costs no request to the source (it reads a snapshot the client
    /// keeps current), so the metrics adapter may sample on every HPA request.
    fn samples_are_cheap(&self) -> bool {
        false
    }
}

/// How often the batched watchers of push-capable scalers (Kafka rounds, NATS `/jsz`, RabbitMQ
/// queue listings) read their server while they have triggers: half a second, so that a first
/// message is seen, and the operator's `/scale` write made, within one second of its arrival
/// (a one-second period alone would already use up the whole second in the worst case).
pub const ACTIVITY_WATCH_TICK: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_strictly_greater() {
        assert!(!TriggerSample::with_activation(5.0, 5.0).active);
        assert!(TriggerSample::with_activation(5.000_001, 5.0).active);
        assert!(!TriggerSample::with_activation(-1.0, 0.0).active);
        assert!(TriggerSample::with_activation(-1.0, -2.0).active);
        assert_eq!(TriggerSample::with_activation(7.5, 0.0).value, 7.5);
    }

    #[test]
    fn errors_mask_credentials_even_when_built_directly() {
        let direct = ScalerError::Unreachable {
            endpoint: "http://admin:hunter2@host:8080/q".into(),
            message: "connection refused".into(),
        };
        let text = direct.to_string();
        assert!(!text.contains("hunter2") && !text.contains("admin"), "{text}");
        assert!(text.contains("http://<redacted>@host:8080/q"), "{text}");

        let errors = [
            ScalerError::unreachable("http://u:hunter2@h/", "x"),
            ScalerError::bad_response("http://u:hunter2@h/", "x"),
            ScalerError::unauthorized("http://u:hunter2@h/", "x"),
            ScalerError::timeout("http://u:hunter2@h/", Duration::from_millis(300)),
        ];
        for e in &errors {
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains("hunter2"), "{text}");
            }
        }
        assert_eq!(
            errors[3].to_string(),
            "no answer from http://<redacted>@h/ within 300ms"
        );
    }

    #[test]
    fn kinds_are_short_labels() {
        let kinds: Vec<&str> = [
            ScalerError::unreachable("http://h", "x"),
            ScalerError::bad_response("http://h", "x"),
            ScalerError::unauthorized("http://h", "x"),
            ScalerError::timeout("http://h", Duration::from_secs(1)),
            ScalerError::Unsupported {
                trigger_type: "kafka".into(),
            },
            ScalerError::InvalidConfig("x".into()),
            ScalerError::overloaded("http://h", "x"),
        ]
        .iter()
        .map(ScalerError::kind)
        .collect();
        assert_eq!(
            kinds,
            [
                "unreachable",
                "bad_response",
                "unauthorized",
                "timeout",
                "unsupported",
                "invalid_config",
                "overloaded"
            ]
        );
    }
}
