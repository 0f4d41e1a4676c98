//! Metric requests that reach a standby replica are forwarded to the leader's adapter, so the API
//! server gets the same answer from every replica and the sources are polled only by the leader.
//!
//! Where the leader is comes from nothing anyone but the operator controls: the Lease's
//! `holderIdentity` is the leader's pod name (the chart sets the identity to `POD_NAME`), and the
//! address is that Pod's IP, read in the operator's own namespace (a Pod running as the
//! operator's ServiceAccount), at this replica's own adapter port ([`leader_holder`],
//! [`leader_address`]). Nothing on the Lease but the holder is read: annotations (earlier ebb
//! versions advertised a URL there) are ignored. The standby verifies the leader's certificate as
//! [`LeaderTrust`] says (against the adapter's CA, for the Service's name) and asks with a
//! short-lived token for the forwarding audience only ([`forward_token`](super::forward_token)),
//! which the leader accepts only as the operator's own ServiceAccount, then authorises like any
//! caller (SubjectAccessReview: the operator's ServiceAccount needs `list` on
//! `external.metrics.k8s.io`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_metrics_adapter::{
    MetricValue, NO_DELEGATE_HEADER, NOT_OWNED_HEADER, ProviderError, SCALED_OBJECT_LABEL,
};
use ebb_scalers::ScalerError;
use ebb_scalers::common::http::{HttpsClient, json_get, pooled_client, read_json_body, send};
use ebb_scalers::common::quantity::parse_quantity;
use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::adapter::certs::CertError;
use crate::adapter::certs::verify::LeaderTrust;
use crate::adapter::forward_token::{FORWARD_AUDIENCE, ForwardTokenError, ForwardTokens, ServiceAccountRef};

/// How long where the leader is (Lease and Pod) is reused.
const LEADER_CACHE: Duration = Duration::from_secs(2);

/// The largest error answer read from the leader.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How long one forwarded request may take (connect, answer and body).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from the leader.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// What a standby reads of the leader Lease: the holder and the term, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`.
    pub renewed: Option<Timestamp>,
    /// `spec.leaseDurationSeconds`.
    pub duration_secs: Option<i32>,
}

impl LeaseView {
    /// The view of a Lease.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renewed: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            duration_secs: spec.and_then(|s| s.lease_duration_seconds),
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
}

/// What a standby reads of the holder's Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// `status.podIP`, when set and an IP address.
    pub ip: Option<IpAddr>,
    /// `spec.serviceAccountName`.
    pub service_account: Option<String>,
}

impl PodView {
    /// The view of a Pod.
    pub fn of(pod: &Pod) -> Self {
        Self {
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            service_account: pod.spec.as_ref().and_then(|s| s.service_account_name.clone()),
        }
    }
}

/// Why a standby has no leader to forward to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoLeader {
    /// The Lease is absent or unreadable.
    #[error("the leader Lease is absent or unreadable")]
    NoLease,
    /// Nobody holds the Lease, or the holder's term has run out.
    #[error("no live leader holds the Lease")]
    NotHeld,
    /// The Lease names this replica.
    #[error("the Lease still names this replica")]
    ThisReplica,
    /// The holder is no pod name.
    #[error("the Lease holder is not a pod name")]
    NotAPodName,
    /// This replica does not know its ServiceAccount (no service-account token).
    #[error("this replica's ServiceAccount is unknown (no service-account token)")]
    NoServiceAccount,
    /// The holder's Pod cannot be read.
    #[error("the leader's Pod cannot be read (the operator needs `get` on pods in its namespace)")]
    PodUnreadable,
    /// No Pod of that name in the operator's namespace.
    #[error("no Pod named like the Lease holder in the operator's namespace")]
    NoPod,
    /// The Pod has no IP yet.
    #[error("the leader's Pod has no IP address")]
    NoPodIp,
    /// The Pod runs as another ServiceAccount: not an ebb replica.
    #[error("the Pod named like the Lease holder does not run as the operator's ServiceAccount")]
    ForeignPod,
}

