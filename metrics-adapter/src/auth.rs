//! Delegated authentication and authorization, as `k8s.io/apiserver` does it for aggregated API
//! servers.
//!
//! Authentication, first match wins:
//! 1. **Front proxy**: a client certificate that chains to the requestheader CA, whose CN is in
//!    the allowed names (an empty list allows any CN), makes the `X-Remote-User`,
//!    `X-Remote-Group` and `X-Remote-Extra-*` headers (names from [`AuthConfig`]) trusted. The
//!    headers are ignored on any other connection.
//! 2. **Client certificate** chaining to the client CA: user = CN, groups = O.
//! 3. **Bearer token**, through [`TokenReviewer`] (a TokenReview); results cached.
//!
//! Every authenticated user also gets the group `system:authenticated`. Authorization goes
//! through [`AccessReviewer`] (a SubjectAccessReview), except for the group `system:masters`,
//! which is always allowed; decisions are cached. Both caches keep entries
//! [`DEFAULT_CACHE_TTL`] (10 s) by default, keyed by SHA-256 digests so that no token is kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

/// Namespace of the ConfigMap the API server publishes its client-authentication settings in.
pub const AUTH_CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// Name of that ConfigMap.
pub const AUTH_CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";
/// The group whose members are always authorized (no SubjectAccessReview).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group added to every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// How long authentication and authorization results are cached by default (allow and deny).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// The verb the metric endpoint is authorized for. The request has no object name, so the API
/// server's request info (and so `k8s.io/apiserver`) calls it `list`.
pub const METRIC_VERB: &str = "list";

const CACHE_CAPACITY: usize = 10_000;

/// Errors of authentication configuration and of the review calls.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The authentication configuration is unusable (bad PEM, bad JSON list, bad CA).
    #[error("invalid authentication configuration: {0}")]
    InvalidConfig(String),
    /// Reading the ConfigMap or creating a review failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A review could not be completed (the message never contains a token).
    #[error("review failed: {0}")]
    Review(String),
}

/// Client-authentication settings of the API server (the `extension-apiserver-authentication`
/// ConfigMap). An empty CA list disables the corresponding authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// CAs for client certificates authenticating as themselves (`client-ca-file`).
    pub client_ca: Vec<CertificateDer<'static>>,
    /// CAs for the front proxy's client certificate (`requestheader-client-ca-file`).
    pub requestheader_ca: Vec<CertificateDer<'static>>,
    /// CNs the front proxy's certificate may have; empty = any (`requestheader-allowed-names`).
    pub requestheader_allowed_names: Vec<String>,
    /// Headers carrying the user name, first non-empty wins (`requestheader-username-headers`).
    pub requestheader_username_headers: Vec<String>,
    /// Headers carrying groups, all values (`requestheader-group-headers`).
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes (`requestheader-extra-headers-prefix`).
    pub requestheader_extra_headers_prefix: Vec<String>,
}

impl Default for AuthConfig {
    /// No CAs, and the header names kube-apiserver is usually configured with (`X-Remote-User`,
    /// `X-Remote-Group`, `X-Remote-Extra-`).
    fn default() -> Self {
        Self {
            client_ca: Vec::new(),
            requestheader_ca: Vec::new(),
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: vec!["X-Remote-User".to_owned()],
            requestheader_group_headers: vec!["X-Remote-Group".to_owned()],
            requestheader_extra_headers_prefix: vec!["X-Remote-Extra-".to_owned()],
        }
    }
}

impl AuthConfig {
    /// Reads the configuration from the data of the `extension-apiserver-authentication`
    /// ConfigMap. Missing keys are empty (as in `k8s.io/apiserver`).
    pub fn from_config_map_data(data: &BTreeMap<String, String>) -> Result<Self, AuthError> {
        let text = |key: &str| data.get(key).map(String::as_str).unwrap_or("");
        let list = |key: &str| -> Result<Vec<String>, AuthError> {
            let raw = text(key).trim();
            if raw.is_empty() {
                return Ok(Vec::new());
            }
            serde_json::from_str(raw)
                .map_err(|e| AuthError::InvalidConfig(format!("{key}: expected a JSON list of strings: {e}")))
        };
        Ok(Self {
            client_ca: certificates_from_pem(text("client-ca-file"))
                .map_err(|e| AuthError::InvalidConfig(format!("client-ca-file: {e}")))?,
            requestheader_ca: certificates_from_pem(text("requestheader-client-ca-file"))
                .map_err(|e| AuthError::InvalidConfig(format!("requestheader-client-ca-file: {e}")))?,
            requestheader_allowed_names: list("requestheader-allowed-names")?,
            requestheader_username_headers: list("requestheader-username-headers")?,
            requestheader_group_headers: list("requestheader-group-headers")?,
            requestheader_extra_headers_prefix: list("requestheader-extra-headers-prefix")?,
        })
    }

