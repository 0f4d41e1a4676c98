//! How a standby checks the leader's certificate. The standby connects to the leader's pod IP,
//! which no certificate names, so the chain is verified against the adapter's CA (from the
//! Secret or `--metrics-adapter-ca`) for a *fixed* server name: the first
//! `--metrics-adapter-dns-names` entry (e.g. `ebb-metrics.ebb-system.svc`), which every replica's
//! serving certificate covers. The CA can change while the process runs: every handshake uses the
//! one set last. Only the legacy self-signed mode (each replica its own certificate) accepts any
//! certificate.

use std::sync::{Arc, PoisonError, RwLock};

use ebb_scalers::common::tls::{AcceptAnyCertificate, system_roots};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::CertError;

/// What a standby trusts when it forwards to the leader.
#[derive(Debug)]
pub struct LeaderTrust {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Any certificate (the legacy self-signed mode); handshake signatures are still checked.
    Any,
    /// Chains to the current roots, for this name.
    Verified {
        name: ServerName<'static>,
        verifier: RwLock<Option<Arc<WebPkiServerVerifier>>>,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl LeaderTrust {
    /// Accepts any certificate (legacy self-signed mode only).
    pub fn any() -> Self {
        Self { mode: Mode::Any }
    }

    /// Verifies the leader's certificate for `server_name`, against roots set later with
    /// [`set_ca_pem`](Self::set_ca_pem) or [`use_system_roots`](Self::use_system_roots) (until
    /// then every handshake fails).
    pub fn verified(server_name: &str) -> Result<Self, CertError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| CertError::ServerName {
            name: server_name.to_owned(),
        })?;
        Ok(Self {
            mode: Mode::Verified {
                name,
                verifier: RwLock::new(None),
            },
        })
    }

    /// Whether the leader's certificate is verified (false: any certificate is accepted).
    pub fn verifies(&self) -> bool {
        matches!(self.mode, Mode::Verified { .. })
    }

    /// Trusts the CA certificates of a PEM bundle from now on (no effect when any certificate is
    /// accepted).
    pub fn set_ca_pem(&self, pem: &str) -> Result<(), CertError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CertError::NotPem { what: "ca", source })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate { what: "ca" });
        }
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(CertError::Unparsable { what: "ca" });
        }
        self.set_roots(roots)
    }

    /// Trusts the system's root certificates from now on (mounted certificates without
    /// `--metrics-adapter-ca`).
    pub fn use_system_roots(&self) -> Result<(), CertError> {
        self.set_roots((*system_roots().store().clone()).clone())
    }

    fn set_roots(&self, roots: RootCertStore) -> Result<(), CertError> {
        let Mode::Verified { verifier, .. } = &self.mode else {
            return Ok(());
        };
        let built = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| CertError::Trust(e.to_string()))?;
        *verifier.write().unwrap_or_else(PoisonError::into_inner) = Some(built);
        Ok(())
    }

    /// A client configuration checking the leader with this trust (the current roots at every
    /// handshake).
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, CertError> {
        Ok(self.client_builder()?.with_no_client_auth())
    }

    /// A client configuration checking the server with this trust and presenting `chain` (leaf
    /// first) with `key` (the delegate metrics adapter's front-proxy identity).
    pub fn client_config_with_identity(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<ClientConfig, CertError> {
        self.client_builder()?
            .with_client_auth_cert(chain, key)
            .map_err(|e| CertError::Trust(format!("client certificate: {e}")))
    }

    fn client_builder(
        self: &Arc<Self>,
    ) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, CertError> {
        let provider = provider();
        Ok(ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::Trust(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeaderVerifier {
                trust: self.clone(),
                any: AcceptAnyCertificate(provider),
            })))
    }
}

/// The verifier behind [`LeaderTrust::client_config`].
#[derive(Debug)]
struct LeaderVerifier {
    trust: Arc<LeaderTrust>,
    /// Handshake signature checks (and the accept-anything mode).
    any: AcceptAnyCertificate,
}

