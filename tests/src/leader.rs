//! Watching leader election from outside: the Lease, each operator's own request counters and
//! leader gauge (its `/metrics`), and the times its log gives for leadership changes. For the
//! fault tests, which start two operators on one Lease and cut or kill the leader.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::operator::OperatorProcess;
use crate::{HarnessError, wait_for};

/// The Lease the operator uses by default (`--lease-name`).
pub const LEASE_NAME: &str = "ebb-operator";

/// A loopback address with a port that was free a moment ago, for `--health-addr`.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local addr");
    addr.to_string()
}

/// What one read of an operator's `/metrics` said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// `ebb_is_leader`.
    pub leader: bool,
    /// `ebb_kube_requests_total` by `(verb, resource)`.
    pub requests: Vec<(String, String, u64)>,
}

impl Scrape {
    /// Parses the Prometheus text exposition of an ebb replica.
    pub fn parse(body: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some(v) = line.strip_prefix("ebb_is_leader ") {
                scrape.leader = v.trim() == "1";
            } else if let Some(rest) = line.strip_prefix("ebb_kube_requests_total{") {
                let Some((labels, value)) = rest.split_once("} ") else {
                    continue;
                };
                let label = |name: &str| {
                    labels
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.trim_matches('"').to_string())
                        .unwrap_or_default()
                };
                let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
                scrape.requests.push((label("verb"), label("resource"), count));
            }
        }
        scrape
    }

    /// Writes only a leader may make: every create/update/patch/delete except of Leases (the
    /// election itself) and Events (not guarded).
    pub fn leader_writes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(verb, resource, _)| {
                is_write(verb) && !resource.starts_with("leases") && !resource.starts_with("events")
            })
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Writes of `/scale` subresources.
    pub fn scale_writes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(verb, resource, _)| is_write(verb) && resource.ends_with("/scale"))
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Writes of Events.
    pub fn event_writes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(verb, resource, _)| is_write(verb) && resource.starts_with("events"))
            .map(|(_, _, n)| n)
            .sum()
    }
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

/// Reads an ebb replica's `/metrics` at `addr` (plain HTTP); `None` when it does not answer.
pub async fn scrape(addr: &str) -> Option<Scrape> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.starts_with("HTTP/1.").then(|| Scrape::parse(&body))
    };
    tokio::time::timeout(Duration::from_secs(2), read).await.ok()?
}

