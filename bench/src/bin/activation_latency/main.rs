//! Scenario 1: activation latency — from the first message published to a Deployment at 0
//! replicas reading 1 on `/scale`, for every scaler ebb has (kafka, rabbitmq over AMQP, rabbitmq
//! over the management API, nats-jetstream, aws-sqs-queue, metrics-api, redis, external-push),
//! at the ScaledObject defaults (pollingInterval 30 s, minReplicaCount 0, nothing set but the
//! target and the trigger). Target: p99 under 1 s.
//!
//! The real operator (the release `ebb` binary, `EBB_BIN`; by default the `ebb` next to this
//! binary) runs against the test environment (`tests/env/testenv.sh up`). For each scaler, N
//! Deployments at 0 and N ScaledObjects are created, each on its own queue / topic / stream / URL /
//! external scaler, so each sample has its own scale loop; once all are Ready (and every
//! external-push stream is open), one message is published to each source at a moment drawn
//! uniformly at random within its own N-th of one polling interval (stratified, strata shuffled
//! over the objects), so the samples cover every phase of the poll tick. t0 is taken just before
//! the publish request is sent (conservative: the publish round trip counts), t1 when a watch on
//! the namespace's Deployments first shows `spec.replicas` ≥ 1.
//!
//! Poll-only scalers only see the message at their next `pollingInterval` tick, so they are
//! expected to miss the target; kafka's cluster client makes one batched round per second and
//! pushes activity changes to the scale loop, redis's watcher reads every list twice a second, and
//! an external-push server pushes its activity on the `StreamIsActive` stream ebb keeps open
//! (the bench runs one `ebb-external-scaler` per object, `EBB_EXTERNAL_SCALER_BIN`; by default the
//! one next to this binary: `bench/run.sh` builds it).
//!
//! One more case, [`new_leader`] (`rabbitmq-new-leader`): the first activation after the operator
//! starts or fails over, the object's message published a few seconds after the new operator
//! leads, before its first (spread) poll; the operator is restarted for each sample.
//!
//! `EBB_BENCH_SAMPLES` (default 30) sets N, `EBB_BENCH_SCALERS` (comma-separated names, the
//! scalers' and `rabbitmq-new-leader`) picks the cases, `EBB_BENCH_SEED` fixes the schedule,
//! `EBB_BENCH_NEW_LEADER_SAMPLES` (default 15) sets the restarts of the new-leader case. A run of
//! some cases keeps the other cases' figures already in the result file (each section names its
//! date and command).

mod new_leader;
mod schedule;
mod sources;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ebb_bench::{quantile_ms, write_result};
use ebb_crds::ScaledObject;
use ebb_tests::objects::deployment;
use ebb_tests::operator::OperatorProcess;
use ebb_tests::{TestEnv, install_crds, wait_for};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};

use schedule::{Rng, schedule};
use sources::{
    KINDS, Kind, Source, external_push_sources, kafka_sources, metrics_sources, nats_sources, rabbit_sources,
    redis_sources, sqs_sources,
};

/// The default `pollingInterval`: the publishes are spread over one.
const POLLING_INTERVAL: Duration = Duration::from_secs(30);
/// The target: p99 below this.
const TARGET: Duration = Duration::from_secs(1);
/// How long a sample may take before it counts as never activated.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);

/// What the Deployment watch saw of one Deployment.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    replicas: i32,
    first_up: Option<Instant>,
}

type SeenMap = Arc<Mutex<HashMap<String, Seen>>>;

fn seen_lock(seen: &SeenMap) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches the namespace's Deployments; records when each first reads ≥ 1 replica.
fn watch_deployments(client: &Client, ns: &str, seen: SeenMap) -> tokio::task::JoinHandle<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let Ok(d) = event else { continue };
            let Some(name) = d.metadata.name else { continue };
            // `spec.replicas` is omitted while 0 on /scale; ours always set it.
            let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
            let mut seen = seen_lock(&seen);
            let entry = seen.entry(name).or_default();
            entry.replicas = replicas;
            if replicas >= 1 && entry.first_up.is_none() {
                entry.first_up = Some(now);
            }
        }
    })
}

