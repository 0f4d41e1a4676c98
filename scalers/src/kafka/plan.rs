//! Which requests one round sends, free of I/O: the triggers' watches merged per group, the
//! partitions grouped by leader (one ListOffsets per leader broker) and the groups grouped by
//! coordinator (one OffsetFetch per coordinator from v8, else one per group).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::messages::{
    BrokerId, GroupId, ListOffsetsRequest, OffsetFetchRequest, TopicName,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics},
};
use kafka_protocol::protocol::StrBytes;

/// What one trigger reads: a consumer group, and a topic (or every topic the group committed
/// offsets for), optionally limited to some partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Watch {
    /// `consumerGroup`.
    pub group: String,
    /// `topic`; `None` means every topic the group has committed offsets for.
    pub topic: Option<String>,
    /// `partitionLimitation`, sorted; `None` means every partition.
    pub partitions: Option<Vec<i32>>,
}

/// Which partitions of a topic are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSel {
    /// Every partition.
    All,
    /// Only these.
    Only(BTreeSet<i32>),
}

impl PartitionSel {
    fn merge(&mut self, other: &Option<Vec<i32>>) {
        match (self, other) {
            (PartitionSel::All, _) => {}
            (this @ PartitionSel::Only(_), None) => *this = PartitionSel::All,
            (PartitionSel::Only(set), Some(ids)) => set.extend(ids.iter().copied()),
        }
    }

    fn from(ids: &Option<Vec<i32>>) -> Self {
        match ids {
            None => PartitionSel::All,
            Some(ids) => PartitionSel::Only(ids.iter().copied().collect()),
        }
    }

    /// The selected partitions among `existing`.
    pub fn pick<'a>(
        &'a self,
        existing: impl IntoIterator<Item = &'a i32> + 'a,
    ) -> impl Iterator<Item = i32> + 'a {
        existing.into_iter().copied().filter(move |p| match self {
            PartitionSel::All => true,
            PartitionSel::Only(set) => set.contains(p),
        })
    }
}

/// What is read of one group, merged over its triggers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupWatch {
    /// Some trigger wants every topic the group committed offsets for.
    pub all_topics: bool,
    /// Named topics and their partitions.
    pub topics: BTreeMap<String, PartitionSel>,
}

/// Every trigger's watch on one cluster, merged per group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchSet {
    /// By group.
    pub groups: BTreeMap<String, GroupWatch>,
}

impl WatchSet {
    /// Merges the watches.
    pub fn of<'a>(watches: impl IntoIterator<Item = &'a Watch>) -> Self {
        let mut set = WatchSet::default();
        for w in watches {
            let group = set.groups.entry(w.group.clone()).or_default();
            match &w.topic {
                None => group.all_topics = true,
                Some(topic) => match group.topics.get_mut(topic) {
                    Some(sel) => sel.merge(&w.partitions),
                    None => {
                        group
                            .topics
                            .insert(topic.clone(), PartitionSel::from(&w.partitions));
                    }
                },
            }
        }
        set
    }

    /// The topics whose metadata is needed: the named ones, and those discovered from the
    /// committed offsets of groups watched without a topic.
    pub fn topics(&self, discovered: &HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (group, watch) in &self.groups {
            out.extend(watch.topics.keys().cloned());
            if watch.all_topics
                && let Some(found) = discovered.get(group)
            {
                out.extend(found.iter().cloned());
            }
        }
        out
    }

    /// The partitions of `topic` watched by anyone (named or discovered).
    fn selection(&self, topic: &str, discovered: &HashMap<String, BTreeSet<String>>) -> Option<PartitionSel> {
        let mut sel: Option<PartitionSel> = None;
        for (group, watch) in &self.groups {
            let by_discovery = watch.all_topics && discovered.get(group).is_some_and(|t| t.contains(topic));
            if by_discovery {
                return Some(PartitionSel::All);
            }
            if let Some(s) = watch.topics.get(topic) {
                match (&mut sel, s) {
                    (None, s) => sel = Some(s.clone()),
                    (Some(PartitionSel::All), _) => {}
                    (Some(this), PartitionSel::All) => *this = PartitionSel::All,
                    (Some(PartitionSel::Only(a)), PartitionSel::Only(b)) => a.extend(b.iter().copied()),
                }
            }
        }
        sel
    }
}

