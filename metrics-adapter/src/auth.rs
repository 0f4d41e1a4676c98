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
//! which is always allowed; decisions are cached.
//!
//! Both caches keep an authenticated token or an allowed decision [`DEFAULT_ALLOWED_TTL`]
//! (2 min, well over the HPA's 15 s sync period) and an unknown token or a denial
//! [`DEFAULT_DENIED_TTL`] (30 s), at most 10,000 entries each, least recently used out first
//! ([`cache`]); keys are SHA-256 digests, so no token is kept. Reviews not answered from a cache
//! spend a budget ([`budget`]) with two pools: one for users the front proxy vouches for (the
//! API server's requests), one for direct clients of the port, which is all a bogus-token flood
//! can reach. Each pool has a global rate, a smaller one per source (the client's address; for
//! the front proxy, the user it vouches for) and a cap on reviews in flight. A review over a
//! limit is not sent and the request fails at once ([`AuthError::Throttled`]: 503, or 429 for a
//! source over its share), so bogus tokens never queue ahead of anything.
//!
//! The configuration ([`AuthConfig`], the API server's `extension-apiserver-authentication`
//! ConfigMap) can be replaced while serving ([`DelegatedAuth::reload`],
//! [`DelegatedAuth::follow_config`]); client certificates are then verified again against the
//! new CAs, and an expired one stops counting on open connections too ([`peer`]).

mod budget;
mod cache;
mod config;
mod peer;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use rustls::pki_types::{CertificateDer, UnixTime};

pub use budget::{AuthLimits, PoolLimits, ThrottleScope, Throttled};
use budget::{Budget, Source};
pub use cache::CacheTtls;
use cache::{CACHE_CAPACITY, Key, ReviewCache};
pub use config::{AuthConfig, certificates_from_pem};
pub(crate) use peer::PeerCertificate;
use peer::{CertIdentity, Verifiers};

/// Namespace of the ConfigMap the API server publishes its client-authentication settings in.
pub const AUTH_CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// Name of that ConfigMap.
pub const AUTH_CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";
/// The group whose members are always authorized (no SubjectAccessReview).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group added to every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// How long an authenticated token or an allowed decision is cached by default.
pub const DEFAULT_ALLOWED_TTL: Duration = Duration::from_secs(120);
/// How long an unknown token or a denied decision is cached by default.
pub const DEFAULT_DENIED_TTL: Duration = Duration::from_secs(30);
/// The verb the metric endpoint is authorized for. The request has no object name, so the API
/// server's request info (and so `k8s.io/apiserver`) calls it `list`.
pub const METRIC_VERB: &str = "list";

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
    /// A review was needed but the review budget is spent; nothing was sent.
    #[error("too many authentication reviews ({:?} limit); retry after {:?}", .0.scope, .0.retry_after)]
    Throttled(Throttled),
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

/// One configuration in force: the settings, their verifiers, and a generation number that
/// changes with every reload.
struct AuthState {
    generation: u64,
    config: AuthConfig,
    /// `requestheader_extra_headers_prefix`, lower-cased (header names are lower-case in `http`).
    extra_prefixes: Vec<String>,
    verifiers: Verifiers,
}

impl AuthState {
    fn new(config: AuthConfig, generation: u64) -> Result<Self, AuthError> {
        Ok(Self {
            generation,
            verifiers: Verifiers::new(&config)?,
            extra_prefixes: config
                .requestheader_extra_headers_prefix
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
            config,
        })
    }
}

/// The adapter's authenticator and authorizer: an [`AuthConfig`] (replaceable while serving, see
/// [`reload`](Self::reload)), a [`TokenReviewer`] and an [`AccessReviewer`], with bounded caches
/// and a review budget ([`AuthLimits`]).
pub struct DelegatedAuth {
    state: RwLock<Arc<AuthState>>,
    tokens: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
    ttls: CacheTtls,
    token_cache: ReviewCache<Option<UserInfo>>,
    access_cache: ReviewCache<Decision>,
    budget: Budget,
}

impl std::fmt::Debug for DelegatedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedAuth")
            .field("config", &self.current().config)
            .field("ttls", &self.ttls)
            .finish_non_exhaustive()
    }
}

