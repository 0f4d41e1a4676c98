//! [`RedisScaler`] (both trigger types), the per-factory [`RedisClients`] that share one
//! connection per server, and the activity watcher's round.
//!
//! Each [`RedisServer`] (address, credentials, database, TLS) has one [`Connection`] and one
//! activity watcher while a trigger uses it. A trigger registers its [`Query`] with the watcher
//! when built; while any is registered, the watcher reads all of them every
//! [`crate::ACTIVITY_WATCH_TICK`] (0.5 s) in one pipeline on the shared connection (the same
//! round as any samples asked for meanwhile) and flips a trigger's activity channel when its
//! value crosses the activation threshold. A failed round flips nothing and backs off; a
//! trigger whose own read fails (e.g. a key of the wrong type) keeps its activity.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::{RedisServer, RedisTriggerConfig};
use super::connection::{Connection, ConnectionStats};
use super::query::{Query, QueryError};
use crate::common::activity::{ActivityRound, ActivityWatcher, Registration, RoundInput, RoundReport};
use crate::common::pool::WeakPool;
use crate::params::Thresholds;
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample, is_active};

/// What the watcher knows of a trigger: its read and its activation threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    query: Query,
    activation: f64,
}

/// One server's connection and activity watcher, alive while a trigger uses them.
struct Server {
    connection: Arc<Connection>,
    watcher: Arc<ActivityWatcher<WatchSpec>>,
}

/// The redis connections of one factory: one per [`RedisServer`] while a trigger uses it.
pub struct RedisClients {
    timeout: Duration,
    tick: Duration,
    servers: WeakPool<RedisServer, Server>,
}

impl RedisClients {
    /// No connection yet; `timeout` bounds each round trip, the watchers read every
    /// [`crate::ACTIVITY_WATCH_TICK`].
    pub fn new(timeout: Duration) -> Self {
        Self::with_tick(timeout, crate::ACTIVITY_WATCH_TICK)
    }

    /// As [`Self::new`], with another watcher tick (zero: poll-only).
    pub fn with_tick(timeout: Duration, tick: Duration) -> Self {
        Self {
            timeout,
            tick,
            servers: WeakPool::new(),
        }
    }

    /// How many servers (connections) a trigger uses.
    pub fn connection_count(&self) -> usize {
        self.servers.len()
    }

    fn server(&self, server: RedisServer) -> Arc<Server> {
        let (timeout, tick) = (self.timeout, self.tick);
        self.servers.get_or_insert_with(server.clone(), || Server {
            connection: Arc::new(Connection::new(server, timeout)),
            watcher: ActivityWatcher::new(tick),
        })
    }
}

impl fmt::Debug for RedisClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClients")
            .field("timeout", &self.timeout)
            .field("connections", &self.connection_count())
            .finish()
    }
}

/// The watcher's round: one pipeline of every registered trigger's read.
struct WatchRound {
    connection: Arc<Connection>,
}

impl ActivityRound for WatchRound {
    type Spec = WatchSpec;
    const SOURCE: &'static str = "redis";

    async fn round(&mut self, input: RoundInput<WatchSpec>) -> RoundReport {
        let commands = input.specs.iter().flat_map(|(_, s)| s.query.commands()).collect();
        let Ok(replies) = self.connection.execute(commands).await else {
            return RoundReport::failed(Vec::new());
        };
        let mut rest = replies.as_slice();
        let mut activity = Vec::with_capacity(input.specs.len());
        for (id, spec) in &input.specs {
            let (mine, after) = rest.split_at(spec.query.command_count().min(rest.len()));
            rest = after;
            if let Ok(value) = spec.query.value(mine) {
                activity.push((*id, is_active(value, spec.activation)));
            }
        }
        RoundReport::succeeded(activity)
    }
}

/// One `redis` or `redis-streams` trigger.
pub struct RedisScaler {
    trigger_type: &'static str,
    server: Arc<Server>,
    registration: Registration<WatchSpec>,
    query: Query,
    target: f64,
    activation: f64,
}

