//! Cold activation for monitoring triggers: one `/jsz` watcher per (monitoring endpoint,
//! account), shared by every trigger of a factory on that endpoint and account.
//!
//! A trigger registers when built and unregisters when dropped. While it has triggers, a
//! watcher's task reads the endpoint's `/jsz` every [`WATCH_TICK`] (0.5 s,
//! [`crate::ACTIVITY_WATCH_TICK`]; the same query as the polls) and computes each trigger's
//! activity as the scaler's `sample` does ([`jsz_activity`]); a change flips the trigger's
//! [`Scaler::activity_changes`](crate::Scaler::activity_changes) channel. In a cluster the numbers
//! are read from each consumer's leader as cached by the polls or by the watcher (one more
//! request per leader node); consumers without a cached leader (e.g. right after a start, before
//! any poll) are found by the watcher itself in one sweep of the nodes for all of them
//! ([`find_leaders`]), retried every [`LEADER_SWEEP_RETRY`] while some are not found (or at once
//! when the registrations change). A failed or inconclusive read
//! flips nothing (errors are the polls' to report); after failures the watcher backs off up to
//! [`MAX_BACKOFF`](crate::common::activity::MAX_BACKOFF); with no trigger left its task ends.
//! The registration, backoff and channels are [`common::activity`](crate::common::activity)'s;
//! this file holds the round ([`JszRound`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::Monitoring;
use super::jsz::{jsz_activity, read_jsz};
use super::leaders::{find_leaders, leader_key};
use super::lock;
use super::scaler::NatsJetStreamClients;
use crate::TriggerSample;
use crate::common::activity::{
    ActivityRound, ActivityWatcher, Registration as ActivityRegistration, RoundInput, RoundReport, TriggerId,
};

/// How often a monitoring watcher reads `/jsz` while it has triggers. See
/// [`crate::ACTIVITY_WATCH_TICK`].
pub const WATCH_TICK: Duration = crate::ACTIVITY_WATCH_TICK;

/// Counters of the monitoring activity watchers of a
/// [`NatsJetStreamClients`].
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

/// How long a watcher waits before sweeping the nodes again for consumers whose leader it could
/// not find (unless the registrations change).
pub const LEADER_SWEEP_RETRY: Duration = Duration::from_secs(5);

/// Key of a monitoring watcher: the endpoint (`scheme://host:port`) and the `acc=` value.
type WatcherKey = (String, String);

/// What a `/jsz` round needs of one registered trigger.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct JszSpec {
    accounts: Vec<String>,
    stream: String,
    consumer: String,
    activation: f64,
}

/// One watcher per (monitoring endpoint, account): the triggers registered there.
type JszWatcher = ActivityWatcher<JszSpec>;

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
        WatcherStats {
            watchers: live.len(),
            triggers: live.iter().map(|w| w.trigger_count()).sum(),
            running: live.iter().filter(|w| w.is_running()).count(),
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
        let w = ActivityWatcher::new(self.tick);
        watchers.insert(key, Arc::downgrade(&w));
        w
    }
}

/// The round of one watcher: reads the endpoint's `/jsz` (the account's streams and consumers)
/// once for all its registered triggers. In a cluster the consumers' numbers come from their
/// leaders (as cached by the scalers' own polls), one request per leader node.
pub(super) struct JszRound {
    monitoring: Monitoring,
    /// Not held strongly: the clients outlive no scaler because of a watcher.
    clients: Weak<NatsJetStreamClients>,
    /// After a leader sweep that left consumers unfound: the registrations' generation then, and
    /// when to sweep again for the same registrations.
    sweep_again: Option<(u64, Instant)>,
}

impl ActivityRound for JszRound {
    type Spec = JszSpec;
    const SOURCE: &'static str = "nats-jsz";

    async fn round(&mut self, input: RoundInput<JszSpec>) -> RoundReport {
        let Some(clients) = self.clients.upgrade() else {
            return RoundReport::failed(Vec::new());
        };
        jsz_round(&clients, &self.monitoring, &input, &mut self.sweep_again).await
    }
}

/// Whether a leader sweep may run now for registrations of `generation`, after the last sweep
/// that left consumers unfound (`sweep_again`).
fn may_sweep(sweep_again: Option<(u64, Instant)>, generation: u64, now: Instant) -> bool {
    match sweep_again {
        None => true,
        Some((g, at)) => g != generation || now >= at,
    }
}

