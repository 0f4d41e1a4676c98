//! Metric requests that reach a standby replica are forwarded to the leader's adapter, so the API
//! server gets the same answer from every replica and the sources are polled only by the leader.
//!
//! The leader advertises its adapter's URL in an annotation of the leader Lease; a standby reads
//! it (cached for two seconds) and asks the leader over HTTPS with its own service-account token,
//! which the leader's adapter checks like any caller (TokenReview and SubjectAccessReview).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_metrics_adapter::{MetricValue, ProviderError};
use ebb_scalers::ScalerError;
use ebb_scalers::common::http::{HttpsClient, json_get, pooled_client, read_json_body, send};
use ebb_scalers::common::quantity::parse_quantity;
use ebb_scalers::common::tls::{TlsError, TlsSettings};
use ebb_scalers::params::mask_userinfo;
use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Annotation on the leader Lease that holds the leader's adapter URL.
pub const ENDPOINT_ANNOTATION: &str = "ebb.dev/metrics-adapter-endpoint";

/// How long one forwarded request may take (connect, answer and body).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from the leader.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Reads the leader's endpoint and forwards metric requests to it.
pub struct LeaderForwarder {
    leases: Api<Lease>,
    lease_name: String,
    own_url: String,
    token_file: PathBuf,
    http: HttpsClient,
    cached: Mutex<Option<(Instant, Option<String>)>>,
}

impl LeaderForwarder {
    /// A forwarder reading the Lease `lease_namespace/lease_name`; `own_url` is this replica's
    /// advertised URL (never forwarded to), `token_file` the bearer token it presents.
    pub fn new(
        client: Client,
        lease_namespace: &str,
        lease_name: &str,
        own_url: String,
        token_file: PathBuf,
    ) -> Result<Self, TlsError> {
        // The leader's certificate may be self-signed (one per replica): the channel is encrypted
        // and the leader checks our token; we do not verify its certificate.
        let tls = TlsSettings::verifying(true).client_config()?;
        let http = pooled_client(tls, Some(FORWARD_TIMEOUT));
        Ok(LeaderForwarder {
            leases: Api::namespaced(client, lease_namespace),
            lease_name: lease_name.to_string(),
            own_url,
            token_file,
            http,
            cached: Mutex::new(None),
        })
    }

    /// Advertises this replica's adapter URL on the Lease (called when it starts leading).
    pub async fn advertise(&self) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"annotations": {ENDPOINT_ANNOTATION: self.own_url}}});
        self.leases
            .patch(&self.lease_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    async fn leader_url(&self) -> Option<String> {
        if let Some((at, url)) = self.cached.lock().unwrap_or_else(PoisonError::into_inner).clone()
            && at.elapsed() < Duration::from_secs(2)
        {
            return url;
        }
        let url = self
            .leases
            .get_opt(&self.lease_name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.metadata.annotations?.get(ENDPOINT_ANNOTATION).cloned());
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), url.clone()));
        url
    }

    /// Asks the leader for a metric.
    pub async fn forward(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError> {
        let unavailable = |m: String| ProviderError::Unavailable(m);
        let Some(base) = self.leader_url().await else {
            return Err(unavailable(
                "standby replica: no leader has advertised its metrics adapter yet".into(),
            ));
        };
        if base == self.own_url {
            return Err(unavailable(
                "standby replica: the Lease still names this replica".into(),
            ));
        }
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            unavailable(format!(
                "standby replica: cannot read {}: {e}",
                self.token_file.display()
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
            return Err(Fetch::Failed(ScalerError::unauthorized(
                &shown,
                format!("HTTP status {status}"),
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

/// Why a GET from the leader gave no document.
enum Fetch {
    /// The leader answered 404: it knows no such metric or ScaledObject.
    NotFound,
    /// Any other failure.
    Failed(ScalerError),
}
