//! One generic watch-fed index: the objects of one kind, each kept as a compact value the owner
//! chooses, plus at most one secondary lookup per object (e.g. "by scale target").
//!
//! A [`WatchIndex`] is fed from a kube `watcher` stream ([`WatchIndex::observe`] or
//! [`WatchIndex::follow`]), or directly through [`WatchIndex::apply`], [`WatchIndex::delete`] and
//! [`WatchIndex::reset`] (which is how its users test it: no API server needed). What it keeps of
//! an object, and under which lookup key it files it, is a [`Projection`].
//!
//! # Guarantees
//! - **Atomic re-lists.** The objects of a (re-)list (`Init`, `InitApply`…, `InitDone`) are
//!   projected into a side buffer and swapped in whole at `InitDone`; objects that vanished while
//!   the watch was down are dropped then. Readers see the old contents or the new, never a mix.
//! - **Consistent lookups.** Values and secondary lookups live under one lock, so a lookup never
//!   names an object [`WatchIndex::get`] does not know at that instant.
//! - **Order.** Events take effect in the order they are fed; an `Apply` replaces the object's
//!   value and moves it to its new lookup key. Lookups answer in `(namespace, name)` order.
//! - **Sync.** [`WatchIndex::wait_until_synced`] resolves once the first list is complete, and
//!   stays resolved (later re-lists do not "unsync" the index).
//!
//! # Caveats
//! - **Stale during a re-list.** Until `InitDone`, readers see the contents from before the watch
//!   broke, including objects deleted meanwhile; a watch error on its own changes nothing.
//! - **Memory.** Only the projected value, the key and the lookup key are kept per object — never
//!   the object; the key is allocated once per object and each distinct lookup key once. During a
//!   re-list the buffer holds a second projected copy, so the peak is twice the steady size.
//! - **Local writes are provisional.** [`WatchIndex::record_local`] stands until the next event for
//!   that object; a re-list that was already under way may bring back the value it listed.
//! - **Keys.** Objects are keyed by namespace (empty for cluster-scoped kinds) and name; an object
//!   without a name is ignored.
//! - **No notifications.** Readers poll; nothing is woken by a change (except the first sync).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

/// An object's place in an index: `(namespace, name)`.
pub type ObjectKey = (String, String);

/// What an index keeps of an object of kind `K`, and the secondary key it files the object under.
pub trait Projection<K>: Send + Sync {
    /// The compact value kept per object; cloned out to readers, so keep it cheap to clone
    /// (an `Arc`, a number, `()`).
    type Value: Clone + Send + Sync;
    /// The secondary lookup key (`()` when the index needs none).
    type Lookup: Clone + Eq + Hash + Send + Sync;

    /// The value kept of `obj`.
    fn value(&self, obj: &K) -> Self::Value;

    /// The lookup key of `obj`, if it is to be found by one.
    fn lookup(&self, obj: &K) -> Option<Self::Lookup>;
}

/// One kept object: its value and the lookup key it is filed under (shared with `by_lookup`).
#[derive(Debug)]
struct Entry<V, L> {
    value: V,
    lookup: Option<Arc<L>>,
}

/// The contents of an index: values by key, and keys by lookup. Each key and each distinct lookup
/// key is allocated once and shared (`Arc`) between the two maps.
#[derive(Debug)]
struct Contents<V, L> {
    entries: HashMap<Arc<ObjectKey>, Entry<V, L>>,
    by_lookup: HashMap<Arc<L>, BTreeSet<Arc<ObjectKey>>>,
}

impl<V, L> Default for Contents<V, L> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            by_lookup: HashMap::new(),
        }
    }
}

impl<V, L: Eq + Hash> Contents<V, L> {
    fn insert(&mut self, key: ObjectKey, value: V, lookup: Option<L>) {
        if let Some(entry) = self.entries.get_mut(&key)
            && entry.lookup.as_deref() == lookup.as_ref()
        {
            entry.value = value;
            return;
        }
        self.remove(&key);
        let key = Arc::new(key);
        let lookup = lookup.map(|l| self.link(l, key.clone()));
        self.entries.insert(key, Entry { value, lookup });
    }

    /// Sets the value of a kept object (keeping its lookup), or keeps a new one without a lookup.
    fn set_value(&mut self, key: ObjectKey, value: V) {
        match self.entries.get_mut(&key) {
            Some(entry) => entry.value = value,
            None => self.insert(key, value, None),
        }
    }

