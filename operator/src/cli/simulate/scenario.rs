//! What `ebb simulate` replays a series against: one ScaledObject, checked as `ebb validate`
//! checks it and compiled by the operator's own path ([`crate::compile::triggers::compile`]),
//! reduced to what the scale loop and the HPA see — the [`ScalingSpec`], each trigger's metric
//! (name, target, activation threshold, type, whether it pushes activity changes), the
//! scalingModifiers [`Composite`], the pause annotations, and the HPA ebb would apply
//! ([`crate::reconcile::hpa::desired_hpa`]) as an [`HpaSpec`].

use ebb_crds::{MetricType, ScaledObject};
use ebb_scalers::kafka::lag::{CapPolicy, LagSummary, hpa_metric_value};
use ebb_scalers::registry::ParsedTrigger;
use serde_json::Value as Json;

use crate::cli::bundle::BundleObjects;
use crate::cli::validate::{CheckOptions, InputDocument, check_scaled_object_value};
use crate::compile::triggers::compile;
use crate::reconcile::hpa::{HpaMetric, HpaVersion, desired_hpa, quantity};
use crate::reconcile::plan::pause_state;
use crate::scale::composite::Composite;
use crate::scale::decision::{PauseState, ScalingSpec};

use super::SimulateError;
use super::hpa_model::{Behavior, HpaMetricSpec, HpaSpec, milli};

/// How a kafka trigger turns the series' total lag into the value ebb serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KafkaEncoding {
    /// `lagThreshold`.
    pub lag_threshold: i64,
    /// `activationLagThreshold`.
    pub activation: i64,
    /// The cap flags (`allowIdleConsumers`, `limitToPartitionsWithLag`, ...).
    pub cap: CapPolicy,
    /// The partition count (`--partitions`); without it the count is not capped.
    pub partitions: Option<u64>,
}

/// One trigger as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTrigger {
    /// Its `name`, else its index.
    pub label: String,
    /// Its external metric name.
    pub metric_name: String,
    /// The HPA target.
    pub target: f64,
    /// The activation threshold (active strictly above).
    pub activation: f64,
    /// AverageValue or Value.
    pub metric_type: MetricType,
    /// Whether its scaler pushes activity changes (the loop then polls at once).
    pub pushes: bool,
    /// `useCachedMetrics`.
    pub use_cached: bool,
    /// Kafka's value encoding, for kafka triggers.
    pub kafka: Option<KafkaEncoding>,
    /// The series column that holds its values.
    pub column: usize,
}

impl SimTrigger {
    /// The value ebb serves to the HPA and the activity for the series' value `v`.
    pub fn sample(&self, v: f64) -> (f64, bool) {
        match self.kafka {
            None => (v, ebb_scalers::is_active(v, self.activation)),
            Some(k) => {
                let lag = v.max(0.0).round().min(i64::MAX as f64) as i64;
                let (partitions, cap) = match k.partitions {
                    Some(p) => (p, k.cap),
                    None => (
                        u64::MAX,
                        CapPolicy {
                            allow_idle_consumers: true,
                            limit_to_partitions_with_lag: false,
                            ensure_even_distribution: false,
                        },
                    ),
                };
                let summary = LagSummary {
                    total_lag: lag,
                    total_lag_with_persistent: lag,
                    partitions,
                    partitions_with_lag: partitions.min(lag.max(0) as u64),
                };
                (
                    hpa_metric_value(&summary, k.lag_threshold, cap),
                    lag > k.activation,
                )
            }
        }
    }
}

/// Everything a simulation needs of the ScaledObject.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `namespace/name`.
    pub object: String,
    /// The scaling fields.
    pub spec: ScalingSpec,
    /// The triggers, in the spec's order.
    pub triggers: Vec<SimTrigger>,
    /// `advanced.scalingModifiers`.
    pub composite: Option<Composite>,
    /// The pause annotations.
    pub pause: PauseState,
    /// `autoscaling.ebb.dev/force-activation`.
    pub force_activation: bool,
    /// `pollingInterval`, in ms.
    pub polling_ms: i64,
    /// The HPA ebb would apply.
    pub hpa: HpaSpec,
}

