//! [`RabbitMqScaler`]: one rabbitmq trigger. Builds its AMQP or management access from the
//! trigger's parameters, registers with a watcher for cold activation, and samples its queue
//! (passive `queue.declare` over AMQP, or one management API `GET`).

use std::fmt;
use std::sync::Arc;

use hyper::Uri;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use tokio::sync::watch;

use super::Protocol;
use super::amqp::{
    AmqpTarget, PooledConnection, amqp_error, connection_failed, is_not_found, slot_connection,
};
use super::clients::{RabbitMqClients, lock};
use super::config::RabbitMqConfig;
use super::management::{HttpTarget, QUEUE_MAX_BODY_BYTES, http_get_typed, regex_listing_cap};
use super::stats::{Mode, Operation, QueueDoc, QueueListing, QueueStats, evaluate, queue_stats, regex_stats};
use super::watch::{Watch, WatchSpec};
use crate::params::Thresholds;
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// How a scaler reaches its queue.
enum Access {
    Amqp(Box<AmqpTarget>),
    Http(Box<HttpTarget>),
}

/// One rabbitmq trigger: where its queue is, how to read it, and its thresholds.
pub struct RabbitMqScaler {
    clients: Arc<RabbitMqClients>,
    /// The registration with the watcher that pushes activity changes (AMQP, and management
    /// without `useRegex`).
    watch: Option<Watch>,
    access: Access,
    /// The broker address, credentials masked.
    shown: String,
    protocol: Protocol,
    queue: String,
    vhost: String,
    mode: Mode,
    use_regex: bool,
    operation: Operation,
    page_size: i64,
    exclude_unacknowledged: bool,
    target: f64,
    activation: f64,
}

impl RabbitMqScaler {
    /// Builds the scaler from the trigger's typed configuration (see [`crate::rabbitmq`]) and its
    /// thresholds. Builds the TLS material and the request URIs; dials nothing (needs no async
    /// runtime).
    pub fn new(
        clients: Arc<RabbitMqClients>,
        config: RabbitMqConfig,
        thresholds: Thresholds,
    ) -> Result<Self, ScalerError> {
        let RabbitMqConfig {
            protocol,
            address,
            queue,
            mode,
            operation,
            page_size,
            use_regex,
            exclude_unacknowledged,
            timeout,
            tls,
            thresholds: _,
        } = config;
        let shown = address.shown();
        let timeout = timeout.unwrap_or(clients.default_timeout);
        let access = match protocol {
            // The queue name's length was checked by the configuration.
            Protocol::Amqp => Access::Amqp(Box::new(AmqpTarget::new(&clients, &address, &tls)?)),
            Protocol::Http => {
                let url = if use_regex {
                    address.regex_url(&queue, page_size)
                } else {
                    address.queue_url(&queue)
                };
                let uri = url.parse::<Uri>().map_err(|e| {
                    ScalerError::InvalidConfig(format!("rabbitmq: {shown} gives no valid request URI ({e})"))
                })?;
                let client = clients.http_client(&tls)?;
                Access::Http(Box::new(HttpTarget {
                    uri,
                    authorization: address.basic_auth()?,
                    tls,
                    client,
                    timeout,
                }))
            }
        };
        let spec = WatchSpec {
            queue: queue.clone(),
            mode,
            exclude_unacknowledged,
            activation: thresholds.activation,
        };
        let watch = match &access {
            Access::Amqp(target) => {
                let mut dial = lock(&target.slot.dial);
                if dial.is_none() {
                    *dial = Some((target.uri.clone(), target.tls.as_ref().map(|(c, _)| c.clone())));
                }
                drop(dial);
                Some(Watch::amqp(target.slot.clone(), spec))
            }
            // A regex is matched by the broker (Erlang's re): left to the polls.
            Access::Http(_) if use_regex => None,
            Access::Http(target) => {
                let listing = address.listing_url().parse::<Uri>().map_err(|e| {
                    ScalerError::InvalidConfig(format!("rabbitmq: {shown} gives no valid request URI ({e})"))
                })?;
                Some(Watch::listing(&clients, target, listing, &shown, spec))
            }
        };
        let scaler = Self {
            clients,
            watch,
            access,
            shown,
            protocol,
            queue,
            vhost: address.vhost,
            mode,
            use_regex,
            operation,
            page_size,
            exclude_unacknowledged,
            target: thresholds.target,
            activation: thresholds.activation,
        };
        scaler.ensure_watching();
        Ok(scaler)
    }

