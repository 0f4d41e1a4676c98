//! ebb's benchmarks. Each scenario is a binary under `src/bin/` that measures one thing on this
//! machine and writes a JSON result (name, parameters, figures, target, machine, date) under
//! `bench/results/`, plus a one-line summary. Run them with `bench/run.sh`; they are not tests.

pub mod bulk_objects;
pub mod counting_proxy;
pub mod h2;
pub mod operator_under_test;
pub mod rng;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// Waits (up to a minute) until none of `names` is listed by `api` any more, so that the next
/// phase starts with their loops and clients gone. Gives up quietly: a leftover only costs
/// the next phase a little.
pub async fn wait_scaled_objects_gone<S>(
    api: &kube::Api<ebb_crds::ScaledObject>,
    names: &std::collections::HashSet<S>,
) where
    S: std::borrow::Borrow<str> + Eq + std::hash::Hash,
{
    let _ = ebb_tests::wait_for("the ScaledObjects gone", Duration::from_secs(60), || async {
        let list = api.list(&kube::api::ListParams::default()).await.ok()?;
        (!list
            .items
            .iter()
            .any(|so| names.contains(so.metadata.name.as_deref().unwrap_or(""))))
        .then_some(())
    })
    .await;
}

/// A number from the environment (`EBB_BENCH_*`), or `default` when unset or not a number.
pub fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What this machine is, for the result files.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    json!({"cores": cores, "cpu": cpu, "kernel": kernel})
}

/// The `q`-quantile (0..=1) of sorted durations, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Writes a result to `bench/results/<name>.json` and prints its summary line.
pub fn write_result(name: &str, mut result: Value, summary: &str) -> std::io::Result<PathBuf> {
    result["name"] = json!(name);
    result["machine"] = machine();
    result["date"] = json!(jiff::Timestamp::now().to_string());
    result["summary"] = json!(summary);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap_or_default())?;
    println!("{summary}");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_right_sample() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&d, 0.5), 51.0);
        assert_eq!(quantile_ms(&d, 0.99), 99.0);
        assert_eq!(quantile_ms(&d, 1.0), 100.0);
        assert!(quantile_ms(&[], 0.5).is_nan());
    }
}
