//! Replica counts of Deployments and StatefulSets, kept current by watches, so the scale loop
//! reads a target's `spec.replicas` without a GET per poll.
//!
//! One [`WatchIndex`] per kind keeps nothing but `spec.replicas` ([`SpecReplicas`]). Until a kind's
//! first list is complete, and for every other kind, [`WorkloadIndex::replicas`] answers
//! [`Replicas::NotWatched`] and the caller reads `/scale` instead. After a write through `/scale`
//! the caller records the new count ([`WorkloadIndex::record_write`]) so the next poll does not
//! act on the old one before the watch confirms it.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::runtime::{WatchStreamExt, watcher};

use crate::infra::backoff::WatchBackoff;
use kube::{Api, Client};

use crate::cache::index::{Projection, WatchIndex};

/// A workload kind whose replica counts are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The watched kind named by `api_version` and `kind`, if it is one.
    pub fn of(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        match (api_version, kind) {
            ("apps/v1", "Deployment") => Some(WorkloadKind::Deployment),
            ("apps/v1", "StatefulSet") => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

/// Keeps a workload's `spec.replicas` (1 when unset, as the API server defaults it).
#[derive(Debug, Default, Clone, Copy)]
pub struct SpecReplicas;

impl Projection<Deployment> for SpecReplicas {
    type Value = i32;
    type Lookup = ();

    fn value(&self, d: &Deployment) -> i32 {
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn lookup(&self, _: &Deployment) -> Option<()> {
        None
    }
}

impl Projection<StatefulSet> for SpecReplicas {
    type Value = i32;
    type Lookup = ();

    fn value(&self, s: &StatefulSet) -> i32 {
        s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn lookup(&self, _: &StatefulSet) -> Option<()> {
        None
    }
}

/// What the index knows of a workload's replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// Its `spec.replicas`.
    Known(i32),
    /// The kind is watched and synced, and no such object exists.
    Absent,
    /// The kind is not watched, or its first list is not complete: read `/scale`.
    NotWatched,
}

/// Replica counts of Deployments and StatefulSets. Share it as `Arc`.
#[derive(Debug, Default)]
pub struct WorkloadIndex {
    deployments: WatchIndex<Deployment, SpecReplicas>,
    statefulsets: WatchIndex<StatefulSet, SpecReplicas>,
}

impl WorkloadIndex {
    /// Creates the index and starts the Deployment and StatefulSet watches (in `namespace`, or
    /// cluster-wide). The watches end when the returned handles are aborted or the runtime stops.
    pub fn start(
        client: Client,
        namespace: Option<&str>,
    ) -> (Arc<WorkloadIndex>, Vec<tokio::task::JoinHandle<()>>) {
        let index = Arc::new(WorkloadIndex::default());
        let deployments: Api<Deployment> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let statefulsets: Api<StatefulSet> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client),
        };
        // kube's watcher retries at once after an error; the backoff spaces the retries (1 s
        // doubling to 30 s, with jitter). `follow` skips the errors.
        let config = || watcher::Config::default().any_semantic();
        let handles = vec![
            tokio::spawn({
                let index = index.clone();
                async move {
                    let stream = watcher::watcher(deployments, config()).backoff(WatchBackoff::default());
                    index.deployments.follow(stream).await;
                }
            }),
            tokio::spawn({
                let index = index.clone();
                async move {
                    let stream = watcher::watcher(statefulsets, config()).backoff(WatchBackoff::default());
                    index.statefulsets.follow(stream).await;
                }
            }),
        ];
        (index, handles)
    }

    /// The replica count of the `api_version`/`kind` object `namespace/name`, as far as the
    /// watches know it.
    pub fn replicas(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Replicas {
        let (synced, found) = match WorkloadKind::of(api_version, kind) {
            None => return Replicas::NotWatched,
            Some(WorkloadKind::Deployment) => (
                self.deployments.is_synced(),
                self.deployments.get(namespace, name),
            ),
            Some(WorkloadKind::StatefulSet) => (
                self.statefulsets.is_synced(),
                self.statefulsets.get(namespace, name),
            ),
        };
        match (synced, found) {
            (false, _) => Replicas::NotWatched,
            (true, Some(r)) => Replicas::Known(r),
            (true, None) => Replicas::Absent,
        }
    }

    /// Records that this process just wrote `replicas` through `/scale` (no-op for kinds that are
    /// not watched); the watch event that follows confirms or corrects it.
    pub fn record_write(&self, api_version: &str, kind: &str, namespace: &str, name: &str, replicas: i32) {
        match WorkloadKind::of(api_version, kind) {
            Some(WorkloadKind::Deployment) => self.deployments.record_local(namespace, name, replicas),
            Some(WorkloadKind::StatefulSet) => self.statefulsets.record_local(namespace, name, replicas),
            None => {}
        }
    }

    /// The Deployment index, to feed it directly.
    pub fn deployments(&self) -> &WatchIndex<Deployment, SpecReplicas> {
        &self.deployments
    }

    /// The StatefulSet index, to feed it directly.
    pub fn statefulsets(&self) -> &WatchIndex<StatefulSet, SpecReplicas> {
        &self.statefulsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn deployment(ns: &str, name: &str, replicas: Option<i32>) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {}, "template": {}}
        }))
        .unwrap()
    }

    fn statefulset(ns: &str, name: &str, replicas: i32) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {}, "template": {}, "serviceName": "s"}
        }))
        .unwrap()
    }

    /// A client whose every request fails with a 500; counts the requests. After `cap` requests
    /// it stops answering (so a watcher retrying without pause cannot spin the test forever).
    fn failing_client(cap: usize) -> (Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let service = tower::service_fn(move |_req: http::Request<kube::client::Body>| {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n > cap {
                    std::future::pending::<()>().await;
                }
                let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd down","reason":"InternalError","code":500}"#;
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(500)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(body.to_vec()))
                        .expect("response"),
                )
            }
        });
        (Client::new(service, "default"), count)
    }

    #[tokio::test(start_paused = true)]
    async fn the_watches_back_off_while_the_api_server_fails() {
        use std::sync::atomic::Ordering;
        let (client, requests) = failing_client(200);
        let (_index, handles) = WorkloadIndex::start(client, None);
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        // Two watches, each listing at 0 s and then after 1, 2 and 4 s (±25 %): four lists each
        // in 10 s. (Without a backoff: a list per poll; with kube's default_backoff, which resets
        // on the `Init` before each list, one every 0.8 to 1.6 s.)
        let n = requests.load(Ordering::SeqCst);
        assert_eq!(n, 8, "{n} requests in 10 s");
        for h in handles {
            h.abort();
        }
    }

    #[test]
    fn only_deployments_and_statefulsets_are_watched() {
        assert_eq!(
            WorkloadKind::of("apps/v1", "Deployment"),
            Some(WorkloadKind::Deployment)
        );
        assert_eq!(
            WorkloadKind::of("apps/v1", "StatefulSet"),
            Some(WorkloadKind::StatefulSet)
        );
        assert_eq!(WorkloadKind::of("apps/v1beta1", "Deployment"), None);
        assert_eq!(WorkloadKind::of("argoproj.io/v1alpha1", "Rollout"), None);
        let index = WorkloadIndex::default();
        index.deployments().reset(&[]);
        assert_eq!(
            index.replicas("argoproj.io/v1alpha1", "Rollout", "a", "r"),
            Replicas::NotWatched
        );
    }

    #[test]
    fn answers_from_the_watch_once_synced() {
        let index = WorkloadIndex::default();
        index.deployments().apply(&deployment("a", "web", Some(3)));
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "web"),
            Replicas::NotWatched,
            "before the first list completes, /scale answers"
        );
        index.deployments().observe(&Event::Init);
        index
            .deployments()
            .observe(&Event::InitApply(deployment("a", "web", Some(3))));
        index
            .deployments()
            .observe(&Event::InitApply(deployment("a", "unset", None)));
        index.deployments().observe(&Event::InitDone);
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "web"),
            Replicas::Known(3)
        );
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "unset"),
            Replicas::Known(1)
        );
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "none"),
            Replicas::Absent
        );
        assert_eq!(
            index.replicas("apps/v1", "StatefulSet", "a", "web"),
            Replicas::NotWatched,
            "each kind syncs on its own"
        );
        index.deployments().delete(&deployment("a", "web", None));
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "web"),
            Replicas::Absent
        );
    }

    #[test]
    fn a_relist_drops_workloads_that_vanished_and_keeps_the_other_kind() {
        let index = WorkloadIndex::default();
        index.deployments().reset(&[deployment("a", "gone", Some(2))]);
        index.statefulsets().reset(&[statefulset("a", "db", 4)]);
        index.deployments().reset(&[deployment("a", "new", Some(5))]);
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "gone"),
            Replicas::Absent
        );
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "new"),
            Replicas::Known(5)
        );
        assert_eq!(
            index.replicas("apps/v1", "StatefulSet", "a", "db"),
            Replicas::Known(4)
        );
    }

    #[test]
    fn a_write_is_seen_before_the_watch_confirms_it() {
        let index = WorkloadIndex::default();
        index.statefulsets().reset(&[statefulset("a", "db", 1)]);
        index.record_write("apps/v1", "StatefulSet", "a", "db", 0);
        assert_eq!(
            index.replicas("apps/v1", "StatefulSet", "a", "db"),
            Replicas::Known(0)
        );
        index.statefulsets().apply(&statefulset("a", "db", 2));
        assert_eq!(
            index.replicas("apps/v1", "StatefulSet", "a", "db"),
            Replicas::Known(2)
        );
        index.record_write("argoproj.io/v1alpha1", "Rollout", "a", "r", 3);
        assert!(index.deployments().is_empty() && index.statefulsets().len() == 1);
    }
}
