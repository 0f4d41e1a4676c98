//! The HTTPS server: accept loop, connection handling, routing and the request handlers.

mod chain;
mod connection;
mod error;
mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Decision, DelegatedAuth, METRIC_VERB, PeerCertificate, RequestAttributes};
use crate::delegate::Delegate;
use crate::observe::{RequestKind, RequestObserver};
use crate::provider::{MetricProvider, ProviderError};
use crate::selector::Selector;
use crate::tls::{Acceptors, ReloadableCert, TlsSource};
use crate::types::{self, ExternalMetricValue, ExternalMetricValueList};
use crate::{AdapterError, KEDA_SCALED_OBJECT_LABEL, SCALED_OBJECT_LABEL};
use connection::Connection;
use error::{ApiError, forbidden, json_response, method_not_allowed};
pub use route::Route;
pub(crate) use route::is_health;

type Body = Full<Bytes>;

/// Settings of the HTTPS server.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    /// Address to listen on (port 0 picks a free port; see [`MetricsAdapter::local_addr`]).
    pub listen: SocketAddr,
    /// The serving certificate.
    pub tls: TlsSource,
    /// Longest time a request may take, provider call included; then 504 Timeout.
    pub request_timeout: Duration,
    /// Longest time for the TLS handshake, and for reading an HTTP/1 request's headers.
    pub handshake_timeout: Duration,
    /// How long in-flight connections may finish after shutdown is signalled (after they reached
    /// `max_connection_age`: at least `request_timeout`).
    pub shutdown_grace: Duration,
    /// Age at which a connection is asked to close (less a random tenth), so a client
    /// certificate is checked again in a new handshake at least that often; `None`: never.
    pub max_connection_age: Option<Duration>,
}

/// The default [`AdapterConfig::max_connection_age`].
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(10 * 60);

impl AdapterConfig {
    /// Defaults (10 s request timeout, 10 s handshake and header timeout, 5 s grace,
    /// connections closed after [`DEFAULT_MAX_CONNECTION_AGE`]) for an address and certificate
    /// source.
    pub fn new(listen: SocketAddr, tls: TlsSource) -> Self {
        Self {
            listen,
            tls,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            max_connection_age: Some(DEFAULT_MAX_CONNECTION_AGE),
        }
    }
}

/// A bound, configured adapter, ready to [`run`](Self::run).
pub struct MetricsAdapter {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptors: Arc<Acceptors>,
    serving_chain: Vec<CertificateDer<'static>>,
    cert: Arc<ReloadableCert>,
    state: Arc<State>,
    handshake_timeout: Duration,
    shutdown_grace: Duration,
    max_connection_age: Option<Duration>,
}

impl std::fmt::Debug for MetricsAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAdapter")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

struct State {
    auth: Arc<DelegatedAuth>,
    provider: Arc<dyn MetricProvider>,
    request_timeout: Duration,
    apis: Bytes,
    api_group: Bytes,
    api_resources: Bytes,
    /// Where metric requests this adapter does not own go, when set.
    chain: OnceLock<chain::Chain>,
    /// Told of every answered request, when set.
    observer: OnceLock<Arc<dyn RequestObserver>>,
}