impl ServerCertVerifier for LeaderVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust.mode {
            Mode::Any => Ok(ServerCertVerified::assertion()),
            Mode::Verified { name, verifier } => {
                let current = verifier.read().unwrap_or_else(PoisonError::into_inner).clone();
                let Some(current) = current else {
                    return Err(rustls::Error::General(
                        "no CA loaded yet to verify the leader's certificate".into(),
                    ));
                };
                // The leader is reached by IP; its certificate names the Service.
                current.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::certs::issue::{issue_serving, new_ca};
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NOW: i64 = 1_800_000_000;

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    /// One handshake with a server presenting `cert_pem`/`key_pem`, the client dialling
    /// `dial_name` (an IP, as a standby does) with `trust`.
    async fn handshake(cert_pem: &str, key_pem: &str, trust: &Arc<LeaderTrust>, dial_name: &str) -> bool {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serve = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.ok()?;
            tls.write_all(b"!").await.ok()?;
            tls.flush().await.ok()
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(trust.client_config().unwrap()));
        let name = ServerName::try_from(dial_name.to_owned()).unwrap();
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
    async fn the_leader_is_verified_against_the_current_ca_for_the_fixed_name() {
        let ca = new_ca(now()).unwrap();
        let svc = "ebb-metrics.ebb-system.svc";
        let serving = issue_serving(&ca, &[svc.to_owned()], now()).unwrap();
        let trust = Arc::new(LeaderTrust::verified(svc).unwrap());
        assert!(trust.verifies());
        // No CA yet: refused.
        assert!(!handshake(&serving.cert_pem, &serving.key_pem, &trust, "10.244.0.7").await);
        trust.set_ca_pem(&ca.cert_pem).unwrap();
        // Dialled by IP, verified for the Service name.
        assert!(handshake(&serving.cert_pem, &serving.key_pem, &trust, "10.244.0.7").await);
        // A certificate from another CA is refused.
        let other = new_ca(now()).unwrap();
        let foreign = issue_serving(&other, &[svc.to_owned()], now()).unwrap();
        assert!(!handshake(&foreign.cert_pem, &foreign.key_pem, &trust, "10.244.0.7").await);
        // After a CA change, the new one is used.
        trust.set_ca_pem(&other.cert_pem).unwrap();
        assert!(handshake(&foreign.cert_pem, &foreign.key_pem, &trust, "10.244.0.7").await);
        assert!(!handshake(&serving.cert_pem, &serving.key_pem, &trust, "10.244.0.7").await);
    }

    #[tokio::test]
    async fn a_certificate_for_other_names_is_refused() {
        let ca = new_ca(now()).unwrap();
        let serving = issue_serving(&ca, &["other.ns.svc".to_owned()], now()).unwrap();
        let trust = Arc::new(LeaderTrust::verified("ebb-metrics.ebb-system.svc").unwrap());
        trust.set_ca_pem(&ca.cert_pem).unwrap();
        assert!(!handshake(&serving.cert_pem, &serving.key_pem, &trust, "10.244.0.7").await);
    }

    #[tokio::test]
    async fn the_legacy_mode_accepts_any_certificate() {
        let ca = new_ca(NOW).unwrap();
        // Expired long ago and for no useful name: still accepted.
        let serving = issue_serving(&ca, &[], NOW - 5 * 365 * 24 * 3600).unwrap();
        let trust = Arc::new(LeaderTrust::any());
        assert!(!trust.verifies());
        assert!(handshake(&serving.cert_pem, &serving.key_pem, &trust, "10.244.0.7").await);
        trust.set_ca_pem(&ca.cert_pem).unwrap();
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(LeaderTrust::verified("not a name!").is_err());
        let trust = LeaderTrust::verified("a.svc").unwrap();
        assert!(matches!(
            trust.set_ca_pem("nothing"),
            Err(CertError::NoCertificate { .. })
        ));
    }
}
