//! The HTTP side of the metrics-api scaler, also used by nats-jetstream for `/jsz`: one
//! [`MetricsApiClient`] per [`ScalerFactory`](crate::ScalerFactory) holds a pooled HTTP/1.1 client
//! that verifies certificates against the system's roots and one that does not (for
//! `unsafeSsl: true`), and runs single-flight GETs of JSON documents. An [`Endpoint`] is a URL
//! prepared for those requests: a `user:password@` in it is sent as HTTP basic auth (as Go's
//! client, and so KEDA, does) and masked wherever the URL is shown.
//!
//! When several triggers poll the same URL at the same moment, one request is in flight and every
//! caller gets its body (keyed by URL, credentials, `unsafeSsl` and cap); nothing is cached once
//! that request is over.
//!
//! The URLs are the tenants' own, so what one answer may cost is bounded three ways: its body is
//! capped ([`MAX_BODY_BYTES`] for metrics-api, [`NATS_MAX_BODY_BYTES`] for NATS monitoring) and
//! read into its bytes only (each caller walks them to its value, no tree is built); the bytes are
//! reserved from the process-wide [`ByteBudget`] before they are read; and a namespace has at most
//! [`PER_NAMESPACE_IN_FLIGHT`] metrics-api requests in flight ([`NamespaceSlots`]), so one
//! tenant's many triggers cannot take the whole budget.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use hyper::StatusCode;
use hyper::Uri;
use hyper::header::HeaderValue;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::ScalerError;
use crate::common::budget::ByteBudget;
use crate::common::http::{
    BoundedBody, HttpsClient, json_get, parse_json, pooled_client, read_body_bounded, send,
};
use crate::common::namespace_slots::NamespaceLimits;
pub use crate::common::namespace_slots::{NamespaceSlot, NamespaceSlots};
use crate::common::tls::TlsSettings;

/// The largest metrics-api response body read (1 MiB); a larger one is a
/// [`ScalerError::BadResponse`], and reading stops there. A metrics endpoint answers with one
/// number somewhere in a small document: the ones KEDA's docs and users show are well under
/// 10 KiB, so 1 MiB leaves a hundredfold margin while 48 such answers fit in the
/// [`ByteBudget`].
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest NATS monitoring answer read (8 MiB): `/jsz?acc=<account>&consumers=true&config=true`
/// lists every stream and consumer of one account at about 1.5 KiB a consumer (with its config),
/// so 8 MiB holds some 5,000 consumers; `/varz` is a few KiB.
pub const NATS_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How many metrics-api requests one namespace may have in flight at once; more wait for a slot
/// up to half the request timeout (so a poll that got a slot late still has time for its
/// request), then fail with [`ScalerError::Overloaded`].
pub const PER_NAMESPACE_IN_FLIGHT: usize = 8;

/// The requests the namespace limit counts, as its error names them.
const WHAT: &str = "metrics-api requests";

type FetchResult = Result<Arc<BoundedBody>, ScalerError>;
/// Single-flight key: the full URL (credentials included: they may change the answer), whether
/// certificates are verified, and the cap.
type FlightKey = (String, bool, usize);

/// The HTTP side shared by every metrics-api trigger of a factory: the pooled clients and the
/// requests in flight.
pub struct MetricsApiClient {
    verified: HttpsClient,
    unverified: HttpsClient,
    timeout: Duration,
    /// Why the system's root certificates could not be loaded, if they could not; added to
    /// errors of verified HTTPS requests.
    roots_problem: Option<&'static str>,
    in_flight: Mutex<HashMap<FlightKey, Arc<OnceCell<FetchResult>>>>,
    /// What bodies in flight may hold, shared with every other scaler.
    budget: ByteBudget,
    /// Each namespace's metrics-api slots, while one of its scalers lives.
    namespaces: NamespaceLimits,
}