/// The live holder of the Lease, when it is another replica and a possible pod name.
pub fn leader_holder<'a>(
    lease: Option<&'a LeaseView>,
    identity: &str,
    now: Timestamp,
) -> Result<&'a str, NoLeader> {
    let holder = lease
        .ok_or(NoLeader::NoLease)?
        .live_holder(now)
        .ok_or(NoLeader::NotHeld)?;
    if holder == identity {
        return Err(NoLeader::ThisReplica);
    }
    if !is_pod_name(holder) {
        return Err(NoLeader::NotAPodName);
    }
    Ok(holder)
}

/// Whether `name` can be a Pod's name (a DNS-1123 subdomain), so it names nothing but a Pod.
fn is_pod_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    bytes.len() <= 253
        && alnum(bytes.first())
        && alnum(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
}

/// Where the leader's adapter is: the holder's Pod IP at this replica's own adapter `port`,
/// provided the Pod runs as the operator's ServiceAccount (`service_account`).
pub fn leader_address(
    pod: Option<&PodView>,
    service_account: &str,
    port: u16,
) -> Result<SocketAddr, NoLeader> {
    let pod = pod.ok_or(NoLeader::NoPod)?;
    if pod.service_account.as_deref() != Some(service_account) {
        return Err(NoLeader::ForeignPod);
    }
    let ip = pod.ip.ok_or(NoLeader::NoPodIp)?;
    Ok(SocketAddr::new(ip, port))
}

/// Every byte but letters, digits, `-` and `_` is percent-encoded, `.` included (so no segment
/// is ever `.` or `..`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// The leader's URL of a metric, every caller-given part percent-encoded.
pub fn forward_url(leader: SocketAddr, namespace: &str, metric: &str, scaled_object: &str) -> String {
    let selector = format!("{SCALED_OBJECT_LABEL}={scaled_object}");
    format!(
        "https://{leader}/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{}?labelSelector={}",
        utf8_percent_encode(namespace, SEGMENT),
        utf8_percent_encode(metric, SEGMENT),
        utf8_percent_encode(&selector, SEGMENT),
    )
}

/// Settings of a [`LeaderForwarder`].
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// The operator's namespace, where the leader's Pod is looked up.
    pub pod_namespace: String,
    /// This replica's identity in the Lease (its pod name in a pod).
    pub identity: String,
    /// This replica's adapter port, which every replica serves on.
    pub adapter_port: u16,
    /// The service-account token file naming the ServiceAccount this replica runs as.
    pub token_file: std::path::PathBuf,
}

/// Finds the leader and forwards metric requests to it.
pub struct LeaderForwarder {
    leases: Api<Lease>,
    pods: Api<Pod>,
    options: ForwarderOptions,
    http: HttpsClient,
    account: Result<ServiceAccountRef, Arc<ForwardTokenError>>,
    tokens: Option<ForwardTokens>,
    cached: Mutex<Option<(Instant, Result<SocketAddr, NoLeader>)>>,
}

impl LeaderForwarder {
    /// A forwarder reading the Lease of `options`, checking the leader's certificate with `trust`.
    pub fn new(
        client: Client,
        options: ForwarderOptions,
        trust: &Arc<LeaderTrust>,
    ) -> Result<Self, CertError> {
        let http = pooled_client(trust.client_config()?, Some(FORWARD_TIMEOUT));
        let account = ServiceAccountRef::of_token_file(&options.token_file).map_err(Arc::new);
        match &account {
            Ok(account) => tracing::info!(%account, "standby forwarding as this ServiceAccount"),
            Err(e) => tracing::warn!(
                error = %e,
                "a standby cannot forward metric requests, and the leader accepts no forwarded ones"
            ),
        }
        let tokens = account
            .as_ref()
            .ok()
            .map(|a| ForwardTokens::new(client.clone(), a.clone()));
        Ok(LeaderForwarder {
            leases: Api::namespaced(client.clone(), &options.lease_namespace),
            pods: Api::namespaced(client, &options.pod_namespace),
            options,
            http,
            account,
            tokens,
            cached: Mutex::new(None),
        })
    }

    /// The ServiceAccount this replica runs as, when known: the only one the leader accepts
    /// forwarded requests from.
    pub fn service_account(&self) -> Option<&ServiceAccountRef> {
        self.account.as_ref().ok()
    }