/// A condition's `(status, message)` on a ScaledObject.
fn condition(so: &ScaledObject, type_: &str) -> Option<(String, String)> {
    let c = so.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.message.clone().unwrap_or_default()))
}

/// Latency figures of sorted samples, in milliseconds.
fn figures(sorted: &[Duration]) -> Value {
    let mean = if sorted.is_empty() {
        f64::NAN
    } else {
        sorted.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / sorted.len() as f64
    };
    let r = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "count": sorted.len(),
        "min_ms": r(quantile_ms(sorted, 0.0)), "p50_ms": r(quantile_ms(sorted, 0.5)),
        "p90_ms": r(quantile_ms(sorted, 0.9)), "p99_ms": r(quantile_ms(sorted, 0.99)),
        "max_ms": r(quantile_ms(sorted, 1.0)), "mean_ms": r(mean),
    })
}

/// The trigger as written, with credentials in URLs masked, for the result file.
fn shown_trigger(trigger: &Value) -> Value {
    let mut t = trigger.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        for v in meta.values_mut() {
            if let Some(s) = v.as_str() {
                *v = json!(ebb_scalers::params::mask_userinfo(s));
            }
        }
    }
    t
}

struct Bench {
    env: TestEnv,
    ns: String,
    seen: SeenMap,
    samples: usize,
    rng: Rng,
}

impl Bench {
    fn client(&self) -> Client {
        self.env.client.clone()
    }

