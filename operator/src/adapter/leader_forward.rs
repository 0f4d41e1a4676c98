//! Metric requests that reach a standby replica are forwarded to the leader's adapter, so the API
//! server gets the same answer from every replica and the sources are polled only by the leader.
//!
//! The leader advertises its adapter's URL (and its identity) in annotations of the leader Lease;
//! a standby reads the Lease (cached for two seconds, also for readiness) and asks the leader over
//! HTTPS with its own service-account token, which the leader's adapter checks like any caller
//! (TokenReview and SubjectAccessReview: the operator's ServiceAccount needs `list` on
//! `external.metrics.k8s.io`). The standby verifies the leader's certificate as
//! [`LeaderTrust`] says: against the adapter's CA, for the Service's name.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_metrics_adapter::{MetricValue, ProviderError};
use ebb_scalers::ScalerError;
use ebb_scalers::common::http::{HttpsClient, json_get, pooled_client, read_json_body, send};
use ebb_scalers::common::quantity::parse_quantity;
use ebb_scalers::params::mask_userinfo;
use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::adapter::certs::CertError;
use crate::adapter::certs::verify::LeaderTrust;

/// Annotation on the leader Lease that holds the leader's adapter URL.
pub const ENDPOINT_ANNOTATION: &str = "ebb.dev/metrics-adapter-endpoint";

/// Annotation on the leader Lease naming the identity that advertised [`ENDPOINT_ANNOTATION`].
pub const ENDPOINT_IDENTITY_ANNOTATION: &str = "ebb.dev/metrics-adapter-identity";

/// How long a read of the Lease is reused.
const LEASE_CACHE: Duration = Duration::from_secs(2);

/// The largest error answer read from the leader.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How long one forwarded request may take (connect, answer and body).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from the leader.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// What a standby needs to know of the leader Lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`.
    pub renewed: Option<Timestamp>,
    /// `spec.leaseDurationSeconds`.
    pub duration_secs: Option<i32>,
    /// The advertised adapter URL.
    pub endpoint: Option<String>,
    /// Who advertised it (absent when advertised by an older ebb).
    pub endpoint_identity: Option<String>,
}

impl LeaseView {
    /// The view of a Lease.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        let annotation = |key: &str| lease.metadata.annotations.as_ref()?.get(key).cloned();
        Self {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            duration_secs: spec.and_then(|s| s.lease_duration_seconds),
            endpoint: annotation(ENDPOINT_ANNOTATION),
            endpoint_identity: annotation(ENDPOINT_IDENTITY_ANNOTATION),
        }
    }

    /// The holder, when the Lease is held and not expired at `now`.
    pub fn live_holder(&self, now: Timestamp) -> Option<&str> {
        let holder = self.holder.as_deref().filter(|h| !h.is_empty())?;
        let renewed = self.renewed?;
        let duration = jiff::SignedDuration::from_secs(i64::from(self.duration_secs?));
        let expires = renewed.checked_add(duration).ok()?;
        (now < expires).then_some(holder)
    }

    /// The advertised URL, unless it was advertised by someone other than the holder (a new leader
    /// that has not advertised yet).
    pub fn leader_endpoint(&self) -> Option<&str> {
        let endpoint = self.endpoint.as_deref()?;
        match (&self.endpoint_identity, &self.holder) {
            (Some(by), Some(holder)) if by != holder => None,
            _ => Some(endpoint),
        }
    }
}

/// Settings of a [`LeaderForwarder`].
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// This replica's advertised URL (never forwarded to).
    pub own_url: String,
    /// The bearer token this replica presents to the leader.
    pub token_file: PathBuf,
    /// Owner reference put on the Lease when advertising (same namespace only).
    pub owner: Option<OwnerReference>,
}

/// Reads the leader's endpoint and forwards metric requests to it.
pub struct LeaderForwarder {
    leases: Api<Lease>,
    options: ForwarderOptions,
    http: HttpsClient,
    cached: Mutex<Option<(Instant, Option<LeaseView>)>>,
}

impl LeaderForwarder {
    /// A forwarder reading the Lease of `options`, checking the leader's certificate with `trust`.
    pub fn new(
        client: Client,
        options: ForwarderOptions,
        trust: &Arc<LeaderTrust>,
    ) -> Result<Self, CertError> {
        let http = pooled_client(trust.client_config()?, Some(FORWARD_TIMEOUT));
        Ok(LeaderForwarder {
            leases: Api::namespaced(client, &options.lease_namespace),
            options,
            http,
            cached: Mutex::new(None),
        })
    }

