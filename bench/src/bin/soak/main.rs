//! Scenario 8: the broker-flap soak (issue 15). Each of the four brokers (Tansu for Kafka,
//! RabbitMQ, NATS with JetStream, moto for SQS) is stopped and started again 20 times at random
//! (seeded) moments over 10 minutes, TERM or KILL at random, while the release operator
//! (`EBB_BIN`) scales, per broker, one object on an idle source (stays at 0) and one on a
//! steady backlog (stays at [`sources::N`] through the HPA, which reads ebb's embedded adapter
//! registered as the cluster's external-metrics APIService).
//!
//! Every object: `minReplicaCount` 0 (the default, so ebb owns the 1↔0 step even for the
//! loaded objects), `pollingInterval` 5 s (down times of 2–16 s are shorter and longer than
//! it), `cooldownPeriod` 10 s (a trigger wrongly taken as inactive would show as a scale to 0
//! within seconds, not after KEDA's default 5 minutes), `maxReplicaCount` 6. The triggers use
//! ebb's default paths: Kafka's batched cluster client, RabbitMQ over AMQP (its watcher's
//! passive declares), NATS's `/jsz` monitoring endpoint, SQS GetQueueAttributes (poll-only).
//! The test environment's kube-controller-manager runs the HPA every 2 s with no downscale
//! stabilization, so a wrong metric would show as a replica change at once.
//!
//! Measured: every replica change of the eight Deployments (watched) and whether what the
//! source said justifies it; per flap, ebb's recovery (`flapper`: from the broker serving again
//! until a poll of it succeeded and its object at N reads N through the aggregated API); the
//! operator's established TCP connections to each broker's ports at the start, after every
//! recovery and at the end (`connections`). Verdict: no unjustified change, every flap
//! recovered within [`RECOVERY_BOUND`], connections never above the initial count +
//! [`CONNECTION_SLACK`], every planned flap run.
//!
//! Holds the shared environment for the whole run: run it as `flock -o /tmp/ebb-env.lock
//! bench/run.sh soak` (`-o`: the brokers it restarts must not inherit the lock's descriptor). Every broker left down is started again on the way out (error or panic
//! included). `EBB_BENCH_SOAK_SECONDS` (600), `EBB_BENCH_SOAK_FLAPS` (20 per broker),
//! `EBB_BENCH_SEED` (the schedule; random when unset, and written to the result),
//! `EBB_BENCH_SOAK_BROKERS` (comma-separated subset, for debugging).

mod brokers;
mod connections;
mod flapper;
mod observe;
mod report;
mod schedule;
mod sources;
mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ebb_bench::operator_under_test::OperatorUnderTest;
use ebb_crds::ScaledObject;
use ebb_tests::objects::deployment;
use ebb_tests::{TestEnv, install_crds, wait_for};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use brokers::{BROKERS, Broker, DownGuard, DownSet, serves};
use flapper::Ctx;
use observe::{lock, metric_replicas, watch_replicas};
use schedule::{Bounds, Rng, flaps};
use sources::{N, Sources, TARGET};

/// Every object's pollingInterval, in seconds.
const POLLING_SECONDS: u64 = 5;
/// Every object's cooldownPeriod, in seconds.
const COOLDOWN_SECONDS: u64 = 10;
/// The slowest acceptable recovery: two polling intervals past the broker serving, plus the
/// HPA's metric read (the adapter queries a source whose cached value is older than the
/// interval) and slack for a loaded 2-core machine.
pub(crate) const RECOVERY_BOUND: Duration = Duration::from_secs(2 * POLLING_SECONDS + 5);
/// Connections the operator may hold to a broker beyond its count at the start.
pub(crate) const CONNECTION_SLACK: usize = 2;
/// After the last flap: time for late changes to show before the end.
const TAIL: Duration = Duration::from_secs(20);

/// A progress line on stderr with the wall-clock time.
pub(crate) fn say(what: &str) {
    eprintln!("{} {what}", jiff::Timestamp::now());
}

/// The Deployment / ScaledObject of `broker`'s idle source or backlog.
pub(crate) fn object_name(broker: Broker, loaded: bool) -> String {
    format!("{}-{}", broker.name(), if loaded { "backlog" } else { "idle" })
}