/// A topic's partitions and their leaders (`-1`: none right now).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicLeaders {
    /// Partition id → leader broker id.
    pub leaders: BTreeMap<i32, i32>,
}

/// The requests of one round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoundPlan {
    /// ListOffsets per leader broker: topic → partitions.
    pub list_offsets: BTreeMap<i32, BTreeMap<String, Vec<i32>>>,
    /// Watched partitions without a leader now.
    pub leaderless: Vec<(String, i32)>,
    /// OffsetFetch per coordinator: group → what to fetch (`None`: every topic the group
    /// committed offsets for; else topic → partitions).
    pub offset_fetch: BTreeMap<i32, BTreeMap<String, GroupFetch>>,
    /// Watched groups whose coordinator is unknown.
    pub uncoordinated: Vec<String>,
}

/// What one OffsetFetch asks about one group: `None` is every topic.
pub type GroupFetch = Option<BTreeMap<String, Vec<i32>>>;

impl RoundPlan {
    /// The brokers this round talks to (leaders and coordinators).
    pub fn brokers(&self) -> BTreeSet<i32> {
        self.list_offsets
            .keys()
            .chain(self.offset_fetch.keys())
            .copied()
            .collect()
    }

    /// How many requests this plan sends, given whether each coordinator batches groups (v8+).
    pub fn request_count(&self, batches: impl Fn(i32) -> bool) -> usize {
        let fetches: usize = self
            .offset_fetch
            .iter()
            .map(|(node, groups)| if batches(*node) { 1 } else { groups.len() })
            .sum();
        self.list_offsets.len() + fetches
    }
}

/// Plans a round: every watched partition with a leader goes to that leader's ListOffsets; every
/// watched group goes to its coordinator's OffsetFetch. Topics without metadata are skipped (the
/// triggers naming them report the metadata error).
pub fn plan_round(
    watch: &WatchSet,
    discovered: &HashMap<String, BTreeSet<String>>,
    topics: &HashMap<String, TopicLeaders>,
    coordinators: &HashMap<String, i32>,
) -> RoundPlan {
    let mut plan = RoundPlan::default();
    for topic in watch.topics(discovered) {
        let (Some(meta), Some(sel)) = (topics.get(&topic), watch.selection(&topic, discovered)) else {
            continue;
        };
        for partition in sel.pick(meta.leaders.keys()) {
            match meta.leaders.get(&partition).copied() {
                Some(leader) if leader >= 0 => plan
                    .list_offsets
                    .entry(leader)
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .push(partition),
                _ => plan.leaderless.push((topic.clone(), partition)),
            }
        }
    }
    for (group, gw) in &watch.groups {
        let Some(node) = coordinators.get(group).copied() else {
            plan.uncoordinated.push(group.clone());
            continue;
        };
        let fetch = if gw.all_topics {
            None
        } else {
            let mut named = BTreeMap::new();
            for (topic, sel) in &gw.topics {
                if let Some(meta) = topics.get(topic) {
                    named.insert(topic.clone(), sel.pick(meta.leaders.keys()).collect());
                }
            }
            Some(named)
        };
        plan.offset_fetch
            .entry(node)
            .or_default()
            .insert(group.clone(), fetch);
    }
    plan
}

/// The ListOffsets request (latest offsets, read-uncommitted: the high watermark) for one leader.
pub fn list_offsets_request(topics: &BTreeMap<String, Vec<i32>>) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(*p)
                                        .with_current_leader_epoch(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// The OffsetFetch requests for the groups of one coordinator: one request at `version` ≥ 8 (all
/// groups together), else one per group.
pub fn offset_fetch_requests(
    groups: &BTreeMap<String, GroupFetch>,
    version: i16,
) -> Vec<(Vec<String>, OffsetFetchRequest)> {
    if version >= 8 {
        let request = OffsetFetchRequest::default().with_groups(
            groups
                .iter()
                .map(|(group, fetch)| {
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group_id(group))
                        .with_topics(fetch.as_ref().map(|topics| {
                            topics
                                .iter()
                                .map(|(name, partitions)| {
                                    OffsetFetchRequestTopics::default()
                                        .with_name(topic_name(name))
                                        .with_partition_indexes(partitions.clone())
                                })
                                .collect()
                        }))
                })
                .collect(),
        );
        return vec![(groups.keys().cloned().collect(), request)];
    }
    groups
        .iter()
        .map(|(group, fetch)| {
            let request = OffsetFetchRequest::default()
                .with_group_id(group_id(group))
                .with_topics(fetch.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|(name, partitions)| {
                            OffsetFetchRequestTopic::default()
                                .with_name(topic_name(name))
                                .with_partition_indexes(partitions.clone())
                        })
                        .collect()
                }));
            (vec![group.clone()], request)
        })
        .collect()
}

