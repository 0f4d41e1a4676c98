//! The monitoring port's JSON, pure: what `/jsz` and `/varz` answers hold, and the lag and
//! activity one `/jsz` answer gives a consumer.
//!
//! No I/O here: the scaler and the watcher fetch the documents and hand them to [`read_jsz`] and
//! [`jsz_activity`].

use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use crate::is_active;

/// A consumer's backlog as JetStream reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Messages of the stream not yet delivered to the consumer.
    pub num_pending: u64,
    /// Messages delivered but not yet acknowledged.
    pub num_ack_pending: u64,
}

impl ConsumerLag {
    /// KEDA's lag: `num_pending + num_ack_pending` (saturating).
    pub fn total(&self) -> u64 {
        self.num_pending.saturating_add(self.num_ack_pending)
    }
}

/// What one node's `/jsz` says about one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JszConsumer {
    /// The consumer's lag as this node sees it (only the leader's is right in a cluster).
    pub lag: ConsumerLag,
    /// The name of the consumer's leader (`cluster.leader`), when the server is clustered.
    pub leader: Option<String>,
}

/// The parts of one `/jsz` answer the scaler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JszView {
    /// `meta_cluster.cluster_size`; 0 when the server is not clustered.
    pub cluster_size: u64,
    /// The consumer, when this node reports it.
    pub consumer: Option<JszConsumer>,
}

