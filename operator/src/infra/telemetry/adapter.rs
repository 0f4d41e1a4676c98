//! The embedded metrics adapter's request metrics: `ebb_adapter_requests_total{request, code}`
//! and `ebb_adapter_request_duration_seconds{request}`, filled through the adapter crate's
//! [`RequestObserver`] seam.

use std::time::Duration;

use ebb_metrics_adapter::{RequestKind, RequestObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Buckets for adapter answers: from the cache in well under a millisecond, through a
/// forwarded or delegated request, to the 10 s request timeout.
const ADAPTER_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(ADAPTER_BUCKETS)
}

/// Request counts by kind and status code, and a latency histogram by kind.
#[derive(Debug)]
pub struct AdapterMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<KindLabels, Histogram, fn() -> Histogram>,
}

impl Default for AdapterMetrics {
    fn default() -> Self {
        AdapterMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram),
        }
    }
}

impl AdapterMetrics {
    /// Registers both families (names get the registry's `ebb_` prefix).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "adapter_requests",
            "Requests the embedded metrics adapter answered, by request kind (metric, discovery, \
             health, other) and HTTP status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "adapter_request_duration",
            "Time the embedded metrics adapter took to answer, by request kind",
            Unit::Seconds,
            self.duration.clone(),
        );
    }
}

impl RequestObserver for AdapterMetrics {
    fn observe(&self, kind: RequestKind, status: u16, elapsed: Duration) {
        let request = kind.as_str();
        self.requests
            .get_or_create(&RequestLabels {
                request,
                code: status,
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { request })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind_and_code() {
        let m = AdapterMetrics::default();
        m.observe(RequestKind::Metric, 200, Duration::from_micros(300));
        m.observe(RequestKind::Metric, 200, Duration::from_millis(2));
        m.observe(RequestKind::Metric, 403, Duration::from_millis(20));
        m.observe(RequestKind::Discovery, 200, Duration::from_millis(1));
        let mut registry = Registry::with_prefix("ebb");
        m.register(&mut registry);
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).expect("encode");
        for line in [
            r#"ebb_adapter_requests_total{request="metric",code="200"} 2"#,
            r#"ebb_adapter_requests_total{request="metric",code="403"} 1"#,
            r#"ebb_adapter_requests_total{request="discovery",code="200"} 1"#,
            r#"ebb_adapter_request_duration_seconds_count{request="metric"} 3"#,
            r#"ebb_adapter_request_duration_seconds_bucket{le="0.0005",request="metric"} 1"#,
            r#"ebb_adapter_request_duration_seconds_bucket{le="0.0025",request="metric"} 2"#,
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line} in\n{body}");
        }
    }
}
