//! The `metrics-api` scaler: GETs a JSON document over HTTP(S) and reads one number from it.
//!
//! One [`MetricsApiClient`] serves every metrics-api trigger of a
//! [`ScalerFactory`](crate::ScalerFactory): one pooled HTTP/1.1 client that verifies
//! certificates against the system's roots, and one that does not (for `unsafeSsl: true`). When
//! several triggers poll the same URL at the same moment, one request is in flight and every caller
//! gets its parsed document (single flight, keyed by URL, credentials and `unsafeSsl`); nothing is
//! cached once that request is over.
//!
//! `valueLocation` is a dotted path (`queue.depth`); a segment that is a whole number indexes an
//! array (`items.0.count`). The value there may be a JSON number or a string holding a number or a
//! Kubernetes quantity (`"10"`, `"1.5"`, `"500m"`, `"2Ki"`), as in KEDA.
//!
//! A `user:password@` in the URL is sent as HTTP basic auth (as Go's client, and so KEDA, does) and
//! is masked wherever the URL is shown.

use crate::common::tls::AcceptAnyCertificate;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// The largest response body read; a larger one is a [`ScalerError::BadResponse`].
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;
type FetchResult = Result<Arc<Json>, ScalerError>;
/// Single-flight key: the full URL (credentials included: they may change the answer) and whether
/// certificates are verified.
type FlightKey = (String, bool);

/// The HTTP side shared by every metrics-api trigger of a factory: the pooled clients and the
/// requests in flight.
pub struct MetricsApiClient {
    verified: HttpClient,
    unverified: HttpClient,
    timeout: Duration,
    /// Why the system's root certificates could not be loaded, if they could not; added to
    /// errors of verified HTTPS requests.
    roots_problem: Option<String>,
    in_flight: Mutex<HashMap<FlightKey, Arc<OnceCell<FetchResult>>>>,
}

impl MetricsApiClient {
    /// Creates the clients. `timeout` bounds each request: connect, response and whole body.
    /// Needs no async runtime (requests do).
    pub fn new(timeout: Duration) -> Result<Self, ScalerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_setup =
            |e: rustls::Error| ScalerError::InvalidConfig(format!("cannot set up TLS for metrics-api: {e}"));

        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _unparsable) = roots.add_parsable_certificates(native.certs);
        let roots_problem = (added == 0).then(|| {
            let mut note = "no trusted root certificates were found in the system store".to_string();
            if let Some(e) = native.errors.first() {
                note.push_str(&format!(" ({e})"));
            }
            note
        });
        let verified_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_setup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();

        Ok(Self {
            verified: http_client(verified_tls, timeout),
            unverified: http_client(unverified_tls, timeout),
            timeout,
            roots_problem,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GETs `endpoint` and parses the body as JSON. Concurrent calls for the same endpoint share
    /// one request and its result.
    pub async fn fetch_json(&self, endpoint: &Endpoint) -> Result<Arc<Json>, ScalerError> {
        let key: FlightKey = (endpoint.raw.clone(), endpoint.unsafe_ssl);
        let flight = self.flights().entry(key.clone()).or_default().clone();
        // The first caller runs the request; the others wait for its result. If that caller is
        // dropped mid-request, a waiting one takes over.
        let result = flight.get_or_init(|| self.fetch_once(endpoint)).await.clone();
        // Done: forget the flight so the next poll makes a fresh request (no caching).
        let mut flights = self.flights();
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&key);
        }
        result
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<FlightKey, Arc<OnceCell<FetchResult>>>> {
        // The map stays consistent even if a holder panicked: every critical section is one call.
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn fetch_once(&self, endpoint: &Endpoint) -> FetchResult {
        match tokio::time::timeout(self.timeout, self.request(endpoint)).await {
            Ok(result) => result.map(Arc::new),
            Err(_elapsed) => Err(ScalerError::timeout(&endpoint.shown, self.timeout)),
        }
    }

    async fn request(&self, endpoint: &Endpoint) -> Result<Json, ScalerError> {
        let shown = endpoint.shown.as_str();
        let client = if endpoint.unsafe_ssl {
            &self.unverified
        } else {
            &self.verified
        };
        let mut request = Request::get(endpoint.uri.clone())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("ebb/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| ScalerError::InvalidConfig(format!("cannot build a request for {shown}: {e}")))?;
        if let Some(auth) = &endpoint.authorization {
            request.headers_mut().insert(header::AUTHORIZATION, auth.clone());
        }

        let response = client.request(request).await.map_err(|e| {
            let mut message = if e.is_connect() {
                format!("cannot connect: {}", source_chain(e.source()))
            } else {
                format!("request failed: {}", error_chain(&e))
            };
            if endpoint.uri.scheme_str() == Some("https")
                && !endpoint.unsafe_ssl
                && let Some(problem) = &self.roots_problem
            {
                message.push_str(&format!(" ({problem})"));
            }
            ScalerError::unreachable(shown, message)
        })?;

        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ScalerError::unauthorized(shown, format!("HTTP status {status}")));
        }
        if !status.is_success() {
            return Err(ScalerError::bad_response(
                shown,
                format!("HTTP status {status}, expected 2xx"),
            ));
        }
        read_json_body(response.into_body(), MAX_BODY_BYTES, shown).await
    }
}

