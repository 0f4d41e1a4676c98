//! Cold activation: watchers that read the registered triggers' queues every
//! [`WATCH_TICK`] (0.5 s, [`crate::ACTIVITY_WATCH_TICK`]) and flip their
//! [`Scaler::activity_changes`](crate::Scaler::activity_changes) channels when the activity
//! changes. Registration, backoff and channels are
//! [`common::activity`](crate::common::activity)'s; this file holds the two rounds.
//!
//! - **Management API** (`ListingRound`): one watcher per (host, credentials, TLS settings,
//!   vhost) lists the vhost's queues in one request per tick (`/api/queues/<vhost>?columns=`
//!   [`LISTING_COLUMNS`]) for every mode. The statistics themselves lag the broker by up to its
//!   `collect_statistics_interval` (5 s by default). `useRegex` triggers stay poll-only (the
//!   broker matches the regex).
//! - **AMQP** (`AmqpRound`): one watcher per pooled connection makes one passive
//!   `queue.declare` per distinct watched queue each tick over one channel of that connection (no
//!   extra connection). It dials that connection itself when there is none (from its first
//!   round, so an object at zero is woken before its first poll; after a failure, redialling as
//!   the backoff allows). A queue whose declare fails (the broker then closes the channel) is
//!   skipped for 5 s.
//!
//! A failed or inconclusive read flips nothing (errors are the polls' to report); after failures a
//! watcher backs off up to [`MAX_BACKOFF`](crate::common::activity::MAX_BACKOFF). A watcher with
//! no trigger left ends its task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use tokio::sync::watch;
use tokio::time::Instant;

use super::amqp::{AmqpSlot, connection_failed, slot_connection};
use super::clients::{RabbitMqClients, lock};
use super::management::{HttpTarget, WATCH_LISTING_MAX_BODY_BYTES, http_get_typed};
use super::stats::{Mode, QueueDoc, QueueStats, evaluate, queue_stats};
use super::tls::TlsSettings;
use crate::common::activity::{
    ActivityRound, ActivityWatcher, Registration, RoundInput, RoundReport, TriggerId,
};

/// How often a watcher reads its queues while it has triggers. See
/// [`crate::ACTIVITY_WATCH_TICK`].
pub const WATCH_TICK: Duration = crate::ACTIVITY_WATCH_TICK;

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
    /// Rounds made so far (an AMQP round that could not dial counts too).
    pub rounds: u64,
    /// Requests made so far: management listings and passive `queue.declare`s.
    pub requests: u64,
}

/// Indexes a management API queue listing (`/api/queues/<vhost>`, an array of queue objects) by
/// queue name; `None` when a listed queue has no name (not such a listing).
pub fn index_listing(listing: &[QueueDoc]) -> Option<HashMap<&str, &QueueDoc>> {
    listing.iter().map(|q| Some((q.name()?, q))).collect()
}

/// The activity of `queue` in an indexed listing, exactly as [`Scaler::sample`](crate::Scaler::sample)
/// computes it from the queue's own statistics ([`queue_stats`], then [`evaluate`]);
/// `None` when the listing cannot tell (queue not listed, statistics not collected yet).
pub fn listed_activity(
    index: &HashMap<&str, &QueueDoc>,
    queue: &str,
    mode: Mode,
    exclude_unacknowledged: bool,
    activation: f64,
) -> Option<bool> {
    let stats = queue_stats(index.get(queue)?).ok()?;
    Some(evaluate(mode, &stats, exclude_unacknowledged, activation).active)
}

/// The activity of the triggers in `specs` that a listing tells about; `None` when the document
/// is not a queue listing.
fn listing_activity(
    listing: &[QueueDoc],
    specs: &[(TriggerId, WatchSpec)],
) -> Option<Vec<(TriggerId, bool)>> {
    let index = index_listing(listing)?;
    Some(
        specs
            .iter()
            .filter_map(|(id, s)| {
                listed_activity(&index, &s.queue, s.mode, s.exclude_unacknowledged, s.activation)
                    .map(|active| (*id, active))
            })
            .collect(),
    )
}

/// The activity of the triggers in `specs` whose queue's ready count is in `counts` (an AMQP
/// round's passive declares), computed as an AMQP sample does.
fn declared_activity(
    counts: &HashMap<&str, u32>,
    specs: &[(TriggerId, WatchSpec)],
) -> Vec<(TriggerId, bool)> {
    specs
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
        .collect()
}

/// What a watcher needs of one registered trigger.
#[derive(Debug, Clone, PartialEq)]
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

/// The triggers of one watcher (a management listing or a pooled AMQP connection).
pub(super) type QueueWatcher = ActivityWatcher<WatchSpec>;

/// The watchers' shared counters.
#[derive(Default)]
pub(super) struct WatchCounters {
    pub(super) rounds: AtomicU64,
    pub(super) requests: AtomicU64,
}