    /// Starts the watcher's task if it is not running (and a runtime is at hand).
    fn ensure_watching(&self) {
        if let Some(w) = &self.watch {
            w.ensure_running(&self.clients);
        }
    }

    /// The protocol used (after resolving `auto`). Over [`Protocol::Amqp`], unacked messages are
    /// not counted: see [`amqp_hides_unacked_note`](super::amqp_hides_unacked_note).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The broker address with credentials masked and the vhost escaped, e.g.
    /// `amqp://<redacted>@127.0.0.1:5672/%2F`.
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// The vhost, decoded (`/` for the default one).
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Reads the queue's statistics once (over AMQP only `messages` is known: the ready count).
    pub async fn queue_stats(&self) -> Result<QueueStats, ScalerError> {
        match &self.access {
            Access::Amqp(target) => {
                let ready = self.amqp_message_count(target).await? as f64;
                Ok(QueueStats {
                    messages: ready,
                    messages_ready: ready,
                    ..QueueStats::default()
                })
            }
            Access::Http(target) => {
                let stats = if self.use_regex {
                    let limit = regex_listing_cap(self.page_size);
                    let listing: QueueListing = self.fetch(target, limit).await?;
                    regex_stats(&listing, self.operation, self.page_size)
                } else {
                    let doc: QueueDoc = self.fetch(target, QUEUE_MAX_BODY_BYTES).await?;
                    queue_stats(&doc)
                };
                stats.map_err(|problem| ScalerError::bad_response(&self.shown, problem.to_string()))
            }
        }
    }

    async fn amqp_message_count(&self, target: &AmqpTarget) -> Result<u32, ScalerError> {
        let timeout = self.clients.default_timeout;
        match tokio::time::timeout(timeout, self.amqp_declare(target)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ScalerError::timeout(&self.shown, timeout)),
        }
    }

    /// Passive `queue.declare` on a pooled connection, dialling it first if needed.
    async fn amqp_declare(&self, target: &AmqpTarget) -> Result<u32, ScalerError> {
        let pooled = self.amqp_connection(target).await?;
        let failed = |step: &str, e: &lapin::Error| {
            if connection_failed(e, &pooled) {
                target.slot.discard(&pooled);
            }
            amqp_error(target, &self.shown, step, e)
        };
        let channel = pooled
            .channel()
            .await
            .map_err(|e| failed("cannot open a channel", &e))?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // Length checked when the scaler was built.
        let name = ShortString::try_new(self.queue.as_str())
            .map_err(|_| ScalerError::InvalidConfig("rabbitmq: queueName is longer than 255 bytes".into()))?;
        match channel.queue_declare(name, options, FieldTable::default()).await {
            Ok(queue) => {
                pooled.give_back(channel);
                Ok(queue.message_count())
            }
            Err(e) => {
                let step = if is_not_found(&e) {
                    format!("queue {:?} not found in vhost {:?}", self.queue, self.vhost)
                } else {
                    format!("passive queue.declare of {:?} failed", self.queue)
                };
                Err(failed(&step, &e))
            }
        }
    }

    async fn amqp_connection(&self, target: &AmqpTarget) -> Result<Arc<PooledConnection>, ScalerError> {
        let tls = target.tls.as_ref().map(|(config, _)| config);
        let pooled = slot_connection(&target.slot, &target.uri, tls, self.clients.default_timeout)
            .await
            .map_err(|e| amqp_error(target, &self.shown, "cannot connect", &e))?;
        Ok(pooled)
    }

    async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        target: &HttpTarget,
        limit: usize,
    ) -> Result<T, ScalerError> {
        match tokio::time::timeout(target.timeout, self.request(target, limit)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ScalerError::timeout(&self.shown, target.timeout)),
        }
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        target: &HttpTarget,
        limit: usize,
    ) -> Result<T, ScalerError> {
        let not_found = || {
            if self.use_regex {
                format!("vhost {:?} not found", self.vhost)
            } else {
                format!("queue {:?} not found in vhost {:?}", self.queue, self.vhost)
            }
        };
        let roots = if target.uri.scheme_str() == Some("https") {
            target.tls.roots_problem()
        } else {
            None
        };
        http_get_typed(target, &self.shown, not_found, roots, limit).await
    }
}