/// Reads an HTTP response body of at most `limit` bytes as JSON; errors name `shown` (a masked
/// URL), never the body. Shared by every scaler that polls an HTTP API.
pub(crate) async fn read_json_body<B>(body: B, limit: usize, shown: &str) -> Result<Json, ScalerError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            let message = if e.downcast_ref::<LengthLimitError>().is_some() {
                format!("response body is larger than {limit} bytes")
            } else {
                format!("reading the response body failed: {}", error_chain(&*e))
            };
            ScalerError::bad_response(shown, message)
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| ScalerError::bad_response(shown, format!("response is not valid JSON: {e}")))
}

impl fmt::Debug for MetricsApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiClient")
            .field("timeout", &self.timeout)
            .field("roots_problem", &self.roots_problem)
            .field("in_flight", &self.flights().len())
            .finish_non_exhaustive()
    }
}

fn http_client(tls: rustls::ClientConfig, timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
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
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = e.source();
    }
}

/// A metrics-api URL prepared for requests: credentials moved to an `Authorization` header, and
/// a masked form for messages.
#[derive(Clone)]
pub struct Endpoint {
    /// The URL as configured (may hold credentials; never shown).
    raw: String,
    /// The URL with `user:password@` masked, for messages.
    shown: String,
    /// The request URI, without credentials or fragment.
    uri: Uri,
    /// Basic auth from the URL's `user:password@`, if any (marked sensitive).
    authorization: Option<HeaderValue>,
    /// Skip certificate verification.
    unsafe_ssl: bool,
}

impl Endpoint {
    /// Prepares `url` (http or https). Errors never show the credentials.
    pub fn parse(url: &str, unsafe_ssl: bool) -> Result<Self, ScalerError> {
        // An unparsable URL is not quoted: without a parse, credentials cannot be located to mask.
        let mut parsed = url::Url::parse(url)
            .map_err(|e| ScalerError::InvalidConfig(format!("metrics-api url is not a valid URL ({e})")))?;
        let scheme = parsed.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            // Not quoted either: `user:pass@host` parses with `user` as the scheme.
            return Err(ScalerError::InvalidConfig(
                "metrics-api url must be an http:// or https:// URL".to_string(),
            ));
        }
        let has_credentials = !parsed.username().is_empty() || parsed.password().is_some();
        let authorization = if has_credentials {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(parsed.username());
            let password = parsed.password().map(decode).unwrap_or_default();
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                ScalerError::InvalidConfig("metrics-api url: credentials cannot be sent as basic auth".into())
            })?;
            value.set_sensitive(true);
            Some(value)
        } else {
            None
        };
        // Neither fails for http(s) URLs, which always have a host.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        parsed.set_fragment(None);
        let bare = parsed.as_str();
        // Shown from the parsed URL (not the raw text), so whatever the parser took as credentials
        // is what gets masked.
        let shown = match bare.strip_prefix(&format!("{scheme}://")) {
            Some(rest) if has_credentials => format!("{scheme}://<redacted>@{rest}"),
            _ => bare.to_string(),
        };
        let uri = bare.parse::<Uri>().map_err(|e| {
            ScalerError::InvalidConfig(format!(
                "metrics-api url {shown} is not a valid request URI ({e})"
            ))
        })?;
        Ok(Self {
            raw: url.to_string(),
            shown,
            uri,
            authorization,
            unsafe_ssl,
        })
    }

    /// Sends `Authorization: Bearer <token>` instead of any basic auth (the token is marked
    /// sensitive and never shown).
    pub fn with_bearer_token(mut self, token: &str) -> Result<Self, ScalerError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| ScalerError::InvalidConfig("bearer token is not a valid header value".into()))?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    /// The URL with any `user:password@` masked.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether certificate verification is skipped.
    pub fn unsafe_ssl(&self) -> bool {
        self.unsafe_ssl
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown)
            .field("basic_auth", &self.authorization.is_some())
            .field("unsafe_ssl", &self.unsafe_ssl)
            .finish()
    }
}