/// One round over the registered triggers: a failed read of the endpoint learns nothing; a
/// failed read of a leader node, or a failed sweep, fails the round after what the rest told.
async fn jsz_round(
    clients: &NatsJetStreamClients,
    m: &Monitoring,
    input: &RoundInput<JszSpec>,
    sweep_again: &mut Option<(u64, Instant)>,
) -> RoundReport {
    let specs = &input.specs;
    let counters = &clients.watchers;
    counters.rounds.fetch_add(1, Ordering::Relaxed);
    let fetch = async |authority: &str| {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        clients.get_json(&m.jsz_url(authority)).await
    };
    let Ok(doc) = fetch(&m.authority).await else {
        return RoundReport::failed(Vec::new());
    };
    let activity_in = |doc: &serde_json::Value, it: &JszSpec, leader: Option<&str>| {
        let accounts: Vec<&str> = it.accounts.iter().map(String::as_str).collect();
        jsz_activity(doc, &accounts, &it.stream, &it.consumer, it.activation, leader)
    };
    let cluster_size = read_jsz(&doc, &[], "", "").map_or(0, |v| v.cluster_size);
    if cluster_size <= 1 {
        let activity = specs
            .iter()
            .filter_map(|(id, it)| activity_in(&doc, it, None).map(|active| (*id, active)))
            .collect();
        return RoundReport::succeeded(activity);
    }
    // Clustered: only the leader's numbers are right; ask each cached leader node once.
    let mut by_node: HashMap<String, Vec<(TriggerId, &JszSpec, String)>> = HashMap::new();
    let mut unled: Vec<(TriggerId, &JszSpec)> = Vec::new();
    for (id, it) in specs {
        match clients.leaders.get(&leader_key(m, &it.stream, &it.consumer)) {
            Some(leader) => by_node
                .entry(leader.authority)
                .or_default()
                .push((*id, it, leader.name)),
            None => unled.push((*id, it)),
        }
    }
    let mut activity = Vec::new();
    let mut all_ok = true;
    // No cached leader (no poll yet, or the leader moved): find them here rather than wait for
    // the polls, whose first one may be a whole polling interval away after a start.
    let now = Instant::now();
    if !unled.is_empty() && may_sweep(*sweep_again, input.generation, now) {
        let mut wanted: Vec<(&str, &str)> = unled
            .iter()
            .map(|(_, it)| (it.stream.as_str(), it.consumer.as_str()))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        match find_leaders(clients, m, &wanted).await {
            Ok(found) => {
                counters.requests.fetch_add(found.requests, Ordering::Relaxed);
                let mut lags = HashMap::new();
                for ((stream, consumer), leader) in wanted.iter().zip(found.leaders) {
                    if let Some((leader, lag)) = leader {
                        clients.leaders.set(&leader_key(m, stream, consumer), leader);
                        lags.insert((*stream, *consumer), lag);
                    }
                }
                for (id, it) in &unled {
                    if let Some(lag) = lags.get(&(it.stream.as_str(), it.consumer.as_str())) {
                        let sample = TriggerSample::with_activation(lag.total() as f64, it.activation);
                        activity.push((*id, sample.active));
                    }
                }
                *sweep_again =
                    (lags.len() < wanted.len()).then(|| (input.generation, now + LEADER_SWEEP_RETRY));
            }
            Err(_) => {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                *sweep_again = Some((input.generation, now + LEADER_SWEEP_RETRY));
                all_ok = false;
            }
        }
    }
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
        for (id, it, name) in members {
            if let Some(active) = activity_in(&node_doc, it, Some(&name)) {
                activity.push((id, active));
            }
        }
    }
    if all_ok {
        RoundReport::succeeded(activity)
    } else {
        RoundReport::failed(activity)
    }
}