impl fmt::Debug for RabbitMqScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqScaler")
            .field("endpoint", &self.shown)
            .field("protocol", &self.protocol)
            .field("queue", &self.queue)
            .field("vhost", &self.vhost)
            .field("mode", &self.mode)
            .field("use_regex", &self.use_regex)
            .field("operation", &self.operation)
            .field("exclude_unacknowledged", &self.exclude_unacknowledged)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for RabbitMqScaler {
    fn trigger_type(&self) -> &'static str {
        "rabbitmq"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        if let Some(w) = &self.watch {
            w.ensure_running(&self.clients);
            w.mark_seen();
        }
        let stats = self.queue_stats().await?;
        Ok(evaluate(
            self.mode,
            &stats,
            self.exclude_unacknowledged,
            self.activation,
        ))
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        let w = self.watch.as_ref()?;
        w.ensure_running(&self.clients);
        Some(w.changes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_with;
    use std::time::Duration;

    fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<RabbitMqScaler, ScalerError> {
        scaler_with(Arc::new(RabbitMqClients::default()), meta, auth)
    }

    fn scaler_with(
        clients: Arc<RabbitMqClients>,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<RabbitMqScaler, ScalerError> {
        let params = parse_with(&crate::rabbitmq::DECL, meta, auth).unwrap();
        let thresholds = (crate::rabbitmq::DECL.thresholds)(&params);
        RabbitMqScaler::new(clients, RabbitMqConfig::try_from(&params)?, thresholds)
    }

    #[test]
    fn scalers_share_amqp_slots_by_identity() {
        let clients = Arc::new(RabbitMqClients::default());
        let build = |host: &str, queue: &str| {
            scaler_with(clients.clone(), &[("host", host), ("queueName", queue)], &[]).unwrap()
        };
        let slot = |s: &RabbitMqScaler| match &s.access {
            Access::Amqp(t) => t.slot.clone(),
            Access::Http(_) => panic!("not amqp"),
        };
        let a = build("amqp://u:p@h:5672/vh", "q1");
        let b = build("amqp://u:p@h:5672/vh", "q2");
        let c = build("amqp://u:other@h:5672/vh", "q1");
        let d = build("amqp://u:p@h:5672/other", "q1");
        assert!(Arc::ptr_eq(&slot(&a), &slot(&b)));
        assert!(!Arc::ptr_eq(&slot(&a), &slot(&c)));
        assert!(!Arc::ptr_eq(&slot(&a), &slot(&d)));
        assert_eq!(clients.amqp_connection_count(), 0);
        // Slots die with their last scaler.
        drop((a, b, c, d));
        let e = build("amqp://u:p@h:5672/vh", "q1");
        // The scaler's target and its watcher registration, and the clone here.
        assert_eq!(Arc::strong_count(&slot(&e)), 3);
        assert_eq!(lock(&clients.amqp_slots).len(), 1);
    }

    #[test]
    fn build_checks() {
        let ok = scaler(&[("host", "http://h:15672/"), ("queueName", "q")], &[]).unwrap();
        assert_eq!(
            (ok.protocol(), ok.mode(), ok.vhost()),
            (Protocol::Http, Mode::QueueLength, "/")
        );
        assert_eq!(ok.metric_target().target_value, 20.0);
        let ok = scaler(
            &[
                ("host", "http://h/"),
                ("queueName", "q"),
                ("mode", "MessageRate"),
                ("value", "2.5"),
                ("activationValue", "1"),
                ("timeout", "250"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            (ok.mode(), ok.target, ok.activation),
            (Mode::MessageRate, 2.5, 1.0)
        );
        assert!(matches!(&ok.access, Access::Http(t) if t.timeout == Duration::from_millis(250)));

        type Pairs = &'static [(&'static str, &'static str)];
        let long_queue = "q".repeat(256);
        let failures: &[(Pairs, Pairs, &str)] = &[
            (
                &[("host", "http://h/"), ("queueName", "q"), ("protocol", "amqp")],
                &[],
                "protocol is amqp",
            ),
            (
                &[("host", "amqp://h/"), ("queueName", "q")],
                &[("tls", "enable")],
                "not an amqps://",
            ),
            (
                &[("host", "amqps://h/"), ("queueName", "q")],
                &[
                    ("tls", "enable"),
                    ("cert", "c"),
                    ("key", "k"),
                    ("keyPassword", "pw"),
                ],
                "keyPassword",
            ),
            (
                &[("host", "amqps://h/"), ("queueName", "q")],
                &[("tls", "enable"), ("ca", "not pem")],
                "ca holds no PEM",
            ),
            (
                &[("host", "https://h/"), ("queueName", "q")],
                &[
                    ("tls", "enable"),
                    (
                        "cert",
                        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    ),
                    ("key", "hunter2-key-material"),
                ],
                "",
            ),
        ];
        for (meta, auth, expected) in failures {
            let e = scaler(meta, auth).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.kind(), "invalid_config", "{text}");
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("hunter2") && !text.contains("pw"), "{text}");
        }
        let e = scaler(&[("host", "amqp://h/"), ("queueName", &long_queue)], &[]).unwrap_err();
        assert!(e.to_string().contains("255 bytes"), "{e}");
    }

    #[test]
    fn debug_output_hides_credentials() {
        let clients = Arc::new(RabbitMqClients::default());
        let a = scaler_with(
            clients.clone(),
            &[("host", "amqp://admin:hunter2@h:5672/vh"), ("queueName", "q")],
            &[],
        )
        .unwrap();
        let b = scaler_with(
            clients.clone(),
            &[("host", "http://h:15672/"), ("queueName", "q")],
            &[("username", "admin"), ("password", "hunter2")],
        )
        .unwrap();
        for text in [
            format!("{a:?}"),
            format!("{b:?}"),
            format!("{clients:?}"),
            a.endpoint().to_string(),
            b.endpoint().to_string(),
        ] {
            assert!(!text.contains("hunter2") && !text.contains("admin"), "{text}");
        }
        assert_eq!(a.endpoint(), "amqp://<redacted>@h:5672/vh");
        assert_eq!(b.endpoint(), "http://<redacted>@h:15672/%2F");
    }

    #[test]
    fn the_factory_builds_rabbitmq_scalers_without_a_runtime() {
        let meta: std::collections::BTreeMap<String, String> = [
            ("host", "amqp://u:hunter2@h:5672/vh"),
            ("queueName", "q"),
            ("mode", "QueueLength"),
            ("value", "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let trigger = crate::parse_trigger(0, "rabbitmq", &meta, Some(&Default::default()), None).unwrap();
        let factory = crate::ScalerFactory::default();
        let scaler = factory.build(&trigger).unwrap();
        assert_eq!(scaler.trigger_type(), "rabbitmq");
        assert_eq!(scaler.metric_target().target_value, 7.0);
        let error = factory
            .build(&crate::parse_trigger(0, "rabbitmq", &meta, None, None).unwrap())
            .map(|_| ());
        assert!(error.is_ok(), "{error:?}");
    }
}