/// One metrics-api trigger: where to poll, where the value is, and the thresholds.
pub struct MetricsApiScaler {
    client: Arc<MetricsApiClient>,
    endpoint: Endpoint,
    value_location: String,
    target_value: f64,
    activation_target_value: f64,
}

impl MetricsApiScaler {
    /// Builds the scaler from the trigger's parsed parameters (see [`crate::metrics_api`]) and its
    /// thresholds (target and activation, as [`crate::registry::ParsedTrigger::thresholds`]).
    pub fn new(
        client: Arc<MetricsApiClient>,
        params: &ParsedParams,
        thresholds: Thresholds,
    ) -> Result<Self, ScalerError> {
        let missing = |name: &str| ScalerError::InvalidConfig(format!("metrics-api: {name} has no value"));
        let url = params.str("url").ok_or_else(|| missing("url"))?;
        let value_location = params
            .str("valueLocation")
            .ok_or_else(|| missing("valueLocation"))?;
        let unsafe_ssl = params.bool("unsafeSsl").unwrap_or(false);
        if let Some(format) = params.str("format")
            && format != "json"
        {
            return Err(ScalerError::InvalidConfig(format!(
                "metrics-api: format {format:?} is not supported (only json)"
            )));
        }
        let target_value = thresholds.target;
        let activation_target_value = thresholds.activation;
        Ok(Self {
            client,
            endpoint: Endpoint::parse(url, unsafe_ssl)?,
            value_location: value_location.to_string(),
            target_value,
            activation_target_value,
        })
    }

    /// The polled endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl fmt::Debug for MetricsApiScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiScaler")
            .field("endpoint", &self.endpoint)
            .field("value_location", &self.value_location)
            .field("target_value", &self.target_value)
            .field("activation_target_value", &self.activation_target_value)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for MetricsApiScaler {
    fn trigger_type(&self) -> &'static str {
        "metrics-api"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target_value,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let doc = self.client.fetch_json(&self.endpoint).await?;
        let value = value_at(&doc, &self.value_location)
            .map_err(|e| ScalerError::bad_response(&self.endpoint.shown, e.to_string()))?;
        Ok(TriggerSample::with_activation(
            value,
            self.activation_target_value,
        ))
    }
}

/// Why no number could be read at a `valueLocation`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The path leads nowhere.
    #[error("valueLocation {path:?}: {problem}")]
    Missing {
        /// The whole path.
        path: String,
        /// Which segment failed and why.
        problem: String,
    },
    /// The path leads to something that is not a number or a numeric string.
    #[error(
        "valueLocation {path:?} points to {found}, not a number or a string holding a number or quantity"
    )]
    NotNumeric {
        /// The whole path.
        path: String,
        /// What is there, e.g. `a boolean`, `the string "abc"`.
        found: String,
    },
    /// The number there is not finite.
    #[error("valueLocation {path:?} points to {value}, which is not a finite number")]
    NotFinite {
        /// The whole path.
        path: String,
        /// The value as found.
        value: String,
    },
}

/// The JSON value at a dotted `path` (`a.b`, array indices as whole-number segments: `items.0.n`).
/// Never panics, whatever the document or path.
pub fn lookup<'a>(doc: &'a Json, path: &str) -> Result<&'a Json, ValueError> {
    let mut current = doc;
    let mut walked = String::new();
    for segment in path.split('.') {
        let here = if walked.is_empty() {
            "the document".to_string()
        } else {
            format!("{walked:?}")
        };
        let next = match current {
            Json::Object(map) => map
                .get(segment)
                .ok_or_else(|| format!("no key {segment:?} in the object at {here}")),
            Json::Array(items) => match array_index(segment) {
                Some(i) => items.get(i).ok_or_else(|| {
                    format!(
                        "index {i} is out of range for the array at {here} ({} items)",
                        items.len()
                    )
                }),
                None => Err(format!("{segment:?} is not an index into the array at {here}")),
            },
            other => Err(format!("{here} is {}, which has no {segment:?}", describe(other))),
        };
        current = next.map_err(|problem| ValueError::Missing {
            path: path.to_string(),
            problem,
        })?;
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    Ok(current)
}

