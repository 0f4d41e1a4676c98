//! Dialling one PostgreSQL connection: TCP to each host in turn, every byte read counted against
//! a cap ([`ReadCap`], refilled per query, so that no answer — however large a server makes it —
//! is buffered past the cap), TLS by rustls as `sslmode` says, then the protocol's start-up and
//! authentication by tokio-postgres. The connection's task runs on the runtime until the client
//! is dropped or the socket fails.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::Client;
use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect};

use super::conninfo::{PgTarget, SslMode};
use crate::common::tls::{AcceptAnyCertificate, system_roots};

/// The bytes a connection may still read before it fails. Cheap to clone: clones share it.
#[derive(Debug, Clone, Default)]
pub struct ReadCap(Arc<CapState>);

#[derive(Debug, Default)]
struct CapState {
    left: AtomicUsize,
    exceeded: AtomicBool,
}

impl ReadCap {
    /// A cap of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let cap = Self::default();
        cap.refill(bytes);
        cap
    }

    /// Allows `bytes` more reads from now on (not added to what was left).
    pub fn refill(&self, bytes: usize) {
        self.0.left.store(bytes, Ordering::SeqCst);
        self.0.exceeded.store(false, Ordering::SeqCst);
    }

    /// Whether a read went past the cap since the last refill.
    pub fn exhausted(&self) -> bool {
        self.0.exceeded.load(Ordering::SeqCst)
    }

    /// Takes `n` bytes; false (and the cap marked exceeded) when fewer were left.
    fn take(&self, n: usize) -> bool {
        let taken = self
            .0
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(n));
        if taken.is_err() {
            self.0.exceeded.store(true, Ordering::SeqCst);
        }
        taken.is_ok()
    }
}

/// A stream whose reads fail once its [`ReadCap`] is used up.
#[derive(Debug)]
pub struct CappedStream<S> {
    inner: S,
    cap: ReadCap,
}

impl<S: AsyncRead + Unpin> AsyncRead for CappedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if self.cap.take(read) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(io::Error::other(
                "the server's answer is larger than ebb reads",
            )))
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CappedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// rustls as tokio-postgres' TLS: the handshake towards one server name.
struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// The TLS stream handed to tokio-postgres (no channel binding: SCRAM without `-PLUS`).
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Verifies the chain against the system's roots but not the host name (`verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The roots of a PEM CA bundle, or why there are none (never quoting the text).
pub fn ca_roots(ca: &str) -> Result<Arc<RootCertStore>, String> {
    let certs = CertificateDer::pem_slice_iter(ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "ca is not a PEM certificate bundle".to_string())?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("ca holds no usable PEM certificate".to_string());
    }
    Ok(Arc::new(roots))
}

/// The rustls configuration of an `sslmode` (`None` for `disable`), verifying against `ca` when
/// given (else the system's roots), or why there is none.
pub fn tls_config(mode: SslMode, ca: Option<&str>) -> Result<Option<Arc<ClientConfig>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS ({e})"))?;
    let roots = || match (ca, system_roots().problem()) {
        (Some(ca), _) => ca_roots(ca),
        (None, Some(problem)) => Err(format!("no system root certificates to verify with ({problem})")),
        (None, None) => Ok(system_roots().store().clone()),
    };
    let config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots()?, provider)
                .build()
                .map_err(|e| format!("cannot set up TLS verification ({e})"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => builder.with_root_certificates(roots()?).with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// Why no connection could be made to any host.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP could not connect (refused, DNS, unreachable) or did not within the timeout.
    #[error("{0}")]
    Tcp(String),
    /// The start-up, TLS handshake or authentication failed.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// The start-up took longer than the connect timeout.
    #[error("the connection start-up took longer than {0:?}")]
    StartupTimeout(Duration),
}

/// Connects to the target's hosts in turn; the first that completes start-up wins. The returned
/// client's reads count against `cap`.
pub async fn dial(
    target: &PgTarget,
    tls: Option<&Arc<ClientConfig>>,
    cap: &ReadCap,
    timeout: Duration,
) -> Result<Client, DialError> {
    let timeout = target.connect_timeout.map_or(timeout, |t| t.min(timeout));
    let mut last = DialError::Tcp("no host to connect to".into());
    for (host, port) in &target.hosts {
        match dial_one(target, host, *port, tls, cap, timeout).await {
            Ok(client) => return Ok(client),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn dial_one(
    target: &PgTarget,
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
    cap: &ReadCap,
    timeout: Duration,
) -> Result<Client, DialError> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(DialError::Tcp(format!("{host}:{port}: {e}"))),
        Err(_) => {
            return Err(DialError::Tcp(format!(
                "{host}:{port}: no TCP connection within {timeout:?}"
            )));
        }
    };
    let _ = tcp.set_nodelay(true);
    let stream = CappedStream {
        inner: tcp,
        cap: cap.clone(),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .application_name(target.application_name.as_deref().unwrap_or("ebb"));
    if let Some(password) = &target.password {
        config.password(password);
    }
    if let Some(db) = &target.dbname {
        config.dbname(db);
    }
    if let Some(options) = &target.options {
        config.options(options);
    }
    let startup = async {
        match (tls, target.ssl) {
            (Some(tls), mode) => {
                config.ssl_mode(match mode {
                    SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                    _ => tokio_postgres::config::SslMode::Require,
                });
                let name = ServerName::try_from(host.to_string())
                    .map_err(|_| DialError::Tcp(format!("{host:?} is not a valid TLS server name")))?;
                let connector = RustlsConnect {
                    config: tls.clone(),
                    name,
                };
                let (client, connection) = config.connect_raw(stream, connector).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
            (None, _) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = config.connect_raw(stream, NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
        }
    };
    match tokio::time::timeout(timeout, startup).await {
        Ok(result) => result,
        Err(_) => Err(DialError::StartupTimeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_fail_past_the_cap_and_a_refill_allows_more() {
        let (mut server, client) = tokio::io::duplex(64);
        let cap = ReadCap::new(10);
        let mut capped = CappedStream {
            inner: client,
            cap: cap.clone(),
        };
        tokio::io::AsyncWriteExt::write_all(&mut server, b"12345")
            .await
            .unwrap();
        let mut buf = [0u8; 32];
        assert_eq!(capped.read(&mut buf).await.unwrap(), 5);
        assert!(!cap.exhausted());
        tokio::io::AsyncWriteExt::write_all(&mut server, b"123456789")
            .await
            .unwrap();
        let e = capped.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("larger than ebb reads"), "{e}");
        assert!(cap.exhausted());
        cap.refill(100);
        tokio::io::AsyncWriteExt::write_all(&mut server, b"abc")
            .await
            .unwrap();
        assert!(capped.read(&mut buf).await.unwrap() > 0);
    }

    #[test]
    fn every_ssl_mode_has_a_config() {
        assert!(tls_config(SslMode::Disable, None).unwrap().is_none());
        for mode in [SslMode::Prefer, SslMode::Require] {
            assert!(tls_config(mode, None).unwrap().is_some());
        }
        let ca = rcgen::generate_simple_self_signed(vec!["db".to_string()])
            .unwrap()
            .cert
            .pem();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            assert!(tls_config(mode, Some(&ca)).unwrap().is_some());
            assert_eq!(
                tls_config(mode, Some("not pem")).unwrap_err(),
                "ca holds no usable PEM certificate"
            );
        }
    }
}
