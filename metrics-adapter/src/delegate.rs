//! Chaining to another external-metrics adapter: the API server sends every
//! `external.metrics.k8s.io` request to one APIService, so an adapter that does not own a metric
//! can hand the request to a [`Delegate`] (KEDA, prometheus-adapter, another ebb) instead of
//! answering 404, and discovery lists the union of both adapters' resources.
//!
//! The adapter decides *what* goes to the delegate (a metric request whose selector names no
//! ScaledObject, or that the [`MetricProvider`](crate::MetricProvider) answers
//! [`ProviderError::NotMine`](crate::ProviderError::NotMine)); the [`Delegate`] only executes the
//! GET: where the delegate is, how it is trusted and which credentials go with the request are
//! its business. The caller's identity travels as front-proxy headers ([`front_proxy_headers`],
//! header names from the API server's `extension-apiserver-authentication` settings), which a
//! delegate believes only over a client certificate signed by its requestheader CA.

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use hyper::body::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::auth::{AuthConfig, UserInfo};

/// A request carrying this header is never handed to the delegate: a metric the provider does not
/// own is answered 404 with [`NOT_OWNED_HEADER`]. ebb's standby replicas send it when they
/// forward to their leader, so the leader never delegates under the standby's identity; the
/// standby delegates itself, with the caller's identity. Any client may send it: it only loses
/// the delegate's answer.
pub const NO_DELEGATE_HEADER: &str = "x-ebb-no-delegate";

/// Set (`true`) on a 404 that means "not one of this adapter's metrics" (as opposed to a metric
/// of a known ScaledObject that is missing).
pub const NOT_OWNED_HEADER: &str = "x-ebb-not-owned";

/// One request for the delegate.
#[derive(Debug, Clone)]
pub struct DelegateRequest {
    /// Path and query to GET, e.g.
    /// `/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/s0-kafka?labelSelector=...`;
    /// the path's segments were validated, the query is the caller's, unchanged.
    pub path_and_query: String,
    /// Who asked (authenticated and authorized by this adapter).
    pub user: UserInfo,
    /// The caller's identity as front-proxy headers ([`front_proxy_headers`]).
    pub front_proxy: HeaderMap,
}

/// The delegate's answer, passed back to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateAnswer {
    /// Its HTTP status.
    pub status: StatusCode,
    /// Its `Content-Type`, when it sent one.
    pub content_type: Option<HeaderValue>,
    /// Its body (bounded by the executor).
    pub body: Bytes,
}

/// Why the delegate gave no answer (503 to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegateError {
    /// Unreachable, too slow, too large an answer, no credentials. The message is shown to the
    /// caller: it must hold no secret.
    #[error("the delegate metrics adapter is unavailable: {0}")]
    Unavailable(String),
}

/// Executes requests against the delegate adapter (implemented by the operator).
#[async_trait]
pub trait Delegate: Send + Sync + 'static {
    /// GETs `request.path_and_query` from the delegate and returns its answer, whatever its
    /// status; the executor bounds the time and the body.
    async fn get(&self, request: DelegateRequest) -> Result<DelegateAnswer, DelegateError>;
}

/// Extra-attribute keys are percent-encoded in header names (as the API server's front proxy
/// does): everything but letters, digits and `-_.~`.
const EXTRA_KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a user cannot be told to the delegate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The configured header name is not a header name.
    #[error("the front-proxy header name {0:?} is invalid")]
    Name(String),
    /// The user name cannot be sent as a header value.
    #[error("the user name cannot be sent in a header")]
    UserName,
}

/// The front-proxy headers naming `user` to a delegate: the first configured user-name header,
/// the first group header once per group, and for each extra attribute the first prefix plus the
/// percent-encoded key, once per value. Every configured header name is also the one the delegate
/// reads (both follow `extension-apiserver-authentication`). Groups and extra values that cannot
/// be header values are left out (the delegate then sees fewer groups, never other ones).
pub fn front_proxy_headers(user: &UserInfo, config: &AuthConfig) -> Result<HeaderMap, HeaderError> {
    let name = |configured: &[String], default: &str| -> Result<HeaderName, HeaderError> {
        let raw = configured.first().map_or(default, String::as_str);
        HeaderName::try_from(raw.to_ascii_lowercase()).map_err(|_| HeaderError::Name(raw.to_owned()))
    };
    let mut headers = HeaderMap::new();
    let user_header = name(&config.requestheader_username_headers, "X-Remote-User")?;
    let value = HeaderValue::from_str(&user.username).map_err(|_| HeaderError::UserName)?;
    headers.insert(user_header, value);
    let group_header = name(&config.requestheader_group_headers, "X-Remote-Group")?;
    for group in &user.groups {
        if let Ok(value) = HeaderValue::from_str(group) {
            headers.append(group_header.clone(), value);
        }
    }
    let prefix = config
        .requestheader_extra_headers_prefix
        .first()
        .map_or("X-Remote-Extra-", String::as_str);
    for (key, values) in &user.extra {
        let raw = format!("{prefix}{}", utf8_percent_encode(key, EXTRA_KEY));
        let Ok(header) = HeaderName::try_from(raw.to_ascii_lowercase()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(header.clone(), value);
            }
        }
    }
    Ok(headers)
}

