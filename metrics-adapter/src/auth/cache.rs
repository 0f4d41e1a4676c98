//! The caches of review results: bounded, least recently used first out, each entry with its own
//! expiry (an allowed decision lives longer than a denial). Keys are SHA-256 digests, so no token
//! is kept. The clock is a parameter, so the eviction and expiry rules are tested without
//! sleeping; the lock is never held across an await.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

/// A cache key: a SHA-256 digest of what was reviewed.
pub(crate) type Key = [u8; 32];

/// How long review results are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheTtls {
    /// Authenticated tokens and allowed decisions.
    pub allowed: Duration,
    /// Unknown tokens and denied decisions (shorter: a permission just granted is seen soon).
    pub denied: Duration,
}

impl CacheTtls {
    /// The same TTL for both outcomes (zero disables caching).
    pub fn uniform(ttl: Duration) -> Self {
        Self {
            allowed: ttl,
            denied: ttl,
        }
    }
}

/// Entries kept per cache at most; the least recently used goes when a new one arrives.
pub(crate) const CACHE_CAPACITY: usize = 10_000;

/// A bounded LRU map whose entries expire.
pub(crate) struct ReviewCache<V> {
    entries: Mutex<LruCache<Key, (Instant, V)>>,
}

impl<V: Clone> ReviewCache<V> {
    /// An empty cache of at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The unexpired value for `key`, which becomes the most recently used; an expired entry is
    /// removed.
    pub(crate) fn get(&self, key: &Key, now: Instant) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `ttl` (zero: not stored). When full, the least recently used entry
    /// makes room.
    pub(crate) fn insert(&self, key: Key, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let expires = now.checked_add(ttl).unwrap_or(now);
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(key, (expires, value));
    }

    /// Entries held (expired ones included until they are read or pushed out).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k
    }

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let cache = ReviewCache::new(10);
        let t0 = Instant::now();
        cache.insert(key(1), "allowed", Duration::from_secs(120), t0);
        cache.insert(key(2), "denied", Duration::from_secs(30), t0);
        cache.insert(key(3), "off", Duration::ZERO, t0);
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(cache.get(&key(1), t1), Some("allowed"));
        assert_eq!(cache.get(&key(2), t1), None);
        assert_eq!(cache.get(&key(3), t0), None);
        assert_eq!(cache.len(), 1, "the expired entry was removed when read");
        assert_eq!(cache.get(&key(1), t0 + Duration::from_secs(120)), None);
    }

    #[test]
    fn a_flood_of_new_keys_keeps_the_hot_entries() {
        let cache = ReviewCache::new(100);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(120);
        cache.insert(key(0), "hot", ttl, t0);
        // Ten times the capacity in one-off keys, with the hot key read now and then (as the HPA
        // reads its metric every sync period).
        for n in 1..=1_000 {
            cache.insert(key(n), "cold", ttl, t0);
            if n % 50 == 0 {
                assert_eq!(cache.get(&key(0), t0), Some("hot"), "after {n} inserts");
            }
        }
        assert_eq!(cache.len(), 100, "bounded");
        assert_eq!(cache.get(&key(0), t0), Some("hot"));
        // Nothing was cleared wholesale: the most recent cold keys are all there.
        assert!((950..=1_000).all(|n| cache.get(&key(n), t0).is_some()));
        // The least recently used went first.
        assert_eq!(cache.get(&key(1), t0), None);
    }
}
