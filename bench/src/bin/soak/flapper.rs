//! One broker's flaps, carried out: stop at the planned moment, start after the planned down
//! time, wait until the broker serves (SQS: its queues recreated), then until ebb reads it
//! again, and count the operator's connections to it.
//!
//! ebb has read a broker again when both hold: a poll of one of its triggers succeeded after
//! the start (`ebb_polls_total{trigger_type, result="ok"}` grew past its count at the start
//! command), and the external metric of its object at N, read through the API server's
//! aggregation path as the HPA reads it, makes the HPA want N again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_bench::operator_under_test::OperatorUnderTest;
use kube::Client;
use serde_json::{Value, json};

use crate::brokers::{Broker, DownSet, serves};
use crate::connections;
use crate::observe::{metric_replicas, polls};
use crate::schedule::{Flap, Signal};
use crate::sources::{N, Sources, TARGET};
use crate::verdict::FlapRecord;

/// How long the driver waits for a started broker to serve.
const SERVE_WITHIN: Duration = Duration::from_secs(120);
/// How long the driver waits for ebb to read a broker again before it records "never".
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(90);
/// How often recovery is checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What the flappers share.
pub(crate) struct Ctx {
    pub(crate) op: OperatorUnderTest,
    /// A cluster-admin client, for the aggregated API's metric reads.
    pub(crate) client: Client,
    pub(crate) sources: tokio::sync::Mutex<Sources>,
    pub(crate) down: DownSet,
    pub(crate) start: Instant,
}

/// A flap as it went, for the result file and the verdict.
#[derive(Debug, Clone)]
pub(crate) struct FlapRun {
    pub(crate) record: FlapRecord,
    pub(crate) signal: Signal,
    /// How late the stop came against the plan (the previous flap's recovery ran over).
    pub(crate) late: Duration,
    /// Failed polls of the broker's triggers from the stop until ebb read it again: whether
    /// ebb noticed the outage.
    pub(crate) poll_errors: f64,
    /// External metric reads of the object at N that failed or were wrong, after the broker
    /// served again and before ebb read it.
    pub(crate) reads_not_n: usize,
    /// The operator's connections to the broker right after recovery.
    pub(crate) connections: Option<usize>,
}

impl FlapRun {
    /// The flap in the result file.
    pub(crate) fn json(&self) -> Value {
        let s = |d: Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
        let r = &self.record;
        json!({
            "down_at_s": s(r.down_at), "down_for_s": s(r.up_at - r.down_at), "signal": self.signal.name(),
            "late_s": s(self.late),
            "serving_after_start_ms": r.serving_at.map(|t| (t - r.up_at).as_millis() as u64),
            "recovery_ms": r.recovery().map(|d| d.as_millis() as u64),
            "poll_errors_during_outage": self.poll_errors,
            "metric_reads_not_n_while_recovering": self.reads_not_n,
            "connections_after_recovery": self.connections,
        })
    }
}

/// The operator's established connections to `broker`'s ports, summed.
pub(crate) fn connections_to(op: &OperatorUnderTest, broker: Broker) -> Option<usize> {
    connections::established(op.pid(), broker.ports())
        .ok()
        .map(|c| c.values().sum())
}

/// Carries out `plan` on `broker`; the runs of the flaps that happened (a flap whose stop or
/// start failed ends the broker's soak with that error as the last word).
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    broker: Broker,
    plan: Vec<Flap>,
    metric_path: String,
) -> (Vec<FlapRun>, Option<String>) {
    let mut runs = Vec::new();
    for (i, flap) in plan.iter().enumerate() {
        match one(&ctx, broker, flap, &metric_path).await {
            Ok(run) => {
                crate::say(&format!(
                    "[{}] flap {}/{}: {} down {:.1} s, serving after {:?}, recovery {:?}, {} connections",
                    broker.name(),
                    i + 1,
                    plan.len(),
                    run.signal.name(),
                    (run.record.up_at - run.record.down_at).as_secs_f64(),
                    run.record.serving_at.map(|t| t - run.record.up_at),
                    run.record.recovery(),
                    run.connections.map_or("?".into(), |c| c.to_string()),
                ));
                runs.push(run);
            }
            Err(e) => return (runs, Some(format!("{}: flap {}: {e:#}", broker.name(), i + 1))),
        }
    }
    (runs, None)
}

async fn one(ctx: &Ctx, broker: Broker, flap: &Flap, metric_path: &str) -> anyhow::Result<FlapRun> {
    let planned = ctx.start + flap.down_at;
    tokio::time::sleep_until(planned.into()).await;
    let late = Instant::now().saturating_duration_since(planned);
    let trigger = broker.trigger_type();
    let (_, errors_before) = polls(&ctx.op, trigger).await.unwrap_or_default();
    let down_at = Instant::now();
    ctx.down.stop(broker, flap.signal).await?;
    tokio::time::sleep_until((down_at + flap.down_for).into()).await;
    let (ok_at_start, _) = polls(&ctx.op, trigger).await.unwrap_or_default();
    let up_at = Instant::now();
    ctx.down.start(broker).await?;

    // Serving again: the environment's readiness check, then (SQS) the queues back.
    let mut serving_at = None;
    let mut refill_at = None;
    while up_at.elapsed() < SERVE_WITHIN {
        if serves(broker).await {
            let back = match broker {
                Broker::Sqs => {
                    refill_at = Some(Instant::now());
                    ctx.sources.lock().await.recreate_sqs().await.is_ok()
                }
                _ => true,
            };
            if back {
                serving_at = Some(Instant::now());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ebb reads it again.
    let mut recovered_at = None;
    let mut reads_not_n = 0;
    let mut errors_after = errors_before;
    if let Some(serving) = serving_at {
        while serving.elapsed() < GIVE_UP_AFTER {
            let (ok, errors) = polls(&ctx.op, trigger).await.unwrap_or_default();
            errors_after = errors_after.max(errors);
            let read = metric_replicas(&ctx.client, metric_path, TARGET as f64).await;
            let now = Instant::now();
            let metric_n = read.as_ref().is_ok_and(|r| *r == i64::from(N));
            if !metric_n {
                reads_not_n += 1;
            }
            if ok > ok_at_start && metric_n {
                recovered_at = Some(now);
                break;
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
    let since = |t: Instant| t.saturating_duration_since(ctx.start);
    Ok(FlapRun {
        record: FlapRecord {
            down_at: since(down_at),
            up_at: since(up_at),
            serving_at: serving_at.map(since),
            refill_at: refill_at.map(since),
            recovered_at: recovered_at.map(since),
        },
        signal: flap.signal,
        late,
        poll_errors: errors_after - errors_before,
        reads_not_n,
        connections: connections_to(&ctx.op, broker),
    })
}
