//! The prometheus trigger end to end: the test environment's real Prometheus scrapes a
//! `/metrics` endpoint the test serves ([`ScrapeTarget`]); `ebb operator` with its embedded
//! metrics adapter behind the real API server's aggregation layer queries it; the real
//! kube-controller-manager's HPA scales 1↔N and ebb 0↔1.
//!
//! `prometheus_scales_zero_to_n_and_back`: the served value goes 0 → 18 → 0 with `threshold: 5`;
//! the Deployment goes 0 → 1 (ebb) → 4 (HPA, `ceil(18 / 5)`) → 0 (HPA to 1, ebb to 0 after the
//! cooldown), and the HPA reads 18 through the aggregator.
//!
//! `prometheus_unreachable_falls_back_and_never_scales_to_zero`: the trigger reaches Prometheus
//! through a TCP relay ([`Relay`]); cut, the query fails: the fallback count applies and holds
//! while the served value drops to 0 behind ebb's back, never 0; reopened, the fallback clears
//! and the count follows the value down to 0.
//!
//! The external-metrics APIService is cluster-wide: nextest runs this binary's tests one at a time
//! with the other binaries that register it (`.config/nextest.toml`), and [`AdapterCase`]
//! serialises them inside the binary and keeps other test processes from taking it over.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_tests::adapter_case::AdapterCase;
use ebb_tests::metrics_api::{metric_path, read_metric};
use ebb_tests::objects::replicas;
use ebb_tests::prometheus::ScrapeTarget;
use ebb_tests::relay::Relay;
use ebb_tests::wait_for;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Generous bound for anything that involves the HPA (its sync period) and a scrape.
const WITHIN: Duration = Duration::from_secs(60);

/// `threshold`: the value per replica.
const THRESHOLD: f64 = 5.0;

/// The target Deployment and the ScaledObject.
const WORKER: &str = "worker";

/// An [`AdapterCase`] with a scrape target and a record of the worker's replica counts.
struct Case {
    cluster: AdapterCase,
    prometheus: String,
    target: ScrapeTarget,
    /// Every replica count seen, in order, polled every 50 ms.
    seen: Arc<Mutex<Vec<i32>>>,
    recorder: JoinHandle<()>,
}

impl Deref for Case {
    type Target = AdapterCase;

    fn deref(&self) -> &AdapterCase {
        &self.cluster
    }
}

