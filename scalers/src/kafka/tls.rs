//! TLS of a kafka cluster connection (`tls: enable` with `ca`, `cert`, `key`, `unsafeSsl`): maps
//! the trigger's settings onto [`common::tls::TlsSettings`](crate::common::tls::TlsSettings)
//! (trust only `ca` when given, else the system's roots; any certificate with `unsafeSsl`),
//! rejects `keyPassword`, and names the server to verify from a broker address.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::config::TlsSettings;
use crate::common::tls::{self as common_tls, ClientCert, Trust};

/// Why the TLS settings of a kafka cluster cannot be used. Never quotes a key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `keyPassword` is set: encrypted keys are not supported.
    #[error(
        "kafka: encrypted client keys (keyPassword) are not supported yet; give an unencrypted PKCS#8, PKCS#1 or SEC1 key"
    )]
    EncryptedKey,
    /// Only one of `cert` and `key` is given.
    #[error("kafka: cert and key must be given together")]
    CertWithoutKey,
    /// The certificates or key cannot be made into a client configuration.
    #[error("kafka: {0}")]
    Settings(#[source] common_tls::TlsError),
    /// The host of a broker address is neither an IP address nor a DNS name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// The shared TLS settings for a kafka cluster's `tls: enable` settings: with `unsafeSsl` any
/// certificate, else only `ca` when given, else the system's roots; `cert` and `key` together
/// as the client certificate. An encrypted key (`keyPassword`) is not supported yet.
pub fn settings(tls: &TlsSettings) -> Result<common_tls::TlsSettings, TlsError> {
    if tls.key_password.is_some() {
        return Err(TlsError::EncryptedKey);
    }
    let trust = match (&tls.ca, tls.unsafe_ssl) {
        (_, true) => Trust::AnyCertificate,
        (Some(ca), false) => Trust::Only(ca.clone()),
        (None, false) => Trust::System,
    };
    let client_cert = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(ClientCert {
            cert_pem: cert.clone(),
            key_pem: key.clone(),
        }),
        (None, None) => None,
        _ => return Err(TlsError::CertWithoutKey),
    };
    Ok(common_tls::TlsSettings {
        trust,
        client_cert,
        alpn: Vec::new(),
    })
}

/// Builds the client TLS configuration of a kafka cluster (see [`settings`]). `ca`, `cert` and
/// `key` are PEM text (as in KEDA's TriggerAuthentication). Errors never quote the key.
pub fn client_config(tls: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = settings(tls)?.client_config().map_err(TlsError::Settings)?;
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

    fn client_config(
        ca: Option<&str>,
        cert: Option<&str>,
        key: Option<&str>,
        key_password: Option<&str>,
        unsafe_ssl: bool,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let owned = |s: Option<&str>| s.map(str::to_string);
        super::client_config(&TlsSettings {
            ca: owned(ca),
            cert: owned(cert),
            key: owned(key),
            key_password: owned(key_password),
            unsafe_ssl,
        })
    }

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

    #[test]
    fn settings_map_trust_and_client_certificate() {
        let base = TlsSettings {
            ca: Some("CA".into()),
            cert: None,
            key: None,
            key_password: None,
            unsafe_ssl: false,
        };
        assert_eq!(settings(&base).unwrap().trust, Trust::Only("CA".into()));
        let unsafe_ssl = TlsSettings {
            unsafe_ssl: true,
            ..base.clone()
        };
        assert_eq!(settings(&unsafe_ssl).unwrap().trust, Trust::AnyCertificate);
        let system = TlsSettings {
            ca: None,
            cert: Some("C".into()),
            key: Some("K".into()),
            ..base.clone()
        };
        let s = settings(&system).unwrap();
        assert_eq!(s.trust, Trust::System);
        assert_eq!(
            s.client_cert,
            Some(ClientCert {
                cert_pem: "C".into(),
                key_pem: "K".into()
            })
        );
        assert!(s.alpn.is_empty());
        let key_only = TlsSettings {
            key: Some("K".into()),
            ..base
        };
        assert!(matches!(settings(&key_only), Err(TlsError::CertWithoutKey)));
    }
}