/// Identity of a management watcher: the listing URL, the authorization and the TLS settings.
/// Holds credentials: never printed.
pub(super) type HttpWatchKey = (String, Option<Vec<u8>>, TlsSettings);

/// A management watcher's round: one listing of the vhost's queues for all its registered
/// (non-regex) triggers.
pub(super) struct ListingRound {
    /// The listing request (its timeout is the factory's default).
    target: HttpTarget,
    /// The broker address, credentials masked.
    shown: String,
    counters: Arc<WatchCounters>,
}

impl ActivityRound for ListingRound {
    type Spec = WatchSpec;
    const SOURCE: &'static str = "rabbitmq-management";

    async fn round(&mut self, input: RoundInput<WatchSpec>) -> RoundReport {
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let listing = tokio::time::timeout(
            self.target.timeout,
            http_get_typed::<Vec<QueueDoc>>(
                &self.target,
                &self.shown,
                || "vhost not found".to_string(),
                None,
                WATCH_LISTING_MAX_BODY_BYTES,
            ),
        )
        .await;
        // Errors flip nothing: the polls report them.
        match listing {
            Ok(Ok(doc)) => match listing_activity(&doc, &input.specs) {
                Some(activity) => RoundReport::succeeded(activity),
                None => RoundReport::failed(Vec::new()),
            },
            _ => RoundReport::failed(Vec::new()),
        }
    }
}

/// An AMQP connection watcher's round: one passive `queue.declare` per watched queue, over one
/// channel of the shared connection.
pub(super) struct AmqpRound {
    /// Not held strongly: dropping the last scaler closes the connection at once.
    slot: Weak<AmqpSlot>,
    counters: Arc<WatchCounters>,
    /// The bound of the redial and of each AMQP step.
    timeout: Duration,
    /// Queues left alone until then after a failed declare.
    retry_at: HashMap<String, Instant>,
}

impl ActivityRound for AmqpRound {
    type Spec = WatchSpec;
    const SOURCE: &'static str = "rabbitmq-amqp";