    fn remove(&mut self, key: &ObjectKey) {
        if let Some(Entry {
            lookup: Some(lookup), ..
        }) = self.entries.remove(key)
        {
            self.unlink(&lookup, key);
        }
    }

    /// Files `key` under `lookup`; returns the shared lookup key.
    fn link(&mut self, lookup: L, key: Arc<ObjectKey>) -> Arc<L> {
        let shared = match self.by_lookup.get_key_value(&lookup) {
            Some((shared, _)) => shared.clone(),
            None => Arc::new(lookup),
        };
        self.by_lookup.entry(shared.clone()).or_default().insert(key);
        shared
    }

    fn unlink(&mut self, lookup: &L, key: &ObjectKey) {
        if let Some(set) = self.by_lookup.get_mut(lookup) {
            set.remove(key);
            if set.is_empty() {
                self.by_lookup.remove(lookup);
            }
        }
    }
}

/// A watch-fed index of objects of kind `K`, kept as `P`'s projection. Share it as `Arc`.
pub struct WatchIndex<K, P: Projection<K>> {
    projection: P,
    live: RwLock<Contents<P::Value, P::Lookup>>,
    /// The (re-)list under way: built from `InitApply`, swapped in at `InitDone`.
    relist: Mutex<Option<Contents<P::Value, P::Lookup>>>,
    synced: watch::Sender<bool>,
    _kind: std::marker::PhantomData<fn(&K)>,
}

impl<K, P: Projection<K> + std::fmt::Debug> std::fmt::Debug for WatchIndex<K, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchIndex")
            .field("projection", &self.projection)
            .field("len", &self.len())
            .field("synced", &self.is_synced())
            .finish()
    }
}

impl<K: Resource, P: Projection<K> + Default> Default for WatchIndex<K, P> {
    fn default() -> Self {
        Self::new(P::default())
    }
}

/// Where `obj` is kept: its namespace (empty when cluster-scoped) and name; `None` without a name.
fn key_of<K: Resource>(obj: &K) -> Option<ObjectKey> {
    let meta = obj.meta();
    Some((meta.namespace.clone().unwrap_or_default(), meta.name.clone()?))
}

fn key(namespace: &str, name: &str) -> ObjectKey {
    (namespace.to_string(), name.to_string())
}

impl<K: Resource, P: Projection<K>> WatchIndex<K, P> {
    /// An empty, not yet synced index keeping objects as `projection` says.
    pub fn new(projection: P) -> Self {
        Self {
            projection,
            live: RwLock::default(),
            relist: Mutex::default(),
            synced: watch::channel(false).0,
            _kind: std::marker::PhantomData,
        }
    }

    /// Keeps `obj` (replacing what was kept under its key, and moving it to its new lookup key).
    pub fn apply(&self, obj: &K) {
        if let Some(k) = key_of(obj) {
            let (value, lookup) = self.project(obj);
            self.write().insert(k, value, lookup);
        }
    }

    /// Forgets `obj`.
    pub fn delete(&self, obj: &K) {
        if let Some(k) = key_of(obj) {
            self.write().remove(&k);
        }
    }

    /// Replaces the whole contents with `objs` at once (a complete list) and marks the index synced.
    pub fn reset<'a>(&self, objs: impl IntoIterator<Item = &'a K>)
    where
        K: 'a,
    {
        let mut fresh = Contents::default();
        for obj in objs {
            self.buffer(&mut fresh, obj);
        }
        self.swap_in(fresh);
    }

    /// Records a value this process just wrote for `namespace/name`, ahead of the watch event
    /// that will confirm it (the object keeps its lookup key; an unknown one gets none).
    pub fn record_local(&self, namespace: &str, name: &str, value: P::Value) {
        self.write().set_value(key(namespace, name), value);
    }

    /// Feeds one watch event: `Apply`/`Delete` take effect at once; `Init`, `InitApply` and
    /// `InitDone` build a re-list on the side and swap it in whole (see the module doc).
    pub fn observe(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => self.apply(obj),
            watcher::Event::Delete(obj) => self.delete(obj),
            watcher::Event::Init => *self.lock_relist() = Some(Contents::default()),
            watcher::Event::InitApply(obj) => {
                let mut relist = self.lock_relist();
                self.buffer(relist.get_or_insert_with(Contents::default), obj);
            }
            watcher::Event::InitDone => {
                let fresh = self.lock_relist().take().unwrap_or_default();
                self.swap_in(fresh);
            }
        }
    }

    /// Feeds every event of a watcher stream until it ends. Errors are skipped: kube's watcher
    /// retries by itself (with a backoff when the caller added one) and re-lists after a break.
    pub async fn follow<E>(&self, stream: impl Stream<Item = Result<watcher::Event<K>, E>>) {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(event) = event {
                self.observe(&event);
            }
        }
    }

    fn project(&self, obj: &K) -> (P::Value, Option<P::Lookup>) {
        (self.projection.value(obj), self.projection.lookup(obj))
    }

    fn buffer(&self, contents: &mut Contents<P::Value, P::Lookup>, obj: &K) {
        if let Some(k) = key_of(obj) {
            let (value, lookup) = self.project(obj);
            contents.insert(k, value, lookup);
        }
    }

    fn swap_in(&self, fresh: Contents<P::Value, P::Lookup>) {
        let old = std::mem::replace(&mut *self.write(), fresh);
        drop(old); // outside the lock
        self.synced.send_replace(true);
    }
}

