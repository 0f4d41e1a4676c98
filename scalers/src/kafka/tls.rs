//! TLS settings of a kafka cluster connection (`tls: enable` with `ca`, `cert`, `key`,
//! `unsafeSsl`), built on rustls with the ring provider only.

use crate::common::tls::AcceptAnyCertificate;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why the TLS settings of a kafka cluster cannot be used. Never quotes a key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `keyPassword` is set: encrypted keys are not supported.
    #[error(
        "kafka: encrypted client keys (keyPassword) are not supported yet; give an unencrypted PKCS#8, PKCS#1 or SEC1 key"
    )]
    EncryptedKey,
    /// rustls refused the protocol versions.
    #[error("kafka: cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
    /// `ca` or `cert` is not PEM.
    #[error("kafka: {part} is not valid PEM: {source}")]
    Pem {
        /// `ca` or `cert`.
        part: &'static str,
        /// The PEM parser's complaint.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// `ca` or `cert` holds no certificate.
    #[error("kafka: {0} holds no PEM certificate")]
    NoCertificate(&'static str),
    /// A `ca` certificate cannot be a trust anchor.
    #[error("kafka: ca certificate rejected: {0}")]
    CaRejected(#[source] rustls::Error),
    /// `key` is not a PEM private key.
    #[error("kafka: key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    Key,
    /// `cert` and `key` do not match.
    #[error("kafka: cert and key do not form a client identity: {0}")]
    Identity(#[source] rustls::Error),
    /// Only one of `cert` and `key` is given.
    #[error("kafka: cert and key must be given together")]
    CertWithoutKey,
    /// The host of a broker address is neither an IP address nor a DNS name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Builds the client TLS configuration. `ca`, `cert` and `key` are PEM text (as in KEDA's
/// TriggerAuthentication); without `ca` the system's roots are trusted. An encrypted key
/// (`keyPassword`) is not supported yet. Errors never quote the key.
pub fn client_config(
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
    key_password: Option<&str>,
    unsafe_ssl: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    if key_password.is_some() {
        return Err(TlsError::EncryptedKey);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = if unsafe_ssl {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(ca) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|source| TlsError::Pem { part: "ca", source })?;
                if certs.is_empty() {
                    return Err(TlsError::NoCertificate("ca"));
                }
                for c in certs {
                    roots.add(c).map_err(TlsError::CaRejected)?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|source| TlsError::Pem { part: "cert", source })?;
            if chain.is_empty() {
                return Err(TlsError::NoCertificate("cert"));
            }
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| TlsError::Key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Identity)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::CertWithoutKey),
    };
    Ok(Arc::new(config))
}

/// The server name to verify for `host:port` (an IP address or a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host_of(addr);
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("b1.example:9093"), "b1.example");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("plain"), "plain");
        assert!(server_name("127.0.0.1:9093").is_ok());
    }

    #[test]
    fn bad_inputs_are_config_errors_without_secrets() {
        assert!(
            client_config(None, None, None, Some("pw"), false)
                .unwrap_err()
                .to_string()
                .contains("keyPassword")
        );
        assert!(client_config(Some("not pem"), None, None, None, false).is_err());
        let e = client_config(
            None,
            Some("x"),
            Some("-----BEGIN PRIVATE KEY-----\nsecretbits\n"),
            None,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("secretbits"), "{e}");
        assert!(client_config(None, Some("x"), None, None, true).is_err());
        assert!(client_config(None, None, None, None, true).is_ok());
        assert!(client_config(None, None, None, None, false).is_ok());
    }
}
