//! Cold activation: watchers that read the registered triggers' queues every
//! [`WATCH_TICK`] (0.5 s, [`crate::ACTIVITY_WATCH_TICK`]) and flip their
//! [`Scaler::activity_changes`](crate::Scaler::activity_changes) channels when the activity
//! changes.
//!
//! - **Management API**: one [`HttpWatcher`] per (host, credentials, TLS settings, vhost) lists the
//!   vhost's queues in one request per tick (`/api/queues/<vhost>?columns=` [`LISTING_COLUMNS`])
//!   for every mode. The statistics themselves lag the broker by up to its
//!   `collect_statistics_interval` (5 s by default). `useRegex` triggers stay poll-only (the
//!   broker matches the regex).
//! - **AMQP**: one watcher per pooled connection makes one passive `queue.declare` per distinct
//!   watched queue each tick over one channel of that connection (no extra connection). It starts
//!   reading once a poll has dialled the connection, and redials a failed one after that. A queue
//!   whose declare fails (the broker then closes the channel) is skipped for 5 s.
//!
//! A failed or inconclusive read flips nothing (errors are the polls' to report); after failures a
//! watcher backs off up to 5 s. A watcher with no trigger left ends its task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use serde_json::Value as Json;
use tokio::sync::watch;

use super::amqp::{AmqpSlot, connection_failed, slot_connection};
use super::clients::{RabbitMqClients, lock};
use super::management::{HttpTarget, http_get_json};
use super::stats::{Mode, QueueStats, evaluate, queue_stats_from_json};
use super::tls::TlsSettings;

/// How often a watcher reads its queues while it has triggers. See
/// [`crate::ACTIVITY_WATCH_TICK`].
pub const WATCH_TICK: Duration = crate::ACTIVITY_WATCH_TICK;

/// The longest pause between watcher rounds after failed rounds.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the AMQP watcher leaves a queue alone after its passive declare failed (not found,
/// access refused): each such failure costs the broker closing the channel.
const AMQP_QUEUE_RETRY: Duration = Duration::from_secs(5);

/// The columns the management watcher lists: what every mode's value needs.
pub const LISTING_COLUMNS: &str =
    "name,messages,messages_ready,message_stats.publish_details.rate,message_stats.deliver_get_details.rate";

/// Counters of the activity watchers of a [`RabbitMqClients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatcherStats {
    /// Management watchers alive (one per host, credentials, TLS settings and vhost).
    pub http_watchers: usize,
    /// AMQP connections with watched queues.
    pub amqp_watchers: usize,
    /// Triggers registered over all watchers.
    pub triggers: usize,
    /// Watchers whose task is running.
    pub running: usize,
    /// Rounds made so far.
    pub rounds: u64,
    /// Requests made so far: management listings and passive `queue.declare`s.
    pub requests: u64,
}

/// Indexes a management API queue listing (`/api/queues/<vhost>`, a JSON array of queue
/// objects) by queue name; `None` when it is not such a listing.
pub fn index_listing(listing: &Json) -> Option<HashMap<&str, &Json>> {
    listing
        .as_array()?
        .iter()
        .map(|q| Some((q.get("name")?.as_str()?, q)))
        .collect()
}

/// The activity of `queue` in an indexed listing, exactly as [`Scaler::sample`] computes it from
/// the queue's own statistics ([`queue_stats_from_json`], then [`evaluate`]); `None` when the
/// listing cannot tell (queue not listed, statistics not collected yet).
pub fn listed_activity(
    index: &HashMap<&str, &Json>,
    queue: &str,
    mode: Mode,
    exclude_unacknowledged: bool,
    activation: f64,
) -> Option<bool> {
    let stats = queue_stats_from_json(index.get(queue)?).ok()?;
    Some(evaluate(mode, &stats, exclude_unacknowledged, activation).active)
}

/// What a watcher needs of one registered trigger.
#[derive(Clone)]
pub(super) struct WatchSpec {
    /// The queue's name.
    pub(super) queue: String,
    /// The trigger's mode.
    pub(super) mode: Mode,
    /// Whether ready messages only are counted.
    pub(super) exclude_unacknowledged: bool,
    /// The activation threshold.
    pub(super) activation: f64,
}