    /// This replica's advertised URL.
    pub fn own_url(&self) -> &str {
        &self.options.own_url
    }

    /// Advertises this replica's adapter URL and identity on the Lease, and sets the owner
    /// reference (called when it starts leading).
    pub async fn advertise(&self) -> Result<(), kube::Error> {
        let mut patch = json!({"metadata": {"annotations": {
            ENDPOINT_ANNOTATION: self.options.own_url,
            ENDPOINT_IDENTITY_ANNOTATION: self.options.identity,
        }}});
        if let Some(owner) = &self.options.owner {
            patch["metadata"]["ownerReferences"] = json!([owner]);
        }
        self.leases
            .patch(
                &self.options.lease_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// The leader Lease as read at most two seconds ago (`None`: absent or unreadable).
    pub async fn lease_view(&self) -> Option<LeaseView> {
        if let Some((at, view)) = self.cached.lock().unwrap_or_else(PoisonError::into_inner).clone()
            && at.elapsed() < LEASE_CACHE
        {
            return view;
        }
        let view = match self.leases.get_opt(&self.options.lease_name).await {
            Ok(lease) => lease.as_ref().map(LeaseView::of),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the leader Lease");
                None
            }
        };
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), view.clone()));
        view
    }

    /// Asks the leader for a metric.
    pub async fn forward(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError> {
        let unavailable = |m: String| ProviderError::Unavailable(m);
        let view = self.lease_view().await;
        let Some(base) = view
            .as_ref()
            .and_then(LeaseView::leader_endpoint)
            .map(str::to_owned)
        else {
            return Err(unavailable(
                "standby replica: no leader has advertised its metrics adapter yet".into(),
            ));
        };
        if base == self.options.own_url {
            return Err(unavailable(
                "standby replica: the Lease still names this replica".into(),
            ));
        }
        let token = std::fs::read_to_string(&self.options.token_file).map_err(|e| {
            unavailable(format!(
                "standby replica: cannot read {}: {e}",
                self.options.token_file.display()
            ))
        })?;
        let url = format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector=scaledobject.ebb.dev%2Fname%3D{scaled_object}",
            base.trim_end_matches('/')
        );
        let doc = match tokio::time::timeout(FORWARD_TIMEOUT, self.get(&url, &token)).await {
            Ok(Ok(doc)) => doc,
            // The leader's own "no such metric/ScaledObject" answer stays a 404 here.
            Ok(Err(Fetch::NotFound)) => return Err(ProviderError::UnknownMetric),
            Ok(Err(Fetch::Failed(e))) => return Err(unavailable(format!("leader: {e}"))),
            Err(_elapsed) => {
                let e = ScalerError::timeout(&mask_userinfo(&url), FORWARD_TIMEOUT);
                return Err(unavailable(format!("leader: {e}")));
            }
        };
        let item = &doc["items"][0];
        let value = item["value"].as_str().and_then(parse_quantity);
        let Some(value) = value else {
            return Err(match doc["reason"].as_str() {
                Some("NotFound") => ProviderError::UnknownMetric,
                _ => unavailable("leader: no metric value in its answer".into()),
            });
        };
        let timestamp = item["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        Ok(MetricValue { value, timestamp })
    }

    /// GETs `url` from the leader with `token` as bearer token.
    async fn get(&self, url: &str, token: &str) -> Result<serde_json::Value, Fetch> {
        let shown = mask_userinfo(url);
        let uri: Uri = url.parse().map_err(|e| {
            Fetch::Failed(ScalerError::InvalidConfig(format!(
                "leader URL {shown} is not a valid request URI ({e})"
            )))
        })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
            Fetch::Failed(ScalerError::InvalidConfig(
                "bearer token is not a valid header value".into(),
            ))
        })?;
        auth.set_sensitive(true);
        let request = json_get(&uri, Some(&auth), &shown).map_err(Fetch::Failed)?;
        let response = send(&self.http, request, &shown, None)
            .await
            .map_err(Fetch::Failed)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Fetch::NotFound);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let said = read_json_body(response.into_body(), MAX_ERROR_BYTES, &shown)
                .await
                .ok()
                .and_then(|doc| doc["message"].as_str().map(str::to_owned));
            return Err(Fetch::Failed(ScalerError::unauthorized(
                &shown,
                refusal(status, said.as_deref(), &self.options.token_file),
            )));
        }
        if !status.is_success() {
            return Err(Fetch::Failed(ScalerError::bad_response(
                &shown,
                format!("HTTP status {status}, expected 2xx"),
            )));
        }
        read_json_body(response.into_body(), MAX_ANSWER_BYTES, &shown)
            .await
            .map_err(Fetch::Failed)
    }
}

