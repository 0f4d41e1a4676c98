//! The JSON documents the adapter serves: the `ExternalMetricValueList` (not in k8s-openapi,
//! written here after `k8s.io/metrics/pkg/apis/external_metrics/v1beta1`) and the discovery
//! documents (k8s-openapi's types).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, ListMeta, Time,
};
use serde::{Deserialize, Serialize};

/// The API group served: `external.metrics.k8s.io`.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The version served: `v1beta1`.
pub const VERSION: &str = "v1beta1";
/// `external.metrics.k8s.io/v1beta1`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// The reply to a metric request (Go: `external_metrics/v1beta1.ExternalMetricValueList`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValueList {
    /// Always `ExternalMetricValueList`.
    pub kind: String,
    /// Always `external.metrics.k8s.io/v1beta1`.
    pub api_version: String,
    /// List metadata; served empty (`{}`).
    #[serde(default)]
    pub metadata: ListMeta,
    /// The values; the HPA sums them.
    pub items: Vec<ExternalMetricValue>,
}

impl ExternalMetricValueList {
    /// A list with `kind` and `apiVersion` set.
    pub fn new(items: Vec<ExternalMetricValue>) -> Self {
        Self {
            kind: "ExternalMetricValueList".to_owned(),
            api_version: GROUP_VERSION.to_owned(),
            metadata: ListMeta::default(),
            items,
        }
    }
}

/// One metric value (Go: `external_metrics/v1beta1.ExternalMetricValue`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    /// The metric name, lower-cased.
    pub metric_name: String,
    /// Labels of the metric; the adapter echoes the selector's equality labels.
    #[serde(default)]
    pub metric_labels: BTreeMap<String, String>,
    /// When the value was sampled (RFC 3339, seconds, UTC).
    pub timestamp: Time,
    /// The window the value was computed over, in seconds (omitted when unset).
    #[serde(rename = "window", default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// The value, as a Kubernetes quantity (see [`format_quantity`]).
    pub value: Quantity,
}

/// The largest value served: its milli-value still fits an `i64`, which is what the HPA reads.
const MAX_QUANTITY: f64 = (i64::MAX / 1000) as f64;

/// Formats `value` as a Kubernetes quantity with milli precision: integers without a suffix
/// (`"42"`), other values in thousandths (`"1500m"`, `"1m"`). Negative, non-finite and values
/// that round to zero give `"0"`; finite values too large for the HPA's milli-value arithmetic
/// are clamped to 9223372036854775.
pub fn format_quantity(value: f64) -> String {
    if !value.is_finite() || value <= 0.0 {
        return "0".to_owned();
    }
    if value >= MAX_QUANTITY {
        return format!("{}", i64::MAX / 1000);
    }
    // `as` saturates; the bound above keeps the product inside i64.
    let millis = (value * 1000.0).round() as i64;
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

fn group_version() -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: GROUP_VERSION.to_owned(),
        version: VERSION.to_owned(),
    }
}

/// The `APIGroup` document for `external.metrics.k8s.io` (served at `/apis/external.metrics.k8s.io`).
pub fn api_group() -> APIGroup {
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: Some(group_version()),
        server_address_by_client_cidrs: None,
        versions: vec![group_version()],
    }
}

/// The `APIGroupList` served at `/apis`: only `external.metrics.k8s.io`.
pub fn api_group_list() -> APIGroupList {
    APIGroupList {
        groups: vec![api_group()],
    }
}

/// The `APIResourceList` served at `/apis/external.metrics.k8s.io/v1beta1`: one placeholder
/// resource `externalmetrics`, as KEDA (custom-metrics-apiserver) serves it.
pub fn api_resource_list() -> APIResourceList {
    APIResourceList {
        group_version: GROUP_VERSION.to_owned(),
        resources: vec![APIResource {
            name: "externalmetrics".to_owned(),
            singular_name: String::new(),
            namespaced: true,
            kind: "ExternalMetricValueList".to_owned(),
            verbs: vec!["get".to_owned()],
            ..APIResource::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(format_quantity(0.0), "0");
        assert_eq!(format_quantity(-0.0), "0");
        assert_eq!(format_quantity(42.0), "42");
        assert_eq!(format_quantity(1.5), "1500m");
        assert_eq!(format_quantity(0.001), "1m");
        assert_eq!(format_quantity(0.0004), "0");
        assert_eq!(format_quantity(0.0005), "1m");
        assert_eq!(format_quantity(2.9999), "3");
        assert_eq!(format_quantity(-3.0), "0");
        assert_eq!(format_quantity(f64::NAN), "0");
        assert_eq!(format_quantity(f64::NEG_INFINITY), "0");
        assert_eq!(format_quantity(f64::INFINITY), "0");
        assert_eq!(format_quantity(1e300), "9223372036854775");
        assert_eq!(format_quantity(123456789.123), "123456789123m");
    }

    #[test]
    fn list_shape() {
        let ts: jiff::Timestamp = "2026-11-24T09:30:00.750Z".parse().expect("timestamp");
        let list = ExternalMetricValueList::new(vec![ExternalMetricValue {
            metric_name: "s0-aws-sqs".into(),
            metric_labels: BTreeMap::new(),
            timestamp: Time(ts),
            window_seconds: None,
            value: Quantity("42".into()),
        }]);
        let json = serde_json::to_string(&list).expect("json");
        assert_eq!(
            json,
            r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"s0-aws-sqs","metricLabels":{},"timestamp":"2026-11-24T09:30:00Z","value":"42"}]}"#
        );
        let back: ExternalMetricValueList = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.items[0].metric_name, "s0-aws-sqs");
    }
}
