//! [`ScalerFactory`]: builds a [`Scaler`] per parsed trigger, sharing one client per broker and
//! credentials across every trigger it builds.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::metrics_api::scaler::{MetricsApiClient, MetricsApiScaler};
use crate::registry::ParsedTrigger;
use crate::{Scaler, ScalerError};

/// Settings shared by every scaler a [`ScalerFactory`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct FactoryOptions {
    /// Timeout of one HTTP poll (connect, request and whole response body). Default 3 s.
    pub http_timeout: Duration,
}

impl FactoryOptions {
    /// The default HTTP timeout (3 s, as KEDA's default `KEDA_HTTP_DEFAULT_TIMEOUT`).
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(3);
}

impl Default for FactoryOptions {
    fn default() -> Self {
        Self {
            http_timeout: Self::DEFAULT_HTTP_TIMEOUT,
        }
    }
}

/// Builds scalers from parsed triggers, sharing one client per connection identity (one HTTP
/// client for all metrics-api triggers). Cheap to clone: clones share the clients.
#[derive(Clone)]
pub struct ScalerFactory {
    inner: Arc<FactoryInner>,
}

struct FactoryInner {
    options: FactoryOptions,
    /// Created on the first metrics-api trigger, then shared.
    metrics_api: OnceLock<Result<Arc<MetricsApiClient>, ScalerError>>,
    /// The AMQP connection pool and HTTP clients shared by every rabbitmq trigger.
    rabbitmq: OnceLock<Arc<crate::rabbitmq::scaler::RabbitMqClients>>,
    /// The NATS connections and cached consumer leaders shared by every nats-jetstream trigger
    /// (their monitoring requests go through the metrics-api HTTP client).
    nats_jetstream: OnceLock<Arc<crate::nats_jetstream::NatsJetStreamClients>>,
    /// The HTTP client and SDK clients shared by every aws-sqs-queue trigger.
    aws_sqs: OnceLock<Arc<crate::aws_sqs::scaler::SqsClients>>,
    /// The cluster clients shared by every kafka trigger (one per bootstrap set + TLS + SASL).
    kafka: OnceLock<crate::kafka::KafkaClusters>,
}

impl ScalerFactory {
    /// A factory with these options. Creates no client yet (and needs no async runtime).
    pub fn new(options: FactoryOptions) -> Self {
        Self {
            inner: Arc::new(FactoryInner {
                options,
                metrics_api: OnceLock::new(),
                rabbitmq: OnceLock::new(),
                nats_jetstream: OnceLock::new(),
                aws_sqs: OnceLock::new(),
                kafka: OnceLock::new(),
            }),
        }
    }

    /// The options this factory was created with.
    pub fn options(&self) -> &FactoryOptions {
        &self.inner.options
    }

    /// Builds the scaler for a parsed trigger. Trigger types without a client yet return
    /// [`ScalerError::Unsupported`]. Needs no async runtime; sampling does.
    pub fn build(&self, trigger: &ParsedTrigger) -> Result<Arc<dyn Scaler>, ScalerError> {
        match trigger.decl.trigger_type {
            "metrics-api" => {
                let client = self.metrics_api_client()?;
                Ok(Arc::new(MetricsApiScaler::new(
                    client,
                    &trigger.params,
                    trigger.thresholds,
                )?))
            }
            "rabbitmq" => {
                let clients = self.inner.rabbitmq.get_or_init(|| {
                    Arc::new(crate::rabbitmq::scaler::RabbitMqClients::new(
                        self.inner.options.http_timeout,
                    ))
                });
                Ok(Arc::new(crate::rabbitmq::scaler::RabbitMqScaler::new(
                    clients.clone(),
                    &trigger.params,
                    trigger.thresholds,
                )?))
            }
            "nats-jetstream" => {
                let http = self.metrics_api_client()?;
                let clients = self.inner.nats_jetstream.get_or_init(|| {
                    Arc::new(crate::nats_jetstream::NatsJetStreamClients::new(
                        http,
                        self.inner.options.http_timeout,
                    ))
                });
                let config = crate::nats_jetstream::NatsJetStreamConfig::try_from(&trigger.params)?;
                Ok(Arc::new(crate::nats_jetstream::NatsJetStreamScaler::new(
                    clients.clone(),
                    config,
                )))
            }
            "aws-sqs-queue" => {
                let clients = self.inner.aws_sqs.get_or_init(|| {
                    Arc::new(crate::aws_sqs::scaler::SqsClients::new(
                        self.inner.options.http_timeout,
                    ))
                });
                Ok(Arc::new(crate::aws_sqs::scaler::SqsScaler::new(
                    clients.clone(),
                    &trigger.params,
                    trigger.thresholds,
                )?))
            }
            "kafka" => {
                let clusters = self.inner.kafka.get_or_init(|| {
                    crate::kafka::KafkaClusters::new(crate::kafka::KafkaOptions {
                        request_timeout: self.inner.options.http_timeout,
                        ..Default::default()
                    })
                });
                Ok(Arc::new(crate::kafka::KafkaScaler::new(
                    clusters.clone(),
                    &trigger.params,
                    trigger.thresholds,
                )?))
            }
            other => Err(ScalerError::Unsupported {
                trigger_type: other.to_string(),
            }),
        }
    }

    fn metrics_api_client(&self) -> Result<Arc<MetricsApiClient>, ScalerError> {
        self.inner
            .metrics_api
            .get_or_init(|| MetricsApiClient::new(self.inner.options.http_timeout).map(Arc::new))
            .clone()
    }
}

impl Default for ScalerFactory {
    fn default() -> Self {
        Self::new(FactoryOptions::default())
    }
}

impl fmt::Debug for ScalerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalerFactory")
            .field("options", &self.inner.options)
            .field("metrics_api_client", &self.inner.metrics_api.get().is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_is_shareable() {
        fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
        assert_shareable::<ScalerFactory>();
        fn assert_object(_: Option<Arc<dyn Scaler>>) {}
        assert_object(None);
        assert_eq!(FactoryOptions::default().http_timeout, Duration::from_secs(3));
    }
}
