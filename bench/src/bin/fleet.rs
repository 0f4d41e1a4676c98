//! Scenario 2: a fleet of 10,000 ScaledObjects on one operator. 9,000 have a metrics-api trigger
//! against one local HTTP source (a distinct URL each, so no two polls are shared), 1,000 a
//! kafka trigger spread over 10 topics × 10 partitions (a consumer group each, committed at the
//! log end). Every object keeps the default settings (pollingInterval 30 s) and targets a parked
//! Deployment at 0 replicas, the state of an idle fleet.
//!
//! Setup: the objects are created, then an operator started with no client-side limit creates
//! their HPAs and status (setup only). It is then stopped, and the measured operator starts with
//! default flags on the existing fleet, as after a restart. After a warm-up of one polling
//! interval (plus 15 s), over a window of `EBB_BENCH_SECONDS` (default 150 s, five poll cycles):
//! - resident memory (target under 150 MiB) and its peak since the start;
//! - CPU time per poll cycle (one pollingInterval, in which every object polls once);
//! - poll tick lateness against schedule from `ebb_poll_lateness_seconds` (target p99 under
//!   50 ms);
//! - the polls made and the API writes sent (0 expected, Lease renewals apart).
//!
//! - the scrape: `/metrics` size and the time to serve it (median of 5), and the series count.
//!
//! Then the cost of the per-object series: a second operator with `--per-object-metrics=false`
//! runs on the same fleet (same warm-up and window), and the difference in resident memory and
//! scrape size is what the per-object series cost (`EBB_BENCH_METRICS_AB=0` skips it).
//!
//! `EBB_BENCH_OBJECTS` (default 10000) and `EBB_BENCH_KAFKA_OBJECTS` (default 1000) override.

use std::time::{Duration, Instant};

use ebb_bench::bulk_objects::{
    create_deployments, create_namespace, create_scaled_objects, hpa_resource, parked_deployment,
    scaled_object, tear_down, wait_progress,
};
use ebb_bench::operator_under_test::{OperatorUnderTest, Scrape, bucket_delta, histogram_quantile};
use ebb_bench::write_result;
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds};
use serde_json::json;

const TOPICS: usize = 10;
const PARTITIONS: i32 = 10;
const POLLING_INTERVAL: Duration = Duration::from_secs(30);
const RSS_TARGET_MIB: f64 = 150.0;
const LATENESS_TARGET_MS: f64 = 50.0;