    /// Reads `kube-system/extension-apiserver-authentication` through `client` (needs the
    /// `extension-apiserver-authentication-reader` Role).
    pub async fn load(client: kube::Client) -> Result<Self, AuthError> {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, AUTH_CONFIG_MAP_NAMESPACE);
        let config_map = api.get(AUTH_CONFIG_MAP_NAME).await?;
        Self::from_config_map_data(&config_map.data.unwrap_or_default())
    }

    /// All CAs a client certificate may chain to (requestheader and client CAs).
    pub fn all_client_roots(&self) -> Vec<CertificateDer<'static>> {
        self.requestheader_ca
            .iter()
            .chain(&self.client_ca)
            .cloned()
            .collect()
    }
}

/// Parses every `CERTIFICATE` block of a PEM bundle (other blocks are skipped).
pub fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, AuthError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AuthError::InvalidConfig(format!("PEM: {e}")))
}

/// An authenticated user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub username: String,
    /// The UID, empty if unknown.
    pub uid: String,
    /// The groups.
    pub groups: Vec<String>,
    /// Extra attributes (keys lower-case).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups.
    pub fn new(username: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            username: username.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    fn with_authenticated_group(mut self) -> Self {
        if !self
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED_GROUP || g == "system:unauthenticated")
        {
            self.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        self
    }
}

/// What a request asks to do, for authorization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RequestAttributes {
    /// A metric: resource `<metric>` of `external.metrics.k8s.io/v1beta1` in a namespace.
    Resource {
        /// The namespace.
        namespace: String,
        /// The resource, i.e. the lower-cased metric name.
        resource: String,
        /// The verb ([`METRIC_VERB`]).
        verb: String,
    },
    /// A non-resource path (discovery, unknown paths).
    NonResource {
        /// The request path.
        path: String,
        /// The verb (`get`).
        verb: String,
    },
}

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied (or no opinion), with the authorizer's reason (may be empty).
    Deny {
        /// Why.
        reason: String,
    },
}

/// Authenticates bearer tokens (a TokenReview in a cluster; a fake in tests).
#[async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    /// The user the token belongs to, `None` if it is not valid. Implementations must not log
    /// or return the token in errors.
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError>;
}

/// Authorizes requests (a SubjectAccessReview in a cluster; a fake in tests).
#[async_trait]
pub trait AccessReviewer: Send + Sync + 'static {
    /// Whether `user` may do `attributes`.
    async fn review(&self, user: &UserInfo, attributes: &RequestAttributes) -> Result<Decision, AuthError>;
}

/// What a connection's client certificate proves, computed once per connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerCertificate {
    /// The CN of a certificate chaining to the requestheader CA.
    front_proxy_cn: Option<String>,
    /// The user of a certificate chaining to the client CA (CN, O).
    client_user: Option<UserInfo>,
}

/// The adapter's authenticator and authorizer: [`AuthConfig`], a [`TokenReviewer`] and an
/// [`AccessReviewer`], with caches.
pub struct DelegatedAuth {
    config: AuthConfig,
    /// `requestheader_extra_headers_prefix`, lower-cased (header names are lower-case in `http`).
    extra_prefixes: Vec<String>,
    requestheader_verifier: Option<Arc<dyn ClientCertVerifier>>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    tokens: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
    token_cache: TtlCache<Option<UserInfo>>,
    access_cache: TtlCache<Decision>,
}

impl std::fmt::Debug for DelegatedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedAuth")
            .field("config", &self.config)
            .finish_non_exhaustive()
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

