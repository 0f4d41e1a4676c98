//! Cold activation for monitoring triggers: one `/jsz` watcher per (monitoring endpoint,
//! account), shared by every trigger of a factory on that endpoint and account.
//!
//! A trigger registers when built and unregisters when dropped. While it has triggers, a
//! watcher's task reads the endpoint's `/jsz` every [`WATCH_TICK`] (0.5 s,
//! [`crate::ACTIVITY_WATCH_TICK`]; the same query as the polls) and computes each trigger's
//! activity as the scaler's `sample` does ([`jsz_activity`]); a change flips the trigger's
//! [`Scaler::activity_changes`](crate::Scaler::activity_changes) channel. In a cluster the numbers
//! are read from each consumer's leader as the polls cached it (one more request per leader
//! node); a consumer without a cached leader waits for its poll. A failed or inconclusive read
//! flips nothing (errors are the polls' to report); after failures the watcher backs off up to
//! [`WATCH_MAX_BACKOFF`]; with no trigger left its task ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::config::Monitoring;
use super::jsz::{jsz_activity, read_jsz};
use super::leaders::leader_key;
use super::lock;
use super::scaler::NatsJetStreamClients;

/// How often a monitoring watcher reads `/jsz` while it has triggers. See
/// [`crate::ACTIVITY_WATCH_TICK`].
pub const WATCH_TICK: Duration = crate::ACTIVITY_WATCH_TICK;

/// The longest pause between watcher rounds after failed rounds.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Counters of the monitoring activity watchers of a
/// [`NatsJetStreamClients`](super::NatsJetStreamClients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatcherStats {
    /// Watchers alive (one per monitoring endpoint and account with a scaler holding it).
    pub watchers: usize,
    /// Triggers registered over all watchers.
    pub triggers: usize,
    /// Watchers whose task is running.
    pub running: usize,
    /// Rounds made so far.
    pub rounds: u64,
    /// `/jsz` requests made by the watchers so far.
    pub requests: u64,
}

/// Key of a monitoring watcher: the endpoint (`scheme://host:port`) and the `acc=` value.
type WatcherKey = (String, String);

/// The watchers of a factory, their counters and their tick.
pub(super) struct JszWatchers {
    /// One activity watcher per (monitoring endpoint, account); alive while a scaler holds it.
    watchers: Mutex<HashMap<WatcherKey, Weak<JszWatcher>>>,
    /// Watcher rounds made so far (all watchers).
    rounds: AtomicU64,
    /// `/jsz` requests the watchers made so far.
    requests: AtomicU64,
    /// How often a watcher makes a round; zero disables the watchers.
    pub(super) tick: Duration,
}

impl JszWatchers {
    /// No watcher yet; rounds every `tick` (zero: never).
    pub(super) fn new(tick: Duration) -> Self {
        Self {
            watchers: Mutex::new(HashMap::new()),
            rounds: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            tick,
        }
    }

    /// What the watchers are doing now.
    pub(super) fn stats(&self) -> WatcherStats {
        let live: Vec<Arc<JszWatcher>> = lock(&self.watchers).values().filter_map(Weak::upgrade).collect();
        let (mut triggers, mut running) = (0, 0);
        for w in &live {
            let state = lock(&w.state);
            triggers += state.triggers.len();
            running += usize::from(state.running);
        }
        WatcherStats {
            watchers: live.len(),
            triggers,
            running,
            rounds: self.rounds.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }

    /// The watcher of this endpoint and account, created on first use.
    fn watcher(&self, m: &Monitoring) -> Arc<JszWatcher> {
        let key: WatcherKey = (m.endpoint_url(), m.account.clone());
        let mut watchers = lock(&self.watchers);
        if let Some(w) = watchers.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        watchers.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(JszWatcher {
            monitoring: m.clone(),
            state: Mutex::new(WatcherState::default()),
        });
        watchers.insert(key, Arc::downgrade(&w));
        w
    }
}

/// One registered trigger of a watcher.
struct Watched {
    accounts: Vec<String>,
    stream: String,
    consumer: String,
    activation: f64,
    activity: watch::Sender<bool>,
}

#[derive(Default)]
struct WatcherState {
    next_id: u64,
    /// Whether the watcher's task runs (set and cleared under this lock).
    running: bool,
    triggers: HashMap<u64, Watched>,
}

/// Reads one endpoint's `/jsz` (the account's streams and consumers) every [`WATCH_TICK`] for
/// all its registered triggers and flips their activity channels on change. In a cluster the
/// consumers' numbers come from their leaders (as cached by the scalers' own polls), one
/// request per leader node.
struct JszWatcher {
    monitoring: Monitoring,
    state: Mutex<WatcherState>,
}

/// What a round needs of one trigger (copied out of the lock).
struct RoundItem {
    id: u64,
    accounts: Vec<String>,
    stream: String,
    consumer: String,
    activation: f64,
}

impl JszWatcher {
    fn register(
        &self,
        accounts: Vec<String>,
        stream: &str,
        consumer: &str,
        activation: f64,
    ) -> (u64, watch::Receiver<bool>) {
        let mut state = lock(&self.state);
        state.next_id += 1;
        let id = state.next_id;
        let (activity, receiver) = watch::channel(false);
        state.triggers.insert(
            id,
            Watched {
                accounts,
                stream: stream.to_string(),
                consumer: consumer.to_string(),
                activation,
                activity,
            },
        );
        (id, receiver)
    }

