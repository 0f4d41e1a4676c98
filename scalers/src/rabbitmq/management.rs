//! The management HTTP API: one bounded `GET` on the shared pooled client
//! ([`common::http`](crate::common::http)) that returns the answer decoded into a typed struct
//! (only the fields ebb reads are kept), or a [`ScalerError`] naming the masked endpoint
//! (401/403 unauthorized, 404 with what was not found).
//!
//! The host is the tenant's, so each answer is capped by what a real one needs (a larger body is
//! a [`ScalerError::BadResponse`] and reading stops there) and its bytes are reserved from the
//! process-wide [`ByteBudget`] while it is read.

use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use serde::de::DeserializeOwned;

use super::tls::TlsSettings;
use crate::ScalerError;
use crate::common::budget::ByteBudget;
use crate::common::http::{HttpsClient, json_get, parse_json, read_body_bounded, send};

/// The largest answer about one queue (`/api/queues/<vhost>/<name>`): 2 MiB. A queue object is a
/// few KiB, plus about 0.5 KiB per consumer in `consumer_details`: 2 MiB holds some 4,000
/// consumers of one queue.
pub const QUEUE_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What one queue adds to a `useRegex` listing page (8 KiB): a listed queue object without
/// `consumer_details` is 1.5 to 3 KiB, with its arguments, policy and statistics.
pub const LISTED_QUEUE_BYTES: usize = 8 * 1024;

/// The most a `useRegex` listing page may be, whatever `pageSize` says: 8 MiB, about 1,000 queues.
pub const MAX_LISTING_BYTES: usize = 8 * 1024 * 1024;

/// The largest activity watcher listing (`/api/queues/<vhost>?columns=`
/// [`LISTING_COLUMNS`](super::LISTING_COLUMNS)): 4 MiB. With only those five columns a queue is
/// about 200 bytes, so 4 MiB lists some 20,000 queues of one vhost; beyond that the watcher's
/// rounds fail and the triggers are polled only.
pub const WATCH_LISTING_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The cap of a `useRegex` listing of `page_size` queues: 64 KiB plus [`LISTED_QUEUE_BYTES`] a
/// queue, at most [`MAX_LISTING_BYTES`].
pub fn regex_listing_cap(page_size: i64) -> usize {
    let queues = usize::try_from(page_size.max(1)).unwrap_or(usize::MAX);
    queues
        .saturating_mul(LISTED_QUEUE_BYTES)
        .saturating_add(64 * 1024)
        .min(MAX_LISTING_BYTES)
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
    pub(super) client: HttpsClient,
    /// The bound of one request.
    pub(super) timeout: Duration,
}

/// One management API GET: the answer (at most `limit` bytes, reserved from the process-wide
/// budget while read) decoded into `T`, or an error naming `shown` (never credentials).
/// `not_found` says what a 404 means; `roots_problem` is added to connection errors.
pub(super) async fn http_get_typed<T: DeserializeOwned>(
    target: &HttpTarget,
    shown: &str,
    not_found: impl FnOnce() -> String,
    roots_problem: Option<&str>,
    limit: usize,
) -> Result<T, ScalerError> {
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
    let body = read_body_bounded(response.into_body(), limit, ByteBudget::global(), shown).await?;
    parse_json(body.bytes(), shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_caps_follow_the_page_size_within_a_bound() {
        assert_eq!(regex_listing_cap(100), 64 * 1024 + 100 * 8 * 1024);
        assert_eq!(regex_listing_cap(0), 64 * 1024 + 8 * 1024);
        assert_eq!(regex_listing_cap(i64::MAX), MAX_LISTING_BYTES);
        assert_eq!(regex_listing_cap(1_000_000), MAX_LISTING_BYTES);
    }
}
