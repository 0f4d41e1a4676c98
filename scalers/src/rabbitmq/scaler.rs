//! The `rabbitmq` scaler: queue length over AMQP 0-9-1 (lapin), or queue length and rates from
//! the management HTTP API.
//!
//! # AMQP counts ready messages only
//!
//! Over AMQP the scaler makes a passive `queue.declare` and reads its `message-count`. RabbitMQ
//! counts only *ready* messages there: messages that consumers have received but not yet
//! acknowledged are not in it. A queue whose whole backlog sits unacked in busy workers therefore
//! reads 0, and the workload can be scaled in (or to zero) while it is still working. This is
//! KEDA users' most common RabbitMQ surprise; [`amqp_hides_unacked_note`] gives the text the
//! operator shows as a status warning for triggers that use AMQP. To count unacked messages too,
//! use the management API (`protocol: http` or an `http(s)://` host): there the value is
//! `messages` (ready + unacked), or `messages_ready` with `excludeUnacknowledged: true`.
//!
//! # Connections
//!
//! One [`RabbitMqClients`] serves every rabbitmq trigger of a
//! [`ScalerFactory`](crate::ScalerFactory):
//! - **AMQP**: one connection per (URL, vhost, credentials, TLS settings), shared by every trigger
//!   that uses it, with a small cache of idle channels. A connection that failed (broker restart,
//!   network error, missed heartbeats) is dropped and dialled again on the next sample; errors are
//!   returned, never retried in the background. The connection closes when the last trigger that
//!   uses it is dropped. Dialling and the `queue.declare` are bounded by the factory's HTTP timeout.
//! - **HTTP**: one pooled HTTP/1.1 client per TLS setting (system roots, `unsafeSsl`, or a custom
//!   CA and client certificate), shared by every trigger; each request is bounded by `timeout`
//!   (milliseconds) or else the factory's HTTP timeout.
//!
//! # Cold activation
//!
//! Triggers register, when built, with a watcher that reads their queues once a second and
//! flips their [`Scaler::activity_changes`] channel when the activity (computed as
//! [`Scaler::sample`] does, with [`evaluate`]) changes, so that a ScaledObject at zero polls at
//! once instead of at its next `pollingInterval` tick. They unregister when dropped; a watcher
//! with no trigger left ends its task. A failed or inconclusive read flips nothing (errors are the
//! polls' to report); after failures the watcher backs off up to 5 s.
//! - **Management API**: one watcher per (host, credentials, TLS settings, vhost) lists the
//!   vhost's queues in one request per second (`/api/queues/<vhost>?columns=` [`LISTING_COLUMNS`])
//!   for every mode. The statistics themselves lag the broker by up to its
//!   `collect_statistics_interval` (5 s by default), so this takes a few seconds, not one.
//!   `useRegex` triggers stay poll-only (the broker matches the regex).
//! - **AMQP**: one watcher per pooled connection makes one passive `queue.declare` per distinct
//!   watched queue each second over one channel of that connection (no extra connection): one
//!   broker round trip per queue, fine up to a few hundred queues per connection. It starts
//!   reading once a poll has dialled the connection, and redials a failed one after that. A
//!   queue whose declare fails (the broker then closes the channel) is skipped for 5 s.
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
//! # TLS
//!
//! `amqps://` and `https://` use TLS (rustls with ring), verified against the system's roots.
//! `unsafeSsl: true` disables verification. With `tls: enable`, `ca` adds a PEM CA bundle to the
//! roots and `cert` + `key` (PEM) present a client certificate; over AMQP, a client certificate
//! without a username uses SASL EXTERNAL. Encrypted keys (`keyPassword`) are not supported.
//! `tls: enable` with a plain `amqp://` or `http://` host is an error rather than a silent
//! plain-text connection.
//!
//! # Values
//!
//! The value is the mode's number (see [`evaluate`]); activity follows KEDA (strictly greater
//! than `activationValue`, plus the OR-rules of the rate modes). Credentials never appear in
//! errors or in `Debug` output: URLs are shown with `user:password@` masked.

use crate::common::tls::AcceptAnyCertificate;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lapin::options::QueueDeclareOptions;
use lapin::protocol::AMQPErrorKind;
use lapin::tcp::RustlsConnector;
use lapin::types::{FieldTable, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism};
use lapin::{AsyncTcpStream, Channel, Connection, ConnectionProperties};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::params::{ParsedParams, Thresholds, mask_userinfo};
use crate::rabbitmq::{self, Protocol};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// The status warning for a rabbitmq trigger that reads its queue over AMQP: the count there
/// excludes unacknowledged messages.
pub fn amqp_hides_unacked_note() -> &'static str {
    "rabbitmq over AMQP counts ready messages only: messages that consumers hold unacknowledged are \
     not counted, so a queue whose backlog is being worked on can read 0 and the workload can be \
     scaled in while it is still busy; use protocol: http (the management API) to count \
     unacknowledged messages too"
}

/// The largest management API response read; a larger one is a [`ScalerError::BadResponse`].
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How many idle channels one pooled AMQP connection keeps for reuse.
pub const MAX_IDLE_CHANNELS: usize = 4;

/// How long an idle pooled HTTP connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The `connection_name` shown in RabbitMQ's management UI for ebb's AMQP connections.
const CONNECTION_NAME: &str = "ebb-scaler";

/// Every byte but the RFC 3986 unreserved ones is escaped in a path segment or query value, so a
/// vhost or queue name can never add a segment (`/`), a query (`?`) or a fragment (`#`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------------------------
// Modes, statistics and the value maths
// ---------------------------------------------------------------------------------------------

/// What the rabbitmq trigger measures (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Messages in the queue (`messages`, or `messages_ready`; ready only over AMQP).
    QueueLength,
    /// Publish rate (messages per second).
    MessageRate,
    /// Deliver-and-get rate (messages per second).
    DeliverGetRate,
    /// Publish rate divided by deliver rate.
    PublishedToDeliveredRatio,
    /// Seconds until the backlog is consumed at the current rates.
    ExpectedQueueConsumptionTime,
}

impl Mode {
    /// The mode named as in KEDA's `mode` parameter (exact case, as the parser stores it).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "QueueLength" => Self::QueueLength,
            "MessageRate" => Self::MessageRate,
            "DeliverGetRate" => Self::DeliverGetRate,
            "PublishedToDeliveredRatio" => Self::PublishedToDeliveredRatio,
            "ExpectedQueueConsumptionTime" => Self::ExpectedQueueConsumptionTime,
            _ => return None,
        })
    }

    /// The mode's name as in KEDA.
    pub fn name(self) -> &'static str {
        match self {
            Self::QueueLength => "QueueLength",
            Self::MessageRate => "MessageRate",
            Self::DeliverGetRate => "DeliverGetRate",
            Self::PublishedToDeliveredRatio => "PublishedToDeliveredRatio",
            Self::ExpectedQueueConsumptionTime => "ExpectedQueueConsumptionTime",
        }
    }
}

/// How the queues matched by a `useRegex` name are combined (`operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Sum of each statistic.
    Sum,
    /// Mean of each statistic.
    Avg,
    /// Maximum of each statistic (each taken on its own).
    Max,
}

impl Operation {
    /// The operation named as in KEDA's `operation` parameter.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "max" => Self::Max,
            _ => return None,
        })
    }
}

/// The statistics of one queue (or of the queues a regex matched, combined).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueStats {
    /// Ready plus unacknowledged messages (`messages`). Over AMQP: ready messages only.
    pub messages: f64,
    /// Ready messages (`messages_ready`).
    pub messages_ready: f64,
    /// `message_stats.publish_details.rate` (0 when the queue has no message stats yet).
    pub publish_rate: f64,
    /// `message_stats.deliver_get_details.rate` (0 when the queue has no message stats yet).
    pub deliver_get_rate: f64,
}

/// Combines the statistics of several queues, field by field. No queue gives all zeros (as KEDA).
pub fn aggregate(operation: Operation, queues: &[QueueStats]) -> QueueStats {
    let fold = |f: fn(&QueueStats) -> f64| -> f64 {
        let values = queues.iter().map(f);
        match operation {
            Operation::Sum => values.sum(),
            Operation::Avg if queues.is_empty() => 0.0,
            Operation::Avg => values.sum::<f64>() / queues.len() as f64,
            Operation::Max => values
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                .unwrap_or(0.0),
        }
    };
    QueueStats {
        messages: fold(|q| q.messages),
        messages_ready: fold(|q| q.messages_ready),
        publish_rate: fold(|q| q.publish_rate),
        deliver_get_rate: fold(|q| q.deliver_get_rate),
    }
}

/// The metric value and activity of a mode, as KEDA's `GetMetricsAndActivity` computes them.
///
/// `messages` below is `stats.messages`, or `stats.messages_ready` with `exclude_unacknowledged`;
/// "active" means strictly greater than `activation`.
///
/// | mode | value | active when |
/// |---|---|---|
/// | QueueLength | messages | value active |
/// | MessageRate | publish rate | value active, or messages active |
/// | DeliverGetRate | deliver-get rate | value active |
/// | PublishedToDeliveredRatio | publish / deliver; `activation` when deliver = 0 and publish > 0; 0 when both are 0 | value active, or (publish > 0 and deliver = 0) |
/// | ExpectedQueueConsumptionTime | (publish − deliver) / deliver + messages / deliver, at least 0; 0 when messages = 0; `activation` when deliver = 0 | value active, or (deliver = 0 and messages > 0) |
pub fn evaluate(
    mode: Mode,
    stats: &QueueStats,
    exclude_unacknowledged: bool,
    activation: f64,
) -> TriggerSample {
    let messages = if exclude_unacknowledged {
        stats.messages_ready
    } else {
        stats.messages
    };
    let publish = stats.publish_rate;
    let deliver = stats.deliver_get_rate;
    let above = |v: f64| crate::is_active(v, activation);
    match mode {
        Mode::QueueLength => TriggerSample::with_activation(messages, activation),
        Mode::MessageRate => TriggerSample {
            value: publish,
            active: above(publish) || above(messages),
        },
        Mode::DeliverGetRate => TriggerSample::with_activation(deliver, activation),
        Mode::PublishedToDeliveredRatio => {
            if deliver == 0.0 {
                if publish > 0.0 {
                    TriggerSample {
                        value: activation,
                        active: true,
                    }
                } else {
                    // KEDA divides 0 by 0 here (NaN, reported as 0, never active).
                    TriggerSample {
                        value: 0.0,
                        active: false,
                    }
                }
            } else {
                TriggerSample::with_activation(publish / deliver, activation)
            }
        }
        Mode::ExpectedQueueConsumptionTime => {
            if messages == 0.0 {
                TriggerSample::with_activation(0.0, activation)
            } else if deliver == 0.0 {
                // Messages waiting and nothing consuming them: active, reported as activationValue.
                TriggerSample {
                    value: activation,
                    active: true,
                }
            } else {
                // Negative when the queue drains faster than it fills and the backlog is small:
                // reported as 0, as KEDA's milli-quantity conversion does.
                let eta = ((publish - deliver) / deliver + messages / deliver).max(0.0);
                TriggerSample::with_activation(eta, activation)
            }
        }
    }
}