    fn unregister(&self, id: u64) {
        lock(&self.state).triggers.remove(&id);
    }

    /// Starts the task if it is not running, a trigger is registered and a runtime is at hand.
    fn ensure_running(self: &Arc<Self>, clients: &Arc<NatsJetStreamClients>) {
        if clients.watchers.tick.is_zero() {
            return;
        }
        let mut state = lock(&self.state);
        if state.running || state.triggers.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.running = true;
        runtime.spawn(watch_loop(Arc::downgrade(self), Arc::downgrade(clients)));
    }

    /// Marks the task stopped when no trigger is left (under the lock, so that a registration
    /// racing with this starts a new task).
    fn finish_if_idle(&self) -> bool {
        let mut state = lock(&self.state);
        if state.triggers.is_empty() {
            state.running = false;
            return true;
        }
        false
    }

    /// One round. Returns false when the endpoint could not be read.
    /// The watcher itself is not held during the requests, so that dropping the last scaler
    /// frees it at once.
    async fn round(watcher: &Weak<Self>, clients: &NatsJetStreamClients) -> bool {
        let Some(w) = watcher.upgrade() else {
            return true;
        };
        clients.watchers.rounds.fetch_add(1, Ordering::Relaxed);
        let items: Vec<RoundItem> = lock(&w.state)
            .triggers
            .iter()
            .map(|(id, w)| RoundItem {
                id: *id,
                accounts: w.accounts.clone(),
                stream: w.stream.clone(),
                consumer: w.consumer.clone(),
                activation: w.activation,
            })
            .collect();
        let m = &w.monitoring.clone();
        drop(w);
        let publish = |results: &[(u64, bool)]| {
            if let Some(w) = watcher.upgrade() {
                w.publish(results);
            }
        };
        let fetch = async |authority: &str| {
            clients.watchers.requests.fetch_add(1, Ordering::Relaxed);
            clients.get_json(&m.jsz_url(authority)).await
        };
        let Ok(doc) = fetch(&m.authority).await else {
            return false;
        };
        let cluster_size = read_jsz(&doc, &[], "", "").map_or(0, |v| v.cluster_size);
        let mut results: Vec<(u64, bool)> = Vec::new();
        if cluster_size <= 1 {
            for it in &items {
                let accounts: Vec<&str> = it.accounts.iter().map(String::as_str).collect();
                if let Some(active) =
                    jsz_activity(&doc, &accounts, &it.stream, &it.consumer, it.activation, None)
                {
                    results.push((it.id, active));
                }
            }
        } else {
            // Clustered: only the leader's numbers are right; ask each cached leader node once.
            let mut by_node: HashMap<String, Vec<(&RoundItem, String)>> = HashMap::new();
            for it in &items {
                if let Some(leader) = clients.leaders.get(&leader_key(m, &it.stream, &it.consumer)) {
                    by_node
                        .entry(leader.authority)
                        .or_default()
                        .push((it, leader.name));
                }
            }
            let mut all_ok = true;
            for (authority, members) in by_node {
                let node_doc = if authority == m.authority {
                    doc.clone()
                } else {
                    match fetch(&authority).await {
                        Ok(d) => d,
                        Err(_) => {
                            all_ok = false;
                            continue;
                        }
                    }
                };
                for (it, name) in members {
                    let accounts: Vec<&str> = it.accounts.iter().map(String::as_str).collect();
                    if let Some(active) = jsz_activity(
                        &node_doc,
                        &accounts,
                        &it.stream,
                        &it.consumer,
                        it.activation,
                        Some(&name),
                    ) {
                        results.push((it.id, active));
                    }
                }
            }
            if !all_ok {
                publish(&results);
                return false;
            }
        }
        publish(&results);
        true
    }

