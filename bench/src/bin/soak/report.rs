//! The result file `bench/results/soak.json`: per broker the flaps, recoveries, connections and
//! replica changes with their judgement, the totals and the verdict.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ebb_bench::write_result;
use serde_json::{Value, json};

use crate::brokers::{BROKERS, Broker};
use crate::flapper::FlapRun;
use crate::observe::SeenChange;
use crate::schedule::{Flap, Signal};
use crate::sources::{BACKLOG, N, TARGET};
use crate::verdict::{
    BrokerOutcome, Change, Connections, judge, recovery_figures, refill_explains, state_at, verdict,
};
use crate::{CONNECTION_SLACK, COOLDOWN_SECONDS, POLLING_SECONDS, RECOVERY_BOUND, Settings, expected};

/// How long after a refill a change can still come from a value read during it: the next
/// poll (the cache serves the HPA until then) and the HPA's 2 s sync, plus a second.
const REFILL_WINDOW: Duration = Duration::from_secs(POLLING_SECONDS + 3);

/// Backlogs `(idle, loaded)` read from the brokers (`None`: unreadable).
type Truth<T> = BTreeMap<&'static str, (T, T)>;

/// Everything the run saw.
pub(crate) struct Input<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) start: Instant,
    pub(crate) soak_seconds: f64,
    pub(crate) plans: BTreeMap<Broker, Vec<Flap>>,
    pub(crate) runs: BTreeMap<Broker, Vec<FlapRun>>,
    pub(crate) changes: Vec<SeenChange>,
    pub(crate) initial: BTreeMap<Broker, usize>,
    pub(crate) finals: BTreeMap<Broker, usize>,
    pub(crate) truth_start: Truth<u64>,
    pub(crate) truth_end: Truth<Option<u64>>,
    pub(crate) errors: Vec<String>,
    pub(crate) commit: String,
    pub(crate) operator_log: String,
}

/// The command that repeats this run.
fn command(s: &Settings) -> String {
    let subset = if s.brokers.len() == BROKERS.len() {
        String::new()
    } else {
        let names: Vec<&str> = s.brokers.iter().map(|b| b.name()).collect();
        format!(" EBB_BENCH_SOAK_BROKERS={}", names.join(","))
    };
    format!(
        "flock -o /tmp/ebb-env.lock env EBB_BENCH_SEED={} EBB_BENCH_SOAK_SECONDS={} EBB_BENCH_SOAK_FLAPS={}{subset} bench/run.sh soak",
        s.seed, s.seconds, s.cycles
    )
}