/// Reads one queue's statistics from a management API queue object.
///
/// `messages` and `messages_ready` must be numbers (RabbitMQ omits them until it has collected
/// the queue's first statistics: that is an error, not a zero); missing rates are 0.
pub fn queue_stats_from_json(queue: &Json) -> Result<QueueStats, String> {
    let Json::Object(fields) = queue else {
        return Err("the queue is not a JSON object".to_string());
    };
    let name = fields
        .get("name")
        .and_then(Json::as_str)
        .map(|n| format!(" of queue {n:?}"))
        .unwrap_or_default();
    let count = |field: &str| -> Result<f64, String> {
        match fields.get(field) {
            Some(Json::Number(n)) => n
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{field}{name} is not a finite number")),
            Some(_) => Err(format!("{field}{name} is not a number")),
            None => Err(format!(
                "no {field} in the statistics{name} (RabbitMQ has not collected them yet)"
            )),
        }
    };
    let rate = |detail: &str| -> Result<f64, String> {
        let found = fields
            .get("message_stats")
            .and_then(|s| s.get(detail))
            .and_then(|d| d.get("rate"));
        match found {
            None | Some(Json::Null) => Ok(0.0),
            Some(Json::Number(n)) => n
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("message_stats.{detail}.rate{name} is not a finite number")),
            Some(_) => Err(format!("message_stats.{detail}.rate{name} is not a number")),
        }
    };
    Ok(QueueStats {
        messages: count("messages")?,
        messages_ready: count("messages_ready")?,
        publish_rate: rate("publish_details")?,
        deliver_get_rate: rate("deliver_get_details")?,
    })
}

/// Reads and combines the queues of a `useRegex` listing (`{"items": [...], "page_count": n}`).
/// More than one page is an error (as in KEDA): raise `pageSize`. Queues whose statistics
/// RabbitMQ has not collected yet (created in the last seconds) are left out; if that is every
/// matched queue, it is an error. No matched queue gives zeros.
pub fn regex_stats_from_json(
    listing: &Json,
    operation: Operation,
    page_size: i64,
) -> Result<QueueStats, String> {
    let page_count = listing.get("page_count").and_then(Json::as_i64).unwrap_or(1);
    if page_count > 1 {
        return Err(format!(
            "the queues matching the regex fill {page_count} pages of {page_size}; ebb reads one \
             page only: raise pageSize or narrow queueName"
        ));
    }
    let Some(items) = listing.get("items").and_then(Json::as_array) else {
        return Err("the queue listing has no items array".to_string());
    };
    // A queue created moments ago has no counts yet: it is left out (it can hold few messages),
    // unless every matched queue is in that state.
    let collected: Vec<&Json> = items.iter().filter(|q| q.get("messages").is_some()).collect();
    if collected.is_empty() && !items.is_empty() {
        return Err(format!(
            "none of the {} queues matching the regex has statistics yet (RabbitMQ has not \
             collected them)",
            items.len()
        ));
    }
    let queues = collected
        .into_iter()
        .map(queue_stats_from_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(aggregate(operation, &queues))
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

/// A parsed `host`: where the broker is, which vhost, and the credentials to use.
#[derive(Clone, PartialEq, Eq)]
struct BrokerAddress {
    /// Lower-case scheme: amqp, amqps, http or https.
    scheme: String,
    /// Host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
    /// The vhost, decoded (`/` for the default one).
    vhost: String,
    /// HTTP only: the path before the vhost segment, as written (escaped), no trailing `/`.
    path_prefix: String,
    /// Decoded credentials from the URL or the `username` / `password` params.
    username: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerAddress")
            .field("url", &self.shown())
            .field("vhost", &self.vhost)
            .field("credentials", &self.has_credentials())
            .finish()
    }
}

impl BrokerAddress {
    /// Parses `host` and applies `vhostName` and the `username` / `password` params. Errors never
    /// show the credentials.
    fn parse(
        host: &str,
        vhost_name: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, ScalerError> {
        let invalid = |what: String| ScalerError::InvalidConfig(format!("rabbitmq host: {what}"));
        // An unparsable URL is not quoted: without a parse the credentials cannot be located.
        let url = url::Url::parse(host.trim()).map_err(|e| invalid(format!("not a valid URL ({e})")))?;
        let scheme = url.scheme().to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "amqp" => 5672,
            "amqps" => 5671,
            "http" => 80,
            "https" => 443,
            // Not quoted: `user:pass@host` parses with `user` as the scheme.
            _ => {
                return Err(invalid(
                    "must be an amqp://, amqps://, http:// or https:// URL".into(),
                ));
            }
        };
        let host_name = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid(format!("{} has no host name", mask_userinfo(host)))),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "{} must not have a query or fragment",
                mask_userinfo(url.as_str())
            )));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let path = url.path();
        let (prefix, vhost_segment) = if scheme.starts_with("http") {
            match path.rfind('/') {
                Some(i) => (path[..i].to_string(), &path[i + 1..]),
                None => (String::new(), path),
            }
        } else {
            // AMQP: the whole path is the vhost (RFC-style `amqp://host/vhost`).
            (String::new(), path.strip_prefix('/').unwrap_or(path))
        };
        let vhost = match vhost_name {
            Some(name) => name.to_string(),
            None => decode(vhost_segment),
        };
        let vhost = if vhost.is_empty() { "/".to_string() } else { vhost };
        let (url_user, url_password) = (url.username(), url.password());
        let (username, password) = match (username, password) {
            (Some(u), p) => (Some(u.to_string()), p.map(str::to_string)),
            (None, Some(p)) => (
                (!url_user.is_empty()).then(|| decode(url_user)),
                Some(p.to_string()),
            ),
            (None, None) => (
                (!url_user.is_empty()).then(|| decode(url_user)),
                url_password.map(decode),
            ),
        };
        let address = Self {
            port: url.port().unwrap_or(default_port),
            scheme,
            host: host_name,
            vhost,
            path_prefix: prefix,
            username,
            password,
        };
        if address.vhost.len() > 255 {
            return Err(invalid(format!(
                "the vhost of {} is longer than 255 bytes",
                address.shown()
            )));
        }
        Ok(address)
    }

    fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }

    fn is_tls(&self) -> bool {
        self.scheme == "amqps" || self.scheme == "https"
    }

    /// `host:port`, with IPv6 addresses in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address for messages: credentials masked, vhost escaped.
    fn shown(&self) -> String {
        let credentials = if self.has_credentials() { "<redacted>@" } else { "" };
        let vhost = utf8_percent_encode(&self.vhost, COMPONENT);
        format!(
            "{}://{credentials}{}{}/{vhost}",
            self.scheme,
            self.authority(),
            self.path_prefix
        )
    }

    /// The management API URL of one queue.
    fn queue_url(&self, queue: &str) -> String {
        format!(
            "{}://{}{}/api/queues/{}/{}",
            self.scheme,
            self.authority(),
            self.path_prefix,
            encode_segment(&self.vhost),
            encode_segment(queue)
        )
    }

    /// The management API URL listing the vhost's queues with the columns the watcher needs.
    fn listing_url(&self) -> String {
        format!(
            "{}://{}{}/api/queues/{}?columns={LISTING_COLUMNS}",
            self.scheme,
            self.authority(),
            self.path_prefix,
            encode_segment(&self.vhost),
        )
    }

    /// The management API URL listing the queues whose names match `regex` (KEDA's query).
    fn regex_url(&self, regex: &str, page_size: i64) -> String {
        format!(
            "{}://{}{}/api/queues/{}?page=1&use_regex=true&pagination=false&name={}&page_size={page_size}",
            self.scheme,
            self.authority(),
            self.path_prefix,
            encode_segment(&self.vhost),
            utf8_percent_encode(regex, COMPONENT)
        )
    }

    /// Basic auth from the credentials, if any, marked sensitive.
    fn basic_auth(&self) -> Result<Option<HeaderValue>, ScalerError> {
        if !self.has_credentials() {
            return Ok(None);
        }
        let user = self.username.as_deref().unwrap_or_default();
        let password = self.password.as_deref().unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
            ScalerError::InvalidConfig("rabbitmq: the credentials cannot be sent as basic auth".into())
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Escapes a vhost or queue name as one path segment; `.` and `..` are escaped too, so that no
/// server resolves them as dot-segments.
fn encode_segment(s: &str) -> String {
    match s {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => utf8_percent_encode(s, COMPONENT).to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// The TLS settings of a connection (also the key of the shared clients). Holds key material:
/// never printed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
struct TlsSettings {
    unsafe_ssl: bool,
    /// PEM CA bundle added to the system roots.
    ca: Option<String>,
    /// PEM client certificate chain and key.
    client_auth: Option<(String, String)>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("unsafe_ssl", &self.unsafe_ssl)
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client_auth.is_some())
            .finish()
    }
}

impl TlsSettings {
    /// Reads `tls`, `ca`, `cert`, `key`, `keyPassword` and `unsafeSsl`.
    fn from_params(params: &ParsedParams, address: &BrokerAddress) -> Result<Self, ScalerError> {
        let unsafe_ssl = params.bool("unsafeSsl").unwrap_or(false);
        if params.str("tls") != Some("enable") {
            return Ok(Self {
                unsafe_ssl,
                ..Self::default()
            });
        }
        if !address.is_tls() {
            return Err(ScalerError::InvalidConfig(format!(
                "rabbitmq: tls is enable but {} is not an amqps:// or https:// URL; use the TLS \
                 scheme (ebb never falls back to plain text)",
                address.shown()
            )));
        }
        if params.str("keyPassword").is_some_and(|p| !p.is_empty()) {
            return Err(ScalerError::InvalidConfig(
                "rabbitmq: keyPassword (an encrypted private key) is not supported; give key as an \
                 unencrypted PEM key (PKCS#8, PKCS#1 or SEC1)"
                    .into(),
            ));
        }
        let non_empty = |name: &str| {
            params
                .str(name)
                .filter(|v| !v.trim().is_empty())
                .map(str::to_string)
        };
        let client_auth = match (non_empty("cert"), non_empty("key")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ScalerError::InvalidConfig(
                    "rabbitmq: cert and key must be given together".into(),
                ));
            }
        };
        Ok(Self {
            unsafe_ssl,
            ca: non_empty("ca"),
            client_auth,
        })
    }
}

/// The system's root certificates, loaded once, and why none could be, if none could.
struct NativeRoots {
    store: Arc<RootCertStore>,
    problem: Option<String>,
}

