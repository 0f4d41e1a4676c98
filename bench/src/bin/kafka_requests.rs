//! Scenario 5: Kafka broker requests per tick with 1,000 kafka triggers over 10 topics × 10
//! partitions (trigger `i` has its own consumer group, with committed offsets and some lag, on
//! topic `i % 10`). Target: ebb sends at most (partition leaders + group coordinators) requests
//! per tick — 2 on the test environment's single-broker cluster.
//!
//! Every request is counted where it matters, at the broker: a counting proxy
//! ([`ebb_bench::counting_proxy`]) stands in front of the broker and rewrites the broker address
//! in Metadata answers, so every connection goes through it. ebb's side is ebb's own code: the
//! 1,000 triggers are parsed with `ebb_scalers::parse_trigger` and built as
//! `ebb_scalers::ScalerFactory` builds kafka scalers (one `KafkaClusters` pool with the
//! factory's options, `KafkaScaler::new`; the pool is built here so that its client-side counters
//! are readable as a cross-check), so they share one cluster client whose round runs every
//! second. Each scaler is also sampled as the operator's scale loops would (once before and once
//! during the window). Then, through the same proxy, the per-ScaledObject approach KEDA takes is
//! emulated: per ScaledObject and tick, Metadata (its topic) + OffsetFetch (its group) +
//! ListOffsets (per partition leader), on connections of its own (a pool, see below), after a
//! warm-up tick that also finds each group's coordinator.
//! The proxy also counts the bytes each side moves, which the result reports next to the
//! request counts.
//!
//! `EBB_BENCH_SECONDS` (default 30) is the measuring window of ebb's rounds,
//! `EBB_BENCH_TRIGGERS` (default 1000) the number of triggers, `EBB_BENCH_KEDA_CONNECTIONS`
//! (default 50) the connections the emulation spreads its ScaledObjects over (1,000 would be one
//! per ScaledObject, as KEDA; the request count does not depend on it), `EBB_BENCH_KEDA_TICKS`
//! (default 3) the emulated ticks measured.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use ebb_bench::counting_proxy::{ClientCounts, CountingProxy, RequestEvent, api_name, bursts};
use ebb_bench::write_result;
use ebb_scalers::kafka::plan::{group_id, list_offsets_request, topic_name};
use ebb_scalers::kafka::wire::{ConnectOptions, Connection, WireCounters};
use ebb_scalers::kafka::{KafkaClusters, KafkaConfig, KafkaOptions, KafkaScaler};
use ebb_scalers::{FactoryOptions, Scaler, ScalerError, TriggerSample};
use ebb_tests::TestEnv;
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

const TOPICS: usize = 10;
const PARTITIONS: i32 = 10;
/// Records produced per partition; groups commit offset 0, so each group lags by
/// `RECORDS_PER_PARTITION × PARTITIONS`.
const RECORDS_PER_PARTITION: usize = 1;
/// The client id of ebb's scalers (the pool's default) and of the emulation.
const EBB_CLIENT: &str = "ebb";
const KEDA_CLIENT: &str = "per-scaledobject";
/// Silence that separates two of ebb's rounds (the tick is 1 s; a round's requests go out
/// together).
const ROUND_GAP: Duration = Duration::from_millis(300);
/// Rounds before the window.
const WARMUP: Duration = Duration::from_secs(5);

