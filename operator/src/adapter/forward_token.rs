//! The credentials of forwarding: a standby asks the leader with a short-lived token of its own
//! ServiceAccount for the audience [`FORWARD_AUDIENCE`] (TokenRequest), never with its API token,
//! so a token that reaches anyone else is good for nothing but asking an ebb leader; the leader
//! accepts such a token only when a TokenReview *for that audience* authenticates it as the
//! operator's own ServiceAccount ([`ForwardTokenReviewer`]). Other bearer tokens (callers that
//! talk to an adapter directly) are reviewed as before.
//!
//! The ServiceAccount the operator runs as is read from the `sub` claim of its mounted token
//! ([`ServiceAccountRef::of_token_file`]).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use ebb_metrics_adapter::{
    AuthConfig, AuthError, DelegatedAuth, KubeAccessReviewer, KubeTokenReviewer, TokenReviewer, UserInfo,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec, TokenReviewStatus,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

/// The audience of the tokens a standby forwards with (and the only one the leader accepts them
/// for).
pub const FORWARD_AUDIENCE: &str = "ebb-leader-forward";

/// Lifetime asked for a forwarding token (the API server's minimum is ten minutes).
const TOKEN_SECONDS: i64 = 600;

/// Why forwarding has no token, or the operator's ServiceAccount is unknown.
#[derive(Debug, thiserror::Error)]
pub enum ForwardTokenError {
    /// The service-account token file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no service-account JWT (e.g. a static token outside a pod).
    #[error(
        "{path} holds no service-account token (a JWT whose `sub` is system:serviceaccount:<namespace>:<name>)"
    )]
    NotServiceAccount {
        /// The file.
        path: PathBuf,
    },
    /// The TokenRequest failed.
    #[error(
        "TokenRequest for ServiceAccount {account} (audience {FORWARD_AUDIENCE}) failed; the operator \
         needs `create` on serviceaccounts/token for its own ServiceAccount"
    )]
    Request {
        /// `namespace/name`.
        account: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The API server answered a TokenRequest without a token.
    #[error("TokenRequest for ServiceAccount {account}: answer without a token")]
    NoToken {
        /// `namespace/name`.
        account: String,
    },
}

/// A ServiceAccount, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccountRef {
    /// The ServiceAccount of a user name `system:serviceaccount:<namespace>:<name>`.
    pub fn of_username(user: &str) -> Option<Self> {
        let (namespace, name) = user.strip_prefix("system:serviceaccount:")?.split_once(':')?;
        let part_ok = |s: &str| !s.is_empty() && !s.contains(':');
        (part_ok(namespace) && part_ok(name)).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The ServiceAccount a service-account JWT was issued to (its `sub` claim, unverified: only
    /// for the operator's own token).
    pub fn of_token(jwt: &str) -> Option<Self> {
        Self::of_username(jwt_claims(jwt)?.get("sub")?.as_str()?)
    }

    /// The ServiceAccount whose token `path` holds.
    pub fn of_token_file(path: &Path) -> Result<Self, ForwardTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| ForwardTokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::of_token(text.trim()).ok_or_else(|| ForwardTokenError::NotServiceAccount {
            path: path.to_owned(),
        })
    }

    /// Its user name, as a TokenReview reports it.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The claims of a JWT, *unverified* (a routing hint or one's own token, never a proof).
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// Whether a token *claims* (unverified) to be for `audience`: such a token is reviewed for that
/// audience only.
pub fn claims_audience(token: &str, audience: &str) -> bool {
    let Some(claims) = jwt_claims(token) else {
        return false;
    };
    match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

/// The TokenRequest a standby makes for its ServiceAccount.
pub fn forward_token_request() -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![FORWARD_AUDIENCE.to_owned()],
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    }
}

/// When a token valid from `issued` until `expires` is replaced: halfway through its life.
pub fn refresh_time(issued: Timestamp, expires: Timestamp) -> Timestamp {
    let life = expires.duration_since(issued);
    if life <= SignedDuration::ZERO {
        return issued;
    }
    issued.checked_add(life / 2).unwrap_or(issued)
}

/// A standby's forwarding tokens: one TokenRequest, reused until halfway through its life.
pub struct ForwardTokens {
    accounts: Api<ServiceAccount>,
    account: ServiceAccountRef,
    current: tokio::sync::Mutex<Option<(String, Timestamp)>>,
}

