//! The serving TLS configuration: rustls with the ring provider, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and optional client certificates.
//!
//! Client certificates are requested (with the requestheader and client CAs as hints) but not
//! required, and a certificate that chains to neither CA does not fail the handshake: like
//! `k8s.io/apiserver` (Go's `tls.RequestClientCert`), the adapter verifies the chain against each
//! CA itself after the handshake ([`crate::auth`]), and a request over a connection whose
//! certificate verified against neither gets 401. The handshake still proves that the client
//! holds the certificate's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::AdapterError;

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: a certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed certificate generated at start-up for `localhost`, `127.0.0.1` and
    /// `dns_names` (e.g. `ebb-metrics.ebb-system.svc`). The APIService then needs
    /// `insecureSkipTLSVerify: true`, or the certificate as `caBundle`.
    SelfSigned {
        /// Extra DNS names (or IP addresses) for the certificate.
        dns_names: Vec<String>,
    },
}

/// A certificate chain and its key.
pub(crate) struct ServingCert {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

fn tls_file_error(path: &Path, message: impl std::fmt::Display) -> AdapterError {
    AdapterError::TlsFiles {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

impl ServingCert {
    pub(crate) fn load(source: &TlsSource) -> Result<Self, AdapterError> {
        match source {
            TlsSource::Files { cert, key } => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| tls_file_error(cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_file_error(cert, e))?;
                if chain.is_empty() {
                    return Err(tls_file_error(cert, "no CERTIFICATE block"));
                }
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_file_error(key, e))?;
                Ok(Self { chain, key })
            }
            TlsSource::SelfSigned { dns_names } => self_signed(dns_names),
        }
    }
}

fn self_signed(dns_names: &[String]) -> Result<ServingCert, AdapterError> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for name in dns_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let err = |e: rcgen::Error| AdapterError::Tls(format!("generating a self-signed certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ebb-metrics-adapter");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(ServingCert {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// The rustls server configuration. `client_roots` are the CAs client certificates are
/// requested for (none: no client certificates are requested).
pub(crate) fn server_config(
    cert: ServingCert,
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
    let mut config = builder
        .with_single_cert(cert.chain, cert.key)
        .map_err(|e| AdapterError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
