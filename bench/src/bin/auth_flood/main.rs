//! Scenario 7: a TokenReview flood on the metrics adapter (issue 15's fault suite).
//!
//! The real operator (release `ebb`, `EBB_BIN`) leads with a short Lease (`--lease-duration 6`:
//! renewals every 1.2 s, stepping down after 4 s without one) and serves its embedded adapter,
//! registered as the cluster's external-metrics APIService (under the harness's APIService lock).
//! It scales a `reader` ScaledObject (metrics-api, depth 12, target 5: active, its HPA reads the
//! metric) and a few `idle-N` objects at zero (metrics-api, `pollingInterval: 1`).
//!
//! Then, straight at the adapter's port, 1,000 GETs a second with garbage bearer tokens (a new
//! token each, so no cache answers) over TLS + HTTP/2: first from 20 loopback source addresses
//! (one connection each, 50/s each: the global review budget is what holds), then from one
//! address (its per-source share is what holds). Meanwhile, and in a baseline before:
//! - the HPA's read of the `reader` metric through the API server's aggregation path, as the HPA
//!   controller's user (impersonated), 10 a second: p50/p99 and failures (target p99 < 50 ms);
//! - the Lease, read every 200 ms: renewals, the longest gap, the holder (and the operator's log
//!   for "stepping down");
//! - activation: an `idle-N` source turns active and the time to its Deployment reading 1
//!   replica is taken (bound: its pollingInterval + 1 s);
//! - the flood's answers (401/429/503) and the reviews that reached the API server: the
//!   operator's `ebb_kube_requests_total` for tokenreviews and subjectaccessreviews, and the
//!   API server's `apiserver_request_total` for tokenreviews (every client's, as a cross-check).
//!
//! `EBB_BENCH_RATE` (1000), `EBB_BENCH_SECONDS` (flood from many sources, 150: longer than the
//! 2-minute lifetime of a cached authorization, so one refresh happens under the flood),
//! `EBB_BENCH_SINGLE_SECONDS` (flood from one source, 40; 0 skips it), `EBB_BENCH_SOURCES` (20),
//! `EBB_BENCH_BASELINE_SECONDS` (20).

mod flood;
mod probes;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use ebb_bench::operator_under_test::{OperatorUnderTest, ProcessUsage, Scrape};
use ebb_bench::{quantile_ms, write_result};
use ebb_crds::ScaledObject;
use ebb_tests::objects::deployment;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds, wait_for};
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use flood::{Target, loopback_sources};
use probes::{FirstUp, lease_report, reads_report};

/// The Lease's term: short, so that a missed renewal would show.
const LEASE_SECONDS: u64 = 6;
/// The metric the `reader` object's HPA reads.
const METRIC: &str = "s0-metrics-api-queue-depth";
/// The idle objects' polling interval; activation is bounded by it plus [`ACTIVATION_SLACK`].
const IDLE_POLLING_SECONDS: u64 = 1;
/// What activation may take beyond one polling interval (the poll, the /scale write, the watch).
const ACTIVATION_SLACK: Duration = Duration::from_secs(1);
/// Target for the HPA's reads under the flood.
const READ_P99_TARGET_MS: f64 = 50.0;
/// The adapter's pool for direct clients (`AuthLimits::default().direct`), which the flood
/// should be held to: every flood request is a direct client's.
fn direct_pool() -> ebb_metrics_adapter::PoolLimits {
    ebb_metrics_adapter::AuthLimits::default().direct
}

/// A progress line on stderr, with the wall-clock time (to line up with the operator's log).
fn say(what: &str) {
    eprintln!("{} {what}", jiff::Timestamp::now());
}

/// One phase of the run and what it measured.
struct Phase {
    name: &'static str,
    start: Instant,
    end: Instant,
    flood: Option<Value>,
    activations: Vec<Option<Duration>>,
    before: Scrape,
    after: Scrape,
    apiserver_before: f64,
    apiserver_after: f64,
    /// CPU seconds used in the phase by the operator and by this process (the flood generator).
    cpu_operator: f64,
    cpu_generator: f64,
}

impl Phase {
    fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }

    /// Reviews the operator sent in the phase, per second: `(tokenreviews, subjectaccessreviews)`.
    fn reviews_per_second(&self) -> (f64, f64, f64, f64) {
        let count = |s: &Scrape, resource: &str| {
            s.sum("ebb_kube_requests_total", |l| {
                l.get("resource").map(String::as_str) == Some(resource)
            })
        };
        let tokens = count(&self.after, "tokenreviews") - count(&self.before, "tokenreviews");
        let access = count(&self.after, "subjectaccessreviews") - count(&self.before, "subjectaccessreviews");
        (tokens, tokens / self.seconds(), access, access / self.seconds())
    }
}