fn load_native_roots() -> NativeRoots {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _unparsable) = store.add_parsable_certificates(native.certs);
    let problem = (added == 0).then(|| {
        let mut note = "no trusted root certificates were found in the system store".to_string();
        if let Some(e) = native.errors.first() {
            note.push_str(&format!(" ({e})"));
        }
        note
    });
    NativeRoots {
        store: Arc::new(store),
        problem,
    }
}

// ---------------------------------------------------------------------------------------------
// The shared clients
// ---------------------------------------------------------------------------------------------

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Identity of a pooled AMQP connection: the full URI (credentials included) and the TLS
/// settings. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct AmqpKey {
    uri: String,
    tls: Option<TlsSettings>,
}

/// The clients shared by every rabbitmq trigger of a factory: pooled AMQP connections and HTTP
/// clients (see the [module docs](self)).
pub struct RabbitMqClients {
    /// Timeout of one HTTP request without `timeout`, and of one AMQP sample (dial included).
    default_timeout: Duration,
    provider: Arc<CryptoProvider>,
    native_roots: OnceLock<NativeRoots>,
    /// TLS client configurations by settings (shared by AMQP and HTTP).
    tls_configs: Mutex<HashMap<TlsSettings, Arc<rustls::ClientConfig>>>,
    /// HTTP clients by TLS settings; each keeps its own connection pool.
    http_clients: Mutex<HashMap<TlsSettings, HttpClient>>,
    /// AMQP connection slots by identity; a slot lives while a scaler holds it.
    amqp_slots: Mutex<HashMap<AmqpKey, Weak<AmqpSlot>>>,
    /// Management watchers by listing identity; a watcher lives while a scaler holds it.
    http_watchers: Mutex<HashMap<HttpWatchKey, Weak<HttpWatcher>>>,
    watch_counters: Arc<WatchCounters>,
    /// How often a watcher makes a round; zero disables the watchers.
    watch_tick: Duration,
}

impl RabbitMqClients {
    /// Creates the (empty) pools. `default_timeout` bounds an HTTP request when the trigger has no
    /// `timeout`, and one AMQP sample (dial and `queue.declare`). Needs no async runtime.
    pub fn new(default_timeout: Duration) -> Self {
        Self {
            default_timeout,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            native_roots: OnceLock::new(),
            tls_configs: Mutex::new(HashMap::new()),
            http_clients: Mutex::new(HashMap::new()),
            amqp_slots: Mutex::new(HashMap::new()),
            http_watchers: Mutex::new(HashMap::new()),
            watch_counters: Arc::new(WatchCounters::default()),
            watch_tick: WATCH_TICK,
        }
    }

    /// Sets how often each watcher reads its queues (default [`WATCH_TICK`]); zero disables the
    /// watchers (every trigger is then poll-only and [`Scaler::activity_changes`] never fires).
    pub fn with_watch_tick(mut self, tick: Duration) -> Self {
        self.watch_tick = tick;
        self
    }

    /// What the activity watchers are doing now.
    pub fn watcher_stats(&self) -> WatcherStats {
        let mut stats = WatcherStats {
            rounds: self.watch_counters.rounds.load(Ordering::Relaxed),
            requests: self.watch_counters.requests.load(Ordering::Relaxed),
            ..WatcherStats::default()
        };
        let mut count = |state: &Mutex<WatchState>| {
            let state = lock(state);
            stats.triggers += state.triggers.len();
            stats.running += usize::from(state.running);
            !state.triggers.is_empty()
        };
        let http: Vec<Arc<HttpWatcher>> = lock(&self.http_watchers)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let slots: Vec<Arc<AmqpSlot>> = lock(&self.amqp_slots)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let http_watchers = http.iter().filter(|w| count(&w.state)).count();
        let amqp_watchers = slots.iter().filter(|s| count(&s.watch)).count();
        WatcherStats {
            http_watchers,
            amqp_watchers,
            ..stats
        }
    }

    /// The management watcher listing `target`'s vhost, created on first use.
    fn http_watcher(&self, target: &HttpTarget, listing: Uri, shown: &str) -> Arc<HttpWatcher> {
        let key: HttpWatchKey = (
            listing.to_string(),
            target.authorization.as_ref().map(|a| a.as_bytes().to_vec()),
            target.tls.clone(),
        );
        let mut watchers = lock(&self.http_watchers);
        if let Some(w) = watchers.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        watchers.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(HttpWatcher {
            target: HttpTarget {
                uri: listing,
                timeout: self.default_timeout,
                ..target.clone()
            },
            shown: shown.to_string(),
            state: Mutex::new(WatchState::default()),
        });
        watchers.insert(key, Arc::downgrade(&w));
        w
    }

    /// The timeout used when a trigger sets none.
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// How many AMQP connections are open now (dialled and not failed). Triggers on the same
    /// host, vhost, credentials and TLS settings share one.
    pub fn amqp_connection_count(&self) -> usize {
        lock(&self.amqp_slots)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|slot| slot.live().is_some())
            .count()
    }

    /// How many distinct HTTP clients (one per TLS setting) have been created.
    pub fn http_client_count(&self) -> usize {
        lock(&self.http_clients).len()
    }

    fn native_roots(&self) -> &NativeRoots {
        self.native_roots.get_or_init(load_native_roots)
    }

    /// The rustls configuration for these settings, built once and shared.
    fn tls_config(&self, settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, ScalerError> {
        if let Some(config) = lock(&self.tls_configs).get(settings) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.build_tls_config(settings)?);
        Ok(lock(&self.tls_configs)
            .entry(settings.clone())
            .or_insert(config)
            .clone())
    }

    fn build_tls_config(&self, settings: &TlsSettings) -> Result<rustls::ClientConfig, ScalerError> {
        let invalid = |what: String| ScalerError::InvalidConfig(format!("rabbitmq TLS: {what}"));
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("cannot set up TLS ({e})")))?;
        let builder = if settings.unsafe_ssl {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(self.provider.clone())))
        } else {
            let mut roots = (*self.native_roots().store).clone();
            if let Some(ca) = &settings.ca {
                let certs = CertificateDer::pem_slice_iter(ca.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| invalid("ca is not a PEM certificate bundle".into()))?;
                if certs.is_empty() {
                    return Err(invalid("ca holds no PEM certificate".into()));
                }
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(invalid("no certificate in ca could be used".into()));
                }
            }
            builder.with_root_certificates(roots)
        };
        match &settings.client_auth {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| invalid("cert is not a PEM certificate".into()))?;
                if chain.is_empty() {
                    return Err(invalid("cert holds no PEM certificate".into()));
                }
                // The key's own parse error is not shown: it could quote key material.
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                    invalid("key is not an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid(format!("cert and key cannot be used together ({e})")))
            }
        }
    }

    /// The HTTP client for these settings, created once and shared.
    fn http_client(&self, settings: &TlsSettings) -> Result<HttpClient, ScalerError> {
        if let Some(client) = lock(&self.http_clients).get(settings) {
            return Ok(client.clone());
        }
        let tls = (*self.tls_config(settings)?).clone();
        let client = http_client(tls);
        Ok(lock(&self.http_clients)
            .entry(settings.clone())
            .or_insert(client)
            .clone())
    }

    /// The slot of an AMQP connection identity, shared with every scaler that uses it.
    fn amqp_slot(&self, key: AmqpKey) -> Arc<AmqpSlot> {
        let mut slots = lock(&self.amqp_slots);
        if let Some(slot) = slots.get(&key).and_then(Weak::upgrade) {
            return slot;
        }
        slots.retain(|_, slot| slot.strong_count() > 0);
        let slot = Arc::new(AmqpSlot::default());
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }

    /// A note for errors of verified TLS connections when the system has no root certificates.
    fn roots_problem(&self, settings: &TlsSettings) -> Option<&str> {
        if settings.unsafe_ssl || settings.ca.is_some() {
            return None;
        }
        self.native_roots.get().and_then(|r| r.problem.as_deref())
    }
}

impl Default for RabbitMqClients {
    fn default() -> Self {
        Self::new(crate::FactoryOptions::DEFAULT_HTTP_TIMEOUT)
    }
}

impl fmt::Debug for RabbitMqClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqClients")
            .field("default_timeout", &self.default_timeout)
            .field("amqp_connections", &self.amqp_connection_count())
            .field("http_clients", &self.http_client_count())
            .finish_non_exhaustive()
    }
}

fn http_client(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https)
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical section
/// is a single map operation).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// AMQP connections
// ---------------------------------------------------------------------------------------------

/// One pooled AMQP connection identity: the connection, once dialled, and the lock that makes
/// concurrent samplers dial once.
#[derive(Default)]
struct AmqpSlot {
    current: Mutex<Option<Arc<PooledConnection>>>,
    dialing: tokio::sync::Mutex<()>,
    /// Whether a sample has dialled the connection once (the watcher dials again only then).
    dialled: AtomicBool,
    /// The triggers whose queues the connection's watcher reads.
    watch: Mutex<WatchState>,
    /// What the watcher dials with (the URI holds the credentials; never printed).
    dial: Mutex<Option<(AMQPUri, Option<Arc<rustls::ClientConfig>>)>>,
}

impl AmqpSlot {
    /// The connection if it is open; a failed one is dropped (closed) here.
    fn live(&self) -> Option<Arc<PooledConnection>> {
        let mut current = lock(&self.current);
        match current.as_ref() {
            Some(pooled) if pooled.connection.status().connected() => Some(pooled.clone()),
            Some(_) => {
                let dead = current.take();
                drop(current);
                drop(dead);
                None
            }
            None => None,
        }
    }

    /// Drops `pooled` if it is still the slot's connection (so the next sample dials again).
    fn discard(&self, pooled: &Arc<PooledConnection>) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, pooled)) {
            let dead = current.take();
            drop(current);
            drop(dead);
        }
    }
}

/// A dialled connection and its idle channels.
struct PooledConnection {
    connection: Connection,
    idle_channels: Mutex<Vec<Channel>>,
}

impl PooledConnection {
    /// An open idle channel, or a new one.
    async fn channel(&self) -> lapin::Result<Channel> {
        loop {
            let idle = lock(&self.idle_channels).pop();
            match idle {
                Some(channel) if channel.status().connected() => return Ok(channel),
                Some(_closed) => continue,
                None => return self.connection.create_channel().await,
            }
        }
    }

    /// Keeps an open channel for reuse (up to [`MAX_IDLE_CHANNELS`]); others are closed on drop.
    fn give_back(&self, channel: Channel) {
        if channel.status().connected() {
            let mut idle = lock(&self.idle_channels);
            if idle.len() < MAX_IDLE_CHANNELS {
                idle.push(channel);
            }
        }
    }
}

