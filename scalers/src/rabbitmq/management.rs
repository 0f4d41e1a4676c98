//! The management HTTP API: one pooled HTTP/1.1 client per TLS setting, and one bounded
//! `GET` that returns the JSON answer or a [`ScalerError`] naming the masked endpoint.

use std::error::Error as _;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value as Json;

use super::errors::{error_chain, source_chain};
use super::tls::TlsSettings;
use crate::ScalerError;

/// The largest management API response read; a larger one is a [`ScalerError::BadResponse`].
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long an idle pooled HTTP connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A pooled HTTP/1.1 client (plain or TLS), shared by the triggers with the same TLS settings.
pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A new pooled client that speaks TLS with `tls`.
pub(super) fn http_client(tls: rustls::ClientConfig) -> HttpClient {
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

/// What a scaler needs for its management API request.
#[derive(Clone)]
pub(super) struct HttpTarget {
    /// The request URI (no credentials).
    pub(super) uri: Uri,
    /// `Authorization: Basic …`, marked sensitive.
    pub(super) authorization: Option<HeaderValue>,
    /// The TLS settings the client was built with.
    pub(super) tls: TlsSettings,
    /// The shared client for those settings.
    pub(super) client: HttpClient,
    /// The bound of one request.
    pub(super) timeout: Duration,
}

/// One management API GET: the JSON answer, or an error naming `shown` (never credentials).
/// `not_found` says what a 404 means; `roots_problem` is added to connection errors.
pub(super) async fn http_get_json(
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