/// The API server's own count of TokenReview requests (every client's).
async fn apiserver_tokenreviews(client: &Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new());
    let Ok(request) = request else { return f64::NAN };
    match client.request_text(request).await {
        Ok(text) => Scrape::parse(&text).sum("apiserver_request_total", |l| {
            l.get("resource").map(String::as_str) == Some("tokenreviews")
        }),
        Err(_) => f64::NAN,
    }
}

/// A Deployment at 0 and its ScaledObject on its own metrics-api source (`depth`).
async fn object(
    client: &Client,
    ns: &str,
    name: &str,
    depth: i64,
    extra: Value,
) -> anyhow::Result<MetricSource> {
    let source = MetricSource::start(depth).await;
    deployment(client, ns, name, 0).await?;
    let mut spec = json!({
        "scaleTargetRef": {"name": name}, "maxReplicaCount": 5,
        "triggers": [{"type": "metrics-api", "metadata": {
            "url": source.url, "valueLocation": "queue.depth", "targetValue": "5"}}]
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name}, "spec": spec}))?;
    let api: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    // A CRD created moments ago may answer 503 for a little while.
    wait_for("ScaledObject created", Duration::from_secs(30), || async {
        api.create(&PostParams::default(), &so).await.ok().map(|_| ())
    })
    .await?;
    Ok(source)
}

