//! Per-object series: one set per ScaledObject and per trigger of it, labelled like KEDA's
//! (`namespace`, `scaledObject`, and per trigger `trigger_index`, `trigger_type`, `metric`).
//!
//! The scale loop hands [`PerObjectMetrics`] what a tick knew ([`ObjectTick`]: values, activity,
//! pause, fallback, replicas) and each poll's duration and result; this module turns them into
//! gauges and counters and owns their removal. A series lives exactly as long as what it
//! describes: a trigger's series go at the first tick without that trigger (the tick that follows
//! a config change comes at once), and all of an object's series go when its loop ends (object
//! deleted, invalid, or this replica stops leading; [`ObjectSeriesGuard`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Labels of an object's series: `namespace`, `scaledObject`. Shared (`Arc`), so the families
/// and the bookkeeping hold one copy of each name, not one per family (fleet benchmark: 2.8 KiB
/// per object with a `String` in each, 1.7 KiB shared).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ObjectLabels {
    namespace: Arc<str>,
    scaled_object: Arc<str>,
}

impl ObjectLabels {
    /// The labels of the ScaledObject `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectLabels {
            namespace: Arc::from(namespace),
            scaled_object: Arc::from(name),
        }
    }
}

impl EncodeLabelSet for ObjectLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("namespace", &*self.namespace).encode(encoder.encode_label())?;
        ("scaledObject", &*self.scaled_object).encode(encoder.encode_label())
    }
}

/// Labels of a trigger's series: the object's, then `trigger_index`, `trigger_type`, `metric`
/// (the external metric name the HPA reads).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TriggerLabels {
    object: ObjectLabels,
    trigger_index: usize,
    trigger_type: &'static str,
    metric: Arc<str>,
}

impl TriggerLabels {
    /// The labels of trigger `index` of `object`.
    pub fn new(object: &ObjectLabels, index: usize, trigger_type: &'static str, metric: &str) -> Self {
        TriggerLabels {
            object: object.clone(),
            trigger_index: index,
            trigger_type,
            metric: Arc::from(metric),
        }
    }
}

impl EncodeLabelSet for TriggerLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.object.encode(encoder)?;
        ("trigger_index", self.trigger_index as u64).encode(encoder.encode_label())?;
        ("trigger_type", self.trigger_type).encode(encoder.encode_label())?;
        ("metric", &*self.metric).encode(encoder.encode_label())
    }
}

/// One trigger in one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerTick<'a> {
    /// The trigger type (`kafka`, `rabbitmq`, …).
    pub trigger_type: &'static str,
    /// Its external metric name.
    pub metric: &'a str,
    /// Its target value (what the HPA divides by).
    pub target: f64,
    /// The value put into the poll cache this tick (sampled, or the fallback value); `None`
    /// leaves the last one.
    pub value: Option<f64>,
    /// Whether it was active; a failed poll is `Some(false)`, an unsampled one (paused) `None`.
    pub active: Option<bool>,
}

/// The replica part of a tick, when the target's count could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaTick {
    /// The count read from the target.
    pub current: i32,
    /// The count ebb's decision settles on (the count it writes, or the current one).
    pub desired: i32,
    /// Whether the fallback is engaged.
    pub fallback: bool,
}

/// What one tick of a ScaledObject's loop knew, for its series.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectTick<'a> {
    /// The object.
    pub object: ObjectLabels,
    /// Its triggers, in the config's order (index = `trigger_index`).
    pub triggers: Vec<TriggerTick<'a>>,
    /// Whether it is paused (`paused` or `paused-replicas`).
    pub paused: bool,
    /// Replicas and fallback; `None` when the target's count could not be read.
    pub replicas: Option<ReplicaTick>,
}

#[derive(Debug, Default)]
struct Known {
    generation: u64,
    triggers: Vec<TriggerLabels>,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The per-object families and which series each object has.
#[derive(Debug, Default)]
pub struct PerObjectMetrics {
    /// Off (`--per-object-metrics=false`): nothing is registered or recorded.
    disabled: bool,
    value: Family<TriggerLabels, FloatGauge>,
    target: Family<TriggerLabels, FloatGauge>,
    active: Family<TriggerLabels, Gauge>,
    errors: Family<TriggerLabels, Counter>,
    last_poll: Family<TriggerLabels, FloatGauge>,
    paused: Family<ObjectLabels, Gauge>,
    fallback: Family<ObjectLabels, Gauge>,
    current: Family<ObjectLabels, Gauge>,
    desired: Family<ObjectLabels, Gauge>,
    written: Family<ObjectLabels, Gauge>,
    known: Mutex<HashMap<ObjectLabels, Known>>,
    generations: AtomicU64,
}

impl PerObjectMetrics {
    /// Families that record nothing and are not registered (`--per-object-metrics=false`).
    pub fn disabled() -> Self {
        PerObjectMetrics {
            disabled: true,
            ..PerObjectMetrics::default()
        }
    }

