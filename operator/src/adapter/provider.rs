//! The operator's answer to the metrics adapter: metric values from the poll cache. An HPA request
//! never waits on a source unless the cached value is older than the object's pollingInterval;
//! the source is then queried once, however many requests arrive together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_metrics_adapter::{MetricProvider, MetricValue, ProviderError};
use jiff::Timestamp;

use crate::adapter::leader_forward::LeaderForwarder;
use crate::adapter::metric_cache::{CachedMetric, MetricKey};
use crate::context::Shared;
use crate::infra::telemetry::OperatorMetrics;
use crate::scale::composite::{self, Composite, CompositeValue, Input};
use crate::scale::scale_loop::LoopConfig;
use ebb_scalers::metric_name::COMPOSITE_METRIC_NAME;
use futures::future::join_all;

/// The leader's shared state, present only while this replica leads.
pub type LeaderState = Arc<std::sync::RwLock<Option<Arc<Shared>>>>;

/// Serves metric values from the operator's cache.
pub struct CacheProvider {
    leader: LeaderState,
    forward: Option<Arc<LeaderForwarder>>,
    metrics: Option<Arc<OperatorMetrics>>,
    refreshing: Refreshes,
    /// The one namespace watched (`--namespace`), when not every namespace.
    scope: Option<String>,
}