/// Why a monitoring document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringDocError {
    /// The `/jsz` document does not have the expected shape.
    #[error("not a /jsz answer")]
    NotJsz(#[source] serde_json::Error),
    /// The `/varz` document does not have the expected shape.
    #[error("not a /varz answer")]
    NotVarz(#[source] serde_json::Error),
    /// The consumer is there, but without its counts.
    #[error("consumer {consumer:?} of stream {stream:?} has no num_pending or num_ack_pending")]
    MissingCounts {
        /// The stream asked for.
        stream: String,
        /// The consumer asked for.
        consumer: String,
    },
}

/// Reads a `/jsz?consumers=true&config=true` document: the cluster size and the consumer
/// `consumer` of stream `stream` in the account whose name or id is one of `accounts`. An error
/// says what was malformed; a consumer that is not there is `consumer: None`, not an error.
pub fn read_jsz(
    doc: &Json,
    accounts: &[&str],
    stream: &str,
    consumer: &str,
) -> Result<JszView, MonitoringDocError> {
    let jsz = Jsz::deserialize(doc).map_err(MonitoringDocError::NotJsz)?;
    let cluster_size = jsz.meta_cluster.and_then(|m| m.cluster_size).unwrap_or(0);
    let found = jsz
        .account_details
        .iter()
        .filter(|a| accounts.iter().any(|k| *k == a.name || *k == a.id))
        .flat_map(|a| &a.stream_detail)
        .filter(|s| s.name == stream || s.config.as_ref().is_some_and(|c| c.name == stream))
        .flat_map(|s| &s.consumer_detail)
        .find(|c| c.name == consumer);
    let consumer = match found {
        None => None,
        Some(c) => {
            let (Some(num_pending), Some(num_ack_pending)) = (c.num_pending, c.num_ack_pending) else {
                return Err(MonitoringDocError::MissingCounts {
                    stream: stream.to_string(),
                    consumer: consumer.to_string(),
                });
            };
            Some(JszConsumer {
                lag: ConsumerLag {
                    num_pending,
                    num_ack_pending,
                },
                leader: c
                    .cluster
                    .as_ref()
                    .and_then(|cl| cl.leader.clone())
                    .filter(|l| !l.is_empty()),
            })
        }
    };
    Ok(JszView {
        cluster_size,
        consumer,
    })
}

/// The activity a `/jsz` document gives one consumer, exactly as the scaler's
/// [`sample`](crate::Scaler::sample) computes it (`num_pending + num_ack_pending > activation`),
/// or `None` when the document cannot tell: the consumer is not there, the document is
/// malformed, or (with `leader`) the node is not the consumer's leader.
pub fn jsz_activity(
    doc: &Json,
    accounts: &[&str],
    stream: &str,
    consumer: &str,
    activation: f64,
    leader: Option<&str>,
) -> Option<bool> {
    let view = read_jsz(doc, accounts, stream, consumer).ok()?;
    let c = view.consumer?;
    if leader.is_some() && c.leader.as_deref() != leader {
        return None;
    }
    Some(is_active(c.lag.total() as f64, activation))
}

/// Reads the parts of a `/varz` document used to find the cluster's nodes.
pub(super) fn read_varz(doc: &Json) -> Result<Varz, MonitoringDocError> {
    Varz::deserialize(doc).map_err(MonitoringDocError::NotVarz)
}

/// `null` (as Go encodes an empty slice or map) reads as the default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
struct Jsz {
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
    #[serde(default, deserialize_with = "nullable")]
    account_details: Vec<AccountDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct MetaCluster {
    #[serde(default)]
    cluster_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct AccountDetail {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamDetail {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    config: Option<NamedConfig>,
    #[serde(default, deserialize_with = "nullable")]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct NamedConfig {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct ConsumerDetail {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    num_pending: Option<u64>,
    #[serde(default)]
    num_ack_pending: Option<u64>,
    #[serde(default)]
    cluster: Option<ClusterInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterInfo {
    #[serde(default)]
    leader: Option<String>,
}

/// The parts of `/varz` used to find the cluster's nodes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Varz {
    /// The answering node's name.
    #[serde(default, deserialize_with = "nullable")]
    pub(super) server_name: String,
    /// The client URLs the cluster advertises (empty with `no_advertise`).
    #[serde(default, deserialize_with = "nullable")]
    pub(super) connect_urls: Vec<String>,
    /// The cluster (route) section.
    #[serde(default)]
    pub(super) cluster: Option<VarzCluster>,
}

/// `/varz`'s `cluster` section.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VarzCluster {
    /// The routes to the other nodes.
    #[serde(default, deserialize_with = "nullable")]
    pub(super) urls: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_jetstream::testing::jsz_doc;
    use serde_json::json;

    #[test]
    fn jsz_lag_is_pending_plus_ack_pending() {
        let doc = jsz_doc(None, None, 15, 2);
        let view = read_jsz(&doc, &["$G"], "ORDERS", "worker").unwrap();
        assert_eq!(view.cluster_size, 0);
        let consumer = view.consumer.unwrap();
        assert_eq!(
            consumer.lag,
            ConsumerLag {
                num_pending: 15,
                num_ack_pending: 2
            }
        );
        assert_eq!(consumer.lag.total(), 17);
        assert_eq!(consumer.leader, None);

        let view = read_jsz(
            &jsz_doc(Some(3), Some("nats-1"), 4, 0),
            &["$G"],
            "ORDERS",
            "worker",
        )
        .unwrap();
        assert_eq!(view.cluster_size, 3);
        assert_eq!(view.consumer.unwrap().leader.as_deref(), Some("nats-1"));

        let saturated = ConsumerLag {
            num_pending: u64::MAX,
            num_ack_pending: 1,
        };
        assert_eq!(saturated.total(), u64::MAX);
    }

    #[test]
    fn watcher_activity_matches_sample_semantics() {
        // Lag 17: active above 16, not at 17 (strictly greater, as sample()).
        let doc = jsz_doc(None, None, 15, 2);
        assert_eq!(
            jsz_activity(&doc, &["$G"], "ORDERS", "worker", 16.0, None),
            Some(true)
        );
        assert_eq!(
            jsz_activity(&doc, &["$G"], "ORDERS", "worker", 17.0, None),
            Some(false)
        );
        let empty = jsz_doc(None, None, 0, 0);
        assert_eq!(
            jsz_activity(&empty, &["$G"], "ORDERS", "worker", 0.0, None),
            Some(false)
        );
        // Unknown: no consumer, malformed, or not the expected leader's view. Never "inactive".
        assert_eq!(jsz_activity(&doc, &["$G"], "ORDERS", "other", 0.0, None), None);
        assert_eq!(
            jsz_activity(&json!([1]), &["$G"], "ORDERS", "worker", 0.0, None),
            None
        );
        let clustered = jsz_doc(Some(3), Some("nats-1"), 15, 2);
        assert_eq!(
            jsz_activity(&clustered, &["$G"], "ORDERS", "worker", 0.0, Some("nats-1")),
            Some(true)
        );
        assert_eq!(
            jsz_activity(&clustered, &["$G"], "ORDERS", "worker", 0.0, Some("nats-2")),
            None
        );
    }

    #[test]
    fn jsz_lookup_matches_account_stream_and_consumer() {
        let doc = jsz_doc(None, None, 15, 2);
        // The account is matched by name or id; a stream by its name or its config's name.
        assert!(
            read_jsz(&doc, &["nope", "$G"], "ORDERS", "worker")
                .unwrap()
                .consumer
                .is_some()
        );
        assert!(
            read_jsz(&doc, &["other"], "ORDERS", "worker")
                .unwrap()
                .consumer
                .is_none()
        );
        assert!(
            read_jsz(&doc, &["$G"], "ORDERS", "other")
                .unwrap()
                .consumer
                .is_none()
        );
        assert!(
            read_jsz(&doc, &["$G"], "MISSING", "worker")
                .unwrap()
                .consumer
                .is_none()
        );
        assert_eq!(
            read_jsz(&doc, &["$G"], "EVENTS", "worker")
                .unwrap()
                .consumer
                .unwrap()
                .lag
                .total(),
            1998
        );
        let by_config = json!({"account_details": [{"name": "A", "stream_detail": [
            {"config": {"name": "S"}, "consumer_detail": [{"name": "c", "num_pending": 1, "num_ack_pending": 1}]}
        ]}]});
        assert_eq!(
            read_jsz(&by_config, &["A"], "S", "c")
                .unwrap()
                .consumer
                .unwrap()
                .lag
                .total(),
            2
        );
        // Empty and null parts read as empty, not as errors.
        for empty in [
            json!({}),
            json!({"account_details": null}),
            json!({"meta_cluster": null}),
        ] {
            let view = read_jsz(&empty, &["$G"], "S", "c").unwrap();
            assert_eq!((view.cluster_size, view.consumer), (0, None));
        }
    }

    #[test]
    fn malformed_jsz_is_an_error() {
        let missing = json!({"account_details": [{"name": "A", "stream_detail": [
            {"name": "S", "consumer_detail": [{"name": "c", "num_ack_pending": 1}]}
        ]}]});
        let e = read_jsz(&missing, &["A"], "S", "c").unwrap_err().to_string();
        assert!(e.contains("no num_pending"), "{e}");
        for bad in [
            json!([1, 2]),
            json!({"account_details": {"x": 1}}),
            json!({"account_details": [{"name": "A", "stream_detail": [
                {"name": "S", "consumer_detail": [{"name": "c", "num_pending": -1, "num_ack_pending": 0}]}
            ]}]}),
            json!({"account_details": [{"name": "A", "stream_detail": [
                {"name": "S", "consumer_detail": [{"name": "c", "num_pending": "7", "num_ack_pending": 0}]}
            ]}]}),
        ] {
            let e = read_jsz(&bad, &["A"], "S", "c").unwrap_err().to_string();
            assert!(e.starts_with("not a /jsz answer"), "{e}");
        }
    }
}
