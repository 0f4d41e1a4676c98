//! The interface the adapter asks for metric values: [`MetricProvider`].

use async_trait::async_trait;

/// Answers metric requests (implemented by the operator over its poll cache).
///
/// The adapter calls it once per metric request, after authentication and authorization, and
/// caches nothing itself: freshness is the provider's business.
#[async_trait]
pub trait MetricProvider: Send + Sync + 'static {
    /// The value of `metric` (already lower-cased) for ScaledObject `scaled_object` in `namespace`.
    async fn metric(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError>;
}

/// One metric sample, as served to the HPA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricValue {
    /// The value. Served as a Kubernetes quantity with milli precision; negative or non-finite
    /// values are served as `0`.
    pub value: f64,
    /// When the value was sampled (served with second precision, UTC).
    pub timestamp: jiff::Timestamp,
}

/// Why a provider could not answer; mapped to the HTTP status of the reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No such ScaledObject in the namespace (404 NotFound).
    #[error("unknown ScaledObject")]
    UnknownScaledObject,
    /// The ScaledObject exists but has no metric of that name (404 NotFound).
    #[error("unknown metric")]
    UnknownMetric,
    /// Not one of this adapter's metrics: the namespace is outside its scope, no ScaledObject of
    /// that name is known there, or the ScaledObject has no such metric. With a
    /// [`Delegate`](crate::Delegate) the request goes to the delegate; without one it is a 404
    /// NotFound carrying [`NOT_OWNED_HEADER`](crate::NOT_OWNED_HEADER).
    #[error("not a metric of this adapter")]
    NotMine,
    /// The value cannot be produced now, e.g. the source is unreachable and no value is cached
    /// (503 ServiceUnavailable). The message is shown to the caller: it must not hold secrets.
    #[error("metric unavailable: {0}")]
    Unavailable(String),
}
