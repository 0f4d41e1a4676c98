//! A cluster client's connections and what it knows of the brokers: their addresses, the
//! partition leaders (from Metadata of the watched topics only, fetched when the set changes,
//! after an error, or once `metadata_max_age` passed) and the group coordinators (from
//! FindCoordinator, only for groups without a known one). Cluster-wide requests go to any broker
//! that answers.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::{Cluster, error_name};
use crate::ScalerError;
use crate::kafka::plan::{TopicLeaders, topic_name};
use crate::kafka::wire::{Connection, WireError};

/// The mutable state of a cluster client, held by one round at a time.
#[derive(Default)]
pub(super) struct Engine {
    pub(super) conns: HashMap<String, Connection>,
    pub(super) brokers: HashMap<i32, String>,
    pub(super) leaders: HashMap<String, TopicLeaders>,
    pub(super) topic_errors: HashMap<String, ScalerError>,
    pub(super) meta_topics: BTreeSet<String>,
    pub(super) meta_at: Option<Instant>,
    pub(super) meta_retry_at: Option<Instant>,
    pub(super) meta_dirty: bool,
    pub(super) coordinators: HashMap<String, i32>,
    pub(super) discovered: HashMap<String, BTreeSet<String>>,
}

/// Kafka error codes after which metadata (leaders) must be fetched again.
pub(super) const METADATA_ERRORS: &[i16] = &[3, 5, 6, 74, 75];
/// Kafka error codes after which a group's coordinator must be found again.
pub(super) const COORDINATOR_ERRORS: &[i16] = &[14, 15, 16];
/// How long a topic that does not exist (or failed) waits before its metadata is asked again.
const TOPIC_ERROR_RETRY: Duration = Duration::from_secs(5);

impl Cluster {
    fn map_addr(&self, addr: String) -> String {
        self.options.address_map.get(&addr).cloned().unwrap_or(addr)
    }

    pub(super) fn endpoint_of(addr: &str) -> String {
        format!("kafka://{addr}")
    }

    pub(super) fn wire_error(addr: &str, e: WireError) -> ScalerError {
        let endpoint = Self::endpoint_of(addr);
        match e {
            WireError::Timeout(after) => ScalerError::timeout(&endpoint, after),
            WireError::Io(m) | WireError::Tls(m) => ScalerError::unreachable(&endpoint, m),
            WireError::Auth(m) => ScalerError::unauthorized(&endpoint, m),
            WireError::Overloaded(m) => ScalerError::overloaded(&endpoint, m),
            e @ (WireError::Protocol(_) | WireError::Unsupported(_)) => {
                ScalerError::bad_response(&endpoint, e.to_string())
            }
        }
    }

    fn metadata_needed(&self, engine: &Engine, needed: &BTreeSet<String>) -> bool {
        if needed.is_empty() {
            return false;
        }
        let now = Instant::now();
        engine.meta_dirty
            || !needed.is_subset(&engine.meta_topics)
            || engine
                .meta_at
                .is_none_or(|at| now.duration_since(at) >= self.options.metadata_max_age)
            || engine.meta_retry_at.is_some_and(|at| now >= at)
    }

    pub(super) async fn ensure_metadata(
        &self,
        engine: &mut Engine,
        needed: &BTreeSet<String>,
    ) -> Result<(), ScalerError> {
        if !self.metadata_needed(engine, needed) {
            return Ok(());
        }
        tracing::debug!(topics = needed.len(), "Kafka metadata refresh");
        let topics: Vec<MetadataRequestTopic> = needed
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
            .collect();
        let (response, _) = self
            .send_any(engine, |conn| {
                let version = conn.require_version::<MetadataRequest>(1)?;
                let request = MetadataRequest::default()
                    .with_topics(Some(topics.clone()))
                    .with_allow_auto_topic_creation(false);
                Ok((request, version))
            })
            .await?;
        self.apply_metadata(engine, needed, response);
        Ok(())
    }

