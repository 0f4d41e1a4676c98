//! Replica counts of Deployments and StatefulSets, kept current by watches, so the scale loop
//! reads a target's `spec.replicas` without a GET per poll; and the scaling annotations of the
//! few workloads that carry them, for the generator of ScaledObjects (`crate::generate`), from
//! the same watches.
//!
//! One [`WatchIndex`] per kind keeps `spec.replicas` and, only for a workload with scaling
//! annotations, those annotations and its UID ([`WorkloadView`]); an unannotated workload costs
//! what it cost before. A change of a workload's scaling annotations is sent to the generator
//! ([`DeclarationChanges`]) after the index holds it. Until a kind's
//! first list is complete, and for every other kind, [`WorkloadIndex::replicas`] answers
//! [`Replicas::NotWatched`] and the caller reads `/scale` instead. After a write through `/scale`
//! the caller records the new count ([`WorkloadIndex::record_write`]) so the next poll does not
//! act on the old one before the watch confirms it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Resource;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::infra::backoff::WatchBackoff;
use kube::{Api, Client};

use crate::cache::index::{Projection, WatchIndex};

pub use ebb_crds::annotated::WorkloadKind;

/// A workload by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadRef {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The scaling annotations of a workload (only those: `ebb_crds::annotated::scaling_annotations`)
/// and its UID, for the owner reference of what is generated from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The workload's UID.
    pub uid: String,
    /// Its scaling annotations.
    pub annotations: BTreeMap<String, String>,
}

/// What the index keeps of a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadEntry {
    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub replicas: i32,
    /// Its scaling annotations, when it has any.
    pub declared: Option<Arc<Declared>>,
}

/// Where changes of workloads' scaling annotations go (the generator's queue).
pub type DeclarationChanges = UnboundedSender<WorkloadRef>;

/// Keeps a workload's `spec.replicas` and its scaling annotations; files the annotated ones under
/// `()`, so [`WorkloadIndex::declared`] lists them without a scan.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkloadView;

fn entry_of<K: Resource>(meta_of: &K, replicas: i32) -> WorkloadEntry {
    let meta = meta_of.meta();
    let declared = meta
        .annotations
        .as_ref()
        .map(ebb_crds::annotated::scaling_annotations)
        .filter(|a| !a.is_empty())
        .map(|annotations| {
            Arc::new(Declared {
                uid: meta.uid.clone().unwrap_or_default(),
                annotations,
            })
        });
    WorkloadEntry { replicas, declared }
}

impl Projection<Deployment> for WorkloadView {
    type Value = WorkloadEntry;
    type Lookup = ();

    fn value(&self, d: &Deployment) -> WorkloadEntry {
        entry_of(d, d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
    }

    fn lookup(&self, d: &Deployment) -> Option<()> {
        has_scaling_annotations(d).then_some(())
    }
}

impl Projection<StatefulSet> for WorkloadView {
    type Value = WorkloadEntry;
    type Lookup = ();

    fn value(&self, s: &StatefulSet) -> WorkloadEntry {
        entry_of(s, s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
    }

    fn lookup(&self, s: &StatefulSet) -> Option<()> {
        has_scaling_annotations(s).then_some(())
    }
}

fn has_scaling_annotations<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.keys().any(|k| ebb_crds::annotated::is_scaling_key(k)))
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

/// Replica counts and scaling annotations of Deployments and StatefulSets. Share it as `Arc`.
#[derive(Debug, Default)]
pub struct WorkloadIndex {
    deployments: WatchIndex<Deployment, WorkloadView>,
    statefulsets: WatchIndex<StatefulSet, WorkloadView>,
}

impl WorkloadIndex {
    /// Creates the index and starts the Deployment and StatefulSet watches (in `namespace`, or
    /// cluster-wide); changes of scaling annotations go to `changes` when given. The watches end
    /// when the returned handles are aborted or the runtime stops.
    pub fn start(
        client: Client,
        namespace: Option<&str>,
        changes: Option<DeclarationChanges>,
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
        // doubling to 30 s, with jitter). Errors are skipped.
        let config = || watcher::Config::default().any_semantic();
        let handles = vec![
            tokio::spawn({
                let index = index.clone();
                let changes = changes.clone();
                async move {
                    let stream = watcher::watcher(deployments, config()).backoff(WatchBackoff::default());
                    index.follow(WorkloadKind::Deployment, stream, changes).await;
                }
            }),
            tokio::spawn({
                let index = index.clone();
                async move {
                    let stream = watcher::watcher(statefulsets, config()).backoff(WatchBackoff::default());
                    index.follow(WorkloadKind::StatefulSet, stream, changes).await;
                }
            }),
        ];
        (index, handles)
    }

