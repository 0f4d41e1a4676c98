//! The operator's cache of HPAs, fed by a watch: only what conflict checks and drift detection
//! read (name, owner references, and the labels, owner references and spec as one compact JSON
//! text), filed by scale target. It is a [`WatchIndex`] with the [`CompactHpa`] projection, so
//! a re-list is swapped in whole and the by-target lookup always agrees with the records.
//!
//! A full `DynamicObject` costs about 9 KB per HPA as a JSON tree (the API server fills in the
//! whole `behavior`); the compact text is about a tenth of that, which matters at 10,000 objects.
//! The text is parsed again only when a reconcile compares it with the desired HPA.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use serde_json::{Value as Json, json};

use crate::cache::index::{Projection, WatchIndex};
use crate::cache::target_index::TargetKey;

/// What the operator keeps of one HPA.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedHpa {
    /// Its name.
    pub name: String,
    /// Its owner references.
    pub owner_references: Vec<OwnerReference>,
    /// `{"metadata": {"labels", "ownerReferences"}, "spec"}` as compact JSON.
    drift_view: Box<str>,
}

impl CachedHpa {
    /// Keeps what ebb reads of an HPA.
    pub fn from_object(hpa: &DynamicObject) -> CachedHpa {
        let view = json!({
            "metadata": {
                "labels": hpa.metadata.labels,
                "ownerReferences": hpa.metadata.owner_references,
            },
            "spec": hpa.data.get("spec").cloned().unwrap_or(Json::Null),
        });
        CachedHpa {
            name: hpa.metadata.name.clone().unwrap_or_default(),
            owner_references: hpa.metadata.owner_references.clone().unwrap_or_default(),
            drift_view: view.to_string().into_boxed_str(),
        }
    }

    /// Labels, owner references and spec, as the drift check and target match read them.
    pub fn drift_view(&self) -> Json {
        serde_json::from_str(&self.drift_view).unwrap_or(Json::Null)
    }
}

/// How the HPA cache keeps an HPA: as a [`CachedHpa`], filed under its scale target.
#[derive(Debug, Default, Clone, Copy)]
pub struct CompactHpa;

impl Projection<DynamicObject> for CompactHpa {
    type Value = Arc<CachedHpa>;
    type Lookup = TargetKey;

    fn value(&self, hpa: &DynamicObject) -> Arc<CachedHpa> {
        Arc::new(CachedHpa::from_object(hpa))
    }

    /// `(namespace, spec.scaleTargetRef.name)`.
    fn lookup(&self, hpa: &DynamicObject) -> Option<TargetKey> {
        let ns = hpa.metadata.namespace.clone()?;
        let target = hpa.data["spec"]["scaleTargetRef"]["name"].as_str()?;
        Some((ns, target.to_string()))
    }
}

/// The cache; share it as `Arc<HpaCache>`.
#[derive(Debug, Default)]
pub struct HpaCache {
    index: WatchIndex<DynamicObject, CompactHpa>,
}

impl HpaCache {
    /// Starts a cache fed by a watch of every HPA `api` sees and waits (at most 30 s) until it
    /// has listed: conflict checks and drift detection need the HPAs first (else every object
    /// re-applies its HPA). The task runs until aborted.
    pub async fn start(api: kube::Api<DynamicObject>) -> (Arc<HpaCache>, tokio::task::JoinHandle<()>) {
        use futures::StreamExt as _;
        use kube::runtime::WatchStreamExt as _;
        let hpas = Arc::new(HpaCache::default());
        let task = tokio::spawn({
            let hpas = hpas.clone();
            watcher::watcher(api, watcher::Config::default())
                .backoff(crate::infra::backoff::WatchBackoff::default())
                .for_each(move |event| {
                    if let Ok(event) = event {
                        hpas.observe(&event);
                    }
                    futures::future::ready(())
                })
        });
        let synced = tokio::time::timeout(std::time::Duration::from_secs(30), hpas.wait_until_synced()).await;
        if synced.is_err() {
            tracing::warn!("HPA watch not synced after 30 s; continuing");
        }
        (hpas, task)
    }

