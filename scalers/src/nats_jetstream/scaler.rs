//! [`NatsJetStreamScaler`], one nats-jetstream trigger, and [`NatsJetStreamClients`], what every
//! trigger of a factory shares: the HTTP client for the monitoring endpoints (the factory's
//! [`MetricsApiClient`]: pooled connections, one request in flight per URL), the cached consumer
//! leaders, the NATS connections and the `/jsz` activity watchers.
//!
//! A sample reads the consumer's lag through the monitoring endpoint ([`super::leaders`]) or the
//! JetStream API ([`super::connections`]), whichever the trigger is set up for.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::sync::watch;

use super::config::{ConsumerSource, NatsJetStreamConfig};
use super::connections::{ConnectionSlot, NatsConnections};
use super::jsz::ConsumerLag;
use super::leaders::{LeaderCache, monitoring_lag};
use super::watch::{JszWatchers, Registration, WATCH_TICK, WatcherStats};
use crate::metrics_api::{Endpoint, MetricsApiClient, NATS_MAX_BODY_BYTES};
use crate::params::mask_userinfo;
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// What every nats-jetstream trigger of a factory shares: the HTTP client for the monitoring
/// endpoints, the cached consumer leaders, one NATS connection per server URL + credentials,
/// and one activity watcher per monitoring endpoint and account.
pub struct NatsJetStreamClients {
    http: Arc<MetricsApiClient>,
    timeout: Duration,
    /// The consumer leaders found by the polls (read by the watchers too).
    pub(super) leaders: LeaderCache,
    connections: NatsConnections,
    /// The `/jsz` activity watchers.
    pub(super) watchers: JszWatchers,
}

impl NatsJetStreamClients {
    /// Shares `http` for the monitoring endpoints; `timeout` bounds a NATS connect and each
    /// JetStream request. Needs no async runtime (connections are made on first use).
    pub fn new(http: Arc<MetricsApiClient>, timeout: Duration) -> Self {
        Self {
            http,
            timeout,
            leaders: LeaderCache::default(),
            connections: NatsConnections::new(timeout),
            watchers: JszWatchers::new(WATCH_TICK),
        }
    }

    /// Sets how often each monitoring watcher reads `/jsz` (default [`WATCH_TICK`]); zero
    /// disables the watchers (monitoring triggers are then poll-only and
    /// [`Scaler::activity_changes`] never fires).
    pub fn with_watch_tick(mut self, tick: Duration) -> Self {
        self.watchers.tick = tick;
        self
    }

    /// What the monitoring activity watchers are doing now.
    pub fn watcher_stats(&self) -> WatcherStats {
        self.watchers.stats()
    }

    /// How many NATS connections (server URL + credentials) are pooled.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// GETs a monitoring URL through the shared HTTP client.
    pub(super) async fn get_json(&self, url: &str) -> Result<Json, ScalerError> {
        let endpoint = Endpoint::parse(url, false).map_err(|_| {
            ScalerError::InvalidConfig(format!(
                "nats-jetstream: {} is not a valid monitoring URL",
                mask_userinfo(url)
            ))
        })?;
        self.http.fetch_json(&endpoint, NATS_MAX_BODY_BYTES).await
    }
}

impl fmt::Debug for NatsJetStreamClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamClients")
            .field("timeout", &self.timeout)
            .field("cached_leaders", &self.leaders.len())
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

/// One nats-jetstream trigger.
pub struct NatsJetStreamScaler {
    pub(super) clients: Arc<NatsJetStreamClients>,
    /// Monitoring triggers: the registration with the endpoint's activity watcher.
    registration: Option<Registration>,
    /// JetStream API triggers: this trigger's hold on its pooled connection.
    connection: Option<Arc<ConnectionSlot>>,
    source: ConsumerSource,
    stream: String,
    consumer: String,
    target: f64,
    pub(super) activation: f64,
}

