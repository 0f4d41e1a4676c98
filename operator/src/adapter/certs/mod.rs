//! The embedded metrics adapter's certificates, in one of three modes ([`CertMode`]):
//!
//! - **Operator-managed** (`--metrics-adapter-cert-secret`): a Secret in the operator's namespace
//!   holds a CA and a serving certificate signed by it ([`secret`]). Every replica creates it if
//!   absent, re-reads it every refresh interval and hot-swaps what it serves; only the leader
//!   renews the serving certificate ([`renewal`]) and keeps the APIService's `caBundle` equal to
//!   the CA ([`apiservice`]).
//! - **Mounted** (`--metrics-adapter-cert`/`--metrics-adapter-key`, optionally
//!   `--metrics-adapter-ca`): files, re-read when their contents change ([`files`]).
//! - **Self-signed** (neither; development and host-process tests): one certificate per replica,
//!   generated at start-up; standbys then cannot verify the leader.
//!
//! [`AdapterTls`] is what the rest of the operator shares: the certificate the adapter serves
//! (read at every handshake) and what a standby trusts when it forwards to the leader
//! ([`verify`]); [`maintain`] keeps both current.

pub mod apiservice;
pub mod files;
pub mod issue;
mod maintain;
pub mod renewal;
pub mod secret;
pub mod verify;

pub use maintain::maintain;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ebb_metrics_adapter::{AdapterError, ReloadableCert};

use self::files::{CertFiles, FileContents};
use self::secret::SecretContents;
use self::verify::LeaderTrust;

/// Why a certificate could not be made, read or used. Never quotes a private key.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen could not generate or sign a certificate.
    #[error("generating a certificate")]
    Generate(#[source] rcgen::Error),
    /// The clock is outside what a certificate can express.
    #[error("the system clock is outside the range of certificate dates")]
    Clock,
    /// The CA key does not parse (its parse error is left out: it could quote the key).
    #[error("the CA key is not a usable PEM private key")]
    CaKey,
    /// A PEM bundle holds no certificate.
    #[error("{what} holds no PEM certificate")]
    NoCertificate {
        /// Which bundle.
        what: &'static str,
    },
    /// A PEM bundle is malformed.
    #[error("{what} is not valid PEM")]
    NotPem {
        /// Which bundle.
        what: &'static str,
        /// The PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate does not parse as X.509.
    #[error("{what} holds no certificate that can be parsed")]
    Unparsable {
        /// Which certificate.
        what: &'static str,
    },
    /// The name standbys verify the leader's certificate for is not a DNS name or IP address.
    #[error("{name:?} is not a valid name to verify the leader's certificate for")]
    ServerName {
        /// The name.
        name: String,
    },
    /// No name to verify the leader's certificate for.
    #[error(
        "standbys verify the leader's certificate for the first --metrics-adapter-dns-names entry; \
         set --metrics-adapter-dns-names (e.g. ebb-metrics.<namespace>.svc)"
    )]
    NoServerName,
    /// The verifier of the leader's certificate could not be built.
    #[error("cannot set up verification of the leader's certificate ({0})")]
    Trust(String),
    /// A certificate file could not be read.
    #[error("reading {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("cannot {action} {namespace}/{name}")]
    Kube {
        /// What was attempted (`get Secret`, `patch APIService`, …).
        action: &'static str,
        /// Namespace (empty for cluster-scoped objects).
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// The Secret was absent at every GET yet existed at every CREATE.
    #[error("Secret {namespace}/{name} exists at every create yet is absent at every get")]
    CreateRace {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The Secret lacks a key.
    #[error("the certificate Secret has no {key}")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// The serving certificate could not be loaded.
    #[error("serving certificate")]
    Serving(#[source] AdapterError),
}

/// How the adapter's certificates are managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMode {
    /// One self-signed certificate per replica, generated at start-up (development and
    /// host-process tests); standbys accept any certificate from the leader.
    SelfSigned,
    /// Mounted files, re-read when their contents change.
    Files(CertFiles),
    /// The operator-managed Secret `namespace/name`; the leader keeps the CA bundle of the
    /// APIService `apiservice` (when given) equal to its CA.
    Secret {
        /// The operator's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The APIService whose `caBundle` the leader keeps current.
        apiservice: Option<String>,
    },
}

/// Settings of the certificate management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOptions {
    /// The mode.
    pub mode: CertMode,
    /// Names the serving certificate covers; the first is the one standbys verify the leader for.
    pub dns_names: Vec<String>,
    /// How often the Secret or the files are read again.
    pub refresh: Duration,
}

/// The name standbys verify the leader's certificate for: the first of `dns_names`, else (mounted
/// certificates) the first DNS name of the serving certificate itself.
pub fn leader_name(dns_names: &[String], certificate_names: &[String]) -> Option<String> {
    dns_names
        .first()
        .or_else(|| {
            certificate_names
                .iter()
                .find(|n| n.parse::<std::net::IpAddr>().is_err())
        })
        .cloned()
}