impl Case {
    /// A namespace, an operator serving external metrics through the aggregator, a Deployment at
    /// 0 and a scrape target serving `value`, already read by Prometheus.
    async fn start(prefix: &str, value: f64) -> Case {
        let cluster = AdapterCase::start(prefix, WITHIN, &[]).await;
        let env = &cluster.env;
        let prometheus = env.var("EBB_PROMETHEUS_URL").unwrap().to_string();
        let targets = PathBuf::from(env.var("EBB_PROMETHEUS_TARGETS_DIR").unwrap());
        let target = ScrapeTarget::start(Path::new(&targets), value).await.unwrap();
        cluster.deployment(WORKER, 0).await;
        target.wait_scraped(&prometheus, value).await.unwrap();
        let seen: Arc<Mutex<Vec<i32>>> = Arc::default();
        let recorder = {
            let (client, ns, seen) = (cluster.client(), cluster.ns.name.clone(), seen.clone());
            tokio::spawn(async move {
                loop {
                    if let Ok(r) = replicas(&client, &ns, WORKER).await {
                        let mut seen = seen.lock().unwrap();
                        if seen.last() != Some(&r) {
                            seen.push(r);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Case {
            cluster,
            prometheus,
            target,
            seen,
            recorder,
        }
    }

    fn seen(&self) -> Vec<i32> {
        self.seen.lock().unwrap().clone()
    }

    /// Creates the ScaledObject with one prometheus trigger querying the target's series.
    async fn create_so(&self, metadata: Value, fallback: Option<Value>) {
        let mut meta = json!({
            "serverAddress": self.prometheus,
            "query": format!("sum({})", self.target.query()),
            "threshold": THRESHOLD.to_string(),
        });
        if let (Some(meta), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
            meta.extend(extra.clone());
        }
        let mut spec = json!({
            "scaleTargetRef": {"name": WORKER}, "pollingInterval": 1, "cooldownPeriod": 2,
            "maxReplicaCount": 10, "triggers": [{"type": "prometheus", "metadata": meta}]});
        if let Some(f) = fallback {
            spec["fallback"] = f;
        }
        self.create(WORKER, spec).await;
    }

    /// Waits until the Deployment has `want` replicas, and the recorder has seen it.
    async fn wait_replicas(&self, want: i32) -> Duration {
        let result = self.cluster.try_wait_replicas(WORKER, want).await;
        let took = match result {
            Ok(took) => took,
            Err(e) => panic!(
                "{e}; replicas seen: {:?}; {}",
                self.seen(),
                self.status_text(WORKER).await
            ),
        };
        // The recorder polls every 50 ms: it may see the count a moment after the read above.
        let recorded = wait_for(&format!("{want} recorded"), Duration::from_secs(5), || async {
            (self.seen().last() == Some(&want)).then_some(())
        })
        .await;
        if let Err(e) = recorded {
            panic!("{e}; replicas seen: {:?}", self.seen());
        }
        took
    }

    /// The trigger's metric as the HPA reads it, through the aggregator, until it is `want`.
    async fn wait_metric(&self, want: i64) {
        let path = metric_path(&self.ns.name, WORKER, "s0-prometheus");
        let client = self.env.client.clone();
        let last = Mutex::new(String::new());
        let result = wait_for(
            &format!("s0-prometheus = {want} through the aggregator"),
            WITHIN,
            || async {
                let read = read_metric(&client, &path).await;
                *last.lock().unwrap() = format!("{read:?}");
                (read.ok()? == want).then_some(())
            },
        )
        .await;
        if let Err(e) = result {
            panic!("{e}; last read: {}", last.lock().unwrap());
        }
    }

    async fn finish(self) {
        eprintln!("[{}] replicas seen: {:?}", self.ns.name, self.seen());
        self.recorder.abort();
        self.cluster.finish().await;
    }
}

#[tokio::test]
async fn prometheus_scales_zero_to_n_and_back() {
    let case = Case::start("e2e-prometheus", 0.0).await;
    case.create_so(json!({}), None).await;
    case.wait_condition(WORKER, "Ready", "True").await;
    // Idle: the query reads 0, the HPA reads 0, nothing scales.
    case.wait_metric(0).await;
    let (_, reason, _) = case.wait_condition(WORKER, "Active", "False").await;
    eprintln!("[{}] idle, Active=False ({reason})", case.ns.name);
    assert_eq!(case.replicas(WORKER).await, 0);

    let backlog = 18.0;
    let n = (backlog / THRESHOLD).ceil() as i32;
    let served = Instant::now();
    case.target.set(backlog);
    case.wait_replicas(n).await;
    eprintln!(
        "[{}] {backlog} served: 0 → {n} after {:?} (scrape every 1 s, poll every 1 s, HPA sync)",
        case.ns.name,
        served.elapsed()
    );
    case.wait_metric(backlog as i64).await;
    let up = case.seen();
    assert_eq!(up.get(..2), Some(&[0, 1][..]), "ebb activates to 1 first: {up:?}");
    assert!(
        up.windows(2).all(|w| w[0] <= w[1]) && up.last() == Some(&n),
        "scale-up went straight up to {n}: {up:?}"
    );
    case.wait_condition(WORKER, "Active", "True").await;

    let drained = Instant::now();
    case.target.set(0.0);
    case.wait_replicas(0).await;
    eprintln!(
        "[{}] 0 served: back to 0 after {:?}",
        case.ns.name,
        drained.elapsed()
    );
    let all = case.seen();
    assert_eq!(
        all.iter().filter(|r| **r == 0).count(),
        2,
        "0, up, and down to 0 once: {all:?}"
    );
    case.finish().await;
}

#[tokio::test]
async fn prometheus_unreachable_falls_back_and_never_scales_to_zero() {
    let case = Case::start("e2e-prometheus-outage", 7.0).await;
    // The trigger reaches Prometheus through a relay the test cuts: the shared server stays up.
    let upstream = case
        .prometheus
        .trim_start_matches("http://")
        .parse()
        .expect("EBB_PROMETHEUS_URL is http://<ip>:<port>");
    let relay = Relay::start(upstream).await.unwrap();
    case.create_so(
        json!({"serverAddress": format!("http://{}", relay.addr())}),
        Some(json!({"failureThreshold": 2, "replicas": 3})),
    )
    .await;
    case.wait_condition(WORKER, "Ready", "True").await;
    case.wait_replicas(2).await;

    let cut = Instant::now();
    relay.cut();
    let (_, reason, message) = case.wait_condition(WORKER, "Fallback", "True").await;
    assert_eq!(reason, "FallbackExists", "{message}");
    case.wait_replicas(3).await;
    eprintln!(
        "[{}] relay cut → Fallback=True and 3 replicas in {:?}",
        case.ns.name,
        cut.elapsed()
    );
    // Behind ebb's back the value drops to 0: unread, it cannot scale anything to zero. The
    // fallback holds 3 through several cooldowns (2 s).
    case.target.set(0.0);
    case.target.wait_scraped(&case.prometheus, 0.0).await.unwrap();
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(6) {
        let now = case.replicas(WORKER).await;
        assert_eq!(now, 3, "during the outage; seen {:?}", case.seen());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = case.seen();

    // Prometheus reachable again: the fallback clears and the count follows the value (0).
    let reopened = Instant::now();
    relay.reopen();
    case.wait_condition(WORKER, "Fallback", "False").await;
    case.wait_replicas(0).await;
    eprintln!(
        "[{}] relay reopened → 0 replicas in {:?}",
        case.ns.name,
        reopened.elapsed()
    );
    assert!(
        !during.iter().skip(1).any(|r| *r == 0),
        "scaled to zero during the outage: {during:?}"
    );
    case.finish().await;
}