impl MetricsApiClient {
    /// Creates the clients. `timeout` bounds each request: connect, response and whole body.
    /// Needs no async runtime (requests do).
    pub fn new(timeout: Duration) -> Result<Self, ScalerError> {
        let client = |settings: TlsSettings| {
            let tls = settings
                .client_config()
                .map_err(|e| ScalerError::InvalidConfig(format!("cannot set up TLS for metrics-api: {e}")))?;
            Ok::<_, ScalerError>(pooled_client(tls, Some(timeout)))
        };
        let verified = TlsSettings::verifying(false);
        Ok(Self {
            roots_problem: verified.roots_problem(),
            verified: client(verified)?,
            unverified: client(TlsSettings::verifying(true))?,
            timeout,
            in_flight: Mutex::new(HashMap::new()),
            budget: ByteBudget::global().clone(),
            namespaces: NamespaceLimits::new(WHAT, PER_NAMESPACE_IN_FLIGHT),
        })
    }

    /// Uses `budget` instead of the process-wide one and `per_namespace` slots per namespace
    /// (for tests).
    pub fn with_limits(mut self, budget: ByteBudget, per_namespace: usize) -> Self {
        self.budget = budget;
        self.namespaces = NamespaceLimits::new(WHAT, per_namespace);
        self
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The slots of `namespace`, shared by its scalers while one of them lives.
    pub fn namespace_slots(&self, namespace: &str) -> NamespaceSlots {
        self.namespaces.slots(namespace)
    }

    /// How many namespaces have a live scaler holding their slots.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.namespace_count()
    }

    /// Takes one of the namespace's slots, waiting for one up to half the request timeout; then
    /// fails with [`ScalerError::Overloaded`] naming the namespace and the limit.
    pub async fn enter(&self, slots: &NamespaceSlots, shown: &str) -> Result<NamespaceSlot, ScalerError> {
        slots.enter(shown, self.timeout / 2).await
    }

    /// GETs `endpoint` and parses the body (at most `limit` bytes) as a JSON tree. For trusted
    /// shapes read whole (NATS monitoring); prefer [`MetricsApiClient::fetch`] and a typed read.
    pub async fn fetch_json(&self, endpoint: &Endpoint, limit: usize) -> Result<Json, ScalerError> {
        let body = self.fetch(endpoint, limit).await?;
        parse_json(body.bytes(), &endpoint.shown)
    }

    /// GETs `endpoint` and returns its body of at most `limit` bytes, reserved from the byte
    /// budget while the returned value lives. Concurrent calls for the same endpoint share one
    /// request and its result.
    pub async fn fetch(&self, endpoint: &Endpoint, limit: usize) -> Result<Arc<BoundedBody>, ScalerError> {
        self.fetch_within(endpoint, limit, None).await
    }

    /// [`fetch`](Self::fetch), where the caller that makes the request first takes one of
    /// `slots` (its namespace's): callers that join a request in flight take none, so one URL
    /// asked by many triggers costs one slot.
    pub async fn fetch_within(
        &self,
        endpoint: &Endpoint,
        limit: usize,
        slots: Option<&NamespaceSlots>,
    ) -> Result<Arc<BoundedBody>, ScalerError> {
        let key: FlightKey = (endpoint.raw.clone(), endpoint.unsafe_ssl, limit);
        let flight = self.flights().entry(key.clone()).or_default().clone();
        // The first caller runs the request; the others wait for its result. If that caller is
        // dropped mid-request, a waiting one takes over.
        let result = flight
            .get_or_init(|| async {
                let _slot = match slots {
                    Some(slots) => Some(self.enter(slots, &endpoint.shown).await?),
                    None => None,
                };
                self.fetch_once(endpoint, limit).await
            })
            .await
            .clone();
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

    async fn fetch_once(&self, endpoint: &Endpoint, limit: usize) -> FetchResult {
        match tokio::time::timeout(self.timeout, self.request(endpoint, limit)).await {
            Ok(result) => result.map(Arc::new),
            Err(_elapsed) => Err(ScalerError::timeout(&endpoint.shown, self.timeout)),
        }
    }

    async fn request(&self, endpoint: &Endpoint, limit: usize) -> Result<BoundedBody, ScalerError> {
        let shown = endpoint.shown.as_str();
        let (client, roots_problem) = if endpoint.unsafe_ssl {
            (&self.unverified, None)
        } else if endpoint.uri.scheme_str() == Some("https") {
            (&self.verified, self.roots_problem)
        } else {
            (&self.verified, None)
        };
        let request = json_get(&endpoint.uri, endpoint.authorization.as_ref(), shown)?;
        let response = send(client, request, shown, roots_problem).await?;
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
        read_body_bounded(response.into_body(), limit, &self.budget, shown).await
    }
}

impl fmt::Debug for MetricsApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiClient")
            .field("timeout", &self.timeout)
            .field("roots_problem", &self.roots_problem)
            .field("in_flight", &self.flights().len())
            .field("namespaces", &self.namespaces.namespace_count())
            .finish_non_exhaustive()
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

#[cfg(test)]
mod tests {
    use super::*;

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

