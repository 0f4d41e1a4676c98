//! The operator's Prometheus metrics and its health endpoints.
//!
//! [`OperatorMetrics`] owns a [`prometheus_client`] registry (prefix `ebb`) with the operator's
//! metrics and records into it through methods that take plain values. [`serve_health`] serves
//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1 (hyper), for the kubelet's probes and
//! for Prometheus.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ebb_polls_total` | counter | `trigger_type`, `result` (`ok`/`error`) |
//! | `ebb_poll_errors_total` | counter | `trigger_type`, `kind` |
//! | `ebb_poll_duration_seconds` | histogram | `trigger_type` |
//! | `ebb_scale_actions_total` | counter | `action` |
//! | `ebb_reconcile_duration_seconds` | histogram | — |
//! | `ebb_reconcile_errors_total` | counter | `error` |
//! | `ebb_is_leader` | gauge | — |
//! | `ebb_scaled_objects` | gauge | — |
//! | `ebb_poll_lateness_seconds` | histogram | — |
//! | `ebb_kube_requests_total` | counter | `verb`, `resource` |
//! | `ebb_metric_requests_total` | counter | `answered_by` (`leader`/`forwarded`/`standby`), `result` |
//!
//! Label values such as the error `kind` must come from a small fixed set (an enum's name, not an
//! error message): every distinct value is a new time series.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;

use crate::infra::api_requests::{RequestRecorder, Verb};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Prefix of every metric name in the registry of [`OperatorMetrics`].
pub const METRIC_PREFIX: &str = "ebb";

