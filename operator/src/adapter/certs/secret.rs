//! The operator-managed certificate Secret: `ca.crt`, `ca.key`, `tls.crt`, `tls.key` in one
//! Secret of the operator's namespace. Every replica GETs it at start-up and CREATEs it with
//! fresh certificates when absent (two replicas racing at install: the loser GETs the winner's);
//! only the leader renews, with an UPDATE guarded by the resourceVersion it read. Only GET, CREATE
//! and UPDATE on that one name: no list, no watch.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, PostParams};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::CertError;
use super::issue::{PemPair, first_der, inspect, issue_serving, new_ca, signed_by};
use super::renewal::{SecretFacts, Verdict, assess};

/// Key of the CA certificate in the Secret.
pub const CA_CRT: &str = "ca.crt";
/// Key of the CA's private key.
pub const CA_KEY: &str = "ca.key";
/// Key of the serving certificate.
pub const TLS_CRT: &str = "tls.crt";
/// Key of the serving certificate's private key.
pub const TLS_KEY: &str = "tls.key";

/// How many times start-up GETs again after losing a CREATE race before giving up.
const CREATE_ATTEMPTS: usize = 3;

/// The three calls made on the Secret (a seam for tests).
#[async_trait]
pub trait SecretApi: Send + Sync {
    /// GET; `None` when it does not exist.
    async fn get(&self) -> Result<Option<Secret>, kube::Error>;
    /// CREATE.
    async fn create(&self, secret: &Secret) -> Result<Secret, kube::Error>;
    /// UPDATE (rejected with 409 when `metadata.resourceVersion` is not the stored one).
    async fn replace(&self, secret: &Secret) -> Result<Secret, kube::Error>;
}

/// [`SecretApi`] on one named Secret.
pub struct KubeSecret {
    api: Api<Secret>,
    name: String,
}

impl KubeSecret {
    /// The Secret `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }
}

#[async_trait]
impl SecretApi for KubeSecret {
    async fn get(&self) -> Result<Option<Secret>, kube::Error> {
        self.api.get_opt(&self.name).await
    }

    async fn create(&self, secret: &Secret) -> Result<Secret, kube::Error> {
        self.api.create(&PostParams::default(), secret).await
    }

    async fn replace(&self, secret: &Secret) -> Result<Secret, kube::Error> {
        self.api.replace(&self.name, &PostParams::default(), secret).await
    }
}

/// The PEM texts a Secret holds (any may be missing). `Debug` shows no key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretContents {
    /// `ca.crt`.
    pub ca_crt: Option<String>,
    /// `ca.key`.
    pub ca_key: Option<String>,
    /// `tls.crt`.
    pub tls_crt: Option<String>,
    /// `tls.key`.
    pub tls_key: Option<String>,
}

impl std::fmt::Debug for SecretContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretContents")
            .field("ca_crt", &self.ca_crt.is_some())
            .field("ca_key", &self.ca_key.is_some())
            .field("tls_crt", &self.tls_crt.is_some())
            .field("tls_key", &self.tls_key.is_some())
            .finish()
    }
}