fn log(msg: &str) {
    eprintln!("[fleet] {msg}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let objects = ebb_bench::env_number("EBB_BENCH_OBJECTS", 10_000) as usize;
    let kafka_objects = (ebb_bench::env_number("EBB_BENCH_KAFKA_OBJECTS", 1000) as usize).min(objects);
    let window = Duration::from_secs(ebb_bench::env_number("EBB_BENCH_SECONDS", 150));
    let env = TestEnv::load().await?;
    let client = env.client.clone();
    install_crds(&client).await?;
    let ns = format!("bench-fleet-{}", std::process::id());
    create_namespace(&client, &ns).await?;
    let source = MetricSource::start(0).await;
    let result = run(&env, &ns, &source, objects, kafka_objects, window).await;
    log("tearing down");
    tear_down(&client, &ns).await?;
    let (figures, summary) = result?;
    write_result("fleet", figures, &summary)?;
    Ok(())
}

fn writes_per_minute(before: &Scrape, after: &Scrape, window: Duration, leases: bool) -> f64 {
    let count = |s: &Scrape| {
        s.sum("ebb_kube_requests_total", |l| {
            matches!(
                l.get("verb").map(String::as_str),
                Some("create" | "update" | "patch" | "delete")
            ) && (l.get("resource").map(String::as_str) == Some("leases")) == leases
        })
    };
    (count(after) - count(before)) * 60.0 / window.as_secs_f64() + 0.0
}

async fn run(
    env: &TestEnv,
    ns: &str,
    source: &MetricSource,
    objects: usize,
    kafka_objects: usize,
    window: Duration,
) -> anyhow::Result<(serde_json::Value, String)> {
    let client = &env.client;
    let kubeconfig = env.var("EBB_KUBECONFIG")?;
    let bootstrap = env.var("EBB_KAFKA_BOOTSTRAP")?.to_string();
    let hpa = hpa_resource(env.kube_flavor() != "plain-1.20.2");

    let t = Instant::now();
    let mut admin = KafkaAdmin::connect(&bootstrap).await?;
    let run = unique_name("ebb-fleet");
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("{run}-t{i}")).collect();
    for topic in &topics {
        admin.create_topic(topic, PARTITIONS).await?;
        admin.produce(topic, PARTITIONS, 50).await?;
    }
    let mut triggers = Vec::with_capacity(objects);
    for i in 0..objects {
        let name = format!("w-{i:05}");
        let trigger = if i < kafka_objects {
            let group = format!("{run}-g{i}");
            let topic = &topics[i % TOPICS];
            admin.commit_to_end(&group, topic, PARTITIONS).await?;
            json!({"type": "kafka", "metadata": {
                "bootstrapServers": bootstrap, "consumerGroup": group, "topic": topic, "lagThreshold": "10"}})
        } else {
            json!({"type": "metrics-api", "metadata": {
                "url": format!("{}?object={name}", source.url),
                "valueLocation": "queue.depth", "targetValue": "5"}})
        };
        triggers.push((name, trigger));
    }
    log(&format!(
        "kafka ready in {:.0?}; creating {objects} Deployments",
        t.elapsed()
    ));
    create_deployments(
        client,
        ns,
        triggers.iter().map(|(n, _)| parked_deployment(n)).collect(),
    )
    .await?;
    log(&format!("creating {objects} ScaledObjects ({:.0?})", t.elapsed()));
    create_scaled_objects(
        client,
        ns,
        triggers
            .into_iter()
            .map(|(n, tr)| scaled_object(&n, tr))
            .collect(),
    )
    .await?;

    // Setup: HPAs and status for the whole fleet, without a client-side limit.
    log(&format!("setup operator ({:.0?})", t.elapsed()));
    let setup = OperatorUnderTest::start(kubeconfig, ns, &["--kube-api-qps", "0"]).await?;
    let ready = wait_progress(
        client,
        ns,
        &hpa,
        Duration::from_secs(5),
        Duration::from_secs(1800),
        |p| p.ready >= objects && p.hpas >= objects,
    )
    .await?;
    setup.stop().await;
    let setup_seconds = t.elapsed().as_secs_f64();
    log(&format!(
        "fleet ready ({setup_seconds:.0} s): {ready:?}; starting the measured operator"
    ));

    // The measured operator: default flags, on the existing fleet.
    let started = Instant::now();
    let operator = OperatorUnderTest::start(kubeconfig, ns, &[]).await?;
    let leader_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(POLLING_INTERVAL + Duration::from_secs(15)).await;
    let before = operator.metrics().await?;
    let usage_before = operator.usage()?;
    let requests_before = source.requests();
    log(&format!("measuring for {window:?}"));
    let mut rss_max = usage_before.rss_bytes;
    let window_end = Instant::now() + window;
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_max = rss_max.max(operator.usage()?.rss_bytes);
    }
    let after = operator.metrics().await?;
    let usage_after = operator.usage()?;
    let source_requests = source.requests() - requests_before;
    let scrape = scrape_cost(&operator).await?;
    operator.stop().await;
    let without = if ebb_bench::env_number("EBB_BENCH_METRICS_AB", 1) != 0 {
        log("per-object metrics off: a second operator on the same fleet");
        Some(without_per_object(kubeconfig, ns, window).await?)
    } else {
        None
    };

    let mib = |b: u64| b as f64 / 1048576.0;
    let cycles = window.as_secs_f64() / POLLING_INTERVAL.as_secs_f64();
    let cpu_seconds = (usage_after.cpu - usage_before.cpu).as_secs_f64();
    let cpu_per_cycle_ms = cpu_seconds * 1000.0 / cycles;
    let lateness = bucket_delta(
        &before.buckets("ebb_poll_lateness_seconds"),
        &after.buckets("ebb_poll_lateness_seconds"),
    );
    let ticks = lateness.last().map_or(0.0, |b| b.1);
    let q = |p: f64| histogram_quantile(&lateness, p).map(|(v, bound)| (v * 1000.0, bound * 1000.0));
    let (p50, p50_bound) = q(0.5).unwrap_or((f64::NAN, f64::NAN));
    let (p99, p99_bound) = q(0.99).unwrap_or((f64::NAN, f64::NAN));
    let polls = |s: &Scrape, result: &str| {
        s.sum("ebb_polls_total", |l| {
            l.get("result").map(String::as_str) == Some(result)
        })
    };
    let polls_ok = polls(&after, "ok") - polls(&before, "ok");
    let polls_failed = polls(&after, "error") - polls(&before, "error");
    let object_writes = writes_per_minute(&before, &after, window, false);
    let lease_writes = writes_per_minute(&before, &after, window, true);
    let rss = mib(usage_after.rss_bytes);
    let rss_met = mib(rss_max) < RSS_TARGET_MIB;
    // The bucket bound is what can be claimed: the true p99 is at most that.
    let lateness_met = p99_bound <= LATENESS_TARGET_MS;
    let mark = |met: bool| if met { "✓" } else { "✗" };
    let summary = format!(
        "fleet of {objects} ScaledObjects ({kafka_objects} kafka): RSS {rss:.0} MiB (max {:.0}) {} (target < 150), \
         CPU {cpu_per_cycle_ms:.0} ms per 30 s poll cycle ({:.1} % of a core), tick lateness p50 {p50:.1} ms, \
         p99 {p99:.1} ms (≤ {p99_bound:.0}) {} (target < 50 ms), {object_writes:.0} object writes/min, \
         /metrics {} KiB in {:.0} ms",
        mib(rss_max),
        mark(rss_met),
        cpu_seconds * 100.0 / window.as_secs_f64(),
        mark(lateness_met),
        scrape["bytes"].as_u64().unwrap_or(0) / 1024,
        scrape["ms_median"].as_f64().unwrap_or(f64::NAN),
    );
    let mut figures = json!({
        "parameters": {
            "scaled_objects": objects,
            "metrics_api_objects": objects - kafka_objects,
            "kafka_objects": kafka_objects,
            "kafka_layout": format!("{TOPICS} topics × {PARTITIONS} partitions, one consumer group per object"),
            "metrics_api_source": "one local HTTP server, a distinct URL per object",
            "scaled_object_settings": "defaults (pollingInterval 30 s)",
            "targets": "Deployments at 0 replicas, spec.paused (no ReplicaSets)",
            "measured_operator_flags": "defaults",
            "setup_operator_flags": "--kube-api-qps 0 (setup only: creates the HPAs and status)",
            "warm_up_seconds": POLLING_INTERVAL.as_secs() + 15,
            "window_seconds": window.as_secs(),
            "kube_flavor": env.kube_flavor(),
        },
        "figures": {
            "setup_seconds": setup_seconds,
            "measured_operator_leader_after_seconds": leader_seconds,
            "rss_mib_end": rss,
            "rss_mib_max_in_window": mib(rss_max),
            "rss_mib_peak_since_start": mib(usage_after.peak_rss_bytes),
            "cpu_seconds_in_window": cpu_seconds,
            "poll_cycles_in_window": cycles,
            "cpu_ms_per_poll_cycle": cpu_per_cycle_ms,
            "cpu_us_per_object_poll": if polls_ok + polls_failed > 0.0 { cpu_seconds * 1e6 / (polls_ok + polls_failed) } else { f64::NAN },
            "cpu_percent_of_one_core": cpu_seconds * 100.0 / window.as_secs_f64(),
            "ticks_in_window": ticks,
            "tick_lateness_ms": {
                "p50": p50, "p50_bucket_bound": p50_bound,
                "p99": p99, "p99_bucket_bound": p99_bound,
                "note": "interpolated inside the histogram bucket, as histogram_quantile; the bound is the bucket's upper edge"
            },
            "lateness_buckets_in_window": lateness.iter().map(|(b, c)| json!([if b.is_finite() { json!(b) } else { json!("+Inf") }, c])).collect::<Vec<_>>(),
            "polls_ok": polls_ok,
            "polls_failed": polls_failed,
            "metrics_api_requests_served": source_requests,
            "object_writes_per_minute": object_writes,
            "lease_writes_per_minute": lease_writes,
        },
        "scrape": scrape.clone(),
        "per_object_metrics_cost": without.map(|w| {
            let rss_with = mib(usage_after.rss_bytes);
            json!({
                "without": w,
                "rss_mib_attributable": rss_with - w["rss_mib_end"].as_f64().unwrap_or(f64::NAN),
                "rss_mib_max_attributable": mib(rss_max) - w["rss_mib_max_in_window"].as_f64().unwrap_or(f64::NAN),
                "scrape_bytes_attributable": scrape["bytes"].as_f64().unwrap_or(f64::NAN)
                    - w["scrape"]["bytes"].as_f64().unwrap_or(f64::NAN),
                "scrape_bytes_per_object": (scrape["bytes"].as_f64().unwrap_or(f64::NAN)
                    - w["scrape"]["bytes"].as_f64().unwrap_or(f64::NAN)) / objects as f64,
                "note": "the same fleet, warm-up and window with --per-object-metrics=false; \
                         RSS differences of a few MiB are within run-to-run noise",
            })
        }),
        "target": {"rss_mib": "< 150", "tick_lateness_p99_ms": "< 50"},
        "target_met": rss_met && lateness_met,
    });
    if !(rss_met && lateness_met) {
        figures["limited_by"] = json!(if rss_met {
            "tick lateness: the runtime's two cores are shared with the API server, etcd and the HPA controller"
        } else {
            "resident memory of the watch caches and per-object loops"
        });
    }
    Ok((figures, summary))
}

