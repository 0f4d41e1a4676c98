//! TLS for every scaler's client: one builder of a rustls [`ClientConfig`] from [`TlsSettings`]
//! (which roots to trust, an optional client certificate, ALPN), the system's root certificates
//! loaded once per process ([`system_roots`]), and the accept-anything verifier behind
//! `unsafeSsl: true` ([`AcceptAnyCertificate`]). Everything runs on the ring provider.
//!
//! Settings hold PEM text, including private keys: their `Debug` shows only which parts are set,
//! and no [`TlsError`] quotes key material.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Which server certificates a client trusts.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Trust {
    /// The system's root certificates.
    #[default]
    System,
    /// The system's roots plus the CA certificates of this PEM bundle (RabbitMQ's `ca`).
    SystemAnd(String),
    /// Only the CA certificates of this PEM bundle (Kafka's `ca`).
    Only(String),
    /// Any certificate (`unsafeSsl: true`); handshake signatures are still checked.
    AnyCertificate,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trust::System => "System",
            Trust::SystemAnd(_) => "SystemAnd(<ca>)",
            Trust::Only(_) => "Only(<ca>)",
            Trust::AnyCertificate => "AnyCertificate",
        })
    }
}

/// A client certificate chain and its unencrypted private key, both PEM. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    /// PEM certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1, unencrypted.
    pub key_pem: String,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCert(<redacted>)")
    }
}

/// Everything that makes one client TLS configuration; equal settings give equal configurations,
/// so it can key a pool of clients. `Debug` never shows PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// The server certificates trusted.
    pub trust: Trust,
    /// The certificate presented to the server, if any.
    pub client_cert: Option<ClientCert>,
    /// ALPN protocols offered, most preferred first (empty: none).
    pub alpn: Vec<Vec<u8>>,
}

/// Why a [`TlsSettings`] gives no client configuration. Never quotes a private key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the protocol setup (should not happen with the ring provider).
    #[error("cannot set up TLS ({0})")]
    Setup(#[source] rustls::Error),
    /// The CA bundle is not PEM.
    #[error("ca is not a PEM certificate bundle")]
    CaNotPem(#[source] rustls::pki_types::pem::Error),
    /// The CA bundle holds no certificate.
    #[error("ca holds no PEM certificate")]
    CaEmpty,
    /// No certificate of the CA bundle is a usable trust anchor.
    #[error("no certificate in ca could be used")]
    CaUnusable,
    /// The client certificate is not PEM.
    #[error("cert is not a PEM certificate")]
    CertNotPem(#[source] rustls::pki_types::pem::Error),
    /// The client certificate text holds no certificate.
    #[error("cert holds no PEM certificate")]
    CertEmpty,
    /// The key is not an unencrypted PEM key (its parse error is left out: it could quote the key).
    #[error("key is not an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    KeyNotPem,
    /// The certificate and key do not form a client identity.
    #[error("cert and key cannot be used together ({0})")]
    ClientIdentity(#[source] rustls::Error),
}

impl TlsSettings {
    /// Settings that trust the system's roots, or any certificate when `unsafe_ssl`; no client
    /// certificate, no ALPN.
    pub fn verifying(unsafe_ssl: bool) -> Self {
        Self {
            trust: if unsafe_ssl {
                Trust::AnyCertificate
            } else {
                Trust::System
            },
            ..Self::default()
        }
    }

    /// Builds the rustls client configuration (ring provider, safe default protocol versions).
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?;
        let builder = match &self.trust {
            Trust::AnyCertificate => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))),
            Trust::System => builder.with_root_certificates(system_roots().store.clone()),
            Trust::SystemAnd(ca) => {
                let mut roots = (*system_roots().store).clone();
                add_ca(&mut roots, ca)?;
                builder.with_root_certificates(roots)
            }
            Trust::Only(ca) => {
                let mut roots = RootCertStore::empty();
                add_ca(&mut roots, ca)?;
                builder.with_root_certificates(roots)
            }
        };
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(ClientCert { cert_pem, key_pem }) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(TlsError::CertNotPem)?;
                if chain.is_empty() {
                    return Err(TlsError::CertEmpty);
                }
                let key =
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::KeyNotPem)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsError::ClientIdentity)?
            }
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }

    /// A note for errors of verified connections when these settings rely on the system's roots
    /// alone and the system has none; `None` otherwise.
    pub fn roots_problem(&self) -> Option<&'static str> {
        match self.trust {
            Trust::System => system_roots().problem(),
            _ => None,
        }
    }
}

fn add_ca(roots: &mut RootCertStore, ca: &str) -> Result<(), TlsError> {
    let certs = CertificateDer::pem_slice_iter(ca.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::CaNotPem)?;
    if certs.is_empty() {
        return Err(TlsError::CaEmpty);
    }
    let (added, _unusable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::CaUnusable);
    }
    Ok(())
}

/// The system's trusted root certificates, and why none were found, if none were.
#[derive(Debug)]
pub struct SystemRoots {
    store: Arc<RootCertStore>,
    problem: Option<String>,
}

impl SystemRoots {
    /// The trusted roots (possibly empty).
    pub fn store(&self) -> &Arc<RootCertStore> {
        &self.store
    }

