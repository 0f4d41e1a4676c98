//! What a request path names: the discovery paths and the metric path, whose namespace and
//! metric name are percent-decoded and validated here, so no later step sees `/`, `..` or `%2F`.

use crate::types::{GROUP, VERSION};

/// The paths served; public so the fuzz harness can drive [`Route::parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/apis`.
    Apis,
    /// `/apis/external.metrics.k8s.io`.
    Group,
    /// `/apis/external.metrics.k8s.io/v1beta1`.
    Version,
    /// `/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}`, both validated.
    Metric {
        /// A DNS-1123 label.
        namespace: String,
        /// Lower-case `[a-z0-9._-]`, starting and ending with a letter or digit.
        metric: String,
    },
    /// Any other path.
    NotFound,
    /// A metric path whose namespace or metric name is invalid.
    BadPath,
}

impl Route {
    /// What a request path (percent-encoded, without its query) names.
    pub fn parse(path: &str) -> Self {
        let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
        let mut segments = trimmed.split('/');
        if segments.next() != Some("") || segments.next() != Some("apis") {
            return Route::NotFound;
        }
        let rest: Vec<&str> = segments.collect();
        match rest.as_slice() {
            [] => Route::Apis,
            [g] if *g == GROUP => Route::Group,
            [g, v] if *g == GROUP && *v == VERSION => Route::Version,
            [g, v, "namespaces", ns, metric] if *g == GROUP && *v == VERSION => {
                match (metric_namespace(ns), metric_resource(metric)) {
                    (Some(namespace), Some(metric)) => Route::Metric { namespace, metric },
                    _ => Route::BadPath,
                }
            }
            _ => Route::NotFound,
        }
    }
}

/// The longest metric name accepted (a path segment and an RBAC resource name; ebb's are ≤ 200).
pub(super) const MAX_METRIC_NAME: usize = 253;

/// The namespace of a metric path segment: percent-decoded, and a DNS-1123 label (what a
/// namespace name is), so it can name no other path (`/`, `..`, `%2F`) nor carry anything else.
fn metric_namespace(segment: &str) -> Option<String> {
    let name = percent_encoding::percent_decode_str(segment).decode_utf8().ok()?;
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ends_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    (bytes.len() <= 63 && inner_ok && ends_ok(bytes.first()) && ends_ok(bytes.last()))
        .then(|| name.into_owned())
}

/// The metric name of a path segment: percent-decoded, lower-cased (as the API server does), and
/// made of what metric names are made of (ebb's `[a-z0-9-]`, KEDA's also `.` and `_`), starting
/// and ending with a letter or digit: never `/`, `.`, `..`, a control character or non-ASCII.
fn metric_resource(segment: &str) -> Option<String> {
    let name = percent_encoding::percent_decode_str(segment).decode_utf8().ok()?;
    if name.is_empty() || name.len() > MAX_METRIC_NAME || !name.is_ascii() {
        return None;
    }
    let name = name.to_ascii_lowercase();
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'));
    let ends_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    (inner_ok && ends_ok(bytes.first()) && ends_ok(bytes.last())).then_some(name)
}

/// The health paths, answered without authentication.
pub(crate) fn is_health(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez")
}