impl DelegatedAuth {
    /// Builds the authenticator/authorizer. Fails if a CA certificate is unusable.
    pub fn new(
        config: AuthConfig,
        tokens: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            requestheader_verifier: verifier_for(&config.requestheader_ca)?,
            client_verifier: verifier_for(&config.client_ca)?,
            extra_prefixes: config
                .requestheader_extra_headers_prefix
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            config,
            tokens,
            access,
            token_cache: TtlCache::new(DEFAULT_CACHE_TTL),
            access_cache: TtlCache::new(DEFAULT_CACHE_TTL),
        })
    }

    /// The cluster-backed setup: the `extension-apiserver-authentication` ConfigMap, TokenReview
    /// and SubjectAccessReview through `client` (RBAC: `system:auth-delegator` and the
    /// `extension-apiserver-authentication-reader` Role in `kube-system`).
    pub async fn from_kube(client: kube::Client) -> Result<Self, AuthError> {
        let config = AuthConfig::load(client.clone()).await?;
        Self::new(
            config,
            Arc::new(crate::kube_review::KubeTokenReviewer::new(client.clone())),
            Arc::new(crate::kube_review::KubeAccessReviewer::new(client)),
        )
    }

    /// Sets how long token reviews and access decisions are cached (0 disables the caches).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.token_cache = TtlCache::new(ttl);
        self.access_cache = TtlCache::new(ttl);
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Verifies the connection's client certificate chain against each CA, once per connection.
    pub(crate) fn classify_peer(&self, chain: Option<&[CertificateDer<'_>]>) -> PeerCertificate {
        let Some((end_entity, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return PeerCertificate::default();
        };
        let now = UnixTime::now();
        let verifies = |verifier: &Option<Arc<dyn ClientCertVerifier>>| {
            verifier
                .as_ref()
                .is_some_and(|v| v.verify_client_cert(end_entity, intermediates, now).is_ok())
        };
        let front_proxy = verifies(&self.requestheader_verifier);
        let client = verifies(&self.client_verifier);
        if !front_proxy && !client {
            tracing::debug!("client certificate does not chain to a trusted CA; ignored");
            return PeerCertificate::default();
        }
        let Some((cn, orgs)) = subject_names(end_entity) else {
            tracing::debug!("client certificate subject unreadable; ignored");
            return PeerCertificate::default();
        };
        PeerCertificate {
            front_proxy_cn: front_proxy.then(|| cn.clone()),
            client_user: (client && !cn.is_empty()).then(|| UserInfo::new(cn, orgs)),
        }
    }

    /// Authenticates a request: `Ok(None)` when no authenticator recognizes it.
    pub(crate) async fn authenticate(
        &self,
        peer: &PeerCertificate,
        headers: &HeaderMap,
    ) -> Result<Option<UserInfo>, AuthError> {
        if let Some(cn) = &peer.front_proxy_cn {
            let allowed = self.config.requestheader_allowed_names.is_empty()
                || self.config.requestheader_allowed_names.iter().any(|n| n == cn);
            if allowed {
                if let Some(user) = self.user_from_request_headers(headers) {
                    return Ok(Some(user.with_authenticated_group()));
                }
            } else {
                tracing::debug!(cn = %cn, "front-proxy certificate CN not in requestheader-allowed-names");
            }
        }
        if let Some(user) = &peer.client_user {
            return Ok(Some(user.clone().with_authenticated_group()));
        }
        let Some(token) = bearer_token(headers) else {
            return Ok(None);
        };
        let key = digest(|d| field(d, token.as_bytes()));
        let user = match self.token_cache.get(&key) {
            Some(user) => user,
            None => {
                let user = self.tokens.review(token).await?;
                self.token_cache.insert(key, user.clone());
                user
            }
        };
        Ok(user.map(UserInfo::with_authenticated_group))
    }

    fn user_from_request_headers(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let username = self
            .config
            .requestheader_username_headers
            .iter()
            .find_map(|name| {
                headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|v| !v.is_empty())
            })?;
        let mut user = UserInfo {
            username: username.to_owned(),
            ..UserInfo::default()
        };
        for name in &self.config.requestheader_group_headers {
            user.groups.extend(
                headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            );
        }
        if !self.extra_prefixes.is_empty() {
            for (name, value) in headers {
                // Header names are lower-case in `http`.
                let Some(suffix) = self
                    .extra_prefixes
                    .iter()
                    .find_map(|p| name.as_str().strip_prefix(p.as_str()))
                else {
                    continue;
                };
                let Ok(value) = value.to_str() else { continue };
                if value.is_empty() {
                    continue;
                }
                let key = percent_encoding::percent_decode_str(suffix)
                    .decode_utf8_lossy()
                    .to_lowercase();
                user.extra.entry(key).or_default().push(value.to_owned());
            }
        }
        Some(user)
    }

    /// Authorizes `user` for `attributes`; `system:masters` is always allowed.
    pub(crate) async fn authorize(
        &self,
        user: &UserInfo,
        attributes: &RequestAttributes,
    ) -> Result<Decision, AuthError> {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(Decision::Allow);
        }
        let key = access_key(user, attributes);
        if let Some(decision) = self.access_cache.get(&key) {
            return Ok(decision);
        }
        let decision = self.access.review(user, attributes).await?;
        self.access_cache.insert(key, decision.clone());
        Ok(decision)
    }
}