impl<K, P: Projection<K>> WatchIndex<K, P> {
    /// The value kept for `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<P::Value> {
        self.read()
            .entries
            .get(&key(namespace, name))
            .map(|e| e.value.clone())
    }

    /// The keys of the objects filed under `lookup`, in `(namespace, name)` order.
    pub fn keys_under(&self, lookup: &P::Lookup) -> Vec<ObjectKey> {
        self.read()
            .by_lookup
            .get(lookup)
            .map(|set| set.iter().map(|k| ObjectKey::clone(k)).collect())
            .unwrap_or_default()
    }

    /// The values of the objects filed under `lookup`, in `(namespace, name)` order.
    pub fn values_under(&self, lookup: &P::Lookup) -> Vec<P::Value> {
        let live = self.read();
        live.by_lookup
            .get(lookup)
            .into_iter()
            .flatten()
            .filter_map(|k| live.entries.get(&**k).map(|e| e.value.clone()))
            .collect()
    }

    /// Number of objects kept.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether no object is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a first complete list has been seen.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Contents<P::Value, P::Lookup>> {
        self.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Contents<P::Value, P::Lookup>> {
        self.live.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_relist(&self) -> std::sync::MutexGuard<'_, Option<Contents<P::Value, P::Lookup>>> {
        self.relist.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event;

    /// Keeps a ConfigMap's `size` entry, filed under its `group` entry.
    #[derive(Debug, Default)]
    struct SizeByGroup;

    impl Projection<ConfigMap> for SizeByGroup {
        type Value = String;
        type Lookup = String;
        fn value(&self, cm: &ConfigMap) -> String {
            data(cm, "size")
        }
        fn lookup(&self, cm: &ConfigMap) -> Option<String> {
            cm.data.as_ref()?.get("group").cloned()
        }
    }

    fn data(cm: &ConfigMap, key: &str) -> String {
        cm.data
            .as_ref()
            .and_then(|d| d.get(key).cloned())
            .unwrap_or_default()
    }

    fn cm(ns: &str, name: &str, size: &str, group: Option<&str>) -> ConfigMap {
        let mut data = std::collections::BTreeMap::from([("size".to_string(), size.to_string())]);
        if let Some(g) = group {
            data.insert("group".into(), g.into());
        }
        let mut cm = ConfigMap {
            data: Some(data),
            ..ConfigMap::default()
        };
        cm.metadata.namespace = Some(ns.into());
        cm.metadata.name = Some(name.into());
        cm
    }

    type Index = WatchIndex<ConfigMap, SizeByGroup>;

    fn names(keys: Vec<ObjectKey>) -> Vec<String> {
        keys.into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn apply_keeps_the_projection_and_files_it_under_its_lookup() {
        let index = Index::default();
        index.apply(&cm("a", "two", "2", Some("g")));
        index.apply(&cm("a", "one", "1", Some("g")));
        index.apply(&cm("b", "three", "3", None));
        assert_eq!(index.get("a", "one").as_deref(), Some("1"));
        assert_eq!(index.get("b", "three").as_deref(), Some("3"));
        assert_eq!(index.get("b", "one"), None);
        assert_eq!(names(index.keys_under(&"g".into())), ["one", "two"]);
        assert_eq!(index.values_under(&"g".into()), ["1", "2"]);
        assert_eq!(index.len(), 3);
        assert!(!index.is_synced(), "applies alone are not a complete list");
    }

    #[test]
    fn an_apply_moves_the_object_to_its_new_lookup_and_a_delete_unfiles_it() {
        let index = Index::default();
        index.apply(&cm("a", "x", "1", Some("g")));
        index.apply(&cm("a", "x", "5", Some("h")));
        assert!(index.keys_under(&"g".into()).is_empty());
        assert_eq!(index.values_under(&"h".into()), ["5"]);
        index.apply(&cm("a", "x", "6", None));
        assert!(index.keys_under(&"h".into()).is_empty());
        assert_eq!(index.get("a", "x").as_deref(), Some("6"));
        index.apply(&cm("a", "x", "7", Some("h")));
        index.delete(&cm("a", "x", "", None));
        assert!(index.keys_under(&"h".into()).is_empty());
        assert!(index.is_empty());
        index.delete(&cm("a", "never-seen", "", None));
        let mut nameless = cm("a", "x", "1", None);
        nameless.metadata.name = None;
        index.apply(&nameless);
        assert!(index.is_empty(), "an object without a name is ignored");
    }

    #[tokio::test]
    async fn reset_replaces_everything_and_drops_what_vanished() {
        let index = Index::default();
        index.apply(&cm("a", "gone", "1", Some("g")));
        index.apply(&cm("a", "kept", "1", Some("g")));
        index.reset(&[cm("a", "kept", "2", Some("h")), cm("a", "new", "3", Some("g"))]);
        index.wait_until_synced().await;
        assert!(index.get("a", "gone").is_none());
        assert_eq!(index.get("a", "kept").as_deref(), Some("2"));
        assert_eq!(names(index.keys_under(&"g".into())), ["new"]);
        assert_eq!(names(index.keys_under(&"h".into())), ["kept"]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_relist_swaps_in_whole_at_init_done_and_drops_objects_that_vanished() {
        let index = Index::default();
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(cm("a", "old", "1", Some("g"))));
        index.observe(&Event::InitApply(cm("a", "stays", "1", Some("g"))));
        assert!(
            index.is_empty() && !index.is_synced(),
            "the first list is not complete yet"
        );
        index.observe(&Event::InitDone);
        assert!(index.is_synced());
        assert_eq!(names(index.keys_under(&"g".into())), ["old", "stays"]);

        // The watch breaks; "old" is deleted meanwhile and "stays" changes.
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(cm("a", "stays", "9", Some("g"))));
        assert_eq!(
            index.get("a", "old").as_deref(),
            Some("1"),
            "readers see the old contents until the re-list is complete"
        );
        assert_eq!(index.get("a", "stays").as_deref(), Some("1"));
        index.observe(&Event::InitDone);
        assert!(index.get("a", "old").is_none());
        assert_eq!(index.get("a", "stays").as_deref(), Some("9"));
        assert_eq!(names(index.keys_under(&"g".into())), ["stays"]);
        assert!(index.is_synced(), "a re-list keeps the index synced");
    }

    #[test]
    fn an_empty_relist_empties_the_index() {
        let index = Index::default();
        index.apply(&cm("a", "x", "1", Some("g")));
        index.observe(&Event::Init);
        index.observe(&Event::InitDone);
        assert!(index.is_empty());
        assert!(index.keys_under(&"g".into()).is_empty());
    }

    #[test]
    fn a_local_write_keeps_the_lookup_and_the_next_event_overrides_it() {
        let index = Index::default();
        index.apply(&cm("a", "x", "1", Some("g")));
        index.record_local("a", "x", "4".into());
        assert_eq!(index.values_under(&"g".into()), ["4"]);
        index.apply(&cm("a", "x", "5", Some("g")));
        assert_eq!(index.get("a", "x").as_deref(), Some("5"));
        index.record_local("a", "unknown", "2".into());
        assert_eq!(index.get("a", "unknown").as_deref(), Some("2"));
        assert_eq!(index.keys_under(&"g".into()).len(), 1);
    }

    #[tokio::test]
    async fn follow_feeds_a_stream_and_skips_errors() {
        let index = Index::default();
        let events: Vec<Result<Event<ConfigMap>, &str>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "x", "1", None))),
            Err("watch broke"),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("a", "y", "2", None))),
        ];
        index.follow(futures::stream::iter(events)).await;
        assert!(index.is_synced());
        assert_eq!(index.get("a", "x").as_deref(), Some("1"));
        assert_eq!(index.get("a", "y").as_deref(), Some("2"));
    }
}