/// The broker an object belongs to and the replicas its source justifies.
pub(crate) fn expected(object: &str) -> Option<(Broker, i32)> {
    BROKERS.into_iter().find_map(|b| {
        if object == object_name(b, true) {
            Some((b, N))
        } else if object == object_name(b, false) {
            Some((b, 0))
        } else {
            None
        }
    })
}

/// The run's settings, for the schedule and the report.
pub(crate) struct Settings {
    pub(crate) seconds: u64,
    pub(crate) cycles: usize,
    pub(crate) seed: u64,
    pub(crate) brokers: Vec<Broker>,
    pub(crate) bounds: Bounds,
}

fn settings() -> Settings {
    let seconds = ebb_bench::env_number("EBB_BENCH_SOAK_SECONDS", 600);
    let cycles = ebb_bench::env_number("EBB_BENCH_SOAK_FLAPS", 20) as usize;
    let seed = std::env::var("EBB_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_millisecond() as u64);
    let brokers = match std::env::var("EBB_BENCH_SOAK_BROKERS") {
        Ok(list) => BROKERS
            .into_iter()
            .filter(|b| list.split(',').any(|x| x.trim() == b.name()))
            .collect(),
        Err(_) => BROKERS.to_vec(),
    };
    Settings {
        seconds,
        cycles,
        seed,
        brokers,
        bounds: Bounds {
            length: Duration::from_secs(seconds),
            cycles,
            min_down: Duration::from_secs(2),
            max_down: Duration::from_secs(16),
            // RabbitMQ takes up to ~12 s to boot, then ebb up to a polling interval.
            settle: Duration::from_secs(12),
        },
    }
}

/// Creates `broker`'s two Deployments (idle at 0, backlog at N: the steady state from the
/// start) and their ScaledObjects.
async fn objects(client: &kube::Client, ns: &str, sources: &Sources, broker: Broker) -> anyhow::Result<()> {
    let api: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    for loaded in [false, true] {
        let name = object_name(broker, loaded);
        deployment(client, ns, &name, if loaded { N } else { 0 }).await?;
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": POLLING_SECONDS,
                     "cooldownPeriod": COOLDOWN_SECONDS, "maxReplicaCount": 6,
                     "triggers": [sources.trigger(broker, loaded)]}}))?;
        // A CRD created moments ago may answer 503 for a little while.
        wait_for("ScaledObject created", Duration::from_secs(30), || async {
            api.create(&PostParams::default(), &so).await.ok().map(|_| ())
        })
        .await?;
    }
    Ok(())
}

