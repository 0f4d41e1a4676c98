//! The operator's Prometheus metrics and its health endpoints.
//!
//! [`OperatorMetrics`] owns a [`prometheus_client`] registry (prefix `ebb`) with the operator's
//! metrics and records into it through methods that take plain values. [`serve_health`] serves
//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1 (hyper), for the kubelet's probes and
//! for Prometheus. The per-object series are [`per_object`]'s, the adapter's request metrics
//! [`AdapterMetrics`]'s; `docs/metrics.md` lists every family with its KEDA counterpart.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ebb_build_info` | gauge (1) | `version`, `commit` |
//! | `ebb_polls_total` | counter | `trigger_type`, `result` (`ok`/`error`) |
//! | `ebb_poll_errors_total` | counter | `trigger_type`, `kind` |
//! | `ebb_poll_duration_seconds` | histogram | `trigger_type` |
//! | `ebb_scale_actions_total` | counter | `action` |
//! | `ebb_reconcile_duration_seconds` | histogram | — |
//! | `ebb_reconcile_errors_total` | counter | `error` |
//! | `ebb_is_leader` | gauge | — |
//! | `ebb_scaled_objects` | gauge | — |
//! | `ebb_poll_lateness_seconds` | histogram | — |
//! | `ebb_kube_requests_total` | counter | `verb`, `resource` |
//! | `ebb_metric_requests_total` | counter | `answered_by` (`leader`/`forwarded`/`standby`), `result` |
//! | `ebb_trigger_value`, `ebb_trigger_target`, `ebb_trigger_active`, `ebb_trigger_errors_total`, `ebb_trigger_last_poll_duration_seconds` | gauges, counter (errors) | `namespace`, `scaledObject`, `trigger_index`, `trigger_type`, `metric` |
//! | `ebb_scaled_object_paused`, `_fallback`, `_replicas`, `_desired_replicas`, `_written_replicas` | gauges | `namespace`, `scaledObject` |
//! | `ebb_adapter_requests_total` | counter | `request`, `code` |
//! | `ebb_adapter_request_duration_seconds` | histogram | `request` |
//!
//! Label values such as the error `kind` must come from a small fixed set (an enum's name, not an
//! error message): every distinct value is a new time series. The per-object series are the
//! exception, bounded by the objects themselves and removed with them.

mod adapter;
mod build_info;
mod health;
pub mod per_object;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::infra::api_requests::{RequestRecorder, Verb};
pub use adapter::AdapterMetrics;
pub use build_info::{BUILD_COMMIT, BUILD_VERSION};
pub use health::serve_health;
use per_object::PerObjectMetrics;

/// Prefix of every metric name in the registry of [`OperatorMetrics`].
pub const METRIC_PREFIX: &str = "ebb";

