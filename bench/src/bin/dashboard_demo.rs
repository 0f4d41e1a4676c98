//! Data for the dashboard picture (`bench/dashboard/render.sh`): the operator, serving the
//! external metrics through the API server's aggregator, runs three real ScaledObjects for about
//! six minutes while a Prometheus scrapes its `/metrics` at `EBB_DEMO_HEALTH_ADDR`
//! (default `127.0.0.1:18089`). Each object has a metrics-api trigger on a local HTTP source whose
//! value follows a script:
//! - `orders` (target 5): idle, a backlog that grows to 30 and drains; ebb activates it, the HPA
//!   scales it up and down, ebb takes it back to zero after the cooldown;
//! - `billing` (target 10, fallback 4 replicas after 3 failures): a steady 25, then its source
//!   fails for 90 s (errors, fallback), then recovers;
//! - `reports` (target 4): a steady 8, paused for two minutes in the middle.
//!
//! At the end the objects are deleted (their series go) and the operator stops. Prints
//! `{"start": <unix s>, "end": <unix s>, "namespace": …}` on stdout for the renderer.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ebb_crds::ScaledObject;
use ebb_tests::objects::deployment;
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds, wait_for};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn log(msg: &str) {
    eprintln!("[dashboard-demo] {msg}");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn scaled_object(
    name: &str,
    url: &str,
    target: u32,
    fallback: Option<Value>,
) -> anyhow::Result<ScaledObject> {
    let mut spec = json!({
        "scaleTargetRef": {"name": name},
        "pollingInterval": 5, "cooldownPeriod": 30, "maxReplicaCount": 8,
        "triggers": [{"type": "metrics-api", "metadata": {
            "url": url, "valueLocation": "queue.depth", "targetValue": target.to_string()}}]});
    if let Some(f) = fallback {
        spec["fallback"] = f;
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name}, "spec": spec}))?)
}

/// `orders`' backlog at `t` seconds: idle, a ramp to 30, a plateau, then drained.
fn orders_depth(t: u64) -> i64 {
    match t {
        0..30 => 0,
        30..120 => ((t - 30) * 30 / 90) as i64,
        120..180 => 30,
        _ => 0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let health = std::env::var("EBB_DEMO_HEALTH_ADDR").unwrap_or_else(|_| "127.0.0.1:18089".into());
    let seconds = ebb_bench::env_number("EBB_DEMO_SECONDS", 330);
    let env = TestEnv::load().await?;
    let client = env.client.clone();
    install_crds(&client).await?;
    let _apiservice = ebb_tests::adapter::lock().await;
    ebb_tests::adapter::wait_until_free(&client).await;
    let ns = env.namespace("dashboard-demo").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let adapter = format!("127.0.0.1:{port}");
    let kubeconfig = std::path::PathBuf::from(env.var("EBB_KUBECONFIG")?);
    let operator = OperatorProcess::start_with(
        &kubeconfig,
        &health,
        &ns.name,
        "demo",
        &["--metrics-adapter-addr", &adapter],
    )
    .await?;
    ebb_tests::adapter::register(&client, &ns.name, port).await?;

    let (orders, billing, reports) = (
        MetricSource::start(0).await,
        MetricSource::start(25).await,
        MetricSource::start(8).await,
    );
    let so_api: Api<ScaledObject> = Api::namespaced(client.clone(), &ns.name);
    wait_for("ScaledObjects listable", Duration::from_secs(30), || async {
        so_api.list(&Default::default()).await.ok().map(|_| ())
    })
    .await?;
    let objects = [
        scaled_object("orders", &orders.url, 5, None)?,
        scaled_object(
            "billing",
            &billing.url,
            10,
            Some(json!({"failureThreshold": 3, "replicas": 4})),
        )?,
        scaled_object("reports", &reports.url, 4, None)?,
    ];
    for so in &objects {
        let name = so.metadata.name.clone().unwrap_or_default();
        deployment(&client, &ns.name, &name, 0).await?;
        so_api.create(&PostParams::default(), so).await?;
    }
    let start = unix_now();
    let began = Instant::now();
    log(&format!("running {seconds} s in {}", ns.name));
    let pause =
        |paused: Option<&str>| json!({"metadata": {"annotations": {"autoscaling.ebb.dev/paused": paused}}});
    let mut last = u64::MAX;
    while began.elapsed().as_secs() < seconds {
        let t = began.elapsed().as_secs();
        if t != last {
            last = t;
            orders.set_depth(orders_depth(t));
            billing.set_failing((90..180).contains(&t));
            let patch = match t {
                120 => Some(pause(Some("true"))),
                240 => Some(pause(None)),
                _ => None,
            };
            if let Some(p) = patch {
                so_api
                    .patch("reports", &PatchParams::default(), &Patch::Merge(&p))
                    .await?;
                log(&format!("t={t}: reports paused = {}", t == 120));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    log("deleting the objects: their series go");
    for so in &objects {
        let name = so.metadata.name.clone().unwrap_or_default();
        so_api.delete(&name, &DeleteParams::default()).await?;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = unix_now();
    ebb_tests::adapter::unregister(&client).await;
    operator.terminate().await;
    let namespace = ns.name.clone();
    ns.delete().await?;
    println!(
        "{}",
        json!({"start": start, "end": end, "namespace": namespace, "health": health})
    );
    Ok(())
}