impl RedisScaler {
    /// The scaler of one trigger on the clients' shared connection to its server, registered
    /// with that server's activity watcher (started on the first sample or subscription).
    pub fn new(
        clients: &RedisClients,
        trigger_type: &'static str,
        config: RedisTriggerConfig,
        thresholds: Thresholds,
    ) -> Self {
        let server = clients.server(config.server);
        let registration = server.watcher.register(WatchSpec {
            query: config.query.clone(),
            activation: thresholds.activation,
        });
        Self {
            trigger_type,
            server,
            registration,
            query: config.query,
            target: thresholds.target,
            activation: thresholds.activation,
        }
    }

    /// The shared connection's counters.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.server.connection.stats()
    }

    /// Reads the trigger's value once (in the next round of its connection).
    pub async fn value(&self) -> Result<f64, ScalerError> {
        let connection = &self.server.connection;
        let replies = connection.execute(self.query.commands()).await?;
        self.query
            .value(&replies)
            .map_err(|e| query_error(connection.endpoint(), &self.query, e))
    }

    fn ensure_watching(&self) {
        let connection = self.server.connection.clone();
        self.server.watcher.ensure_running(|| WatchRound { connection });
    }
}

/// The scaler error of a failed read: refused (`NOAUTH`, `WRONGPASS`, `NOPERM`) or a bad
/// response (e.g. `WRONGTYPE`, a missing consumer group).
fn query_error(endpoint: &str, query: &Query, e: QueryError) -> ScalerError {
    let message = format!("key {:?}: {e}", query.key());
    if e.is_denied() {
        ScalerError::unauthorized(endpoint, message)
    } else {
        ScalerError::bad_response(endpoint, message)
    }
}

impl fmt::Debug for RedisScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisScaler")
            .field("trigger_type", &self.trigger_type)
            .field("endpoint", &self.server.connection.endpoint())
            .field("query", &self.query)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .finish()
    }
}

#[async_trait::async_trait]
impl Scaler for RedisScaler {
    fn trigger_type(&self) -> &'static str {
        self.trigger_type
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        self.registration.mark_seen();
        self.ensure_watching();
        let value = self.value().await?;
        Ok(TriggerSample::with_activation(value, self.activation))
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        self.ensure_watching();
        Some(self.registration.changes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16, password: &str, key: &str) -> RedisTriggerConfig {
        RedisTriggerConfig {
            server: RedisServer {
                host: "127.0.0.1".into(),
                port,
                username: None,
                password: Some(password.into()),
                database: 0,
                tls: None,
            },
            query: Query::ListLength { key: key.into() },
        }
    }

    const THRESHOLDS: Thresholds = Thresholds {
        target: 5.0,
        activation: 0.0,
    };

    #[test]
    fn triggers_on_one_server_share_a_connection_until_the_last_goes() {
        let clients = RedisClients::new(Duration::from_secs(1));
        let a = RedisScaler::new(&clients, "redis", config(6379, "p", "a"), THRESHOLDS);
        let b = RedisScaler::new(&clients, "redis-streams", config(6379, "p", "b"), THRESHOLDS);
        let other = RedisScaler::new(&clients, "redis", config(6379, "rotated", "a"), THRESHOLDS);
        assert!(Arc::ptr_eq(&a.server, &b.server));
        assert!(
            !Arc::ptr_eq(&a.server, &other.server),
            "other credentials, other connection"
        );
        assert_eq!(clients.connection_count(), 2);
        assert_eq!(a.server.watcher.trigger_count(), 2);
        drop((a, b));
        assert_eq!(clients.connection_count(), 1);
        assert_eq!(other.metric_target().target_value, 5.0);
        let debug = format!("{other:?} {clients:?}");
        assert!(!debug.contains("rotated"), "{debug}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_and_flips_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let clients = RedisClients::new(Duration::from_secs(1));
        let s = RedisScaler::new(&clients, "redis", config(port, "p", "a"), THRESHOLDS);
        let changes = s.activity_changes().unwrap();
        let e = s.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!changes.has_changed().unwrap() && !*changes.borrow());
    }
}