impl DelegatedAuth {
    /// Builds the authenticator/authorizer with the default cache TTLs and [`AuthLimits`]. Fails
    /// if a CA certificate is unusable.
    pub fn new(
        config: AuthConfig,
        tokens: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            state: RwLock::new(Arc::new(AuthState::new(config, 0)?)),
            tokens,
            access,
            ttls: CacheTtls {
                allowed: DEFAULT_ALLOWED_TTL,
                denied: DEFAULT_DENIED_TTL,
            },
            token_cache: ReviewCache::new(CACHE_CAPACITY),
            access_cache: ReviewCache::new(CACHE_CAPACITY),
            budget: Budget::new(AuthLimits::default()),
        })
    }

    /// The cluster-backed setup: the `extension-apiserver-authentication` ConfigMap, TokenReview
    /// and SubjectAccessReview through `client` (RBAC: `system:auth-delegator` and the
    /// `extension-apiserver-authentication-reader` Role in `kube-system`). Keep the ConfigMap
    /// followed with [`follow_config`](Self::follow_config).
    pub async fn from_kube(client: kube::Client) -> Result<Self, AuthError> {
        let config = AuthConfig::load(client.clone()).await?;
        Self::new(
            config,
            Arc::new(crate::kube_review::KubeTokenReviewer::new(client.clone())),
            Arc::new(crate::kube_review::KubeAccessReviewer::new(client)),
        )
    }

    /// Sets one TTL for every cached review result (0 disables the caches).
    pub fn with_cache_ttl(self, ttl: Duration) -> Self {
        self.with_cache_ttls(CacheTtls::uniform(ttl))
    }

    /// Sets how long allowed and denied review results are cached.
    pub fn with_cache_ttls(mut self, ttls: CacheTtls) -> Self {
        self.ttls = ttls;
        self
    }

    /// Sets the review budget (default [`AuthLimits::default`]).
    pub fn with_limits(mut self, limits: AuthLimits) -> Self {
        self.budget = Budget::new(limits);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> AuthConfig {
        self.current().config.clone()
    }

    /// Changes with every configuration that [`reload`](Self::reload) puts in force.
    pub fn generation(&self) -> u64 {
        self.current().generation
    }

    /// Puts `config` in force for the next requests (connections opened before verify their
    /// client certificate again against the new CAs). Returns whether anything changed; an
    /// unusable configuration is refused and the current one stays.
    pub fn reload(&self, config: AuthConfig) -> Result<bool, AuthError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.config == config {
            return Ok(false);
        }
        *state = Arc::new(AuthState::new(config, state.generation.wrapping_add(1))?);
        Ok(true)
    }

    /// Follows the `extension-apiserver-authentication` ConfigMap through `client` (a watch,
    /// re-established with backoff) and reloads every change, so a CA rotation or new header
    /// names take effect without a restart. Runs until dropped.
    pub async fn follow_config(self: Arc<Self>, client: kube::Client) {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, AUTH_CONFIG_MAP_NAMESPACE);
        let config = watcher::Config::default().fields(&format!("metadata.name={AUTH_CONFIG_MAP_NAME}"));
        let mut events = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
        while let Some(event) = events.next().await {
            match event {
                Ok(config_map) => match self.apply_config_map(&config_map.data.unwrap_or_default()) {
                    Ok(true) => tracing::info!(
                        generation = self.generation(),
                        "API server authentication settings reloaded"
                    ),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "API server authentication settings not reloaded; keeping the previous ones");
                    }
                },
                Err(error) => tracing::warn!(%error, "watching the API server authentication settings"),
            }
        }
    }

    /// Reloads from the data of the `extension-apiserver-authentication` ConfigMap
    /// ([`AuthConfig::from_config_map_data`], then [`reload`](Self::reload)).
    pub fn apply_config_map(&self, data: &BTreeMap<String, String>) -> Result<bool, AuthError> {
        self.reload(AuthConfig::from_config_map_data(data)?)
    }

    fn current(&self) -> Arc<AuthState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The CAs a client certificate may chain to, and the generation they belong to.
    pub(crate) fn client_roots(&self) -> (u64, Vec<CertificateDer<'static>>) {
        let state = self.current();
        (state.generation, state.config.all_client_roots())
    }

    /// Verifies the connection's client certificate chain against each CA, once per connection.
    pub(crate) fn classify_peer(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        remote: IpAddr,
    ) -> PeerCertificate {
        let state = self.current();
        let chain: Vec<CertificateDer<'static>> = chain
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        PeerCertificate {
            remote,
            identity: state.verifiers.classify(&chain, UnixTime::now()),
            generation: state.generation,
            chain,
        }
    }

    /// What the peer's certificate proves now, under the configuration in force.
    fn cert_identity(&self, state: &AuthState, peer: &PeerCertificate) -> CertIdentity {
        let now = UnixTime::now();
        let identity = if peer.generation == state.generation {
            peer.identity.clone()
        } else {
            state.verifiers.classify(&peer.chain, now)
        };
        identity.at(now)
    }

    /// Authenticates a request: `Ok(None)` when no authenticator recognizes it;
    /// [`AuthError::Throttled`] when a TokenReview would be needed and the budget is spent.
    pub(crate) async fn authenticate(
        &self,
        peer: &PeerCertificate,
        headers: &HeaderMap,
    ) -> Result<Option<UserInfo>, AuthError> {
        let state = self.current();
        let identity = self.cert_identity(&state, peer);
        if let Some(cn) = &identity.front_proxy_cn {
            let allowed = state.config.requestheader_allowed_names.is_empty()
                || state.config.requestheader_allowed_names.iter().any(|n| n == cn);
            if allowed {
                if let Some(user) = user_from_request_headers(&state, headers) {
                    return Ok(Some(user.with_authenticated_group()));
                }
            } else {
                tracing::debug!(cn = %cn, "front-proxy certificate CN not in requestheader-allowed-names");
            }
        }
        if let Some(user) = identity.client_user {
            return Ok(Some(user.with_authenticated_group()));
        }
        let Some(token) = bearer_token(headers) else {
            return Ok(None);
        };
        let key = digest(|d| field(d, token.as_bytes()));
        let user = match self.token_cache.get(&key, clock()) {
            Some(user) => user,
            None => {
                let _in_flight = self
                    .budget
                    .start(&Source::Address(peer.remote), clock())
                    .map_err(AuthError::Throttled)?;
                let user = self.tokens.review(token).await?;
                let ttl = if user.is_some() {
                    self.ttls.allowed
                } else {
                    self.ttls.denied
                };
                self.token_cache.insert(key, user.clone(), ttl, clock());
                user
            }
        };
        Ok(user.map(UserInfo::with_authenticated_group))
    }

    /// Authorizes `user` (authenticated on `peer`'s connection) for `attributes`;
    /// `system:masters` is always allowed. [`AuthError::Throttled`] when a SubjectAccessReview
    /// would be needed and the budget is spent.
    pub(crate) async fn authorize(
        &self,
        peer: &PeerCertificate,
        user: &UserInfo,
        attributes: &RequestAttributes,
    ) -> Result<Decision, AuthError> {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(Decision::Allow);
        }
        let key = access_key(user, attributes);
        if let Some(decision) = self.access_cache.get(&key, clock()) {
            return Ok(decision);
        }
        let source = if peer.identity.front_proxy_cn.is_some() {
            Source::ProxiedUser(user.username.clone())
        } else {
            Source::Address(peer.remote)
        };
        let _in_flight = self
            .budget
            .start(&source, clock())
            .map_err(AuthError::Throttled)?;
        let decision = self.access.review(user, attributes).await?;
        let ttl = match decision {
            Decision::Allow => self.ttls.allowed,
            Decision::Deny { .. } => self.ttls.denied,
        };
        self.access_cache.insert(key, decision.clone(), ttl, clock());
        Ok(decision)
    }
}

