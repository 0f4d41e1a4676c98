//! Where the serving certificate comes from: PEM files, a self-signed certificate generated at
//! start-up, or a [`ReloadableCert`] its owner fills and replaces. PEM parsing errors never quote
//! a private key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ReloadableCert;
use crate::AdapterError;

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: a certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1),
    /// read once at start-up.
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
    /// Whatever the [`ReloadableCert`] holds at each handshake (none yet: handshakes fail), so
    /// its owner can replace the certificate without a restart.
    Reloadable(Arc<ReloadableCert>),
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
    /// Reads PEM files: a chain (leaf first) and its key.
    pub(crate) fn from_files(cert: &Path, key: &Path) -> Result<Self, AdapterError> {
        let cert_pem = std::fs::read(cert).map_err(|e| tls_file_error(cert, e))?;
        let key_pem = std::fs::read(key).map_err(|e| tls_file_error(key, e))?;
        let chain = parse_chain(&cert_pem).map_err(|m| tls_file_error(cert, m))?;
        let key_der = parse_key(&key_pem).map_err(|m| tls_file_error(key, m))?;
        Ok(Self { chain, key: key_der })
    }

    /// Parses PEM text: a chain (leaf first) and its key.
    pub(crate) fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, AdapterError> {
        let chain = parse_chain(cert_pem).map_err(|m| AdapterError::Tls(format!("certificate: {m}")))?;
        let key = parse_key(key_pem).map_err(|m| AdapterError::Tls(format!("private key: {m}")))?;
        Ok(Self { chain, key })
    }
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(chain)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    // The parse error is left out: it could quote the key.
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| "not an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())
}

/// A self-signed serving certificate for `localhost`, `127.0.0.1` and `dns_names`.
pub(crate) fn self_signed(dns_names: &[String]) -> Result<ServingCert, AdapterError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_errors_never_quote_the_key() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0Yml0cw==\n-----END PRIVATE KEY-----\n";
        let holder = ReloadableCert::empty();
        let Err(e) = holder.set_pem(cert.pem().as_bytes(), secret) else {
            panic!("a bad key must not load");
        };
        let text = format!("{e} {e:?}");
        assert!(!text.contains("c2VjcmV0Yml0cw"), "{text}");
        assert!(ServingCert::from_pem(b"nothing", key.serialize_pem().as_bytes()).is_err());
        assert!(ServingCert::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).is_ok());
    }
}
