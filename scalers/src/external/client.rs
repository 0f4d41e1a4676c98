//! The gRPC side of the external triggers: one HTTP/2 channel per server and TLS settings
//! ([`GrpcServer`], pooled in [`ExternalClients`] while triggers use it), dialled by ebb itself
//! (tokio, and tokio-rustls on ring for TLS), and the mapping of gRPC statuses to
//! [`ScalerError`]s ([`status_error`]).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::config::{ExternalConfig, ScalerAddress};
use super::proto::external_scaler_client::ExternalScalerClient;
use crate::ScalerError;
use crate::common::errors::error_chain;
use crate::common::pool::WeakPool;
use crate::common::tls::TlsSettings;

/// The largest message ebb reads from an external scaler (a metric spec list or a value list).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The longest part of a server's status message quoted in an error.
const MAX_QUOTED_CHARS: usize = 200;

/// What every external trigger of a factory shares: one [`GrpcServer`] per server address and
/// TLS settings, kept while a trigger uses it.
pub struct ExternalClients {
    timeout: Duration,
    servers: WeakPool<(ScalerAddress, Option<TlsSettings>), GrpcServer>,
}

impl ExternalClients {
    /// Clients whose connects and calls each give up after `timeout`. Needs no async runtime.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            servers: WeakPool::new(),
        }
    }

    /// The shared server for this configuration (a new one if no trigger uses it now). Fails only
    /// when the TLS settings make no client configuration (e.g. a CA that is not PEM).
    pub fn server(&self, config: &ExternalConfig) -> Result<Arc<GrpcServer>, ScalerError> {
        let tls = match &config.tls {
            None => None,
            Some(settings) => Some(Arc::new(settings.client_config().map_err(|e| {
                ScalerError::InvalidConfig(format!("external: TLS: {}", error_chain(&e)))
            })?)),
        };
        let key = (config.address.clone(), config.tls.clone());
        Ok(self.servers.get_or_insert_with(key, || GrpcServer {
            address: config.address.clone(),
            tls,
            timeout: self.timeout,
            channel: OnceLock::new(),
        }))
    }

    /// How many servers triggers use now.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// The timeout of a connect and of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Debug for ExternalClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalClients")
            .field("timeout", &self.timeout)
            .field("servers", &self.servers.len())
            .finish()
    }
}

/// One external scaler server as ebb dials it: one lazily connected HTTP/2 channel that every
/// trigger naming the same address and TLS settings multiplexes its calls on.
pub struct GrpcServer {
    address: ScalerAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    channel: OnceLock<Channel>,
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("address", &self.address.authority())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl GrpcServer {
    /// `host:port`, for errors and logs.
    pub fn shown(&self) -> String {
        self.address.authority()
    }

    /// A client on the shared channel, created (not yet connected) on first use. Needs a tokio
    /// runtime.
    pub fn client(&self) -> Result<ExternalScalerClient<Channel>, ScalerError> {
        let channel = match self.channel.get() {
            Some(c) => c.clone(),
            None => {
                let fresh = self.connect_lazy()?;
                self.channel.get_or_init(|| fresh).clone()
            }
        };
        Ok(ExternalScalerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn connect_lazy(&self) -> Result<Channel, ScalerError> {
        // The scheme stays http even over TLS: ebb's connector does the TLS, tonic none.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address.authority()))
            .map_err(|e| ScalerError::InvalidConfig(format!("external: scalerAddress: {e}")))?
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        let (address, timeout) = (self.address.clone(), self.timeout);
        Ok(match &self.tls {
            None => endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let address = address.clone();
                async move { dial_plain(&address, timeout).await.map(TokioIo::new) }
            })),
            Some(tls) => {
                let tls = tokio_rustls::TlsConnector::from(tls.clone());
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let (address, tls) = (address.clone(), tls.clone());
                    async move {
                        let tcp = dial_plain(&address, timeout).await?;
                        let name = ServerName::try_from(address.host.clone())
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                        let stream = within(timeout, tls.connect(name, tcp)).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
            }
        })
    }

    /// Runs one call, bounded by the timeout, mapping its failure to a [`ScalerError`].
    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ScalerError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(ScalerError::timeout(&self.shown(), self.timeout)),
            Ok(Err(status)) => Err(status_error(&self.shown(), what, &status, self.timeout)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// The timeout of a connect and of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

async fn within<T>(timeout: Duration, f: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn dial_plain(address: &ScalerAddress, timeout: Duration) -> std::io::Result<TcpStream> {
    let tcp = within(timeout, TcpStream::connect((address.host.as_str(), address.port))).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A failed call as a [`ScalerError`]: the server unreachable (`Unavailable`, or any status tonic
/// made from a transport error: a refused connect, a broken connection), out of time, refusing the caller, or any
/// other status as a bad response quoting (a bounded part of) the server's message. `timeout` is
/// the deadline the call had.
pub fn status_error(endpoint: &str, what: &str, status: &Status, timeout: Duration) -> ScalerError {
    let message: String = status.message().chars().take(MAX_QUOTED_CHARS).collect();
    // A status with a source was made on ebb's side from a transport failure (a refused or broken
    // connection shows as `Cancelled` or `Unknown`, not only `Unavailable`).
    if let Some(source) = std::error::Error::source(status) {
        return ScalerError::unreachable(endpoint, format!("{what}: {}", error_chain(source)));
    }
    let detail = format!("{what}: {message}");
    match status.code() {
        Code::Unavailable => ScalerError::unreachable(endpoint, detail),
        Code::DeadlineExceeded => ScalerError::timeout(endpoint, timeout),
        Code::Unauthenticated | Code::PermissionDenied => ScalerError::unauthorized(endpoint, detail),
        code => ScalerError::bad_response(endpoint, format!("{what}: status {code:?}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_error(endpoint: &str, what: &str, status: &Status) -> ScalerError {
        super::status_error(endpoint, what, status, Duration::from_secs(3))
    }

    #[test]
    fn statuses_map_to_errors() {
        let e = status_error("h:1", "IsActive", &Status::unavailable("connection refused"));
        assert_eq!(e.kind(), "unreachable");
        assert!(e.to_string().contains("h:1") && e.to_string().contains("connection refused"));
        assert_eq!(
            status_error("h:1", "x", &Status::unauthenticated("no")).kind(),
            "unauthorized"
        );
        assert_eq!(
            status_error("h:1", "x", &Status::permission_denied("no")).kind(),
            "unauthorized"
        );
        assert_eq!(
            status_error("h:1", "x", &Status::deadline_exceeded("slow")).kind(),
            "timeout"
        );
        let e = status_error("h:1", "GetMetrics", &Status::not_found("y".repeat(5000)));
        assert_eq!(e.kind(), "bad_response");
        let text = e.to_string();
        assert!(text.contains("GetMetrics: status NotFound"), "{text}");
        assert!(
            text.len() < 400,
            "the server's message is bounded: {}",
            text.len()
        );
    }
}