fn ready(so: &ScaledObject) -> bool {
    so.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The ebb commit the run measured (this checkout's HEAD, `-dirty` with local changes).
fn ebb_commit() -> String {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let settings = settings();
    let held = brokers::inherited_lock_files();
    if !held.is_empty() {
        bail!(
            "{} would be inherited by every broker the soak starts again, keeping the lock held: \
             run under `flock -o` (it closes the lock's descriptor before the command)",
            held.join(", ")
        );
    }
    let env = TestEnv::load().await?;
    for b in BROKERS {
        if !serves(b).await {
            bail!("{} is not serving: the soak needs every broker up", b.name());
        }
    }
    // From here on, a broker left down is started again however main ends.
    let down = DownSet::default();
    let _guard = DownGuard(down.clone());
    let client = env.client.clone();
    install_crds(&client).await?;
    let ns_handle = env.namespace("bench-soak").await?;
    let ns = ns_handle.name.clone();
    let kubeconfig = env.var("EBB_KUBECONFIG")?.to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let op = OperatorUnderTest::start(&kubeconfig, &ns, &["--metrics-adapter-addr", &addr]).await?;
    say(&format!(
        "operator leads (pid {}); creating the sources",
        op.pid()
    ));
    let sources = Sources::create(&env, &client, &ns).await?;

    let apiservice = ebb_tests::adapter::lock().await;
    ebb_tests::adapter::wait_until_free(&client).await;
    ebb_tests::adapter::register(&client, &ns, port).await?;
    say("APIService registered; creating the objects");
    let (replicas, watch_task) = watch_replicas(client.clone(), &ns);
    for b in &settings.brokers {
        objects(&client, &ns, &sources, *b).await?;
    }
    let mut metric_paths = BTreeMap::new();
    for b in &settings.brokers {
        let name = object_name(*b, true);
        let metric = wait_for("the HPA of the object at N", Duration::from_secs(60), || {
            observe::hpa_metric(&client, &ns, &name)
        })
        .await?;
        metric_paths.insert(*b, ebb_tests::metrics_api::metric_path(&ns, &name, &metric));
    }
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), &ns);
    let expected_objects = settings.brokers.len() * 2;
    wait_for(
        "every object Ready, its metric read through the aggregator, at its count",
        Duration::from_secs(120),
        || async {
            let list = sos.list(&ListParams::default()).await.ok()?;
            if list.items.len() != expected_objects || !list.items.iter().all(ready) {
                return None;
            }
            for path in metric_paths.values() {
                if metric_replicas(&client, path, TARGET as f64).await != Ok(i64::from(N)) {
                    return None;
                }
            }
            let log = lock(&replicas);
            settings
                .brokers
                .iter()
                .all(|b| {
                    log.replicas(&object_name(*b, true)) == Some(N)
                        && log.replicas(&object_name(*b, false)) == Some(0)
                })
                .then_some(())
        },
    )
    .await
    .context("the steady state before the soak")?;

    // Truth at the start: the backlogs as put there.
    let mut truth_start = BTreeMap::new();
    for b in &settings.brokers {
        let idle = sources.backlog(*b, false).await?;
        let loaded = sources.backlog(*b, true).await?;
        truth_start.insert(b.name(), (idle, loaded));
    }
    let ctx = Arc::new(Ctx {
        op,
        client: client.clone(),
        sources: tokio::sync::Mutex::new(sources),
        down: down.clone(),
        start: Instant::now(),
    });
    let initial: BTreeMap<Broker, usize> = settings
        .brokers
        .iter()
        .map(|b| (*b, flapper::connections_to(&ctx.op, *b).unwrap_or(0)))
        .collect();
    say(&format!(
        "steady state; soak of {} s, {} flaps per broker, seed {}; connections {initial:?}",
        settings.seconds, settings.cycles, settings.seed
    ));

    let mut rng = Rng(settings.seed);
    let mut tasks = Vec::new();
    let mut plans = BTreeMap::new();
    for b in BROKERS {
        // Every broker draws its schedule, so a subset keeps the others' seeds' schedules.
        let plan = flaps(&settings.bounds, &mut rng);
        if settings.brokers.contains(&b) {
            plans.insert(b, plan.clone());
            let path = metric_paths.get(&b).cloned().unwrap_or_default();
            tasks.push((b, tokio::spawn(flapper::run(ctx.clone(), b, plan, path))));
        }
    }
    let mut runs = BTreeMap::new();
    let mut errors = Vec::new();
    for (b, task) in tasks {
        tokio::select! {
            joined = task => match joined {
                Ok((r, err)) => {
                    runs.insert(b, r);
                    errors.extend(err);
                }
                Err(e) => errors.push(format!("{}: the flapper ended: {e}", b.name())),
            },
            _ = tokio::signal::ctrl_c() => bail!("interrupted (every broker is started again)"),
        }
    }
    let soak_end = Instant::now();
    say("flaps done; waiting for late changes");
    tokio::time::sleep(TAIL).await;
    let finals: BTreeMap<Broker, usize> = settings
        .brokers
        .iter()
        .map(|b| (*b, flapper::connections_to(&ctx.op, *b).unwrap_or(0)))
        .collect();
    let mut truth_end = BTreeMap::new();
    for b in &settings.brokers {
        let sources = ctx.sources.lock().await;
        let idle = sources.backlog(*b, false).await.ok();
        let loaded = sources.backlog(*b, true).await.ok();
        truth_end.insert(b.name(), (idle, loaded));
    }
    let changes = lock(&replicas).changes.clone();
    watch_task.abort();
    ebb_tests::adapter::unregister(&client).await;
    drop(apiservice);
    ctx.sources.lock().await.cleanup().await;
    let log_path = std::env::temp_dir()
        .join("ebb-bench-logs")
        .join(format!("{ns}.log"));
    let input = report::Input {
        settings: &settings,
        start: ctx.start,
        soak_seconds: (soak_end - ctx.start).as_secs_f64(),
        plans,
        runs,
        changes,
        initial,
        finals,
        truth_start,
        truth_end,
        errors,
        commit: ebb_commit(),
        operator_log: log_path.display().to_string(),
    };
    report::write(input)?;
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.op.stop().await;
    }
    let _ = ns_handle.delete().await;
    Ok(())
}