/// The triggers of one watcher and whether its task runs (set and cleared under the lock, so
/// that a registration racing with the task's end starts a new task).
#[derive(Default)]
pub(super) struct WatchState {
    next_id: u64,
    pub(super) running: bool,
    pub(super) triggers: HashMap<u64, (WatchSpec, watch::Sender<bool>)>,
}

impl WatchState {
    fn register(&mut self, spec: WatchSpec) -> (u64, watch::Receiver<bool>) {
        self.next_id += 1;
        let (sender, receiver) = watch::channel(false);
        self.triggers.insert(self.next_id, (spec, sender));
        (self.next_id, receiver)
    }

    /// A runtime to spawn the task on, when it should start now.
    fn start(&mut self) -> Option<tokio::runtime::Handle> {
        if self.running || self.triggers.is_empty() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        self.running = true;
        Some(runtime)
    }

    /// Marks the task stopped when no trigger is left.
    fn finish_if_idle(&mut self) -> bool {
        if self.triggers.is_empty() {
            self.running = false;
            return true;
        }
        false
    }

    fn specs(&self) -> Vec<(u64, WatchSpec)> {
        self.triggers
            .iter()
            .map(|(id, (spec, _))| (*id, spec.clone()))
            .collect()
    }

    /// Flips the channels whose activity changed.
    fn publish(&self, results: &[(u64, bool)]) {
        for (id, active) in results {
            if let Some((_, sender)) = self.triggers.get(id) {
                sender.send_if_modified(|current| {
                    let changed = *current != *active;
                    *current = *active;
                    changed
                });
            }
        }
    }
}

/// The watchers' shared counters.
#[derive(Default)]
pub(super) struct WatchCounters {
    pub(super) rounds: AtomicU64,
    pub(super) requests: AtomicU64,
}

/// Identity of a management watcher: the listing URL, the authorization and the TLS settings.
/// Holds credentials: never printed.
pub(super) type HttpWatchKey = (String, Option<Vec<u8>>, TlsSettings);

/// Lists one vhost's queues every tick for all its registered (non-regex) management triggers.
pub(super) struct HttpWatcher {
    pub(super) target: HttpTarget,
    /// The broker address, credentials masked.
    pub(super) shown: String,
    pub(super) state: Mutex<WatchState>,
}

fn pause_after(failures: u32, tick: Duration) -> Duration {
    tick.saturating_mul(1 << failures.min(3))
        .min(tick.max(WATCH_MAX_BACKOFF))
}

/// A management watcher's task: a listing every tick while triggers are registered.
async fn http_watch_loop(watcher: Weak<HttpWatcher>, counters: Arc<WatchCounters>, tick: Duration) {
    let mut failures: u32 = 0;
    loop {
        let Some(w) = watcher.upgrade() else {
            return;
        };
        if lock(&w.state).finish_if_idle() {
            return;
        }
        let specs = lock(&w.state).specs();
        let (target, shown) = (w.target.clone(), w.shown.clone());
        // Not held during the request: dropping the last scaler frees the watcher at once.
        drop(w);
        counters.rounds.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let listing = tokio::time::timeout(
            target.timeout,
            http_get_json(&target, &shown, || "vhost not found".to_string(), None),
        )
        .await;
        let ok = match listing {
            Ok(Ok(doc)) => match index_listing(&doc) {
                Some(index) => {
                    let results: Vec<(u64, bool)> = specs
                        .iter()
                        .filter_map(|(id, s)| {
                            listed_activity(&index, &s.queue, s.mode, s.exclude_unacknowledged, s.activation)
                                .map(|active| (*id, active))
                        })
                        .collect();
                    if let Some(w) = watcher.upgrade() {
                        lock(&w.state).publish(&results);
                    }
                    true
                }
                None => false,
            },
            // Errors flip nothing: the polls report them.
            _ => false,
        };
        failures = if ok { 0 } else { failures.saturating_add(1) };
        tokio::time::sleep(pause_after(failures, tick)).await;
    }
}