/// `Content-Type` of the `/metrics` response (OpenMetrics text format 1.0.0).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram buckets for durations between 1 ms and 10 s (poll and reconcile durations).
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for poll lateness: a tick that is seconds late is already worth seeing, one
/// that is a minute late means the runtime is starved.
const LATENESS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    trigger_type: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollErrorLabels {
    trigger_type: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerTypeLabels {
    trigger_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeRequestLabels {
    verb: &'static str,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricRequestLabels {
    answered_by: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The operator's metrics and the registry they are registered in.
///
/// Recording is lock-free apart from the families' label maps; share it as `Arc<OperatorMetrics>`.
#[derive(Debug)]
pub struct OperatorMetrics {
    registry: Registry,
    polls: Family<PollLabels, Counter>,
    poll_errors: Family<PollErrorLabels, Counter>,
    poll_duration: Family<TriggerTypeLabels, Histogram, fn() -> Histogram>,
    scale_actions: Family<ActionLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    is_leader: Gauge,
    scaled_objects: Gauge,
    poll_lateness: Histogram,
    kube_requests: Family<KubeRequestLabels, Counter>,
    metric_requests: Family<MetricRequestLabels, Counter>,
    objects: PerObjectMetrics,
    adapter: Arc<AdapterMetrics>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorMetrics {
    /// Creates the metrics in a new registry with the prefix [`METRIC_PREFIX`], per-object
    /// series included.
    ///
    /// Other components can add their own metrics through [`OperatorMetrics::registry_mut`]
    /// before the value is shared.
    pub fn new() -> Self {
        Self::with_per_object(true)
    }

    /// Like [`OperatorMetrics::new`]; `per_object: false` leaves out the per-object series
    /// (`--per-object-metrics=false`, for fleets whose scrape would be too large).
    pub fn with_per_object(per_object: bool) -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);

        let polls = Family::<PollLabels, Counter>::default();
        registry.register(
            "polls",
            "Trigger polls, by trigger type and result (ok or error)",
            polls.clone(),
        );

        let poll_errors = Family::<PollErrorLabels, Counter>::default();
        registry.register(
            "poll_errors",
            "Failed trigger polls, by trigger type and error kind",
            poll_errors.clone(),
        );

        let poll_duration = Family::<TriggerTypeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register_with_unit(
            "poll_duration",
            "Time taken by one trigger poll, by trigger type",
            Unit::Seconds,
            poll_duration.clone(),
        );

        let scale_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "scale_actions",
            "Scale actions taken by the operator (activate, deactivate, fallback, pause, restore)",
            scale_actions.clone(),
        );

        let reconcile_duration = duration_histogram();
        registry.register_with_unit(
            "reconcile_duration",
            "Time taken by one reconciliation of a ScaledObject",
            Unit::Seconds,
            reconcile_duration.clone(),
        );

        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciliations, by error",
            reconcile_errors.clone(),
        );

        let is_leader = Gauge::default();
        registry.register(
            "is_leader",
            "1 while this replica holds the leader lease, else 0",
            is_leader.clone(),
        );

        let scaled_objects = Gauge::default();
        registry.register(
            "scaled_objects",
            "Number of ScaledObjects handled by the operator",
            scaled_objects.clone(),
        );

        let poll_lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register_with_unit(
            "poll_lateness",
            "How late a poll tick fired against its schedule",
            Unit::Seconds,
            poll_lateness.clone(),
        );

        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Kubernetes API requests sent by the operator, by verb and resource",
            kube_requests.clone(),
        );

        let metric_requests = Family::<MetricRequestLabels, Counter>::default();
        registry.register(
            "metric_requests",
            "External metric requests this replica answered: from its cache (leader), forwarded \
             to the leader (standby), or refused (standby without a leader), by result",
            metric_requests.clone(),
        );

        let objects = if per_object {
            PerObjectMetrics::default()
        } else {
            PerObjectMetrics::disabled()
        };
        objects.register(&mut registry);
        let adapter = Arc::new(AdapterMetrics::default());
        adapter.register(&mut registry);
        build_info::register(&mut registry);

        Self {
            registry,
            objects,
            adapter,
            polls,
            poll_errors,
            poll_duration,
            scale_actions,
            reconcile_duration,
            reconcile_errors,
            is_leader,
            scaled_objects,
            poll_lateness,
            kube_requests,
            metric_requests,
        }
    }

    /// The per-object series (one set per ScaledObject and trigger), recorded by the scale loops.
    pub fn objects(&self) -> &PerObjectMetrics {
        &self.objects
    }

    /// The embedded metrics adapter's request metrics, to hand to
    /// [`ebb_metrics_adapter::MetricsAdapter::with_observer`].
    pub fn adapter(&self) -> Arc<AdapterMetrics> {
        Arc::clone(&self.adapter)
    }

    /// The registry, for other components to register their metrics in (names get the `ebb_`
    /// prefix).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Records one poll of a trigger: its duration and, if it failed, a short error label.
    pub fn observe_poll(&self, trigger_type: &str, duration: Duration, error_kind: Option<&str>) {
        let result = if error_kind.is_some() { "error" } else { "ok" };
        self.polls
            .get_or_create(&PollLabels {
                trigger_type: trigger_type.to_owned(),
                result,
            })
            .inc();
        if let Some(kind) = error_kind {
            self.poll_errors
                .get_or_create(&PollErrorLabels {
                    trigger_type: trigger_type.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc();
        }
        self.poll_duration
            .get_or_create(&TriggerTypeLabels {
                trigger_type: trigger_type.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Counts one scale action (`activate`, `deactivate`, `fallback`, `pause`, `restore`, …).
    pub fn scale_action(&self, action: &str) {
        self.scale_actions
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Records one reconciliation: its duration and, if it failed, a short error label.
    pub fn observe_reconcile(&self, duration: Duration, error: Option<&str>) {
        self.reconcile_duration.observe(duration.as_secs_f64());
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    error: error.to_owned(),
                })
                .inc();
        }
    }

    /// Counts one external metric request: who answered (`leader`, `forwarded`, `standby`) and
    /// whether a value went back.
    pub fn observe_metric_request(&self, answered_by: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.metric_requests
            .get_or_create(&MetricRequestLabels { answered_by, result })
            .inc();
    }

    /// Sets the leader gauge to 1 (`true`) or 0.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }

    /// Sets the number of ScaledObjects the operator handles.
    pub fn set_scaled_objects(&self, n: i64) {
        self.scaled_objects.set(n);
    }

    /// Records how late a poll tick fired against its schedule.
    pub fn observe_lateness(&self, lateness: Duration) {
        self.poll_lateness.observe(lateness.as_secs_f64());
    }

    /// Counts one Kubernetes API request.
    pub fn record_kube_request(&self, verb: Verb, resource: &str) {
        self.kube_requests
            .get_or_create(&KubeRequestLabels {
                verb: verb.as_str(),
                resource: resource.to_string(),
            })
            .inc();
    }

    /// A recorder for [`crate::infra::client_limits::client_with_limits`] that counts into these metrics.
    pub fn kube_request_recorder(self: &Arc<Self>) -> RequestRecorder {
        let metrics = Arc::clone(self);
        Arc::new(move |verb, resource: &str| metrics.record_kube_request(verb, resource))
    }

    /// The registry in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would only come from a metric's own
        // encoding, and the metrics above have none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::telemetry::per_object::{
        ObjectLabels, ObjectTick, ReplicaTick, TriggerLabels, TriggerTick,
    };
    use ebb_metrics_adapter::{RequestKind, RequestObserver};
    use std::collections::BTreeSet;

    /// The chart's Grafana dashboard.
    const DASHBOARD: &str = include_str!("../../../../charts/ebb/dashboards/ebb.json");

    /// Every sample name the operator exports, with one observation in every family.
    fn exported_names() -> BTreeSet<String> {
        let m = OperatorMetrics::new();
        m.observe_poll("kafka", Duration::from_millis(3), Some("timeout"));
        m.scale_action("activate");
        m.observe_reconcile(Duration::from_millis(3), Some("kube_api"));
        m.observe_lateness(Duration::from_millis(3));
        m.record_kube_request(Verb::Get, "leases");
        m.observe_metric_request("leader", true);
        let o = ObjectLabels::new("ns", "so");
        m.objects().observe_poll(
            &TriggerLabels::new(&o, 0, "kafka", "s0-kafka"),
            Duration::ZERO,
            true,
        );
        m.objects().record_tick(&ObjectTick {
            object: o.clone(),
            triggers: vec![TriggerTick {
                trigger_type: "kafka",
                metric: "s0-kafka",
                target: 1.0,
                value: Some(1.0),
                active: Some(true),
            }],
            paused: false,
            replicas: Some(ReplicaTick {
                current: 1,
                desired: 1,
                fallback: false,
            }),
        });
        m.objects().record_written(&o, 1);
        m.adapter()
            .observe(RequestKind::Metric, 200, Duration::from_millis(1));
        m.encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    }

    /// Every PromQL expression of a Grafana dashboard: panel targets and template queries.
    fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        let panels = dashboard["panels"].as_array().into_iter().flatten();
        for target in panels.flat_map(|p| p["targets"].as_array().into_iter().flatten()) {
            out.extend(target["expr"].as_str().map(str::to_owned));
        }
        let templates = dashboard["templating"]["list"].as_array().into_iter().flatten();
        for t in templates {
            out.extend(t["query"]["query"].as_str().map(str::to_owned));
        }
        out
    }

    /// The `ebb_*` metric names a PromQL expression reads.
    fn metric_names(expr: &str) -> Vec<&str> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("ebb_") {
            let preceded = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !preceded {
                names.push(&tail[..end]);
            }
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn metric_names_are_found_in_promql() {
        assert_eq!(
            metric_names(r#"sum by (le) (rate(ebb_a_bucket{x="ebb_label_value"}[5m])) / ebb_b"#),
            vec!["ebb_a_bucket", "ebb_label_value", "ebb_b"]
        );
        assert_eq!(metric_names("not_ebb_x + ebb_y"), vec!["ebb_y"]);
    }

    #[test]
    fn every_metric_the_dashboard_reads_is_exported() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
        let exported = exported_names();
        assert!(exported.contains("ebb_trigger_value"), "{exported:?}");
        let queries = dashboard_queries(&dashboard);
        assert!(
            queries.len() > 15,
            "the dashboard's queries were not found: {queries:?}"
        );
        let mut read = BTreeSet::new();
        for q in &queries {
            let names = metric_names(q);
            assert!(!names.is_empty(), "a query that reads no ebb metric: {q}");
            read.extend(names);
        }
        let unknown: Vec<_> = read.iter().filter(|n| !exported.contains(**n)).collect();
        assert!(
            unknown.is_empty(),
            "the dashboard reads metrics ebb does not export: {unknown:?}"
        );
        // Every panel of the per-object row and the operator row is backed by a query.
        for title in [
            "Trigger value vs target",
            "Replicas: wanted, written, actual",
            "Tick lateness",
            "Adapter latency",
        ] {
            assert!(DASHBOARD.contains(title), "{title}");
        }
    }

    #[test]
    fn encode_without_observations() {
        let body = OperatorMetrics::default().encode();
        // Metrics without labels are always there …
        for name in [
            "ebb_reconcile_duration_seconds",
            "ebb_is_leader",
            "ebb_scaled_objects",
            "ebb_poll_lateness_seconds",
        ] {
            assert!(
                body.contains(&format!("# TYPE {name} ")),
                "missing {name} in\n{body}"
            );
        }
        // … families appear with their first series (prometheus-client skips empty families).
        assert!(!body.contains("ebb_polls"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[test]
    fn metric_requests_are_counted_by_who_answered() {
        let m = OperatorMetrics::new();
        m.observe_metric_request("forwarded", true);
        m.observe_metric_request("forwarded", true);
        m.observe_metric_request("standby", false);
        let body = m.encode();
        assert!(
            body.lines()
                .any(|l| l == r#"ebb_metric_requests_total{answered_by="forwarded",result="ok"} 2"#),
            "{body}"
        );
        assert!(
            body.lines()
                .any(|l| l == r#"ebb_metric_requests_total{answered_by="standby",result="error"} 1"#),
            "{body}"
        );
    }

    #[test]
    fn other_components_can_register_metrics() {
        let mut metrics = OperatorMetrics::new();
        let extra: Counter = Counter::default();
        metrics
            .registry_mut()
            .register("scaler_clients", "Open scaler clients", extra.clone());
        extra.inc();
        assert!(
            metrics
                .encode()
                .lines()
                .any(|l| l == "ebb_scaler_clients_total 1")
        );
    }
}