    /// Feeds one kind's watch into the index, sending each workload whose scaling annotations
    /// changed to `changes` once the index holds the change (after a re-list, every workload
    /// that has or had them).
    async fn follow<K, E>(
        &self,
        kind: WorkloadKind,
        stream: impl futures::Stream<Item = Result<watcher::Event<K>, E>>,
        changes: Option<DeclarationChanges>,
    ) where
        K: Resource + Clone,
        WorkloadView: Projection<K, Value = WorkloadEntry, Lookup = ()>,
        Self: KindIndex<K>,
    {
        use futures::StreamExt as _;
        let mut stream = std::pin::pin!(stream);
        let mut relisted: Vec<WorkloadRef> = Vec::new();
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let index = <Self as KindIndex<K>>::of(self);
            let mut send = Vec::new();
            match &event {
                // A deleted workload takes what was generated from it along (owner reference).
                watcher::Event::Apply(obj) => send.extend(declaration_changed(kind, index, obj)),
                watcher::Event::Delete(_) => {}
                watcher::Event::Init => relisted.clear(),
                watcher::Event::InitApply(obj) => relisted.extend(declaration_changed(kind, index, obj)),
                watcher::Event::InitDone => {}
            }
            index.observe(&event);
            if let watcher::Event::InitDone = event {
                send.append(&mut relisted);
                let mut seen: std::collections::HashSet<WorkloadRef> = send.iter().cloned().collect();
                send.extend(self.declared(kind).into_iter().filter(|w| seen.insert(w.clone())));
            }
            if let Some(tx) = &changes {
                for r in send {
                    let _ = tx.send(r);
                }
            }
        }
    }

    /// Every workload of `kind` with scaling annotations.
    pub fn declared(&self, kind: WorkloadKind) -> Vec<WorkloadRef> {
        let keys = match kind {
            WorkloadKind::Deployment => self.deployments.keys_under(&()),
            WorkloadKind::StatefulSet => self.statefulsets.keys_under(&()),
        };
        keys.into_iter()
            .map(|(namespace, name)| WorkloadRef {
                kind,
                namespace,
                name,
            })
            .collect()
    }

    /// A workload's entry, when the watch knows it.
    pub fn entry(&self, workload: &WorkloadRef) -> Option<WorkloadEntry> {
        match workload.kind {
            WorkloadKind::Deployment => self.deployments.get(&workload.namespace, &workload.name),
            WorkloadKind::StatefulSet => self.statefulsets.get(&workload.namespace, &workload.name),
        }
    }

    /// Whether both kinds have been listed once.
    pub fn is_synced(&self) -> bool {
        self.deployments.is_synced() && self.statefulsets.is_synced()
    }

    /// Resolves once both kinds have been listed once.
    pub async fn wait_until_synced(&self) {
        self.deployments.wait_until_synced().await;
        self.statefulsets.wait_until_synced().await;
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
            (true, Some(e)) => Replicas::Known(e.replicas),
            (true, None) => Replicas::Absent,
        }
    }

    /// Records that this process just wrote `replicas` through `/scale` (no-op for kinds that are
    /// not watched); the watch event that follows confirms or corrects it.
    pub fn record_write(&self, api_version: &str, kind: &str, namespace: &str, name: &str, replicas: i32) {
        fn record<K>(index: &WatchIndex<K, WorkloadView>, namespace: &str, name: &str, replicas: i32)
        where
            K: Resource,
            WorkloadView: Projection<K, Value = WorkloadEntry, Lookup = ()>,
        {
            let declared = index.get(namespace, name).and_then(|e| e.declared);
            index.record_local(namespace, name, WorkloadEntry { replicas, declared });
        }
        match WorkloadKind::of(api_version, kind) {
            Some(WorkloadKind::Deployment) => record(&self.deployments, namespace, name, replicas),
            Some(WorkloadKind::StatefulSet) => record(&self.statefulsets, namespace, name, replicas),
            None => {}
        }
    }

    /// The Deployment index, to feed it directly.
    pub fn deployments(&self) -> &WatchIndex<Deployment, WorkloadView> {
        &self.deployments
    }

    /// The StatefulSet index, to feed it directly.
    pub fn statefulsets(&self) -> &WatchIndex<StatefulSet, WorkloadView> {
        &self.statefulsets
    }
}

/// The index of one kind, for the code shared by both.
pub trait KindIndex<K: Resource>
where
    WorkloadView: Projection<K>,
{
    /// The index of objects of kind `K`.
    fn of(&self) -> &WatchIndex<K, WorkloadView>;
}

impl KindIndex<Deployment> for WorkloadIndex {
    fn of(&self) -> &WatchIndex<Deployment, WorkloadView> {
        &self.deployments
    }
}

impl KindIndex<StatefulSet> for WorkloadIndex {
    fn of(&self) -> &WatchIndex<StatefulSet, WorkloadView> {
        &self.statefulsets
    }
}