/// Requests by API name, plus the total, divided by `per`.
fn by_api(counts: &ClientCounts, per: f64) -> Value {
    let mut out = serde_json::Map::new();
    for (key, n) in &counts.requests {
        out.insert(api_name(*key), json!(round3(*n as f64 / per)));
    }
    json!({"total": round3(counts.total() as f64 / per), "by_api": out})
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// "ListOffsets 1, OffsetFetch 1" from a per-tick breakdown (rounded).
fn breakdown(counts: &ClientCounts, per: f64) -> String {
    let mut parts: Vec<(u64, String)> = counts.requests.iter().map(|(k, n)| (*n, api_name(*k))).collect();
    parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    parts
        .iter()
        .map(|(n, name)| {
            let v = *n as f64 / per;
            if (v - v.round()).abs() < 0.005 {
                format!("{name} {}", v.round())
            } else {
                format!("{name} {v:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn median_f(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What one emulated ScaledObject reads.
#[derive(Clone)]
struct Emulated {
    group: String,
    topic: String,
}

/// The emulation's results: leaders and coordinators seen, errors.
#[derive(Default)]
struct EmulationSeen {
    leaders: BTreeSet<i32>,
    coordinators: BTreeSet<i32>,
    errors: u64,
    first_error: Option<String>,
}

/// One KEDA-style poll of one ScaledObject: Metadata of its topic, OffsetFetch of its group,
/// ListOffsets of the topic's partitions on their leader (the only broker here); FindCoordinator
/// first when `find_coordinator` (sarama caches the coordinator afterwards).
async fn poll_like_keda(
    conn: &mut Connection,
    so: &Emulated,
    find_coordinator: bool,
    seen: &Mutex<EmulationSeen>,
) -> anyhow::Result<()> {
    if find_coordinator {
        let version = conn.require_version::<FindCoordinatorRequest>(0)?.min(3);
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(so.group.clone()))
            .with_key_type(0);
        let answer = conn.request(&request, version).await?;
        if answer.error_code != 0 {
            return Err(anyhow!(
                "FindCoordinator {}: error {}",
                so.group,
                answer.error_code
            ));
        }
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .coordinators
            .insert(answer.node_id.0);
    }
    let version = conn.require_version::<MetadataRequest>(1)?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(&so.topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    let metadata = conn.request(&request, version).await?;
    let mut partitions = Vec::new();
    for t in &metadata.topics {
        if t.error_code != 0 {
            return Err(anyhow!("Metadata {}: error {}", so.topic, t.error_code));
        }
        for p in &t.partitions {
            partitions.push(p.partition_index);
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .leaders
                .insert(p.leader_id.0);
        }
    }
    // sarama's ListConsumerGroupOffsets: one group per OffsetFetch (v1..=7).
    let version = conn.require_version::<OffsetFetchRequest>(1)?.min(7);
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(&so.group))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(topic_name(&so.topic))
                .with_partition_indexes(partitions.clone()),
        ]));
    let fetched = conn.request(&request, version).await?;
    if fetched.error_code != 0 {
        return Err(anyhow!("OffsetFetch {}: error {}", so.group, fetched.error_code));
    }
    // One ListOffsets per partition leader: a single broker leads every partition here.
    let version = conn.require_version::<ListOffsetsRequest>(1)?;
    let topics = BTreeMap::from([(so.topic.clone(), partitions)]);
    conn.request(&list_offsets_request(&topics), version).await?;
    Ok(())
}

/// One emulated tick: every ScaledObject polls once, spread over the connections.
async fn emulated_tick(
    conns: &mut [Connection],
    sos: &[Emulated],
    find_coordinator: bool,
    seen: &Arc<Mutex<EmulationSeen>>,
) {
    let width = conns.len().max(1);
    let tasks = conns.iter_mut().enumerate().map(|(j, conn)| {
        let seen = seen.clone();
        async move {
            for so in sos.iter().skip(j).step_by(width) {
                if let Err(e) = poll_like_keda(conn, so, find_coordinator, &seen).await {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.errors += 1;
                    s.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    });
    futures::future::join_all(tasks).await;
}

/// Every scaler polled once, all at once, as the operator's scale loops poll.
async fn sample_pass(scalers: &[KafkaScaler]) -> Vec<Result<TriggerSample, ScalerError>> {
    futures::future::join_all(scalers.iter().map(|s| s.sample())).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = ebb_bench::env_number("EBB_BENCH_SECONDS", 30).max(3);
    let triggers = ebb_bench::env_number("EBB_BENCH_TRIGGERS", 1000).max(1) as usize;
    let keda_connections =
        ebb_bench::env_number("EBB_BENCH_KEDA_CONNECTIONS", 50).clamp(1, triggers as u64) as usize;
    let keda_ticks = ebb_bench::env_number("EBB_BENCH_KEDA_TICKS", 3).max(1);

    let env = TestEnv::load().await?;
    let bootstrap = env.var("EBB_KAFKA_BOOTSTRAP")?.to_string();
    let proxy = CountingProxy::start(&bootstrap).await?;

    // Fresh topics and groups (the broker may have been restarted with an empty state).
    eprintln!("setting up {TOPICS} topics × {PARTITIONS} partitions and {triggers} groups on {bootstrap}");
    let setup_started = Instant::now();
    let mut admin = KafkaAdmin::connect(&bootstrap).await?;
    let run = unique_name("ebb-bench-req");
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("{run}-t{t}")).collect();
    for topic in &topics {
        admin.create_topic(topic, PARTITIONS).await?;
        for p in 0..PARTITIONS {
            for r in 0..RECORDS_PER_PARTITION {
                admin.produce_one(topic, p, &format!("record {r}")).await?;
            }
        }
    }
    let sos: Vec<Emulated> = (0..triggers)
        .map(|i| Emulated {
            group: format!("{run}-g{i}"),
            topic: topics[i % TOPICS].clone(),
        })
        .collect();
    let zeros: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    for so in &sos {
        admin.commit(&so.group, &so.topic, &zeros).await?;
    }
    let setup_done = Instant::now();

    // ebb: 1,000 scalers on one cluster client, as the operator's ScalerFactory builds them.
    let clusters = KafkaClusters::new(KafkaOptions {
        request_timeout: FactoryOptions::default().http_timeout,
        ..Default::default()
    });
    let tick = clusters.options().tick;
    let empty = BTreeMap::new();
    let mut scalers = Vec::with_capacity(triggers);
    for so in &sos {
        let metadata: BTreeMap<String, String> = [
            ("bootstrapServers", proxy.addr()),
            ("consumerGroup", so.group.as_str()),
            ("topic", so.topic.as_str()),
            ("lagThreshold", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let parsed = ebb_scalers::parse_trigger(0, "kafka", &metadata, Some(&empty), Some(&empty))
            .map_err(|e| anyhow!("{e}"))?;
        scalers.push(KafkaScaler::new(
            clusters.clone(),
            KafkaConfig::try_from(&parsed.params)?,
        )?);
    }

    // The operator's first poll of every ScaledObject, then a warm-up.
    let first = sample_pass(&scalers).await;
    let first_errors: Vec<String> = first
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    if first_errors.len() == first.len() {
        return Err(anyhow!("every kafka scaler failed: {}", first_errors[0]));
    }
    tokio::time::sleep(WARMUP).await;

    // The window, with one more operator poll of everything halfway.
    let window_start = Instant::now();
    let stats_start = clusters.stats();
    let proxy_start = proxy.client(EBB_CLIENT);
    tokio::time::sleep(Duration::from_secs(seconds / 2)).await;
    let second = sample_pass(&scalers).await;
    tokio::time::sleep(Duration::from_secs(seconds - seconds / 2)).await;
    let window_end = Instant::now();
    let stats_end = clusters.stats();
    let in_window = proxy.client(EBB_CLIENT).since(&proxy_start);
    let sample_ok = second.iter().filter(|r| r.is_ok()).count();
    let sample_active = second
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.active))
        .count();
    let second_error = second
        .iter()
        .find_map(|r| r.as_ref().err().map(|e| e.to_string()));

    // ebb's requests in the window, grouped into rounds by the silence between them; the first
    // and last bursts may be cut by the window's edges and are left out.
    let events: Vec<RequestEvent> = proxy
        .events(EBB_CLIENT)
        .into_iter()
        .filter(|e| e.at >= window_start && e.at <= window_end)
        .collect();
    let all_bursts = bursts(&events, ROUND_GAP);
    if all_bursts.len() < 3 {
        return Err(anyhow!(
            "only {} bursts of ebb requests in the window",
            all_bursts.len()
        ));
    }
    let complete = &all_bursts[1..all_bursts.len() - 1];
    let rounds = complete.len() as f64;
    let counts_of = |burst: &[RequestEvent]| {
        let mut c = ClientCounts::default();
        for e in burst {
            *c.requests.entry(e.api_key).or_default() += 1;
        }
        c
    };
    let per_round: Vec<ClientCounts> = complete.iter().map(|b| counts_of(b)).collect();
    let ebb = counts_of(&complete.concat());
    let mut totals: Vec<u64> = per_round.iter().map(ClientCounts::total).collect();
    totals.sort_unstable();
    let median_round = totals[totals.len() / 2];
    let rounds_with_metadata = per_round.iter().filter(|c| c.of(ApiKey::Metadata) > 0).count();
    let first_at = complete[0][0].at;
    let last_at = complete[complete.len() - 1][0].at;
    let round_period = (last_at - first_at).as_secs_f64() / (rounds - 1.0).max(1.0);
    let round_duration_ms: Vec<f64> = complete
        .iter()
        .map(|b| (b[b.len() - 1].at - b[0].at).as_secs_f64() * 1000.0)
        .collect();
    let ebb_per_tick = ebb.total() as f64 / rounds;
    let window = (window_end - window_start).as_secs_f64();
    let ebb_per_second = events.len() as f64 / window;
    let ebb_rounds_counted = stats_end.rounds - stats_start.rounds;
    eprintln!(
        "ebb: {} rounds ({ebb_rounds_counted} by the client's counter) in {window:.1} s, {:.0} ms apart: {ebb_per_tick:.2} requests per round ({})",
        complete.len(),
        round_period * 1000.0,
        breakdown(&ebb, rounds)
    );

    // Stop ebb's client (its ticker stops and closes its connections with the last trigger),
    // then compare the client's own counters with the proxy's over the whole run.
    drop(scalers);
    tokio::time::sleep(tick * 2).await;
    let client_side = clusters.stats();
    let client_side_requests: BTreeMap<i16, u64> = client_side
        .requests
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (*k, *n))
        .collect();
    let proxy_ebb_total = proxy.client(EBB_CLIENT);
    let counters_match = client_side_requests == proxy_ebb_total.requests;

    // The per-ScaledObject approach, through the same proxy.
    let options = ConnectOptions {
        timeout: Duration::from_secs(10),
        tls: None,
        sasl: None,
        client_id: KEDA_CLIENT.to_string(),
    };
    let counters = Arc::new(WireCounters::default());
    let mut conns = Vec::with_capacity(keda_connections);
    for _ in 0..keda_connections {
        conns.push(
            Connection::connect(proxy.addr(), &options, counters.clone())
                .await
                .context("connecting the emulation through the proxy")?,
        );
    }
    let seen: Arc<Mutex<EmulationSeen>> = Arc::default();
    emulated_tick(&mut conns, &sos, true, &seen).await;
    let before = proxy.client(KEDA_CLIENT);
    let mut tick_ms = Vec::new();
    for _ in 0..keda_ticks {
        let started = Instant::now();
        emulated_tick(&mut conns, &sos, false, &seen).await;
        tick_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let keda = proxy.client(KEDA_CLIENT).since(&before);
    drop(conns);
    let keda_per_tick = keda.total() as f64 / keda_ticks as f64;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    // Leaders + coordinators, as the cluster itself answered.
    let bound = (seen.leaders.len() + seen.coordinators.len()).max(1) as f64;

    let ratio = keda_per_tick / ebb_per_tick.max(f64::MIN_POSITIVE);
    let met = (median_round as f64) <= bound && sample_ok == triggers;
    let limited_by = if met {
        Value::Null
    } else if sample_ok < triggers {
        json!(format!(
            "{} of {triggers} operator polls failed (first: {})",
            triggers - sample_ok,
            second_error.clone().unwrap_or_default()
        ))
    } else {
        json!(format!(
            "a steady round sends {median_round} requests ({}), more than the {bound} leaders + coordinators",
            per_round
                .iter()
                .find(|c| c.total() == median_round)
                .map(|c| breakdown(c, 1.0))
                .unwrap_or_default()
        ))
    };
    // KEDA polls each ScaledObject once per pollingInterval (default 30 s); ebb's round is every
    // second whatever the interval.
    let keda_per_second_default = keda_per_tick / 30.0;

    let ebb_bytes_per_second = (in_window.request_bytes + in_window.response_bytes) as f64 / window;
    let keda_bytes_per_second = (keda.request_bytes + keda.response_bytes) as f64 / keda_ticks as f64 / 30.0;
    let summary = format!(
        "kafka requests per tick, {triggers} triggers: ebb {} ({}) vs per-ScaledObject {} — {:.0}× fewer; \
         per second at the default 30 s pollingInterval: ebb {:.2} vs {:.0} ({:.0}×), but bytes per second ebb {:.0} KB vs {:.0} KB; \
         target ≤ {bound} per tick {}",
        if (ebb_per_tick - ebb_per_tick.round()).abs() < 0.005 {
            format!("{}", ebb_per_tick.round())
        } else {
            format!("{ebb_per_tick:.2}")
        },
        breakdown(&ebb, rounds as f64),
        keda_per_tick.round(),
        ratio,
        ebb_per_second,
        keda_per_second_default,
        keda_per_second_default / ebb_per_second.max(f64::MIN_POSITIVE),
        ebb_bytes_per_second / 1000.0,
        keda_bytes_per_second / 1000.0,
        if met { "met" } else { "MISSED" }
    );
    let result = json!({
        "parameters": {
            "triggers": triggers, "topics": TOPICS, "partitions_per_topic": PARTITIONS,
            "lag_per_group": RECORDS_PER_PARTITION as i64 * i64::from(PARTITIONS),
            "broker": "the test environment's Tansu (single broker), through a counting proxy",
            "window_seconds": seconds, "warmup_seconds": WARMUP.as_secs(),
            "setup_seconds": round3((setup_done - setup_started).as_secs_f64()),
            "ebb": {"built_as": "parse_trigger + KafkaScaler::new on one KafkaClusters pool with ScalerFactory's options",
                    "tick_ms": tick.as_millis() as u64, "operator_polls": "every scaler sampled once before and once during the window"},
            "per_scaledobject": {"requests_per_scaledobject_and_tick": "Metadata(topic) + OffsetFetch(group, v1-7) + ListOffsets per partition leader",
                                 "connections": keda_connections,
                                 "connections_note": "ScaledObjects spread over this many connections (KEDA opens one client per ScaledObject; the count of requests per tick does not depend on it)",
                                 "measured_ticks": keda_ticks,
                                 "warmup_tick": "one tick with FindCoordinator per group first (sarama caches coordinators), not counted"},
        },
        "figures": {
            "ebb": {
                "rounds_measured": complete.len(),
                "rounds_by_client_counter": ebb_rounds_counted,
                "round_period_ms": round3(round_period * 1000.0),
                "round_duration_ms": {"median": round3(median_f(&round_duration_ms)), "max": round3(round_duration_ms.iter().copied().fold(0.0, f64::max))},
                "requests_per_tick": by_api(&ebb, rounds),
                "requests_per_second": round3(ebb_per_second),
                "per_round_total": {"min": totals.first(), "median": median_round, "max": totals.last(), "rounds": totals.len()},
                "rounds_with_metadata": rounds_with_metadata,
                "metadata_note": "ebb refetches the watched topics' metadata once a minute (metadata_max_age 60 s): about 1/60 Metadata per tick on average",
                "attribution": format!("requests grouped into rounds by silences of at least {} ms; the window's first and last bursts left out", ROUND_GAP.as_millis()),
                "whole_run": {"through_proxy": by_api(&proxy_ebb_total, 1.0),
                              "client_side_counters": client_side_requests.iter().map(|(k, n)| (api_name(*k), *n)).collect::<BTreeMap<_, _>>(),
                              "client_side_counters_match_proxy": counters_match,
                              "rounds": client_side.rounds,
                              "connections_opened": client_side.connections_opened,
                              "connections_through_proxy": proxy_ebb_total.connections},
                "bytes_per_second": {"requests": round3(in_window.request_bytes as f64 / window),
                                     "responses": round3(in_window.response_bytes as f64 / window)},
                "bytes_per_tick": {"requests": round3(in_window.request_bytes as f64 / window * round_period),
                                   "responses": round3(in_window.response_bytes as f64 / window * round_period)},
                "operator_polls": {"ok": sample_ok, "active": sample_active, "failed_first_pass": first_errors.len(),
                                   "first_error": second_error},
            },
            "per_scaledobject": {
                "requests_per_tick": by_api(&keda, keda_ticks as f64),
                "tick_duration_ms": tick_ms.iter().map(|t| round3(*t)).collect::<Vec<_>>(),
                "errors": seen.errors, "first_error": seen.first_error,
                "bytes_per_tick": {"requests": round3(keda.request_bytes as f64 / keda_ticks as f64),
                                   "responses": round3(keda.response_bytes as f64 / keda_ticks as f64)},
                "bytes_per_second_at_default_polling_interval": {
                    "requests": round3(keda.request_bytes as f64 / keda_ticks as f64 / 30.0),
                    "responses": round3(keda.response_bytes as f64 / keda_ticks as f64 / 30.0)},
                "requests_per_second_at_default_polling_interval": round3(keda_per_second_default),
            },
            "partition_leaders": seen.leaders.len(),
            "group_coordinators": seen.coordinators.len(),
            "ratio_per_tick": round3(ratio),
            "bytes_ratio_per_second_at_default_polling_interval": round3(
                keda_bytes_per_second / ebb_bytes_per_second.max(f64::MIN_POSITIVE)),
            "bytes_note": "ebb's single OffsetFetch carries every group's partitions each second and ListOffsets every watched partition: far fewer requests, but the bytes scale with the number of groups × partitions per tick",
            "ratio_per_second_at_default_polling_interval": round3(keda_per_second_default / ebb_per_second.max(f64::MIN_POSITIVE)),
        },
        "target": {"description": "ebb requests per tick ≤ partition leaders + group coordinators (a steady round, median)",
                   "max_requests_per_tick": bound},
        "target_met": met,
        "limited_by": limited_by,
    });
    write_result("kafka-requests", result, &summary)?;
    Ok(())
}