impl std::fmt::Debug for ForwardTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardTokens")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl ForwardTokens {
    /// Tokens of `account`, requested through `client`.
    pub fn new(client: Client, account: ServiceAccountRef) -> Self {
        Self {
            accounts: Api::namespaced(client, &account.namespace),
            account,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// A current forwarding token (requested when there is none or it is half spent).
    pub async fn token(&self) -> Result<String, ForwardTokenError> {
        let mut current = self.current.lock().await;
        if let Some((token, refresh)) = current.as_ref()
            && Timestamp::now() < *refresh
        {
            return Ok(token.clone());
        }
        let asked = Timestamp::now();
        let issued = self
            .accounts
            .create_token_request(
                &self.account.name,
                &PostParams::default(),
                &forward_token_request(),
            )
            .await
            .map_err(|source| ForwardTokenError::Request {
                account: self.account.to_string(),
                source,
            })?;
        let status =
            issued
                .status
                .filter(|s| !s.token.is_empty())
                .ok_or_else(|| ForwardTokenError::NoToken {
                    account: self.account.to_string(),
                })?;
        let refresh = refresh_time(asked, status.expiration_timestamp.0);
        *current = Some((status.token.clone(), refresh));
        Ok(status.token)
    }
}

/// The user a TokenReview made for [`FORWARD_AUDIENCE`] proves, when it is `operator` (the
/// operator's own ServiceAccount) and the review confirms the audience; `None` otherwise.
pub fn accept_forwarded(status: &TokenReviewStatus, operator: &str) -> Option<UserInfo> {
    if status.authenticated != Some(true) {
        return None;
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == FORWARD_AUDIENCE) {
        return None;
    }
    let user = status.user.as_ref()?;
    let username = user.username.as_deref()?;
    (username == operator).then(|| UserInfo {
        username: username.to_owned(),
        uid: user.uid.clone().unwrap_or_default(),
        groups: user.groups.clone().unwrap_or_default(),
        extra: user.extra.clone().unwrap_or_default(),
    })
}

/// The leader's [`TokenReviewer`]: a token that claims [`FORWARD_AUDIENCE`] is reviewed for that
/// audience and accepted only as the operator's own ServiceAccount ([`accept_forwarded`]); any
/// other token is reviewed as usual.
pub struct ForwardTokenReviewer {
    client: Client,
    plain: KubeTokenReviewer,
    operator: Option<String>,
}

impl ForwardTokenReviewer {
    /// A reviewer through `client`; `operator` is the operator's ServiceAccount (unknown: no
    /// forwarded request is accepted).
    pub fn new(client: Client, operator: Option<&ServiceAccountRef>) -> Self {
        Self {
            plain: KubeTokenReviewer::new(client.clone()),
            client,
            operator: operator.map(ServiceAccountRef::username),
        }
    }
}

#[async_trait]
impl TokenReviewer for ForwardTokenReviewer {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        if !claims_audience(token, FORWARD_AUDIENCE) {
            return self.plain.review(token).await;
        }
        let Some(operator) = &self.operator else {
            tracing::debug!("forwarded request refused: this replica's ServiceAccount is unknown");
            return Ok(None);
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![FORWARD_AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        // The error of a create never echoes the request body, so the token is not in it.
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let user = reviewed
            .status
            .as_ref()
            .and_then(|s| accept_forwarded(s, operator));
        if user.is_none() {
            tracing::debug!(
                "forwarded request refused: not the operator's ServiceAccount for {FORWARD_AUDIENCE}"
            );
        }
        Ok(user)
    }
}

/// The adapter's delegated authentication and authorization, with [`ForwardTokenReviewer`] for
/// bearer tokens (the API server's client-authentication settings, SubjectAccessReview).
pub async fn delegated_auth(
    client: Client,
    operator: Option<&ServiceAccountRef>,
) -> Result<DelegatedAuth, AuthError> {
    let config = AuthConfig::load(client.clone()).await?;
    DelegatedAuth::new(
        config,
        std::sync::Arc::new(ForwardTokenReviewer::new(client.clone(), operator)),
        std::sync::Arc::new(KubeAccessReviewer::new(client)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo as KubeUser;
    use serde_json::json;

    fn jwt(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!("{}.{}.c2ln", enc(&json!({"alg": "RS256"})), enc(&claims))
    }

    const OPERATOR: &str = "system:serviceaccount:ebb-system:ebb";

    fn reviewed(authenticated: bool, user: &str, audiences: Option<&[&str]>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: audiences.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
            user: Some(KubeUser {
                username: Some(user.to_owned()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                ..KubeUser::default()
            }),
            error: None,
        }
    }

    #[test]
    fn the_leader_accepts_forwarding_tokens_of_its_own_account_for_its_audience_only() {
        let ok = accept_forwarded(&reviewed(true, OPERATOR, Some(&[FORWARD_AUDIENCE])), OPERATOR);
        assert_eq!(ok.map(|u| u.username).as_deref(), Some(OPERATOR));
        // Another ServiceAccount (a tenant's token for the same audience).
        let tenant = "system:serviceaccount:team-a:default";
        assert_eq!(
            accept_forwarded(&reviewed(true, tenant, Some(&[FORWARD_AUDIENCE])), OPERATOR),
            None
        );
        // The review did not confirm the audience (absent, or another one: an API token).
        assert_eq!(accept_forwarded(&reviewed(true, OPERATOR, None), OPERATOR), None);
        let api = ["https://kubernetes.default.svc"];
        assert_eq!(
            accept_forwarded(&reviewed(true, OPERATOR, Some(&api)), OPERATOR),
            None
        );
        // Not authenticated.
        assert_eq!(
            accept_forwarded(&reviewed(false, OPERATOR, Some(&[FORWARD_AUDIENCE])), OPERATOR),
            None
        );
        assert_eq!(accept_forwarded(&TokenReviewStatus::default(), OPERATOR), None);
    }

    #[test]
    fn the_audience_claim_picks_the_forwarding_review() {
        assert!(claims_audience(
            &jwt(json!({"aud": [FORWARD_AUDIENCE]})),
            FORWARD_AUDIENCE
        ));
        assert!(claims_audience(
            &jwt(json!({"aud": FORWARD_AUDIENCE})),
            FORWARD_AUDIENCE
        ));
        assert!(claims_audience(
            &jwt(json!({"aud": ["x", FORWARD_AUDIENCE]})),
            FORWARD_AUDIENCE
        ));
        assert!(!claims_audience(
            &jwt(json!({"aud": ["https://kubernetes.default.svc"]})),
            FORWARD_AUDIENCE
        ));
        assert!(!claims_audience(&jwt(json!({})), FORWARD_AUDIENCE));
        assert!(!claims_audience("test-admin-token", FORWARD_AUDIENCE));
        assert!(!claims_audience("a.!!!.c", FORWARD_AUDIENCE));
        assert!(!claims_audience("", FORWARD_AUDIENCE));
    }

    #[test]
    fn the_operator_account_comes_from_its_token() {
        let token = jwt(json!({"sub": OPERATOR, "aud": ["https://kubernetes.default.svc"]}));
        let account = ServiceAccountRef::of_token(&token).unwrap();
        assert_eq!(
            (account.namespace.as_str(), account.name.as_str()),
            ("ebb-system", "ebb")
        );
        assert_eq!(account.username(), OPERATOR);
        assert_eq!(ServiceAccountRef::of_token(&jwt(json!({"sub": "admin"}))), None);
        assert_eq!(
            ServiceAccountRef::of_token(&jwt(json!({"sub": "system:serviceaccount:a"}))),
            None
        );
        assert_eq!(
            ServiceAccountRef::of_token(&jwt(json!({"sub": "system:serviceaccount:a:b:c"}))),
            None
        );
        assert_eq!(ServiceAccountRef::of_token("test-admin-token"), None);
    }

    #[test]
    fn forwarding_tokens_are_for_the_forwarding_audience_and_renewed_halfway() {
        let request = forward_token_request();
        assert_eq!(request.spec.audiences, vec![FORWARD_AUDIENCE.to_owned()]);
        assert_eq!(request.spec.expiration_seconds, Some(600));
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            refresh_time(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:10:00Z")),
            t("2026-01-01T00:05:00Z")
        );
        assert_eq!(
            refresh_time(t("2026-01-01T00:00:00Z"), t("2025-12-31T23:00:00Z")),
            t("2026-01-01T00:00:00Z")
        );
    }
}