/// The workload `obj` when its scaling annotations (or UID) differ from what `index` holds of it.
fn declaration_changed<K>(
    kind: WorkloadKind,
    index: &WatchIndex<K, WorkloadView>,
    obj: &K,
) -> Option<WorkloadRef>
where
    K: Resource,
    WorkloadView: Projection<K, Value = WorkloadEntry, Lookup = ()>,
{
    let meta = obj.meta();
    let (namespace, name) = (meta.namespace.clone().unwrap_or_default(), meta.name.clone()?);
    let before = index.get(&namespace, &name).and_then(|e| e.declared);
    let now = entry_of(obj, 0).declared;
    (before != now).then_some(WorkloadRef {
        kind,
        namespace,
        name,
    })
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
        let (_index, handles) = WorkloadIndex::start(client, None, None);
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

    fn annotated(ns: &str, name: &str, uid: &str, pairs: &[(&str, &str)]) -> Deployment {
        let mut d = deployment(ns, name, Some(0));
        d.metadata.uid = Some(uid.into());
        d.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        d
    }

    /// Feeds `events` through the Deployment watch path and returns what it sent.
    async fn changes_of(index: &WorkloadIndex, events: Vec<Event<Deployment>>) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
        index.follow(WorkloadKind::Deployment, stream, Some(tx)).await;
        let mut out = Vec::new();
        while let Ok(w) = rx.try_recv() {
            out.push(w.name);
        }
        out
    }

    #[tokio::test]
    async fn only_changes_of_scaling_annotations_are_reported() {
        let index = WorkloadIndex::default();
        let trigger = ("autoscaling.ebb.dev/trigger", "kafka");
        let sent = changes_of(
            &index,
            vec![
                Event::Init,
                Event::InitApply(annotated("a", "web", "u1", &[trigger])),
                Event::InitApply(deployment("a", "plain", Some(2))),
                Event::InitDone,
                // Replica changes and other annotations say nothing new.
                Event::Apply(annotated(
                    "a",
                    "web",
                    "u1",
                    &[trigger, ("deployment.kubernetes.io/revision", "2")],
                )),
                Event::Apply(deployment("a", "plain", Some(5))),
                // An edit, then a removal, of the scaling annotations.
                Event::Apply(annotated(
                    "a",
                    "web",
                    "u1",
                    &[("autoscaling.ebb.dev/trigger", "nats-jetstream")],
                )),
                Event::Apply(annotated("a", "web", "u1", &[("other", "x")])),
                // Annotations added to a plain workload.
                Event::Apply(annotated("a", "plain", "u2", &[trigger])),
            ],
        )
        .await;
        assert_eq!(sent, ["web", "web", "web", "plain"]);
        let declared: Vec<String> = index
            .declared(WorkloadKind::Deployment)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(declared, ["plain"]);
        let entry = index.entry(&WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: "a".into(),
            name: "plain".into(),
        });
        let declared = entry.and_then(|e| e.declared).expect("annotations kept");
        assert_eq!(declared.uid, "u2");
        assert_eq!(
            declared.annotations.len(),
            1,
            "only the scaling annotations are kept"
        );
    }

    #[tokio::test]
    async fn a_relist_reports_annotations_removed_while_the_watch_was_down() {
        let index = WorkloadIndex::default();
        let trigger = ("autoscaling.ebb.dev/trigger", "kafka");
        index.deployments().reset(&[
            annotated("a", "was", "u1", &[trigger]),
            annotated("a", "still", "u2", &[trigger]),
        ]);
        let sent = changes_of(
            &index,
            vec![
                Event::Init,
                Event::InitApply(deployment("a", "was", Some(1))),
                Event::InitApply(annotated("a", "still", "u2", &[trigger])),
                Event::InitDone,
            ],
        )
        .await;
        assert_eq!(
            sent,
            ["was", "still"],
            "the removal, then every annotated workload"
        );
    }

    #[tokio::test]
    async fn ten_thousand_unannotated_workloads_cost_no_generator_work() {
        let index = WorkloadIndex::default();
        let mut events = vec![Event::Init];
        events.extend((0..10_000).map(|i| Event::InitApply(deployment("a", &format!("d{i}"), Some(1)))));
        events.push(Event::InitDone);
        events.extend((0..10_000).map(|i| Event::Apply(deployment("a", &format!("d{i}"), Some(2)))));
        let sent = changes_of(&index, events).await;
        assert!(sent.is_empty());
        assert!(index.declared(WorkloadKind::Deployment).is_empty());
        assert_eq!(index.deployments().len(), 10_000);
        assert_eq!(
            index.replicas("apps/v1", "Deployment", "a", "d9999"),
            Replicas::Known(2)
        );
    }
}