    /// Where the leader's adapter is, as found at most two seconds ago.
    pub async fn leader(&self) -> Result<SocketAddr, NoLeader> {
        if let Some((at, found)) = *self.cached.lock().unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < LEADER_CACHE
        {
            return found;
        }
        let found = self.find_leader().await;
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), found));
        found
    }

    /// Reads the Lease, then the holder's Pod.
    async fn find_leader(&self) -> Result<SocketAddr, NoLeader> {
        let lease = match self.leases.get_opt(&self.options.lease_name).await {
            Ok(lease) => lease.as_ref().map(LeaseView::of),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the leader Lease");
                None
            }
        };
        let holder = leader_holder(lease.as_ref(), &self.options.identity, Timestamp::now())?;
        let account = self.service_account().ok_or(NoLeader::NoServiceAccount)?;
        let pod = self.pods.get_opt(holder).await.map_err(|e| {
            tracing::debug!(error = %e, pod = %holder, "cannot read the leader's Pod");
            NoLeader::PodUnreadable
        })?;
        leader_address(
            pod.as_ref().map(PodView::of).as_ref(),
            &account.name,
            self.options.adapter_port,
        )
    }

    /// Asks the leader for a metric.
    pub async fn forward(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError> {
        let unavailable = |m: String| ProviderError::Unavailable(m);
        let leader = self
            .leader()
            .await
            .map_err(|e| unavailable(format!("standby replica: {e}")))?;
        let token = match (&self.tokens, &self.account) {
            (Some(tokens), _) => tokens.token().await.map_err(|e| {
                tracing::warn!(error = %e, "no forwarding token");
                unavailable(format!("standby replica: {e}"))
            })?,
            (None, Err(e)) => return Err(unavailable(format!("standby replica: {e}"))),
            (None, Ok(_)) => return Err(unavailable("standby replica: no forwarding token".into())),
        };
        let url = forward_url(leader, namespace, metric, scaled_object);
        let doc = match tokio::time::timeout(FORWARD_TIMEOUT, self.get(&url, &token)).await {
            Ok(Ok(doc)) => doc,
            // Not the leader's metric: this replica hands it to the delegate, if any, with the
            // caller's identity (the leader was asked not to, see `get`).
            Ok(Err(Fetch::NotFound { not_owned: true })) => return Err(ProviderError::NotMine),
            // The leader's own "no such metric/ScaledObject" answer stays a 404 here.
            Ok(Err(Fetch::NotFound { not_owned: false })) => return Err(ProviderError::UnknownMetric),
            Ok(Err(Fetch::Failed(e))) => return Err(unavailable(format!("leader: {e}"))),
            Err(_elapsed) => {
                let e = ScalerError::timeout(&url, FORWARD_TIMEOUT);
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

    /// GETs `url` from the leader with `token` as bearer token, asking it not to delegate (it
    /// would do so as this replica's ServiceAccount, not as the caller).
    async fn get(&self, url: &str, token: &str) -> Result<serde_json::Value, Fetch> {
        let uri: Uri = url.parse().map_err(|e| {
            Fetch::Failed(ScalerError::InvalidConfig(format!(
                "leader URL {url} is not a valid request URI ({e})"
            )))
        })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
            Fetch::Failed(ScalerError::InvalidConfig(
                "forwarding token is not a valid header value".into(),
            ))
        })?;
        auth.set_sensitive(true);
        let mut request = json_get(&uri, Some(&auth), url).map_err(Fetch::Failed)?;
        request
            .headers_mut()
            .insert(NO_DELEGATE_HEADER, HeaderValue::from_static("1"));
        let response = send(&self.http, request, url, None)
            .await
            .map_err(Fetch::Failed)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let not_owned = response
                .headers()
                .get(NOT_OWNED_HEADER)
                .is_some_and(|v| v == "true");
            return Err(Fetch::NotFound { not_owned });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let said = read_json_body(response.into_body(), MAX_ERROR_BYTES, url)
                .await
                .ok()
                .and_then(|doc| doc["message"].as_str().map(str::to_owned));
            return Err(Fetch::Failed(ScalerError::unauthorized(
                url,
                refusal(status, said.as_deref(), self.service_account()),
            )));
        }
        if !status.is_success() {
            return Err(Fetch::Failed(ScalerError::bad_response(
                url,
                format!("HTTP status {status}, expected 2xx"),
            )));
        }
        read_json_body(response.into_body(), MAX_ANSWER_BYTES, url)
            .await
            .map_err(Fetch::Failed)
    }
}