/// What to tell the operator when the leader refuses this replica: which permission is missing.
fn refusal(status: StatusCode, leader_said: Option<&str>, token_file: &Path) -> String {
    let mut text = if status == StatusCode::UNAUTHORIZED {
        format!(
            "HTTP status {status}: the leader could not authenticate this replica's service-account \
             token (read from {}); the leader's TokenReview needs `create` on \
             tokenreviews.authentication.k8s.io, and the token must be current",
            token_file.display()
        )
    } else {
        format!(
            "HTTP status {status}: the leader denied this replica; the operator's ServiceAccount needs \
             `list` on any resource of API group external.metrics.k8s.io (a ClusterRole bound to it) \
             and the leader's SubjectAccessReview needs `create` on \
             subjectaccessreviews.authorization.k8s.io"
        )
    };
    if let Some(said) = leader_said.filter(|s| !s.is_empty()) {
        let said: String = said.chars().take(300).collect();
        text.push_str(&format!(" (the leader said: {said})"));
    }
    text
}

/// Why a GET from the leader gave no document.
enum Fetch {
    /// The leader answered 404: it knows no such metric or ScaledObject.
    NotFound,
    /// Any other failure.
    Failed(ScalerError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, annotations: &[(&str, &str)]) -> Lease {
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "ebb-operator", "annotations": annotations},
            "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15}
        }))
        .unwrap()
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    #[test]
    fn a_lease_is_live_until_renew_time_plus_duration() {
        let view = LeaseView::of(&lease(Some("a"), "2026-01-01T00:00:00.000000Z", &[]));
        assert_eq!(view.live_holder(at("2026-01-01T00:00:14Z")), Some("a"));
        assert_eq!(view.live_holder(at("2026-01-01T00:00:15Z")), None);
        let released = LeaseView::of(&lease(None, "2026-01-01T00:00:00.000000Z", &[]));
        assert_eq!(released.live_holder(at("2026-01-01T00:00:01Z")), None);
        assert_eq!(LeaseView::default().live_holder(at("2026-01-01T00:00:01Z")), None);
    }

    #[test]
    fn an_endpoint_advertised_by_a_former_leader_is_ignored() {
        let url = "https://10.0.0.1:6443";
        let by = |who: &str, holder: &str| {
            LeaseView::of(&lease(
                Some(holder),
                "2026-01-01T00:00:00.000000Z",
                &[(ENDPOINT_ANNOTATION, url), (ENDPOINT_IDENTITY_ANNOTATION, who)],
            ))
        };
        assert_eq!(by("a", "a").leader_endpoint(), Some(url));
        assert_eq!(by("a", "b").leader_endpoint(), None);
        // Advertised by an ebb that did not name itself: trusted as before.
        let old = LeaseView::of(&lease(
            Some("b"),
            "2026-01-01T00:00:00.000000Z",
            &[(ENDPOINT_ANNOTATION, url)],
        ));
        assert_eq!(old.leader_endpoint(), Some(url));
    }

    #[test]
    fn refusals_name_the_missing_permission_and_never_the_token() {
        let file = Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token");
        let denied = refusal(
            StatusCode::FORBIDDEN,
            Some("User \"system:serviceaccount:ebb-system:ebb\" cannot list resource"),
            file,
        );
        assert!(
            denied.contains("`list` on any resource of API group external.metrics.k8s.io"),
            "{denied}"
        );
        assert!(denied.contains("the leader said: User"), "{denied}");
        let unauthenticated = refusal(StatusCode::UNAUTHORIZED, None, file);
        assert!(
            unauthenticated.contains("tokenreviews.authentication.k8s.io"),
            "{unauthenticated}"
        );
        assert!(
            unauthenticated.contains("serviceaccount/token"),
            "{unauthenticated}"
        );
    }
}