    /// Flips the channels whose activity changed.
    fn publish(&self, results: &[(u64, bool)]) {
        let state = lock(&self.state);
        for (id, active) in results {
            if let Some(w) = state.triggers.get(id) {
                w.activity.send_if_modified(|current| {
                    let changed = *current != *active;
                    *current = *active;
                    changed
                });
            }
        }
    }
}

/// The task of one watcher: a round every tick ([`WATCH_TICK`] by default; backing off up to
/// [`WATCH_MAX_BACKOFF`] after failures) while triggers are registered; ends when none is left.
async fn watch_loop(watcher: Weak<JszWatcher>, clients: Weak<NatsJetStreamClients>) {
    let mut failures: u32 = 0;
    loop {
        let Some(w) = watcher.upgrade() else {
            return;
        };
        if w.finish_if_idle() {
            return;
        }
        let Some(c) = clients.upgrade() else {
            lock(&w.state).running = false;
            return;
        };
        drop(w);
        failures = if JszWatcher::round(&watcher, &c).await {
            0
        } else {
            failures.saturating_add(1)
        };
        let tick = c.watchers.tick;
        drop(c);
        let pause = tick
            .saturating_mul(1 << failures.min(3))
            .min(tick.max(WATCH_MAX_BACKOFF));
        tokio::time::sleep(pause).await;
    }
}

/// A scaler's place in its watcher; unregisters when the scaler is dropped.
pub(super) struct Registration {
    watcher: Arc<JszWatcher>,
    id: u64,
    /// The activity channel as of the scaler's last sample (marked seen when a sample starts,
    /// so that a flip during or after it still wakes the caller).
    seen: Mutex<watch::Receiver<bool>>,
}

impl Registration {
    /// Registers `stream`/`consumer` (active above `activation`) with the watcher of `m`'s
    /// endpoint and account, and starts that watcher if it is idle.
    pub(super) fn new(
        clients: &Arc<NatsJetStreamClients>,
        m: &Monitoring,
        stream: &str,
        consumer: &str,
        activation: f64,
    ) -> Self {
        let watcher = clients.watchers.watcher(m);
        let (id, seen) = watcher.register(m.accounts.clone(), stream, consumer, activation);
        watcher.ensure_running(clients);
        Registration {
            watcher,
            id,
            seen: Mutex::new(seen),
        }
    }

    /// Called when a sample starts: restarts the watcher if needed, and marks the current
    /// activity seen.
    pub(super) fn sampling(&self, clients: &Arc<NatsJetStreamClients>) {
        self.watcher.ensure_running(clients);
        lock(&self.seen).borrow_and_update();
    }

    /// A receiver that wakes on the next activity flip after the last sample (restarting the
    /// watcher if needed).
    pub(super) fn changes(&self, clients: &Arc<NatsJetStreamClients>) -> watch::Receiver<bool> {
        self.watcher.ensure_running(clients);
        lock(&self.seen).clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.watcher.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scaler;
    use crate::nats_jetstream::testing::{FakeCluster, scaler_with};

    #[tokio::test]
    async fn watcher_reads_each_cached_leader_once_per_round() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler_with(cluster.port, WATCH_TICK);
        let mut changes = s.activity_changes().unwrap();
        // The poll finds and caches the leader (node 1: 15 + 2 > 16).
        assert!(s.sample().await.unwrap().active);
        cluster.take_hits();
        // The watcher's rounds: the endpoint's /jsz (cluster size) and the leader's.
        tokio::time::timeout(Duration::from_secs(3), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(*changes.borrow_and_update());
        let hits = cluster.take_hits();
        assert!(hits.iter().all(|h| h.1 == "/jsz"), "{hits:?}");
        assert!(hits.contains(&(1, "/jsz".to_string())), "{hits:?}");
        // No leader anywhere (election): nothing is flipped to inactive.
        cluster.set(|c| c.leader = None);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!changes.has_changed().unwrap() && *changes.borrow());
        assert_eq!(s.clients.watcher_stats().running, 1);
        let clients = s.clients.clone();
        drop(s);
        assert_eq!(clients.watcher_stats().watchers, 0);
    }
}