impl MetricsAdapter {
    /// Binds `config.listen` and prepares TLS (loading or generating the certificate).
    pub async fn bind(
        config: AdapterConfig,
        auth: Arc<DelegatedAuth>,
        provider: Arc<dyn MetricProvider>,
    ) -> Result<Self, AdapterError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AdapterError::Bind {
                addr: config.listen,
                source,
            })?;
        Self::from_listener(listener, config, auth, provider)
    }

    /// Uses an already bound listener (`config.listen` is ignored).
    pub fn from_listener(
        listener: TcpListener,
        config: AdapterConfig,
        auth: Arc<DelegatedAuth>,
        provider: Arc<dyn MetricProvider>,
    ) -> Result<Self, AdapterError> {
        let local_addr = listener.local_addr().map_err(AdapterError::Io)?;
        let cert = match &config.tls {
            TlsSource::Reloadable(cert) => cert.clone(),
            other => Arc::new(ReloadableCert::from_source(other)?),
        };
        let serving_chain = cert.chain();
        let (generation, roots) = auth.client_roots();
        let acceptors = Acceptors::new(cert.clone(), generation, &roots)?;
        let state = State {
            apis: to_json(&types::api_group_list())?,
            api_group: to_json(&types::api_group())?,
            api_resources: to_json(&types::api_resource_list())?,
            auth,
            provider,
            request_timeout: config.request_timeout,
            chain: OnceLock::new(),
            observer: OnceLock::new(),
        };
        Ok(Self {
            listener,
            local_addr,
            acceptors: Arc::new(acceptors),
            serving_chain,
            cert,
            state: Arc::new(state),
            handshake_timeout: config.handshake_timeout,
            shutdown_grace: config.shutdown_grace,
            max_connection_age: config.max_connection_age,
        })
    }

    /// Forwards metric requests this adapter does not own to `delegate` (a selector naming no
    /// ScaledObject, or [`ProviderError::NotMine`]) and lists the delegate's resources too. Set
    /// once: a second delegate is ignored.
    pub fn with_delegate(self, delegate: Arc<dyn Delegate>) -> Self {
        if self.state.chain.set(chain::Chain::new(delegate)).is_err() {
            tracing::warn!("a delegate metrics adapter was already set; the second one is ignored");
        }
        self
    }

    /// Reports every answered request (its [`RequestKind`], status code and duration) to
    /// `observer`. Set once: a second observer is ignored.
    pub fn with_observer(self, observer: Arc<dyn RequestObserver>) -> Self {
        if self.state.observer.set(observer).is_err() {
            tracing::warn!("a request observer was already set; the second one is ignored");
        }
        self
    }

    /// The address the adapter listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The serving certificate chain (leaf first) when the adapter was bound, e.g. for an
    /// APIService `caBundle` when it was self-signed (empty if a [`TlsSource::Reloadable`] was
    /// still empty then).
    pub fn serving_certificates(&self) -> &[CertificateDer<'static>] {
        &self.serving_chain
    }

    /// The holder of the serving certificate: replacing its contents changes the certificate of
    /// the next handshakes.
    pub fn serving_cert(&self) -> &Arc<ReloadableCert> {
        &self.cert
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open connections
    /// `shutdown_grace` to finish. Connections are closed gracefully at their maximum age.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AdapterError> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(250);
        let builder = Arc::new(builder);
        let (stop, stopping) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        tracing::info!(addr = %self.local_addr, "metrics adapter serving HTTPS");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Reap finished connection tasks.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, remote)) => {
                        let (generation, roots) = self.state.auth.client_roots();
                        let connection = Connection {
                            acceptor: self.acceptors.get(generation, &roots),
                            builder: builder.clone(),
                            state: self.state.clone(),
                            handshake_timeout: self.handshake_timeout,
                            max_age: self
                                .max_connection_age
                                .map(|age| connection::close_after(age, connection::random_u16())),
                            // Long enough for a request in flight when the age is reached.
                            grace: self.shutdown_grace.max(self.state.request_timeout),
                        };
                        connections.spawn(connection.serve(tcp, remote, stopping.clone()));
                    }
                    Err(error) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(self.listener);
        tracing::info!("metrics adapter shutting down");
        let _ = stop.send(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shutdown_grace, drained).await.is_err() {
            tracing::warn!("connections still open after the shutdown grace period; dropping them");
        }
        connections.shutdown().await;
        Ok(())
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<Bytes, AdapterError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(AdapterError::Serialize)
}

impl State {
    async fn respond(&self, peer: &PeerCertificate, request: &Parts) -> Response<Body> {
        let started = std::time::Instant::now();
        let response = self.answer(peer, request).await;
        if let Some(observer) = self.observer.get() {
            observer.observe(
                RequestKind::of_path(request.uri.path()),
                response.status().as_u16(),
                started.elapsed(),
            );
        }
        response
    }

    async fn answer(&self, peer: &PeerCertificate, request: &Parts) -> Response<Body> {
        match tokio::time::timeout(self.request_timeout, self.handle(peer, request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.response(),
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                "Timeout: request did not complete within the allowed duration",
            )
            .response(),
        }
    }

