//! What one round learned (log-end and committed offsets, partition lists, errors), and each
//! trigger's view of it: the partitions it reads with their offsets, and its activity.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::error_name;
use crate::ScalerError;
use crate::kafka::config::TriggerSpec;
use crate::kafka::lag::{LagPolicy, LagSummary, is_active, partition_lag};

/// What one round learned. Every trigger of the cluster reads its lag from the latest one.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// When the round ended.
    pub taken: Instant,
    /// The watcher generation the round covered (triggers registered up to it are in).
    pub generation: u64,
    /// Nothing could be learned (e.g. no broker reachable for metadata).
    pub failure: Option<ScalerError>,
    /// Partition ids per watched topic.
    pub topics: HashMap<String, Result<Vec<i32>, ScalerError>>,
    /// Log-end offsets; a partition absent here was absent from the ListOffsets answer.
    pub log_end: HashMap<(String, i32), Result<i64, ScalerError>>,
    /// Committed offsets per group.
    pub groups: HashMap<String, Result<GroupOffsets, ScalerError>>,
    /// Whether a broker could not be reached or answered garbage (for the watcher's backoff).
    pub wire_errors: usize,
}

impl Snapshot {
    pub(super) fn new(generation: u64) -> Self {
        Snapshot {
            taken: Instant::now(),
            generation,
            failure: None,
            topics: HashMap::new(),
            log_end: HashMap::new(),
            groups: HashMap::new(),
            wire_errors: 0,
        }
    }
}

/// A group's committed offsets: `Ok(offset)` (`-1`: none) or a partition-level error code.
#[derive(Debug, Default)]
pub(crate) struct GroupOffsets {
    pub committed: HashMap<(String, i32), Result<i64, i16>>,
}

impl GroupOffsets {
    /// Topics with at least one committed offset (what a trigger without `topic` reads).
    pub fn topics_with_commits(&self) -> BTreeSet<String> {
        self.committed
            .iter()
            .filter(|(_, c)| matches!(c, Ok(o) if *o >= 0))
            .map(|((topic, _), _)| topic.clone())
            .collect()
    }
}

/// One partition as a trigger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
}

/// The partitions a trigger reads, with their offsets, from a snapshot.
pub(crate) fn offsets_for(
    spec: &TriggerSpec,
    snap: &Snapshot,
    endpoint: &str,
) -> Result<Vec<PartitionOffsets>, ScalerError> {
    if let Some(failure) = &snap.failure {
        return Err(failure.clone());
    }
    let not_yet = || ScalerError::bad_response(endpoint, "no data for this trigger yet");
    let group = match snap.groups.get(&spec.watch.group) {
        None => return Err(not_yet()),
        Some(Err(e)) => return Err(e.clone()),
        Some(Ok(g)) => g,
    };
    let topics: Vec<String> = match &spec.watch.topic {
        Some(topic) => vec![topic.clone()],
        None => group.topics_with_commits().into_iter().collect(),
    };
    let mut out = Vec::new();
    for topic in topics {
        let partitions = match snap.topics.get(&topic) {
            None => return Err(not_yet()),
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(p)) => p,
        };
        for &partition in partitions {
            if let Some(only) = &spec.watch.partitions
                && only.binary_search(&partition).is_err()
            {
                continue;
            }
            let key = (topic.clone(), partition);
            let log_end = match snap.log_end.get(&key) {
                None => None,
                Some(Err(e)) => return Err(e.clone()),
                Some(Ok(v)) => Some(*v),
            };
            let committed = match group.committed.get(&key) {
                None => None,
                Some(Ok(v)) => Some(*v),
                Some(Err(code)) => {
                    return Err(ScalerError::bad_response(
                        endpoint,
                        format!(
                            "OffsetFetch for group {:?}, {topic}/{partition}: {}",
                            spec.watch.group,
                            error_name(*code)
                        ),
                    ));
                }
            };
            out.push(PartitionOffsets {
                topic: topic.clone(),
                partition,
                committed,
                log_end,
            });
        }
    }
    Ok(out)
}

/// The trigger's lag with persistent lag included and no memory of previous polls: what
/// activation compares.
pub(crate) fn activity_of(spec: &TriggerSpec, snap: &Snapshot, endpoint: &str) -> Option<bool> {
    let offsets = offsets_for(spec, snap, endpoint).ok()?;
    let policy = LagPolicy {
        exclude_persistent_lag: false,
        ..spec.lag_policy
    };
    let summary = LagSummary::of(
        offsets
            .iter()
            .map(|o| partition_lag(o.committed, o.log_end, None, &policy)),
    );
    Some(is_active(&summary, spec.activation_lag_threshold))
}