    use crate::Scaler as _;
    use crate::common::budget::ByteBudget;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// What the test server answers.
    #[derive(Clone)]
    enum Reply {
        /// A chunked body of spaces, streamed until 1 GiB or until the client goes away.
        Endless,
        /// This JSON document with its Content-Length.
        Json(Arc<String>),
        /// Nothing, for ten seconds.
        Hang,
    }

    #[derive(Default)]
    struct Seen {
        requests: AtomicUsize,
        written: AtomicUsize,
    }

    const GIB: usize = 1024 * 1024 * 1024;

    async fn server(reply: Reply) -> (String, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let counting = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (reply, seen) = (reply.clone(), counting.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    seen.requests.fetch_add(1, Ordering::SeqCst);
                    match reply {
                        Reply::Hang => tokio::time::sleep(Duration::from_secs(10)).await,
                        Reply::Json(doc) => {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", doc.len());
                            let _ = stream.write_all(head.as_bytes()).await;
                            let _ = stream.write_all(doc.as_bytes()).await;
                        }
                        Reply::Endless => {
                            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                            if stream.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let mut chunk = b"10000\r\n".to_vec();
                            chunk.extend(std::iter::repeat_n(b' ', 0x10000));
                            chunk.extend_from_slice(b"\r\n");
                            while seen.written.load(Ordering::SeqCst) < GIB {
                                if stream.write_all(&chunk).await.is_err() {
                                    return;
                                }
                                seen.written.fetch_add(0x10000, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        (base, seen)
    }

    #[tokio::test]
    async fn an_endless_body_is_refused_near_the_cap_without_being_buffered() {
        let (base, seen) = server(Reply::Endless).await;
        let budget = ByteBudget::new(64 * 1024 * 1024);
        let client = MetricsApiClient::new(Duration::from_secs(10))
            .unwrap()
            .with_limits(budget.clone(), 8);
        let endpoint = Endpoint::parse(&format!("{base}/m"), false).unwrap();
        let started = std::time::Instant::now();
        let e = client.fetch(&endpoint, MAX_BODY_BYTES).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{text}");
        assert!(text.contains("larger than 1048576 bytes"), "{text}");
        // The client read one frame past the cap at most, then stopped.
        let read: usize = text
            .split("stopped reading after ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert!(read <= MAX_BODY_BYTES + 0x10000, "read {read}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(budget.free(), budget.total(), "the reservation is given back");
        // The server could write only what the cap and the sockets' buffers took, far from 1 GiB.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let written = seen.written.load(Ordering::SeqCst);
        assert!(
            written < MAX_BODY_BYTES + 32 * 1024 * 1024,
            "server wrote {written}"
        );
        eprintln!("over-cap body: client read {read} bytes, server wrote {written} before the close");
    }

    fn scaler_for(
        client: &Arc<MetricsApiClient>,
        url: &str,
        namespace: &str,
    ) -> crate::metrics_api::MetricsApiScaler {
        let params = crate::params::tests_support::parse_meta(
            &crate::metrics_api::DECL,
            &[("url", url), ("valueLocation", "v"), ("targetValue", "1")],
        )
        .unwrap();
        let thresholds = crate::params::Thresholds {
            target: 1.0,
            activation: 0.0,
        };
        crate::metrics_api::MetricsApiScaler::new(client.clone(), &params, thresholds, namespace).unwrap()
    }

    #[tokio::test]
    async fn a_document_over_one_mib_is_refused_and_one_under_it_is_read() {
        // 1.5 MiB of padding before the value: a real metrics answer is never that large.
        let padding = "x".repeat(MAX_BODY_BYTES / 2 * 3);
        let (base, _) = server(Reply::Json(Arc::new(format!(r#"{{"pad":"{padding}","v":7}}"#)))).await;
        let client = Arc::new(MetricsApiClient::new(Duration::from_secs(5)).unwrap());
        let e = scaler_for(&client, &format!("{base}/big"), "a")
            .sample()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
        let (base, _) = server(Reply::Json(Arc::new(r#"{"deep":[[[{}]]],"v":"2k"}"#.to_string()))).await;
        let sample = scaler_for(&client, &format!("{base}/small"), "a")
            .sample()
            .await
            .unwrap();
        assert_eq!(sample.value, 2000.0);
    }

    #[tokio::test]
    async fn an_exhausted_budget_fails_fast() {
        let budget = ByteBudget::new(MAX_BODY_BYTES);
        let client = MetricsApiClient::new(Duration::from_secs(5))
            .unwrap()
            .with_limits(budget.clone(), 8);
        // Other answers in flight hold all but 100 bytes of the budget.
        let _held = budget.try_reserve(MAX_BODY_BYTES - 100).unwrap();
        let (base, _) = server(Reply::Json(Arc::new(r#"{"v":1}"#.to_string()))).await;
        let small = Endpoint::parse(&format!("{base}/small"), false).unwrap();
        // An announced length that fits is read.
        assert!(client.fetch(&small, MAX_BODY_BYTES).await.is_ok());
        let (base, _) = server(Reply::Endless).await;
        let endless = Endpoint::parse(&format!("{base}/endless"), false).unwrap();
        let started = std::time::Instant::now();
        // No announced length: the whole cap is reserved first, and it is not free.
        let e = client.fetch(&endless, MAX_BODY_BYTES).await.unwrap_err();
        assert!(matches!(e, ScalerError::Overloaded { .. }), "{e}");
        assert!(e.to_string().contains("budget is exhausted"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
        assert_eq!(budget.free(), 100);
    }

    #[tokio::test]
    async fn triggers_sharing_a_request_share_one_slot() {
        let (base, seen) = server(Reply::Hang).await;
        let client = Arc::new(
            MetricsApiClient::new(Duration::from_millis(400))
                .unwrap()
                .with_limits(ByteBudget::new(64 * 1024 * 1024), 1),
        );
        // Five triggers of one namespace on one URL: one request, one slot, no one overloaded.
        let same: Vec<_> = (0..5)
            .map(|_| scaler_for(&client, &format!("{base}/same"), "a"))
            .collect();
        let results = futures::future::join_all(same.iter().map(|s| s.sample())).await;
        for r in &results {
            assert!(matches!(r, Err(ScalerError::Timeout { .. })), "{results:?}");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_per_namespace_limit_holds() {
        let (base, seen) = server(Reply::Hang).await;
        let client = Arc::new(
            MetricsApiClient::new(Duration::from_millis(400))
                .unwrap()
                .with_limits(ByteBudget::new(64 * 1024 * 1024), 2),
        );
        // Three triggers of namespace a and one of b, on distinct URLs (no shared flight).
        let a: Vec<_> = (0..3)
            .map(|i| scaler_for(&client, &format!("{base}/a{i}"), "a"))
            .collect();
        let b = scaler_for(&client, &format!("{base}/b"), "b");
        assert_eq!(client.namespace_count(), 2);
        let (ra, rb) = tokio::join!(
            futures::future::join_all(a.iter().map(|s| s.sample())),
            b.sample()
        );
        let overloaded: Vec<_> = ra
            .iter()
            .filter_map(|r| match r {
                Err(e @ ScalerError::Overloaded { .. }) => Some(e.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(overloaded.len(), 1, "{ra:?}");
        assert!(
            overloaded[0].contains("namespace \"a\" already has 2 metrics-api requests in flight"),
            "{}",
            overloaded[0]
        );
        assert!(
            matches!(rb, Err(ScalerError::Timeout { .. })),
            "b is not limited by a: {rb:?}"
        );
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3, "two of a's, one of b's");
        drop((a, b));
        assert_eq!(
            client.namespace_count(),
            0,
            "a namespace's slots go with its last scaler"
        );
    }
}
