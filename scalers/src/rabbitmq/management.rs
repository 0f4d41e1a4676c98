//! The management HTTP API: one bounded `GET` on the shared pooled client
//! ([`common::http`](crate::common::http)) that returns the JSON answer, or a [`ScalerError`]
//! naming the masked endpoint (401/403 unauthorized, 404 with what was not found).

use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use serde_json::Value as Json;

use super::tls::TlsSettings;
use crate::ScalerError;
use crate::common::http::{HttpsClient, json_get, read_json_body, send};

/// The largest management API response read; a larger one is a [`ScalerError::BadResponse`].
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

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
    pub(super) client: HttpsClient,
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
    let request = json_get(&target.uri, target.authorization.as_ref(), shown)?;
    let response = send(&target.client, request, shown, roots_problem).await?;
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
    read_json_body(response.into_body(), MAX_BODY_BYTES, shown).await
}
