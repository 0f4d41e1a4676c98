//! What a connection's client certificate proves. The chain is verified against each CA of the
//! current [`super::AuthConfig`] at the handshake; the result is kept with the configuration's
//! generation, and a request on a connection opened under an older configuration verifies the
//! chain again against the current CAs. A certificate past its `notAfter` proves nothing, however
//! long the connection has been open.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::{AuthConfig, AuthError, UserInfo};

/// The client-certificate verifiers of one configuration.
#[derive(Clone, Default)]
pub(crate) struct Verifiers {
    requestheader: Option<Arc<dyn ClientCertVerifier>>,
    client: Option<Arc<dyn ClientCertVerifier>>,
}

impl Verifiers {
    /// Verifiers for the configuration's CAs; fails if a CA certificate is unusable.
    pub(crate) fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        Ok(Self {
            requestheader: verifier_for(&config.requestheader_ca)?,
            client: verifier_for(&config.client_ca)?,
        })
    }

    /// What `chain` (leaf first) proves at `now`.
    pub(crate) fn classify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> CertIdentity {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return CertIdentity::default();
        };
        let verifies = |verifier: &Option<Arc<dyn ClientCertVerifier>>| {
            verifier
                .as_ref()
                .is_some_and(|v| v.verify_client_cert(end_entity, intermediates, now).is_ok())
        };
        let front_proxy = verifies(&self.requestheader);
        let client = verifies(&self.client);
        if !front_proxy && !client {
            tracing::debug!("client certificate does not chain to a trusted CA; ignored");
            return CertIdentity::default();
        }
        let Some(subject) = subject(end_entity) else {
            tracing::debug!("client certificate subject unreadable; ignored");
            return CertIdentity::default();
        };
        CertIdentity {
            front_proxy_cn: front_proxy.then(|| subject.cn.clone()),
            client_user: (client && !subject.cn.is_empty()).then(|| UserInfo::new(subject.cn, subject.orgs)),
            not_after: Some(subject.not_after),
        }
    }
}

fn verifier_for(roots: &[CertificateDer<'static>]) -> Result<Option<Arc<dyn ClientCertVerifier>>, AuthError> {
    if roots.is_empty() {
        return Ok(None);
    }
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| AuthError::InvalidConfig(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map(Some)
        .map_err(|e| AuthError::InvalidConfig(format!("CA certificates: {e}")))
}

/// What a verified client certificate proves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CertIdentity {
    /// The CN of a certificate chaining to the requestheader CA.
    pub(crate) front_proxy_cn: Option<String>,
    /// The user of a certificate chaining to the client CA (CN, O).
    pub(crate) client_user: Option<UserInfo>,
    /// The certificate's `notAfter`, in seconds since the Unix epoch.
    not_after: Option<u64>,
}

impl CertIdentity {
    /// This identity while the certificate is valid at `now`; nothing once it has expired.
    pub(crate) fn at(self, now: UnixTime) -> Self {
        match self.not_after {
            Some(not_after) if now.as_secs() > not_after => {
                tracing::debug!("client certificate expired since the handshake; ignored");
                Self::default()
            }
            _ => self,
        }
    }
}

/// A connection's peer: its address and client certificate, classified once per connection (and
/// again after the configuration changes).
#[derive(Clone, Debug)]
pub(crate) struct PeerCertificate {
    /// The client's address (the per-source review limit's key for direct clients).
    pub(crate) remote: IpAddr,
    /// The certificate chain presented, leaf first (empty: none).
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The configuration generation `identity` was computed with.
    pub(crate) generation: u64,
    /// What the chain proved at the handshake.
    pub(crate) identity: CertIdentity,
}

/// The parts of a certificate's subject and validity that authentication uses.
struct Subject {
    cn: String,
    orgs: Vec<String>,
    not_after: u64,
}

/// CN (first, possibly empty), O values and `notAfter` of a certificate.
fn subject(der: &CertificateDer<'_>) -> Option<Subject> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let orgs = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Some(Subject { cn, orgs, not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_certificate_proves_nothing() {
        let identity = CertIdentity {
            front_proxy_cn: Some("front-proxy-client".into()),
            client_user: None,
            not_after: Some(1_000),
        };
        assert_eq!(
            identity
                .clone()
                .at(UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000))),
            identity
        );
        assert_eq!(
            identity.at(UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_001))),
            CertIdentity::default()
        );
    }
}
