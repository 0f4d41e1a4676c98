//! What the scenario watches while the flood runs: an HPA's reads of an external metric through
//! the API server's aggregation path, the leader's Lease, and the Deployments' replica counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_bench::quantile_ms;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};

/// The HPA controller's user: the reads are made as it (impersonated), so the adapter authorizes
/// them with a SubjectAccessReview (cached) as it does the controller's.
pub const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// A client of the admin kubeconfig that impersonates [`HPA_USER`].
pub async fn hpa_client(kubeconfig: &str) -> anyhow::Result<Client> {
    let file = Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(HPA_USER.to_owned());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".to_owned(),
        "system:serviceaccounts:kube-system".to_owned(),
    ]);
    Ok(Client::try_from(config)?)
}

/// One read: when it was sent, how long it took, and the HTTP status (`None`: no answer).
#[derive(Clone, Copy, Debug)]
pub struct Read {
    /// When it was sent.
    pub at: Instant,
    /// How long the answer took.
    pub took: Duration,
    /// The answer's status.
    pub status: Option<u16>,
}

/// Reads `path` through `client` `rate` times a second (each read on its own task, so a slow one
/// holds none back) until `stop` turns true; every read lands in the returned log.
pub fn steady_reads(
    client: Client,
    path: String,
    rate: f64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<Mutex<Vec<Read>>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let out = log.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight = Vec::new();
        while !*stop.borrow() {
            tick.tick().await;
            let (client, path, log) = (client.clone(), path.clone(), log.clone());
            inflight.push(tokio::spawn(async move {
                let at = Instant::now();
                let status = read_once(&client, &path).await;
                let read = Read {
                    at,
                    took: at.elapsed(),
                    status,
                };
                log.lock().unwrap_or_else(PoisonError::into_inner).push(read);
            }));
            inflight.retain(|h| !h.is_finished());
        }
        for h in inflight {
            let _ = h.await;
        }
    });
    (out, task)
}