fn array_index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// The number at `path`: a JSON number, or a string holding a number or a Kubernetes quantity.
pub fn value_at(doc: &Json, path: &str) -> Result<f64, ValueError> {
    let value = lookup(doc, path)?;
    let not_finite = |shown: String| ValueError::NotFinite {
        path: path.to_string(),
        value: shown,
    };
    match value {
        Json::Number(n) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(not_finite(n.to_string())),
        },
        Json::String(s) => match parse_quantity(s) {
            Some(v) if v.is_finite() => Ok(v),
            Some(_) => Err(not_finite(format!("{:?}", truncated(s)))),
            None => Err(ValueError::NotNumeric {
                path: path.to_string(),
                found: describe(value),
            }),
        },
        other => Err(ValueError::NotNumeric {
            path: path.to_string(),
            found: describe(other),
        }),
    }
}

fn describe(value: &Json) -> String {
    match value {
        Json::Null => "null".to_string(),
        Json::Bool(b) => format!("a boolean ({b})"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) => format!("the string {:?}", truncated(s)),
        Json::Array(a) => format!("an array ({} items)", a.len()),
        Json::Object(_) => "an object".to_string(),
    }
}

fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Parses a number or a Kubernetes quantity (`10`, `-1.5`, `1e3`, `500m`, `2k`, `1Ki`, `3G`) to a
/// float. `None` for anything else (including `NaN` and `inf`); an overflow gives an infinite value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.trim();
    let has_digit = |t: &str| t.bytes().any(|b| b.is_ascii_digit());
    // Plain numbers, with an optional decimal exponent (`1e3`, as Kubernetes allows). The byte
    // check keeps out what Rust's parser also accepts: `inf`, `NaN`, `infinity`.
    if has_digit(s)
        && s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && let Ok(v) = s.parse::<f64>()
    {
        return Some(v);
    }
    let is_decimal = |t: &str| has_digit(t) && t.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b));
    SUFFIXES.iter().find_map(|(suffix, factor)| {
        let number = s.strip_suffix(suffix)?;
        if !is_decimal(number) {
            return None;
        }
        number.parse::<f64>().ok().map(|v| v * factor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_and_indices() {
        let doc = json!({
            "queue": {"depth": 12},
            "items": [{"count": 1}, {"count": "7"}],
            "m": {"0": 3},
            "deep": [[0, [5.5]]],
        });
        assert_eq!(value_at(&doc, "queue.depth"), Ok(12.0));
        assert_eq!(value_at(&doc, "items.0.count"), Ok(1.0));
        assert_eq!(value_at(&doc, "items.1.count"), Ok(7.0));
        assert_eq!(value_at(&doc, "m.0"), Ok(3.0));
        assert_eq!(value_at(&doc, "deep.0.1.0"), Ok(5.5));
        assert_eq!(
            value_at(&json!(4), "x").map_err(|e| e.to_string()),
            Err("valueLocation \"x\": the document is the number 4, which has no \"x\"".to_string())
        );
    }

    #[test]
    fn missing_paths_say_where() {
        let doc = json!({"queue": {"depth": 12}, "items": [1, 2]});
        let cases = [
            ("queue.size", "no key \"size\" in the object at \"queue\""),
            ("nope", "no key \"nope\" in the object at the document"),
            (
                "items.2",
                "index 2 is out of range for the array at \"items\" (2 items)",
            ),
            ("items.x", "\"x\" is not an index into the array at \"items\""),
            ("items.-1", "\"-1\" is not an index"),
            (
                "queue.depth.x",
                "\"queue.depth\" is the number 12, which has no \"x\"",
            ),
        ];
        for (path, expected) in cases {
            let text = value_at(&doc, path).unwrap_err().to_string();
            assert!(text.contains(expected), "{path}: {text}");
        }
    }

    #[test]
    fn non_numbers_are_errors() {
        let doc = json!({"b": true, "n": null, "o": {}, "a": [], "s": "abc", "nan": "NaN", "inf": "inf", "big": "1e999"});
        for (path, found) in [
            ("b", "a boolean (true)"),
            ("n", "null"),
            ("o", "an object"),
            ("a", "an array (0 items)"),
            ("s", "the string \"abc\""),
            ("nan", "the string \"NaN\""),
            ("inf", "the string \"inf\""),
        ] {
            let err = value_at(&doc, path).unwrap_err();
            assert!(
                matches!(&err, ValueError::NotNumeric { found: f, .. } if f == found),
                "{err}"
            );
        }
        assert!(matches!(value_at(&doc, "big"), Err(ValueError::NotFinite { .. })));
    }

    #[test]
    fn quantities() {
        let cases: &[(&str, Option<f64>)] = &[
            ("10", Some(10.0)),
            (" 1.5 ", Some(1.5)),
            ("-3", Some(-3.0)),
            ("+4", Some(4.0)),
            (".5", Some(0.5)),
            ("1e3", Some(1000.0)),
            ("2E-1", Some(0.2)),
            ("500m", Some(0.5)),
            ("2k", Some(2000.0)),
            ("1Ki", Some(1024.0)),
            ("1.5Mi", Some(1.5 * 1_048_576.0)),
            ("3G", Some(3e9)),
            ("1E", Some(1e18)),
            ("250u", Some(250e-6)),
            ("", None),
            ("m", None),
            ("abc", None),
            ("NaN", None),
            ("inf", None),
            ("infinity", None),
            ("1e3k", None),
            ("1x", None),
            ("--1", None),
            ("1 k", None),
        ];
        for (input, expected) in cases {
            let got = parse_quantity(input);
            match (got, expected) {
                (Some(g), Some(e)) => assert!((g - e).abs() <= e.abs() * 1e-12, "{input}: {g} != {e}"),
                (None, None) => {}
                _ => panic!("{input}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn endpoint_moves_credentials_to_basic_auth() {
        let e = Endpoint::parse("http://ad%40min:p%3Ass@127.0.0.1:8080/q?x=1#frag", false).unwrap();
        assert_eq!(e.uri.to_string(), "http://127.0.0.1:8080/q?x=1");
        let auth = e.authorization.as_ref().unwrap();
        assert!(auth.is_sensitive());
        let expected = base64::engine::general_purpose::STANDARD.encode("ad@min:p:ss");
        assert_eq!(auth.to_str().unwrap(), format!("Basic {expected}"));
        assert_eq!(e.shown(), "http://<redacted>@127.0.0.1:8080/q?x=1");
        let debug = format!("{e:?}");
        assert!(!debug.contains("p%3Ass") && !debug.contains("Basic"), "{debug}");

        let plain = Endpoint::parse("https://example.test/m", true).unwrap();
        assert!(plain.authorization.is_none() && plain.unsafe_ssl());

        for bad in [
            "ftp://u:secret@h/x",
            "http://u:secret@",
            "u:secret@h/x",
            "http://u:pa/secret@h/",
        ] {
            let text = Endpoint::parse(bad, false).unwrap_err().to_string();
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn scaler_debug_hides_credentials() {
        let client = Arc::new(MetricsApiClient::new(Duration::from_secs(1)).unwrap());
        let params = crate::params::tests_support::parse_meta(
            &crate::metrics_api::DECL,
            &[
                ("url", "http://user:hunter2@127.0.0.1:1/q"),
                ("valueLocation", "a"),
                ("targetValue", "3"),
            ],
        )
        .unwrap();
        let thresholds = Thresholds {
            target: 3.0,
            activation: 0.0,
        };
        let scaler = MetricsApiScaler::new(client, &params, thresholds).unwrap();
        let debug = format!("{scaler:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("user"), "{debug}");
        assert_eq!(scaler.metric_target().target_value, 3.0);
    }

    fn arbitrary_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            ".{0,8}".prop_map(Json::String),
            "[0-9.mkKi-]{0,6}".prop_map(Json::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::btree_map("[a-c0-3]{0,2}", inner, 0..6)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // Any document, any path: a value or an error, never a panic.
        #[test]
        fn lookup_never_panics(doc in arbitrary_json(), path in "[a-c0-3.]{0,12}|.{0,16}") {
            let _ = lookup(&doc, &path);
            match value_at(&doc, &path) {
                Ok(v) => prop_assert!(v.is_finite()),
                Err(e) => prop_assert!(e.to_string().starts_with("valueLocation ")),
            }
        }

        // A number placed at a path is found there.
        #[test]
        fn placed_numbers_are_found(
            segments in prop::collection::vec(prop_oneof!["[a-z]{1,6}", (0usize..4).prop_map(|i| i.to_string())], 1..6),
            value in -1e12f64..1e12,
        ) {
            let mut doc = Json::from(value);
            for segment in segments.iter().rev() {
                doc = match segment.parse::<usize>() {
                    Ok(i) => {
                        let mut items = vec![Json::Null; i];
                        items.push(doc);
                        Json::Array(items)
                    }
                    Err(_) => json!({ segment.as_str(): doc }),
                };
            }
            prop_assert_eq!(value_at(&doc, &segments.join(".")), Ok(value));
        }

        // Quantity parsing never panics and never yields NaN.
        #[test]
        fn quantity_never_panics(s in ".{0,12}|[0-9.eE+-]{0,8}[numkMGTPEi]{0,2}") {
            if let Some(v) = parse_quantity(&s) {
                prop_assert!(!v.is_nan());
            }
        }
    }
}
