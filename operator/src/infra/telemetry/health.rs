//! The health and metrics endpoints: `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{OPENMETRICS_CONTENT_TYPE, OperatorMetrics};

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// How long [`serve_health`] waits for open connections to finish after `shutdown` resolved.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about a single connection (e.g. out of file
/// descriptors), so the accept loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

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