/// What a scaler needs to dial its AMQP connection.
struct AmqpTarget {
    /// The URI to dial (holds the credentials; never printed).
    uri: AMQPUri,
    /// TLS configuration for amqps.
    tls: Option<(Arc<rustls::ClientConfig>, TlsSettings)>,
    /// Secrets to scrub from broker and library messages.
    secrets: Vec<String>,
    slot: Arc<AmqpSlot>,
}

/// Why one AMQP step failed, sorted for the [`ScalerError`] kinds.
fn amqp_error(
    clients: &RabbitMqClients,
    target: &AmqpTarget,
    shown: &str,
    step: &str,
    e: &lapin::Error,
) -> ScalerError {
    let mut message = scrub(&format!("{step}: {}", error_chain(e)), &target.secrets);
    match e.kind() {
        // 403 ACCESS_REFUSED: wrong credentials, or no permission on the vhost or queue.
        lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 403 => {
            ScalerError::unauthorized(shown, message)
        }
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::RuntimeShutdownError(_) => {
            if let Some((_, settings)) = &target.tls
                && let Some(problem) = clients.roots_problem(settings)
            {
                message.push_str(&format!(" ({problem})"));
            }
            ScalerError::unreachable(shown, message)
        }
        _ => ScalerError::bad_response(shown, message),
    }
}

/// Whether an error means the connection itself is gone (not just the channel).
fn connection_failed(e: &lapin::Error, pooled: &PooledConnection) -> bool {
    if !pooled.connection.status().connected() {
        return true;
    }
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => matches!(amqp.kind(), AMQPErrorKind::Hard(_)),
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::RuntimeShutdownError(_)
        | lapin::ErrorKind::ParsingError(_)
        | lapin::ErrorKind::SerialisationError(_) => true,
        _ => false,
    }
}

/// Dials a new connection. The TCP connect and TLS handshake run on lapin's IO thread; each is
/// bounded by `timeout` so that an unreachable broker does not leave a thread behind.
async fn dial(
    uri: &AMQPUri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    let host = uri.authority.host.clone();
    let port = uri.authority.port;
    let tls = tls.map(|config| RustlsConnector::from(config.clone()));
    let properties = ConnectionProperties::default().with_connection_name(CONNECTION_NAME.into());
    let connect = async move |_uri: AMQPUri, runtime| {
        let timed_out = |what: &str| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} timed out after {timeout:?}"),
            )
        };
        let addresses: Vec<SocketAddr> =
            tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| timed_out("resolving the host"))??
                .collect();
        let stream = tokio::time::timeout(timeout, AsyncTcpStream::connect(&runtime, addresses))
            .await
            .map_err(|_| timed_out("connecting"))??;
        match &tls {
            Some(connector) => Ok(
                tokio::time::timeout(timeout, stream.into_rustls(connector, &host))
                    .await
                    .map_err(|_| timed_out("the TLS handshake"))??,
            ),
            None => Ok(stream),
        }
    };
    Connection::connector(uri.clone(), runtime, connect, properties).await
}

/// The slot's open connection, dialled first if there is none (one dial at a time per slot).
async fn slot_connection(
    slot: &AmqpSlot,
    uri: &AMQPUri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> lapin::Result<Arc<PooledConnection>> {
    if let Some(pooled) = slot.live() {
        return Ok(pooled);
    }
    let _dialing = slot.dialing.lock().await;
    // Another sampler may have dialled while this one waited.
    if let Some(pooled) = slot.live() {
        return Ok(pooled);
    }
    let connection = dial(uri, tls, timeout).await?;
    let pooled = Arc::new(PooledConnection {
        connection,
        idle_channels: Mutex::new(Vec::new()),
    });
    *lock(&slot.current) = Some(pooled.clone());
    Ok(pooled)
}

// ---------------------------------------------------------------------------------------------
// Cold activation: one watcher per management listing or AMQP connection
// ---------------------------------------------------------------------------------------------

/// How often a watcher reads its queues while it has triggers. See
/// [`crate::ACTIVITY_WATCH_TICK`].
pub const WATCH_TICK: Duration = crate::ACTIVITY_WATCH_TICK;

/// The longest pause between watcher rounds after failed rounds.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the AMQP watcher leaves a queue alone after its passive declare failed (not found,
/// access refused): each such failure costs the broker closing the channel.
const AMQP_QUEUE_RETRY: Duration = Duration::from_secs(5);

/// The columns the management watcher lists: what every mode's value needs.
pub const LISTING_COLUMNS: &str =
    "name,messages,messages_ready,message_stats.publish_details.rate,message_stats.deliver_get_details.rate";

/// Counters of the activity watchers of a [`RabbitMqClients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatcherStats {
    /// Management watchers alive (one per host, credentials, TLS settings and vhost).
    pub http_watchers: usize,
    /// AMQP connections with watched queues.
    pub amqp_watchers: usize,
    /// Triggers registered over all watchers.
    pub triggers: usize,
    /// Watchers whose task is running.
    pub running: usize,
    /// Rounds made so far.
    pub rounds: u64,
    /// Requests made so far: management listings and passive `queue.declare`s.
    pub requests: u64,
}

/// Indexes a management API queue listing (`/api/queues/<vhost>`, a JSON array of queue
/// objects) by queue name; `None` when it is not such a listing.
pub fn index_listing(listing: &Json) -> Option<HashMap<&str, &Json>> {
    listing
        .as_array()?
        .iter()
        .map(|q| Some((q.get("name")?.as_str()?, q)))
        .collect()
}

/// The activity of `queue` in an indexed listing, exactly as [`Scaler::sample`] computes it from
/// the queue's own statistics ([`queue_stats_from_json`], then [`evaluate`]); `None` when the
/// listing cannot tell (queue not listed, statistics not collected yet).
pub fn listed_activity(
    index: &HashMap<&str, &Json>,
    queue: &str,
    mode: Mode,
    exclude_unacknowledged: bool,
    activation: f64,
) -> Option<bool> {
    let stats = queue_stats_from_json(index.get(queue)?).ok()?;
    Some(evaluate(mode, &stats, exclude_unacknowledged, activation).active)
}

/// What a watcher needs of one registered trigger.
#[derive(Clone)]
struct WatchSpec {
    queue: String,
    mode: Mode,
    exclude_unacknowledged: bool,
    activation: f64,
}

/// The triggers of one watcher and whether its task runs (set and cleared under the lock, so
/// that a registration racing with the task's end starts a new task).
#[derive(Default)]
struct WatchState {
    next_id: u64,
    running: bool,
    triggers: HashMap<u64, (WatchSpec, watch::Sender<bool>)>,
}

impl WatchState {
    fn register(&mut self, spec: WatchSpec) -> (u64, watch::Receiver<bool>) {
        self.next_id += 1;
        let (sender, receiver) = watch::channel(false);
        self.triggers.insert(self.next_id, (spec, sender));
        (self.next_id, receiver)
    }

    /// A runtime to spawn the task on, when it should start now.
    fn start(&mut self) -> Option<tokio::runtime::Handle> {
        if self.running || self.triggers.is_empty() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        self.running = true;
        Some(runtime)
    }

    /// Marks the task stopped when no trigger is left.
    fn finish_if_idle(&mut self) -> bool {
        if self.triggers.is_empty() {
            self.running = false;
            return true;
        }
        false
    }

    fn specs(&self) -> Vec<(u64, WatchSpec)> {
        self.triggers
            .iter()
            .map(|(id, (spec, _))| (*id, spec.clone()))
            .collect()
    }

    /// Flips the channels whose activity changed.
    fn publish(&self, results: &[(u64, bool)]) {
        for (id, active) in results {
            if let Some((_, sender)) = self.triggers.get(id) {
                sender.send_if_modified(|current| {
                    let changed = *current != *active;
                    *current = *active;
                    changed
                });
            }
        }
    }
}

/// The watchers' shared counters.
#[derive(Default)]
struct WatchCounters {
    rounds: AtomicU64,
    requests: AtomicU64,
}

/// Identity of a management watcher: the listing URL, the authorization and the TLS settings.
/// Holds credentials: never printed.
type HttpWatchKey = (String, Option<Vec<u8>>, TlsSettings);

/// Lists one vhost's queues every tick for all its registered (non-regex) management triggers.
struct HttpWatcher {
    target: HttpTarget,
    /// The broker address, credentials masked.
    shown: String,
    state: Mutex<WatchState>,
}

fn pause_after(failures: u32, tick: Duration) -> Duration {
    tick.saturating_mul(1 << failures.min(3))
        .min(tick.max(WATCH_MAX_BACKOFF))
}

/// A management watcher's task: a listing every tick while triggers are registered.
async fn http_watch_loop(watcher: Weak<HttpWatcher>, counters: Arc<WatchCounters>, tick: Duration) {
    let mut failures: u32 = 0;
    loop {
        let Some(w) = watcher.upgrade() else {
            return;
        };
        if lock(&w.state).finish_if_idle() {
            return;
        }
        let specs = lock(&w.state).specs();
        let (target, shown) = (w.target.clone(), w.shown.clone());
        // Not held during the request: dropping the last scaler frees the watcher at once.
        drop(w);
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let listing = tokio::time::timeout(
            target.timeout,
            http_get_json(&target, &shown, || "vhost not found".to_string(), None),
        )
        .await;
        let ok = match listing {
            Ok(Ok(doc)) => match index_listing(&doc) {
                Some(index) => {
                    let results: Vec<(u64, bool)> = specs
                        .iter()
                        .filter_map(|(id, s)| {
                            listed_activity(&index, &s.queue, s.mode, s.exclude_unacknowledged, s.activation)
                                .map(|active| (*id, active))
                        })
                        .collect();
                    if let Some(w) = watcher.upgrade() {
                        lock(&w.state).publish(&results);
                    }
                    true
                }
                None => false,
            },
            // Errors flip nothing: the polls report them.
            _ => false,
        };
        failures = if ok { 0 } else { failures.saturating_add(1) };
        tokio::time::sleep(pause_after(failures, tick)).await;
    }
}

/// An AMQP connection's watcher task: one passive `queue.declare` per watched queue every tick,
/// over one channel of the shared connection.
async fn amqp_watch_loop(
    slot: Weak<AmqpSlot>,
    counters: Arc<WatchCounters>,
    timeout: Duration,
    tick: Duration,
) {
    let mut failures: u32 = 0;
    let mut retry_at: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        let Some(s) = slot.upgrade() else {
            return;
        };
        if lock(&s.watch).finish_if_idle() {
            return;
        }
        drop(s);
        failures = if amqp_round(&slot, &counters, timeout, &mut retry_at).await {
            0
        } else {
            failures.saturating_add(1)
        };
        tokio::time::sleep(pause_after(failures, tick)).await;
    }
}