impl NatsJetStreamScaler {
    /// Builds the scaler for one trigger's typed configuration, registering monitoring triggers
    /// with their endpoint's activity watcher (started here when a Tokio runtime is at hand,
    /// else on the first sample).
    pub fn new(clients: Arc<NatsJetStreamClients>, config: NatsJetStreamConfig) -> Self {
        let NatsJetStreamConfig {
            source,
            stream,
            consumer,
            thresholds,
        } = config;
        // The JetStream API path stays poll-only: a batched read there (CONSUMER.LIST) is per
        // stream, not per server.
        let registration = match &source {
            ConsumerSource::Monitoring(m) => Some(Registration::new(
                &clients,
                m,
                &stream,
                &consumer,
                thresholds.activation,
            )),
            ConsumerSource::JetStream(_) => None,
        };
        let connection = match &source {
            ConsumerSource::JetStream(server) => Some(clients.connections.slot(server)),
            ConsumerSource::Monitoring(_) => None,
        };
        Self {
            clients,
            registration,
            connection,
            source,
            stream,
            consumer,
            target: thresholds.target,
            activation: thresholds.activation,
        }
    }

    /// Reads the consumer's lag once (both paths).
    pub async fn lag(&self) -> Result<ConsumerLag, ScalerError> {
        match &self.source {
            ConsumerSource::Monitoring(m) => {
                monitoring_lag(&self.clients, m, &self.stream, &self.consumer).await
            }
            ConsumerSource::JetStream(server) => {
                let slot = match &self.connection {
                    Some(slot) => slot.clone(),
                    None => self.clients.connections.slot(server),
                };
                self.clients
                    .connections
                    .consumer_lag(&slot, server, &self.stream, &self.consumer)
                    .await
            }
        }
    }
}

impl fmt::Debug for NatsJetStreamScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamScaler")
            .field("source", &self.source)
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for NatsJetStreamScaler {
    fn trigger_type(&self) -> &'static str {
        "nats-jetstream"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        if let Some(r) = &self.registration {
            r.sampling(&self.clients);
        }
        let lag = self.lag().await?;
        Ok(TriggerSample::with_activation(
            lag.total() as f64,
            self.activation,
        ))
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        Some(self.registration.as_ref()?.changes(&self.clients))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_jetstream::testing::{FakeCluster, scaler};
    use crate::params::tests_support::parse_meta;
    use tokio::net::TcpListener;

    #[test]
    fn scaler_debug_hides_credentials() {
        let http = Arc::new(MetricsApiClient::new(Duration::from_secs(1)).unwrap());
        let clients = Arc::new(NatsJetStreamClients::new(http, Duration::from_secs(1)));
        let metas: [&[(&str, &str)]; 2] = [
            &[
                ("natsServerMonitoringEndpoint", "admin:hunter2@nats:8222"),
                ("account", "$G"),
                ("stream", "S"),
                ("consumer", "c"),
            ],
            &[
                ("natsServerURL", "nats://admin:hunter2@nats:4222"),
                ("stream", "S"),
                ("consumer", "c"),
            ],
        ];
        for meta in metas {
            let params = parse_meta(&crate::nats_jetstream::DECL, meta).unwrap();
            let config = NatsJetStreamConfig::try_from(&params).unwrap();
            let scaler = NatsJetStreamScaler::new(clients.clone(), config);
            let debug = format!("{scaler:?} {clients:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
        }
    }

    #[tokio::test]
    async fn activation_boundary_and_unreachable_endpoint() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler(cluster.port);
        // The scaler's activation threshold is 16: 17 is active; at 16 it would not be.
        assert!(s.sample().await.unwrap().active);
        assert!(!TriggerSample::with_activation(16.0, s.activation).active);
        assert_eq!(s.metric_target().target_value, 5.0);
        drop(cluster);

        // Nothing listens: an Unreachable error (the cached leader fails, then the endpoint).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = scaler(port).sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    }
}
