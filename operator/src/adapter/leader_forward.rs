//! Metric requests that reach a standby replica are forwarded to the leader's adapter, so the API
//! server gets the same answer from every replica and the sources are polled only by the leader.
//!
//! The leader advertises its adapter's URL in an annotation of the leader Lease; a standby reads
//! it (cached for two seconds) and asks the leader over HTTPS with its own service-account token,
//! which the leader's adapter checks like any caller (TokenReview and SubjectAccessReview).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_metrics_adapter::{MetricValue, ProviderError};
use ebb_scalers::metrics_api::scaler::{Endpoint, MetricsApiClient, parse_quantity};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Annotation on the leader Lease that holds the leader's adapter URL.
pub const ENDPOINT_ANNOTATION: &str = "ebb.dev/metrics-adapter-endpoint";

/// Reads the leader's endpoint and forwards metric requests to it.
pub struct LeaderForwarder {
    leases: Api<Lease>,
    lease_name: String,
    own_url: String,
    token_file: PathBuf,
    http: Arc<MetricsApiClient>,
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
    ) -> Result<Self, ebb_scalers::ScalerError> {
        let http = MetricsApiClient::new(Duration::from_secs(5))?;
        Ok(LeaderForwarder {
            leases: Api::namespaced(client, lease_namespace),
            lease_name: lease_name.to_string(),
            own_url,
            token_file,
            http: Arc::new(http),
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
        // The leader's certificate may be self-signed (one per replica): the channel is encrypted
        // and the leader checks our token; we do not verify its certificate.
        let endpoint = Endpoint::parse(&url, true)
            .and_then(|e| e.with_bearer_token(&token))
            .map_err(|e| unavailable(e.to_string()))?;
        let doc = match self.http.fetch_json(&endpoint).await {
            Ok(doc) => doc,
            // The leader's own "no such metric/ScaledObject" answer stays a 404 here.
            Err(e) if e.to_string().contains("HTTP status 404") => return Err(ProviderError::UnknownMetric),
            Err(e) => return Err(unavailable(format!("leader: {e}"))),
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
}