fn ready(so: &ScaledObject) -> bool {
    so.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Turns idle object `name`'s source active and waits (up to 15 s) for its Deployment to read
/// 1 replica; the time from just before the change.
async fn activate(source: &MetricSource, name: &str, up: &FirstUp) -> Option<Duration> {
    let t0 = Instant::now();
    source.set_depth(3);
    let deadline = t0 + Duration::from_secs(15);
    while Instant::now() < deadline {
        let first = up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .and_then(|(_, first)| *first);
        if let Some(t1) = first {
            return Some(t1.saturating_duration_since(t0));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

struct Run {
    env: TestEnv,
    ns: String,
    op: OperatorUnderTest,
    idle: Vec<(String, MetricSource)>,
    next_idle: usize,
    up: FirstUp,
    target: Target,
    rate: f64,
    seed: u64,
}

impl Run {
    /// Runs one phase of `length`: a flood from `sources` (none: the baseline) and
    /// `activations` idle objects turned active at even intervals within it.
    async fn phase(
        &mut self,
        name: &'static str,
        length: Duration,
        sources: &[std::net::Ipv4Addr],
        activations: usize,
    ) -> anyhow::Result<Phase> {
        say(&format!(
            "[{name}] {} s, {} flood sources",
            length.as_secs(),
            sources.len()
        ));
        let before = self.op.metrics().await.unwrap_or_default();
        let apiserver_before = apiserver_tokenreviews(&self.env.client).await;
        let cpu = |op: &OperatorUnderTest| {
            let own = ProcessUsage::of(std::process::id()).map(|u| u.cpu.as_secs_f64());
            let op = op.usage().map(|u| u.cpu.as_secs_f64());
            (op.unwrap_or(f64::NAN), own.unwrap_or(f64::NAN))
        };
        let cpu_before = cpu(&self.op);
        let start = Instant::now();
        let flood = (!sources.is_empty()).then(|| {
            let (target, sources, rate) = (self.target.clone(), sources.to_vec(), self.rate);
            self.seed = self.seed.wrapping_add(1);
            let seed = self.seed;
            tokio::spawn(async move { flood::flood(target, &sources, rate, length, seed).await })
        });
        let mut results = Vec::new();
        let step = length / (activations as u32 + 1);
        for k in 0..activations {
            tokio::time::sleep_until((start + step * (k as u32 + 1)).into()).await;
            let Some((idle_name, source)) = self.idle.get(self.next_idle) else {
                break;
            };
            self.next_idle += 1;
            let took = activate(source, idle_name, &self.up).await;
            say(&format!("[{name}] {idle_name} activated in {took:?}"));
            results.push(took);
        }
        tokio::time::sleep_until((start + length).into()).await;
        let flood = match flood {
            Some(task) => {
                let stats = task.await.context("flood task")?;
                Some(stats.report(length.as_secs_f64()))
            }
            None => None,
        };
        let end = Instant::now();
        // The operator may be gone (it exits when it loses the Lease): the report says so.
        let after = self.op.metrics().await.unwrap_or_default();
        let apiserver_after = apiserver_tokenreviews(&self.env.client).await;
        let cpu_after = cpu(&self.op);
        Ok(Phase {
            cpu_operator: cpu_after.0 - cpu_before.0,
            cpu_generator: cpu_after.1 - cpu_before.1,
            name,
            start,
            end,
            flood,
            activations: results,
            before,
            after,
            apiserver_before,
            apiserver_after,
        })
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rate = ebb_bench::env_number("EBB_BENCH_RATE", 1000) as f64;
    let multi_seconds = ebb_bench::env_number("EBB_BENCH_SECONDS", 150);
    let single_seconds = ebb_bench::env_number("EBB_BENCH_SINGLE_SECONDS", 40);
    let source_count = ebb_bench::env_number("EBB_BENCH_SOURCES", 20).clamp(1, 200) as u8;
    let baseline_seconds = ebb_bench::env_number("EBB_BENCH_BASELINE_SECONDS", 20);
    let read_rate = 10.0;

    let env = TestEnv::load().await?;
    let client = env.client.clone();
    install_crds(&client).await?;
    let ns = env.namespace("bench-flood").await?.name;
    let kubeconfig = env.var("EBB_KUBECONFIG")?.to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let lease = LEASE_SECONDS.to_string();
    let op = OperatorUnderTest::start(
        &kubeconfig,
        &ns,
        &["--metrics-adapter-addr", &addr, "--lease-duration", &lease],
    )
    .await?;
    let (up, deployments) = probes::watch_deployments(client.clone(), &ns);
    // The Lease is watched from the start: a renewal missed while setting up counts too.
    let setup_start = Instant::now();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (lease_log, lease_task) = probes::watch_lease(client.clone(), &ns, "ebb-operator", stop.clone());
    say("the operator leads; creating the objects");

    // The object whose HPA reads a metric, and the idle ones.
    let _reader = object(&client, &ns, "reader", 12, json!({})).await?;
    let activations = [2usize, 5, if single_seconds > 0 { 2 } else { 0 }];
    let mut idle = Vec::new();
    for i in 0..activations.iter().sum::<usize>() {
        let name = format!("idle-{i}");
        let extra = json!({"pollingInterval": IDLE_POLLING_SECONDS, "cooldownPeriod": 600});
        idle.push((name.clone(), object(&client, &ns, &name, 0, extra).await?));
    }
    let sos: Api<ScaledObject> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "every ScaledObject Ready, reader active",
        Duration::from_secs(120),
        || async {
            let list = sos.list(&ListParams::default()).await.ok()?;
            let up = up.lock().ok()?;
            let reader_up = up.get("reader").is_some_and(|(r, _)| *r >= 1);
            let idle_zero = idle.iter().all(|(n, _)| up.get(n).is_some_and(|(r, _)| *r == 0));
            (list.items.len() == idle.len() + 1 && list.items.iter().all(ready) && reader_up && idle_zero)
                .then_some(())
        },
    )
    .await?;

    // The APIService is the cluster's one: held only while measuring.
    say("objects Ready; waiting for the APIService lock");
    let lock = ebb_tests::adapter::lock().await;
    ebb_tests::adapter::wait_until_free(&client).await;
    ebb_tests::adapter::register(&client, &ns, port).await?;
    say("APIService registered and Available");
    let hpa = probes::hpa_client(&kubeconfig).await?;
    let path = ebb_tests::metrics_api::metric_path(&ns, "reader", METRIC);
    wait_for(
        "the reader's metric through the aggregator",
        Duration::from_secs(60),
        || async { ebb_tests::metrics_api::read_metric(&hpa, &path).await.ok() },
    )
    .await?;
    let (reads, reads_task) = probes::steady_reads(hpa.clone(), path.clone(), read_rate, stop);

    let mut run = Run {
        env,
        ns: ns.clone(),
        op,
        idle,
        next_idle: 0,
        up: up.clone(),
        target: Target {
            addr: addr.parse()?,
            path: path.clone(),
        },
        rate,
        seed: u64::from(std::process::id()) << 20 ^ jiff::Timestamp::now().as_millisecond() as u64,
    };
    let setup_end = Instant::now();
    let mut phases = Vec::new();
    phases.push(
        run.phase(
            "baseline",
            Duration::from_secs(baseline_seconds),
            &[],
            activations[0],
        )
        .await?,
    );
    let many = loopback_sources(10, source_count);
    phases.push(
        run.phase(
            "flood_many_sources",
            Duration::from_secs(multi_seconds),
            &many,
            activations[1],
        )
        .await?,
    );
    if single_seconds > 0 {
        let one = loopback_sources(250, 1);
        phases.push(
            run.phase(
                "flood_one_source",
                Duration::from_secs(single_seconds),
                &one,
                activations[2],
            )
            .await?,
        );
    }
    let _ = stop_tx.send(true);
    let _ = reads_task.await;
    let _ = lease_task.await;
    deployments.abort();

    // What the real HPA controller met in the meantime.
    let events: Api<Event> = Api::namespaced(run.env.client.clone(), &run.ns);
    let hpa_failures: Vec<String> = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("Failed")))
        .map(|e| {
            format!(
                "{} x{}: {}",
                e.reason.unwrap_or_default(),
                e.count.unwrap_or(1),
                e.message.unwrap_or_default()
            )
        })
        .collect();
    ebb_tests::adapter::unregister(&run.env.client).await;
    drop(lock);
    let still_leader = run
        .op
        .metrics()
        .await
        .ok()
        .and_then(|m| m.value("ebb_is_leader", &[]))
        == Some(1.0);
    let log_path = std::env::temp_dir()
        .join("ebb-bench-logs")
        .join(format!("{ns}.log"));
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stepped_down = log.lines().filter(|l| l.contains("stepping down")).count();
    let renew_warnings = log.lines().filter(|l| l.contains("renewing the Lease")).count();
    run.op.stop().await;

    report(
        &phases,
        &reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        &lease_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        (setup_start, setup_end),
        Params {
            rate,
            sources: source_count,
            read_rate,
            still_leader,
            stepped_down,
            renew_warnings,
            hpa_failures,
        },
    )?;
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(run.env.client.clone());
    let _ = ns_api.delete(&ns, &Default::default()).await;
    Ok(())
}

/// The run's settings and end-of-run observations, for the report.
struct Params {
    rate: f64,
    sources: u8,
    read_rate: f64,
    still_leader: bool,
    stepped_down: usize,
    renew_warnings: usize,
    hpa_failures: Vec<String>,
}

fn report(
    phases: &[Phase],
    reads: &[probes::Read],
    lease: &[probes::LeaseSeen],
    (setup_start, setup_end): (Instant, Instant),
    p: Params,
) -> anyhow::Result<()> {
    let mut sections = serde_json::Map::new();
    let mut misses: Vec<String> = Vec::new();
    let (setup_lease, setup_kept) = lease_report(lease, "bench", setup_start, setup_end);
    if !setup_kept {
        misses.push(format!(
            "setup (no flood yet): the Lease was not kept ({setup_lease})"
        ));
    }
    sections.insert(
        "setup".to_owned(),
        json!({"seconds": (setup_end - setup_start).as_secs(), "lease": setup_lease}),
    );
    let mut summary = Vec::new();
    let bound = Duration::from_secs(IDLE_POLLING_SECONDS) + ACTIVATION_SLACK;
    for phase in phases {
        let flooded = phase.flood.is_some();
        let (read_section, p99) = reads_report(reads, phase.start, phase.end);
        let (lease_section, kept) = lease_report(lease, "bench", phase.start, phase.end);
        let (tokens, tokens_rate, access, access_rate) = phase.reviews_per_second();
        let mut acts: Vec<Duration> = phase.activations.iter().flatten().copied().collect();
        acts.sort();
        let never = phase.activations.iter().filter(|a| a.is_none()).count();
        let failed_reads =
            read_section["reads"].as_u64().unwrap_or(0) - read_section["ok"].as_u64().unwrap_or(0);
        let apiserver = phase.apiserver_after - phase.apiserver_before;
        let name = phase.name;
        if flooded {
            if p99.is_none_or(|p| p >= READ_P99_TARGET_MS) {
                misses.push(format!(
                    "{name}: legit read p99 {:.1} ms",
                    p99.unwrap_or(f64::NAN)
                ));
            }
            if failed_reads > 0 {
                misses.push(format!(
                    "{name}: {failed_reads} legit reads failed ({})",
                    read_section["failed_by_status"]
                ));
            }
            let pool = direct_pool();
            let (qps, burst) = if name == "flood_one_source" {
                (pool.per_source_qps, f64::from(pool.per_source_burst))
            } else {
                (pool.qps, f64::from(pool.burst))
            };
            if tokens > qps * phase.seconds() + burst + 5.0 {
                misses.push(format!(
                    "{name}: {tokens} TokenReviews in {:.0} s exceed the budget",
                    phase.seconds()
                ));
            }
        }
        if !kept {
            misses.push(format!("{name}: the Lease was not kept ({lease_section})"));
        }
        if never > 0 || acts.last().is_some_and(|a| *a > bound) {
            misses.push(format!(
                "{name}: activation over {} ms or never ({never})",
                bound.as_millis()
            ));
        }
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        sections.insert(
            name.to_owned(),
            json!({
                "seconds": r1(phase.seconds()),
                "flood": phase.flood,
                "legit_reads": read_section,
                "lease": lease_section,
                "activation_ms": {"samples": phase.activations.len(), "never": never,
                                  "each": acts.iter().map(|a| r1(a.as_secs_f64() * 1000.0)).collect::<Vec<_>>(),
                                  "max": r1(quantile_ms(&acts, 1.0))},
                "reviews_sent_by_the_operator": {"tokenreviews": tokens, "tokenreviews_per_second": r1(tokens_rate),
                                                 "subjectaccessreviews": access, "subjectaccessreviews_per_second": r1(access_rate)},
                "cpu_cores_used": {"operator": r1(phase.cpu_operator / phase.seconds() * 100.0) / 100.0,
                                   "bench_and_flood_generator": r1(phase.cpu_generator / phase.seconds() * 100.0) / 100.0},
                "apiserver_tokenreviews_all_clients": apiserver,
                "apiserver_tokenreviews_per_second_all_clients": r1(apiserver / phase.seconds()),
            }),
        );
        summary.push(format!(
            "{name}: reads p50 {} / p99 {} ms ({failed_reads} failed), TokenReviews {:.0}/s, activation max {} ms, lease {}",
            read_section["p50_ms"], read_section["p99_ms"], tokens_rate, r1(quantile_ms(&acts, 1.0)),
            if kept { "kept" } else { "LOST" }
        ));
    }
    if !p.still_leader || p.stepped_down > 0 {
        misses.push(format!(
            "the operator stepped down ({} log lines) or no longer leads",
            p.stepped_down
        ));
    }
    let met = misses.is_empty();
    let summary = format!(
        "auth flood ({} req/s of garbage tokens): {}; target {}",
        p.rate,
        summary.join("; "),
        if met { "met" } else { "MISSED" }
    );
    write_result(
        "auth-flood",
        json!({
            "parameters": {
                "flood_rate_per_second": p.rate, "flood_sources_many": p.sources, "flood_sources_one": 1,
                "flood_transport": "TLS 1.3 + HTTP/2 straight to the adapter's port, one connection per loopback source address, a new random bearer token per request",
                "legit_reads": format!("{} GETs/s of the reader's external metric through the API server's aggregation path, impersonating {}", p.read_rate, probes::HPA_USER),
                "lease_duration_seconds": LEASE_SECONDS, "idle_polling_interval_seconds": IDLE_POLLING_SECONDS,
                "adapter_direct_pool": {"qps": direct_pool().qps, "burst": direct_pool().burst, "per_source_qps": direct_pool().per_source_qps, "per_source_burst": direct_pool().per_source_burst, "max_in_flight": direct_pool().max_in_flight},
                "machine_note": "2 cores shared with the API server, etcd, kube-controller-manager, the brokers, the flood generator and other agents' builds; figures from one run",
            },
            "figures": sections,
            "operator": {"still_leader_at_end": p.still_leader, "stepping_down_log_lines": p.stepped_down,
                         "renewal_warning_log_lines": p.renew_warnings},
            "hpa_controller_failure_events": p.hpa_failures,
            "target": {"legit_read_p99_ms_below": READ_P99_TARGET_MS, "legit_reads_fail": 0,
                       "lease": "kept, no step-down", "activation_within_ms": bound.as_millis() as u64,
                       "tokenreviews": "within the budget (global for many sources, per source for one)",
                       "met": met},
            "target_met": met,
            "limited_by": if met { Value::Null } else { json!(misses) },
        }),
        &summary,
    )?;
    Ok(())
}