impl SecretContents {
    /// Reads the four keys of a Secret (values that are not UTF-8 count as missing).
    pub fn from_secret(secret: &Secret) -> Self {
        let text = |key: &str| {
            secret
                .data
                .as_ref()?
                .get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Self {
            ca_crt: text(CA_CRT),
            ca_key: text(CA_KEY),
            tls_crt: text(TLS_CRT),
            tls_key: text(TLS_KEY),
        }
    }

    /// The CA certificate and key, when both are there.
    pub fn ca(&self) -> Option<PemPair> {
        Some(PemPair {
            cert_pem: self.ca_crt.clone()?,
            key_pem: self.ca_key.clone()?,
        })
    }

    /// The serving certificate and key, when both are there.
    pub fn serving(&self) -> Option<PemPair> {
        Some(PemPair {
            cert_pem: self.tls_crt.clone()?,
            key_pem: self.tls_key.clone()?,
        })
    }

    /// What the renewal decision needs: which parts parse and fit together.
    pub fn facts(&self) -> SecretFacts {
        let ca = self.ca().and_then(|ca| {
            rcgen::KeyPair::from_pem(&ca.key_pem).ok()?;
            inspect(&ca.cert_pem, CA_CRT).ok()
        });
        let serving = self
            .serving()
            .filter(key_matches)
            .and_then(|s| inspect(&s.cert_pem, TLS_CRT).ok());
        let serving_signed_by_ca = match (&self.tls_crt, &self.ca_crt) {
            (Some(cert), Some(ca)) => signed_by(cert, ca),
            _ => false,
        };
        SecretFacts {
            ca,
            serving,
            serving_signed_by_ca,
        }
    }
}

/// Whether the pair's key is a PEM private key matching its certificate.
fn key_matches(pair: &PemPair) -> bool {
    let (Ok(cert), Ok(key)) = (
        first_der(&pair.cert_pem, TLS_CRT),
        PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()),
    ) else {
        return false;
    };
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(vec![cert], key, &provider).is_ok()
}

