//! Which ScaledObjects point at which workload, by their `scaleTargetRef`.
//!
//! Conflict checks ("is another ScaledObject already scaling this Deployment?") ask this index for
//! the few candidates in the target's namespace with the target's name, instead of scanning every
//! cached object on every reconcile (quadratic at thousands of objects). It is a [`WatchIndex`]
//! fed from the ScaledObject watch ([`TargetIndex::observe`]) that keeps nothing per object but
//! its target; candidates are then checked against the controller's store (kind, group, age).
//! HPAs are filed by target the same way, inside [`crate::cache::hpas`].

use ebb_crds::ScaledObject;
use kube::runtime::watcher;

use crate::cache::index::{Projection, WatchIndex};

/// A scale target as the indexes file it: `(namespace, target name)`, any kind (callers check it).
pub type TargetKey = (String, String);

/// Keeps nothing of a ScaledObject but files it under `(namespace, scaleTargetRef.name)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScaleTargetOf;

impl Projection<ScaledObject> for ScaleTargetOf {
    type Value = ();
    type Lookup = TargetKey;

    fn value(&self, _: &ScaledObject) {}

    fn lookup(&self, so: &ScaledObject) -> Option<TargetKey> {
        Some((
            so.metadata.namespace.clone()?,
            so.spec.scale_target_ref.name.clone(),
        ))
    }
}

/// An index from scale targets to the ScaledObjects that point at them. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct TargetIndex {
    index: WatchIndex<ScaledObject, ScaleTargetOf>,
}

impl TargetIndex {
    /// Names of the ScaledObjects in `ns` that point at a target named `target`, in name order.
    pub fn candidates(&self, ns: &str, target: &str) -> Vec<String> {
        self.index
            .keys_under(&(ns.to_string(), target.to_string()))
            .into_iter()
            .map(|(_, name)| name)
            .collect()
    }

    /// Feeds one watch event (a re-list is swapped in whole when complete).
    pub fn observe(&self, event: &watcher::Event<ScaledObject>) {
        self.index.observe(event);
    }

    /// The underlying index, to feed it directly ([`WatchIndex::apply`], `delete`, `reset`).
    pub fn index(&self) -> &WatchIndex<ScaledObject, ScaleTargetOf> {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn so(ns: &str, name: &str, target: &str) -> ScaledObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"name": target}, "triggers": []}
        }))
        .unwrap()
    }

    #[test]
    fn finds_every_object_on_a_target_and_follows_changes() {
        let index = TargetIndex::default();
        index.index().apply(&so("a", "so-1", "web"));
        index.index().apply(&so("a", "so-2", "web"));
        index.index().apply(&so("b", "so-3", "web"));
        assert_eq!(index.candidates("a", "web"), ["so-1", "so-2"]);
        assert_eq!(index.candidates("b", "web"), ["so-3"]);
        index.index().apply(&so("a", "so-1", "api"));
        assert_eq!(index.candidates("a", "web"), ["so-2"]);
        assert_eq!(index.candidates("a", "api"), ["so-1"]);
        index.index().delete(&so("a", "so-2", "web"));
        assert!(index.candidates("a", "web").is_empty());
        index.index().delete(&so("a", "never-seen", "web"));
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let index = TargetIndex::default();
        index.observe(&Event::Apply(so("a", "old", "web")));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(so("a", "new", "web")));
        // Until the list is done the old view answers.
        assert_eq!(index.candidates("a", "web"), ["old"]);
        index.observe(&Event::InitDone);
        assert_eq!(index.candidates("a", "web"), ["new"]);
        index.observe(&Event::Delete(so("a", "new", "web")));
        assert!(index.candidates("a", "web").is_empty());
    }

    #[test]
    fn reset_drops_objects_that_vanished() {
        let index = TargetIndex::default();
        index.index().apply(&so("a", "gone", "web"));
        index.index().apply(&so("a", "kept", "web"));
        index
            .index()
            .reset(&[so("a", "kept", "api"), so("a", "added", "web")]);
        assert_eq!(index.candidates("a", "web"), ["added"]);
        assert_eq!(index.candidates("a", "api"), ["kept"]);
        assert!(index.index().get("a", "gone").is_none());
    }
}
