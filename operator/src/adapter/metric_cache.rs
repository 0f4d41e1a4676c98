//! The poll cache: the last value of every trigger, written by the scale loop and read by the
//! metrics adapter, so that an HPA request never waits on a broker.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

/// Identifies one metric of one ScaledObject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricKey {
    /// Namespace.
    pub namespace: String,
    /// ScaledObject name.
    pub scaled_object: String,
    /// Metric name (lower-case).
    pub metric: String,
}

/// The last poll result of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedMetric {
    /// Value the HPA should see: the trigger's value, or the fallback value while fallback applies.
    pub value: f64,
    /// When it was polled.
    pub at: Instant,
    /// Whether the last poll failed (the value is then the last good one, or the fallback value).
    pub failed: bool,
}

/// Shared, thread-safe cache of metric values.
#[derive(Debug, Default)]
pub struct MetricCache {
    inner: RwLock<HashMap<MetricKey, CachedMetric>>,
}

impl MetricCache {
    /// Stores a metric's latest value.
    pub fn put(&self, key: MetricKey, metric: CachedMetric) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, metric);
    }
    /// Reads a metric.
    pub fn get(&self, key: &MetricKey) -> Option<CachedMetric> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
    /// Forgets every metric of a ScaledObject.
    pub fn remove_object(&self, namespace: &str, scaled_object: &str) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| !(k.namespace == namespace && k.scaled_object == scaled_object));
    }
    /// Number of cached metrics.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).len()
    }
    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(so: &str, m: &str) -> MetricKey {
        MetricKey {
            namespace: "ns".into(),
            scaled_object: so.into(),
            metric: m.into(),
        }
    }

    #[test]
    fn put_get_remove() {
        let c = MetricCache::default();
        let m = CachedMetric {
            value: 3.0,
            at: Instant::now(),
            failed: false,
        };
        c.put(key("a", "s0-x"), m.clone());
        c.put(key("b", "s0-x"), m.clone());
        assert_eq!(c.get(&key("a", "s0-x")), Some(m));
        c.remove_object("ns", "a");
        assert_eq!(c.get(&key("a", "s0-x")), None);
        assert_eq!(c.len(), 1);
    }
}