    async fn round(&mut self, input: RoundInput<WatchSpec>) -> RoundReport {
        let timeout = self.timeout;
        let Some(s) = self.slot.upgrade() else {
            return RoundReport::succeeded(Vec::new());
        };
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        // The slot's connection, dialled here when there is none (first round, or after a
        // failure): the watcher never waits for a poll, and shares the one connection with the
        // samples (`slot_connection` dials once per slot). A failed dial flips nothing and backs
        // off like any failed round.
        let pooled = match s.live() {
            Some(pooled) => pooled,
            None => {
                let Some((uri, tls)) = lock(&s.dial).clone() else {
                    return RoundReport::failed(Vec::new());
                };
                match tokio::time::timeout(timeout, slot_connection(&s, &uri, tls.as_ref(), timeout)).await {
                    Ok(Ok(pooled)) => pooled,
                    _ => return RoundReport::failed(Vec::new()),
                }
            }
        };
        // Not held during the requests: dropping the last scaler closes the connection at once.
        drop(s);
        let now = Instant::now();
        self.retry_at.retain(|_, at| *at > now);
        let mut queues: Vec<&str> = input.specs.iter().map(|(_, s)| s.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        let mut counts: HashMap<&str, u32> = HashMap::new();
        let mut channel: Option<Channel> = None;
        let mut ok = true;
        for queue in queues {
            if self.retry_at.contains_key(queue) {
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
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match tokio::time::timeout(timeout, ch.queue_declare(name, options, FieldTable::default())).await
            {
                Ok(Ok(q)) => {
                    counts.insert(queue, q.message_count());
                    channel = Some(ch);
                }
                Ok(Err(e)) if connection_failed(&e, &pooled) => {
                    if let Some(s) = self.slot.upgrade() {
                        s.discard(&pooled);
                    }
                    ok = false;
                    break;
                }
                // The broker closed the channel (not found, refused): leave the queue alone a while.
                Ok(Err(_)) => {
                    self.retry_at.insert(queue.to_string(), now + AMQP_QUEUE_RETRY);
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
        let activity = declared_activity(&counts, &input.specs);
        if ok {
            RoundReport::succeeded(activity)
        } else {
            RoundReport::failed(activity)
        }
    }
}

/// A scaler's place in its watcher (unregistered when dropped), and what starts that watcher's
/// task.
pub(super) enum Watch {
    /// Registered with the management watcher of the trigger's vhost listing.
    Listing {
        /// The trigger's registration.
        registration: Registration<WatchSpec>,
        /// The listing request (what a [`ListingRound`] sends).
        target: Box<HttpTarget>,
        /// The broker address, credentials masked.
        shown: String,
    },
    /// Registered with the watcher of the trigger's pooled AMQP connection.
    Amqp {
        /// The trigger's registration.
        registration: Registration<WatchSpec>,
        /// The pooled connection the watcher reads over.
        slot: Arc<AmqpSlot>,
    },
}

impl Watch {
    /// Registers a management trigger with the watcher of `listing` (a listing request like
    /// `target`, bounded by the factory's default timeout).
    pub(super) fn listing(
        clients: &RabbitMqClients,
        target: &HttpTarget,
        listing: hyper::Uri,
        shown: &str,
        spec: WatchSpec,
    ) -> Self {
        let target = Box::new(HttpTarget {
            uri: listing,
            timeout: clients.default_timeout,
            ..target.clone()
        });
        let registration = clients.http_watcher(&target).register(spec);
        Watch::Listing {
            registration,
            target,
            shown: shown.to_string(),
        }
    }

    /// Registers an AMQP trigger with its pooled connection's watcher.
    pub(super) fn amqp(slot: Arc<AmqpSlot>, spec: WatchSpec) -> Self {
        Watch::Amqp {
            registration: slot.watch.register(spec),
            slot,
        }
    }

    fn registration(&self) -> &Registration<WatchSpec> {
        match self {
            Watch::Listing { registration, .. } | Watch::Amqp { registration, .. } => registration,
        }
    }

    /// Starts the watcher's task if it is not running, the watchers are enabled and a runtime is
    /// at hand.
    pub(super) fn ensure_running(&self, clients: &RabbitMqClients) {
        let counters = clients.watch_counters.clone();
        match self {
            Watch::Listing {
                registration,
                target,
                shown,
            } => registration.watcher().ensure_running(|| ListingRound {
                target: (**target).clone(),
                shown: shown.clone(),
                counters,
            }),
            Watch::Amqp { registration, slot } => registration.watcher().ensure_running(|| AmqpRound {
                slot: Arc::downgrade(slot),
                counters,
                timeout: clients.default_timeout,
                retry_at: HashMap::new(),
            }),
        };
    }

    /// Marks the current activity seen (when a sample starts).
    pub(super) fn mark_seen(&self) {
        self.registration().mark_seen();
    }

    /// A receiver that wakes on the next activity change after the last sample.
    pub(super) fn changes(&self) -> watch::Receiver<bool> {
        self.registration().changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rabbitmq::address::BrokerAddress;
    use serde_json::{Value as Json, json};

    /// A listing decoded as the watcher decodes it; `None` when it is not an array of queues.
    fn docs(listing: &Json) -> Option<Vec<QueueDoc>> {
        serde_json::from_value(listing.clone()).ok()
    }

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
        let decoded = docs(&listing).unwrap();
        let index = index_listing(&decoded).unwrap();
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
                let own: QueueDoc = serde_json::from_value(doc.clone()).unwrap();
                let polled = evaluate(mode, &queue_stats(&own).unwrap(), false, 0.0).active;
                assert_eq!(listed_activity(&index, name, mode, false, 0.0), Some(polled));
            }
        }
        assert!(docs(&json!({"items": []})).is_none());
        assert!(index_listing(&docs(&json!([{"messages": 1}])).unwrap()).is_none());
        assert_eq!(
            address("http://u:p@h:15672/path/vh").listing_url(),
            format!("http://h:15672/path/api/queues/vh?columns={LISTING_COLUMNS}")
        );
    }

    fn spec(queue: &str, mode: Mode, activation: f64) -> WatchSpec {
        WatchSpec {
            queue: queue.to_string(),
            mode,
            exclude_unacknowledged: false,
            activation,
        }
    }

    #[test]
    fn a_listing_tells_only_about_listed_queues_with_statistics() {
        let specs = vec![
            (1, spec("busy", Mode::QueueLength, 0.0)),
            (2, spec("busy", Mode::QueueLength, 5.0)),
            (3, spec("missing", Mode::QueueLength, 0.0)),
            (4, spec("fresh", Mode::QueueLength, 0.0)),
        ];
        let listing = json!([
            {"name": "busy", "messages": 3, "messages_ready": 3},
            {"name": "fresh"},
        ]);
        assert_eq!(
            listing_activity(&docs(&listing).unwrap(), &specs),
            Some(vec![(1, true), (2, false)])
        );
        assert!(docs(&json!({"error": "x"})).is_none());
    }

    #[test]
    fn declared_counts_are_ready_messages_against_the_activation() {
        let specs = vec![
            (1, spec("a", Mode::QueueLength, 0.0)),
            (2, spec("a", Mode::QueueLength, 2.0)),
            (3, spec("b", Mode::QueueLength, 0.0)),
            (4, spec("skipped", Mode::QueueLength, 0.0)),
        ];
        let counts = HashMap::from([("a", 2), ("b", 0)]);
        assert_eq!(
            declared_activity(&counts, &specs),
            [(1, true), (2, false), (3, false)]
        );
    }
}
