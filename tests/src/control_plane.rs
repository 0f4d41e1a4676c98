//! Control-plane faults: stopping the shared kube-apiserver or etcd and starting the very same
//! process again (`tests/env/testenv.sh proc-down` / `proc-up`), an operator kept running the way
//! a kubelet would (restarted whenever it exits), and a record of every replica count the
//! test's Deployments had, kept across the outage.
//!
//! An [`Outage`] brings its process back when dropped, also while a failed test unwinds: the
//! control plane is shared by every test on the machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::operator::OperatorProcess;
use crate::{HarnessError, TestEnv, wait_for};

/// How long a restarted process may take to be ready again before the test gives up.
pub const READY_WITHIN: Duration = Duration::from_secs(120);

/// A control-plane process the fault tests stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlaneProcess {
    /// kube-apiserver (the aggregator in front of the apiextensions-apiserver and ebb's adapter).
    ApiServer,
    /// etcd (the API servers stay up and fail requests).
    Etcd,
}

impl ControlPlaneProcess {
    /// Its name for `testenv.sh proc-down kube <name>`.
    pub fn name(self) -> &'static str {
        match self {
            ControlPlaneProcess::ApiServer => "kube-apiserver",
            ControlPlaneProcess::Etcd => "etcd",
        }
    }
}

/// `tests/env/testenv.sh`.
fn testenv_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("env/testenv.sh")
}

/// A stopped control-plane process; [`Outage::end`] starts it again and waits until the control
/// plane is ready. Dropped before that (a panic), it does the same, blocking.
pub struct Outage {
    process: ControlPlaneProcess,
    home: String,
    kubectl: String,
    kubeconfig: String,
    down: bool,
}

impl Outage {
    /// Stops `process` with `signal` (`KILL` or `TERM`); returns once it is gone.
    pub async fn begin(
        env: &TestEnv,
        process: ControlPlaneProcess,
        signal: &str,
    ) -> Result<Outage, HarnessError> {
        let mut outage = Outage {
            process,
            home: env.var("EBB_TESTENV_HOME")?.to_string(),
            kubectl: env.var("EBB_KUBECTL")?.to_string(),
            kubeconfig: env.var("EBB_KUBECONFIG")?.to_string(),
            down: false,
        };
        // Marked down first: whatever proc-down managed to do, the drop brings it back.
        outage.down = true;
        outage
            .testenv(&["proc-down", "kube", process.name(), signal])
            .await?;
        Ok(outage)
    }

    /// Starts the process again; returns when etcd answers healthy (after an etcd outage) and
    /// the API server answers `/readyz` ok.
    pub async fn end(mut self, client: &Client) -> Result<(), HarnessError> {
        self.testenv(&["proc-up", "kube", self.process.name()]).await?;
        self.down = false;
        if self.process == ControlPlaneProcess::Etcd {
            wait_for("etcd /health", READY_WITHIN, || async {
                etcd_healthy().await.then_some(())
            })
            .await?;
        }
        wait_for("kube-apiserver /readyz", READY_WITHIN, || async {
            api_ready(client).await.then_some(())
        })
        .await
    }