/// The bearer token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(char::is_whitespace))
        .then_some(token)
}

/// CN (first, possibly empty) and O values of a certificate's subject.
fn subject_names(der: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
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
    Some((cn, orgs))
}

type Key = [u8; 32];

fn digest(f: impl FnOnce(&mut ring::digest::Context)) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    f(&mut context);
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// Feeds a length-prefixed field, so that distinct field sequences never hash the same input.
fn field(d: &mut ring::digest::Context, bytes: &[u8]) {
    d.update(&(bytes.len() as u64).to_le_bytes());
    d.update(bytes);
}

fn access_key(user: &UserInfo, attributes: &RequestAttributes) -> Key {
    digest(|d| {
        field(d, user.username.as_bytes());
        field(d, user.uid.as_bytes());
        field(d, &(user.groups.len() as u64).to_le_bytes());
        for g in &user.groups {
            field(d, g.as_bytes());
        }
        field(d, &(user.extra.len() as u64).to_le_bytes());
        for (k, values) in &user.extra {
            field(d, k.as_bytes());
            field(d, &(values.len() as u64).to_le_bytes());
            for v in values {
                field(d, v.as_bytes());
            }
        }
        match attributes {
            RequestAttributes::Resource {
                namespace,
                resource,
                verb,
            } => {
                field(d, b"resource");
                field(d, namespace.as_bytes());
                field(d, resource.as_bytes());
                field(d, verb.as_bytes());
            }
            RequestAttributes::NonResource { path, verb } => {
                field(d, b"nonresource");
                field(d, path.as_bytes());
                field(d, verb.as_bytes());
            }
        }
    })
}

/// A small TTL map; the lock is never held across an await.
struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &Key) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v.clone())
    }

    fn insert(&self, key: Key, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer_token(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer "),
        );
        assert_eq!(bearer_token(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer a b"),
        );
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn config_map_data() {
        let data: BTreeMap<String, String> = [
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = AuthConfig::from_config_map_data(&data).expect("config");
        assert_eq!(config.requestheader_allowed_names, vec!["front-proxy-client"]);
        assert_eq!(config.requestheader_username_headers, vec!["X-Remote-User"]);
        assert!(config.client_ca.is_empty());

        let mut bad = data.clone();
        bad.insert("requestheader-allowed-names".into(), "front-proxy-client".into());
        assert!(AuthConfig::from_config_map_data(&bad).is_err());
        let mut bad = data;
        bad.insert(
            "client-ca-file".into(),
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
        );
        assert!(AuthConfig::from_config_map_data(&bad).is_err());
    }

    #[test]
    fn cache_keys_distinguish_fields() {
        let a = UserInfo::new("ab", ["c"]);
        let b = UserInfo::new("a", ["bc"]);
        let attrs = RequestAttributes::NonResource {
            path: "/apis".into(),
            verb: "get".into(),
        };
        assert_ne!(access_key(&a, &attrs), access_key(&b, &attrs));
        assert_eq!(access_key(&a, &attrs), access_key(&a.clone(), &attrs));
    }

    #[test]
    fn ttl_cache_expires() {
        let cache = TtlCache::new(Duration::from_millis(20));
        cache.insert([1; 32], 5u8);
        assert_eq!(cache.get(&[1; 32]), Some(5));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&[1; 32]), None);
        let off = TtlCache::new(Duration::ZERO);
        off.insert([1; 32], 5u8);
        assert_eq!(off.get(&[1; 32]), None);
    }
}