fn data(ca: &PemPair, serving: &PemPair) -> BTreeMap<String, ByteString> {
    [
        (CA_CRT, &ca.cert_pem),
        (CA_KEY, &ca.key_pem),
        (TLS_CRT, &serving.cert_pem),
        (TLS_KEY, &serving.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
    .collect()
}

/// A new Secret `namespace/name` with a new CA and a serving certificate for `dns_names`.
pub fn fresh_secret(
    namespace: &str,
    name: &str,
    dns_names: &[String],
    owner: Option<&OwnerReference>,
    now: i64,
) -> Result<Secret, CertError> {
    let ca = new_ca(now)?;
    let serving = issue_serving(&ca, dns_names, now)?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "ebb".to_owned(),
            )])),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data(&ca, &serving)),
        ..Secret::default()
    })
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Start-up on every replica: the Secret as stored, created with fresh certificates when absent.
/// A CREATE that loses a race (409) GETs the winner's.
pub async fn get_or_create(
    api: &dyn SecretApi,
    namespace: &str,
    name: &str,
    dns_names: &[String],
    owner: Option<&OwnerReference>,
    now: i64,
) -> Result<Secret, CertError> {
    let kube_err = |action: &'static str| {
        move |source| CertError::Kube {
            action,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    };
    for _ in 0..CREATE_ATTEMPTS {
        if let Some(secret) = api.get().await.map_err(kube_err("get Secret"))? {
            return Ok(secret);
        }
        let secret = fresh_secret(namespace, name, dns_names, owner, now)?;
        match api.create(&secret).await {
            Ok(created) => {
                tracing::info!(%namespace, %name, "created the metrics adapter's CA and serving certificate");
                return Ok(created);
            }
            Err(e) if is_code(&e, 409) => continue,
            Err(e) => return Err(kube_err("create Secret")(e)),
        }
    }
    Err(CertError::CreateRace {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Leader only: renews what [`assess`] asks for and UPDATEs the Secret (guarded by the
/// resourceVersion of `current`). Returns the stored Secret and the reason when it wrote one.
pub async fn renew_if_needed(
    api: &dyn SecretApi,
    current: &Secret,
    dns_names: &[String],
    now: i64,
) -> Result<Option<(Secret, Verdict)>, CertError> {
    let contents = SecretContents::from_secret(current);
    let verdict = assess(&contents.facts(), dns_names, now);
    let (ca, serving) = match &verdict {
        Verdict::Keep => return Ok(None),
        Verdict::RenewServing(_) => {
            let Some(ca) = contents.ca() else {
                // `assess` renews the serving certificate only with a usable CA.
                return Ok(None);
            };
            let serving = issue_serving(&ca, dns_names, now)?;
            (ca, serving)
        }
        Verdict::Regenerate(_) => {
            let ca = new_ca(now)?;
            let serving = issue_serving(&ca, dns_names, now)?;
            (ca, serving)
        }
    };
    let mut next = current.clone();
    next.metadata.managed_fields = None;
    let mut stored = next.data.take().unwrap_or_default();
    stored.extend(data(&ca, &serving));
    next.data = Some(stored);
    let namespace = current.metadata.namespace.clone().unwrap_or_default();
    let name = current.metadata.name.clone().unwrap_or_default();
    let written = api.replace(&next).await.map_err(|source| CertError::Kube {
        action: "update Secret",
        namespace,
        name,
        source: Box::new(source),
    })?;
    Ok(Some((written, verdict)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::certs::renewal::{RegenerateReason, RenewReason};
    use std::sync::Mutex;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 24 * 3600;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(reason, reason)
                .with_code(code)
                .boxed(),
        )
    }

    /// An API server holding at most one Secret, with resourceVersions; `rival` is created by
    /// "another replica" just before our first CREATE lands.
    #[derive(Default)]
    struct FakeSecrets {
        stored: Mutex<Option<Secret>>,
        version: Mutex<u64>,
        rival: Mutex<Option<Secret>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl FakeSecrets {
        fn store(&self, mut secret: Secret) -> Secret {
            let mut v = self.version.lock().unwrap();
            *v += 1;
            secret.metadata.resource_version = Some(v.to_string());
            *self.stored.lock().unwrap() = Some(secret.clone());
            secret
        }
    }

    #[async_trait]
    impl SecretApi for FakeSecrets {
        async fn get(&self) -> Result<Option<Secret>, kube::Error> {
            self.calls.lock().unwrap().push("get");
            Ok(self.stored.lock().unwrap().clone())
        }
        async fn create(&self, secret: &Secret) -> Result<Secret, kube::Error> {
            self.calls.lock().unwrap().push("create");
            if let Some(rival) = self.rival.lock().unwrap().take() {
                self.store(rival);
            }
            if self.stored.lock().unwrap().is_some() {
                return Err(api_error(409, "AlreadyExists"));
            }
            Ok(self.store(secret.clone()))
        }
        async fn replace(&self, secret: &Secret) -> Result<Secret, kube::Error> {
            self.calls.lock().unwrap().push("replace");
            let current = self.stored.lock().unwrap().clone();
            let current_version = current.and_then(|s| s.metadata.resource_version);
            if current_version != secret.metadata.resource_version {
                return Err(api_error(409, "Conflict"));
            }
            Ok(self.store(secret.clone()))
        }
    }

    fn dns() -> Vec<String> {
        vec!["ebb-metrics.ebb-system.svc".to_owned()]
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "ebb".into(),
            uid: "1234".into(),
            ..OwnerReference::default()
        }
    }

    #[tokio::test]
    async fn start_up_creates_the_secret_when_absent() {
        let api = FakeSecrets::default();
        let secret = get_or_create(&api, "ebb-system", "ebb-certs", &dns(), Some(&owner()), NOW)
            .await
            .unwrap();
        assert_eq!(*api.calls.lock().unwrap(), ["get", "create"]);
        assert_eq!(secret.metadata.owner_references, Some(vec![owner()]));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let contents = SecretContents::from_secret(&secret);
        assert_eq!(assess(&contents.facts(), &dns(), NOW), Verdict::Keep);
        // Again: the stored one is read, nothing is created.
        let again = get_or_create(&api, "ebb-system", "ebb-certs", &dns(), None, NOW)
            .await
            .unwrap();
        assert_eq!(again, secret);
    }

    #[tokio::test]
    async fn losing_the_create_race_reads_the_winners_secret() {
        let api = FakeSecrets::default();
        let winner = fresh_secret("ebb-system", "ebb-certs", &dns(), None, NOW).unwrap();
        *api.rival.lock().unwrap() = Some(winner.clone());
        let got = get_or_create(&api, "ebb-system", "ebb-certs", &dns(), None, NOW)
            .await
            .unwrap();
        assert_eq!(*api.calls.lock().unwrap(), ["get", "create", "get"]);
        assert_eq!(got.data, winner.data);
    }

    #[tokio::test]
    async fn the_leader_renews_a_serving_certificate_from_the_same_ca() {
        let api = FakeSecrets::default();
        let created = get_or_create(&api, "ns", "certs", &dns(), None, NOW)
            .await
            .unwrap();
        // Nothing to do now.
        assert!(
            renew_if_needed(&api, &created, &dns(), NOW)
                .await
                .unwrap()
                .is_none()
        );
        // 300 days later less than a third of 365 days is left.
        let later = NOW + 300 * DAY;
        let (renewed, verdict) = renew_if_needed(&api, &created, &dns(), later)
            .await
            .unwrap()
            .expect("renewed");
        assert!(matches!(
            verdict,
            Verdict::RenewServing(RenewReason::ExpiresSoon { .. })
        ));
        let before = SecretContents::from_secret(&created);
        let after = SecretContents::from_secret(&renewed);
        assert_eq!(after.ca_crt, before.ca_crt, "same CA");
        assert_eq!(after.ca_key, before.ca_key);
        assert_ne!(after.tls_crt, before.tls_crt);
        assert_eq!(assess(&after.facts(), &dns(), later), Verdict::Keep);
        // A second writer with the old resourceVersion is refused.
        let e = renew_if_needed(&api, &created, &dns(), later).await.unwrap_err();
        let CertError::Kube { source, .. } = &e else {
            panic!("{e}");
        };
        assert!(
            matches!(**source, kube::Error::Api(ref s) if s.code == 409),
            "{e}"
        );
    }

    #[tokio::test]
    async fn new_names_and_broken_cas_are_repaired() {
        let api = FakeSecrets::default();
        let created = get_or_create(&api, "ns", "certs", &dns(), None, NOW)
            .await
            .unwrap();
        let wider = vec![
            "ebb-metrics.ebb-system.svc".to_owned(),
            "ebb-metrics.ebb-system.svc.cluster.local".to_owned(),
        ];
        let (renewed, verdict) = renew_if_needed(&api, &created, &wider, NOW)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            verdict,
            Verdict::RenewServing(RenewReason::NamesMissing(_))
        ));
        let names = inspect(
            SecretContents::from_secret(&renewed).tls_crt.as_deref().unwrap(),
            TLS_CRT,
        )
        .unwrap()
        .names;
        assert!(names.contains(&wider[1]), "{names:?}");
        // Someone empties ca.key: everything is regenerated.
        let mut broken = renewed.clone();
        if let Some(data) = &mut broken.data {
            data.insert(CA_KEY.into(), ByteString(b"garbage".to_vec()));
        }
        let (fixed, verdict) = renew_if_needed(&api, &broken, &wider, NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(verdict, Verdict::Regenerate(RegenerateReason::CaUnusable));
        let fixed = SecretContents::from_secret(&fixed);
        assert_ne!(fixed.ca_crt, SecretContents::from_secret(&renewed).ca_crt);
        assert_eq!(assess(&fixed.facts(), &wider, NOW), Verdict::Keep);
    }

    #[test]
    fn a_key_that_does_not_match_is_an_unusable_serving_certificate() {
        let secret = fresh_secret("ns", "certs", &dns(), None, NOW).unwrap();
        let other = fresh_secret("ns", "certs", &dns(), None, NOW).unwrap();
        let mut contents = SecretContents::from_secret(&secret);
        contents.tls_key = SecretContents::from_secret(&other).tls_key;
        assert!(contents.facts().serving.is_none());
        let debug = format!("{contents:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