/// Discovery's resource list: `own`'s resources, then the delegate's whose names `own` does not
/// list (both serve `external.metrics.k8s.io/v1beta1`).
pub fn union_resources(own: &APIResourceList, theirs: &APIResourceList) -> APIResourceList {
    let mut merged = own.clone();
    for resource in &theirs.resources {
        if !merged.resources.iter().any(|r| r.name == resource.name) {
            merged.resources.push(resource.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::api_resource_list;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_callers_identity_becomes_front_proxy_headers_named_as_configured() {
        let mut user = UserInfo::new(
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            ["system:serviceaccounts", "system:authenticated"],
        );
        user.extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec!["kcm-0".into()],
        );
        user.extra.insert("scopes".into(), vec!["a".into(), "b".into()]);
        let headers = front_proxy_headers(&user, &AuthConfig::default()).unwrap();
        assert_eq!(
            values(&headers, "x-remote-user"),
            ["system:serviceaccount:kube-system:horizontal-pod-autoscaler"]
        );
        assert_eq!(
            values(&headers, "x-remote-group"),
            ["system:serviceaccounts", "system:authenticated"]
        );
        assert_eq!(
            values(&headers, "x-remote-extra-authentication.kubernetes.io%2fpod-name"),
            ["kcm-0"]
        );
        assert_eq!(values(&headers, "x-remote-extra-scopes"), ["a", "b"]);
        assert_eq!(headers.len(), 6);

        // A cluster configured with other names: the first of each is used.
        let config = AuthConfig {
            requestheader_username_headers: vec!["X-Forwarded-User".into(), "X-Remote-User".into()],
            requestheader_group_headers: vec!["X-Forwarded-Groups".into()],
            requestheader_extra_headers_prefix: vec!["X-Forwarded-Extra-".into()],
            ..AuthConfig::default()
        };
        let headers = front_proxy_headers(&user, &config).unwrap();
        assert_eq!(values(&headers, "x-forwarded-user").len(), 1);
        assert!(headers.get("x-remote-user").is_none());
        assert_eq!(values(&headers, "x-forwarded-groups").len(), 2);
        assert_eq!(values(&headers, "x-forwarded-extra-scopes"), ["a", "b"]);
    }

    #[test]
    fn headers_that_cannot_be_sent_are_refused_or_left_out() {
        let user = UserInfo::new("bob\nX-Remote-Group: system:masters", ["dev"]);
        assert_eq!(
            front_proxy_headers(&user, &AuthConfig::default()),
            Err(HeaderError::UserName)
        );
        let user = UserInfo::new("bob", ["dev", "evil\r\nx: y"]);
        let headers = front_proxy_headers(&user, &AuthConfig::default()).unwrap();
        assert_eq!(values(&headers, "x-remote-group"), ["dev"]);
        let config = AuthConfig {
            requestheader_username_headers: vec!["bad header".into()],
            ..AuthConfig::default()
        };
        assert!(matches!(
            front_proxy_headers(&UserInfo::new("bob", ["dev"]), &config),
            Err(HeaderError::Name(_))
        ));
    }

    #[test]
    fn discovery_lists_both_adapters_resources_once() {
        let own = api_resource_list();
        let resource = |name: &str| APIResource {
            name: name.into(),
            namespaced: true,
            kind: "ExternalMetricValueList".into(),
            verbs: vec!["get".into()],
            ..APIResource::default()
        };
        let theirs = APIResourceList {
            group_version: own.group_version.clone(),
            resources: vec![resource("externalmetrics"), resource("queue_depth")],
        };
        let merged = union_resources(&own, &theirs);
        let names: Vec<_> = merged.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["externalmetrics", "queue_depth"]);
        assert_eq!(union_resources(&own, &own), own);
    }
}
