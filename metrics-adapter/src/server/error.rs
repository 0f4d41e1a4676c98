//! Error replies: Kubernetes `Status` objects with their HTTP codes, and the JSON responses
//! every handler writes.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusDetails};

use super::Body;
use crate::auth::{AuthError, RequestAttributes, ThrottleScope, UserInfo};
use crate::delegate::NOT_OWNED_HEADER;
use crate::types::GROUP;

/// An error reply: a Kubernetes `Status` with its HTTP code.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) code: StatusCode,
    pub(super) reason: &'static str,
    pub(super) message: String,
    /// Seconds after which to try again (`Retry-After`), for throttled requests.
    pub(super) retry_after: Option<u64>,
    /// A 404 meaning "not one of this adapter's metrics" ([`NOT_OWNED_HEADER`]).
    pub(super) not_owned: bool,
}

impl ApiError {
    pub(super) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            retry_after: None,
            not_owned: false,
        }
    }

    /// The reply to a failed review (`stage`: authentication or authorization): throttled
    /// reviews answer at once with 429 (the source's share is spent) or 503 (the adapter's
    /// budget is spent) and a `Retry-After`, logged at debug level only (a flood must not flood
    /// the log); other failures are warned about and answer `otherwise`.
    pub(super) fn from_review(error: &AuthError, stage: &str, otherwise: impl FnOnce() -> Self) -> Self {
        let AuthError::Throttled(throttled) = error else {
            tracing::warn!(%error, "{stage} failed");
            return otherwise();
        };
        tracing::debug!(%error, "{stage} refused");
        let (code, reason) = match throttled.scope {
            ThrottleScope::Source => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ThrottleScope::Global => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        };
        let seconds = throttled.retry_after.as_secs() + u64::from(throttled.retry_after.subsec_nanos() > 0);
        Self {
            retry_after: Some(seconds.max(1)),
            ..Self::new(
                code,
                reason,
                "too many authentication requests, please try again later",
            )
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(super) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub(super) fn response(&self) -> Response<Body> {
        let status = Status {
            code: Some(i32::from(self.code.as_u16())),
            details: self.retry_after.map(|seconds| StatusDetails {
                retry_after_seconds: i32::try_from(seconds).ok(),
                ..StatusDetails::default()
            }),
            message: Some(self.message.clone()),
            metadata: ListMeta::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
        };
        // Serializing a Status cannot fail; fall back to a fixed body all the same.
        let body = serde_json::to_vec(&status).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from_static(br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure"}"#)
        });
        let mut response = json_response(self.code, body);
        if self.not_owned {
            response
                .headers_mut()
                .insert(NOT_OWNED_HEADER, HeaderValue::from_static("true"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub(super) fn json_response(code: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

pub(super) fn forbidden(user: &UserInfo, attributes: &RequestAttributes, reason: &str) -> ApiError {
    let what = match attributes {
        RequestAttributes::Resource {
            namespace,
            resource,
            verb,
        } => format!(
            "{resource}.{GROUP} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" \
             in API group \"{GROUP}\" in the namespace \"{namespace}\"",
            user.username
        ),
        RequestAttributes::NonResource { path, verb } => {
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.username
            )
        }
    };
    let message = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
}
