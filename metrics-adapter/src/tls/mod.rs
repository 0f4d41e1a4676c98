//! The serving TLS configuration: rustls with the ring provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and optional client certificates. The serving certificate is read at every
//! handshake from a [`ReloadableCert`] ([`reloadable`]), so it can be replaced while the adapter
//! runs; [`source`] loads it from files or generates a self-signed one.
//!
//! Client certificates are requested (with the requestheader and client CAs as hints) but not
//! required, and a certificate that chains to neither CA does not fail the handshake: like
//! `k8s.io/apiserver` (Go's `tls.RequestClientCert`), the adapter verifies the chain against each
//! CA itself after the handshake ([`crate::auth`]), and a request over a connection whose
//! certificate verified against neither gets 401. The handshake still proves that the client
//! holds the certificate's key.
//!
//! The CAs come from the API server's settings, which can change while the adapter runs:
//! [`Acceptors`] rebuilds the configuration when they do, so the next handshakes request
//! certificates for the new CAs.

pub(crate) mod reloadable;
pub(crate) mod source;

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use tokio_rustls::TlsAcceptor;

use crate::AdapterError;
pub use reloadable::ReloadableCert;
pub use source::TlsSource;

/// The rustls server configuration, serving whatever `cert` holds at each handshake.
/// `client_roots` are the CAs client certificates are requested for (none: no client
/// certificates are requested).
pub(crate) fn server_config(
    cert: Arc<ReloadableCert>,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, AdapterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AdapterError::Tls(e.to_string()))?;
    let builder = if client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(Arc::new(OptionalClientCert::new(client_roots, &provider)?))
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS acceptor for new connections, rebuilt when the client CAs change (they come with a
/// generation number that changes with them).
pub(crate) struct Acceptors {
    cert: Arc<ReloadableCert>,
    current: Mutex<(u64, TlsAcceptor)>,
}

impl Acceptors {
    /// An acceptor serving `cert` and requesting client certificates for `roots`.
    pub(crate) fn new(
        cert: Arc<ReloadableCert>,
        generation: u64,
        roots: &[CertificateDer<'static>],
    ) -> Result<Self, AdapterError> {
        let acceptor = TlsAcceptor::from(server_config(cert.clone(), roots)?);
        Ok(Self {
            cert,
            current: Mutex::new((generation, acceptor)),
        })
    }

    /// The acceptor for CAs `roots` of `generation`: the current one, or a new one when the
    /// generation changed (if the new one cannot be built, the current one stays, with a warning).
    pub(crate) fn get(&self, generation: u64, roots: &[CertificateDer<'static>]) -> TlsAcceptor {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            match server_config(self.cert.clone(), roots) {
                Ok(config) => *current = (generation, TlsAcceptor::from(config)),
                Err(error) => {
                    tracing::warn!(%error, "new client CAs not usable for TLS; keeping the previous ones");
                    current.0 = generation;
                }
            }
        }
        current.1.clone()
    }
}

/// Requests a client certificate, accepts any (or none), and checks the handshake signature.
#[derive(Debug)]
struct OptionalClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl OptionalClientCert {
    fn new(roots: &[CertificateDer<'static>], provider: &CryptoProvider) -> Result<Self, AdapterError> {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store
                .add(root.clone())
                .map_err(|e| AdapterError::Tls(format!("client CA certificate: {e}")))?;
        }
        Ok(Self {
            hints: store.subjects(),
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chains are verified per CA after the handshake (see the module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    /// Whether the server saw a client certificate in one handshake through `acceptor`, with a
    /// client holding `client_chain` and its key.
    async fn sees_client_cert(
        acceptor: TlsAcceptor,
        server_root: &CertificateDer<'static>,
        client_chain: Vec<CertificateDer<'static>>,
        client_key: PrivateKeyDer<'static>,
    ) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server_root.clone()).expect("root");
        let client =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(client_chain, client_key)
                .expect("client cert");
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let tls = acceptor.accept(server_io).await.expect("accept");
            tls.get_ref().1.peer_certificates().is_some()
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let _client = connector
            .connect(ServerName::try_from("localhost").expect("name"), client_io)
            .await
            .expect("connect");
        server.await.expect("server")
    }

    #[tokio::test]
    async fn new_client_cas_are_requested_from_the_next_handshake() {
        let serving = Arc::new(ReloadableCert::empty());
        serving.set_self_signed(&[]).expect("serving cert");
        let server_root = serving.chain()[0].clone();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.distinguished_name.push(DnType::CommonName, "client-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params.self_signed(&ca_key).expect("CA").der().clone();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.distinguished_name.push(DnType::CommonName, "alice");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = leaf.signed_by(&leaf_key, &issuer).expect("leaf").der().clone();
        let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));

        let acceptors = Acceptors::new(serving, 0, &[]).expect("acceptors");
        // No client CA yet: no certificate is requested.
        let first = acceptors.get(0, &[]);
        assert!(!sees_client_cert(first, &server_root, vec![leaf.clone()], key()).await);
        // The CAs change (a new generation): the next handshake requests one.
        let second = acceptors.get(1, std::slice::from_ref(&ca));
        assert!(sees_client_cert(second, &server_root, vec![leaf.clone()], key()).await);
        // Same generation: the same configuration is kept.
        let third = acceptors.get(1, &[]);
        assert!(sees_client_cert(third, &server_root, vec![leaf], key()).await);
    }
}
