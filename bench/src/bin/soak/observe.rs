//! What the soak watches: every replica change of the namespace's Deployments (timestamped),
//! ebb's poll counters per trigger type (its `/metrics`), and the external metric of an object
//! read through the API server's aggregation path as the HPA reads it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use ebb_bench::operator_under_test::OperatorUnderTest;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::Value;

/// A replica change as the watch saw it: when, which Deployment, from, to.
pub(crate) type SeenChange = (Instant, String, i32, i32);

/// The replica changes seen so far, and each Deployment's last count.
#[derive(Default)]
pub(crate) struct ReplicaLog {
    last: HashMap<String, i32>,
    pub(crate) changes: Vec<SeenChange>,
}

impl ReplicaLog {
    /// Records `name` at `replicas`; a change when it had another count before (the first
    /// sight of a Deployment is not a change).
    pub(crate) fn record(&mut self, at: Instant, name: &str, replicas: i32) {
        match self.last.insert(name.to_string(), replicas) {
            Some(before) if before != replicas => {
                self.changes.push((at, name.to_string(), before, replicas));
            }
            _ => {}
        }
    }

    /// The last count seen of `name`.
    pub(crate) fn replicas(&self, name: &str) -> Option<i32> {
        self.last.get(name).copied()
    }
}

/// Shared [`ReplicaLog`].
pub(crate) type Replicas = Arc<Mutex<ReplicaLog>>;

/// Locks the log (a poisoned lock still holds the data).
pub(crate) fn lock(r: &Replicas) -> std::sync::MutexGuard<'_, ReplicaLog> {
    r.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Watches the namespace's Deployments and logs every change of `spec.replicas`.
pub(crate) fn watch_replicas(client: Client, ns: &str) -> (Replicas, tokio::task::JoinHandle<()>) {
    let log: Replicas = Arc::default();
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let out = log.clone();
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
            lock(&out).record(now, &name, replicas);
        }
    });
    (log, task)
}

/// `(ok, error)` polls ebb counted for `trigger_type` so far (`None`: `/metrics` unreadable).
pub(crate) async fn polls(op: &OperatorUnderTest, trigger_type: &str) -> Option<(f64, f64)> {
    let scrape = op.metrics().await.ok()?;
    let count = |result: &str| {
        scrape.sum("ebb_polls_total", |l| {
            l.get("trigger_type").map(String::as_str) == Some(trigger_type)
                && l.get("result").map(String::as_str) == Some(result)
        })
    };
    Some((count("ok"), count("error")))
}

/// The name of the external metric of the HPA ebb made for Deployment `target`.
pub(crate) async fn hpa_metric(client: &Client, ns: &str, target: &str) -> Option<String> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let list = hpas.list(&ListParams::default()).await.ok()?;
    let hpa = list
        .items
        .into_iter()
        .find(|h| h.spec.as_ref().is_some_and(|s| s.scale_target_ref.name == target))?;
    let metric = hpa.spec?.metrics?.into_iter().next()?.external?.metric.name;
    Some(metric)
}

/// Reads `path` (an external metric list) through the API server; the replicas it makes the
/// HPA want at `target` per replica, or what was answered instead.
pub(crate) async fn metric_replicas(client: &Client, path: &str, target: f64) -> Result<i64, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let q = doc["items"][0]["value"]
        .as_str()
        .ok_or_else(|| format!("no value in {text}"))?;
    desired_replicas(q, target).ok_or_else(|| format!("not a quantity: {q}"))
}

/// `ceil(value / target)` for a quantity as the adapter writes it ("15", "14500m", "2k").
pub(crate) fn desired_replicas(quantity: &str, target: f64) -> Option<i64> {
    let value = if let Some(m) = quantity.strip_suffix('m') {
        m.parse::<f64>().ok()? / 1000.0
    } else if let Some(k) = quantity.strip_suffix('k') {
        k.parse::<f64>().ok()? * 1000.0
    } else {
        quantity.parse::<f64>().ok()?
    };
    if !(value.is_finite() && target > 0.0) {
        return None;
    }
    // A hair of slack for values written as thousandths.
    Some((value / target - 1e-9).ceil().max(0.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_changes_not_first_sights_or_repeats() {
        let mut log = ReplicaLog::default();
        let t = Instant::now();
        log.record(t, "a", 3);
        log.record(t, "a", 3);
        log.record(t, "b", 0);
        log.record(t, "a", 2);
        log.record(t, "a", 3);
        let changes: Vec<(String, i32, i32)> = log
            .changes
            .iter()
            .map(|(_, n, f, to)| (n.clone(), *f, *to))
            .collect();
        assert_eq!(changes, [("a".into(), 3, 2), ("a".into(), 2, 3)]);
        assert_eq!(log.replicas("a"), Some(3));
        assert_eq!(log.replicas("c"), None);
    }

    #[test]
    fn quantities_become_the_replicas_the_hpa_wants() {
        assert_eq!(desired_replicas("15", 5.0), Some(3));
        assert_eq!(desired_replicas("14500m", 5.0), Some(3));
        assert_eq!(desired_replicas("15001m", 5.0), Some(4));
        assert_eq!(desired_replicas("0", 5.0), Some(0));
        assert_eq!(desired_replicas("2k", 5.0), Some(400));
        assert_eq!(desired_replicas("x", 5.0), None);
        assert_eq!(desired_replicas("15", 0.0), None);
    }
}
