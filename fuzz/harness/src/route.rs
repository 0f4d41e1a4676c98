//! The metrics adapter's request targets: the path routed by [`Route::parse`] (percent-decoding,
//! namespace and metric-name validation) and the query's `labelSelector` read by
//! [`query_scaled_object`].
//!
//! Input: a request target, `path?query` (split at the first `?`).
//!
//! Invariants: no panic; a metric route's namespace is a DNS-1123 label and its metric a
//! lower-case `[a-z0-9._-]` name starting and ending with a letter or digit (so neither ever
//! holds `/`, nor is `.` or `..`, nor names another path); a trailing `/` changes nothing; the
//! canonical path of a metric route routes to the same namespace and metric; a selected
//! ScaledObject name is a non-empty label value.

use ebb_metrics_adapter::{Route, query_scaled_object};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let route = Route::parse(path);
    if !path.ends_with('/') {
        assert_eq!(
            Route::parse(&format!("{path}/")),
            route,
            "a trailing slash changes {path:?}"
        );
    }
    if let Route::Metric { namespace, metric } = &route {
        check_namespace(namespace);
        check_metric(metric);
        let canonical = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}");
        assert_eq!(Route::parse(&canonical), route, "{canonical:?} routes elsewhere");
    }
    if let Some(name) = query_scaled_object(query) {
        assert!(!name.is_empty() && name.len() <= 63, "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{name:?}"
        );
    }
}

fn ends_alphanumeric(s: &str) -> bool {
    let ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    ok(s.bytes().next()) && ok(s.bytes().last())
}

fn check_namespace(ns: &str) {
    assert!(ns.len() <= 63 && ends_alphanumeric(ns), "namespace {ns:?}");
    assert!(
        ns.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "namespace {ns:?}"
    );
    assert!(!ns.contains('/') && !ns.contains(".."), "namespace {ns:?}");
}

fn check_metric(metric: &str) {
    assert!(
        metric.len() <= 253 && ends_alphanumeric(metric),
        "metric {metric:?}"
    );
    assert!(
        metric
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
        "metric {metric:?}"
    );
    assert!(
        !metric.contains('/') && !metric.contains('%'),
        "metric {metric:?}"
    );
    assert!(
        metric != "." && metric != ".." && !metric.starts_with('.'),
        "metric {metric:?}"
    );
}