/// One refresh per metric at a time: requests for a stale metric queue behind the one that
/// queries the source. An entry lives only while someone holds or waits for it.
#[derive(Default)]
struct Refreshes {
    entries: Mutex<HashMap<MetricKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A claim on a metric's refresh lock; the entry leaves the map with its last claim (dropped
/// after the refresh, or when a waiting request is cancelled).
struct Claim<'a> {
    owner: &'a Refreshes,
    key: MetricKey,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Refreshes {
    fn claim(&self, key: &MetricKey) -> Claim<'_> {
        let lock = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        Claim {
            owner: self,
            key: key.clone(),
            lock,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut entries = self.owner.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and this claim's: nobody else holds or waits for it. Claims are
        // only made under the map's lock, so none can appear meanwhile.
        if Arc::strong_count(&self.lock) <= 2 {
            entries.remove(&self.key);
        }
    }
}

impl CacheProvider {
    /// A provider over the leader's state (empty while this replica stands by); a standby
    /// forwards to the leader when `forward` is given.
    pub fn new(leader: LeaderState, forward: Option<Arc<LeaderForwarder>>) -> Self {
        CacheProvider {
            leader,
            forward,
            metrics: None,
            refreshing: Refreshes::default(),
            scope: None,
        }
    }
}

impl CacheProvider {
    /// Counts every answer in `metrics` (`ebb_metric_requests_total`).
    pub fn with_metrics(mut self, metrics: Arc<OperatorMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Watches only `namespace` (`--namespace`): a metric of any other namespace is not this
    /// operator's ([`ProviderError::NotMine`]).
    pub fn with_scope(mut self, namespace: Option<String>) -> Self {
        self.scope = namespace;
        self
    }

    /// The answer, from the leader's cache or forwarded to the leader.
    async fn answer(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> (Result<MetricValue, ProviderError>, &'static str) {
        if self.scope.as_deref().is_some_and(|scope| scope != namespace) {
            return (Err(ProviderError::NotMine), "not-owned");
        }
        let shared = self.leader.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(shared) = shared else {
            return match &self.forward {
                Some(f) => (
                    f.forward(namespace, scaled_object, &metric.to_lowercase()).await,
                    "forwarded",
                ),
                None => (
                    Err(ProviderError::Unavailable(
                        "this ebb replica is on standby; the leader serves metrics".into(),
                    )),
                    "standby",
                ),
            };
        };
        (
            self.leader_answer(&shared, namespace, scaled_object, metric)
                .await,
            "leader",
        )
    }
}

fn served(m: &CachedMetric) -> MetricValue {
    let age = m.at.elapsed();
    let timestamp = Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(age).unwrap_or_default())
        .unwrap_or_else(|_| Timestamp::now());
    MetricValue {
        value: m.value,
        timestamp,
    }
}

/// The answer for an object with neither a scale loop nor a cached value. A leader that took over
/// moments ago has not listed (or not yet reconciled) every object: that is a 503, which the HPA
/// retries, not a 404 — only an object absent from a complete list is not this operator's
/// (another adapter's, when a delegate is chained).
fn without_loop(listed: bool, exists: bool) -> ProviderError {
    if !listed {
        ProviderError::Unavailable(
            "this replica has just become the leader and has not listed ScaledObjects yet".into(),
        )
    } else if exists {
        ProviderError::Unavailable("the ScaledObject has no running scale loop yet".into())
    } else {
        ProviderError::NotMine
    }
}

#[async_trait::async_trait]
impl MetricProvider for CacheProvider {
    async fn metric(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError> {
        let (result, answered_by) = self.answer(namespace, scaled_object, metric).await;
        if let Some(m) = &self.metrics {
            m.observe_metric_request(answered_by, result.is_ok());
        }
        result
    }
}

impl CacheProvider {
    /// The leader's answer: the poll cache, or one fresh sample when it is too old.
    async fn leader_answer(
        &self,
        shared: &Arc<Shared>,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError> {
        let key = MetricKey {
            namespace: namespace.to_string(),
            scaled_object: scaled_object.to_string(),
            metric: metric.to_lowercase(),
        };
        let object = (namespace.to_string(), scaled_object.to_string());
        let Some(config) = shared.loop_config(&object) else {
            return match shared.cache.get(&key) {
                Some(m) => Ok(served(&m)),
                None => Err(without_loop(
                    shared.objects_listed(),
                    shared.object_exists(&object),
                )),
            };
        };
        if let Some(composite) = &config.composite {
            // With scalingModifiers the HPA reads only the composite.
            if key.metric != COMPOSITE_METRIC_NAME {
                return Err(ProviderError::NotMine);
            }
            return self.composite_answer(shared, &config, composite, key).await;
        }
        let Some(trigger) = config.triggers.iter().find(|t| t.metric_name == key.metric) else {
            return Err(ProviderError::NotMine);
        };
        // useCachedMetrics: serve whatever the loop cached last. Otherwise (KEDA's contract) the
        // value is at most one pollingInterval old.
        if trigger.use_cached_metrics
            && let Some(m) = shared.cache.get(&key)
        {
            return Ok(served(&m));
        }
        // Sources whose samples cost nothing (a snapshot kept current by a batched client) are
        // sampled on every request, so the HPA follows them closely.
        let max_age = if trigger.scaler.samples_are_cheap() {
            Duration::ZERO
        } else {
            config.polling_interval
        };
        self.cached_or(shared, key.clone(), max_age, || async {
            let sample = trigger.scaler.sample().await.map(|s| s.value);
            settle(shared, key, sample.map_err(|e| e.to_string()))
        })
        .await
    }

    /// Serves `key` from the cache while it is no older than `max_age`; else runs `refresh`, one
    /// request at a time per metric (the requests that waited serve what it cached).
    async fn cached_or<F, Fut>(
        &self,
        shared: &Shared,
        key: MetricKey,
        max_age: Duration,
        refresh: F,
    ) -> Result<MetricValue, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<MetricValue, ProviderError>>,
    {
        let fresh = |m: &CachedMetric| m.at.elapsed() <= max_age;
        if let Some(m) = shared.cache.get(&key).filter(fresh) {
            return Ok(served(&m));
        }
        let claim = self.refreshing.claim(&key);
        let _guard = claim.lock.lock().await;
        if let Some(m) = shared.cache.get(&key).filter(fresh) {
            return Ok(served(&m));
        }
        refresh().await
    }
}

/// Caches a new value and serves it. A failure serves the cached value while it is a fallback
/// value (the fallback applies: keep serving it), else is the error.
fn settle(shared: &Shared, key: MetricKey, value: Result<f64, String>) -> Result<MetricValue, ProviderError> {
    match value {
        Ok(value) => {
            let m = CachedMetric {
                value,
                at: Instant::now(),
                failed: false,
            };
            shared.cache.put(key, m.clone());
            Ok(served(&m))
        }
        Err(e) => match shared.cache.get(&key).filter(|m| m.failed) {
            Some(m) => Ok(served(&m)),
            None => Err(ProviderError::Unavailable(e)),
        },
    }
}

impl CacheProvider {
    /// The composite: as the loop cached it while fresh (every trigger's source cheap: never),
    /// else the formula over one sample of each trigger (fresh cached trigger values reused). A
    /// failing trigger or evaluation keeps serving a cached fallback value, else is an error (the
    /// HPA holds): without the loop's failure counts no trigger is substituted here.
    async fn composite_answer(
        &self,
        shared: &Arc<Shared>,
        config: &LoopConfig,
        composite: &Composite,
        key: MetricKey,
    ) -> Result<MetricValue, ProviderError> {
        let max_age = if config.triggers.iter().all(|t| t.scaler.samples_are_cheap()) {
            Duration::ZERO
        } else {
            config.polling_interval
        };
        let fresh = |m: &CachedMetric| m.at.elapsed() <= max_age;
        self.cached_or(shared, key.clone(), max_age, || async {
            let samples = join_all(config.triggers.iter().map(|t| async {
                let trigger_key = MetricKey {
                    metric: t.metric_name.clone(),
                    ..key.clone()
                };
                if !t.scaler.samples_are_cheap()
                    && let Some(m) = shared.cache.get(&trigger_key).filter(|m| !m.failed && fresh(m))
                {
                    return Some(m.value);
                }
                let sample = t.scaler.sample().await.ok()?;
                shared.cache.put(
                    trigger_key,
                    CachedMetric {
                        value: sample.value,
                        at: Instant::now(),
                        failed: false,
                    },
                );
                Some(sample.value)
            }))
            .await;
            let inputs: Vec<Input<'_>> = samples
                .iter()
                .zip(&config.triggers)
                .map(|(s, t)| match s {
                    Some(v) => Input::Value(*v),
                    None => Input::Failed {
                        metric: &t.metric_name,
                        failures: 1,
                    },
                })
                .collect();
            let value = match composite::evaluate(composite, &inputs, None) {
                CompositeValue::Value { value, .. } => Ok(value),
                CompositeValue::Failed(e) => Err(e),
                _ => Err("the formula gave no value".to_string()),
            };
            settle(shared, key, value)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str) -> MetricKey {
        MetricKey {
            namespace: "ns".into(),
            scaled_object: "so".into(),
            metric: metric.into(),
        }
    }

    #[tokio::test]
    async fn refresh_entries_leave_with_their_last_claim() {
        let r = Refreshes::default();
        {
            let claim = r.claim(&key("a"));
            let _held = claim.lock.lock().await;
            assert_eq!(r.len(), 1);
        }
        assert_eq!(r.len(), 0, "a finished refresh leaves nothing behind");

        // A second request waits behind the first; the entry stays until both are done.
        let first = r.claim(&key("a"));
        let held = first.lock.lock().await;
        let second = r.claim(&key("a"));
        assert!(Arc::ptr_eq(&first.lock, &second.lock));
        drop(held);
        drop(first);
        assert_eq!(r.len(), 1, "the waiting request still needs it");
        drop(second);
        assert_eq!(r.len(), 0);

        // A request cancelled while it waits leaves nothing behind either.
        let first = r.claim(&key("b"));
        let held = first.lock.lock().await;
        let waiting = async {
            let claim = r.claim(&key("b"));
            let _g = claim.lock.lock().await;
        };
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), waiting)
                .await
                .is_err()
        );
        drop(held);
        drop(first);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_new_leader_answers_unavailable_until_it_knows_the_object() {
        assert!(matches!(
            without_loop(false, false),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(without_loop(true, true), ProviderError::Unavailable(_)));
        assert!(matches!(without_loop(true, false), ProviderError::NotMine));
    }
}
