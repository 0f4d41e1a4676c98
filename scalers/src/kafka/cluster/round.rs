//! One round of a cluster client: metadata and coordinators when needed, then the batched
//! offset requests planned by [`crate::kafka::plan`] (one ListOffsets per partition leader, one
//! OffsetFetch per coordinator), every broker concurrently, their answers filled into a
//! [`Snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetFetchRequest, OffsetFetchResponse,
};

use super::brokers::{COORDINATOR_ERRORS, Engine, METADATA_ERRORS};
use super::snapshot::{GroupOffsets, Snapshot};
use super::{Cluster, Triggers, error_name};
use crate::ScalerError;
use crate::kafka::plan::{
    GroupFetch, RoundPlan, WatchSet, list_offsets_request, offset_fetch_requests, plan_round,
};
use crate::kafka::wire::{ConnectOptions, Connection, WireCounters, WireError};

impl Cluster {
    /// One round over `triggers`: metadata and coordinators when needed, then the batched
    /// offset requests. The snapshot covers `triggers.generation`.
    pub(super) async fn round(&self, engine: &mut Engine, triggers: Triggers) -> Snapshot {
        self.shared.rounds.fetch_add(1, Ordering::Relaxed);
        let generation = triggers.generation;
        let set = WatchSet::of(triggers.specs.iter().map(|(_, spec)| &spec.watch));
        engine
            .discovered
            .retain(|g, _| set.groups.get(g).is_some_and(|w| w.all_topics));
        engine.coordinators.retain(|g, _| set.groups.contains_key(g));
        if set.groups.is_empty() {
            engine.conns.clear();
            return Snapshot::new(generation);
        }
        let mut snap = Snapshot::new(generation);
        for attempt in 0..2 {
            snap = Snapshot::new(generation);
            let needed = set.topics(&engine.discovered);
            if let Err(e) = self.ensure_metadata(engine, &needed).await {
                snap.failure = Some(e);
                snap.wire_errors += 1;
                return snap;
            }
            let mut group_errors: HashMap<String, ScalerError> = HashMap::new();
            let missing: Vec<String> = set
                .groups
                .keys()
                .filter(|g| !engine.coordinators.contains_key(*g))
                .cloned()
                .collect();
            if !missing.is_empty()
                && let Err(e) = self.find_coordinators(engine, missing, &mut group_errors).await
            {
                snap.failure = Some(e);
                snap.wire_errors += 1;
                return snap;
            }
            let plan = plan_round(&set, &engine.discovered, &engine.leaders, &engine.coordinators);
            let retry = self.execute(engine, &plan, &set, group_errors, &mut snap).await;
            for topic in set.topics(&engine.discovered) {
                let entry = match (engine.leaders.get(&topic), engine.topic_errors.get(&topic)) {
                    (Some(meta), _) => Ok(meta.leaders.keys().copied().collect()),
                    (None, Some(e)) => Err(e.clone()),
                    (None, None) => Err(ScalerError::bad_response(
                        &self.endpoint,
                        format!("no metadata for topic {topic:?} yet"),
                    )),
                };
                snap.topics.insert(topic, entry);
            }
            if !retry || attempt == 1 {
                break;
            }
        }
        snap.taken = Instant::now();
        snap
    }

