//! [`RabbitMqClients`]: the pools shared by every rabbitmq trigger of a factory (AMQP connection
//! slots, HTTP clients and rustls configurations keyed by TLS settings, management watchers).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::amqp::{AmqpKey, AmqpSlot};
use super::management::HttpTarget;
use super::tls::TlsSettings;
use super::watch::{HttpWatchKey, QueueWatcher, WATCH_TICK, WatchCounters, WatcherStats};
use crate::ScalerError;
use crate::common::http::{HttpsClient, pooled_client};

/// The clients shared by every rabbitmq trigger of a factory: pooled AMQP connections and HTTP
/// clients (see the [folder's overview](super)).
pub struct RabbitMqClients {
    /// Timeout of one HTTP request without `timeout`, and of one AMQP sample (dial included).
    pub(super) default_timeout: Duration,
    /// TLS client configurations by settings (shared by AMQP and HTTP).
    tls_configs: Mutex<HashMap<TlsSettings, Arc<rustls::ClientConfig>>>,
    /// HTTP clients by TLS settings; each keeps its own connection pool.
    http_clients: Mutex<HashMap<TlsSettings, HttpsClient>>,
    /// AMQP connection slots by identity; a slot lives while a scaler holds it.
    pub(super) amqp_slots: Mutex<HashMap<AmqpKey, Weak<AmqpSlot>>>,
    /// Management watchers by listing identity; a watcher lives while a scaler holds it.
    http_watchers: Mutex<HashMap<HttpWatchKey, Weak<QueueWatcher>>>,
    /// The counters every watcher of these pools adds to.
    pub(super) watch_counters: Arc<WatchCounters>,
    /// How often a watcher makes a round; zero disables the watchers.
    pub(super) watch_tick: Duration,
}

impl RabbitMqClients {
    /// Creates the (empty) pools. `default_timeout` bounds an HTTP request when the trigger has no
    /// `timeout`, and one AMQP sample (dial and `queue.declare`). Needs no async runtime.
    pub fn new(default_timeout: Duration) -> Self {
        Self {
            default_timeout,
            tls_configs: Mutex::new(HashMap::new()),
            http_clients: Mutex::new(HashMap::new()),
            amqp_slots: Mutex::new(HashMap::new()),
            http_watchers: Mutex::new(HashMap::new()),
            watch_counters: Arc::new(WatchCounters::default()),
            watch_tick: WATCH_TICK,
        }
    }

    /// Sets how often each watcher reads its queues (default [`WATCH_TICK`]); zero disables the
    /// watchers (every trigger is then poll-only and [`Scaler::activity_changes`](crate::Scaler::activity_changes) never fires).
    pub fn with_watch_tick(mut self, tick: Duration) -> Self {
        self.watch_tick = tick;
        self
    }

    /// What the activity watchers are doing now.
    pub fn watcher_stats(&self) -> WatcherStats {
        let http: Vec<Arc<QueueWatcher>> = lock(&self.http_watchers)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let amqp: Vec<Arc<QueueWatcher>> = lock(&self.amqp_slots)
            .values()
            .filter_map(Weak::upgrade)
            .map(|slot| slot.watch.clone())
            .collect();
        let with_triggers =
            |watchers: &[Arc<QueueWatcher>]| watchers.iter().filter(|w| w.trigger_count() > 0).count();
        let all = || http.iter().chain(&amqp);
        WatcherStats {
            http_watchers: with_triggers(&http),
            amqp_watchers: with_triggers(&amqp),
            triggers: all().map(|w| w.trigger_count()).sum(),
            running: all().filter(|w| w.is_running()).count(),
            rounds: self.watch_counters.rounds.load(Ordering::Relaxed),
            requests: self.watch_counters.requests.load(Ordering::Relaxed),
        }
    }

    /// The management watcher of `listing` (a vhost listing request: URL, authorization, TLS
    /// settings), created on first use.
    pub(super) fn http_watcher(&self, listing: &HttpTarget) -> Arc<QueueWatcher> {
        let key: HttpWatchKey = (
            listing.uri.to_string(),
            listing.authorization.as_ref().map(|a| a.as_bytes().to_vec()),
            listing.tls.clone(),
        );
        let mut watchers = lock(&self.http_watchers);
        if let Some(w) = watchers.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        watchers.retain(|_, w| w.strong_count() > 0);
        let w = QueueWatcher::new(self.watch_tick);
        watchers.insert(key, Arc::downgrade(&w));
        w
    }

    /// The timeout used when a trigger sets none.
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// How many AMQP connections are open now (dialled and not failed). Triggers on the same
    /// host, vhost, credentials and TLS settings share one.
    pub fn amqp_connection_count(&self) -> usize {
        lock(&self.amqp_slots)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|slot| slot.live().is_some())
            .count()
    }

    /// How many distinct HTTP clients (one per TLS setting) have been created.
    pub fn http_client_count(&self) -> usize {
        lock(&self.http_clients).len()
    }

    /// The rustls configuration for these settings, built once and shared.
    pub(super) fn tls_config(
        &self,
        settings: &TlsSettings,
    ) -> Result<Arc<rustls::ClientConfig>, ScalerError> {
        if let Some(config) = lock(&self.tls_configs).get(settings) {
            return Ok(config.clone());
        }
        let config = Arc::new(settings.client_config()?);
        Ok(lock(&self.tls_configs)
            .entry(settings.clone())
            .or_insert(config)
            .clone())
    }

    /// The HTTP client for these settings, created once and shared.
    pub(super) fn http_client(&self, settings: &TlsSettings) -> Result<HttpsClient, ScalerError> {
        if let Some(client) = lock(&self.http_clients).get(settings) {
            return Ok(client.clone());
        }
        let tls = (*self.tls_config(settings)?).clone();
        let client = pooled_client(tls, None);
        Ok(lock(&self.http_clients)
            .entry(settings.clone())
            .or_insert(client)
            .clone())
    }

    /// The slot of an AMQP connection identity, shared with every scaler that uses it.
    pub(super) fn amqp_slot(&self, key: AmqpKey) -> Arc<AmqpSlot> {
        let mut slots = lock(&self.amqp_slots);
        if let Some(slot) = slots.get(&key).and_then(Weak::upgrade) {
            return slot;
        }
        slots.retain(|_, slot| slot.strong_count() > 0);
        let slot = Arc::new(AmqpSlot::new(self.watch_tick));
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }
}

impl Default for RabbitMqClients {
    fn default() -> Self {
        Self::new(crate::FactoryOptions::DEFAULT_HTTP_TIMEOUT)
    }
}

impl fmt::Debug for RabbitMqClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqClients")
            .field("default_timeout", &self.default_timeout)
            .field("amqp_connections", &self.amqp_connection_count())
            .field("http_clients", &self.http_client_count())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical section
/// is a single map operation).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