    async fn testenv(&self, args: &[&str]) -> Result<(), HarnessError> {
        let out = tokio::process::Command::new(testenv_script())
            .args(args)
            .env("EBB_TESTENV_HOME", &self.home)
            .output()
            .await
            .map_err(|e| command_error(args, &e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(command_error(
                args,
                &format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
            ))
        }
    }

    /// The drop's path: proc-up and readiness without a runtime.
    fn restore_blocking(&self) {
        let up = std::process::Command::new(testenv_script())
            .args(["proc-up", "kube", self.process.name()])
            .env("EBB_TESTENV_HOME", &self.home)
            .status();
        eprintln!("outage guard: proc-up kube {}: {up:?}", self.process.name());
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            let ready = std::process::Command::new(&self.kubectl)
                .args(["--kubeconfig", &self.kubeconfig, "get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"ok");
            if ready {
                eprintln!("outage guard: the API server is ready again");
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("outage guard: the API server is not ready after {READY_WITHIN:?}");
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.down {
            self.restore_blocking();
        }
    }
}

fn command_error(args: &[&str], output: &str) -> HarnessError {
    HarnessError::Command {
        command: format!("testenv.sh {}", args.join(" ")),
        output: output.to_string(),
    }
}

/// Whether the API server answers `/readyz` with `ok`.
pub async fn api_ready(client: &Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await;
    matches!(answer, Ok(Ok(body)) if body.trim() == "ok")
}

/// Whether etcd on 127.0.0.1:2379 answers `/health` with `"health":"true"`.
pub async fn etcd_healthy() -> bool {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect("127.0.0.1:2379").await.ok()?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), read).await,
        Ok(Some(true))
    )
}

/// How a supervised operator process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    /// When it was seen gone.
    pub at: Instant,
    /// Its exit status, as text.
    pub status: String,
}

/// `ebb operator` kept running like a kubelet keeps a container: started again (after `delay`,
/// same identity, same addresses, log appended) whenever it exits.
pub struct Supervised {
    exits: Arc<Mutex<Vec<Exit>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts the operator (see [`OperatorProcess::start_with`]) and keeps it running.
    pub async fn start(
        kubeconfig: &Path,
        health_addr: &str,
        namespace: &str,
        identity: &str,
        extra: &[&str],
        delay: Duration,
    ) -> Result<Supervised, HarnessError> {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let start = {
            let kubeconfig = kubeconfig.to_path_buf();
            let health_addr = health_addr.to_string();
            let namespace = namespace.to_string();
            let identity = identity.to_string();
            move || {
                let kubeconfig = kubeconfig.clone();
                let health_addr = health_addr.clone();
                let namespace = namespace.clone();
                let identity = identity.clone();
                let args = args.clone();
                async move {
                    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
                    OperatorProcess::start_with(&kubeconfig, &health_addr, &namespace, &identity, &extra)
                        .await
                }
            }
        };
        let mut process = start().await?;
        let exits: Arc<Mutex<Vec<Exit>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let exits = exits.clone();
            async move {
                loop {
                    let status = loop {
                        if let Some(status) = process.exited() {
                            break status;
                        }
                        tokio::select! {
                            _ = stopped.changed() => {
                                process.terminate().await;
                                return;
                            }
                            () = tokio::time::sleep(Duration::from_millis(50)) => {}
                        }
                    };
                    exits.lock().unwrap_or_else(PoisonError::into_inner).push(Exit {
                        at: Instant::now(),
                        status: status.to_string(),
                    });
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    match start().await {
                        Ok(p) => process = p,
                        Err(e) => {
                            eprintln!("supervisor: cannot start the operator again: {e}");
                            return;
                        }
                    }
                }
            }
        });
        Ok(Supervised { exits, stop, task })
    }

    /// Every exit so far.
    pub fn exits(&self) -> Vec<Exit> {
        self.exits.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops the current process (SIGTERM) and the supervision (the only change of its stop
    /// channel).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// One replica count a Deployment was seen with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When the watch (or a final read) delivered it.
    pub at: Instant,
    /// `spec.replicas` (an omitted count is 0: `/scale` writes of 0 omit it).
    pub replicas: i32,
}

/// How often the record's watch retries while the API server is away.
const RECORD_RETRY: Duration = Duration::from_millis(250);

/// A watch backoff that does not grow: the record must be watching again as soon as the API
/// server is back.
struct Steady(Duration);

impl Iterator for Steady {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(self.0)
    }
}

impl kube::runtime::utils::Backoff for Steady {
    fn reset(&mut self) {}
}

