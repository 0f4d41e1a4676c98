//! The chain to a delegate adapter: which requests may go there, the forward of a metric
//! request, and discovery's union (the delegate's list cached briefly).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;

use super::{ApiError, Body, json_response};
use crate::auth::{DelegatedAuth, UserInfo};
use crate::delegate::{
    Delegate, DelegateAnswer, DelegateRequest, NO_DELEGATE_HEADER, front_proxy_headers, union_resources,
};
use crate::types::{self, GROUP_VERSION};

/// How long the delegate's resource list is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(30);
/// How long a failed read of the delegate's resource list is remembered (its own list is served
/// meanwhile).
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// The delegate and what is cached of it.
pub(super) struct Chain {
    delegate: Arc<dyn Delegate>,
    /// When the delegate's resource list was last read, and what it was (`None`: it failed).
    discovery: Mutex<Option<(Instant, Option<APIResourceList>)>>,
}

/// Whether a request may be handed to the delegate: not when it says so ([`NO_DELEGATE_HEADER`]).
pub(super) fn delegates(headers: &HeaderMap) -> bool {
    !headers.contains_key(NO_DELEGATE_HEADER)
}

/// The path of a metric request (its segments already validated) with the caller's query.
pub(super) fn metric_path(namespace: &str, metric: &str, query: &str) -> String {
    let mut path = format!("/apis/{GROUP_VERSION}/namespaces/{namespace}/{metric}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    path
}

impl Chain {
    pub(super) fn new(delegate: Arc<dyn Delegate>) -> Self {
        Self {
            delegate,
            discovery: Mutex::new(None),
        }
    }

    /// GETs `path_and_query` from the delegate as `user`.
    async fn get(
        &self,
        auth: &DelegatedAuth,
        user: &UserInfo,
        path_and_query: String,
    ) -> Result<DelegateAnswer, ApiError> {
        let front_proxy = front_proxy_headers(user, &auth.config()).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("cannot forward to the delegate metrics adapter: {e}"),
            )
        })?;
        let request = DelegateRequest {
            path_and_query,
            user: user.clone(),
            front_proxy,
        };
        self.delegate.get(request).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            )
        })
    }

    /// Forwards a metric request this adapter does not own; the delegate's status and body are
    /// the answer (a delegate that cannot be asked is a 503).
    pub(super) async fn forward_metric(
        &self,
        auth: &DelegatedAuth,
        user: &UserInfo,
        path_and_query: String,
    ) -> Result<Response<Body>, ApiError> {
        let answer = self.get(auth, user, path_and_query).await.inspect_err(|e| {
            tracing::debug!(message = %e.message, "metric request not forwarded to the delegate");
        })?;
        let mut response = Response::new(Full::new(answer.body));
        *response.status_mut() = answer.status;
        let content_type = answer
            .content_type
            .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        response.headers_mut().insert(CONTENT_TYPE, content_type);
        Ok(response)
    }

    /// The resource list: this adapter's and the delegate's (read as `user` when not cached; a
    /// delegate that fails is left out, and logged).
    pub(super) async fn resources(&self, auth: &DelegatedAuth, user: &UserInfo) -> Response<Body> {
        let own = types::api_resource_list();
        let cached = self
            .discovery
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|(at, list)| {
                at.elapsed()
                    < if list.is_some() {
                        DISCOVERY_TTL
                    } else {
                        DISCOVERY_RETRY
                    }
            });
        let theirs = match cached {
            Some((_, list)) => list,
            None => {
                let list = self.read_resources(auth, user).await;
                *self.discovery.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), list.clone()));
                list
            }
        };
        let list = theirs.map_or_else(|| own.clone(), |theirs| union_resources(&own, &theirs));
        match serde_json::to_vec(&list) {
            Ok(body) => json_response(StatusCode::OK, Bytes::from(body)),
            Err(e) => ApiError::internal(format!("serializing: {e}")).response(),
        }
    }

    async fn read_resources(&self, auth: &DelegatedAuth, user: &UserInfo) -> Option<APIResourceList> {
        let answer = match self.get(auth, user, format!("/apis/{GROUP_VERSION}")).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(message = %e.message, "discovery lists this adapter's resources only");
                return None;
            }
        };
        if answer.status != StatusCode::OK {
            tracing::warn!(
                status = %answer.status,
                "the delegate metrics adapter refused its resource list; discovery lists this adapter's only"
            );
            return None;
        }
        match serde_json::from_slice::<APIResourceList>(&answer.body) {
            Ok(list) => Some(list),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the delegate metrics adapter's resource list is not an APIResourceList; \
                     discovery lists this adapter's only"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standbys_forwarding_to_their_leader_are_never_delegated() {
        assert!(delegates(&HeaderMap::new()));
        let mut headers = HeaderMap::new();
        headers.insert(NO_DELEGATE_HEADER, HeaderValue::from_static("1"));
        assert!(!delegates(&headers));
    }

    #[test]
    fn the_forwarded_path_keeps_the_callers_query() {
        assert_eq!(
            metric_path("team-a", "s0-rabbitmq-orders", "labelSelector=app%3Dx"),
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/s0-rabbitmq-orders?labelSelector=app%3Dx"
        );
        assert_eq!(
            metric_path("team-a", "queue_depth", ""),
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/queue_depth"
        );
    }
}