    /// The HPA `ns/name`.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<CachedHpa>> {
        self.index.get(ns, name)
    }

    /// The HPAs in `ns` whose scale target is named `target` (any kind: callers check it), in
    /// name order.
    pub fn targeting(&self, ns: &str, target: &str) -> Vec<Arc<CachedHpa>> {
        self.index.values_under(&(ns.to_string(), target.to_string()))
    }

    /// Number of cached HPAs.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_synced(&self) {
        self.index.wait_until_synced().await;
    }

    /// Feeds one watch event (a re-list is swapped in whole when complete).
    pub fn observe(&self, event: &watcher::Event<DynamicObject>) {
        self.index.observe(event);
    }

    /// The underlying index, to feed it directly ([`WatchIndex::apply`], `delete`, `reset`).
    pub fn index(&self) -> &WatchIndex<DynamicObject, CompactHpa> {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(name: &str, target: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "ebb"},
                         "annotations": {"big": "x".repeat(1000)},
                         "managedFields": [{"manager": "kube-controller-manager"}],
                         "ownerReferences": [{"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
                                              "name": "so", "uid": "u-1", "controller": true}]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 1, "maxReplicas": 5},
            "status": {"currentReplicas": 0}
        }))
        .unwrap()
    }

    #[test]
    fn keeps_what_drift_and_conflicts_read_and_drops_the_rest() {
        let cached = CachedHpa::from_object(&hpa("h", "web"));
        let view = cached.drift_view();
        assert_eq!(view["spec"]["maxReplicas"], 5);
        assert_eq!(view["metadata"]["labels"]["app.kubernetes.io/managed-by"], "ebb");
        assert_eq!(view["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert!(view.get("status").is_none() && view["metadata"].get("annotations").is_none());
        assert_eq!(cached.owner_references[0].uid, "u-1");
    }

    #[tokio::test]
    async fn follows_the_watch_and_finds_hpas_by_target() {
        let cache = HpaCache::default();
        cache.observe(&watcher::Event::Init);
        cache.observe(&watcher::Event::InitApply(hpa("a", "web")));
        assert!(cache.is_empty(), "the list is not complete yet");
        cache.observe(&watcher::Event::InitDone);
        cache.wait_until_synced().await;
        assert_eq!(cache.len(), 1);
        cache.observe(&watcher::Event::Apply(hpa("b", "web")));
        let names: Vec<String> = cache
            .targeting("shop", "web")
            .iter()
            .map(|h| h.name.clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
        cache.observe(&watcher::Event::Apply(hpa("b", "api")));
        assert_eq!(cache.targeting("shop", "web").len(), 1);
        cache.observe(&watcher::Event::Delete(hpa("a", "web")));
        assert!(cache.targeting("shop", "web").is_empty());
        assert!(cache.get("shop", "a").is_none());
        assert_eq!(cache.get("shop", "b").unwrap().name, "b");
    }

    #[test]
    fn apply_delete_and_reset_keep_records_and_the_target_lookup_together() {
        let cache = HpaCache::default();
        cache.index().apply(&hpa("a", "web"));
        cache.index().apply(&hpa("b", "web"));
        cache.index().apply(&hpa("c", "api"));
        assert_eq!(cache.targeting("shop", "web").len(), 2);
        assert!(
            cache.targeting("other", "web").is_empty(),
            "lookups stay in their namespace"
        );
        cache.index().delete(&hpa("a", "web"));
        assert_eq!(cache.targeting("shop", "web")[0].name, "b");
        // A re-list in which "b" vanished and "c" moved to "web".
        cache.index().reset(&[hpa("c", "web"), hpa("d", "api")]);
        assert!(cache.get("shop", "b").is_none());
        let names: Vec<String> = cache
            .targeting("shop", "web")
            .iter()
            .map(|h| h.name.clone())
            .collect();
        assert_eq!(names, ["c"]);
        assert_eq!(cache.targeting("shop", "api")[0].name, "d");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_relist_in_progress_leaves_the_old_records_readable() {
        let cache = HpaCache::default();
        cache.observe(&watcher::Event::Apply(hpa("old", "web")));
        cache.observe(&watcher::Event::Init);
        cache.observe(&watcher::Event::InitApply(hpa("new", "web")));
        assert_eq!(cache.targeting("shop", "web")[0].name, "old");
        cache.observe(&watcher::Event::InitDone);
        assert!(cache.get("shop", "old").is_none());
        assert_eq!(cache.targeting("shop", "web")[0].name, "new");
    }
}
