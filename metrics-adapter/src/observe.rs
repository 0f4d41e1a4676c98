//! The seam for request metrics: the adapter reports every request it answered (what was asked,
//! the status code, how long it took) to an optional [`RequestObserver`]; the embedding program
//! turns that into its own metrics (the operator's Prometheus registry). The crate itself
//! depends on no metrics library.

use std::time::Duration;

use crate::server::Route;

/// What a request asked for, a small fixed set (a metric label, never a path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/apis`, the group and the version (discovery).
    Discovery,
    /// An external metric value (what an HPA asks).
    Metric,
    /// Anything else (404s, malformed paths).
    Other,
}

impl RequestKind {
    /// What a request path names.
    pub fn of_path(path: &str) -> Self {
        if crate::server::is_health(path) {
            return RequestKind::Health;
        }
        match Route::parse(path) {
            Route::Apis | Route::Group | Route::Version => RequestKind::Discovery,
            Route::Metric { .. } => RequestKind::Metric,
            Route::NotFound | Route::BadPath => RequestKind::Other,
        }
    }

    /// The label value: `health`, `discovery`, `metric` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Health => "health",
            RequestKind::Discovery => "discovery",
            RequestKind::Metric => "metric",
            RequestKind::Other => "other",
        }
    }
}

/// Receives one call per answered request (timeouts and refusals included, as their status).
pub trait RequestObserver: Send + Sync {
    /// A request of `kind` was answered with `status` after `elapsed`.
    fn observe(&self, kind: RequestKind, status: u16, elapsed: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_kinds() {
        assert_eq!(RequestKind::of_path("/healthz"), RequestKind::Health);
        assert_eq!(RequestKind::of_path("/apis"), RequestKind::Discovery);
        assert_eq!(
            RequestKind::of_path("/apis/external.metrics.k8s.io/v1beta1"),
            RequestKind::Discovery
        );
        assert_eq!(
            RequestKind::of_path("/apis/external.metrics.k8s.io/v1beta1/namespaces/a/s0-kafka"),
            RequestKind::Metric
        );
        assert_eq!(RequestKind::of_path("/openapi/v2"), RequestKind::Other);
        assert_eq!(
            RequestKind::of_path("/apis/external.metrics.k8s.io/v1beta1/namespaces/a/%FF"),
            RequestKind::Other
        );
    }
}