    /// Registers the families (names get the registry's `ebb_` prefix); none when disabled.
    pub fn register(&self, registry: &mut Registry) {
        if self.disabled {
            return;
        }
        registry.register(
            "trigger_value",
            "The value of a trigger's metric that the HPA reads (sampled, or the fallback value)",
            self.value.clone(),
        );
        registry.register(
            "trigger_target",
            "A trigger's target value: the HPA aims at value / target replicas (per pod for AverageValue)",
            self.target.clone(),
        );
        registry.register(
            "trigger_active",
            "1 while a trigger is above its activation threshold, else 0 (0 while it fails)",
            self.active.clone(),
        );
        registry.register("trigger_errors", "Failed polls of a trigger", self.errors.clone());
        registry.register_with_unit(
            "trigger_last_poll_duration",
            "Duration of a trigger's last poll",
            Unit::Seconds,
            self.last_poll.clone(),
        );
        registry.register(
            "scaled_object_paused",
            "1 while a ScaledObject is paused (paused or paused-replicas), else 0",
            self.paused.clone(),
        );
        registry.register(
            "scaled_object_fallback",
            "1 while a ScaledObject's fallback replicas apply, else 0",
            self.fallback.clone(),
        );
        registry.register(
            "scaled_object_replicas",
            "The target's replica count as the last tick read it",
            self.current.clone(),
        );
        registry.register(
            "scaled_object_desired_replicas",
            "The replica count ebb's last decision settled on (what it writes, or the current count)",
            self.desired.clone(),
        );
        registry.register(
            "scaled_object_written_replicas",
            "The replica count ebb last wrote to the target's /scale",
            self.written.clone(),
        );
    }

    /// Claims the series of `object` for a loop that starts; they are removed when the returned
    /// guard drops (unless a newer loop of the same object claimed them since).
    pub fn claim(&self, object: ObjectLabels) -> ObjectSeriesGuard<'_> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.known().entry(object.clone()).or_default().generation = generation;
        ObjectSeriesGuard {
            metrics: self,
            object,
            generation,
        }
    }

    /// Records one poll of a trigger: its duration, and an error if it failed.
    pub fn observe_poll(&self, trigger: &TriggerLabels, duration: Duration, failed: bool) {
        if self.disabled {
            return;
        }
        self.last_poll.get_or_create(trigger).set(duration.as_secs_f64());
        let errors = self.errors.get_or_create(trigger);
        if failed {
            errors.inc();
        }
    }

    /// Records a tick, and removes the series of triggers the object no longer has.
    pub fn record_tick(&self, tick: &ObjectTick<'_>) {
        if self.disabled {
            return;
        }
        let labels: Vec<TriggerLabels> = tick
            .triggers
            .iter()
            .enumerate()
            .map(|(i, t)| TriggerLabels::new(&tick.object, i, t.trigger_type, t.metric))
            .collect();
        for (t, l) in tick.triggers.iter().zip(&labels) {
            if let Some(v) = t.value {
                self.value.get_or_create(l).set(v);
            }
            self.target.get_or_create(l).set(t.target);
            if let Some(a) = t.active {
                self.active.get_or_create(l).set(i64::from(a));
            }
        }
        let o = &tick.object;
        self.paused.get_or_create(o).set(i64::from(tick.paused));
        if let Some(r) = tick.replicas {
            self.fallback.get_or_create(o).set(i64::from(r.fallback));
            self.current.get_or_create(o).set(i64::from(r.current));
            self.desired.get_or_create(o).set(i64::from(r.desired));
        }
        let stale = {
            let mut known = self.known();
            let entry = known.entry(o.clone()).or_default();
            let old = std::mem::replace(&mut entry.triggers, labels);
            old.into_iter()
                .filter(|l| !entry.triggers.contains(l))
                .collect::<Vec<_>>()
        };
        for l in &stale {
            self.remove_trigger(l);
        }
    }

