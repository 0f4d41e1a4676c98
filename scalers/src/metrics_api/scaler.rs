//! The `metrics-api` scaler: GETs a JSON document over HTTP(S) through the factory's shared
//! [`MetricsApiClient`] and reads one number from it at `valueLocation` ([`value_at`]).
//!
//! The trigger's parameters become a [`MetricsApiConfig`] once, in [`MetricsApiScaler::new`].
//! Each sample takes one of its namespace's slots ([`NamespaceSlots`]) for the request, and
//! reads the value from the body's text without building the document ([`value_at`]).

use std::fmt;
use std::sync::Arc;

use super::config::MetricsApiConfig;
use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

use super::client::{Endpoint, MAX_BODY_BYTES, MetricsApiClient, NamespaceSlots};
use super::value::value_at;

/// One metrics-api trigger: where to poll, where the value is, and the thresholds.
pub struct MetricsApiScaler {
    client: Arc<MetricsApiClient>,
    endpoint: Endpoint,
    slots: NamespaceSlots,
    value_location: String,
    target_value: f64,
    activation_target_value: f64,
}

impl MetricsApiScaler {
    /// Builds the scaler from the trigger's parsed parameters (see [`crate::metrics_api`]) and its
    /// thresholds (target and activation, as [`crate::registry::ParsedTrigger::thresholds`]);
    /// its requests count against `namespace`'s slots.
    pub fn new(
        client: Arc<MetricsApiClient>,
        params: &ParsedParams,
        thresholds: Thresholds,
        namespace: &str,
    ) -> Result<Self, ScalerError> {
        let config = MetricsApiConfig::try_from(params)?;
        Ok(Self {
            slots: client.namespace_slots(namespace),
            client,
            endpoint: Endpoint::parse(&config.url, config.unsafe_ssl)?,
            value_location: config.value_location,
            target_value: thresholds.target,
            activation_target_value: thresholds.activation,
        })
    }

    /// The polled endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl fmt::Debug for MetricsApiScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiScaler")
            .field("endpoint", &self.endpoint)
            .field("value_location", &self.value_location)
            .field("target_value", &self.target_value)
            .field("activation_target_value", &self.activation_target_value)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for MetricsApiScaler {
    fn trigger_type(&self) -> &'static str {
        "metrics-api"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target_value,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let shown = self.endpoint.shown();
        let body = self
            .client
            .fetch_within(&self.endpoint, MAX_BODY_BYTES, Some(&self.slots))
            .await?;
        let text = std::str::from_utf8(body.bytes())
            .map_err(|_| ScalerError::bad_response(shown, "response is not UTF-8 text"))?;
        let value = value_at(text, &self.value_location)
            .map_err(|e| ScalerError::bad_response(shown, e.to_string()))?;
        Ok(TriggerSample::with_activation(
            value,
            self.activation_target_value,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn scaler_debug_hides_credentials() {
        let client = Arc::new(MetricsApiClient::new(Duration::from_secs(1)).unwrap());
        let params = crate::params::tests_support::parse_meta(
            &crate::metrics_api::DECL,
            &[
                ("url", "http://user:hunter2@127.0.0.1:1/q"),
                ("valueLocation", "a"),
                ("targetValue", "3"),
            ],
        )
        .unwrap();
        let thresholds = Thresholds {
            target: 3.0,
            activation: 0.0,
        };
        let scaler = MetricsApiScaler::new(client, &params, thresholds, "team-a").unwrap();
        let debug = format!("{scaler:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("user"), "{debug}");
        assert_eq!(scaler.metric_target().target_value, 3.0);
    }
}