    /// Sends the plan's requests, every broker concurrently, and fills the snapshot. Returns
    /// whether another pass is worth it (stale leaders or coordinators, newly discovered topics).
    async fn execute(
        &self,
        engine: &mut Engine,
        plan: &RoundPlan,
        set: &WatchSet,
        mut group_errors: HashMap<String, ScalerError>,
        snap: &mut Snapshot,
    ) -> bool {
        let mut retry = false;
        let mut tasks = tokio::task::JoinSet::new();
        let mut spawned: HashMap<tokio::task::Id, (i32, String)> = HashMap::new();
        for node in plan.brokers() {
            let work = NodeWork {
                list_offsets: plan.list_offsets.get(&node).cloned(),
                offset_fetch: plan.offset_fetch.get(&node).cloned().unwrap_or_default(),
            };
            let Some(addr) = engine.brokers.get(&node).cloned() else {
                let e = ScalerError::bad_response(
                    &self.endpoint,
                    format!("broker id {node} has no known address"),
                );
                fail_work(&work, &e, snap, &mut group_errors);
                engine.meta_dirty = true;
                continue;
            };
            let conn = engine.conns.remove(&addr);
            let handle = tasks.spawn(run_node(
                addr.clone(),
                conn,
                self.connect.clone(),
                self.counters(),
                work,
            ));
            spawned.insert(handle.id(), (node, addr));
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            let result = match joined {
                Ok((_, result)) => result,
                Err(e) => {
                    // A panic in a node task: its work counts as failed, nothing else is hurt.
                    let (node, addr) = spawned.get(&e.id()).cloned().unwrap_or((-1, String::new()));
                    let work = NodeWork {
                        list_offsets: plan.list_offsets.get(&node).cloned(),
                        offset_fetch: plan.offset_fetch.get(&node).cloned().unwrap_or_default(),
                    };
                    let err = ScalerError::bad_response(&Self::endpoint_of(&addr), "request task failed");
                    fail_work(&work, &err, snap, &mut group_errors);
                    continue;
                }
            };
            let addr = result.addr.clone();
            if let Some(conn) = result.conn {
                engine.conns.insert(addr.clone(), conn);
            }
            if let Some((asked, answer)) = result.list_offsets {
                retry |= self.apply_list_offsets(engine, &addr, &asked, answer, snap);
            }
            for (groups, answer) in result.offset_fetch {
                retry |= self.apply_offset_fetch(engine, &addr, &groups, answer, snap, &mut group_errors);
            }
        }
        for (topic, partition) in &plan.leaderless {
            engine.meta_dirty = true;
            snap.log_end.insert(
                (topic.clone(), *partition),
                Err(ScalerError::bad_response(
                    &self.endpoint,
                    format!("{topic}/{partition} has no leader right now"),
                )),
            );
        }
        for group in &plan.uncoordinated {
            let e = group_errors.remove(group).unwrap_or_else(|| {
                ScalerError::bad_response(
                    &self.endpoint,
                    format!("no coordinator known for group {group:?}"),
                )
            });
            snap.groups.insert(group.clone(), Err(e));
        }
        for (group, e) in group_errors {
            snap.groups.entry(group).or_insert(Err(e));
        }
        // Groups read without a topic: their committed topics decide what the next pass reads.
        for (group, watch) in &set.groups {
            if !watch.all_topics {
                continue;
            }
            if let Some(Ok(offsets)) = snap.groups.get(group) {
                let found = offsets.topics_with_commits();
                if found.iter().any(|t| !engine.meta_topics.contains(t)) {
                    retry = true;
                }
                engine.discovered.insert(group.clone(), found);
            }
        }
        retry
    }

    fn apply_list_offsets(
        &self,
        engine: &mut Engine,
        addr: &str,
        asked: &BTreeMap<String, Vec<i32>>,
        answer: Result<ListOffsetsResponse, WireError>,
        snap: &mut Snapshot,
    ) -> bool {
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                let e = Self::wire_error(addr, e);
                snap.wire_errors += 1;
                engine.meta_dirty = true;
                for (topic, partitions) in asked {
                    for p in partitions {
                        snap.log_end.insert((topic.clone(), *p), Err(e.clone()));
                    }
                }
                return false;
            }
        };
        let mut retry = false;
        for topic in &response.topics {
            let name = topic.name.as_str();
            for p in &topic.partitions {
                let value = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    if METADATA_ERRORS.contains(&p.error_code) {
                        engine.meta_dirty = true;
                        retry = true;
                    }
                    Err(ScalerError::bad_response(
                        &Self::endpoint_of(addr),
                        format!(
                            "ListOffsets {name}/{}: {}",
                            p.partition_index,
                            error_name(p.error_code)
                        ),
                    ))
                };
                snap.log_end.insert((name.to_string(), p.partition_index), value);
            }
        }
        retry
    }

    fn apply_offset_fetch(
        &self,
        engine: &mut Engine,
        addr: &str,
        groups: &[String],
        answer: Result<(OffsetFetchResponse, i16), WireError>,
        snap: &mut Snapshot,
        group_errors: &mut HashMap<String, ScalerError>,
    ) -> bool {
        let endpoint = Self::endpoint_of(addr);
        let (response, version) = match answer {
            Ok(r) => r,
            Err(e) => {
                let e = Self::wire_error(addr, e);
                snap.wire_errors += 1;
                for group in groups {
                    // The coordinator may have moved: ask again next round.
                    engine.coordinators.remove(group);
                    snap.groups.insert(group.clone(), Err(e.clone()));
                }
                return false;
            }
        };
        // (group, group-level error, partitions)
        let mut answers: Vec<(String, i16, GroupOffsets)> = Vec::new();
        if version >= 8 {
            for g in &response.groups {
                let mut offsets = GroupOffsets::default();
                for t in &g.topics {
                    for p in &t.partitions {
                        let value = if p.error_code == 0 {
                            Ok(p.committed_offset)
                        } else {
                            Err(p.error_code)
                        };
                        offsets
                            .committed
                            .insert((t.name.as_str().to_string(), p.partition_index), value);
                    }
                }
                answers.push((g.group_id.as_str().to_string(), g.error_code, offsets));
            }
        } else if let Some(group) = groups.first() {
            let mut offsets = GroupOffsets::default();
            for t in &response.topics {
                for p in &t.partitions {
                    let value = if p.error_code == 0 {
                        Ok(p.committed_offset)
                    } else {
                        Err(p.error_code)
                    };
                    offsets
                        .committed
                        .insert((t.name.as_str().to_string(), p.partition_index), value);
                }
            }
            answers.push((group.clone(), response.error_code, offsets));
        }
        let mut retry = false;
        for group in groups {
            let Some(index) = answers.iter().position(|a| &a.0 == group) else {
                snap.groups.insert(
                    group.clone(),
                    Err(ScalerError::bad_response(
                        &endpoint,
                        format!("OffsetFetch did not answer for group {group:?}"),
                    )),
                );
                continue;
            };
            let (_, code, offsets) = answers.swap_remove(index);
            if code == 0 {
                group_errors.remove(group);
                snap.groups.insert(group.clone(), Ok(offsets));
                continue;
            }
            if COORDINATOR_ERRORS.contains(&code) {
                engine.coordinators.remove(group);
                retry = true;
            }
            snap.groups.insert(
                group.clone(),
                Err(ScalerError::bad_response(
                    &endpoint,
                    format!("OffsetFetch for group {group:?}: {}", error_name(code)),
                )),
            );
        }
        retry
    }
}