async fn read_once(client: &Client, path: &str) -> Option<u16> {
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    match tokio::time::timeout(Duration::from_secs(10), client.request_text(request)).await {
        Ok(Ok(text)) => text.contains("ExternalMetricValueList").then_some(200),
        Ok(Err(kube::Error::Api(status))) => Some(status.code),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// The reads sent within `[from, to)`: latency percentiles of the answered ones (200) and the
/// other answers by status.
pub fn reads_report(reads: &[Read], from: Instant, to: Instant) -> (Value, Option<f64>) {
    let window: Vec<&Read> = reads.iter().filter(|r| r.at >= from && r.at < to).collect();
    let mut ok: Vec<Duration> = window
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.took)
        .collect();
    ok.sort();
    let mut failed: HashMap<String, u64> = HashMap::new();
    for r in window.iter().filter(|r| r.status != Some(200)) {
        let key = r.status.map_or("no answer".to_owned(), |s| s.to_string());
        *failed.entry(key).or_default() += 1;
    }
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let p99 = quantile_ms(&ok, 0.99);
    let section = json!({
        "reads": window.len(), "ok": ok.len(), "failed_by_status": failed,
        "p50_ms": r3(quantile_ms(&ok, 0.5)), "p90_ms": r3(quantile_ms(&ok, 0.9)),
        "p99_ms": r3(p99), "max_ms": r3(quantile_ms(&ok, 1.0)),
    });
    (section, (!ok.is_empty()).then_some(p99))
}

/// One observation of the Lease that differs from the previous one.
#[derive(Clone, Debug)]
pub struct LeaseSeen {
    /// When it was observed.
    pub at: Instant,
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime`.
    pub renewed: Option<jiff::Timestamp>,
}

/// Reads the Lease every 200 ms until `stop` turns true; keeps every change (and every failed
/// read, as a holder of `None` with no renew time).
pub fn watch_lease(
    client: Client,
    ns: &str,
    name: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<Mutex<Vec<LeaseSeen>>>, tokio::task::JoinHandle<()>) {
    let api: Api<Lease> = Api::namespaced(client, ns);
    let name = name.to_owned();
    let log = Arc::new(Mutex::new(Vec::<LeaseSeen>::new()));
    let out = log.clone();
    let task = tokio::spawn(async move {
        while !*stop.borrow() {
            let seen = match api.get(&name).await {
                Ok(lease) => {
                    let spec = lease.spec.unwrap_or_default();
                    LeaseSeen {
                        at: Instant::now(),
                        holder: spec.holder_identity,
                        renewed: spec.renew_time.map(|t| t.0),
                    }
                }
                Err(_) => LeaseSeen {
                    at: Instant::now(),
                    holder: None,
                    renewed: None,
                },
            };
            {
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                let changed = log
                    .last()
                    .is_none_or(|l| l.holder != seen.holder || l.renewed != seen.renewed);
                if changed {
                    log.push(seen);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (out, task)
}

/// The Lease as seen within `[from, to)`: renewals, the longest gap between two renew times, and
/// whether the holder stayed `holder` throughout.
pub fn lease_report(seen: &[LeaseSeen], holder: &str, from: Instant, to: Instant) -> (Value, bool) {
    let window: Vec<&LeaseSeen> = seen.iter().filter(|s| s.at >= from && s.at < to).collect();
    let renew_times: Vec<jiff::Timestamp> = window.iter().filter_map(|s| s.renewed).collect();
    let max_gap_ms = renew_times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .fold(0.0f64, f64::max);
    let unreadable = window.iter().filter(|s| s.renewed.is_none()).count();
    let other_holders: Vec<String> = window
        .iter()
        .filter_map(|s| s.holder.clone())
        .filter(|h| h != holder)
        .collect();
    let kept = other_holders.is_empty() && renew_times.len() >= 2;
    (
        json!({
            "renewals_seen": renew_times.len(),
            "max_gap_between_renewals_ms": (max_gap_ms * 10.0).round() / 10.0,
            "holder": holder, "other_holders_seen": other_holders, "failed_reads": unreadable,
        }),
        kept,
    )
}

/// When each Deployment in `ns` first read at least one replica (from a watch).
pub type FirstUp = Arc<Mutex<HashMap<String, (i32, Option<Instant>)>>>;

/// Watches the namespace's Deployments, recording each one's replicas and when it first read ≥ 1.
pub fn watch_deployments(client: Client, ns: &str) -> (FirstUp, tokio::task::JoinHandle<()>) {
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let seen: FirstUp = Arc::default();
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let Ok(d) = event else { continue };
            let Some(name) = d.metadata.name else { continue };
            let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = seen.entry(name).or_insert((replicas, None));
            entry.0 = replicas;
            if replicas >= 1 && entry.1.is_none() {
                entry.1 = Some(now);
            }
        }
    });
    (out, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_windows_split_answers_from_failures() {
        let t0 = Instant::now();
        let read = |s: u64, ms: u64, status| Read {
            at: t0 + Duration::from_secs(s),
            took: Duration::from_millis(ms),
            status,
        };
        let reads = [
            read(0, 5, Some(200)),
            read(1, 7, Some(200)),
            read(2, 9, Some(503)),
            read(3, 1, None),
            read(9, 100, Some(200)),
        ];
        let (r, p99) = reads_report(&reads, t0, t0 + Duration::from_secs(5));
        assert_eq!(r["reads"], 4);
        assert_eq!(r["ok"], 2);
        assert_eq!(r["failed_by_status"]["503"], 1);
        assert_eq!(r["failed_by_status"]["no answer"], 1);
        assert_eq!(p99, Some(7.0));
    }

    #[test]
    fn a_lease_taken_by_another_holder_is_not_kept() {
        let t0 = Instant::now();
        let ts = |s: i64| Some(jiff::Timestamp::from_second(1_700_000_000 + s).unwrap());
        let seen = |s: u64, holder: &str, renewed| LeaseSeen {
            at: t0 + Duration::from_secs(s),
            holder: Some(holder.to_owned()),
            renewed,
        };
        let log = [
            seen(0, "bench", ts(0)),
            seen(1, "bench", ts(1)),
            seen(4, "bench", ts(4)),
        ];
        let (r, kept) = lease_report(&log, "bench", t0, t0 + Duration::from_secs(10));
        assert!(kept);
        assert_eq!(r["renewals_seen"], 3);
        assert_eq!(r["max_gap_between_renewals_ms"], 3000.0);
        let log = [seen(0, "bench", ts(0)), seen(1, "other", ts(1))];
        assert!(!lease_report(&log, "bench", t0, t0 + Duration::from_secs(10)).1);
    }
}
