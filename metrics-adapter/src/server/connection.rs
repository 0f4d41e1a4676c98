//! How long one connection lives. What a client certificate proves is settled per connection,
//! and an HTTP/2 connection from the aggregator can stay open for days, so each connection is
//! asked to close (HTTP/2 GOAWAY; HTTP/1 after the response in flight) once it reaches its maximum
//! age, less a random tenth so connections opened together do not close together; the client
//! reconnects and its certificate is checked again in a new handshake. The same graceful close
//! happens at shutdown. A connection still open `grace` after being asked is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::State;

/// One accepted connection and what serving it needs.
pub(super) struct Connection {
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
    pub(super) builder: Arc<auto::Builder<TokioExecutor>>,
    pub(super) state: Arc<State>,
    pub(super) handshake_timeout: Duration,
    /// When this connection is asked to close (`None`: only at shutdown).
    pub(super) max_age: Option<Duration>,
    /// How long a connection asked to close may take.
    pub(super) grace: Duration,
}

impl Connection {
    /// TLS handshake, then HTTP until the connection ends (see [`drive`]).
    pub(super) async fn serve(self, tcp: TcpStream, remote: SocketAddr, stopping: watch::Receiver<bool>) {
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%remote, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        let peer = Arc::new(
            self.state
                .auth
                .classify_peer(tls.get_ref().1.peer_certificates(), remote.ip()),
        );
        let state = self.state;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            let peer = peer.clone();
            // The body is never read: every route is a GET.
            let (parts, _body) = request.into_parts();
            async move { Ok::<_, Infallible>(state.respond(&peer, &parts).await) }
        });
        let connection = self.builder.serve_connection(TokioIo::new(tls), service);
        match drive(connection, self.max_age, self.grace, stopping).await {
            (_, Err(error)) => tracing::debug!(%remote, %error, "connection closed with an error"),
            (Ended::MaxAge, Ok(())) => {
                tracing::debug!(%remote, "connection closed at its maximum age");
            }
            (Ended::Forced, Ok(())) => {
                tracing::debug!(%remote, "connection dropped: still open after the grace period");
            }
            (_, Ok(())) => {}
        }
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client closed it, or it failed.
    Closed,
    /// It reached its maximum age and closed gracefully.
    MaxAge,
    /// The server is shutting down and it closed gracefully.
    Shutdown,
    /// It was asked to close but was still open after the grace period, and was dropped.
    Forced,
}

/// The age at which a connection is asked to close: `max_age` less up to a tenth of it,
/// chosen by `random` (0 ..= `u16::MAX`).
pub(crate) fn close_after(max_age: Duration, random: u16) -> Duration {
    let tenth = max_age / 10;
    let cut = tenth.mul_f64(f64::from(random) / f64::from(u16::MAX));
    max_age.saturating_sub(cut)
}

/// A random `u16` for [`close_after`] (0 if the system's random source fails).
pub(crate) fn random_u16() -> u16 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 2];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u16::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// Serves `connection` until it ends: after `max_age` (if any) or once `shutdown` turns true it
/// is asked to close gracefully, and dropped if still open `grace` later.
pub(crate) async fn drive<C>(
    connection: C,
    max_age: Option<Duration>,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (Ended, Result<(), C::Error>)
where
    C: GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    let aged = async {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    let stopping = async {
        if shutdown.wait_for(|stop| *stop).await.is_err() {
            // The sender is gone without a shutdown: never close for this reason.
            std::future::pending::<()>().await;
        }
    };
    let reason = tokio::select! {
        result = connection.as_mut() => return (Ended::Closed, result),
        () = aged => Ended::MaxAge,
        () = stopping => Ended::Shutdown,
    };
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(grace, connection.as_mut()).await {
        Ok(result) => (reason, result),
        Err(_) => (Ended::Forced, Ok(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http_body_util::{Empty, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    #[test]
    fn close_after_takes_off_at_most_a_tenth() {
        let ten_min = Duration::from_secs(600);
        assert_eq!(close_after(ten_min, 0), ten_min);
        assert_eq!(close_after(ten_min, u16::MAX), Duration::from_secs(540));
        let middle = close_after(ten_min, u16::MAX / 2);
        assert!(middle > Duration::from_secs(569) && middle < Duration::from_secs(571));
        assert_eq!(close_after(Duration::ZERO, 7), Duration::ZERO);
    }

    /// An HTTP/2 server connection over an in-memory pipe, driven by [`drive`], and a client.
    async fn h2_pair(
        max_age: Option<Duration>,
        shutdown: watch::Receiver<bool>,
    ) -> (
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        tokio::task::JoinHandle<Ended>,
        tokio::task::JoinHandle<()>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(|_: hyper::Request<Incoming>| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let server = tokio::spawn(async move {
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(server_io), service);
            drive(connection, max_age, Duration::from_secs(5), shutdown)
                .await
                .0
        });
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(client_io))
            .await
            .expect("handshake");
        let client = tokio::spawn(async move {
            let _ = connection.await;
        });
        (send, server, client)
    }

    async fn get(send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>) -> bool {
        let request = hyper::Request::get("http://adapter/healthz")
            .body(Empty::new())
            .expect("request");
        send.send_request(request).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_closed_at_its_maximum_age() {
        let (_stop, shutdown) = watch::channel(false);
        let start = tokio::time::Instant::now();
        let (mut send, server, client) = h2_pair(Some(Duration::from_secs(600)), shutdown).await;
        assert!(get(&mut send).await);
        tokio::time::sleep(Duration::from_secs(599)).await;
        assert!(get(&mut send).await, "still open before its age");
        let ended = tokio::time::timeout(Duration::from_secs(3_600), server).await;
        assert_eq!(
            ended.expect("closed within the hour").expect("server"),
            Ended::MaxAge
        );
        assert!(start.elapsed() >= Duration::from_secs(600));
        assert!(start.elapsed() < Duration::from_secs(601));
        client.await.expect("client");
        assert!(!get(&mut send).await, "the client saw the GOAWAY");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_maximum_age_only_shutdown_closes() {
        let (stop, shutdown) = watch::channel(false);
        let (mut send, server, _client) = h2_pair(None, shutdown).await;
        tokio::time::sleep(Duration::from_secs(7 * 24 * 3600)).await;
        assert!(get(&mut send).await);
        assert!(!server.is_finished());
        stop.send(true).expect("send");
        assert_eq!(server.await.expect("server"), Ended::Shutdown);
    }
}