/// The user the front proxy's headers name (header names from `state`'s configuration).
fn user_from_request_headers(state: &AuthState, headers: &HeaderMap) -> Option<UserInfo> {
    let config = &state.config;
    let username = config.requestheader_username_headers.iter().find_map(|name| {
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
    for name in &config.requestheader_group_headers {
        user.groups.extend(
            headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        );
    }
    if !state.extra_prefixes.is_empty() {
        for (name, value) in headers {
            // Header names are lower-case in `http`.
            let Some(suffix) = state
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

/// The time for the caches and the budget (tokio's clock, so tests can pause it).
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The bearer token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(char::is_whitespace))
        .then_some(token)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };

    /// A token reviewer knowing one token, counting its calls.
    #[derive(Default)]
    struct Tokens {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl TokenReviewer for Tokens {
        async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok((token == "good").then(|| UserInfo::new("hpa", ["system:serviceaccounts"])))
        }
    }

    /// An access reviewer allowing one user, recording its calls.
    #[derive(Default)]
    struct Access {
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl AccessReviewer for Access {
        async fn review(&self, user: &UserInfo, _: &RequestAttributes) -> Result<Decision, AuthError> {
            self.calls.lock().expect("lock").push(user.username.clone());
            Ok(if user.username == "hpa" {
                Decision::Allow
            } else {
                Decision::Deny {
                    reason: String::new(),
                }
            })
        }
    }

    fn auth_with(config: AuthConfig, limits: AuthLimits) -> (DelegatedAuth, Arc<Tokens>, Arc<Access>) {
        let tokens = Arc::new(Tokens::default());
        let access = Arc::new(Access::default());
        let auth = DelegatedAuth::new(config, tokens.clone(), access.clone())
            .expect("auth")
            .with_limits(limits);
        (auth, tokens, access)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        headers
    }

    fn from(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn metric() -> RequestAttributes {
        RequestAttributes::Resource {
            namespace: "default".into(),
            resource: "s0-kafka".into(),
            verb: METRIC_VERB.into(),
        }
    }

    fn throttled_scope<T: std::fmt::Debug>(result: Result<T, AuthError>) -> ThrottleScope {
        match result {
            Err(AuthError::Throttled(t)) => t.scope,
            other => panic!("expected throttling, got {other:?}"),
        }
    }

    #[test]
    fn an_exhausted_budget_fails_at_once_without_a_review() {
        let limits = AuthLimits::uniform(PoolLimits {
            qps: 1.0,
            burst: 3,
            per_source_qps: 1.0,
            per_source_burst: 3,
            max_in_flight: 32,
        });
        let (auth, tokens, _) = auth_with(AuthConfig::default(), limits);
        for n in 0..3 {
            let peer = auth.classify_peer(None, from(n));
            let user = auth
                .authenticate(&peer, &bearer(&format!("garbage-{n}")))
                .now_or_never();
            assert!(matches!(user, Some(Ok(None))), "{user:?}");
        }
        // The budget is spent: the next review is refused on the first poll, without a call.
        let peer = auth.classify_peer(None, from(9));
        let refused = auth
            .authenticate(&peer, &bearer("good"))
            .now_or_never()
            .expect("answers at once");
        assert_eq!(throttled_scope(refused), ThrottleScope::Global);
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 3);
        // A cached answer needs no budget.
        let peer = auth.classify_peer(None, from(0));
        let cached = auth.authenticate(&peer, &bearer("garbage-0")).now_or_never();
        assert!(matches!(cached, Some(Ok(None))));
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn one_source_cannot_spend_the_budget() {
        let limits = AuthLimits::uniform(PoolLimits {
            qps: 100.0,
            burst: 100,
            per_source_qps: 1.0,
            per_source_burst: 5,
            max_in_flight: 32,
        });
        let (auth, tokens, access) = auth_with(AuthConfig::default(), limits);
        let flood = auth.classify_peer(None, from(66));
        let mut refused = 0;
        for n in 0..50 {
            match auth
                .authenticate(&flood, &bearer(&format!("garbage-{n}")))
                .now_or_never()
            {
                Some(Ok(None)) => {}
                Some(result) => {
                    assert_eq!(throttled_scope(result), ThrottleScope::Source);
                    refused += 1;
                }
                None => panic!("a review waited"),
            }
        }
        assert_eq!(refused, 45);
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 5);
        // Another source is served: its token and its access review.
        let hpa = auth.classify_peer(None, from(1));
        let user = auth
            .authenticate(&hpa, &bearer("good"))
            .now_or_never()
            .expect("ready")
            .expect("ok")
            .expect("user");
        let decision = auth
            .authorize(&hpa, &user, &metric())
            .now_or_never()
            .expect("ready");
        assert!(matches!(decision, Ok(Decision::Allow)));
        assert_eq!(*access.calls.lock().expect("lock"), ["hpa"]);
    }

    #[tokio::test(start_paused = true)]
    async fn decisions_outlive_the_hpa_sync_period_and_denials_are_shorter() {
        let (auth, tokens, access) = auth_with(AuthConfig::default(), AuthLimits::default());
        let peer = auth.classify_peer(None, from(1));
        // The HPA reads every 15 s for a minute; a bogus token comes along each time.
        for _ in 0..4 {
            let user = auth
                .authenticate(&peer, &bearer("good"))
                .await
                .expect("ok")
                .expect("user");
            assert!(matches!(
                auth.authorize(&peer, &user, &metric()).await,
                Ok(Decision::Allow)
            ));
            assert!(matches!(
                auth.authenticate(&peer, &bearer("garbage")).await,
                Ok(None)
            ));
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
        // One review each for the good token and its decision; the denial (30 s) twice.
        assert_eq!(access.calls.lock().expect("lock").len(), 1);
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 3);
        // After two minutes the allowed entries are reviewed again.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let user = auth
            .authenticate(&peer, &bearer("good"))
            .await
            .expect("ok")
            .expect("user");
        let _ = auth.authorize(&peer, &user, &metric()).await;
        assert_eq!(access.calls.lock().expect("lock").len(), 2);
    }

    struct TestCa {
        cert: CertificateDer<'static>,
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("CA");
            Self {
                cert: cert.der().clone(),
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        fn client(&self, cn: &str, org: &str) -> CertificateDer<'static> {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.distinguished_name.push(DnType::OrganizationName, org);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().expect("key");
            params
                .signed_by(&key, &self.issuer)
                .expect("signed")
                .der()
                .clone()
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn user_of(auth: &DelegatedAuth, peer: &PeerCertificate, headers: &HeaderMap) -> Option<String> {
        auth.authenticate(peer, headers)
            .now_or_never()
            .expect("no review")
            .expect("ok")
            .map(|u| u.username)
    }

    #[test]
    fn a_changed_config_map_changes_what_is_accepted() {
        let old_ca = TestCa::new("client-ca-1");
        let new_ca = TestCa::new("client-ca-2");
        let alice = new_ca.client("alice", "team");
        let (auth, _, _) = auth_with(AuthConfig::default(), AuthLimits::default());
        assert_eq!(
            auth.apply_config_map(&data(&[("client-ca-file", &old_ca.pem)]))
                .ok(),
            Some(true)
        );
        let generation = auth.generation();
        let open = auth.classify_peer(Some(std::slice::from_ref(&alice)), from(1));
        assert_eq!(
            user_of(&auth, &open, &HeaderMap::new()),
            None,
            "not signed by the CA in force"
        );

        // The CA rotates: both CAs, then only the new one.
        let both = format!("{}{}", old_ca.pem, new_ca.pem);
        assert_eq!(
            auth.apply_config_map(&data(&[("client-ca-file", &both)])).ok(),
            Some(true)
        );
        assert_ne!(auth.generation(), generation);
        assert_eq!(
            user_of(&auth, &open, &HeaderMap::new()).as_deref(),
            Some("alice"),
            "the open connection is verified again"
        );
        let fresh = auth.classify_peer(Some(std::slice::from_ref(&alice)), from(1));
        assert_eq!(
            user_of(&auth, &fresh, &HeaderMap::new()).as_deref(),
            Some("alice")
        );
        assert_eq!(
            auth.client_roots().1,
            vec![old_ca.cert.clone(), new_ca.cert.clone()]
        );
        assert_eq!(
            auth.apply_config_map(&data(&[("client-ca-file", &both)])).ok(),
            Some(false),
            "same content, nothing to do"
        );

        // Back to the old CA only: alice's certificate stops counting on every connection.
        assert_eq!(
            auth.apply_config_map(&data(&[("client-ca-file", &old_ca.pem)]))
                .ok(),
            Some(true)
        );
        assert_eq!(user_of(&auth, &fresh, &HeaderMap::new()), None);

        // An unusable ConfigMap is refused and the configuration in force stays.
        let bad = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(auth.apply_config_map(&data(&[("client-ca-file", bad)])).is_err());
        assert_eq!(auth.config().client_ca, vec![old_ca.cert.clone()]);
    }

    #[test]
    fn a_changed_config_map_changes_the_front_proxy_settings() {
        let proxy_ca = TestCa::new("front-proxy-ca");
        let proxy = proxy_ca.client("front-proxy-client", "");
        let (auth, _, _) = auth_with(AuthConfig::default(), AuthLimits::default());
        let settings = |user_header: &str, allowed: &str| {
            data(&[
                ("requestheader-client-ca-file", &proxy_ca.pem),
                ("requestheader-username-headers", user_header),
                ("requestheader-allowed-names", allowed),
            ])
        };
        auth.apply_config_map(&settings(r#"["X-Remote-User"]"#, r#"["front-proxy-client"]"#))
            .expect("reload");
        let peer = auth.classify_peer(Some(std::slice::from_ref(&proxy)), from(1));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-user", http::HeaderValue::from_static("bob"));
        assert_eq!(user_of(&auth, &peer, &headers), None);
        auth.apply_config_map(&settings(r#"["X-Forwarded-User"]"#, r#"["front-proxy-client"]"#))
            .expect("reload");
        assert_eq!(user_of(&auth, &peer, &headers).as_deref(), Some("bob"));
        auth.apply_config_map(&settings(r#"["X-Forwarded-User"]"#, r#"["other-proxy"]"#))
            .expect("reload");
        assert_eq!(user_of(&auth, &peer, &headers), None, "CN no longer allowed");
    }

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
}
