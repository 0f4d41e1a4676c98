//! One TLS + HTTP/2 client connection to the adapter's port, as the scenarios that talk to it
//! directly make it: the aggregator's kept connection (with the front-proxy certificate) or an
//! attacker's (from a chosen loopback address, no certificate). The server's certificate is not
//! checked: the scenarios measure the adapter, not its PKI.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::body::Body;
use hyper::client::conn::http2::SendRequest;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS client configuration was refused.
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    /// Binding, connecting or the handshake failed.
    #[error("connecting")]
    Io(#[from] std::io::Error),
    /// The server name is not a DNS name.
    #[error("server name")]
    Name(#[from] rustls::pki_types::InvalidDnsNameError),
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake")]
    Http(#[from] hyper::Error),
}

/// A client certificate chain and its key.
pub type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Connects to `addr` over TLS (ALPN h2) and HTTP/2, from `bind` if given, presenting
/// `client_cert` if given; the connection's driver runs on its own task.
pub async fn connect<B>(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    client_cert: Option<ClientCert>,
) -> Result<SendRequest<B>, ConnectError>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ebb_scalers::common::tls::AcceptAnyCertificate(provider)));
    let mut tls = match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(conn);
    Ok(sender)
}