/// Every change of `spec.replicas` of every Deployment in a namespace, from a watch that lists
/// again after an error (an API server or etcd outage), so the record continues afterwards.
pub struct ReplicaRecord {
    seen: Arc<Mutex<BTreeMap<String, Vec<Seen>>>>,
    lists: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl ReplicaRecord {
    /// Starts watching the Deployments of `namespace`.
    pub fn start(client: &Client, namespace: &str) -> ReplicaRecord {
        let seen: Arc<Mutex<BTreeMap<String, Vec<Seen>>>> = Arc::default();
        let lists: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let task = tokio::spawn({
            let seen = seen.clone();
            let lists = lists.clone();
            async move {
                // kube's default backoff grows to ~30 s through an outage, so the record could
                // miss the first moves after it: retry every 250 ms instead.
                let mut events = watcher(api, watcher::Config::default())
                    .backoff(Steady(RECORD_RETRY))
                    .boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Init) => {
                            lists
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(Instant::now());
                        }
                        Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                            note(&seen, &d);
                        }
                        _ => {}
                    }
                }
            }
        });
        ReplicaRecord { seen, lists, task }
    }

    /// Reads every Deployment once more and records any change the watch has not delivered yet.
    pub async fn final_read(&self, client: &Client, namespace: &str) -> Result<(), HarnessError> {
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        for d in api.list(&Default::default()).await? {
            note(&self.seen, &d);
        }
        Ok(())
    }

    /// The record of `name` so far.
    pub fn of(&self, name: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// When the watch listed (the first time, and again after each failure).
    pub fn lists(&self) -> Vec<Instant> {
        self.lists.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every Deployment's record as `name: 0@0.0s → 1@2.3s …`, times from `origin`.
    pub fn render(&self, origin: Instant) -> String {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .map(|(name, list)| {
                let steps: Vec<String> = list
                    .iter()
                    .map(|s| format!("{}@{:.1}s", s.replicas, signed_secs(origin, s.at)))
                    .collect();
                format!("{name}: {}", steps.join(" → "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ReplicaRecord {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn note(seen: &Mutex<BTreeMap<String, Vec<Seen>>>, d: &Deployment) {
    let Some(name) = d.metadata.name.clone() else {
        return;
    };
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let list = seen.entry(name).or_default();
    if list.last().map(|s| s.replicas) != Some(replicas) {
        list.push(Seen {
            at: Instant::now(),
            replicas,
        });
    }
}

/// Seconds from `origin` to `at`, negative when `at` is earlier.
pub fn signed_secs(origin: Instant, at: Instant) -> f64 {
    if at >= origin {
        (at - origin).as_secs_f64()
    } else {
        -(origin - at).as_secs_f64()
    }
}

/// The replica counts of `record` after `from` (exclusive), in order.
pub fn changes_after(record: &[Seen], from: Instant) -> Vec<i32> {
    record
        .iter()
        .filter(|s| s.at > from)
        .map(|s| s.replicas)
        .collect()
}

/// Whether `counts` only ever goes one way (never up after going down, nor down after going up):
/// a scale-out or a scale-in that did not flap.
pub fn monotonic(counts: &[i32]) -> bool {
    let ups = counts.windows(2).any(|w| w[1] > w[0]);
    let downs = counts.windows(2).any(|w| w[1] < w[0]);
    !(ups && downs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flap_is_not_monotonic() {
        assert!(monotonic(&[5, 2, 1, 0]));
        assert!(monotonic(&[0, 1, 4, 6]));
        assert!(monotonic(&[]));
        assert!(!monotonic(&[5, 0, 5]));
        assert!(!monotonic(&[1, 0, 1, 0]));
    }

    #[test]
    fn changes_after_a_moment_leave_out_the_earlier_ones() {
        let t0 = Instant::now();
        let at = |ms: u64, replicas: i32| Seen {
            at: t0 + Duration::from_millis(ms),
            replicas,
        };
        let record = [at(0, 0), at(10, 1), at(20, 5), at(30, 2)];
        assert_eq!(changes_after(&record, t0 + Duration::from_millis(15)), [5, 2]);
        assert!(changes_after(&record, t0 + Duration::from_millis(30)).is_empty());
        assert!((signed_secs(t0 + Duration::from_secs(2), t0) + 2.0).abs() < 1e-9);
    }
}