fn fail_work(
    work: &NodeWork,
    e: &ScalerError,
    snap: &mut Snapshot,
    group_errors: &mut HashMap<String, ScalerError>,
) {
    if let Some(topics) = &work.list_offsets {
        for (topic, partitions) in topics {
            for p in partitions {
                snap.log_end.insert((topic.clone(), *p), Err(e.clone()));
            }
        }
    }
    for group in work.offset_fetch.keys() {
        group_errors.remove(group);
        snap.groups.insert(group.clone(), Err(e.clone()));
    }
}

/// What one round asks of one broker.
struct NodeWork {
    list_offsets: Option<BTreeMap<String, Vec<i32>>>,
    offset_fetch: BTreeMap<String, GroupFetch>,
}

type ListOffsetsAnswer = (BTreeMap<String, Vec<i32>>, Result<ListOffsetsResponse, WireError>);
type OffsetFetchAnswer = (Vec<String>, Result<(OffsetFetchResponse, i16), WireError>);

struct NodeResult {
    addr: String,
    conn: Option<Connection>,
    list_offsets: Option<ListOffsetsAnswer>,
    offset_fetch: Vec<OffsetFetchAnswer>,
}

/// Sends one broker's share of a round over its connection (opened if needed). After the first
/// connection error the rest of the work fails with it, without reconnecting.
async fn run_node(
    addr: String,
    conn: Option<Connection>,
    options: ConnectOptions,
    counters: Arc<WireCounters>,
    work: NodeWork,
) -> NodeResult {
    let mut conn = match conn {
        Some(c) => Ok(c),
        None => {
            let opened = Connection::connect(&addr, &options, counters).await;
            match &opened {
                Ok(_) => tracing::debug!(broker = %addr, "Kafka connection opened"),
                Err(e) => tracing::debug!(broker = %addr, error = %e, "Kafka connection failed"),
            }
            opened
        }
    };
    let mut result = NodeResult {
        addr,
        conn: None,
        list_offsets: None,
        offset_fetch: Vec::new(),
    };
    if let Some(topics) = work.list_offsets {
        let answer = match &mut conn {
            Err(e) => Err(e.clone()),
            Ok(c) => match c.require_version::<ListOffsetsRequest>(1) {
                Err(e) => Err(e),
                Ok(version) => {
                    let answer = c.request(&list_offsets_request(&topics), version).await;
                    if let Err(e) = &answer {
                        conn = Err(e.clone());
                    }
                    answer
                }
            },
        };
        result.list_offsets = Some((topics, answer));
    }
    if !work.offset_fetch.is_empty() {
        let version = match &conn {
            Err(e) => Err(e.clone()),
            Ok(c) => c.require_version::<OffsetFetchRequest>(1),
        };
        match version {
            Err(e) => result
                .offset_fetch
                .push((work.offset_fetch.keys().cloned().collect(), Err(e))),
            Ok(version) => {
                for (groups, request) in offset_fetch_requests(&work.offset_fetch, version) {
                    let answer = match &mut conn {
                        Err(e) => Err(e.clone()),
                        Ok(c) => {
                            let answer = c.request(&request, version).await;
                            if let Err(e) = &answer {
                                conn = Err(e.clone());
                            }
                            answer
                        }
                    };
                    result.offset_fetch.push((groups, answer.map(|r| (r, version))));
                }
            }
        }
    }
    if let Err(e) = &conn {
        tracing::debug!(broker = %result.addr, error = %e, "Kafka connection dropped after an error");
    }
    result.conn = conn.ok();
    result
}