    async fn handle(&self, peer: &PeerCertificate, request: &Parts) -> Result<Response<Body>, ApiError> {
        let path = request.uri.path();
        let method = &request.method;
        if is_health(path) {
            if method != Method::GET && method != Method::HEAD {
                return Err(method_not_allowed(method));
            }
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(response);
        }
        let user = match self.auth.authenticate(peer, &request.headers).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(ApiError::unauthorized()),
            Err(error) => {
                return Err(ApiError::from_review(
                    &error,
                    "authentication",
                    ApiError::unauthorized,
                ));
            }
        };
        if method != Method::GET {
            return Err(method_not_allowed(method));
        }
        let route = Route::parse(path);
        let attributes = match &route {
            Route::Metric { namespace, metric } => RequestAttributes::Resource {
                namespace: namespace.clone(),
                resource: metric.clone(),
                verb: METRIC_VERB.to_owned(),
            },
            _ => RequestAttributes::NonResource {
                path: path.to_owned(),
                verb: "get".to_owned(),
            },
        };
        match self.auth.authorize(peer, &user, &attributes).await {
            Ok(Decision::Allow) => {}
            Ok(Decision::Deny { reason }) => return Err(forbidden(&user, &attributes, &reason)),
            Err(error) => {
                return Err(ApiError::from_review(&error, "authorization", || {
                    ApiError::internal(format!("authorization failed: {error}"))
                }));
            }
        }
        match route {
            Route::Apis => Ok(json_response(StatusCode::OK, self.apis.clone())),
            Route::Group => Ok(json_response(StatusCode::OK, self.api_group.clone())),
            Route::Version => match self.chain(request) {
                Some(chain) => Ok(chain.resources(&self.auth, &user).await),
                None => Ok(json_response(StatusCode::OK, self.api_resources.clone())),
            },
            Route::Metric { namespace, metric } => {
                let query = request.uri.query().unwrap_or("");
                match self.metric(&namespace, &metric, query, request).await {
                    Err(NotServed::Delegate(path)) => match self.chain(request) {
                        Some(chain) => chain.forward_metric(&self.auth, &user, path).await,
                        None => Err(ApiError::internal("no delegate metrics adapter")),
                    },
                    Err(NotServed::Error(e)) => Err(e),
                    Ok(response) => Ok(response),
                }
            }
            Route::NotFound => Err(ApiError::not_found(format!(
                "the server could not find the requested resource ({path})"
            ))),
            Route::BadPath => Err(ApiError::bad_request(
                "invalid namespace or metric name in the path",
            )),
        }
    }

    /// The delegate, when one is set and the request may go there.
    fn chain(&self, request: &Parts) -> Option<&chain::Chain> {
        self.chain.get().filter(|_| chain::delegates(&request.headers))
    }

    /// A metric request: answered here, or [`NotServed::Delegate`] when its selector names no
    /// ScaledObject or the provider does not own it and a delegate may take it.
    async fn metric(
        &self,
        namespace: &str,
        metric: &str,
        query: &str,
        request: &Parts,
    ) -> Result<Response<Body>, NotServed> {
        let delegate = || NotServed::Delegate(chain::metric_path(namespace, metric, query));
        let raw = query_param(query, "labelSelector").unwrap_or_default();
        let named = Selector::parse(&raw)
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector {raw:?}: {e}")))
            .and_then(|selector| scaled_object_name(&selector).map(|name| (selector, name)));
        let (selector, scaled_object) = match named {
            Ok(named) => named,
            Err(_) if self.chain(request).is_some() => return Err(delegate()),
            Err(e) => return Err(NotServed::Error(e)),
        };
        let answer = self.provider.metric(namespace, &scaled_object, metric).await;
        if matches!(answer, Err(ProviderError::NotMine)) && self.chain(request).is_some() {
            return Err(delegate());
        }
        let value = answer.map_err(|e| match e {
            ProviderError::NotMine => ApiError {
                not_owned: true,
                ..ApiError::not_found(format!(
                    "metric \"{metric}\" of ScaledObject \"{scaled_object}\" in namespace \"{namespace}\" \
                     is not served by this adapter"
                ))
            },
            ProviderError::UnknownScaledObject => ApiError::not_found(format!(
                "ScaledObject \"{scaled_object}\" not found in namespace \"{namespace}\""
            )),
            ProviderError::UnknownMetric => ApiError::not_found(format!(
                "metric \"{metric}\" not found for ScaledObject \"{scaled_object}\" \
                 in namespace \"{namespace}\""
            )),
            ProviderError::Unavailable(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "metric \"{metric}\" of ScaledObject \"{scaled_object}\" in namespace \"{namespace}\" \
                     is unavailable: {reason}"
                ),
            ),
        })?;
        let list = ExternalMetricValueList::new(vec![ExternalMetricValue {
            metric_name: metric.to_owned(),
            metric_labels: selector.equality_labels(),
            timestamp: Time(value.timestamp),
            window_seconds: None,
            value: k8s_openapi::apimachinery::pkg::api::resource::Quantity(types::format_quantity(
                value.value,
            )),
        }]);
        let body = serde_json::to_vec(&list).map_err(|e| ApiError::internal(format!("serializing: {e}")))?;
        Ok(json_response(StatusCode::OK, Bytes::from(body)))
    }
}