/// One AMQP watcher round. False when the connection or a channel failed.
async fn amqp_round(
    slot: &Weak<AmqpSlot>,
    counters: &WatchCounters,
    timeout: Duration,
    retry_at: &mut HashMap<String, tokio::time::Instant>,
) -> bool {
    let Some(s) = slot.upgrade() else {
        return true;
    };
    let specs = lock(&s.watch).specs();
    let pooled = match s.live() {
        Some(pooled) => pooled,
        // Never dialled: the first poll dials (nothing is dialled before the first sample).
        None if !s.dialled.load(Ordering::Relaxed) => return true,
        None => {
            let Some((uri, tls)) = lock(&s.dial).clone() else {
                return false;
            };
            match tokio::time::timeout(timeout, slot_connection(&s, &uri, tls.as_ref(), timeout)).await {
                Ok(Ok(pooled)) => pooled,
                _ => return false,
            }
        }
    };
    // Not held during the requests: dropping the last scaler closes the connection at once.
    drop(s);
    counters.rounds.fetch_add(1, Ordering::Relaxed);
    let now = tokio::time::Instant::now();
    retry_at.retain(|_, at| *at > now);
    let mut queues: Vec<&str> = specs.iter().map(|(_, s)| s.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    let mut channel: Option<Channel> = None;
    let mut ok = true;
    for queue in queues {
        if retry_at.contains_key(queue) {
            continue;
        }
        let Ok(name) = ShortString::try_new(queue) else {
            continue;
        };
        let ch = match channel.take() {
            Some(ch) if ch.status().connected() => ch,
            _ => match tokio::time::timeout(timeout, pooled.channel()).await {
                Ok(Ok(ch)) => ch,
                _ => {
                    ok = false;
                    break;
                }
            },
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match tokio::time::timeout(timeout, ch.queue_declare(name, options, FieldTable::default())).await {
            Ok(Ok(q)) => {
                counts.insert(queue, q.message_count());
                channel = Some(ch);
            }
            Ok(Err(e)) if connection_failed(&e, &pooled) => {
                if let Some(s) = slot.upgrade() {
                    s.discard(&pooled);
                }
                ok = false;
                break;
            }
            // The broker closed the channel (not found, refused): leave the queue alone a while.
            Ok(Err(_)) => {
                retry_at.insert(queue.to_string(), now + AMQP_QUEUE_RETRY);
            }
            // The channel's state is unknown: it is dropped.
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    if let Some(ch) = channel {
        pooled.give_back(ch);
    }
    let results: Vec<(u64, bool)> = specs
        .iter()
        .filter_map(|(id, s)| {
            let ready = f64::from(*counts.get(s.queue.as_str())?);
            let stats = QueueStats {
                messages: ready,
                messages_ready: ready,
                ..QueueStats::default()
            };
            Some((*id, evaluate(s.mode, &stats, false, s.activation).active))
        })
        .collect();
    if let Some(s) = slot.upgrade() {
        lock(&s.watch).publish(&results);
    }
    ok
}

/// Where a scaler is registered for activity pushes.
enum Watcher {
    Http(Arc<HttpWatcher>),
    Amqp(Arc<AmqpSlot>),
}

impl Watcher {
    fn state(&self) -> &Mutex<WatchState> {
        match self {
            Watcher::Http(w) => &w.state,
            Watcher::Amqp(s) => &s.watch,
        }
    }
}

/// A scaler's place in its watcher; unregisters when the scaler is dropped.
struct Registration {
    watcher: Watcher,
    id: u64,
    /// The activity channel as of the scaler's last sample (marked seen when a sample starts, so
    /// that a flip during or after it still wakes the caller).
    seen: Mutex<watch::Receiver<bool>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(self.watcher.state()).triggers.remove(&self.id);
    }
}

// ---------------------------------------------------------------------------------------------
// The scaler
// ---------------------------------------------------------------------------------------------

/// How a scaler reaches its queue.
enum Access {
    Amqp(Box<AmqpTarget>),
    Http(Box<HttpTarget>),
}

/// What a scaler needs for its management API request.
#[derive(Clone)]
struct HttpTarget {
    /// The request URI (no credentials).
    uri: Uri,
    /// `Authorization: Basic …`, marked sensitive.
    authorization: Option<HeaderValue>,
    tls: TlsSettings,
    client: HttpClient,
    timeout: Duration,
}

/// One rabbitmq trigger: where its queue is, how to read it, and its thresholds.
pub struct RabbitMqScaler {
    clients: Arc<RabbitMqClients>,
    /// The registration with the watcher that pushes activity changes (AMQP, and management
    /// without `useRegex`).
    registration: Option<Registration>,
    access: Access,
    /// The broker address, credentials masked.
    shown: String,
    protocol: Protocol,
    queue: String,
    vhost: String,
    mode: Mode,
    use_regex: bool,
    operation: Operation,
    page_size: i64,
    exclude_unacknowledged: bool,
    target: f64,
    activation: f64,
}

impl RabbitMqScaler {
    /// Builds the scaler from the trigger's parsed parameters (see [`crate::rabbitmq`]) and its
    /// thresholds. Validates the address and the TLS material; dials nothing (needs no async
    /// runtime).
    pub fn new(
        clients: Arc<RabbitMqClients>,
        params: &ParsedParams,
        thresholds: Thresholds,
    ) -> Result<Self, ScalerError> {
        let missing = |name: &str| ScalerError::InvalidConfig(format!("rabbitmq: {name} has no value"));
        let host = params.str("host").ok_or_else(|| missing("host"))?;
        let queue = params.str("queueName").ok_or_else(|| missing("queueName"))?;
        let protocol = match rabbitmq::protocol(params) {
            Some(Ok(p)) => p,
            Some(Err(problem)) => {
                return Err(ScalerError::InvalidConfig(format!("rabbitmq host: {problem}")));
            }
            None => return Err(missing("host")),
        };
        let address = BrokerAddress::parse(
            host,
            params.str("vhostName").filter(|v| !v.is_empty()),
            params.str("username"),
            params.str("password"),
        )?;
        let shown = address.shown();
        let scheme_protocol = if address.scheme.starts_with("amqp") {
            Protocol::Amqp
        } else {
            Protocol::Http
        };
        if scheme_protocol != protocol {
            return Err(ScalerError::InvalidConfig(format!(
                "rabbitmq: protocol is {} but host {shown} is not an {} URL",
                if protocol == Protocol::Amqp {
                    "amqp"
                } else {
                    "http"
                },
                if protocol == Protocol::Amqp {
                    "amqp:// or amqps://"
                } else {
                    "http:// or https://"
                },
            )));
        }
        let mode = match params.str("mode") {
            Some(name) => Mode::from_name(name)
                .ok_or_else(|| ScalerError::InvalidConfig(format!("rabbitmq: unknown mode {name:?}")))?,
            None => Mode::QueueLength,
        };
        let use_regex = params.bool("useRegex").unwrap_or(false);
        let exclude_unacknowledged = params.bool("excludeUnacknowledged").unwrap_or(false);
        if protocol == Protocol::Amqp && (mode != Mode::QueueLength || use_regex || exclude_unacknowledged) {
            return Err(ScalerError::InvalidConfig(
                "rabbitmq: over AMQP only mode QueueLength works, without useRegex or \
                 excludeUnacknowledged; use protocol http"
                    .into(),
            ));
        }
        let operation = match params.str("operation") {
            Some(name) => Operation::from_name(name)
                .ok_or_else(|| ScalerError::InvalidConfig(format!("rabbitmq: unknown operation {name:?}")))?,
            None => Operation::Sum,
        };
        let page_size = params.int("pageSize").unwrap_or(100).max(1);
        let timeout = match params.int("timeout") {
            Some(ms) if ms > 0 => Duration::from_millis(ms.unsigned_abs()),
            Some(_) => {
                return Err(ScalerError::InvalidConfig(
                    "rabbitmq: timeout must be at least 1 (milliseconds)".into(),
                ));
            }
            None => clients.default_timeout,
        };
        let tls = TlsSettings::from_params(params, &address)?;

        let access = match protocol {
            Protocol::Amqp => {
                if ShortString::try_new(queue).is_err() {
                    return Err(ScalerError::InvalidConfig(
                        "rabbitmq: queueName is longer than 255 bytes".into(),
                    ));
                }
                let external = tls.client_auth.is_some() && address.username.is_none();
                let userinfo = match (&address.username, &address.password) {
                    (None, None) => AMQPUserInfo::default(),
                    (user, password) => AMQPUserInfo {
                        username: user.clone().unwrap_or_default(),
                        password: password.clone().unwrap_or_default(),
                    },
                };
                let uri = AMQPUri {
                    scheme: if address.is_tls() {
                        AMQPScheme::AMQPS
                    } else {
                        AMQPScheme::AMQP
                    },
                    authority: AMQPAuthority {
                        userinfo,
                        host: address.host.clone(),
                        port: address.port,
                    },
                    vhost: address.vhost.clone(),
                    query: AMQPQueryString {
                        auth_mechanism: external.then_some(SASLMechanism::External),
                        ..AMQPQueryString::default()
                    },
                };
                let tls_config = if address.is_tls() {
                    Some((clients.tls_config(&tls)?, tls.clone()))
                } else {
                    None
                };
                let key = AmqpKey {
                    uri: format!(
                        "{}|{}|{}|{}|{}|{}|{external}",
                        uri.scheme,
                        uri.authority.userinfo.username,
                        uri.authority.userinfo.password,
                        uri.authority.host,
                        uri.authority.port,
                        uri.vhost
                    ),
                    tls: tls_config.as_ref().map(|(_, s)| s.clone()),
                };
                let secrets = address
                    .password
                    .iter()
                    .filter(|p| !p.is_empty())
                    .cloned()
                    .collect();
                Access::Amqp(Box::new(AmqpTarget {
                    uri,
                    tls: tls_config,
                    secrets,
                    slot: clients.amqp_slot(key),
                }))
            }
            Protocol::Http => {
                let url = if use_regex {
                    address.regex_url(queue, page_size)
                } else {
                    address.queue_url(queue)
                };
                let uri = url.parse::<Uri>().map_err(|e| {
                    ScalerError::InvalidConfig(format!("rabbitmq: {shown} gives no valid request URI ({e})"))
                })?;
                let client = clients.http_client(&tls)?;
                Access::Http(Box::new(HttpTarget {
                    uri,
                    authorization: address.basic_auth()?,
                    tls,
                    client,
                    timeout,
                }))
            }
        };
        let spec = WatchSpec {
            queue: queue.to_string(),
            mode,
            exclude_unacknowledged,
            activation: thresholds.activation,
        };
        let registration = match &access {
            Access::Amqp(target) => {
                let mut dial = lock(&target.slot.dial);
                if dial.is_none() {
                    *dial = Some((target.uri.clone(), target.tls.as_ref().map(|(c, _)| c.clone())));
                }
                drop(dial);
                Some(Watcher::Amqp(target.slot.clone()))
            }
            // A regex is matched by the broker (Erlang's re): left to the polls.
            Access::Http(_) if use_regex => None,
            Access::Http(target) => {
                let listing = address.listing_url().parse::<Uri>().map_err(|e| {
                    ScalerError::InvalidConfig(format!("rabbitmq: {shown} gives no valid request URI ({e})"))
                })?;
                Some(Watcher::Http(clients.http_watcher(target, listing, &shown)))
            }
        }
        .map(|watcher| {
            let (id, seen) = lock(watcher.state()).register(spec);
            Registration {
                watcher,
                id,
                seen: Mutex::new(seen),
            }
        });
        let scaler = Self {
            clients,
            registration,
            access,
            shown,
            protocol,
            queue: queue.to_string(),
            vhost: address.vhost,
            mode,
            use_regex,
            operation,
            page_size,
            exclude_unacknowledged,
            target: thresholds.target,
            activation: thresholds.activation,
        };
        scaler.ensure_watching();
        Ok(scaler)
    }

    /// Starts the watcher's task if it is not running (and a runtime is at hand).
    fn ensure_watching(&self) {
        let Some(r) = &self.registration else {
            return;
        };
        let tick = self.clients.watch_tick;
        if tick.is_zero() {
            return;
        }
        let Some(runtime) = lock(r.watcher.state()).start() else {
            return;
        };
        let counters = self.clients.watch_counters.clone();
        match &r.watcher {
            Watcher::Http(w) => runtime.spawn(http_watch_loop(Arc::downgrade(w), counters, tick)),
            Watcher::Amqp(slot) => runtime.spawn(amqp_watch_loop(
                Arc::downgrade(slot),
                counters,
                self.clients.default_timeout,
                tick,
            )),
        };
    }

    /// The protocol used (after resolving `auto`). Over [`Protocol::Amqp`], unacked messages are
    /// not counted: see [`amqp_hides_unacked_note`].
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The broker address with credentials masked and the vhost escaped, e.g.
    /// `amqp://<redacted>@127.0.0.1:5672/%2F`.
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// The vhost, decoded (`/` for the default one).
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Reads the queue's statistics once (over AMQP only `messages` is known: the ready count).
    pub async fn queue_stats(&self) -> Result<QueueStats, ScalerError> {
        match &self.access {
            Access::Amqp(target) => {
                let ready = self.amqp_message_count(target).await? as f64;
                Ok(QueueStats {
                    messages: ready,
                    messages_ready: ready,
                    ..QueueStats::default()
                })
            }
            Access::Http(target) => {
                let doc = self.fetch(target).await?;
                let stats = if self.use_regex {
                    regex_stats_from_json(&doc, self.operation, self.page_size)
                } else {
                    queue_stats_from_json(&doc)
                };
                stats.map_err(|problem| ScalerError::bad_response(&self.shown, problem))
            }
        }
    }

    async fn amqp_message_count(&self, target: &AmqpTarget) -> Result<u32, ScalerError> {
        let timeout = self.clients.default_timeout;
        match tokio::time::timeout(timeout, self.amqp_declare(target)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ScalerError::timeout(&self.shown, timeout)),
        }
    }

    /// Passive `queue.declare` on a pooled connection, dialling it first if needed.
    async fn amqp_declare(&self, target: &AmqpTarget) -> Result<u32, ScalerError> {
        let pooled = self.amqp_connection(target).await?;
        let failed = |step: &str, e: &lapin::Error| {
            if connection_failed(e, &pooled) {
                target.slot.discard(&pooled);
            }
            amqp_error(&self.clients, target, &self.shown, step, e)
        };
        let channel = pooled
            .channel()
            .await
            .map_err(|e| failed("cannot open a channel", &e))?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // Length checked when the scaler was built.
        let name = ShortString::try_new(self.queue.as_str())
            .map_err(|_| ScalerError::InvalidConfig("rabbitmq: queueName is longer than 255 bytes".into()))?;
        match channel.queue_declare(name, options, FieldTable::default()).await {
            Ok(queue) => {
                pooled.give_back(channel);
                Ok(queue.message_count())
            }
            Err(e) => {
                let step = if is_not_found(&e) {
                    format!("queue {:?} not found in vhost {:?}", self.queue, self.vhost)
                } else {
                    format!("passive queue.declare of {:?} failed", self.queue)
                };
                Err(failed(&step, &e))
            }
        }
    }

    async fn amqp_connection(&self, target: &AmqpTarget) -> Result<Arc<PooledConnection>, ScalerError> {
        let tls = target.tls.as_ref().map(|(config, _)| config);
        let pooled = slot_connection(&target.slot, &target.uri, tls, self.clients.default_timeout)
            .await
            .map_err(|e| amqp_error(&self.clients, target, &self.shown, "cannot connect", &e))?;
        target.slot.dialled.store(true, Ordering::Relaxed);
        Ok(pooled)
    }

    async fn fetch(&self, target: &HttpTarget) -> Result<Json, ScalerError> {
        match tokio::time::timeout(target.timeout, self.request(target)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ScalerError::timeout(&self.shown, target.timeout)),
        }
    }

    async fn request(&self, target: &HttpTarget) -> Result<Json, ScalerError> {
        let not_found = || {
            if self.use_regex {
                format!("vhost {:?} not found", self.vhost)
            } else {
                format!("queue {:?} not found in vhost {:?}", self.queue, self.vhost)
            }
        };
        let roots = if target.uri.scheme_str() == Some("https") {
            self.clients.roots_problem(&target.tls)
        } else {
            None
        };
        http_get_json(target, &self.shown, not_found, roots).await
    }
}

/// One management API GET: the JSON answer, or an error naming `shown` (never credentials).
/// `not_found` says what a 404 means; `roots_problem` is added to connection errors.
async fn http_get_json(
    target: &HttpTarget,
    shown: &str,
    not_found: impl FnOnce() -> String,
    roots_problem: Option<&str>,
) -> Result<Json, ScalerError> {
    let mut request = Request::get(target.uri.clone())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .header(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("ebb/", env!("CARGO_PKG_VERSION"))),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| ScalerError::InvalidConfig(format!("cannot build a request for {shown}: {e}")))?;
    if let Some(auth) = &target.authorization {
        request.headers_mut().insert(header::AUTHORIZATION, auth.clone());
    }
    let response = target.client.request(request).await.map_err(|e| {
        let mut message = if e.is_connect() {
            format!("cannot connect: {}", source_chain(e.source()))
        } else {
            format!("request failed: {}", error_chain(&e))
        };
        if let Some(problem) = roots_problem {
            message.push_str(&format!(" ({problem})"));
        }
        ScalerError::unreachable(shown, message)
    })?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ScalerError::unauthorized(
            shown,
            format!("HTTP status {status} from the management API"),
        ));
    }
    if status == StatusCode::NOT_FOUND {
        let what = not_found();
        return Err(ScalerError::bad_response(
            shown,
            format!("{what} (HTTP 404 from {})", target.uri.path()),
        ));
    }
    if !status.is_success() {
        return Err(ScalerError::bad_response(
            shown,
            format!("HTTP status {status} from {}, expected 2xx", target.uri.path()),
        ));
    }
    crate::metrics_api::scaler::read_json_body(response.into_body(), MAX_BODY_BYTES, shown).await
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