/// Picks the ScaledObject (`name`, or the only one) among the documents and builds its scenario;
/// `columns` are the series' column names, `partitions` the Kafka partition count if known.
pub fn scenario(
    docs: &[InputDocument],
    name: Option<&str>,
    columns: &[String],
    partitions: Option<u64>,
    tolerance: f64,
) -> Result<Scenario, SimulateError> {
    let objects: Vec<&InputDocument> = docs
        .iter()
        .filter(|d| d.value.get("kind").and_then(Json::as_str) == Some("ScaledObject"))
        .filter(|d| name.is_none_or(|n| d.value.pointer("/metadata/name").and_then(Json::as_str) == Some(n)))
        .collect();
    let doc = match objects.as_slice() {
        [one] => *one,
        [] => return Err(SimulateError::NoScaledObject),
        _ => return Err(SimulateError::SeveralScaledObjects(objects.len())),
    };
    let bundle = BundleObjects::from_documents(docs);
    let options = CheckOptions {
        quiet_missing: true,
        ..CheckOptions::default()
    };
    let report = check_scaled_object_value(&doc.source, &doc.value, &bundle, options);
    let normalized = match (report.valid, report.normalized.clone()) {
        (true, Some(n)) => n,
        _ => {
            let problems = report
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect();
            return Err(SimulateError::InvalidObject(problems));
        }
    };
    let so: ScaledObject =
        serde_json::from_value(normalized).map_err(|e| SimulateError::InvalidObject(vec![e.to_string()]))?;
    let namespace = so.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let compiled = futures::executor::block_on(compile(&bundle, &namespace, &so));
    let mut triggers = Vec::new();
    let mut used_columns = vec![false; columns.len()];
    for c in &compiled {
        let parsed = c
            .parsed
            .as_ref()
            .map_err(|e| SimulateError::InvalidObject(vec![e.to_string()]))?;
        if c.resource.is_some() {
            return Err(SimulateError::InvalidObject(vec![format!(
                "{} ({}): ebb simulate does not model metrics the HPA reads from the metrics server",
                c.field(),
                c.trigger_type
            )]));
        }
        let written = so.spec.triggers.get(c.index);
        let label = written
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| c.index.to_string());
        let column = columns
            .iter()
            .position(|col| *col == label || *col == c.index.to_string() || *col == parsed.metric_name)
            .ok_or_else(|| SimulateError::MissingColumn {
                trigger: label.clone(),
                metric: parsed.metric_name.clone(),
            })?;
        used_columns[column] = true;
        triggers.push(SimTrigger {
            label,
            metric_name: parsed.metric_name.clone(),
            target: parsed.thresholds.target,
            activation: parsed.thresholds.activation,
            metric_type: c.metric_type,
            pushes: pushes_activity(parsed),
            use_cached: c.use_cached_metrics,
            kafka: kafka_encoding(parsed, partitions),
            column,
        });
    }
    if let Some(i) = used_columns.iter().position(|u| !u) {
        return Err(SimulateError::UnknownColumn(columns[i].clone()));
    }
    let used: Vec<usize> = compiled.iter().map(|c| c.index).collect();
    let composite = Composite::from_spec(&so.spec, &used)
        .transpose()
        .map_err(|e| SimulateError::InvalidObject(vec![e.to_string()]))?;
    let pause = pause_state(&so);
    let metrics: Vec<HpaMetric> = match &composite {
        Some(c) => vec![HpaMetric {
            name: ebb_scalers::metric_name::COMPOSITE_METRIC_NAME.to_string(),
            target: c.target,
            metric_type: c.metric_type,
        }],
        None => triggers
            .iter()
            .map(|t| HpaMetric {
                name: t.metric_name.clone(),
                target: t.target,
                metric_type: t.metric_type,
            })
            .collect(),
    };
    let hpa = hpa_spec(&so, &metrics, pause, tolerance);
    let force_activation = !pause.is_paused()
        && ebb_crds::annotations::flag(
            so.metadata.annotations.as_ref(),
            ebb_crds::annotations::FORCE_ACTIVATION,
        );
    Ok(Scenario {
        object: format!("{namespace}/{}", so.metadata.name.clone().unwrap_or_default()),
        spec: ScalingSpec::from_spec(&so.spec),
        triggers,
        composite,
        pause,
        force_activation,
        polling_ms: i64::from(so.spec.polling_interval.max(1)) * 1000,
        hpa,
    })
}

/// The HPA ebb applies for `so`, read back as the model's spec (targets as the quantities ebb
/// writes, milli precision).
fn hpa_spec(so: &ScaledObject, metrics: &[HpaMetric], pause: PauseState, tolerance: f64) -> HpaSpec {
    let hpa = desired_hpa(so, "simulated", &[], metrics, pause, HpaVersion::V2);
    let spec = &hpa["spec"];
    let behavior = spec
        .get("behavior")
        .and_then(|b| serde_json::from_value(b.clone()).ok());
    let int = |field: &str| spec.get(field).and_then(Json::as_i64).unwrap_or(1) as i32;
    HpaSpec {
        min: int("minReplicas"),
        max: int("maxReplicas"),
        metrics: metrics
            .iter()
            .map(|m| HpaMetricSpec {
                target_milli: ebb_scalers::common::quantity::parse_quantity(&quantity(m.target))
                    .map_or(1, milli),
                metric_type: m.metric_type,
            })
            .collect(),
        behavior: Behavior::from_api(behavior.as_ref()),
        tolerance,
    }
}