/// Reads an operator's `/metrics` every 50 ms in the background and keeps every answer with its
/// time, so a test can ask what the operator had done by any moment (also after it exited).
pub struct Sampler {
    samples: Arc<Mutex<Vec<(SystemTime, Scrape)>>>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `addr`.
    pub fn start(addr: &str) -> Sampler {
        let samples: Arc<Mutex<Vec<(SystemTime, Scrape)>>> = Arc::default();
        let task = tokio::spawn({
            let samples = samples.clone();
            let addr = addr.to_string();
            async move {
                loop {
                    if let Some(s) = scrape(&addr).await {
                        let at = SystemTime::now();
                        samples
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((at, s));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Sampler { samples, task }
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<(SystemTime, Scrape)> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last sample taken before `at`.
    pub fn before(&self, at: SystemTime) -> Option<(SystemTime, Scrape)> {
        self.samples().into_iter().rfind(|(t, _)| *t < at)
    }

    /// The last sample.
    pub fn last(&self) -> Option<(SystemTime, Scrape)> {
        self.samples().pop()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who holds a Lease, since when, and when it was last renewed.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    /// `holderIdentity` (`None` when released).
    pub holder: Option<String>,
    /// `acquireTime`.
    pub acquired: Option<SystemTime>,
    /// `renewTime`.
    pub renewed: Option<SystemTime>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

/// Reads the operators' Lease in `namespace` (`None` when absent or unreadable).
pub async fn lease(client: &Client, namespace: &str) -> Option<LeaseView> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE_NAME)
        .await
        .ok()??;
    let spec = lease.spec.unwrap_or_default();
    Some(LeaseView {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        acquired: spec.acquire_time.map(|t| t.0.into()),
        renewed: spec.renew_time.map(|t| t.0.into()),
        transitions: spec.lease_transitions.unwrap_or(0),
    })
}

/// Waits until `identity` holds the Lease in `namespace`; returns the Lease as then read.
pub async fn wait_holder(
    client: &Client,
    namespace: &str,
    identity: &str,
    within: Duration,
) -> Result<LeaseView, HarnessError> {
    wait_for(&format!("{identity} holds the Lease"), within, || async {
        lease(client, namespace)
            .await
            .filter(|l| l.holder.as_deref() == Some(identity))
    })
    .await
}

/// Waits until the replica whose `/metrics` is at `addr` reports itself leader (or not).
pub async fn wait_leader_gauge(addr: &str, leading: bool, within: Duration) -> Result<(), HarnessError> {
    wait_for(
        &format!("ebb_is_leader = {leading} at {addr}"),
        within,
        || async { (scrape(addr).await?.leader == leading).then_some(()) },
    )
    .await
}

/// The time of the first line of an operator's text log that contains `needle` (the line's
/// leading RFC 3339 timestamp).
pub fn log_time(log: &Path, needle: &str) -> Option<SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?;
    let ts: jiff::Timestamp = stamp.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// Whether an operator's log contains `needle`.
pub fn log_contains(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
}

/// Signed seconds from `earlier` to `later` (negative when `later` is before `earlier`).
pub fn secs_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Two operators on one Lease: `leader` started first and leading, `standby` running and
/// contending.
pub struct Pair {
    /// The leader.
    pub leader: OperatorProcess,
    /// Its `/metrics` address.
    pub leader_metrics: String,
    /// The standby.
    pub standby: OperatorProcess,
    /// Its `/metrics` address.
    pub standby_metrics: String,
}

/// Starts `leader` (with `leader_kubeconfig`) and waits until it leads, then `standby` (with
/// `standby_kubeconfig`) and waits until it contends, both with `--lease-duration
/// {lease_secs}` watching `namespace`.
pub async fn start_pair(
    namespace: &str,
    lease_secs: u64,
    (leader_id, leader_kubeconfig): (&str, &Path),
    (standby_id, standby_kubeconfig): (&str, &Path),
) -> Result<Pair, HarnessError> {
    let lease = lease_secs.to_string();
    let extra = ["--lease-duration", lease.as_str()];
    let leader_metrics = free_local_addr();
    let leader =
        OperatorProcess::start_with(leader_kubeconfig, &leader_metrics, namespace, leader_id, &extra).await?;
    wait_leader_gauge(&leader_metrics, true, Duration::from_secs(30)).await?;
    let standby_metrics = free_local_addr();
    let standby = OperatorProcess::start_with(
        standby_kubeconfig,
        &standby_metrics,
        namespace,
        standby_id,
        &extra,
    )
    .await?;
    let standby_log = OperatorProcess::log_path(namespace, standby_id);
    wait_for(
        &format!("{standby_id} contends for the Lease"),
        Duration::from_secs(30),
        || async { log_contains(&standby_log, "waiting for leadership").then_some(()) },
    )
    .await?;
    // A just-started replica waits a second before it contends for an existing Lease.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    Ok(Pair {
        leader,
        leader_metrics,
        standby,
        standby_metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_counts_leader_writes_by_verb_and_resource() {
        let body = "HTTP/1.0 200 OK\r\n\r\n# HELP x\n\
            ebb_is_leader 1\n\
            ebb_kube_requests_total{verb=\"patch\",resource=\"deployments/scale\"} 3\n\
            ebb_kube_requests_total{verb=\"patch\",resource=\"scaledobjects/status\"} 2\n\
            ebb_kube_requests_total{verb=\"create\",resource=\"horizontalpodautoscalers\"} 1\n\
            ebb_kube_requests_total{verb=\"patch\",resource=\"leases\"} 40\n\
            ebb_kube_requests_total{verb=\"create\",resource=\"events\"} 5\n\
            ebb_kube_requests_total{verb=\"get\",resource=\"deployments/scale\"} 9\n";
        let s = Scrape::parse(body);
        assert!(s.leader);
        assert_eq!(s.leader_writes(), 6);
        assert_eq!(s.scale_writes(), 3);
        assert_eq!(s.event_writes(), 5);
        assert!(!Scrape::parse("ebb_is_leader 0\n").leader);
    }

    #[test]
    fn log_lines_give_their_time() {
        let dir = std::env::temp_dir().join(format!("ebb-log-time-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("op.log");
        std::fs::write(
            &log,
            "2025-01-02T03:04:05.250000Z  INFO x: waiting for leadership\n\
             2025-01-02T03:04:07.500000Z ERROR x: stepping down as leader reason=y\n",
        )
        .unwrap();
        let down = log_time(&log, "stepping down").unwrap();
        let wait = log_time(&log, "waiting for").unwrap();
        assert!((secs_between(wait, down) - 2.25).abs() < 1e-6);
        assert!(log_time(&log, "absent").is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