impl fmt::Debug for RabbitMqScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqScaler")
            .field("endpoint", &self.shown)
            .field("protocol", &self.protocol)
            .field("queue", &self.queue)
            .field("vhost", &self.vhost)
            .field("mode", &self.mode)
            .field("use_regex", &self.use_regex)
            .field("operation", &self.operation)
            .field("exclude_unacknowledged", &self.exclude_unacknowledged)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for RabbitMqScaler {
    fn trigger_type(&self) -> &'static str {
        "rabbitmq"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        if let Some(r) = &self.registration {
            self.ensure_watching();
            lock(&r.seen).borrow_and_update();
        }
        let stats = self.queue_stats().await?;
        Ok(evaluate(
            self.mode,
            &stats,
            self.exclude_unacknowledged,
            self.activation,
        ))
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        let r = self.registration.as_ref()?;
        self.ensure_watching();
        Some(lock(&r.seen).clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Error text
// ---------------------------------------------------------------------------------------------

/// Replaces every occurrence of a secret with `<redacted>` (defence in depth: neither lapin nor
/// RabbitMQ is known to quote passwords).
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
}

/// `error: source: source…`, skipping repeated messages.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    append_sources(&mut parts, error.source());
    parts.join(": ")
}

/// The messages of `first` and its sources, or "unknown error".
fn source_chain(first: Option<&(dyn StdError + 'static)>) -> String {
    let mut parts = Vec::new();
    append_sources(&mut parts, first);
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

fn append_sources(parts: &mut Vec<String>, mut next: Option<&(dyn StdError + 'static)>) {
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_with;
    use serde_json::json;

    fn address(host: &str) -> BrokerAddress {
        BrokerAddress::parse(host, None, None, None).unwrap()
    }

    #[test]
    fn listing_activity_matches_sample_semantics() {
        let listing = json!([
            {"name": "empty", "messages": 0, "messages_ready": 0},
            {"name": "one", "messages": 1, "messages_ready": 1,
             "message_stats": {"publish_details": {"rate": 0.0}}},
            {"name": "unacked", "messages": 3, "messages_ready": 0},
            {"name": "fresh"},
            {"name": "publishing", "messages": 0, "messages_ready": 0,
             "message_stats": {"publish_details": {"rate": 2.5}, "deliver_get_details": {"rate": 0.0}}},
        ]);
        let index = index_listing(&listing).unwrap();
        let q = Mode::QueueLength;
        assert_eq!(listed_activity(&index, "empty", q, false, 0.0), Some(false));
        assert_eq!(listed_activity(&index, "one", q, false, 0.0), Some(true));
        assert_eq!(
            listed_activity(&index, "one", q, false, 1.0),
            Some(false),
            "strictly greater"
        );
        assert_eq!(listed_activity(&index, "unacked", q, false, 0.0), Some(true));
        assert_eq!(listed_activity(&index, "unacked", q, true, 0.0), Some(false));
        // Unknown (not listed, statistics not collected): never claimed inactive.
        assert_eq!(listed_activity(&index, "missing", q, false, 0.0), None);
        assert_eq!(listed_activity(&index, "fresh", q, false, 0.0), None);
        // The rate modes read the same numbers as evaluate() on the queue's own document.
        assert_eq!(
            listed_activity(&index, "publishing", Mode::MessageRate, false, 0.0),
            Some(true)
        );
        assert_eq!(
            listed_activity(&index, "publishing", Mode::PublishedToDeliveredRatio, false, 0.0),
            Some(true)
        );
        assert_eq!(
            listed_activity(&index, "publishing", Mode::DeliverGetRate, false, 0.0),
            Some(false)
        );
        for doc in [&listing[1], &listing[4]] {
            for mode in [
                q,
                Mode::MessageRate,
                Mode::DeliverGetRate,
                Mode::ExpectedQueueConsumptionTime,
            ] {
                let name = doc["name"].as_str().unwrap();
                let polled = evaluate(mode, &queue_stats_from_json(doc).unwrap(), false, 0.0).active;
                assert_eq!(listed_activity(&index, name, mode, false, 0.0), Some(polled));
            }
        }
        assert!(index_listing(&json!({"items": []})).is_none());
        assert!(index_listing(&json!([{"messages": 1}])).is_none());
        assert_eq!(
            address("http://u:p@h:15672/path/vh").listing_url(),
            format!("http://h:15672/path/api/queues/vh?columns={LISTING_COLUMNS}")
        );
    }

    #[test]
    fn amqp_vhost_and_credentials_from_the_url() {
        let a = address("amqp://u:p@h:5672/vh");
        assert_eq!((a.host.as_str(), a.port, a.vhost.as_str()), ("h", 5672, "vh"));
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(a.shown(), "amqp://<redacted>@h:5672/vh");

        let cases = [
            ("amqp://h:5672", "/", 5672),
            ("amqp://h:5672/", "/", 5672),
            ("amqp://h/%2f", "/", 5672),
            ("amqp://h/%2F", "/", 5672),
            ("amqp://h/my%20vhost", "my vhost", 5672),
            ("amqps://h", "/", 5671),
            ("AMQPS://h:1234/x", "x", 1234),
        ];
        for (host, vhost, port) in cases {
            let a = address(host);
            assert_eq!((a.vhost.as_str(), a.port), (vhost, port), "{host}");
            assert!(a.username.is_none() && a.password.is_none(), "{host}");
        }
        let a = address("amqp://ad%40min:p%3Ass@h/");
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("ad@min"), Some("p:ss"))
        );
        assert_eq!(address("amqp://h:5672/").shown(), "amqp://h:5672/%2F");
    }

    #[test]
    fn http_vhost_and_path_prefix() {
        let cases = [
            (
                "http://h:15672/path/prefix/vh",
                "vh",
                "/path/prefix",
                "http://h:15672/path/prefix/api/queues/vh/q",
            ),
            ("http://h:15672/", "/", "", "http://h:15672/api/queues/%2F/q"),
            ("http://h:15672", "/", "", "http://h:15672/api/queues/%2F/q"),
            ("http://h:15672/%2F", "/", "", "http://h:15672/api/queues/%2F/q"),
            (
                "http://h/prefix/",
                "/",
                "/prefix",
                "http://h:80/prefix/api/queues/%2F/q",
            ),
            (
                "https://h/my%20vh",
                "my vh",
                "",
                "https://h:443/api/queues/my%20vh/q",
            ),
            (
                "http://[::1]:15672/vh",
                "vh",
                "",
                "http://[::1]:15672/api/queues/vh/q",
            ),
        ];
        for (host, vhost, prefix, url) in cases {
            let a = address(host);
            assert_eq!(a.vhost, vhost, "{host}");
            assert_eq!(a.path_prefix, prefix, "{host}");
            assert_eq!(a.queue_url("q"), url, "{host}");
        }
    }

    #[test]
    fn vhost_name_overrides_and_names_are_escaped() {
        let a = BrokerAddress::parse("http://h:15672/ignored", Some("team/a"), None, None).unwrap();
        assert_eq!(a.vhost, "team/a");
        assert_eq!(
            a.queue_url("orders new/1"),
            "http://h:15672/api/queues/team%2Fa/orders%20new%2F1"
        );
        assert_eq!(a.queue_url(".."), "http://h:15672/api/queues/team%2Fa/%2E%2E");
        assert_eq!(
            a.queue_url("q?x#y"),
            "http://h:15672/api/queues/team%2Fa/q%3Fx%23y"
        );
        let a = BrokerAddress::parse("amqp://h/vh", Some("/"), None, None).unwrap();
        assert_eq!(a.vhost, "/");
        assert_eq!(
            address("http://h:15672/").regex_url("^scale-.*$", 50),
            "http://h:15672/api/queues/%2F?page=1&use_regex=true&pagination=false&name=%5Escale-.%2A%24&page_size=50"
        );
    }

    #[test]
    fn credential_params_override_the_url() {
        let a = BrokerAddress::parse("http://a:b@h/", None, Some("u"), Some("p")).unwrap();
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let auth = a.basic_auth().unwrap().unwrap();
        assert!(auth.is_sensitive());
        let expected = base64::engine::general_purpose::STANDARD.encode("u:p");
        assert_eq!(auth.to_str().unwrap(), format!("Basic {expected}"));
        assert!(address("http://h/").basic_auth().unwrap().is_none());
    }

    #[test]
    fn bad_hosts_never_show_credentials() {
        for bad in [
            "ftp://u:secret@h/x",
            "u:secret@h/x",
            "amqp://u:secret@/x",
            "http://u:secret@h/vh?x=1",
            "http://u:pa/secret@h/",
            "not a url secret",
        ] {
            let e = BrokerAddress::parse(bad, None, None, None).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains("secret"), "{text}");
            assert_eq!(e.kind(), "invalid_config");
        }
        let a = address("amqp://user:secret@h/vh");
        assert!(!format!("{a:?}").contains("secret"));
    }

    fn stats(messages: f64, ready: f64, publish: f64, deliver: f64) -> QueueStats {
        QueueStats {
            messages,
            messages_ready: ready,
            publish_rate: publish,
            deliver_get_rate: deliver,
        }
    }

    #[test]
    fn modes_and_activity() {
        use Mode::*;
        type Case = (Mode, [f64; 4], bool, f64, f64, bool);
        // (mode, [messages, ready, publish rate, deliver rate], excludeUnacknowledged, activation)
        //   => (value, active)
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (QueueLength, [10.0, 7.0, 0.0, 0.0], false, 0.0, 10.0, true),
            (QueueLength, [10.0, 7.0, 0.0, 0.0], true, 0.0, 7.0, true),
            (QueueLength, [5.0, 5.0, 0.0, 0.0], false, 5.0, 5.0, false),
            (QueueLength, [0.0, 0.0, 0.0, 0.0], false, 0.0, 0.0, false),
            (QueueLength, [3.0, 0.0, 0.0, 0.0], true, 0.0, 0.0, false),
            (MessageRate, [0.0, 0.0, 2.5, 0.0], false, 0.0, 2.5, true),
            (MessageRate, [4.0, 4.0, 0.0, 0.0], false, 1.0, 0.0, true),
            (MessageRate, [4.0, 0.0, 0.0, 0.0], true, 1.0, 0.0, false),
            (MessageRate, [1.0, 1.0, 1.0, 0.0], false, 1.0, 1.0, false),
            (DeliverGetRate, [9.0, 9.0, 9.0, 3.0], false, 2.0, 3.0, true),
            (DeliverGetRate, [9.0, 9.0, 9.0, 2.0], false, 2.0, 2.0, false),
            (DeliverGetRate, [9.0, 9.0, 9.0, 0.0], false, 0.0, 0.0, false),
            (PublishedToDeliveredRatio, [0.0, 0.0, 6.0, 3.0], false, 1.0, 2.0, true),
            (PublishedToDeliveredRatio, [0.0, 0.0, 3.0, 3.0], false, 1.0, 1.0, false),
            // deliver = 0 and publish > 0: reports activationValue, active.
            (PublishedToDeliveredRatio, [0.0, 0.0, 3.0, 0.0], false, 1.5, 1.5, true),
            (PublishedToDeliveredRatio, [0.0, 0.0, 3.0, 0.0], false, 0.0, 0.0, true),
            // 0 / 0: 0, inactive (KEDA's NaN).
            (PublishedToDeliveredRatio, [8.0, 8.0, 0.0, 0.0], false, 0.0, 0.0, false),
            (PublishedToDeliveredRatio, [0.0, 0.0, 0.0, 4.0], false, 0.0, 0.0, false),
            // (2 - 1) / 1 + 10 / 1 = 11 seconds.
            (ExpectedQueueConsumptionTime, [10.0, 10.0, 2.0, 1.0], false, 0.0, 11.0, true),
            (ExpectedQueueConsumptionTime, [10.0, 4.0, 2.0, 1.0], true, 0.0, 5.0, true),
            (ExpectedQueueConsumptionTime, [10.0, 10.0, 2.0, 1.0], false, 11.0, 11.0, false),
            // No messages: 0, whatever the rates.
            (ExpectedQueueConsumptionTime, [0.0, 0.0, 5.0, 1.0], false, 0.0, 0.0, false),
            (ExpectedQueueConsumptionTime, [0.0, 0.0, 5.0, 0.0], false, 0.0, 0.0, false),
            // deliver = 0 with messages: reports activationValue, active.
            (ExpectedQueueConsumptionTime, [3.0, 3.0, 5.0, 0.0], false, 7.0, 7.0, true),
            (ExpectedQueueConsumptionTime, [3.0, 3.0, 0.0, 0.0], false, 0.0, 0.0, true),
            // Draining fast with a small backlog: (1 - 10) / 10 + 2 / 10 < 0, reported as 0.
            (ExpectedQueueConsumptionTime, [2.0, 2.0, 1.0, 10.0], false, 0.0, 0.0, false),
        ];
        for (i, (mode, [m, r, p, d], exclude, activation, value, active)) in cases.iter().enumerate() {
            let got = evaluate(*mode, &stats(*m, *r, *p, *d), *exclude, *activation);
            assert!(
                (got.value - value).abs() < 1e-9 && got.active == *active,
                "case {i} ({}): got {got:?}, expected value {value} active {active}",
                mode.name()
            );
        }
    }

    #[test]
    fn mode_and_operation_names() {
        for name in crate::rabbitmq::MODES {
            assert_eq!(Mode::from_name(name).map(Mode::name), Some(*name));
        }
        assert_eq!(Mode::from_name("queueLength"), None);
        assert_eq!(Operation::from_name("avg"), Some(Operation::Avg));
        assert_eq!(Operation::from_name("median"), None);
    }

    fn queue_json(name: &str, messages: u64, ready: u64, publish: f64, deliver: f64) -> Json {
        json!({
            "name": name,
            "messages": messages,
            "messages_ready": ready,
            "messages_unacknowledged": messages - ready,
            "message_stats": {
                "publish_details": {"rate": publish},
                "deliver_get_details": {"rate": deliver},
            },
        })
    }

    #[test]
    fn regex_listings_aggregate() {
        let listing = json!({
            "items": [
                queue_json("a", 10, 4, 1.0, 2.0),
                queue_json("b", 2, 2, 3.0, 0.0),
                queue_json("c", 6, 0, 0.5, 4.0),
            ],
            "page_count": 1,
            "page_size": 100,
        });
        let sum = regex_stats_from_json(&listing, Operation::Sum, 100).unwrap();
        assert_eq!(sum, stats(18.0, 6.0, 4.5, 6.0));
        let avg = regex_stats_from_json(&listing, Operation::Avg, 100).unwrap();
        assert_eq!(avg, stats(6.0, 2.0, 1.5, 2.0));
        let max = regex_stats_from_json(&listing, Operation::Max, 100).unwrap();
        assert_eq!(max, stats(10.0, 4.0, 3.0, 4.0));

        let empty = json!({"items": [], "page_count": 0});
        for op in [Operation::Sum, Operation::Avg, Operation::Max] {
            assert_eq!(
                regex_stats_from_json(&empty, op, 100).unwrap(),
                QueueStats::default()
            );
        }
        let paged = json!({"items": [queue_json("a", 1, 1, 0.0, 0.0)], "page_count": 2});
        let e = regex_stats_from_json(&paged, Operation::Sum, 1).unwrap_err();
        assert!(e.contains("2 pages of 1") && e.contains("pageSize"), "{e}");
        assert!(regex_stats_from_json(&json!({"page_count": 1}), Operation::Sum, 1).is_err());
        // A queue without statistics yet is left out; only such queues is an error.
        let fresh = json!({"name": "new", "consumers": 0});
        let mixed = json!({"items": [queue_json("a", 4, 4, 0.0, 0.0), fresh.clone()], "page_count": 1});
        assert_eq!(
            regex_stats_from_json(&mixed, Operation::Avg, 100).unwrap(),
            stats(4.0, 4.0, 0.0, 0.0)
        );
        let only_fresh = json!({"items": [fresh], "page_count": 1});
        let e = regex_stats_from_json(&only_fresh, Operation::Sum, 100).unwrap_err();
        assert!(e.contains("statistics yet"), "{e}");
    }

    #[test]
    fn queue_objects() {
        let q = queue_json("q", 20, 17, 32.6, 30.0);
        assert_eq!(queue_stats_from_json(&q).unwrap(), stats(20.0, 17.0, 32.6, 30.0));
        // A queue without traffic has no message_stats: rates are 0.
        let idle = json!({"name": "q", "messages": 3, "messages_ready": 3});
        assert_eq!(queue_stats_from_json(&idle).unwrap(), stats(3.0, 3.0, 0.0, 0.0));
        let partial = json!({"messages": 3, "messages_ready": 3, "message_stats": {"publish": 5}});
        assert_eq!(
            queue_stats_from_json(&partial).unwrap(),
            stats(3.0, 3.0, 0.0, 0.0)
        );
        // Statistics not collected yet: an error, never a 0 that could scale to zero.
        let fresh = json!({"name": "new-q", "consumers": 0});
        let e = queue_stats_from_json(&fresh).unwrap_err();
        assert!(e.contains("messages") && e.contains("new-q"), "{e}");
        assert!(queue_stats_from_json(&json!({"messages": "3", "messages_ready": 3})).is_err());
        assert!(queue_stats_from_json(&json!([1])).is_err());
    }

    fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<RabbitMqScaler, ScalerError> {
        scaler_with(Arc::new(RabbitMqClients::default()), meta, auth)
    }

    fn scaler_with(
        clients: Arc<RabbitMqClients>,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<RabbitMqScaler, ScalerError> {
        let params = parse_with(&crate::rabbitmq::DECL, meta, auth).unwrap();
        let thresholds = (crate::rabbitmq::DECL.thresholds)(&params);
        RabbitMqScaler::new(clients, &params, thresholds)
    }

    #[test]
    fn scalers_share_amqp_slots_by_identity() {
        let clients = Arc::new(RabbitMqClients::default());
        let build = |host: &str, queue: &str| {
            scaler_with(clients.clone(), &[("host", host), ("queueName", queue)], &[]).unwrap()
        };
        let slot = |s: &RabbitMqScaler| match &s.access {
            Access::Amqp(t) => t.slot.clone(),
            Access::Http(_) => panic!("not amqp"),
        };
        let a = build("amqp://u:p@h:5672/vh", "q1");
        let b = build("amqp://u:p@h:5672/vh", "q2");
        let c = build("amqp://u:other@h:5672/vh", "q1");
        let d = build("amqp://u:p@h:5672/other", "q1");
        assert!(Arc::ptr_eq(&slot(&a), &slot(&b)));
        assert!(!Arc::ptr_eq(&slot(&a), &slot(&c)));
        assert!(!Arc::ptr_eq(&slot(&a), &slot(&d)));
        assert_eq!(clients.amqp_connection_count(), 0);
        // Slots die with their last scaler.
        drop((a, b, c, d));
        let e = build("amqp://u:p@h:5672/vh", "q1");
        // The scaler's target and its watcher registration, and the clone here.
        assert_eq!(Arc::strong_count(&slot(&e)), 3);
        assert_eq!(lock(&clients.amqp_slots).len(), 1);
    }

    #[test]
    fn build_checks() {
        let ok = scaler(&[("host", "http://h:15672/"), ("queueName", "q")], &[]).unwrap();
        assert_eq!(
            (ok.protocol(), ok.mode(), ok.vhost()),
            (Protocol::Http, Mode::QueueLength, "/")
        );
        assert_eq!(ok.metric_target().target_value, 20.0);
        let ok = scaler(
            &[
                ("host", "http://h/"),
                ("queueName", "q"),
                ("mode", "MessageRate"),
                ("value", "2.5"),
                ("activationValue", "1"),
                ("timeout", "250"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            (ok.mode(), ok.target, ok.activation),
            (Mode::MessageRate, 2.5, 1.0)
        );
        assert!(matches!(&ok.access, Access::Http(t) if t.timeout == Duration::from_millis(250)));

        type Pairs = &'static [(&'static str, &'static str)];
        let long_queue = "q".repeat(256);
        let failures: &[(Pairs, Pairs, &str)] = &[
            (
                &[("host", "http://h/"), ("queueName", "q"), ("protocol", "amqp")],
                &[],
                "protocol is amqp",
            ),
            (
                &[("host", "amqp://h/"), ("queueName", "q")],
                &[("tls", "enable")],
                "not an amqps://",
            ),
            (
                &[("host", "amqps://h/"), ("queueName", "q")],
                &[
                    ("tls", "enable"),
                    ("cert", "c"),
                    ("key", "k"),
                    ("keyPassword", "pw"),
                ],
                "keyPassword",
            ),
            (
                &[("host", "amqps://h/"), ("queueName", "q")],
                &[("tls", "enable"), ("ca", "not pem")],
                "ca holds no PEM",
            ),
            (
                &[("host", "https://h/"), ("queueName", "q")],
                &[
                    ("tls", "enable"),
                    (
                        "cert",
                        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    ),
                    ("key", "hunter2-key-material"),
                ],
                "",
            ),
        ];
        for (meta, auth, expected) in failures {
            let e = scaler(meta, auth).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.kind(), "invalid_config", "{text}");
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("hunter2") && !text.contains("pw"), "{text}");
        }
        let e = scaler(&[("host", "amqp://h/"), ("queueName", &long_queue)], &[]).unwrap_err();
        assert!(e.to_string().contains("255 bytes"), "{e}");
    }

    #[test]
    fn debug_output_hides_credentials() {
        let clients = Arc::new(RabbitMqClients::default());
        let a = scaler_with(
            clients.clone(),
            &[("host", "amqp://admin:hunter2@h:5672/vh"), ("queueName", "q")],
            &[],
        )
        .unwrap();
        let b = scaler_with(
            clients.clone(),
            &[("host", "http://h:15672/"), ("queueName", "q")],
            &[("username", "admin"), ("password", "hunter2")],
        )
        .unwrap();
        for text in [
            format!("{a:?}"),
            format!("{b:?}"),
            format!("{clients:?}"),
            a.endpoint().to_string(),
            b.endpoint().to_string(),
        ] {
            assert!(!text.contains("hunter2") && !text.contains("admin"), "{text}");
        }
        assert_eq!(a.endpoint(), "amqp://<redacted>@h:5672/vh");
        assert_eq!(b.endpoint(), "http://<redacted>@h:15672/%2F");
    }

    #[test]
    fn amqp_errors_are_scrubbed_and_sorted() {
        let clients = RabbitMqClients::default();
        let target = AmqpTarget {
            uri: AMQPUri::default(),
            tls: None,
            secrets: vec!["hunter2".into()],
            slot: Arc::new(AmqpSlot::default()),
        };
        let shown = "amqp://<redacted>@h:5672/%2F";
        let io: lapin::Error = io::Error::other("refused for guest:hunter2").into();
        let e = amqp_error(&clients, &target, shown, "cannot connect", &io);
        assert_eq!(e.kind(), "unreachable");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("hunter2") && text.contains("<redacted>"), "{text}");

        let refused: lapin::Error = lapin::ErrorKind::ProtocolError(
            lapin::protocol::AMQPError::from_id(403, "ACCESS_REFUSED - Login was refused".into()).unwrap(),
        )
        .into();
        assert_eq!(
            amqp_error(&clients, &target, shown, "x", &refused).kind(),
            "unauthorized"
        );
        let missing: lapin::Error = lapin::ErrorKind::ProtocolError(
            lapin::protocol::AMQPError::from_id(404, "NOT_FOUND - no queue 'q'".into()).unwrap(),
        )
        .into();
        assert!(is_not_found(&missing));
        assert_eq!(
            amqp_error(&clients, &target, shown, "x", &missing).kind(),
            "bad_response"
        );
        assert_eq!(
            scrub("a hunter2 b hunter2", &["hunter2".into(), String::new()]),
            "a <redacted> b <redacted>"
        );
    }

    #[test]
    fn the_factory_builds_rabbitmq_scalers_without_a_runtime() {
        let meta: std::collections::BTreeMap<String, String> = [
            ("host", "amqp://u:hunter2@h:5672/vh"),
            ("queueName", "q"),
            ("value", "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let trigger = crate::parse_trigger(0, "rabbitmq", &meta, Some(&Default::default()), None).unwrap();
        let factory = crate::ScalerFactory::default();
        let scaler = factory.build(&trigger).unwrap();
        assert_eq!(scaler.trigger_type(), "rabbitmq");
        assert_eq!(scaler.metric_target().target_value, 7.0);
        let error = factory
            .build(&crate::parse_trigger(0, "rabbitmq", &meta, None, None).unwrap())
            .map(|_| ());
        assert!(error.is_ok(), "{error:?}");
    }

    #[test]
    fn the_unacked_note_says_what_to_do() {
        let note = amqp_hides_unacked_note();
        assert!(note.contains("ready messages only") && note.contains("protocol: http"));
    }
}