/// `/metrics` of a running operator: size, series, and the time to serve it (median of 5).
async fn scrape_cost(operator: &OperatorUnderTest) -> anyhow::Result<serde_json::Value> {
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        text = operator.metrics_text().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let per_object = text
        .lines()
        .filter(|l| l.starts_with("ebb_trigger_") || l.starts_with("ebb_scaled_object_"))
        .count();
    Ok(json!({
        "bytes": text.len(),
        "series": series,
        "per_object_series": per_object,
        "ms_median": times[times.len() / 2],
        "ms_max": times[times.len() - 1],
    }))
}

/// The measured phase again with `--per-object-metrics=false`: resident memory and the scrape.
async fn without_per_object(
    kubeconfig: &str,
    ns: &str,
    window: Duration,
) -> anyhow::Result<serde_json::Value> {
    let operator = OperatorUnderTest::start(kubeconfig, ns, &["--per-object-metrics=false"]).await?;
    tokio::time::sleep(POLLING_INTERVAL + Duration::from_secs(15)).await;
    let mut rss_max = operator.usage()?.rss_bytes;
    let window_end = Instant::now() + window;
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_max = rss_max.max(operator.usage()?.rss_bytes);
    }
    let usage = operator.usage()?;
    let scrape = scrape_cost(&operator).await?;
    operator.stop().await;
    let mib = |b: u64| b as f64 / 1048576.0;
    Ok(json!({
        "rss_mib_end": mib(usage.rss_bytes),
        "rss_mib_max_in_window": mib(rss_max),
        "scrape": scrape,
    }))
}