    /// Measures one scaler; the section of the result file, and its p99 (ms) if every sample
    /// activated.
    async fn measure(&mut self, kind: Kind) -> anyhow::Result<(Value, Option<f64>)> {
        let n = self.samples;
        let client = self.client();
        let ns = self.ns.clone();
        eprintln!("[{}] preparing {n} sources", kind.name());
        let sources = match kind {
            Kind::Kafka => kafka_sources(&self.env, n).await?,
            Kind::Rabbitmq => rabbit_sources(&self.env, n, false).await?,
            Kind::RabbitmqManagement => rabbit_sources(&self.env, n, true).await?,
            Kind::NatsJetStream => nats_sources(&self.env, n).await?,
            Kind::AwsSqsQueue => sqs_sources(&self.env, &client, &ns, n).await?,
            Kind::MetricsApi => metrics_sources(n).await,
            Kind::Redis => redis_sources(&self.env, n).await?,
            Kind::ExternalPush => external_push_sources(n).await?,
        };
        let names: Vec<String> = (0..n).map(|i| format!("{}-{i}", kind.short())).collect();
        let so_api: Api<ScaledObject> = Api::namespaced(client.clone(), &ns);
        for (name, source) in names.iter().zip(&sources) {
            deployment(&client, &ns, name, 0).await?;
            let so: ScaledObject = serde_json::from_value(json!({
                "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name},
                "spec": {"scaleTargetRef": {"name": name}, "triggers": [source.trigger]}}))?;
            // A CRD created moments ago may answer 503 for a little while.
            wait_for("ScaledObject created", Duration::from_secs(30), || async {
                so_api.create(&PostParams::default(), &so).await.ok().map(|_| ())
            })
            .await?;
        }
        let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
        let ready = wait_for(
            "every ScaledObject Ready at 0",
            Duration::from_secs(120),
            || async {
                let list = so_api.list(&ListParams::default()).await.ok()?;
                let ready = list
                    .items
                    .iter()
                    .filter(|so| wanted.contains(so.metadata.name.as_deref().unwrap_or("")))
                    .filter(|so| condition(so, "Ready").is_some_and(|(s, _)| s == "True"))
                    .count();
                let seen = seen_lock(&self.seen);
                let at_zero = names
                    .iter()
                    .filter(|n| seen.get(*n).is_some_and(|s| s.replicas == 0))
                    .count();
                (ready == n && at_zero == n).then_some(())
            },
        )
        .await;
        if let Err(e) = ready {
            let list = so_api.list(&ListParams::default()).await?;
            let problem = list
                .items
                .iter()
                .filter(|so| wanted.contains(so.metadata.name.as_deref().unwrap_or("")))
                .find_map(|so| condition(so, "Ready").filter(|(s, _)| s != "True"))
                .map(|(s, m)| format!("Ready={s}: {m}"))
                .unwrap_or_default();
            return Err(anyhow!("{e} ({problem})"));
        }
        for source in &sources {
            source.publisher.ready().await?;
        }

        eprintln!(
            "[{}] all Ready at 0; publishing over {} s",
            kind.name(),
            POLLING_INTERVAL.as_secs()
        );
        let offsets = schedule(n, POLLING_INTERVAL, &mut self.rng);
        let start = tokio::time::Instant::now();
        let sources: Vec<Arc<Source>> = sources.into_iter().map(Arc::new).collect();
        let publishes = sources.iter().zip(&offsets).map(|(source, offset)| {
            let source = source.clone();
            let at = start + *offset;
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let t0 = Instant::now();
                let result = source.publisher.publish().await;
                (t0, t0.elapsed(), result.map_err(|e| e.to_string()))
            })
        });
        let published: Vec<_> = futures::future::join_all(publishes)
            .await
            .into_iter()
            .map(|r| {
                r.map_err(|e| e.to_string())
                    .and_then(|(t0, took, r)| r.map(|()| (t0, took)))
            })
            .collect();
        let deadline = Instant::now() + GIVE_UP_AFTER;
        while Instant::now() < deadline {
            let pending = {
                let seen = seen_lock(&self.seen);
                names
                    .iter()
                    .zip(&published)
                    .filter(|(n, p)| p.is_ok() && seen.get(*n).is_none_or(|s| s.first_up.is_none()))
                    .count()
            };
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let seen = seen_lock(&self.seen).clone();
        let mut latencies = Vec::new();
        let mut publish_times = Vec::new();
        let (mut never, mut early, mut failed) = (0usize, 0usize, Vec::new());
        for (name, p) in names.iter().zip(&published) {
            match p {
                Err(e) => failed.push(e.clone()),
                Ok((t0, took)) => {
                    publish_times.push(*took);
                    match seen.get(name).and_then(|s| s.first_up) {
                        None => never += 1,
                        Some(t1) if t1 < *t0 => early += 1,
                        Some(t1) => latencies.push(t1 - *t0),
                    }
                }
            }
        }
        latencies.sort();
        publish_times.sort();
        let p99 = quantile_ms(&latencies, 0.99);
        let complete = never == 0 && early == 0 && failed.is_empty() && !latencies.is_empty();
        let met = complete && p99 < TARGET.as_secs_f64() * 1000.0;
        let limited_by = if met {
            Value::Null
        } else if !complete {
            json!(format!(
                "{never} samples never activated within {} s, {early} activated before their message, {} publishes failed{}",
                GIVE_UP_AFTER.as_secs(),
                failed.len(),
                failed
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ))
        } else if !kind.pushes() {
            json!(format!(
                "poll-only scaler: activation waits for the next pollingInterval tick (default {} s){}",
                POLLING_INTERVAL.as_secs(),
                if kind == Kind::RabbitmqManagement {
                    ", plus RabbitMQ's statistics refresh (5 s)"
                } else {
                    ""
                }
            ))
        } else {
            json!(kind.push_path())
        };
        let mut section = figures(&latencies);
        section["samples"] = json!(n);
        section["never_activated"] = json!(never);
        section["activated_before_publish"] = json!(early);
        section["publish_failures"] = json!(failed.len());
        section["publish_ms"] = json!({
            "p50": (quantile_ms(&publish_times, 0.5) * 10.0).round() / 10.0,
            "max": (quantile_ms(&publish_times, 1.0) * 10.0).round() / 10.0});
        section["route"] = json!(kind.route());
        section["trigger_example"] = shown_trigger(&sources[0].trigger);
        section["pushes_activity"] = json!(kind.pushes());
        section["target_met"] = json!(met);
        section["limited_by"] = limited_by;
        eprintln!(
            "[{}] p50 {:.0} ms, p99 {:.0} ms, {} of {n} activated",
            kind.name(),
            quantile_ms(&latencies, 0.5),
            p99,
            latencies.len()
        );

        // Quiet the phase down: its ScaledObjects go (the operator drops their loops and
        // clients), then their sources.
        for name in &names {
            let _ = so_api.delete(name, &DeleteParams::default()).await;
        }
        ebb_bench::wait_scaled_objects_gone(&so_api, &wanted).await;
        for s in &sources {
            s.publisher.cleanup().await;
        }
        Ok((section, complete.then_some(p99)))
    }
}

