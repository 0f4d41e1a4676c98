//! TLS for AMQP and the management API: the [`TlsSettings`] of a trigger (`tls`, `ca`, `cert`,
//! `key`, `unsafeSsl`), checked here, and their translation to the shared
//! [`common::tls`](crate::common::tls) settings that build the rustls client configuration (the
//! system's roots plus an optional CA bundle, or any certificate; an optional client
//! certificate).

use std::fmt;

use super::address::BrokerAddress;
use crate::ScalerError;
use crate::common::tls::{ClientCert, TlsSettings as ClientTlsSettings, Trust};

/// The TLS settings of a connection (also the key of the shared clients). Holds key material:
/// never printed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// `unsafeSsl`: accept any server certificate.
    pub(super) unsafe_ssl: bool,
    /// PEM CA bundle added to the system roots.
    pub(super) ca: Option<String>,
    /// PEM client certificate chain and key.
    pub(super) client_auth: Option<(String, String)>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("unsafe_ssl", &self.unsafe_ssl)
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client_auth.is_some())
            .finish()
    }
}

/// Why the TLS parameters cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// `tls: enable` with a plain-text scheme.
    #[error(
        "tls is enable but {0} is not an amqps:// or https:// URL; use the TLS scheme (ebb never \
         falls back to plain text)"
    )]
    PlainScheme(String),
    /// `keyPassword` given.
    #[error(
        "keyPassword (an encrypted private key) is not supported; give key as an unencrypted PEM \
         key (PKCS#8, PKCS#1 or SEC1)"
    )]
    EncryptedKey,
    /// Only one of `cert` and `key`.
    #[error("cert and key must be given together")]
    CertWithoutKey,
}

/// The TLS parameters of a trigger, as given (`tls`, `unsafeSsl`, `ca`, `cert`, `key`,
/// `keyPassword`).
#[derive(Clone, Copy, Default)]
pub(super) struct TlsRequest<'a> {
    /// `tls: enable`.
    pub(super) enable: bool,
    /// `unsafeSsl`.
    pub(super) unsafe_ssl: bool,
    /// `ca`: PEM CA bundle.
    pub(super) ca: Option<&'a str>,
    /// `cert`: PEM client certificate chain.
    pub(super) cert: Option<&'a str>,
    /// `key`: PEM private key.
    pub(super) key: Option<&'a str>,
    /// `keyPassword` (not supported).
    pub(super) key_password: Option<&'a str>,
}

impl TlsSettings {
    /// The settings the request asks for. Without `tls: enable` only `unsafeSsl` counts; with it,
    /// the host must use a TLS scheme and `cert` and `key` come together. Blank values count as
    /// not given.
    pub(super) fn resolve(request: &TlsRequest<'_>, address: &BrokerAddress) -> Result<Self, TlsError> {
        let unsafe_ssl = request.unsafe_ssl;
        if !request.enable {
            return Ok(Self {
                unsafe_ssl,
                ..Self::default()
            });
        }
        if !address.is_tls() {
            return Err(TlsError::PlainScheme(address.shown()));
        }
        if request.key_password.is_some_and(|p| !p.is_empty()) {
            return Err(TlsError::EncryptedKey);
        }
        let non_empty = |value: Option<&str>| value.filter(|v| !v.trim().is_empty()).map(str::to_string);
        let client_auth = match (non_empty(request.cert), non_empty(request.key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(TlsError::CertWithoutKey),
        };
        Ok(Self {
            unsafe_ssl,
            ca: non_empty(request.ca),
            client_auth,
        })
    }

    /// The client TLS settings these trigger settings stand for: the system's roots plus `ca`,
    /// or any certificate with `unsafeSsl`; the client certificate when given; no ALPN.
    pub(super) fn client_settings(&self) -> ClientTlsSettings {
        let trust = match (&self.unsafe_ssl, &self.ca) {
            (true, _) => Trust::AnyCertificate,
            (false, Some(ca)) => Trust::SystemAnd(ca.clone()),
            (false, None) => Trust::System,
        };
        ClientTlsSettings {
            trust,
            client_cert: self.client_auth.as_ref().map(|(cert_pem, key_pem)| ClientCert {
                cert_pem: cert_pem.clone(),
                key_pem: key_pem.clone(),
            }),
            alpn: Vec::new(),
        }
    }

    /// Builds the rustls client configuration for these settings (see
    /// [`common::tls`](crate::common::tls)); a problem with the PEM material is an
    /// [`ScalerError::InvalidConfig`] that never quotes a key.
    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, ScalerError> {
        self.client_settings()
            .client_config()
            .map_err(|e| ScalerError::InvalidConfig(format!("rabbitmq TLS: {e}")))
    }

    /// A note for errors of verified connections when these settings rely on the system's roots
    /// alone and the system has none.
    pub(super) fn roots_problem(&self) -> Option<&'static str> {
        self.client_settings().roots_problem()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_settings_follow_unsafe_ssl_ca_and_cert() {
        let trust = |unsafe_ssl, ca: Option<&str>| {
            TlsSettings {
                unsafe_ssl,
                ca: ca.map(str::to_string),
                client_auth: None,
            }
            .client_settings()
            .trust
        };
        assert_eq!(trust(false, None), Trust::System);
        assert_eq!(trust(false, Some("ca")), Trust::SystemAnd("ca".into()));
        assert_eq!(trust(true, Some("ca")), Trust::AnyCertificate);
        let with_cert = TlsSettings {
            unsafe_ssl: true,
            ca: None,
            client_auth: Some(("c".into(), "k".into())),
        }
        .client_settings();
        assert_eq!(
            with_cert.client_cert,
            Some(ClientCert {
                cert_pem: "c".into(),
                key_pem: "k".into()
            })
        );
        assert!(with_cert.alpn.is_empty());
        assert_eq!(trust(true, None), Trust::AnyCertificate);
    }
}
