//! A serving certificate that can be replaced while the adapter runs: rustls asks it for the
//! certificate at every handshake ([`ResolvesServerCert`]), so a renewed or rotated certificate
//! is served from the next connection on, without a restart. Connections already open keep the
//! certificate they were set up with.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsSource;
use super::source::{ServingCert, self_signed};
use crate::AdapterError;

/// The adapter's current serving certificate and key; empty until first set (handshakes then
/// fail). Share it as `Arc<ReloadableCert>` between the adapter ([`TlsSource::Reloadable`]) and
/// whatever renews the certificate. `Debug` never shows the key.
#[derive(Default)]
pub struct ReloadableCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

/// Identity: two handles are equal when they are the same certificate holder.
impl PartialEq for ReloadableCert {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for ReloadableCert {}

impl ReloadableCert {
    /// A holder with no certificate yet.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A holder filled from `source` (files read or a self-signed certificate generated now; a
    /// [`TlsSource::Reloadable`] gives a holder with that one's current certificate).
    pub fn from_source(source: &TlsSource) -> Result<Self, AdapterError> {
        let holder = Self::empty();
        match source {
            TlsSource::Files { cert, key } => holder.set(ServingCert::from_files(cert, key)?)?,
            TlsSource::SelfSigned { dns_names } => holder.set(self_signed(dns_names)?)?,
            TlsSource::Reloadable(other) => {
                *holder.current.write().unwrap_or_else(PoisonError::into_inner) = other.current();
            }
        }
        Ok(holder)
    }

    /// Replaces the certificate with a PEM chain (leaf first) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1). On error (unparsable, or a key that does not match the leaf) the current
    /// certificate stays.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), AdapterError> {
        self.set(ServingCert::from_pem(cert_pem, key_pem)?)
    }

    /// Replaces the certificate with a new self-signed one for `localhost`, `127.0.0.1` and
    /// `dns_names`.
    pub fn set_self_signed(&self, dns_names: &[String]) -> Result<(), AdapterError> {
        self.set(self_signed(dns_names)?)
    }

    /// Whether a certificate is loaded (the adapter can complete handshakes).
    pub fn is_loaded(&self) -> bool {
        self.current().is_some()
    }

    /// The current certificate chain, leaf first (empty when none is loaded).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().map(|c| c.cert.clone()).unwrap_or_default()
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, cert: ServingCert) -> Result<(), AdapterError> {
        let provider = rustls::crypto::ring::default_provider();
        // Checks that the key matches the leaf; the error names no key material.
        let certified = CertifiedKey::from_der(cert.chain, cert.key, &provider)
            .map_err(|e| AdapterError::Tls(format!("serving certificate and key: {e}")))?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(certified));
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use rustls::RootCertStore;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn cert(name: &str) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    /// One handshake against a server resolving through `holder`, trusting only `root` as `name`.
    async fn handshake(holder: &Arc<ReloadableCert>, root: &CertificateDer<'static>, name: &str) -> bool {
        let server = crate::tls::server_config(holder.clone(), &[]).expect("server config");
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).expect("root");
        let client =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let serve = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.ok()?;
            tls.write_all(b"!").await.ok()?;
            tls.flush().await.ok()
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_owned()).expect("name");
        let ok = match connector.connect(name, client_io).await {
            Ok(mut tls) => {
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.is_ok() && byte == *b"!"
            }
            Err(_) => false,
        };
        serve.abort();
        ok
    }

    #[tokio::test]
    async fn new_handshakes_get_the_replaced_certificate() {
        let holder = Arc::new(ReloadableCert::empty());
        let (a_pem, a_key, a_der) = cert("a.example");
        let (b_pem, b_key, b_der) = cert("b.example");
        assert!(!holder.is_loaded());
        assert!(
            !handshake(&holder, &a_der, "a.example").await,
            "no certificate yet"
        );
        holder
            .set_pem(a_pem.as_bytes(), a_key.as_bytes())
            .expect("a loads");
        assert!(holder.is_loaded());
        assert!(handshake(&holder, &a_der, "a.example").await);
        holder
            .set_pem(b_pem.as_bytes(), b_key.as_bytes())
            .expect("b loads");
        assert_eq!(holder.chain(), vec![b_der.clone()]);
        assert!(handshake(&holder, &b_der, "b.example").await);
        assert!(!handshake(&holder, &a_der, "a.example").await, "a is gone");
    }

    #[test]
    fn a_mismatched_key_is_refused_and_the_old_certificate_stays() {
        let holder = ReloadableCert::empty();
        let (a_pem, a_key, a_der) = cert("a.example");
        let (b_pem, _b_key, _) = cert("b.example");
        holder
            .set_pem(a_pem.as_bytes(), a_key.as_bytes())
            .expect("a loads");
        assert!(holder.set_pem(b_pem.as_bytes(), a_key.as_bytes()).is_err());
        assert_eq!(holder.chain(), vec![a_der]);
        let debug = format!("{holder:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
