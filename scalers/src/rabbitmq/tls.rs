//! TLS for AMQP and the management API: the [`TlsSettings`] of a trigger (`tls`, `ca`, `cert`,
//! `key`, `unsafeSsl`) and the rustls client configuration built from them (rustls with ring,
//! the system's roots plus an optional CA bundle, an optional client certificate).

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::address::BrokerAddress;
use crate::ScalerError;
use crate::common::tls::AcceptAnyCertificate;

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
}

/// The system's root certificates, loaded once, and why none could be, if none could.
pub(super) struct NativeRoots {
    pub(super) store: Arc<RootCertStore>,
    pub(super) problem: Option<String>,
}

/// Loads the system's root certificates (once per [`RabbitMqClients`](super::RabbitMqClients)).
pub(super) fn load_native_roots() -> NativeRoots {
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
    NativeRoots {
        store: Arc::new(store),
        problem,
    }
}

/// Builds the rustls client configuration for `settings`; `native_roots` is called only when the
/// server certificate is verified.
pub(super) fn client_config<'a>(
    provider: &Arc<CryptoProvider>,
    native_roots: impl FnOnce() -> &'a NativeRoots,
    settings: &TlsSettings,
) -> Result<rustls::ClientConfig, ScalerError> {
    let invalid = |what: String| ScalerError::InvalidConfig(format!("rabbitmq TLS: {what}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("cannot set up TLS ({e})")))?;
    let builder = if settings.unsafe_ssl {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone())))
    } else {
        let mut roots = (*native_roots().store).clone();
        if let Some(ca) = &settings.ca {
            let certs = CertificateDer::pem_slice_iter(ca.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid("ca is not a PEM certificate bundle".into()))?;
            if certs.is_empty() {
                return Err(invalid("ca holds no PEM certificate".into()));
            }
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(invalid("no certificate in ca could be used".into()));
            }
        }
        builder.with_root_certificates(roots)
    };
    match &settings.client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid("cert is not a PEM certificate".into()))?;
            if chain.is_empty() {
                return Err(invalid("cert holds no PEM certificate".into()));
            }
            // The key's own parse error is not shown: it could quote key material.
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                invalid("key is not an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)".into())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("cert and key cannot be used together ({e})")))
        }
    }
}
