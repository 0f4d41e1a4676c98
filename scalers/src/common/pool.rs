//! [`WeakPool`]: shared per-key values (clients, semaphores) that live only as long as someone
//! uses them. The pool keeps a [`Weak`] per key; the users (the scalers) hold the [`Arc`]s. When
//! the last user of a key is dropped (its object deleted, or rebuilt with rotated credentials,
//! which is a new key), the value is dropped with it (a client closes its connections), and the
//! pool forgets the key on its next use.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Values shared per key while at least one user holds them.
pub struct WeakPool<K, V> {
    map: Mutex<HashMap<K, Weak<V>>>,
}

impl<K: Eq + Hash, V> WeakPool<K, V> {
    /// An empty pool.
    pub fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Weak<V>>> {
        // Every critical section leaves the map consistent, even if a holder panicked.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live value for `key`, or a new one from `make` (called under the pool's lock, so it
    /// must be cheap and must not use the pool). Forgets every key nobody uses any more (users
    /// take their value when they are built, not per request, so the sweep is rare).
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        let mut map = self.lock();
        map.retain(|_, v| v.strong_count() > 0);
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let value = Arc::new(make());
        map.insert(key, Arc::downgrade(&value));
        value
    }

    /// How many keys have a live value.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|v| v.strong_count() > 0).count()
    }

    /// Whether no key has a live value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys the pool remembers, live or not yet forgotten (for tests).
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }
}

impl<K: Eq + Hash, V> Default for WeakPool<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash, V> fmt::Debug for WeakPool<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakPool").field("live", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn users_share_a_value_and_an_unused_one_is_dropped_and_forgotten() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool: WeakPool<&str, Counted> = WeakPool::new();
        let a1 = pool.get_or_insert_with("a", || Counted(dropped.clone()));
        let a2 = pool.get_or_insert_with("a", || unreachable!("shared while used"));
        assert!(Arc::ptr_eq(&a1, &a2));
        let b = pool.get_or_insert_with("b", || Counted(dropped.clone()));
        assert_eq!(pool.len(), 2);
        drop(a1);
        assert_eq!(
            (pool.len(), dropped.load(Ordering::SeqCst)),
            (2, 0),
            "a2 still uses a"
        );
        drop(a2);
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the last user dropped the value"
        );
        assert_eq!(pool.len(), 1);
        // The next use forgets the dead key.
        assert_eq!(pool.remembered(), 2);
        let _c = pool.get_or_insert_with("c", || Counted(dropped.clone()));
        assert_eq!(pool.remembered(), 2, "a forgotten, c added");
        drop(b);
        let _a = pool.get_or_insert_with("a", || Counted(dropped.clone()));
        assert_eq!((pool.len(), pool.remembered()), (2, 2));
    }
}
