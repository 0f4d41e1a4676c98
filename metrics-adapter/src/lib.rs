//! `ebb-metrics-adapter`: ebb's `external.metrics.k8s.io/v1beta1` aggregated API server, as a
//! library the operator embeds.
//!
//! It owns the HTTPS endpoint the API server's aggregator proxies HPA metric requests to: TLS
//! (rustls, ring, TLS 1.2+, ALPN `h2`/`http/1.1`, certificate from files, self-signed, or a
//! [`ReloadableCert`] replaced at run time), the
//! discovery documents, the `ExternalMetricValueList` replies and Kubernetes `Status` errors,
//! label-selector parsing, and delegated authentication/authorization (front-proxy headers,
//! client certificates, TokenReview, SubjectAccessReview, with bounded caches and a review
//! budget that fails fast; the API server's auth settings are followed and reloaded). It owns no metric
//! values: every answer comes from a [`MetricProvider`] (the operator's poll cache), and it
//! caches nothing but auth decisions.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn run(client: kube::Client, provider: Arc<dyn ebb_metrics_adapter::MetricProvider>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use ebb_metrics_adapter::{AdapterConfig, DelegatedAuth, TlsSource};
//! let auth = Arc::new(DelegatedAuth::from_kube(client).await?);
//! let tls = TlsSource::SelfSigned { dns_names: vec!["ebb-metrics.ebb-system.svc".into()] };
//! let config = AdapterConfig::new("0.0.0.0:6443".parse()?, tls);
//! ebb_metrics_adapter::serve(config, auth, provider, async { /* shutdown signal */ }).await?;
//! # Ok(()) }
//! ```
//!
//! Requests served (all GET; anything else is 405):
//! - `/healthz`, `/readyz`, `/livez`: `ok`, without authentication;
//! - `/apis`, `/apis/external.metrics.k8s.io`, `/apis/external.metrics.k8s.io/v1beta1`:
//!   `APIGroupList`, `APIGroup`, `APIResourceList` (authorized as non-resource paths, verb `get`);
//! - `/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=...`: an
//!   `ExternalMetricValueList` for the ScaledObject named by [`SCALED_OBJECT_LABEL`] (or
//!   [`KEDA_SCALED_OBJECT_LABEL`]) in the selector, authorized as resource `{metric}` of
//!   `external.metrics.k8s.io` in `{ns}`, verb [`METRIC_VERB`];
//! - anything else: 404 (`/openapi/v2` and `/openapi/v3` included, which the aggregator skips).
//!
//! With a [`Delegate`] ([`MetricsAdapter::with_delegate`]), a metric request whose selector names
//! no ScaledObject, or that the provider answers [`ProviderError::NotMine`], is forwarded to the
//! delegate with the caller's identity and its answer passed back; the resource list is the union
//! of both adapters' (the delegate's cached 30 s; without it, this adapter's alone).
//!
//! With a [`RequestObserver`] ([`MetricsAdapter::with_observer`]) every answered request is
//! reported as its [`RequestKind`], status code and duration, for the embedding program's metrics.
//!
//! Errors are `Status` objects: 400 malformed selector or selector without the ScaledObject
//! label, 401 no identity, 403 denied, 404 unknown path/ScaledObject/metric, 503 provider
//! unavailable, 504 request timeout, 500 authorization backend failure, 503 (review budget
//! spent) and 429 (the caller's share of it spent) with a `Retry-After`.

mod auth;
mod delegate;
mod kube_review;
mod observe;
mod provider;
pub mod selector;
mod server;
mod tls;
pub mod types;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use auth::{
    AUTH_CONFIG_MAP_NAME, AUTH_CONFIG_MAP_NAMESPACE, AUTHENTICATED_GROUP, AccessReviewer, AuthConfig,
    AuthError, AuthLimits, CacheTtls, DEFAULT_ALLOWED_TTL, DEFAULT_DENIED_TTL, Decision, DelegatedAuth,
    MASTERS_GROUP, METRIC_VERB, PoolLimits, RequestAttributes, ThrottleScope, Throttled, TokenReviewer,
    UserInfo, certificates_from_pem,
};
pub use delegate::{
    Delegate, DelegateAnswer, DelegateError, DelegateRequest, HeaderError, NO_DELEGATE_HEADER,
    NOT_OWNED_HEADER, front_proxy_headers, union_resources,
};
pub use kube_review::{KubeAccessReviewer, KubeTokenReviewer, subject_access_review};
pub use observe::{RequestKind, RequestObserver};
pub use provider::{MetricProvider, MetricValue, ProviderError};
pub use server::{AdapterConfig, DEFAULT_MAX_CONNECTION_AGE, MetricsAdapter, Route, query_scaled_object};
pub use tls::{ReloadableCert, TlsSource};

/// The selector label naming the ScaledObject a metric belongs to (the HPA ebb creates puts
/// it in every external metric's `selector`).
pub const SCALED_OBJECT_LABEL: &str = "scaledobject.ebb.dev/name";
/// KEDA's equivalent label, accepted for HPAs migrated from KEDA.
pub const KEDA_SCALED_OBJECT_LABEL: &str = "scaledobject.keda.sh/name";

/// Errors starting or running the adapter.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file could not be read or parsed.
    #[error("TLS file {path}: {message}")]
    TlsFiles {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The TLS configuration could not be built (bad key, bad CA, generation failure).
    #[error("TLS: {0}")]
    Tls(String),
    /// A socket operation failed.
    #[error("I/O: {0}")]
    Io(#[source] std::io::Error),
    /// A static document could not be serialized.
    #[error("serializing: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Binds `config.listen` and serves until `shutdown` completes
/// ([`MetricsAdapter::bind`] + [`MetricsAdapter::run`]; use those to learn the bound address).
pub async fn serve(
    config: AdapterConfig,
    auth: Arc<DelegatedAuth>,
    provider: Arc<dyn MetricProvider>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdapterError> {
    MetricsAdapter::bind(config, auth, provider)
        .await?
        .run(shutdown)
        .await
}