    fn apply_metadata(&self, engine: &mut Engine, needed: &BTreeSet<String>, response: MetadataResponse) {
        // The answer is the cluster's current broker list (coordinators are among them).
        engine.brokers.clear();
        for broker in &response.brokers {
            let addr = self.map_addr(format!("{}:{}", broker.host.as_str(), broker.port));
            engine.brokers.insert(broker.node_id.0, addr);
        }
        engine.leaders.clear();
        engine.topic_errors.clear();
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.as_str().to_string()) else {
                continue;
            };
            if topic.error_code != 0 {
                let hint = if topic.error_code == 3 {
                    " (does the topic exist?)"
                } else {
                    ""
                };
                engine.topic_errors.insert(
                    name.clone(),
                    ScalerError::bad_response(
                        &self.endpoint,
                        format!(
                            "metadata of topic {name:?}: {}{hint}",
                            error_name(topic.error_code)
                        ),
                    ),
                );
                continue;
            }
            let leaders = topic
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            engine.leaders.insert(name, TopicLeaders { leaders });
        }
        for topic in needed {
            if !engine.leaders.contains_key(topic) && !engine.topic_errors.contains_key(topic) {
                engine.topic_errors.insert(
                    topic.clone(),
                    ScalerError::bad_response(
                        &self.endpoint,
                        format!("topic {topic:?} is missing from the metadata answer"),
                    ),
                );
            }
        }
        // Connections to addresses that are neither brokers nor bootstrap servers any more (a
        // broker left the cluster) are closed.
        let known: BTreeSet<String> = engine
            .brokers
            .values()
            .cloned()
            .chain(self.bootstrap.iter().map(|b| self.map_addr(b.clone())))
            .collect();
        engine.conns.retain(|addr, _| known.contains(addr));
        let now = Instant::now();
        engine.meta_topics = needed.clone();
        engine.meta_at = Some(now);
        engine.meta_dirty = false;
        engine.meta_retry_at = (!engine.topic_errors.is_empty()).then(|| now + TOPIC_ERROR_RETRY);
    }

    pub(super) async fn find_coordinators(
        &self,
        engine: &mut Engine,
        mut pending: Vec<String>,
        group_errors: &mut HashMap<String, ScalerError>,
    ) -> Result<(), ScalerError> {
        while !pending.is_empty() {
            let (response, version) = self
                .send_any(engine, |conn| {
                    let version = conn.require_version::<FindCoordinatorRequest>(0)?;
                    let request = if version >= 4 {
                        FindCoordinatorRequest::default().with_coordinator_keys(
                            pending.iter().map(|g| StrBytes::from_string(g.clone())).collect(),
                        )
                    } else {
                        FindCoordinatorRequest::default().with_key(StrBytes::from_string(pending[0].clone()))
                    };
                    Ok((request, version))
                })
                .await?;
            let answered: Vec<String> = if version >= 4 {
                std::mem::take(&mut pending)
            } else {
                vec![pending.remove(0)]
            };
            self.apply_coordinators(engine, &answered, version, response, group_errors);
        }
        Ok(())
    }

    fn apply_coordinators(
        &self,
        engine: &mut Engine,
        asked: &[String],
        version: i16,
        response: FindCoordinatorResponse,
        group_errors: &mut HashMap<String, ScalerError>,
    ) {
        let answers: Vec<(String, i16, i32, String, i32)> = if version >= 4 {
            response
                .coordinators
                .iter()
                .map(|c| {
                    let key = c.key.as_str().to_string();
                    (
                        key,
                        c.error_code,
                        c.node_id.0,
                        c.host.as_str().to_string(),
                        c.port,
                    )
                })
                .collect()
        } else {
            asked
                .first()
                .map(|g| {
                    let host = response.host.as_str().to_string();
                    (
                        g.clone(),
                        response.error_code,
                        response.node_id.0,
                        host,
                        response.port,
                    )
                })
                .into_iter()
                .collect()
        };
        for group in asked {
            match answers.iter().find(|a| &a.0 == group) {
                Some((_, 0, node, host, port)) if *node >= 0 => {
                    engine.coordinators.insert(group.clone(), *node);
                    let addr = self.map_addr(format!("{host}:{port}"));
                    engine.brokers.insert(*node, addr);
                }
                Some((_, code, ..)) => {
                    group_errors.insert(
                        group.clone(),
                        ScalerError::bad_response(
                            &self.endpoint,
                            format!("no coordinator for group {group:?}: {}", error_name(*code)),
                        ),
                    );
                }
                None => {
                    group_errors.insert(
                        group.clone(),
                        ScalerError::bad_response(
                            &self.endpoint,
                            format!("FindCoordinator did not answer for group {group:?}"),
                        ),
                    );
                }
            }
        }
    }

    /// The addresses to try for a cluster-wide request: connected brokers, then the bootstrap
    /// servers, then the known brokers.
    fn candidates(&self, engine: &Engine) -> Vec<String> {
        let mut out: Vec<String> = engine.conns.keys().cloned().collect();
        out.sort();
        let known: BTreeSet<&String> = engine.brokers.values().collect();
        for addr in self
            .bootstrap
            .iter()
            .map(|b| self.map_addr(b.clone()))
            .chain(known.into_iter().cloned())
        {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// Sends a request to any broker that answers (connected ones first). Returns the answer and
    /// the version used. A connection that fails is dropped.
    async fn send_any<R: Request>(
        &self,
        engine: &mut Engine,
        build: impl Fn(&Connection) -> Result<(R, i16), WireError>,
    ) -> Result<(R::Response, i16), ScalerError> {
        let mut last: Option<ScalerError> = None;
        for addr in self.candidates(engine) {
            if !engine.conns.contains_key(&addr) {
                match Connection::connect(&addr, &self.connect, self.counters()).await {
                    Ok(conn) => {
                        tracing::debug!(broker = %addr, "Kafka connection opened");
                        engine.conns.insert(addr.clone(), conn);
                    }
                    Err(e) => {
                        tracing::debug!(broker = %addr, error = %e, "Kafka connection failed");
                        last = Some(Self::wire_error(&addr, e));
                        continue;
                    }
                }
            }
            let Some(conn) = engine.conns.get_mut(&addr) else {
                continue;
            };
            let (request, version) = match build(conn) {
                Ok(built) => built,
                Err(e) => {
                    last = Some(Self::wire_error(&addr, e));
                    continue;
                }
            };
            match conn.request(&request, version).await {
                Ok(response) => return Ok((response, version)),
                Err(e) => {
                    tracing::info!(broker = %addr, error = %e, "Kafka connection lost: dropped");
                    engine.conns.remove(&addr);
                    last = Some(Self::wire_error(&addr, e));
                }
            }
        }
        Err(last.unwrap_or_else(|| ScalerError::unreachable(&self.endpoint, "no broker address to try")))
    }
}
