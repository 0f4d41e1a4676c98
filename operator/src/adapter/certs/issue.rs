//! Minting and reading the adapter's certificates (rcgen, x509-parser): a CA (ten years), a
//! serving certificate signed by it (one year), and the facts the renewal decision needs
//! ([`CertInfo`]). Keys are ECDSA P-256; nothing here logs, and no error quotes a key.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::CertError;

/// How long the generated CA is valid.
pub const CA_VALIDITY_SECS: i64 = 10 * 365 * 24 * 3600;

/// How long a serving certificate is valid.
pub const SERVING_VALIDITY_SECS: i64 = 365 * 24 * 3600;

/// Certificates start this much before "now", so a replica whose clock lags still accepts them.
const BACKDATE_SECS: i64 = 3600;

/// Common name of the generated CA.
const CA_COMMON_NAME: &str = "ebb-metrics-adapter-ca";

/// Common name of the serving certificates.
const SERVING_COMMON_NAME: &str = "ebb-metrics-adapter";

/// A PEM certificate and its PEM private key. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What the renewal decision needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Subject alternative names: DNS names as written, IP addresses in text form.
    pub names: Vec<String>,
}

fn offset(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CertError::Clock)
}

/// A new self-signed CA valid from about `now` (Unix seconds) for [`CA_VALIDITY_SECS`].
pub fn new_ca(now: i64) -> Result<PemPair, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CertError::Generate)?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(now - BACKDATE_SECS)?;
    params.not_after = offset(now + CA_VALIDITY_SECS)?;
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params.self_signed(&key).map_err(CertError::Generate)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The subject alternative names of a serving certificate: `dns_names`, then `localhost` and
/// `127.0.0.1`, without duplicates.
pub fn serving_names(dns_names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in dns_names
        .iter()
        .map(String::as_str)
        .chain(["localhost", "127.0.0.1"])
    {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    names
}

/// A serving certificate for [`serving_names`]`(dns_names)`, signed by `ca`, valid from about
/// `now` (Unix seconds) for [`SERVING_VALIDITY_SECS`] (never past the CA's end).
pub fn issue_serving(ca: &PemPair, dns_names: &[String], now: i64) -> Result<PemPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|_| CertError::CaKey)?;
    let ca_info = inspect(&ca.cert_pem, "ca.crt")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(CertError::Generate)?;
    let mut params = CertificateParams::new(serving_names(dns_names)).map_err(CertError::Generate)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVING_COMMON_NAME);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now - BACKDATE_SECS)?;
    params.not_after = offset((now + SERVING_VALIDITY_SECS).min(ca_info.not_after))?;
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(CertError::Generate)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DER of the first certificate of a PEM bundle; `what` names it in errors.
pub fn first_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(CertError::NoCertificate { what })?
        .map_err(|source| CertError::NotPem { what, source })
}

/// Validity and names of the first certificate of a PEM bundle; `what` names it in errors.
pub fn inspect(pem: &str, what: &'static str) -> Result<CertInfo, CertError> {
    let der = first_der(pem, what)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| CertError::Unparsable { what })?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_text(bytes) {
                        names.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        names,
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::Ipv4Addr::from(v4).to_string());
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| std::net::Ipv6Addr::from(v6).to_string())
}

/// Whether the first certificate of `cert_pem` carries a valid signature of the CA in `ca_pem`
/// (false when either does not parse).
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    let (Ok(cert), Ok(ca)) = (first_der(cert_pem, "certificate"), first_der(ca_pem, "ca")) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(&cert),
        x509_parser::parse_x509_certificate(&ca),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_serving_certificate_is_signed_by_its_ca_and_covers_the_names() {
        let ca = new_ca(NOW).unwrap();
        let names = vec!["ebb-metrics.ebb-system.svc".to_owned()];
        let serving = issue_serving(&ca, &names, NOW).unwrap();
        assert!(signed_by(&serving.cert_pem, &ca.cert_pem));
        let other = new_ca(NOW).unwrap();
        assert!(!signed_by(&serving.cert_pem, &other.cert_pem));
        let info = inspect(&serving.cert_pem, "tls.crt").unwrap();
        assert_eq!(
            info.names,
            ["ebb-metrics.ebb-system.svc", "localhost", "127.0.0.1"]
        );
        assert_eq!(info.not_before, NOW - BACKDATE_SECS);
        assert_eq!(info.not_after, NOW + SERVING_VALIDITY_SECS);
        let ca_info = inspect(&ca.cert_pem, "ca.crt").unwrap();
        assert_eq!(ca_info.not_after, NOW + CA_VALIDITY_SECS);
    }

    #[test]
    fn serving_certificates_end_with_their_ca() {
        let ca = new_ca(NOW).unwrap();
        let late = NOW + CA_VALIDITY_SECS - 100;
        let serving = issue_serving(&ca, &[], late).unwrap();
        assert_eq!(
            inspect(&serving.cert_pem, "tls.crt").unwrap().not_after,
            NOW + CA_VALIDITY_SECS
        );
    }

    #[test]
    fn names_are_deduplicated() {
        assert_eq!(
            serving_names(&["a.svc".into(), "LOCALHOST".into(), "a.svc".into()]),
            ["a.svc", "LOCALHOST", "127.0.0.1"]
        );
    }

    #[test]
    fn bad_material_is_an_error_that_never_quotes_the_key() {
        let ca = new_ca(NOW).unwrap();
        let broken = PemPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0Yml0cw==\n-----END PRIVATE KEY-----\n".into(),
        };
        let e = issue_serving(&broken, &[], NOW).unwrap_err();
        let text = format!("{e} {e:?} {broken:?}");
        assert!(!text.contains("c2VjcmV0Yml0cw"), "{text}");
        assert!(matches!(
            inspect("not pem", "tls.crt"),
            Err(CertError::NoCertificate { .. })
        ));
        assert!(!signed_by("x", &ca.cert_pem));
    }
}