/// A topic name for a request.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A group id for a request.
pub fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn watch(group: &str, topic: Option<&str>, partitions: Option<Vec<i32>>) -> Watch {
        Watch {
            group: group.into(),
            topic: topic.map(Into::into),
            partitions,
        }
    }

    /// `topics` topics of `partitions` partitions, leaders spread round-robin over `brokers`.
    fn cluster(topics: usize, partitions: i32, brokers: i32) -> HashMap<String, TopicLeaders> {
        (0..topics)
            .map(|t| {
                let leaders = (0..partitions).map(|p| (p, (p + t as i32) % brokers)).collect();
                (format!("t{t}"), TopicLeaders { leaders })
            })
            .collect()
    }

    #[test]
    fn watches_merge_per_group() {
        let set = WatchSet::of(&[
            watch("g", Some("a"), Some(vec![1, 2])),
            watch("g", Some("a"), Some(vec![3])),
            watch("g", Some("b"), None),
            watch("h", None, None),
            watch("h", Some("a"), Some(vec![0])),
        ]);
        let g = &set.groups["g"];
        assert!(!g.all_topics);
        assert_eq!(g.topics["a"], PartitionSel::Only([1, 2, 3].into()));
        assert_eq!(g.topics["b"], PartitionSel::All);
        assert!(set.groups["h"].all_topics);
        let discovered = HashMap::from([("h".to_string(), BTreeSet::from(["c".to_string()]))]);
        assert_eq!(
            set.topics(&discovered),
            BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
        );
        assert_eq!(
            set.selection("a", &discovered),
            Some(PartitionSel::Only([0, 1, 2, 3].into()))
        );
        assert_eq!(set.selection("c", &discovered), Some(PartitionSel::All));
        assert_eq!(set.selection("zzz", &discovered), None);
    }

    #[test]
    fn leaderless_and_unknown_are_set_aside() {
        let set = WatchSet::of(&[watch("g", Some("t0"), None), watch("x", Some("t0"), None)]);
        let mut topics = cluster(1, 3, 2);
        topics.get_mut("t0").unwrap().leaders.insert(2, -1);
        let coordinators = HashMap::from([("g".to_string(), 0)]);
        let plan = plan_round(&set, &HashMap::new(), &topics, &coordinators);
        assert_eq!(plan.leaderless, [("t0".to_string(), 2)]);
        assert_eq!(plan.uncoordinated, ["x"]);
        assert_eq!(plan.list_offsets[&0]["t0"], [0]);
        assert_eq!(plan.list_offsets[&1]["t0"], [1]);
        assert_eq!(
            plan.offset_fetch[&0]["g"],
            Some(BTreeMap::from([("t0".to_string(), vec![0, 1, 2])]))
        );
    }

    #[test]
    fn a_thousand_triggers_cost_leaders_plus_coordinators() {
        // The benchmark shape: 1,000 triggers over 10 topics × 10 partitions, 3 brokers,
        // 50 groups spread over 3 coordinators.
        let topics = cluster(10, 10, 3);
        let watches: Vec<Watch> = (0..1000)
            .map(|i| watch(&format!("g{}", i % 50), Some(&format!("t{}", i % 10)), None))
            .collect();
        let set = WatchSet::of(&watches);
        let coordinators: HashMap<String, i32> = (0..50).map(|g| (format!("g{g}"), g % 3)).collect();
        let plan = plan_round(&set, &HashMap::new(), &topics, &coordinators);
        assert_eq!(plan.list_offsets.len(), 3);
        assert_eq!(plan.offset_fetch.len(), 3);
        assert_eq!(plan.request_count(|_| true), 6);
        // Brokers without OffsetFetch v8: one per group.
        assert_eq!(plan.request_count(|_| false), 3 + 50);
        // Each of the 100 partitions is asked for exactly once.
        let asked: usize = plan
            .list_offsets
            .values()
            .flat_map(|t| t.values())
            .map(Vec::len)
            .sum();
        assert_eq!(asked, 100);
        // The built requests match the count.
        let built: usize = plan
            .offset_fetch
            .values()
            .map(|groups| offset_fetch_requests(groups, 9).len())
            .sum();
        assert_eq!(built, 3);
        let built_v7: usize = plan
            .offset_fetch
            .values()
            .map(|groups| offset_fetch_requests(groups, 7).len())
            .sum();
        assert_eq!(built_v7, 50);
    }

    #[test]
    fn requests_carry_what_was_planned() {
        let groups = BTreeMap::from([
            ("a".to_string(), None),
            (
                "b".to_string(),
                Some(BTreeMap::from([("t".to_string(), vec![0, 2])])),
            ),
        ]);
        let batched = offset_fetch_requests(&groups, 8);
        assert_eq!(batched.len(), 1);
        let r = &batched[0].1;
        assert_eq!(r.groups.len(), 2);
        assert!(r.groups[0].topics.is_none());
        let t = &r.groups[1].topics.as_ref().unwrap()[0];
        assert_eq!(
            (t.name.as_str(), t.partition_indexes.as_slice()),
            ("t", &[0, 2][..])
        );
        let single = offset_fetch_requests(&groups, 7);
        assert_eq!(single.len(), 2);
        assert_eq!(single[1].1.group_id.as_str(), "b");
        let lo = list_offsets_request(&BTreeMap::from([("t".to_string(), vec![1, 2])]));
        assert_eq!(lo.topics[0].partitions.len(), 2);
        assert_eq!(lo.topics[0].partitions[1].timestamp, -1);
    }

    proptest! {
        // N triggers over G groups × T topics × P partitions on B brokers, C coordinators: one
        // ListOffsets per leader and one OffsetFetch per coordinator, each partition asked once.
        #[test]
        fn requests_per_round_are_leaders_plus_coordinators(
            n in 1usize..400, g in 1usize..40, t in 1usize..12, p in 1i32..16, b in 1i32..6, c in 1i32..6,
            limited in any::<bool>(), no_topic_every in 0usize..5,
        ) {
            let topics = cluster(t, p, b);
            let watches: Vec<Watch> = (0..n)
                .map(|i| {
                    let group = format!("g{}", i % g);
                    if no_topic_every > 0 && i % (no_topic_every * 7 + 1) == 0 {
                        watch(&group, None, None)
                    } else {
                        let parts = limited.then(|| vec![(i as i32) % p]);
                        watch(&group, Some(&format!("t{}", i % t)), parts)
                    }
                })
                .collect();
            let set = WatchSet::of(&watches);
            // Groups watched without a topic discovered every topic.
            let discovered: HashMap<String, BTreeSet<String>> = set
                .groups
                .iter()
                .filter(|(_, w)| w.all_topics)
                .map(|(group, _)| (group.clone(), topics.keys().cloned().collect()))
                .collect();
            let coordinators: HashMap<String, i32> =
                set.groups.keys().enumerate().map(|(i, group)| (group.clone(), i as i32 % c)).collect();
            let plan = plan_round(&set, &discovered, &topics, &coordinators);
            let leaders: BTreeSet<i32> = topics.values().flat_map(|m| m.leaders.values().copied()).collect();
            let used_coordinators: BTreeSet<i32> = coordinators.values().copied().collect();
            prop_assert!(plan.list_offsets.len() <= leaders.len());
            prop_assert_eq!(plan.offset_fetch.len(), used_coordinators.len());
            prop_assert!(plan.request_count(|_| true) <= leaders.len() + used_coordinators.len());
            let mut seen = BTreeSet::new();
            for per_topic in plan.list_offsets.values() {
                for (topic, parts) in per_topic {
                    for part in parts {
                        prop_assert!(seen.insert((topic.clone(), *part)), "asked twice");
                    }
                }
            }
            prop_assert!(plan.leaderless.is_empty() && plan.uncoordinated.is_empty());
        }
    }
}
