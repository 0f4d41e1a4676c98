//! The HTTP side of the metrics-api scaler, also used by nats-jetstream for `/jsz`: one
//! [`MetricsApiClient`] per [`ScalerFactory`](crate::ScalerFactory) holds a pooled HTTP/1.1 client
//! that verifies certificates against the system's roots and one that does not (for
//! `unsafeSsl: true`), and runs single-flight GETs of JSON documents. An [`Endpoint`] is a URL
//! prepared for those requests: a `user:password@` in it is sent as HTTP basic auth (as Go's
//! client, and so KEDA, does) and masked wherever the URL is shown.
//!
//! When several triggers poll the same URL at the same moment, one request is in flight and every
//! caller gets its parsed document (keyed by URL, credentials and `unsafeSsl`); nothing is cached
//! once that request is over.

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
use crate::common::http::{HttpsClient, json_get, pooled_client, read_json_body, send};
use crate::common::tls::TlsSettings;

/// The largest response body read; a larger one is a [`ScalerError::BadResponse`].
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

type FetchResult = Result<Arc<Json>, ScalerError>;
/// Single-flight key: the full URL (credentials included: they may change the answer) and whether
/// certificates are verified.
type FlightKey = (String, bool);

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
        read_json_body(response.into_body(), MAX_BODY_BYTES, shown).await
    }
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
}