/// The certificate the adapter serves and what a standby trusts, shared by the adapter, the
/// forwarder, readiness and [`maintain`].
#[derive(Debug)]
pub struct AdapterTls {
    /// What the adapter serves (empty until the Secret was read).
    pub serving: Arc<ReloadableCert>,
    /// What a standby trusts when it forwards to the leader.
    pub trust: Arc<LeaderTrust>,
}

impl AdapterTls {
    /// Sets up `options.mode`: a self-signed certificate is generated and files are read now (an
    /// error stops start-up); the Secret is read by [`maintain`].
    pub fn new(options: &CertOptions) -> Result<Self, CertError> {
        let serving = Arc::new(ReloadableCert::empty());
        let trust = match &options.mode {
            CertMode::SelfSigned => {
                serving
                    .set_self_signed(&options.dns_names)
                    .map_err(CertError::Serving)?;
                LeaderTrust::any()
            }
            CertMode::Files(files) => {
                let contents = files.read()?;
                serving
                    .set_pem(&contents.cert, &contents.key)
                    .map_err(CertError::Serving)?;
                let pem = String::from_utf8_lossy(&contents.cert);
                let names = issue::inspect(&pem, "--metrics-adapter-cert")?.names;
                let name = leader_name(&options.dns_names, &names).ok_or(CertError::NoServerName)?;
                let trust = LeaderTrust::verified(&name)?;
                match &contents.ca {
                    Some(ca) => trust.set_ca_pem(&String::from_utf8_lossy(ca))?,
                    None => trust.use_system_roots()?,
                }
                trust
            }
            CertMode::Secret { .. } => {
                let name = options.dns_names.first().ok_or(CertError::NoServerName)?;
                LeaderTrust::verified(name)?
            }
        };
        Ok(Self {
            serving,
            trust: Arc::new(trust),
        })
    }

    /// Loads the serving certificate and the CA of mounted files.
    pub(crate) fn load_files(&self, contents: &FileContents) -> Result<(), CertError> {
        self.serving
            .set_pem(&contents.cert, &contents.key)
            .map_err(CertError::Serving)?;
        if let Some(ca) = &contents.ca {
            self.trust.set_ca_pem(&String::from_utf8_lossy(ca))?;
        }
        Ok(())
    }

    /// Loads the serving certificate and the CA of the Secret.
    pub(crate) fn load_secret(&self, contents: &SecretContents) -> Result<(), CertError> {
        let ca = contents
            .ca_crt
            .as_deref()
            .ok_or(CertError::MissingKey { key: secret::CA_CRT })?;
        self.trust.set_ca_pem(ca)?;
        let serving = contents
            .serving()
            .ok_or(CertError::MissingKey { key: secret::TLS_CRT })?;
        self.serving
            .set_pem(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes())
            .map_err(CertError::Serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standbys_verify_the_first_dns_name_else_the_certificates() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            leader_name(&names(&["a.svc", "b.svc"]), &names(&["c.svc"])),
            Some("a.svc".into())
        );
        assert_eq!(
            leader_name(&[], &names(&["127.0.0.1", "c.svc"])),
            Some("c.svc".into())
        );
        assert_eq!(leader_name(&[], &names(&["127.0.0.1"])), None);
    }

    #[test]
    fn modes_set_up_what_they_can_at_start() {
        let self_signed = CertOptions {
            mode: CertMode::SelfSigned,
            dns_names: vec![],
            refresh: Duration::from_secs(30),
        };
        let tls = AdapterTls::new(&self_signed).unwrap();
        assert!(tls.serving.is_loaded());
        assert!(!tls.trust.verifies());
        let managed = CertOptions {
            mode: CertMode::Secret {
                namespace: "ebb-system".into(),
                name: "ebb-certs".into(),
                apiservice: None,
            },
            ..self_signed.clone()
        };
        assert!(matches!(AdapterTls::new(&managed), Err(CertError::NoServerName)));
        let managed = CertOptions {
            dns_names: vec!["ebb-metrics.ebb-system.svc".into()],
            ..managed
        };
        let tls = AdapterTls::new(&managed).unwrap();
        assert!(!tls.serving.is_loaded(), "loaded from the Secret later");
        assert!(tls.trust.verifies());
    }

    #[test]
    fn mounted_files_are_read_at_start() {
        let dir = std::env::temp_dir().join(format!("ebb-cert-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = secret::fresh_secret(
            "ns",
            "certs",
            &["ebb.ns.svc".into()],
            None,
            jiff::Timestamp::now().as_second(),
        )
        .unwrap();
        let contents = SecretContents::from_secret(&secret);
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: Some(dir.join("ca.crt")),
        };
        std::fs::write(&files.cert, contents.tls_crt.unwrap()).unwrap();
        std::fs::write(&files.key, contents.tls_key.unwrap()).unwrap();
        std::fs::write(files.ca.as_ref().unwrap(), contents.ca_crt.unwrap()).unwrap();
        let options = CertOptions {
            mode: CertMode::Files(files),
            dns_names: vec![],
            refresh: Duration::from_secs(10),
        };
        let tls = AdapterTls::new(&options).unwrap();
        assert!(tls.serving.is_loaded());
        assert!(tls.trust.verifies());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