/// Whether the trigger's scaler pushes activity changes: Kafka always, RabbitMQ without
/// `useRegex`, NATS JetStream through its monitoring endpoint.
fn pushes_activity(parsed: &ParsedTrigger) -> bool {
    match parsed.decl.trigger_type {
        "kafka" => true,
        "rabbitmq" => !parsed.params.bool("useRegex").unwrap_or(false),
        "nats-jetstream" => parsed.params.is_set("natsServerMonitoringEndpoint"),
        _ => false,
    }
}

fn kafka_encoding(parsed: &ParsedTrigger, partitions: Option<u64>) -> Option<KafkaEncoding> {
    if parsed.decl.trigger_type != "kafka" {
        return None;
    }
    let config = ebb_scalers::kafka::KafkaConfig::try_from(&parsed.params).ok();
    Some(KafkaEncoding {
        lag_threshold: config
            .as_ref()
            .map_or(parsed.thresholds.target as i64, |c| c.trigger.lag_threshold),
        activation: config.as_ref().map_or(parsed.thresholds.activation as i64, |c| {
            c.trigger.activation_lag_threshold
        }),
        cap: config.map(|c| c.trigger.cap_policy).unwrap_or_default(),
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::validate::read_documents;

    const SO: &str = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: worker, namespace: jobs}
spec:
  scaleTargetRef: {name: worker}
  pollingInterval: 2
  maxReplicaCount: 20
  triggers:
  - type: kafka
    name: lag
    metadata: {bootstrapServers: "k:9092", consumerGroup: g, topic: orders, lagThreshold: "10", activationLagThreshold: "3"}
  - type: rabbitmq
    metadata: {host: "amqp://h/", queueName: q, mode: QueueLength, value: "5"}
"#;

    fn build(columns: &[&str], partitions: Option<u64>) -> Result<Scenario, SimulateError> {
        let docs = read_documents("so.yaml", SO).unwrap();
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        scenario(&docs, None, &columns, partitions, 0.1)
    }

    #[test]
    fn triggers_map_to_columns_by_name_index_or_metric() {
        let s = build(&["s1-rabbitmq-q", "lag"], None).unwrap();
        assert_eq!(s.object, "jobs/worker");
        assert_eq!((s.triggers[0].label.as_str(), s.triggers[0].column), ("lag", 1));
        assert_eq!((s.triggers[1].label.as_str(), s.triggers[1].column), ("1", 0));
        assert!(s.triggers[0].pushes && s.triggers[1].pushes);
        assert_eq!(s.polling_ms, 2000);
        assert_eq!((s.hpa.min, s.hpa.max, s.hpa.metrics.len()), (1, 20, 2));
        assert_eq!(s.hpa.metrics[1].target_milli, 5000);
        assert_eq!(s.hpa.behavior, Behavior::Unset);
        let e = build(&["lag"], None).unwrap_err();
        assert!(matches!(e, SimulateError::MissingColumn { .. }), "{e}");
        let e = build(&["lag", "1", "extra"], None).unwrap_err();
        assert!(
            matches!(e, SimulateError::UnknownColumn(ref c) if c == "extra"),
            "{e}"
        );
    }

    #[test]
    fn kafka_serves_the_exact_desired_encoding() {
        let s = build(&["lag", "1"], Some(4)).unwrap();
        let k = &s.triggers[0];
        // 25 lag at threshold 10: 3 replicas, served as (3 − 0.05) × 10.
        assert_eq!(k.sample(25.0), (29.5, true));
        // Capped at 4 partitions: 4 × 10.
        assert_eq!(k.sample(1000.0), (40.0, true));
        // Activation strictly above 3.
        assert!(!k.sample(3.0).1 && k.sample(4.0).1);
        let uncapped = build(&["lag", "1"], None).unwrap();
        assert_eq!(
            uncapped.triggers[0].sample(1000.0).0,
            999.5,
            "100 replicas, (100 − 0.05) × 10"
        );
        assert_eq!(s.triggers[1].sample(7.0), (7.0, true));
    }
}