    /// Records a successful `/scale` write.
    pub fn record_written(&self, object: &ObjectLabels, replicas: i32) {
        if self.disabled {
            return;
        }
        self.written.get_or_create(object).set(i64::from(replicas));
    }

    fn remove_trigger(&self, l: &TriggerLabels) {
        self.value.remove(l);
        self.target.remove(l);
        self.active.remove(l);
        self.errors.remove(l);
        self.last_poll.remove(l);
    }

    fn release(&self, object: &ObjectLabels, generation: u64) {
        let known = {
            let mut known = self.known();
            match known.get(object) {
                Some(k) if k.generation == generation => known.remove(object),
                _ => return,
            }
        };
        for l in known.iter().flat_map(|k| &k.triggers) {
            self.remove_trigger(l);
        }
        for family in [
            &self.paused,
            &self.fallback,
            &self.current,
            &self.desired,
            &self.written,
        ] {
            family.remove(object);
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectLabels, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Held by a running scale loop: dropping it (the loop ended or was aborted) removes the
/// object's series.
#[derive(Debug)]
pub struct ObjectSeriesGuard<'a> {
    metrics: &'a PerObjectMetrics,
    object: ObjectLabels,
    generation: u64,
}

impl Drop for ObjectSeriesGuard<'_> {
    fn drop(&mut self) {
        self.metrics.release(&self.object, self.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(m: &PerObjectMetrics) -> String {
        let mut registry = Registry::with_prefix("ebb");
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    }

    fn has(body: &str, line: &str) -> bool {
        body.lines().any(|l| l == line)
    }

    fn tick<'a>(object: &ObjectLabels, triggers: Vec<TriggerTick<'a>>) -> ObjectTick<'a> {
        ObjectTick {
            object: object.clone(),
            triggers,
            paused: false,
            replicas: Some(ReplicaTick {
                current: 2,
                desired: 3,
                fallback: false,
            }),
        }
    }

    fn trig<'a>(trigger_type: &'static str, metric: &'a str, value: f64, active: bool) -> TriggerTick<'a> {
        TriggerTick {
            trigger_type,
            metric,
            target: 10.0,
            value: Some(value),
            active: Some(active),
        }
    }

    const KAFKA: &str = r#"namespace="team-a",scaledObject="orders",trigger_index="0",trigger_type="kafka",metric="s0-kafka-orders""#;
    const RABBIT: &str = r#"namespace="team-a",scaledObject="orders",trigger_index="1",trigger_type="rabbitmq",metric="s1-rabbitmq-jobs""#;

    #[test]
    fn a_tick_makes_labelled_series() {
        let m = PerObjectMetrics::default();
        let o = ObjectLabels::new("team-a", "orders");
        let t0 = TriggerLabels::new(&o, 0, "kafka", "s0-kafka-orders");
        m.observe_poll(&t0, Duration::from_millis(250), false);
        m.observe_poll(&t0, Duration::from_millis(500), true);
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-orders", 42.5, true)]));
        m.record_written(&o, 3);
        let body = encoded(&m);
        for line in [
            format!("ebb_trigger_value{{{KAFKA}}} 42.5"),
            format!("ebb_trigger_active{{{KAFKA}}} 1"),
            format!("ebb_trigger_target{{{KAFKA}}} 10.0"),
            format!("ebb_trigger_errors_total{{{KAFKA}}} 1"),
            format!("ebb_trigger_last_poll_duration_seconds{{{KAFKA}}} 0.5"),
            r#"ebb_scaled_object_paused{namespace="team-a",scaledObject="orders"} 0"#.to_owned(),
            r#"ebb_scaled_object_fallback{namespace="team-a",scaledObject="orders"} 0"#.to_owned(),
            r#"ebb_scaled_object_replicas{namespace="team-a",scaledObject="orders"} 2"#.to_owned(),
            r#"ebb_scaled_object_desired_replicas{namespace="team-a",scaledObject="orders"} 3"#.to_owned(),
            r#"ebb_scaled_object_written_replicas{namespace="team-a",scaledObject="orders"} 3"#.to_owned(),
        ] {
            assert!(has(&body, &line), "missing {line} in\n{body}");
        }
    }

    #[test]
    fn a_successful_poll_shows_zero_errors_and_unknowns_keep_the_last_value() {
        let m = PerObjectMetrics::default();
        let o = ObjectLabels::new("team-a", "orders");
        let t0 = TriggerLabels::new(&o, 0, "kafka", "s0-kafka-orders");
        m.observe_poll(&t0, Duration::from_millis(5), false);
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-orders", 7.0, false)]));
        // Paused: not sampled, replicas unreadable.
        m.record_tick(&ObjectTick {
            object: o.clone(),
            triggers: vec![TriggerTick {
                trigger_type: "kafka",
                metric: "s0-kafka-orders",
                target: 10.0,
                value: None,
                active: None,
            }],
            paused: true,
            replicas: None,
        });
        let body = encoded(&m);
        assert!(
            has(&body, &format!("ebb_trigger_errors_total{{{KAFKA}}} 0")),
            "{body}"
        );
        assert!(has(&body, &format!("ebb_trigger_value{{{KAFKA}}} 7.0")), "{body}");
        assert!(has(&body, &format!("ebb_trigger_active{{{KAFKA}}} 0")), "{body}");
        assert!(
            has(
                &body,
                r#"ebb_scaled_object_paused{namespace="team-a",scaledObject="orders"} 1"#
            ),
            "{body}"
        );
    }

    #[test]
    fn a_removed_trigger_loses_its_series_at_the_next_tick() {
        let m = PerObjectMetrics::default();
        let o = ObjectLabels::new("team-a", "orders");
        let t1 = TriggerLabels::new(&o, 1, "rabbitmq", "s1-rabbitmq-jobs");
        m.observe_poll(&t1, Duration::from_millis(5), true);
        m.record_tick(&tick(
            &o,
            vec![
                trig("kafka", "s0-kafka-orders", 1.0, true),
                trig("rabbitmq", "s1-rabbitmq-jobs", 2.0, true),
            ],
        ));
        assert!(encoded(&m).contains(RABBIT));
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-orders", 1.0, true)]));
        let body = encoded(&m);
        assert!(!body.contains("rabbitmq"), "{body}");
        assert!(has(&body, &format!("ebb_trigger_value{{{KAFKA}}} 1.0")), "{body}");
    }

    #[test]
    fn a_trigger_whose_metric_changed_keeps_one_series() {
        let m = PerObjectMetrics::default();
        let o = ObjectLabels::new("team-a", "orders");
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-old", 1.0, true)]));
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-orders", 1.0, true)]));
        let body = encoded(&m);
        assert!(!body.contains("s0-kafka-old"), "{body}");
        assert!(body.contains(KAFKA), "{body}");
    }

    #[test]
    fn dropping_the_guard_removes_every_series_of_the_object_only() {
        let m = PerObjectMetrics::default();
        let orders = ObjectLabels::new("team-a", "orders");
        let other = ObjectLabels::new("team-b", "billing");
        let guard = m.claim(orders.clone());
        let _other = m.claim(other.clone());
        m.observe_poll(
            &TriggerLabels::new(&orders, 0, "kafka", "s0-kafka-orders"),
            Duration::ZERO,
            true,
        );
        m.record_tick(&tick(&orders, vec![trig("kafka", "s0-kafka-orders", 1.0, true)]));
        m.record_written(&orders, 1);
        m.record_tick(&tick(&other, vec![trig("kafka", "s0-kafka-billing", 1.0, true)]));
        drop(guard);
        let body = encoded(&m);
        assert!(!body.contains(r#"scaledObject="orders""#), "{body}");
        assert!(body.contains(r#"scaledObject="billing""#), "{body}");
    }

    #[test]
    fn disabled_records_and_registers_nothing() {
        let m = PerObjectMetrics::disabled();
        let o = ObjectLabels::new("team-a", "orders");
        let _guard = m.claim(o.clone());
        m.observe_poll(
            &TriggerLabels::new(&o, 0, "kafka", "s0-kafka-orders"),
            Duration::ZERO,
            true,
        );
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-orders", 1.0, true)]));
        m.record_written(&o, 1);
        assert_eq!(encoded(&m), "# EOF\n");
    }

    #[test]
    fn an_older_loops_guard_leaves_a_newer_loops_series() {
        let m = PerObjectMetrics::default();
        let o = ObjectLabels::new("team-a", "orders");
        let old = m.claim(o.clone());
        let new = m.claim(o.clone());
        m.record_tick(&tick(&o, vec![trig("kafka", "s0-kafka-orders", 1.0, true)]));
        drop(old);
        assert!(encoded(&m).contains(KAFKA));
        drop(new);
        assert!(!encoded(&m).contains("orders"));
    }
}
