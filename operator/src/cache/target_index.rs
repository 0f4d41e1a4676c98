//! Which objects point at which workload: ScaledObjects by their `scaleTargetRef`, HPAs by theirs.
//!
//! Conflict checks ("is another ScaledObject or a foreign HPA already scaling this Deployment?")
//! ask this index for the few candidates in the target's namespace with the target's name, instead
//! of scanning every cached object on every reconcile (quadratic at thousands of objects). The
//! index is fed from the same watch streams as the caches ([`TargetIndex::observe`]); candidates
//! are then checked against the cached objects themselves (kind, group, ownership).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use kube::runtime::watcher;

/// `(namespace, name)`.
type Key = (String, String);

#[derive(Debug, Default)]
struct State {
    /// (namespace, target name) → names of the objects pointing at it.
    by_target: HashMap<Key, BTreeSet<String>>,
    /// (namespace, object name) → its target name.
    target_of: HashMap<Key, String>,
}

impl State {
    fn apply(&mut self, ns: &str, name: &str, target: &str) {
        let key = (ns.to_string(), name.to_string());
        if let Some(old) = self.target_of.get(&key) {
            if old == target {
                return;
            }
            let old = old.clone();
            self.unlink(ns, name, &old);
        }
        self.by_target
            .entry((ns.to_string(), target.to_string()))
            .or_default()
            .insert(name.to_string());
        self.target_of.insert(key, target.to_string());
    }

    fn delete(&mut self, ns: &str, name: &str) {
        if let Some(old) = self.target_of.remove(&(ns.to_string(), name.to_string())) {
            self.unlink(ns, name, &old);
        }
    }

    fn unlink(&mut self, ns: &str, name: &str, target: &str) {
        let tkey = (ns.to_string(), target.to_string());
        if let Some(set) = self.by_target.get_mut(&tkey) {
            set.remove(name);
            if set.is_empty() {
                self.by_target.remove(&tkey);
            }
        }
    }
}

/// An index from scale targets to the objects that point at them. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct TargetIndex {
    live: Mutex<State>,
    /// Built during a watch (re)list, swapped in when the list is complete.
    relist: Mutex<Option<State>>,
}

impl TargetIndex {
    /// Records that `ns/name` points at the target named `target` (replacing what it pointed at).
    pub fn apply(&self, ns: &str, name: &str, target: &str) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(ns, name, target);
    }

    /// Forgets `ns/name`.
    pub fn delete(&self, ns: &str, name: &str) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .delete(ns, name);
    }

    /// Names of the objects in `ns` that point at a target named `target`.
    pub fn candidates(&self, ns: &str, target: &str) -> Vec<String> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_target
            .get(&(ns.to_string(), target.to_string()))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Feeds one watch event; `locate` gives an object's namespace, name and target name (`None`
    /// for objects without a target, which are then only forgotten).
    pub fn observe<K>(
        &self,
        event: &watcher::Event<K>,
        locate: impl Fn(&K) -> Option<(String, String, String)>,
    ) {
        match event {
            watcher::Event::Apply(o) => match locate(o) {
                Some((ns, name, target)) => self.apply(&ns, &name, &target),
                None => self.forget_located(o, &locate),
            },
            watcher::Event::Delete(o) => self.forget_located(o, &locate),
            watcher::Event::Init => {
                *self.relist.lock().unwrap_or_else(PoisonError::into_inner) = Some(State::default());
            }
            watcher::Event::InitApply(o) => {
                if let Some((ns, name, target)) = locate(o)
                    && let Some(state) = self
                        .relist
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_mut()
                {
                    state.apply(&ns, &name, &target);
                }
            }
            watcher::Event::InitDone => {
                if let Some(state) = self.relist.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    *self.live.lock().unwrap_or_else(PoisonError::into_inner) = state;
                }
            }
        }
    }

    fn forget_located<K>(&self, o: &K, locate: &impl Fn(&K) -> Option<(String, String, String)>) {
        if let Some((ns, name, _)) = locate(o) {
            self.delete(&ns, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Obj = (&'static str, &'static str, &'static str);

    fn locate(o: &Obj) -> Option<(String, String, String)> {
        Some((o.0.to_string(), o.1.to_string(), o.2.to_string()))
    }

    #[test]
    fn finds_every_object_on_a_target_and_follows_changes() {
        let index = TargetIndex::default();
        index.apply("a", "so-1", "web");
        index.apply("a", "so-2", "web");
        index.apply("b", "so-3", "web");
        assert_eq!(index.candidates("a", "web"), ["so-1", "so-2"]);
        assert_eq!(index.candidates("b", "web"), ["so-3"]);
        index.apply("a", "so-1", "api");
        assert_eq!(index.candidates("a", "web"), ["so-2"]);
        assert_eq!(index.candidates("a", "api"), ["so-1"]);
        index.delete("a", "so-2");
        assert!(index.candidates("a", "web").is_empty());
        index.delete("a", "never-seen");
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let index = TargetIndex::default();
        index.observe(&watcher::Event::Apply(("a", "old", "web")), locate);
        index.observe(&watcher::Event::Init, locate);
        index.observe(&watcher::Event::InitApply(("a", "new", "web")), locate);
        // Until the list is done the old view answers.
        assert_eq!(index.candidates("a", "web"), ["old"]);
        index.observe(&watcher::Event::InitDone, locate);
        assert_eq!(index.candidates("a", "web"), ["new"]);
        index.observe(&watcher::Event::Delete(("a", "new", "web")), locate);
        assert!(index.candidates("a", "web").is_empty());
    }
}