/// The command that re-runs this measurement (the environment variables that were set).
fn rerun_command() -> String {
    let vars: Vec<String> = [
        "EBB_BENCH_SAMPLES",
        "EBB_BENCH_SCALERS",
        "EBB_BENCH_SEED",
        "EBB_BENCH_NEW_LEADER_SAMPLES",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
    .collect();
    let mut command = vars.join(" ");
    if !command.is_empty() {
        command.push(' ');
    }
    command.push_str("bench/run.sh activation_latency");
    command
}

/// Adds to `sections` the sections of the existing result file that this run did not measure;
/// their names and whether each met its target.
fn keep_previous_sections(sections: &mut BTreeMap<String, Value>) -> Vec<(String, bool)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/activation-latency.json");
    let Some(previous) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
    else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    if let Some(figures) = previous["figures"].as_object() {
        for (name, section) in figures {
            if !sections.contains_key(name) {
                kept.push((name.clone(), section["target_met"].as_bool().unwrap_or(false)));
                let mut section = section.clone();
                if section.get("measured_at").is_none() {
                    section["measured_at"] = previous["date"].clone();
                    section["command"] = json!("bench/run.sh activation_latency");
                }
                sections.insert(name.clone(), section);
            }
        }
    }
    kept
}

/// Runs this binary again with `EBB_BIN` pointing at the `ebb` next to it, and
/// `EBB_EXTERNAL_SCALER_BIN` at the `ebb-external-scaler` next to it if there is one, when unset
/// (the harness' default paths are those of test binaries).
fn ensure_ebb_bin() -> anyhow::Result<Option<i32>> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(&exe);
    let mut set = false;
    if std::env::var_os("EBB_BIN").is_none() {
        let ebb = exe.with_file_name("ebb");
        if !ebb.exists() {
            return Err(anyhow!(
                "{} not found: run `cargo build --release --bin ebb` first, or set EBB_BIN",
                ebb.display()
            ));
        }
        command.env("EBB_BIN", ebb);
        set = true;
    }
    let scaler = exe.with_file_name("ebb-external-scaler");
    if std::env::var_os("EBB_EXTERNAL_SCALER_BIN").is_none() && scaler.exists() {
        command.env("EBB_EXTERNAL_SCALER_BIN", scaler);
        set = true;
    }
    if !set {
        return Ok(None);
    }
    let status = command.args(std::env::args_os().skip(1)).status()?;
    Ok(Some(status.code().unwrap_or(1)))
}