/// What to tell the operator when the leader refuses this replica: which permission is missing.
fn refusal(status: StatusCode, leader_said: Option<&str>, account: Option<&ServiceAccountRef>) -> String {
    let account = account.map_or_else(|| "?".to_owned(), ToString::to_string);
    let mut text = if status == StatusCode::UNAUTHORIZED {
        format!(
            "HTTP status {status}: the leader did not accept this replica's forwarding token \
             (ServiceAccount {account}, audience {FORWARD_AUDIENCE}); every replica must run as the \
             same ServiceAccount, and the leader's TokenReview needs `create` on \
             tokenreviews.authentication.k8s.io"
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
    /// The leader answered 404: it knows no such metric or ScaledObject (`not_owned`: it is none
    /// of the leader's metrics, [`NOT_OWNED_HEADER`]).
    NotFound {
        /// The leader said the metric is not its own.
        not_owned: bool,
    },
    /// Any other failure.
    Failed(ScalerError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn pod(ip: Option<&str>, service_account: &str) -> PodView {
        PodView::of(
            &serde_json::from_value(json!({
                "metadata": {"name": "ebb-7d9f-abcde", "namespace": "ebb-system"},
                "spec": {"serviceAccountName": service_account, "containers": []},
                "status": {"podIP": ip}
            }))
            .unwrap(),
        )
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    const RENEWED: &str = "2026-01-01T00:00:00.000000Z";
    const NOW: &str = "2026-01-01T00:00:05Z";

    #[test]
    fn a_lease_is_live_until_renew_time_plus_duration() {
        let view = LeaseView::of(&lease(Some("a"), RENEWED, &[]));
        assert_eq!(view.live_holder(at("2026-01-01T00:00:14Z")), Some("a"));
        assert_eq!(view.live_holder(at("2026-01-01T00:00:15Z")), None);
        let released = LeaseView::of(&lease(None, RENEWED, &[]));
        assert_eq!(released.live_holder(at("2026-01-01T00:00:01Z")), None);
        assert_eq!(LeaseView::default().live_holder(at("2026-01-01T00:00:01Z")), None);
    }

    #[test]
    fn the_leader_is_the_holders_pod_ip_at_this_replicas_port() {
        let view = LeaseView::of(&lease(Some("ebb-7d9f-abcde"), RENEWED, &[]));
        let holder = leader_holder(Some(&view), "ebb-7d9f-fghij", at(NOW));
        assert_eq!(holder, Ok("ebb-7d9f-abcde"));
        let address = leader_address(Some(&pod(Some("10.244.0.7"), "ebb")), "ebb", 6443);
        assert_eq!(address, Ok("10.244.0.7:6443".parse().unwrap()));
        let v6 = leader_address(Some(&pod(Some("fd00::7"), "ebb")), "ebb", 6443).unwrap();
        assert_eq!(
            forward_url(v6, "team-a", "s0-kafka", "orders"),
            "https://[fd00::7]:6443/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/s0-kafka?labelSelector=scaledobject%2Eebb%2Edev%2Fname%3Dorders"
        );
    }

    #[test]
    fn no_leader_to_forward_to() {
        let me = "ebb-7d9f-fghij";
        let now = at(NOW);
        let view = |holder: Option<&str>| LeaseView::of(&lease(holder, RENEWED, &[]));
        assert_eq!(leader_holder(None, me, now), Err(NoLeader::NoLease));
        assert_eq!(leader_holder(Some(&view(None)), me, now), Err(NoLeader::NotHeld));
        let late = at("2026-01-01T00:00:20Z");
        assert_eq!(
            leader_holder(Some(&view(Some("ebb-a"))), me, late),
            Err(NoLeader::NotHeld)
        );
        assert_eq!(
            leader_holder(Some(&view(Some(me))), me, now),
            Err(NoLeader::ThisReplica)
        );
        for odd in [
            "../secrets/x",
            "ebb/a",
            "EBB-A",
            "ebb-a?x=1",
            "-a",
            "10.0.0.1:6443",
            "https://evil",
        ] {
            assert_eq!(
                leader_holder(Some(&view(Some(odd))), me, now),
                Err(NoLeader::NotAPodName),
                "{odd}"
            );
        }
        assert_eq!(leader_address(None, "ebb", 6443), Err(NoLeader::NoPod));
        assert_eq!(
            leader_address(Some(&pod(None, "ebb")), "ebb", 6443),
            Err(NoLeader::NoPodIp)
        );
        assert_eq!(
            leader_address(Some(&pod(Some("10.244.0.9"), "default")), "ebb", 6443),
            Err(NoLeader::ForeignPod)
        );
    }

    /// Finding 2: a URL put on the Lease (by whoever may patch it) redirects nothing; only the
    /// holder's Pod does.
    #[test]
    fn a_hostile_lease_annotation_does_not_redirect() {
        let hostile = lease(
            Some("ebb-7d9f-abcde"),
            RENEWED,
            &[
                ("ebb.dev/metrics-adapter-endpoint", "https://attacker.example:443"),
                ("ebb.dev/metrics-adapter-identity", "ebb-7d9f-abcde"),
            ],
        );
        let view = LeaseView::of(&hostile);
        assert_eq!(view, LeaseView::of(&lease(Some("ebb-7d9f-abcde"), RENEWED, &[])));
        let holder = leader_holder(Some(&view), "ebb-7d9f-fghij", at(NOW)).unwrap();
        assert_eq!(holder, "ebb-7d9f-abcde");
        let leader = leader_address(Some(&pod(Some("10.244.0.7"), "ebb")), "ebb", 6443).unwrap();
        let url = forward_url(leader, "default", "s0-kafka", "orders");
        assert!(url.starts_with("https://10.244.0.7:6443/"), "{url}");
        assert!(!url.contains("attacker"), "{url}");
        // A holder that is a URL names no Pod.
        let redirect = LeaseView::of(&lease(Some("https://attacker.example"), RENEWED, &[]));
        assert_eq!(
            leader_holder(Some(&redirect), "ebb-7d9f-fghij", at(NOW)),
            Err(NoLeader::NotAPodName)
        );
    }

    /// Finding 12: whatever reaches the forwarder, the leader's URL keeps its shape.
    #[test]
    fn forwarded_urls_encode_every_part() {
        let leader: SocketAddr = "10.244.0.7:6443".parse().unwrap();
        let url = forward_url(
            leader,
            "team-a/../team-b",
            "../../namespaces/team-b/s0-x",
            "a&labelSelector=b#c",
        );
        assert_eq!(
            url,
            "https://10.244.0.7:6443/apis/external.metrics.k8s.io/v1beta1/namespaces/\
             team-a%2F%2E%2E%2Fteam-b/%2E%2E%2F%2E%2E%2Fnamespaces%2Fteam-b%2Fs0-x\
             ?labelSelector=scaledobject%2Eebb%2Edev%2Fname%3Da%26labelSelector%3Db%23c"
        );
        let uri: Uri = url.parse().unwrap();
        assert_eq!(uri.path().matches('/').count(), 6, "{uri}");
        assert_eq!(uri.query().map(|q| q.matches('&').count()), Some(0));
        let plain = forward_url(leader, "default", "s0-kafka-orders", "orders");
        assert!(plain.ends_with(
            "/namespaces/default/s0-kafka-orders?labelSelector=scaledobject%2Eebb%2Edev%2Fname%3Dorders"
        ));
    }

    #[test]
    fn refusals_name_the_missing_permission_and_never_the_token() {
        let account = ServiceAccountRef {
            namespace: "ebb-system".into(),
            name: "ebb".into(),
        };
        let denied = refusal(
            StatusCode::FORBIDDEN,
            Some("User \"system:serviceaccount:ebb-system:ebb\" cannot list resource"),
            Some(&account),
        );
        assert!(
            denied.contains("`list` on any resource of API group external.metrics.k8s.io"),
            "{denied}"
        );
        assert!(denied.contains("the leader said: User"), "{denied}");
        let unauthenticated = refusal(StatusCode::UNAUTHORIZED, None, Some(&account));
        assert!(
            unauthenticated.contains("tokenreviews.authentication.k8s.io"),
            "{unauthenticated}"
        );
        assert!(unauthenticated.contains("ebb-system/ebb"), "{unauthenticated}");
        assert!(unauthenticated.contains(FORWARD_AUDIENCE), "{unauthenticated}");
    }
}
