//! The operator's cache of HPAs, fed by a watch: only what conflict checks and drift detection
//! read (name, owner references, and the labels, owner references and spec as one compact JSON
//! text), plus an index by scale target.
//!
//! A full `DynamicObject` costs about 9 KB per HPA as a JSON tree (the API server fills in the
//! whole `behavior`); the compact text is about a tenth of that, which matters at 10,000 objects.
//! The text is parsed again only when a reconcile compares it with the desired HPA.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use serde_json::{Value as Json, json};
use tokio::sync::watch;

use crate::cache::target_index::TargetIndex;

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

type Key = (String, String);

/// The cache; share it as `Arc<HpaCache>`.
#[derive(Debug)]
pub struct HpaCache {
    live: Mutex<HashMap<Key, Arc<CachedHpa>>>,
    relist: Mutex<Option<HashMap<Key, Arc<CachedHpa>>>>,
    by_target: TargetIndex,
    synced: watch::Sender<bool>,
}

impl Default for HpaCache {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
            relist: Mutex::default(),
            by_target: TargetIndex::default(),
            synced: watch::channel(false).0,
        }
    }
}

fn key_of(hpa: &DynamicObject) -> Option<Key> {
    Some((hpa.metadata.namespace.clone()?, hpa.metadata.name.clone()?))
}

fn locate(hpa: &DynamicObject) -> Option<(String, String, String)> {
    let (ns, name) = key_of(hpa)?;
    let target = hpa.data["spec"]["scaleTargetRef"]["name"].as_str()?.to_string();
    Some((ns, name, target))
}

impl HpaCache {
    /// The HPA `ns/name`.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<CachedHpa>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The HPAs in `ns` whose scale target is named `target` (any kind: callers check it).
    pub fn targeting(&self, ns: &str, target: &str) -> Vec<Arc<CachedHpa>> {
        self.by_target
            .candidates(ns, target)
            .into_iter()
            .filter_map(|name| self.get(ns, &name))
            .collect()
    }

    /// Number of cached HPAs.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Feeds one watch event.
    pub fn observe(&self, event: &watcher::Event<DynamicObject>) {
        self.by_target.observe(event, locate);
        match event {
            watcher::Event::Apply(o) => {
                if let Some(k) = key_of(o) {
                    self.lock_live().insert(k, Arc::new(CachedHpa::from_object(o)));
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(k) = key_of(o) {
                    self.lock_live().remove(&k);
                }
            }
            watcher::Event::Init => {
                *self.relist.lock().unwrap_or_else(PoisonError::into_inner) = Some(HashMap::new());
            }
            watcher::Event::InitApply(o) => {
                if let (Some(k), Some(map)) = (
                    key_of(o),
                    self.relist
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_mut(),
                ) {
                    map.insert(k, Arc::new(CachedHpa::from_object(o)));
                }
            }
            watcher::Event::InitDone => {
                if let Some(map) = self.relist.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    *self.lock_live() = map;
                }
                self.synced.send_replace(true);
            }
        }
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<CachedHpa>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
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
}