/// `Content-Type` of the `/metrics` response (OpenMetrics text format 1.0.0).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Histogram buckets for durations between 1 ms and 10 s (poll and reconcile durations).
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for poll lateness: a tick that is seconds late is already worth seeing, one
/// that is a minute late means the runtime is starved.
const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// How long [`serve_health`] waits for open connections to finish after `shutdown` resolved.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about a single connection (e.g. out of file
/// descriptors), so the accept loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    trigger_type: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollErrorLabels {
    trigger_type: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerTypeLabels {
    trigger_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeRequestLabels {
    verb: &'static str,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricRequestLabels {
    answered_by: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The operator's metrics and the registry they are registered in.
///
/// Recording is lock-free apart from the families' label maps; share it as `Arc<OperatorMetrics>`.
#[derive(Debug)]
pub struct OperatorMetrics {
    registry: Registry,
    polls: Family<PollLabels, Counter>,
    poll_errors: Family<PollErrorLabels, Counter>,
    poll_duration: Family<TriggerTypeLabels, Histogram, fn() -> Histogram>,
    scale_actions: Family<ActionLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    is_leader: Gauge,
    scaled_objects: Gauge,
    poll_lateness: Histogram,
    kube_requests: Family<KubeRequestLabels, Counter>,
    metric_requests: Family<MetricRequestLabels, Counter>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorMetrics {
    /// Creates the metrics in a new registry with the prefix [`METRIC_PREFIX`].
    ///
    /// Other components can add their own metrics through [`OperatorMetrics::registry_mut`]
    /// before the value is shared.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);

        let polls = Family::<PollLabels, Counter>::default();
        registry.register(
            "polls",
            "Trigger polls, by trigger type and result (ok or error)",
            polls.clone(),
        );

        let poll_errors = Family::<PollErrorLabels, Counter>::default();
        registry.register(
            "poll_errors",
            "Failed trigger polls, by trigger type and error kind",
            poll_errors.clone(),
        );

        let poll_duration = Family::<TriggerTypeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register_with_unit(
            "poll_duration",
            "Time taken by one trigger poll, by trigger type",
            Unit::Seconds,
            poll_duration.clone(),
        );

        let scale_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "scale_actions",
            "Scale actions taken by the operator (activate, deactivate, fallback, pause, restore)",
            scale_actions.clone(),
        );

        let reconcile_duration = duration_histogram();
        registry.register_with_unit(
            "reconcile_duration",
            "Time taken by one reconciliation of a ScaledObject",
            Unit::Seconds,
            reconcile_duration.clone(),
        );

        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciliations, by error",
            reconcile_errors.clone(),
        );

        let is_leader = Gauge::default();
        registry.register(
            "is_leader",
            "1 while this replica holds the leader lease, else 0",
            is_leader.clone(),
        );

        let scaled_objects = Gauge::default();
        registry.register(
            "scaled_objects",
            "Number of ScaledObjects handled by the operator",
            scaled_objects.clone(),
        );

        let poll_lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register_with_unit(
            "poll_lateness",
            "How late a poll tick fired against its schedule",
            Unit::Seconds,
            poll_lateness.clone(),
        );

        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Kubernetes API requests sent by the operator, by verb and resource",
            kube_requests.clone(),
        );

        let metric_requests = Family::<MetricRequestLabels, Counter>::default();
        registry.register(
            "metric_requests",
            "External metric requests this replica answered: from its cache (leader), forwarded \
             to the leader (standby), or refused (standby without a leader), by result",
            metric_requests.clone(),
        );

        Self {
            registry,
            polls,
            poll_errors,
            poll_duration,
            scale_actions,
            reconcile_duration,
            reconcile_errors,
            is_leader,
            scaled_objects,
            poll_lateness,
            kube_requests,
            metric_requests,
        }
    }

    /// The registry, for other components to register their metrics in (names get the `ebb_`
    /// prefix).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Records one poll of a trigger: its duration and, if it failed, a short error label.
    pub fn observe_poll(&self, trigger_type: &str, duration: Duration, error_kind: Option<&str>) {
        let result = if error_kind.is_some() { "error" } else { "ok" };
        self.polls
            .get_or_create(&PollLabels {
                trigger_type: trigger_type.to_owned(),
                result,
            })
            .inc();
        if let Some(kind) = error_kind {
            self.poll_errors
                .get_or_create(&PollErrorLabels {
                    trigger_type: trigger_type.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc();
        }
        self.poll_duration
            .get_or_create(&TriggerTypeLabels {
                trigger_type: trigger_type.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Counts one scale action (`activate`, `deactivate`, `fallback`, `pause`, `restore`, …).
    pub fn scale_action(&self, action: &str) {
        self.scale_actions
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Records one reconciliation: its duration and, if it failed, a short error label.
    pub fn observe_reconcile(&self, duration: Duration, error: Option<&str>) {
        self.reconcile_duration.observe(duration.as_secs_f64());
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    error: error.to_owned(),
                })
                .inc();
        }
    }

    /// Counts one external metric request: who answered (`leader`, `forwarded`, `standby`) and
    /// whether a value went back.
    pub fn observe_metric_request(&self, answered_by: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.metric_requests
            .get_or_create(&MetricRequestLabels { answered_by, result })
            .inc();
    }

    /// Sets the leader gauge to 1 (`true`) or 0.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }

    /// Sets the number of ScaledObjects the operator handles.
    pub fn set_scaled_objects(&self, n: i64) {
        self.scaled_objects.set(n);
    }

    /// Records how late a poll tick fired against its schedule.
    pub fn observe_lateness(&self, lateness: Duration) {
        self.poll_lateness.observe(lateness.as_secs_f64());
    }

    /// Counts one Kubernetes API request.
    pub fn record_kube_request(&self, verb: Verb, resource: &str) {
        self.kube_requests
            .get_or_create(&KubeRequestLabels {
                verb: verb.as_str(),
                resource: resource.to_string(),
            })
            .inc();
    }

    /// A recorder for [`crate::infra::client_limits::client_with_limits`] that counts into these metrics.
    pub fn kube_request_recorder(self: &Arc<Self>) -> RequestRecorder {
        let metrics = Arc::clone(self);
        Arc::new(move |verb, resource: &str| metrics.record_kube_request(verb, resource))
    }

    /// The registry in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would only come from a metric's own
        // encoding, and the metrics above have none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Serves the health and metrics endpoints on `listener` until `shutdown` resolves.
///
/// - `GET /healthz`: 200 `ok` while the process serves at all (liveness);
/// - `GET /readyz`: 200 while `*ready.borrow()` is true, else 503 (readiness);
/// - `GET /metrics`: 200 with [`OperatorMetrics::encode`] as [`OPENMETRICS_CONTENT_TYPE`];
/// - `HEAD` works like `GET`, other methods on these paths get 405, other paths 404.
///
/// When `shutdown` resolves the listener is closed, idle connections are closed and the function
/// waits up to 5 s for responses in flight. Errors on single connections are logged at debug
/// level and do not stop the server; the only error returned is the listener's own (its address
/// cannot be read).
pub async fn serve_health<F>(
    listener: TcpListener,
    metrics: Arc<OperatorMetrics>,
    ready: watch::Receiver<bool>,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr()?;
    tracing::debug!(%addr, "health endpoints listening");
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "health endpoints: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        let ready = ready.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let response = respond(&req, &metrics, &ready);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "health endpoints: connection error");
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("health endpoints: connections still open after the grace period");
    }
    tracing::debug!(%addr, "health endpoints stopped");
    Ok(())
}

/// Accept errors that concern one connection only (the peer went away before it was accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

fn respond(
    req: &Request<Incoming>,
    metrics: &OperatorMetrics,
    ready: &watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if *ready.borrow() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE));
            response
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.0 request; the server closes the connection after the response.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
                .await
                .expect("write request");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read response");
            String::from_utf8(raw).expect("utf-8 response")
        };
        let raw = tokio::time::timeout(TEST_TIMEOUT, exchange)
            .await
            .expect("response in time");
        let (head, body) = raw.split_once("\r\n\r\n").expect("end of headers");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .expect("status code")
            .parse()
            .expect("numeric status");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    struct Server {
        addr: SocketAddr,
        metrics: Arc<OperatorMetrics>,
        ready: watch::Sender<bool>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Arc::new(OperatorMetrics::new());
        let (ready, ready_rx) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let task = tokio::spawn(serve_health(listener, Arc::clone(&metrics), ready_rx, shutdown));
        Server {
            addr,
            metrics,
            ready,
            stop,
            task,
        }
    }

    async fn stop(server: Server) {
        let _ = server.stop.send(());
        tokio::time::timeout(TEST_TIMEOUT, server.task)
            .await
            .expect("server stops in time")
            .expect("server task not panicked")
            .expect("server returns Ok");
    }

    #[tokio::test]
    async fn healthz_and_unknown_paths() {
        let server = start().await;
        let r = request(server.addr, "GET", "/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "ok\n");
        assert_eq!(r.header("content-type"), Some(TEXT_CONTENT_TYPE));

        let r = request(server.addr, "GET", "/healthz?verbose=1").await;
        assert_eq!(r.status, 200);

        let r = request(server.addr, "HEAD", "/healthz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "");

        for path in ["/", "/health", "/metrics/", "/readyz/x"] {
            assert_eq!(request(server.addr, "GET", path).await.status, 404, "{path}");
        }
        let r = request(server.addr, "POST", "/healthz").await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        stop(server).await;
    }

    #[tokio::test]
    async fn readiness_follows_the_watch_channel() {
        let server = start().await;
        let r = request(server.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "not ready\n");

        server.ready.send(true).expect("receiver alive");
        let r = request(server.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "ready\n");

        server.ready.send(false).expect("receiver alive");
        assert_eq!(request(server.addr, "GET", "/readyz").await.status, 503);
        // Liveness does not depend on readiness.
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
        stop(server).await;
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_recorded_values() {
        let server = start().await;
        let m = &server.metrics;
        m.observe_poll("kafka", Duration::from_millis(20), None);
        m.observe_poll("kafka", Duration::from_millis(30), Some("timeout"));
        m.observe_poll("rabbitmq", Duration::from_millis(3), None);
        m.scale_action("activate");
        m.scale_action("activate");
        m.scale_action("fallback");
        m.observe_reconcile(Duration::from_millis(40), None);
        m.observe_reconcile(Duration::from_millis(7), Some("kube_api"));
        m.set_leader(true);
        m.set_scaled_objects(3);
        m.observe_lateness(Duration::from_millis(250));

        let r = request(server.addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
        let body = r.body;
        let lines: Vec<&str> = body.lines().collect();
        for expected in [
            r#"ebb_polls_total{trigger_type="kafka",result="ok"} 1"#,
            r#"ebb_polls_total{trigger_type="kafka",result="error"} 1"#,
            r#"ebb_polls_total{trigger_type="rabbitmq",result="ok"} 1"#,
            r#"ebb_poll_errors_total{trigger_type="kafka",kind="timeout"} 1"#,
            r#"ebb_poll_duration_seconds_count{trigger_type="kafka"} 2"#,
            r#"ebb_poll_duration_seconds_bucket{le="0.025",trigger_type="kafka"} 1"#,
            r#"ebb_poll_duration_seconds_bucket{le="0.05",trigger_type="kafka"} 2"#,
            r#"ebb_poll_duration_seconds_count{trigger_type="rabbitmq"} 1"#,
            r#"ebb_scale_actions_total{action="activate"} 2"#,
            r#"ebb_scale_actions_total{action="fallback"} 1"#,
            "ebb_reconcile_duration_seconds_count 2",
            r#"ebb_reconcile_errors_total{error="kube_api"} 1"#,
            "ebb_is_leader 1",
            "ebb_scaled_objects 3",
            "ebb_poll_lateness_seconds_count 1",
            "ebb_poll_lateness_seconds_sum 0.25",
            "# TYPE ebb_poll_duration_seconds histogram",
            "# UNIT ebb_poll_duration_seconds seconds",
            "# EOF",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{body}");
        }
        // No error series for a poll that succeeded.
        assert!(
            !body.contains(r#"ebb_poll_errors_total{trigger_type="rabbitmq""#),
            "{body}"
        );

        m.set_leader(false);
        let body = request(server.addr, "GET", "/metrics").await.body;
        assert!(body.lines().any(|l| l == "ebb_is_leader 0"), "{body}");
        stop(server).await;
    }

    #[test]
    fn encode_without_observations() {
        let body = OperatorMetrics::default().encode();
        // Metrics without labels are always there …
        for name in [
            "ebb_reconcile_duration_seconds",
            "ebb_is_leader",
            "ebb_scaled_objects",
            "ebb_poll_lateness_seconds",
        ] {
            assert!(
                body.contains(&format!("# TYPE {name} ")),
                "missing {name} in\n{body}"
            );
        }
        // … families appear with their first series (prometheus-client skips empty families).
        assert!(!body.contains("ebb_polls"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[test]
    fn metric_requests_are_counted_by_who_answered() {
        let m = OperatorMetrics::new();
        m.observe_metric_request("forwarded", true);
        m.observe_metric_request("forwarded", true);
        m.observe_metric_request("standby", false);
        let body = m.encode();
        assert!(
            body.lines()
                .any(|l| l == r#"ebb_metric_requests_total{answered_by="forwarded",result="ok"} 2"#),
            "{body}"
        );
        assert!(
            body.lines()
                .any(|l| l == r#"ebb_metric_requests_total{answered_by="standby",result="error"} 1"#),
            "{body}"
        );
    }

    #[test]
    fn other_components_can_register_metrics() {
        let mut metrics = OperatorMetrics::new();
        let extra: Counter = Counter::default();
        metrics
            .registry_mut()
            .register("scaler_clients", "Open scaler clients", extra.clone());
        extra.inc();
        assert!(
            metrics
                .encode()
                .lines()
                .any(|l| l == "ebb_scaler_clients_total 1")
        );
    }

    #[tokio::test]
    async fn shutdown_completes_with_an_idle_keep_alive_connection_open() {
        let server = start().await;
        // An HTTP/1.1 connection that stays open (keep-alive) after its response.
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(TEST_TIMEOUT, idle.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

        let addr = server.addr;
        let started = tokio::time::Instant::now();
        stop(server).await;
        assert!(
            started.elapsed() < SHUTDOWN_GRACE,
            "idle connection delayed shutdown"
        );

        // The idle connection was closed by the server, and the port no longer accepts.
        let n = tokio::time::timeout(TEST_TIMEOUT, idle.read(&mut buf))
            .await
            .expect("in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