/// Writes the result and prints its summary; whether the soak passed.
pub(crate) fn write(input: Input<'_>) -> anyhow::Result<bool> {
    let settings = input.settings;
    let before_soak = input.changes.iter().filter(|c| c.0 < input.start).count();
    let mut outcomes = Vec::new();
    let mut sections = serde_json::Map::new();
    let mut truth_reasons = Vec::new();
    for b in &settings.brokers {
        let runs = input.runs.get(b).cloned().unwrap_or_default();
        let records: Vec<_> = runs.iter().map(|r| r.record.clone()).collect();
        let changes: Vec<_> = input
            .changes
            .iter()
            .filter(|c| c.0 >= input.start)
            .filter_map(|(at, object, from, to)| {
                let (broker, want) = expected(object)?;
                (broker == *b).then(|| {
                    let change = Change {
                        at: *at - input.start,
                        object: object.clone(),
                        from: *from,
                        to: *to,
                    };
                    let refill = refill_explains(&records, &change, want, REFILL_WINDOW);
                    let judged = judge(&change, want, state_at(&records, change.at), refill);
                    (change, judged)
                })
            })
            .collect();
        let connections = Connections {
            initial: input.initial.get(b).copied().unwrap_or(0),
            samples: runs.iter().filter_map(|r| r.connections).collect(),
            last: input.finals.get(b).copied().unwrap_or(0),
        };
        let outcome = BrokerOutcome {
            name: b.name(),
            planned: input.plans.get(b).map_or(0, Vec::len),
            flaps: records.clone(),
            changes,
            connections,
        };
        let start_truth = input.truth_start.get(b.name()).copied();
        let end_truth = input.truth_end.get(b.name()).copied();
        if start_truth.map(|(i, l)| (Some(i), Some(l))) != end_truth {
            truth_reasons.push(format!(
                "{}: the sources changed under the soak (start {start_truth:?}, end {end_truth:?})",
                b.name()
            ));
        }
        sections.insert(
            b.name().to_string(),
            broker_section(&outcome, &runs, start_truth, end_truth, *b),
        );
        outcomes.push(outcome);
    }
    let (mut pass, mut reasons) = verdict(&outcomes, RECOVERY_BOUND, CONNECTION_SLACK);
    reasons.extend(truth_reasons);
    reasons.extend(input.errors.iter().cloned());
    pass &= reasons.is_empty();

    let total_changes: usize = outcomes.iter().map(|o| o.changes.len()).sum();
    let unjustified: usize = outcomes
        .iter()
        .map(|o| o.changes.iter().filter(|(_, j)| !j.justified).count())
        .sum();
    let zero_erring: usize = outcomes
        .iter()
        .map(|o| o.changes.iter().filter(|(_, j)| j.zero_while_erroring).count())
        .sum();
    let flaps_run: usize = outcomes.iter().map(|o| o.flaps.len()).sum();
    let all: Vec<_> = outcomes.iter().flat_map(|o| o.flaps.clone()).collect();
    let recovery_all = recovery_figures(&all);
    let summary = format!(
        "soak: {flaps_run} flaps over {:.0} s; replica changes {total_changes} ({unjustified} unjustified, {zero_erring} to 0 while erring); recovery p50 {} / p99 {} / max {} ms; {}",
        input.soak_seconds,
        recovery_all["p50_ms"],
        recovery_all["p99_ms"],
        recovery_all["max_ms"],
        if pass {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", reasons.join("; "))
        }
    );
    write_result(
        "soak",
        json!({
            "command": command(settings),
            "ebb_commit": input.commit,
            "parameters": {
                "soak_seconds": settings.seconds, "flaps_per_broker": settings.cycles, "seed": settings.seed,
                "brokers": settings.brokers.iter().map(|b| b.name()).collect::<Vec<_>>(),
                "down_seconds": [settings.bounds.min_down.as_secs(), settings.bounds.max_down.as_secs()],
                "settle_seconds_after_each_start": settings.bounds.settle.as_secs(),
                "signals": "TERM or KILL at random (testenv.sh proc-down; KILL hits the process group)",
                "objects": format!("per broker one object on an idle source (expected 0) and one on a backlog of {BACKLOG} messages, target {TARGET} per replica (expected {N}); minReplicaCount 0, maxReplicaCount 6"),
                "polling_interval_seconds": POLLING_SECONDS, "cooldown_period_seconds": COOLDOWN_SECONDS,
                "hpa": "kube-controller-manager --horizontal-pod-autoscaler-sync-period=2s --horizontal-pod-autoscaler-downscale-stabilization=0s",
                "recovery": "from the broker serving again (the environment's readiness check; SQS: its queues recreated) until a poll of the broker's trigger type succeeded after the start command (ebb_polls_total{result=\"ok\"}) and the object at N's external metric, read through the API server's aggregation path, makes the HPA want N",
                "recovery_bound_seconds": RECOVERY_BOUND.as_secs(),
                "connections": format!("the operator's ESTABLISHED TCP connections to the broker's ports (/proc/<pid>/net/tcp + fd socket inodes); fail above the initial count + {CONNECTION_SLACK}"),
        "sqs_state": "moto keeps queues in memory and loses them at a restart: the soak recreates both queues (same names and URLs) and the backlog (one SendMessageBatch) right after each moto start, standing in for a real SQS that keeps its state; a change to 1..N within 8 s of that refill is justified by the values the queue held meanwhile (justified_by_the_refill)",
                "machine_note": "2 cores shared with the API server, etcd, kube-controller-manager, the brokers and other agents' work; figures from one run",
            },
            "duration_seconds": (input.soak_seconds * 10.0).round() / 10.0,
            "replica_changes_before_soak": before_soak,
            "figures": {
                "flaps": flaps_run,
                "replica_changes": total_changes,
                "replica_changes_unjustified": unjustified,
                "scale_to_zero_while_erring": zero_erring,
                "recovery_ms_all_brokers": recovery_all,
                "per_broker": sections,
            },
            "operator_log": input.operator_log,
            "verdict": {"pass": pass, "reasons": reasons},
            "target": {"unjustified_replica_changes": 0, "recovery_within_seconds": RECOVERY_BOUND.as_secs(),
                       "connection_growth_at_most": CONNECTION_SLACK, "met": pass},
            "target_met": pass,
            "limited_by": if pass { Value::Null } else { json!(reasons) },
        }),
        &summary,
    )?;
    Ok(pass)
}

fn broker_section(
    o: &BrokerOutcome,
    runs: &[FlapRun],
    start: Option<(u64, u64)>,
    end: Option<(Option<u64>, Option<u64>)>,
    b: Broker,
) -> Value {
    let downs: Vec<Duration> = o.flaps.iter().map(|f| f.up_at - f.down_at).collect();
    let s = |d: Option<&Duration>| d.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0);
    let term = runs.iter().filter(|r| r.signal == Signal::Term).count();
    let noticed = runs.iter().filter(|r| r.poll_errors > 0.0).count();
    let changes: Vec<Value> = o
        .changes
        .iter()
        .map(|(c, j)| {
            json!({"at_s": (c.at.as_secs_f64() * 10.0).round() / 10.0, "object": c.object,
                   "from": c.from, "to": c.to, "broker": j.state.name(), "justified": j.justified,
                   "justified_by_the_refill": j.by_refill})
        })
        .collect();
    json!({
        "flaps_planned": o.planned, "flaps_run": o.flaps.len(),
        "signals": {"TERM": term, "KILL": runs.len() - term},
        "down_seconds": {"min": s(downs.iter().min()), "max": s(downs.iter().max())},
        "flaps_where_ebb_saw_errors": noticed,
        "recovery_ms": recovery_figures(&o.flaps),
        "connections": {"ports": b.ports(), "initial": o.connections.initial, "max": o.connections.max(),
                        "final": o.connections.last, "after_each_recovery": o.connections.samples},
        "replica_changes": {"total": o.changes.len(),
                            "unjustified": o.changes.iter().filter(|(_, j)| !j.justified).count(),
                            "each": changes},
        "backlog_idle_loaded": {"start": start, "end": end},
        "flaps": runs.iter().map(FlapRun::json).collect::<Vec<_>>(),
    })
}
