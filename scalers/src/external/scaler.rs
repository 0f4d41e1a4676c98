//! [`ExternalScaler`]: one `external` or `external-push` trigger. A sample asks the server for its
//! metric specs (`GetMetricSpec`), then for each spec's value (`GetMetrics`) and for the
//! activity (`IsActive`) at once, and reports the largest value/target ratio ([`ratio`]) against
//! an HPA target of 1. An `external-push` trigger also keeps a `StreamIsActive` stream open
//! ([`super::push`]), whose changes wake the scale loop.

use std::fmt;
use std::sync::Arc;

use futures::future::try_join;
use tokio::sync::watch;

use super::client::GrpcServer;
use super::config::ExternalConfig;
use super::proto::{GetMetricsRequest, MetricSpec, MetricValue, ScaledObjectRef};
use super::push::PushStream;
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// The most metric specs one trigger's server may give (each costs a `GetMetrics` per sample).
pub const MAX_METRIC_SPECS: usize = 16;

/// One external trigger.
pub struct ExternalScaler {
    trigger_type: &'static str,
    server: Arc<GrpcServer>,
    object: ScaledObjectRef,
    /// `external-push` only: the activity stream.
    push: Option<PushStream>,
}

impl ExternalScaler {
    /// A scaler of `trigger_type` (`external` or `external-push`, which also streams activity)
    /// asking `server` about the object `name` in `namespace`, passing `config`'s metadata.
    pub fn new(
        trigger_type: &'static str,
        server: Arc<GrpcServer>,
        config: &ExternalConfig,
        name: &str,
        namespace: &str,
        push: bool,
    ) -> Self {
        let object = ScaledObjectRef {
            name: name.to_string(),
            namespace: namespace.to_string(),
            scaler_metadata: config.metadata.clone().into_iter().collect(),
        };
        Self {
            trigger_type,
            push: push.then(|| PushStream::new(server.clone(), object.clone())),
            server,
            object,
        }
    }
}

impl fmt::Debug for ExternalScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalScaler")
            .field("trigger_type", &self.trigger_type)
            .field("server", &self.server)
            .field("name", &self.object.name)
            .field("namespace", &self.object.namespace)
            .field("push", &self.push.is_some())
            .finish()
    }
}

/// A metric spec's target: `targetSizeFloat` when positive, else `targetSize` (KEDA's order).
pub fn spec_target(spec: &MetricSpec) -> f64 {
    if spec.target_size_float > 0.0 {
        spec.target_size_float
    } else {
        spec.target_size as f64
    }
}

/// A `GetMetrics` answer's value: the sum of its values (the HPA sums an external metric's
/// items), each `metricValueFloat` when positive, else `metricValue` (KEDA's order). `None`
/// when it has no value.
pub fn metric_value(values: &[MetricValue]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .map(|v| match v.metric_value_float > 0.0 {
                true => v.metric_value_float,
                false => v.metric_value as f64,
            })
            .sum(),
    )
}

/// The value ebb serves against a target of 1: the largest `value / target` over the specs, which
/// gives the HPA the replica count it would compute from one metric per spec (it takes the
/// largest). Each item is `(metric name, target, value)`; a target that is not positive or a
/// value that is not finite is an error naming the metric.
pub fn ratio(items: &[(String, f64, f64)]) -> Result<f64, String> {
    let mut best: Option<f64> = None;
    for (name, target, value) in items {
        if !(target.is_finite() && *target > 0.0) {
            return Err(format!(
                "metric {name:?} has target {target}, not a positive number"
            ));
        }
        if !value.is_finite() {
            return Err(format!("metric {name:?} has value {value}, not a finite number"));
        }
        let r = value / target;
        best = Some(best.map_or(r, |b| b.max(r)));
    }
    best.ok_or_else(|| "GetMetricSpec gave no metric".to_string())
}

impl ExternalScaler {
    async fn specs(&self) -> Result<Vec<MetricSpec>, ScalerError> {
        let mut client = self.server.client()?;
        let specs = self
            .server
            .call("GetMetricSpec", client.get_metric_spec(self.object.clone()))
            .await?
            .metric_specs;
        if specs.len() > MAX_METRIC_SPECS {
            return Err(ScalerError::bad_response(
                &self.server.shown(),
                format!(
                    "GetMetricSpec gave {} metrics; ebb reads at most {MAX_METRIC_SPECS}",
                    specs.len()
                ),
            ));
        }
        Ok(specs)
    }