fn main() -> anyhow::Result<()> {
    if let Some(code) = ensure_ebb_bin()? {
        std::process::exit(code);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let samples = std::env::var("EBB_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30usize)
        .max(1);
    let (kinds, with_new_leader): (Vec<Kind>, bool) = match std::env::var("EBB_BENCH_SCALERS") {
        Ok(list) if !list.trim().is_empty() => {
            let mut kinds = Vec::new();
            let mut with_new_leader = false;
            for name in list.split(',').map(str::trim) {
                if name == new_leader::NAME {
                    with_new_leader = true;
                    continue;
                }
                let kind = KINDS.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
                    let known: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
                    anyhow!(
                        "unknown scaler {name:?} (known: {}, {})",
                        known.join(", "),
                        new_leader::NAME
                    )
                })?;
                kinds.push(kind);
            }
            (kinds, with_new_leader)
        }
        _ => (KINDS.to_vec(), true),
    };
    let seed = std::env::var("EBB_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        });

    let env = TestEnv::load().await?;
    install_crds(&env.client).await?;
    let ns = env.namespace("bench-activation").await?;
    let operator = if kinds.is_empty() {
        None
    } else {
        Some(OperatorProcess::start(&env, &ns.name, "bench", &[]).await?)
    };
    let seen: SeenMap = Arc::default();
    let watch = watch_deployments(&env.client, &ns.name, seen.clone());
    let mut bench = Bench {
        ns: ns.name.clone(),
        env,
        seen,
        samples,
        rng: Rng(seed),
    };

    let mut sections = BTreeMap::new();
    let mut line = Vec::new();
    let mut all_met = true;
    let mut misses = Vec::new();
    for kind in kinds {
        match bench.measure(kind).await {
            Ok((section, p99)) => {
                let met = section["target_met"].as_bool().unwrap_or(false);
                all_met &= met;
                if let Some(why) = section["limited_by"].as_str() {
                    misses.push(format!("{}: {why}", kind.name()));
                }
                line.push(match p99 {
                    Some(p99) => format!(
                        "{} {:.1} s {}",
                        kind.name(),
                        p99 / 1000.0,
                        if met { "✓" } else { "✗" }
                    ),
                    None => format!("{} incomplete ✗", kind.name()),
                });
                sections.insert(kind.name().to_string(), section);
            }
            Err(e) => {
                all_met = false;
                eprintln!("[{}] failed: {e:#}", kind.name());
                misses.push(format!("{}: not measured: {e}", kind.name()));
                line.push(format!("{} not measured ✗", kind.name()));
                sections.insert(
                    kind.name().to_string(),
                    json!({"error": e.to_string(), "target_met": false}),
                );
            }
        }
    }

    if let Some(operator) = operator {
        let _ = operator.terminate().await;
    }
    if with_new_leader {
        let n = new_leader::samples();
        let name = new_leader::NAME;
        match new_leader::measure(&bench.env, &bench.ns, &bench.seen, n, &mut bench.rng).await {
            Ok(section) => {
                let met = section["target_met"].as_bool().unwrap_or(false);
                all_met &= met;
                if let Some(why) = section["limited_by"].as_str() {
                    misses.push(format!("{name}: {why}"));
                }
                line.push(format!(
                    "{name} {:.1} s {} ({n} restarts)",
                    section["p99_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
                    if met { "✓" } else { "✗" }
                ));
                sections.insert(name.to_string(), section);
            }
            Err(e) => {
                all_met = false;
                eprintln!("[{name}] failed: {e:#}");
                misses.push(format!("{name}: not measured: {e}"));
                line.push(format!("{name} not measured ✗"));
                sections.insert(
                    name.to_string(),
                    json!({"error": e.to_string(), "target_met": false}),
                );
            }
        }
    }
    watch.abort();
    ns.delete().await?;

    // Every section says when and how it was measured; the cases not run now keep their figures.
    let command = rerun_command();
    let date = jiff::Timestamp::now().to_string();
    for section in sections.values_mut() {
        section["measured_at"] = json!(date);
        section["command"] = json!(command);
    }
    let kept = keep_previous_sections(&mut sections);
    if !kept.is_empty() {
        all_met &= kept.iter().all(|(_, met)| *met);
    }

    let summary = format!(
        "activation latency p99 ({samples} samples each, default pollingInterval 30 s; target < 1 s): {}",
        line.join(", ")
    );
    let result = json!({
        "parameters": {
            "samples_per_scaler": samples,
            "scaledobject_settings": "defaults: pollingInterval 30 s, cooldownPeriod 300 s, minReplicaCount 0 (only scaleTargetRef and the trigger set)",
            "one_object_per_sample": "each sample has its own Deployment, ScaledObject and queue/topic/stream/URL",
            "schedule": format!("each object's message at a uniformly random moment within its own 1/{samples} of {} s (stratified, strata shuffled)", POLLING_INTERVAL.as_secs()),
            "t0": "just before the publish request is sent (the publish round trip counts)",
            "t1": "first Deployment watch event with spec.replicas >= 1",
            "operator": "the release ebb binary, one process watching the bench namespace",
            "give_up_after_seconds": GIVE_UP_AFTER.as_secs(),
            "seed": seed,
        },
        "figures": sections,
        "target": {"p99_ms_below": TARGET.as_millis() as u64, "per": "scaler"},
        "target_met": all_met,
        "limited_by": if misses.is_empty() { Value::Null } else { json!(misses.join("; ")) },
        "kept_from_earlier_runs": kept.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(),
    });
    write_result("activation-latency", result, &summary)?;
    Ok(())
}