/// A scaler's place in its endpoint's watcher; unregisters when the scaler is dropped.
pub(super) struct Registration {
    inner: ActivityRegistration<JszSpec>,
    monitoring: Monitoring,
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
        let inner = clients.watchers.watcher(m).register(JszSpec {
            accounts: m.accounts.clone(),
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            activation,
        });
        let registration = Registration {
            inner,
            monitoring: m.clone(),
        };
        registration.ensure_running(clients);
        registration
    }

    /// Starts the watcher's task if it is idle (and a runtime is at hand).
    fn ensure_running(&self, clients: &Arc<NatsJetStreamClients>) {
        self.inner.watcher().ensure_running(|| JszRound {
            monitoring: self.monitoring.clone(),
            clients: Arc::downgrade(clients),
            sweep_again: None,
        });
    }

    /// Called when a sample starts: restarts the watcher if needed, and marks the current
    /// activity seen.
    pub(super) fn sampling(&self, clients: &Arc<NatsJetStreamClients>) {
        self.ensure_running(clients);
        self.inner.mark_seen();
    }

    /// A receiver that wakes on the next activity flip after the last sample (restarting the
    /// watcher if needed).
    pub(super) fn changes(&self, clients: &Arc<NatsJetStreamClients>) -> watch::Receiver<bool> {
        self.ensure_running(clients);
        self.inner.changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scaler;
    use crate::nats_jetstream::testing::{FakeCluster, cached, scaler_with};

    #[tokio::test]
    async fn watcher_reads_each_cached_leader_once_per_round() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler_with(cluster.port, WATCH_TICK);
        let mut changes = s.activity_changes().unwrap();
        // The poll (or the watcher's own sweep) finds and caches the leader (node 1: 15 + 2 > 16).
        assert!(s.sample().await.unwrap().active);
        tokio::time::timeout(Duration::from_secs(3), changes.wait_for(|active| *active))
            .await
            .unwrap()
            .unwrap();
        cluster.take_hits();
        // The watcher's rounds: the endpoint's /jsz (cluster size) and the leader's.
        tokio::time::sleep(Duration::from_millis(1200)).await;
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

    /// After an operator start the scale loops' first polls are spread over the polling
    /// interval: in a cluster the watcher finds the consumer's leader itself, so an object at zero
    /// is woken without waiting for its first poll.
    #[tokio::test]
    async fn watcher_finds_the_leader_before_any_poll() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler_with(cluster.port, WATCH_TICK);
        let mut changes = s.activity_changes().unwrap();
        tokio::time::timeout(Duration::from_secs(2), changes.changed())
            .await
            .expect("the watcher reports the leader's numbers without a poll")
            .unwrap();
        assert!(*changes.borrow_and_update(), "the leader's 15 + 2 > 16");
        assert_eq!(cached(&s), Some(format!("nats-1 127.0.0.2:{}", cluster.port)));
        // The poll finds the leader the watcher cached: one request, to the leader.
        cluster.take_hits();
        assert!(s.sample().await.unwrap().active);
        let hits = cluster.take_hits();
        assert!(hits.contains(&(1, "/jsz".to_string())), "{hits:?}");
        assert!(!hits.iter().any(|h| h.1 == "/varz"), "no new sweep: {hits:?}");
    }

    /// A consumer whose leader cannot be found (mid-election) is swept for again only after
    /// [`LEADER_SWEEP_RETRY`], not every tick, and nothing flips.
    #[tokio::test]
    async fn an_unfound_leader_is_swept_for_again_only_after_the_retry() {
        let cluster = FakeCluster::start(true).await;
        cluster.set(|c| c.leader = None);
        let s = scaler_with(cluster.port, WATCH_TICK);
        let changes = s.activity_changes().unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let hits = cluster.take_hits();
        let sweeps = hits.iter().filter(|h| *h == &(0, "/varz".to_string())).count();
        // One sweep asks node 0's /varz twice: as the endpoint (the node list) and as a node.
        assert_eq!(sweeps, 2, "{hits:?}");
        let rounds = hits.iter().filter(|h| *h == &(0, "/jsz".to_string())).count();
        assert!(rounds >= 4, "the rounds go on: {hits:?}");
        assert!(!changes.has_changed().unwrap());
        assert_eq!(cached(&s), None);
        assert!(LEADER_SWEEP_RETRY > Duration::from_millis(2500));
    }

    #[test]
    fn sweeps_wait_for_the_retry_unless_the_registrations_changed() {
        let now = Instant::now();
        assert!(may_sweep(None, 3, now));
        let later = now + LEADER_SWEEP_RETRY;
        assert!(!may_sweep(Some((3, later)), 3, now));
        assert!(
            may_sweep(Some((3, later)), 4, now),
            "a new registration sweeps at once"
        );
        assert!(may_sweep(Some((3, later)), 3, later));
    }
}