    /// Why the store is empty (`no trusted root certificates were found…`), if it is.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

/// The system's root certificates, loaded on first use and then shared by the whole process.
pub fn system_roots() -> &'static SystemRoots {
    static ROOTS: OnceLock<SystemRoots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _unparsable) = store.add_parsable_certificates(native.certs);
        let problem = (added == 0).then(|| {
            let mut note = "no trusted root certificates were found in the system store".to_string();
            if let Some(e) = native.errors.first() {
                note.push_str(&format!(" ({e})"));
            }
            note
        });
        SystemRoots {
            store: Arc::new(store),
            problem,
        }
    })
}

/// Certificate "verification" for `unsafeSsl: true`: accepts any certificate, but still checks
/// handshake signatures so the connection itself is sound.
#[derive(Debug)]
pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Pki {
        ca_pem: String,
        server_cert: CertificateDer<'static>,
        server_key_pem: String,
        client: ClientCert,
    }

    fn pki() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ebb test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage| {
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            (params.signed_by(&key, &ca).unwrap(), key)
        };
        let (server, server_key) = leaf(vec!["localhost".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca_pem: ca.pem(),
            server_cert: server.der().clone(),
            server_key_pem: server_key.serialize_pem(),
            client: ClientCert {
                cert_pem: client.pem(),
                key_pem: client_key.serialize_pem(),
            },
        }
    }

    /// One handshake over an in-memory pipe against a server with `pki`'s certificate (requiring a
    /// client certificate from the test CA when `client_auth`); whether one byte made it through.
    async fn handshake(pki: &Pki, client_auth: bool, settings: &TlsSettings) -> bool {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            add_ca(&mut roots, &pki.ca_pem).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
        let server = builder
            .with_single_cert(vec![pki.server_cert.clone()], key)
            .unwrap();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serve = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.ok()?;
            tls.write_all(b"!").await.ok()?;
            tls.flush().await.ok()
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(settings.client_config().unwrap()));
        let name = ServerName::try_from("localhost").unwrap();
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
    async fn trust_decides_which_servers_are_accepted() {
        let pki = pki();
        let only = |trust| TlsSettings {
            trust,
            ..TlsSettings::default()
        };
        assert!(handshake(&pki, false, &only(Trust::Only(pki.ca_pem.clone()))).await);
        assert!(handshake(&pki, false, &only(Trust::SystemAnd(pki.ca_pem.clone()))).await);
        assert!(handshake(&pki, false, &TlsSettings::verifying(true)).await);
        assert!(!handshake(&pki, false, &TlsSettings::verifying(false)).await);
    }

    #[tokio::test]
    async fn client_certificate_is_presented() {
        let pki = pki();
        let without = TlsSettings {
            trust: Trust::Only(pki.ca_pem.clone()),
            ..TlsSettings::default()
        };
        let with = TlsSettings {
            client_cert: Some(pki.client.clone()),
            ..without.clone()
        };
        assert!(handshake(&pki, true, &with).await);
        assert!(!handshake(&pki, true, &without).await);
    }

    #[test]
    fn alpn_is_offered() {
        let settings = TlsSettings {
            alpn: vec![b"http/1.1".to_vec()],
            ..TlsSettings::default()
        };
        assert_eq!(
            settings.client_config().unwrap().alpn_protocols,
            [b"http/1.1".to_vec()]
        );
        assert!(
            TlsSettings::default()
                .client_config()
                .unwrap()
                .alpn_protocols
                .is_empty()
        );
    }

    #[test]
    fn bad_material_is_an_error_that_never_quotes_the_key() {
        let pki = pki();
        let with_ca = |ca: &str| TlsSettings {
            trust: Trust::Only(ca.to_string()),
            ..TlsSettings::default()
        };
        assert!(matches!(
            with_ca("not pem").client_config(),
            Err(TlsError::CaEmpty)
        ));
        assert!(matches!(
            TlsSettings {
                trust: Trust::SystemAnd(String::new()),
                ..TlsSettings::default()
            }
            .client_config(),
            Err(TlsError::CaEmpty)
        ));
        let with_cert = |cert_pem: &str, key_pem: &str| TlsSettings {
            client_cert: Some(ClientCert {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
            }),
            ..TlsSettings::verifying(true)
        };
        assert!(matches!(
            with_cert("x", &pki.client.key_pem).client_config(),
            Err(TlsError::CertEmpty)
        ));
        let secret_key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0Yml0cw==\n-----END PRIVATE KEY-----\n";
        let e = with_cert(&pki.client.cert_pem, secret_key)
            .client_config()
            .unwrap_err();
        let text = format!("{e} {e:?} {}", crate::common::errors::error_chain(&e));
        assert!(!text.contains("c2VjcmV0Yml0cw"), "{text}");
        assert!(
            with_cert(&pki.client.cert_pem, &pki.client.key_pem)
                .client_config()
                .is_ok()
        );
        // A key that does not match the certificate.
        let other_key = KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(
            with_cert(&pki.client.cert_pem, &other_key).client_config(),
            Err(TlsError::ClientIdentity(_))
        ));
    }

    #[test]
    fn debug_never_shows_pem() {
        let pki = pki();
        let settings = TlsSettings {
            trust: Trust::SystemAnd(pki.ca_pem.clone()),
            client_cert: Some(pki.client.clone()),
            alpn: Vec::new(),
        };
        let text = format!("{settings:?}");
        assert!(!text.contains("BEGIN") && !text.contains("PRIVATE"), "{text}");
        assert!(text.contains("SystemAnd"), "{text}");
        assert_eq!(TlsSettings::verifying(true).roots_problem(), None);
    }
}