/// Why [`State::metric`] gave no answer of its own.
enum NotServed {
    /// The request goes to the delegate, at this path and query.
    Delegate(String),
    /// The error reply.
    Error(ApiError),
}

impl From<ApiError> for NotServed {
    fn from(e: ApiError) -> Self {
        NotServed::Error(e)
    }
}

/// The first value of `name` in a query string (`+` is a space, percent-escapes decoded).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_query(key) == name).then(|| decode_query(value))
    })
}

fn decode_query(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The ScaledObject a metric request's query string selects through its `labelSelector`, as the
/// metric handler reads it; `None` when the request would be refused. For the fuzz harness.
pub fn query_scaled_object(query: &str) -> Option<String> {
    let raw = query_param(query, "labelSelector").unwrap_or_default();
    scaled_object_name(&Selector::parse(&raw).ok()?).ok()
}

/// The ScaledObject the selector names through [`SCALED_OBJECT_LABEL`] (or KEDA's label).
fn scaled_object_name(selector: &Selector) -> Result<String, ApiError> {
    let mut names = selector
        .pinned_values(SCALED_OBJECT_LABEL)
        .chain(selector.pinned_values(KEDA_SCALED_OBJECT_LABEL));
    let Some(first) = names.next() else {
        return Err(ApiError::bad_request(format!(
            "labelSelector must select a ScaledObject with {SCALED_OBJECT_LABEL}=<name> \
             (or {KEDA_SCALED_OBJECT_LABEL}=<name>)"
        )));
    };
    if names.any(|other| other != first) {
        return Err(ApiError::bad_request(format!(
            "labelSelector names more than one ScaledObject through \
             {SCALED_OBJECT_LABEL} / {KEDA_SCALED_OBJECT_LABEL}"
        )));
    }
    if first.is_empty() {
        return Err(ApiError::bad_request(format!(
            "labelSelector has an empty {SCALED_OBJECT_LABEL}"
        )));
    }
    Ok(first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, ThrottleScope};
    use route::MAX_METRIC_NAME;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/apis"), Route::Apis);
        assert_eq!(Route::parse("/apis/"), Route::Apis);
        assert_eq!(Route::parse("/apis/external.metrics.k8s.io"), Route::Group);
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/"),
            Route::Version
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/S0-Kafka"),
            Route::Metric {
                namespace: "default".into(),
                metric: "s0-kafka".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/default"),
            Route::NotFound
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b/c"),
            Route::NotFound
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/a/%FF"),
            Route::BadPath
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/s0-rabbitmq-my_queue.v1"),
            Route::Metric {
                namespace: "team-a".into(),
                metric: "s0-rabbitmq-my_queue.v1".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0%2Dkafka"),
            Route::Metric {
                namespace: "default".into(),
                metric: "s0-kafka".into()
            }
        );
        assert_eq!(Route::parse("/openapi/v2"), Route::NotFound);
        assert_eq!(Route::parse("/"), Route::NotFound);
        assert_eq!(Route::parse(""), Route::NotFound);
    }

    /// Finding 12: a namespace or metric segment that decodes to another path (or to anything a
    /// namespace or metric name cannot be) is a 400, so it never reaches the provider (nor the
    /// leader's URL through forwarding).
    #[test]
    fn traversal_and_odd_names_are_bad_paths() {
        let metric = |ns: &str, m: &str| {
            Route::parse(&format!(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{m}"
            ))
        };
        let long_ns = "a".repeat(64);
        let long_metric = "m".repeat(MAX_METRIC_NAME + 1);
        let bad_namespaces = [
            "team-b%2Fs0-kafka", // an encoded slash
            "team-b%2fs0-kafka",
            "..",     // dot segments
            "%2E%2E", // encoded dots
            "%2e%2e",
            ".",
            "%2E",
            "team-a%2F..%2Fteam-b",
            "%00", // control characters
            "team%0Aa",
            "team%20a",
            "Team-A", // not a DNS-1123 label
            "-a",
            "a-",
            "a.b",
            "a_b",
            "%C3%A9quipe", // unicode
            "%E2%80%AEa",
            long_ns.as_str(), // too long
            "%",              // bad escapes
            "%zz",
        ];
        for ns in bad_namespaces {
            assert_eq!(metric(ns, "s0-kafka"), Route::BadPath, "namespace {ns:?}");
        }
        assert_eq!(
            metric(&"a".repeat(63), "s0-kafka"),
            Route::Metric {
                namespace: "a".repeat(63),
                metric: "s0-kafka".into()
            }
        );
        let bad_metrics = [
            "s0%2F..%2F..%2Fnamespaces%2Fteam-b%2Fs0-kafka",
            "%2F",
            "..",
            "%2E%2E",
            "%2e",
            ".",
            ".hidden",
            "s0-kafka.",
            "s0%3Fx%3D1", // ? and =
            "s0%23frag",  // #
            "s0%00",
            "s0%7F",
            "s0%09kafka",
            "s0%20kafka",
            "s%C3%98-kafka", // unicode (upper and lower case)
            "%C4%B0",        // 'İ', whose lower case is two characters
            "s0-k%C3%A4fka",
            long_metric.as_str(),
            "%FF",
        ];
        for m in bad_metrics {
            assert_eq!(metric("default", m), Route::BadPath, "metric {m:?}");
        }
        assert_eq!(
            metric("default", &"m".repeat(MAX_METRIC_NAME)),
            Route::Metric {
                namespace: "default".into(),
                metric: "m".repeat(MAX_METRIC_NAME)
            }
        );
        // An empty segment is no metric route at all.
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces//s0-kafka"),
            Route::BadPath
        );
        assert_eq!(
            Route::parse("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/"),
            Route::NotFound
        );
    }

    #[test]
    fn throttled_reviews_answer_503_or_429_with_retry_after() {
        use crate::auth::Throttled;
        let throttled = |scope| {
            AuthError::Throttled(Throttled {
                scope,
                retry_after: Duration::from_millis(1_200),
            })
        };
        let global = ApiError::from_review(
            &throttled(ThrottleScope::Global),
            "authentication",
            ApiError::unauthorized,
        )
        .response();
        assert_eq!(global.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(global.headers()[http::header::RETRY_AFTER], "2");
        let source = ApiError::from_review(
            &throttled(ThrottleScope::Source),
            "authorization",
            ApiError::unauthorized,
        )
        .response();
        assert_eq!(source.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(source.headers()[http::header::RETRY_AFTER], "2");
        let other = ApiError::from_review(
            &AuthError::Review("x".into()),
            "authentication",
            ApiError::unauthorized,
        )
        .response();
        assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
        assert!(other.headers().get(http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(
                "a=1&labelSelector=scaledobject.ebb.dev%2Fname%3Dorders&labelSelector=x",
                "labelSelector"
            ),
            Some("scaledobject.ebb.dev/name=orders".into())
        );
        assert_eq!(
            query_param("labelSelector=a+in+(b)", "labelSelector"),
            Some("a in (b)".into())
        );
        assert_eq!(query_param("", "labelSelector"), None);
    }

    #[test]
    fn scaled_object_from_selector() {
        let name = |s: &str| scaled_object_name(&Selector::parse(s).expect("parses")).map_err(|e| e.code);
        assert_eq!(name("scaledobject.ebb.dev/name=orders,x=y"), Ok("orders".into()));
        assert_eq!(name("scaledobject.keda.sh/name in (orders)"), Ok("orders".into()));
        assert_eq!(
            name("scaledobject.ebb.dev/name=a,scaledobject.keda.sh/name=a"),
            Ok("a".into())
        );
        assert_eq!(
            name("scaledobject.ebb.dev/name=a,scaledobject.keda.sh/name=b"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(name("scaledobject.ebb.dev/name!=a"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            name("scaledobject.ebb.dev/name in (a,b)"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(name("scaledobject.ebb.dev/name="), Err(StatusCode::BAD_REQUEST));
        assert_eq!(name(""), Err(StatusCode::BAD_REQUEST));
    }
}
