//! Scenario 3: creation burst. 1,000 ScaledObjects (metrics-api triggers against one local HTTP
//! source, default settings) are created at once for 1,000 parked Deployments while one operator
//! runs with its default client limits (50 requests/s, burst 100). Measured: the time from the
//! first create until every object has its HPA and `Ready=True` (target under 60 s), the API
//! writes that took, and then the operator's API writes per minute in steady state with nothing
//! changing (target 0; the leader-election Lease renewals are counted apart: they do not depend
//! on the objects).
//!
//! `EBB_BENCH_OBJECTS` (default 1000) and `EBB_BENCH_STEADY_SECONDS` (default 60) override.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ebb_bench::bulk_objects::{
    create_deployments, create_namespace, create_scaled_objects, hpa_resource, parked_deployment,
    scaled_object, tear_down, wait_progress,
};
use ebb_bench::operator_under_test::{OperatorUnderTest, Scrape};
use ebb_bench::write_result;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds};
use serde_json::json;

const TARGET_SECONDS: f64 = 60.0;

/// Writes by `verb resource`, from the operator's `ebb_kube_requests_total`.
fn writes(scrape: &Scrape) -> BTreeMap<String, f64> {
    scrape
        .all("ebb_kube_requests_total")
        .into_iter()
        .filter(|(l, _)| {
            matches!(
                l.get("verb").map(String::as_str),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .map(|(l, v)| (format!("{} {}", l["verb"], l["resource"]), v))
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn is_lease(key: &str) -> bool {
    key.ends_with(" leases")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let objects = ebb_bench::env_number("EBB_BENCH_OBJECTS", 1000) as usize;
    let steady = Duration::from_secs(ebb_bench::env_number("EBB_BENCH_STEADY_SECONDS", 60));
    let env = TestEnv::load().await?;
    let client = env.client.clone();
    install_crds(&client).await?;
    let hpa = hpa_resource(env.kube_flavor() != "plain-1.20.2");
    let ns = format!("bench-burst-{}", std::process::id());
    create_namespace(&client, &ns).await?;
    let source = MetricSource::start(0).await;

    let result = run(&env, &client, &ns, &hpa, &source, objects, steady).await;
    tear_down(&client, &ns).await?;
    let (figures, summary) = result?;
    write_result("creation-burst", figures, &summary)?;
    Ok(())
}

async fn run(
    env: &TestEnv,
    client: &kube::Client,
    ns: &str,
    hpa: &kube::core::ApiResource,
    source: &MetricSource,
    objects: usize,
    steady: Duration,
) -> anyhow::Result<(serde_json::Value, String)> {
    let names: Vec<String> = (0..objects).map(|i| format!("w-{i:05}")).collect();
    create_deployments(client, ns, names.iter().map(|n| parked_deployment(n)).collect()).await?;
    let operator = OperatorUnderTest::start(env.var("EBB_KUBECONFIG")?, ns, &[]).await?;
    let before = writes(&operator.metrics().await?);

    let started = Instant::now();
    let sos = names
        .iter()
        .map(|n| {
            scaled_object(
                n,
                json!({"type": "metrics-api", "metadata": {
                    "url": format!("{}?object={n}", source.url),
                    "valueLocation": "queue.depth", "targetValue": "5"}}),
            )
        })
        .collect();
    create_scaled_objects(client, ns, sos).await?;
    let created = started.elapsed();
    let done = wait_progress(
        client,
        ns,
        hpa,
        Duration::from_millis(250),
        Duration::from_secs(600),
        |p| p.ready >= objects && p.hpas >= objects,
    )
    .await;
    let all_ready = started.elapsed();
    let done = done?;
    let burst_usage = operator.usage()?;
    let burst_writes = delta(&before, &writes(&operator.metrics().await?));

    // Steady state: one polling interval (30 s) for every loop's first poll to settle, then count.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let steady_before = writes(&operator.metrics().await?);
    tokio::time::sleep(steady).await;
    let steady_writes = delta(&steady_before, &writes(&operator.metrics().await?));
    let per_minute = 60.0 / steady.as_secs_f64();
    let object_writes: f64 = steady_writes
        .iter()
        .filter(|(k, _)| !is_lease(k))
        .map(|(_, v)| v * per_minute)
        .sum::<f64>()
        + 0.0; // an empty sum is -0.0
    let lease_writes: f64 = steady_writes
        .iter()
        .filter(|(k, _)| is_lease(k))
        .map(|(_, v)| v * per_minute)
        .sum();
    let end_usage = operator.usage()?;
    operator.stop().await;

    let seconds = all_ready.as_secs_f64();
    let burst_total: f64 = burst_writes.values().sum();
    let met_time = seconds < TARGET_SECONDS;
    let met_writes = object_writes == 0.0;
    let summary = format!(
        "creation burst: {objects} ScaledObjects → HPA + Ready=True in {seconds:.1} s {} (target < 60 s), \
         {:.1} writes/object; steady state {object_writes:.1} object writes/min {} (+{lease_writes:.0} Lease renewals/min)",
        if met_time { "✓" } else { "✗" },
        burst_total / objects as f64,
        if met_writes { "✓" } else { "✗" },
    );
    let mut figures = json!({
        "parameters": {
            "scaled_objects": objects,
            "trigger": "metrics-api, one local HTTP source, a distinct URL per object",
            "scaled_object_settings": "defaults (pollingInterval 30 s, cooldownPeriod 300 s, minReplicaCount 0)",
            "operator_flags": "defaults (--kube-api-qps 50 --kube-api-burst 100 --concurrency 16)",
            "targets": "Deployments at 0 replicas, spec.paused (no ReplicaSets)",
            "steady_window_seconds": steady.as_secs(),
            "kube_flavor": env.kube_flavor(),
            "progress_poll_interval_ms": 250,
        },
        "figures": {
            "create_requests_seconds": created.as_secs_f64(),
            "all_hpa_and_ready_seconds": seconds,
            "final_progress": {"objects": done.objects, "ready": done.ready, "hpas": done.hpas},
            "burst_writes_by_request": burst_writes,
            "burst_writes_per_object": burst_total / objects as f64,
            "steady_writes_by_request": steady_writes,
            "steady_object_writes_per_minute": object_writes,
            "steady_lease_writes_per_minute": lease_writes,
            "operator_rss_mib_after_burst": burst_usage.rss_bytes as f64 / 1048576.0,
            "operator_rss_mib_end": end_usage.rss_bytes as f64 / 1048576.0,
            "operator_cpu_seconds_total": end_usage.cpu.as_secs_f64(),
        },
        "target": {
            "all_hpa_and_ready_seconds": "< 60",
            "steady_object_writes_per_minute": "0 (Lease renewals for leader election are reported apart)",
        },
        "target_met": met_time && met_writes,
    });
    if !met_time {
        figures["limited_by"] = json!(
            "client-side limit: every new object costs the writes in burst_writes_per_object, sent at \
             --kube-api-qps 50 (burst 100)"
        );
    }
    Ok((figures, summary))
}