    async fn value_of(&self, spec: &MetricSpec) -> Result<(String, f64, f64), ScalerError> {
        let mut client = self.server.client()?;
        let request = GetMetricsRequest {
            scaled_object_ref: Some(self.object.clone()),
            metric_name: spec.metric_name.clone(),
        };
        let values = self
            .server
            .call("GetMetrics", client.get_metrics(request))
            .await?
            .metric_values;
        let value = metric_value(&values).ok_or_else(|| {
            ScalerError::bad_response(
                &self.server.shown(),
                format!("GetMetrics gave no value for metric {:?}", spec.metric_name),
            )
        })?;
        Ok((spec.metric_name.clone(), spec_target(spec), value))
    }

    async fn is_active(&self) -> Result<bool, ScalerError> {
        let mut client = self.server.client()?;
        Ok(self
            .server
            .call("IsActive", client.is_active(self.object.clone()))
            .await?
            .result)
    }
}

#[async_trait::async_trait]
impl Scaler for ExternalScaler {
    fn trigger_type(&self) -> &'static str {
        self.trigger_type
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget { target_value: 1.0 }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        if let Some(push) = &self.push {
            push.ensure_running();
        }
        let specs = self.specs().await?;
        let values = futures::future::try_join_all(specs.iter().map(|s| self.value_of(s)));
        let (items, active) = try_join(values, self.is_active()).await?;
        let value = ratio(&items).map_err(|m| ScalerError::bad_response(&self.server.shown(), m))?;
        // A stream's latest `true` counts too: the wake it caused must not be undone by a slower
        // IsActive.
        let pushed = self.push.as_ref().is_some_and(PushStream::pushed_active);
        Ok(TriggerSample {
            value,
            active: active || pushed,
        })
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        let push = self.push.as_ref()?;
        push.ensure_running();
        Some(push.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, size: i64, float: f64) -> MetricSpec {
        MetricSpec {
            metric_name: name.into(),
            target_size: size,
            target_size_float: float,
        }
    }

    fn value(int: i64, float: f64) -> MetricValue {
        MetricValue {
            metric_name: String::new(),
            metric_value: int,
            metric_value_float: float,
        }
    }

    #[test]
    fn float_fields_win_when_positive() {
        assert_eq!(spec_target(&spec("a", 10, 0.0)), 10.0);
        assert_eq!(spec_target(&spec("a", 10, 2.5)), 2.5);
        assert_eq!(spec_target(&spec("a", 10, -1.0)), 10.0);
        assert_eq!(metric_value(&[value(7, 0.0)]), Some(7.0));
        assert_eq!(metric_value(&[value(7, 0.5)]), Some(0.5));
        assert_eq!(metric_value(&[value(7, 0.0), value(1, 1.5)]), Some(8.5));
        assert_eq!(metric_value(&[]), None);
    }

    #[test]
    fn the_largest_ratio_is_served() {
        let items = |v: &[(&str, f64, f64)]| -> Vec<(String, f64, f64)> {
            v.iter().map(|(n, t, x)| (n.to_string(), *t, *x)).collect()
        };
        assert_eq!(ratio(&items(&[("a", 5.0, 12.0)])), Ok(2.4));
        assert_eq!(ratio(&items(&[("a", 5.0, 12.0), ("b", 2.0, 9.0)])), Ok(4.5));
        assert_eq!(ratio(&items(&[("a", 4.0, 0.0)])), Ok(0.0));
        assert!(ratio(&items(&[])).unwrap_err().contains("no metric"));
        assert!(ratio(&items(&[("a", 0.0, 1.0)])).unwrap_err().contains("\"a\""));
        assert!(ratio(&items(&[("a", -2.0, 1.0)])).is_err());
        assert!(ratio(&items(&[("a", 1.0, f64::NAN)])).is_err());
        assert!(ratio(&items(&[("a", f64::INFINITY, 1.0)])).is_err());
    }
}