/// An AMQP connection's watcher task: one passive `queue.declare` per watched queue every tick,
/// over one channel of the shared connection.
async fn amqp_watch_loop(
    slot: Weak<AmqpSlot>,
    counters: Arc<WatchCounters>,
    timeout: Duration,
    tick: Duration,
) {
    let mut failures: u32 = 0;
    let mut retry_at: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        let Some(s) = slot.upgrade() else {
            return;
        };
        if lock(&s.watch).finish_if_idle() {
            return;
        }
        drop(s);
        failures = if amqp_round(&slot, &counters, timeout, &mut retry_at).await {
            0
        } else {
            failures.saturating_add(1)
        };
        tokio::time::sleep(pause_after(failures, tick)).await;
    }
}

/// One AMQP watcher round. False when the connection or a channel failed.
async fn amqp_round(
    slot: &Weak<AmqpSlot>,
    counters: &WatchCounters,
    timeout: Duration,
    retry_at: &mut HashMap<String, tokio::time::Instant>,
) -> bool {
    let Some(s) = slot.upgrade() else {
        return true;
    };
    let specs = lock(&s.watch).specs();
    let pooled = match s.live() {
        Some(pooled) => pooled,
        // Never dialled: the first poll dials (nothing is dialled before the first sample).
        None if !s.dialled.load(Ordering::Relaxed) => return true,
        None => {
            let Some((uri, tls)) = lock(&s.dial).clone() else {
                return false;
            };
            match tokio::time::timeout(timeout, slot_connection(&s, &uri, tls.as_ref(), timeout)).await {
                Ok(Ok(pooled)) => pooled,
                _ => return false,
            }
        }
    };
    // Not held during the requests: dropping the last scaler closes the connection at once.
    drop(s);
    counters.rounds.fetch_add(1, Ordering::Relaxed);
    let now = tokio::time::Instant::now();
    retry_at.retain(|_, at| *at > now);
    let mut queues: Vec<&str> = specs.iter().map(|(_, s)| s.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    let mut channel: Option<Channel> = None;
    let mut ok = true;
    for queue in queues {
        if retry_at.contains_key(queue) {
            continue;
        }
        let Ok(name) = ShortString::try_new(queue) else {
            continue;
        };
        let ch = match channel.take() {
            Some(ch) if ch.status().connected() => ch,
            _ => match tokio::time::timeout(timeout, pooled.channel()).await {
                Ok(Ok(ch)) => ch,
                _ => {
                    ok = false;
                    break;
                }
            },
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match tokio::time::timeout(timeout, ch.queue_declare(name, options, FieldTable::default())).await {
            Ok(Ok(q)) => {
                counts.insert(queue, q.message_count());
                channel = Some(ch);
            }
            Ok(Err(e)) if connection_failed(&e, &pooled) => {
                if let Some(s) = slot.upgrade() {
                    s.discard(&pooled);
                }
                ok = false;
                break;
            }
            // The broker closed the channel (not found, refused): leave the queue alone a while.
            Ok(Err(_)) => {
                retry_at.insert(queue.to_string(), now + AMQP_QUEUE_RETRY);
            }
            // The channel's state is unknown: it is dropped.
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    if let Some(ch) = channel {
        pooled.give_back(ch);
    }
    let results: Vec<(u64, bool)> = specs
        .iter()
        .filter_map(|(id, s)| {
            let ready = f64::from(*counts.get(s.queue.as_str())?);
            let stats = QueueStats {
                messages: ready,
                messages_ready: ready,
                ..QueueStats::default()
            };
            Some((*id, evaluate(s.mode, &stats, false, s.activation).active))
        })
        .collect();
    if let Some(s) = slot.upgrade() {
        lock(&s.watch).publish(&results);
    }
    ok
}

/// Where a scaler is registered for activity pushes.
pub(super) enum Watcher {
    /// The management watcher of the trigger's vhost listing.
    Http(Arc<HttpWatcher>),
    /// The watcher of the trigger's pooled AMQP connection.
    Amqp(Arc<AmqpSlot>),
}

impl Watcher {
    fn state(&self) -> &Mutex<WatchState> {
        match self {
            Watcher::Http(w) => &w.state,
            Watcher::Amqp(s) => &s.watch,
        }
    }
}

/// A scaler's place in its watcher; unregisters when the scaler is dropped.
pub(super) struct Registration {
    watcher: Watcher,
    id: u64,
    /// The activity channel as of the scaler's last sample (marked seen when a sample starts, so
    /// that a flip during or after it still wakes the caller).
    pub(super) seen: Mutex<watch::Receiver<bool>>,
}

impl Registration {
    /// Registers a trigger with `watcher`; its activity channel starts at inactive.
    pub(super) fn new(watcher: Watcher, spec: WatchSpec) -> Self {
        let (id, seen) = lock(watcher.state()).register(spec);
        Self {
            watcher,
            id,
            seen: Mutex::new(seen),
        }
    }

    /// Starts the watcher's task if it is not running, the watchers are enabled and a runtime is
    /// at hand.
    pub(super) fn ensure_running(&self, clients: &RabbitMqClients) {
        let tick = clients.watch_tick;
        if tick.is_zero() {
            return;
        }
        let Some(runtime) = lock(self.watcher.state()).start() else {
            return;
        };
        let counters = clients.watch_counters.clone();
        match &self.watcher {
            Watcher::Http(w) => runtime.spawn(http_watch_loop(Arc::downgrade(w), counters, tick)),
            Watcher::Amqp(slot) => runtime.spawn(amqp_watch_loop(
                Arc::downgrade(slot),
                counters,
                clients.default_timeout,
                tick,
            )),
        };
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(self.watcher.state()).triggers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rabbitmq::address::BrokerAddress;
    use serde_json::json;

    fn address(host: &str) -> BrokerAddress {
        BrokerAddress::parse(host, None, None, None).unwrap()
    }

    #[test]
    fn listing_activity_matches_sample_semantics() {
        let listing = json!([
            {"name": "empty", "messages": 0, "messages_ready": 0},
            {"name": "one", "messages": 1, "messages_ready": 1,
             "message_stats": {"publish_details": {"rate": 0.0}}},
            {"name": "unacked", "messages": 3, "messages_ready": 0},
            {"name": "fresh"},
            {"name": "publishing", "messages": 0, "messages_ready": 0,
             "message_stats": {"publish_details": {"rate": 2.5}, "deliver_get_details": {"rate": 0.0}}},
        ]);
        let index = index_listing(&listing).unwrap();
        let q = Mode::QueueLength;
        assert_eq!(listed_activity(&index, "empty", q, false, 0.0), Some(false));
        assert_eq!(listed_activity(&index, "one", q, false, 0.0), Some(true));
        assert_eq!(
            listed_activity(&index, "one", q, false, 1.0),
            Some(false),
            "strictly greater"
        );
        assert_eq!(listed_activity(&index, "unacked", q, false, 0.0), Some(true));
        assert_eq!(listed_activity(&index, "unacked", q, true, 0.0), Some(false));
        // Unknown (not listed, statistics not collected): never claimed inactive.
        assert_eq!(listed_activity(&index, "missing", q, false, 0.0), None);
        assert_eq!(listed_activity(&index, "fresh", q, false, 0.0), None);
        // The rate modes read the same numbers as evaluate() on the queue's own document.
        assert_eq!(
            listed_activity(&index, "publishing", Mode::MessageRate, false, 0.0),
            Some(true)
        );
        assert_eq!(
            listed_activity(&index, "publishing", Mode::PublishedToDeliveredRatio, false, 0.0),
            Some(true)
        );
        assert_eq!(
            listed_activity(&index, "publishing", Mode::DeliverGetRate, false, 0.0),
            Some(false)
        );
        for doc in [&listing[1], &listing[4]] {
            for mode in [
                q,
                Mode::MessageRate,
                Mode::DeliverGetRate,
                Mode::ExpectedQueueConsumptionTime,
            ] {
                let name = doc["name"].as_str().unwrap();
                let polled = evaluate(mode, &queue_stats_from_json(doc).unwrap(), false, 0.0).active;
                assert_eq!(listed_activity(&index, name, mode, false, 0.0), Some(polled));
            }
        }
        assert!(index_listing(&json!({"items": []})).is_none());
        assert!(index_listing(&json!([{"messages": 1}])).is_none());
        assert_eq!(
            address("http://u:p@h:15672/path/vh").listing_url(),
            format!("http://h:15672/path/api/queues/vh?columns={LISTING_COLUMNS}")
        );
    }
}
