//! The harness of ebb's end-to-end tests.
//!
//! `tests/env/testenv.sh up` starts real servers on loopback (kube-apiserver, etcd,
//! kube-controller-manager, Tansu, RabbitMQ, NATS, moto) and writes their addresses to an env file.
//! [`TestEnv::load`] reads it, gives a Kubernetes client, the broker addresses, and a fresh
//! namespace per test ([`TestEnv::namespace`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Why the harness could not set a test up.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The env file is missing: the servers are not running.
    #[error(
        "test environment not running: {path} is missing. Start it with `tests/env/testenv.sh up` \
         (or run the README's test command, which does everything)"
    )]
    NotRunning {
        /// The env file looked for.
        path: String,
    },
    /// A variable the test needs is not in the env file.
    #[error("{key} is not set in the test environment file {path}")]
    MissingVar {
        /// Variable name.
        key: String,
        /// The env file.
        path: String,
    },
    /// The kubeconfig could not be used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A Kubernetes call failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A command-line tool (helm, kubectl) failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line (no secrets: credentials are passed in files).
        command: String,
        /// Its exit status and standard error.
        output: String,
    },
}

/// A loopback port free right now (for an operator's adapter or health address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Path of the env file written by `testenv.sh up`.
pub fn env_file() -> PathBuf {
    if let Ok(p) = std::env::var("EBB_TESTENV_FILE") {
        return PathBuf::from(p);
    }
    let home = std::env::var("EBB_TESTENV_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/ebb-testenv")
        });
    home.join("run/env")
}

/// The running test environment.
pub struct TestEnv {
    vars: BTreeMap<String, String>,
    path: String,
    /// A client with cluster-admin rights.
    pub client: Client,
}

impl TestEnv {
    /// Reads the env file and connects to the API server.
    pub async fn load() -> Result<TestEnv, HarnessError> {
        let path = env_file();
        let path_text = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|_| HarnessError::NotRunning {
            path: path_text.clone(),
        })?;
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let kubeconfig_path = vars
            .get("EBB_KUBECONFIG")
            .ok_or_else(|| HarnessError::MissingVar {
                key: "EBB_KUBECONFIG".into(),
                path: path_text.clone(),
            })?;
        let kubeconfig =
            Kubeconfig::read_from(kubeconfig_path).map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
        let client = Client::try_from(config)?;
        Ok(TestEnv {
            vars,
            path: path_text,
            client,
        })
    }

    /// A variable of the env file, e.g. `EBB_KAFKA_BOOTSTRAP`.
    pub fn var(&self, key: &str) -> Result<&str, HarnessError> {
        self.vars
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| HarnessError::MissingVar {
                key: key.into(),
                path: self.path.clone(),
            })
    }

    /// Which control plane runs: `modern-hybrid` (autoscaling/v2, CEL) or `plain-1.20.2`.
    pub fn kube_flavor(&self) -> &str {
        self.vars
            .get("EBB_KUBE_FLAVOR")
            .map(String::as_str)
            .unwrap_or("unknown")
    }

    /// Whether the API server evaluates CRD `x-kubernetes-validations` (CEL) rules.
    pub fn evaluates_cel(&self) -> bool {
        self.kube_flavor() == "modern-hybrid"
    }

    /// Creates a fresh namespace for one test.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, HarnessError> {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace {
            name,
            client: self.client.clone(),
        })
    }
}

/// A namespace that belongs to one test. Call [`TestNamespace::delete`] at the end; whatever a
/// failed test leaves behind is wiped by the next `testenv.sh up`, which starts from empty etcd.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Deletes the namespace (without waiting for finalization). ScaledObjects and ScaledJobs
    /// left in it lose ebb's finalizers first: the test's operator may already be gone, and
    /// nothing else would remove them, leaving the namespace Terminating.
    pub async fn delete(self) -> Result<(), HarnessError> {
        let sos: Api<ebb_crds::ScaledObject> = Api::namespaced(self.client.clone(), &self.name);
        let sjs: Api<ebb_crds::ScaledJob> = Api::namespaced(self.client.clone(), &self.name);
        let names = |list: Option<Vec<String>>| list.unwrap_or_default();
        let so_names = names(
            sos.list(&Default::default())
                .await
                .ok()
                .map(|l| l.items.into_iter().filter_map(|o| o.metadata.name).collect()),
        );
        let sj_names = names(
            sjs.list(&Default::default())
                .await
                .ok()
                .map(|l| l.items.into_iter().filter_map(|o| o.metadata.name).collect()),
        );
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        let params = kube::api::PatchParams::default();
        for name in so_names {
            let _ = sos.patch(&name, &params, &kube::api::Patch::Merge(&patch)).await;
        }
        for name in sj_names {
            let _ = sjs.patch(&name, &params, &kube::api::Patch::Merge(&patch)).await;
        }
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

/// Installs ebb's CRDs (create, or replace when they differ) and waits until each is Established.
/// Safe to call from tests running in parallel.
pub async fn install_crds(client: &Client) -> Result<(), HarnessError> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in ebb_crds::generate::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for attempt in 0..5 {
            let result = match api.get_opt(&name).await? {
                None => api.create(&PostParams::default(), &crd).await.map(|_| ()),
                Some(existing) if existing.spec == crd.spec => Ok(()),
                Some(existing) => {
                    // Only the spec is ours to change: labels and annotations others put on the
                    // CRD stay (the chart test adopts the CRDs into its Helm release with them).
                    let mut next = crd.clone();
                    next.metadata.resource_version = existing.metadata.resource_version;
                    let mut labels = existing.metadata.labels.unwrap_or_default();
                    labels.extend(next.metadata.labels.take().unwrap_or_default());
                    next.metadata.labels = Some(labels);
                    let mut annotations = existing.metadata.annotations.unwrap_or_default();
                    annotations.extend(next.metadata.annotations.take().unwrap_or_default());
                    next.metadata.annotations = Some(annotations);
                    api.replace(&name, &PostParams::default(), &next)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => break,
                // Another test process won the race: read again and retry.
                Err(kube::Error::Api(e)) if (e.code == 409) && attempt < 4 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    let conditions = crd.status?.conditions?;
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout(what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub mod adapter_case;
pub mod chart_rbac;
pub mod control_plane;
pub mod external_scaler;
pub mod fixture;
pub mod helm;
pub mod identity;
pub mod kafka;
pub mod leader;
pub mod metrics_api;
pub mod nats;
pub mod pods;
pub mod postgres;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod relay;
pub mod sqs;

/// A metrics-api source served by the test: `GET /` returns `{"queue": {"depth": N}}`, or HTTP 500
/// while failing.
pub mod source {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The source's controls.
    #[derive(Clone, Default)]
    pub struct MetricSource {
        depth: Arc<AtomicI64>,
        failing: Arc<AtomicBool>,
        requests: Arc<AtomicU64>,
        /// `http://127.0.0.1:<port>/`.
        pub url: String,
    }

    impl MetricSource {
        /// Starts serving on an ephemeral loopback port.
        pub async fn start(depth: i64) -> MetricSource {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind metric source");
            let url = format!("http://{}/", listener.local_addr().expect("local addr"));
            let source = MetricSource {
                url,
                ..Default::default()
            };
            source.set_depth(depth);
            let s = source.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        continue;
                    };
                    let s = s.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        // Keep-alive: answer every request on the connection.
                        loop {
                            let mut read = 0;
                            loop {
                                match conn.read(&mut buf[read..]).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => read += n,
                                }
                                if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") || read == buf.len() {
                                    break;
                                }
                            }
                            s.requests.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = if s.failing.load(Ordering::SeqCst) {
                                ("500 Internal Server Error", "{\"error\": \"broken\"}".to_string())
                            } else {
                                (
                                    "200 OK",
                                    format!(
                                        "{{\"queue\": {{\"depth\": {}}}}}",
                                        s.depth.load(Ordering::SeqCst)
                                    ),
                                )
                            };
                            let response = format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if conn.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            source
        }
        /// Sets the reported depth.
        pub fn set_depth(&self, depth: i64) {
            self.depth.store(depth, Ordering::SeqCst);
        }
        /// Makes every request fail (or succeed again).
        pub fn set_failing(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }
        /// Requests served so far.
        pub fn requests(&self) -> u64 {
            self.requests.load(Ordering::SeqCst)
        }
    }
}

/// `ebb operator` as a child process, killed when dropped.
pub mod operator {
    use std::path::PathBuf;
    use std::process::Stdio;

    use tokio::process::{Child, Command};

    use super::{HarnessError, TestEnv};

    /// The `ebb` binary built by cargo (`EBB_BIN` overrides).
    pub fn ebb_binary() -> PathBuf {
        if let Ok(p) = std::env::var("EBB_BIN") {
            return PathBuf::from(p);
        }
        // target/debug/deps/<test> → target/debug/ebb
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        dir.join("ebb")
    }

    /// A running operator.
    pub struct OperatorProcess {
        child: Child,
        /// Its identity in the Lease.
        pub identity: String,
    }

    impl OperatorProcess {
        /// Starts `ebb operator` watching `namespace`, with its Lease in that namespace.
        pub async fn start(
            env: &TestEnv,
            namespace: &str,
            identity: &str,
            extra: &[&str],
        ) -> Result<Self, HarnessError> {
            let kubeconfig = PathBuf::from(env.var("EBB_KUBECONFIG")?);
            Self::start_with(&kubeconfig, "127.0.0.1:0", namespace, identity, extra).await
        }

        /// Like [`OperatorProcess::start`], with its own kubeconfig (e.g. through a relay) and
        /// health address (`/metrics`).
        pub async fn start_with(
            kubeconfig: &std::path::Path,
            health_addr: &str,
            namespace: &str,
            identity: &str,
            extra: &[&str],
        ) -> Result<Self, HarnessError> {
            let binary = ebb_binary();
            assert!(
                binary.exists(),
                "{} not found: run `cargo build --bin ebb` first",
                binary.display()
            );
            let log_dir = std::env::temp_dir().join("ebb-e2e-logs");
            std::fs::create_dir_all(&log_dir).ok();
            // Appended: a process started again (a restart under supervision) adds to the log.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_dir.join(format!("{namespace}-{identity}.log")))
                .ok();
            let stderr = log.map(Stdio::from).unwrap_or_else(Stdio::null);
            let child = Command::new(binary)
                .args([
                    "operator",
                    "--namespace",
                    namespace,
                    "--identity",
                    identity,
                    "--health-addr",
                    health_addr,
                ])
                .args(extra)
                .env("KUBECONFIG", kubeconfig)
                .env(
                    "RUST_LOG",
                    std::env::var("EBB_E2E_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".to_string()),
                )
                .stdout(Stdio::null())
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| HarnessError::Kubeconfig(format!("cannot start ebb operator: {e}")))?;
            Ok(OperatorProcess {
                child,
                identity: identity.to_string(),
            })
        }

        /// Whether the process has exited (its status, if so).
        pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
            self.child.try_wait().ok().flatten()
        }

        /// Kills the process at once (SIGKILL), as a crash would.
        pub async fn kill(mut self) {
            let _ = self.child.kill().await;
        }

        /// Stops the process with SIGTERM and waits for it.
        pub async fn terminate(mut self) -> Option<std::process::ExitStatus> {
            if let Some(pid) = self.child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait())
                .await
                .ok()?
                .ok()
        }

        /// Where its log goes.
        pub fn log_path(namespace: &str, identity: &str) -> PathBuf {
            std::env::temp_dir()
                .join("ebb-e2e-logs")
                .join(format!("{namespace}-{identity}.log"))
        }
    }
}

/// Kubernetes objects the tests need.
pub mod objects {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    use serde_json::json;

    use super::HarnessError;

    /// Creates a Deployment with `replicas` whose pods stay Pending: their node selector matches no
    /// node, so tests of replica counts cost no containers (tests of real pods use `ebb_tests::pods`).
    pub async fn deployment(
        client: &kube::Client,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> Result<(), HarnessError> {
        let d: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"nodeSelector": {"ebb.test/no-such-node": "true"},
                                      "containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]}}
            }
        }))
        .expect("deployment json");
        Api::<Deployment>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &d)
            .await?;
        Ok(())
    }

    /// Creates a StatefulSet with `replicas` whose pods stay Pending, like [`deployment`]. Its
    /// governing Service (`serviceName`, named after it) is not created: nothing resolves pods.
    pub async fn statefulset(
        client: &kube::Client,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> Result<(), HarnessError> {
        let s: StatefulSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"nodeSelector": {"ebb.test/no-such-node": "true"},
                                      "containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]}}
            }
        }))
        .expect("statefulset json");
        Api::<StatefulSet>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &s)
            .await?;
        Ok(())
    }

    /// Every HPA in `ns` (autoscaling/v2, else v2beta2); empty when unreadable.
    pub async fn hpas(client: &kube::Client, ns: &str) -> Vec<DynamicObject> {
        for version in ["v2", "v2beta2"] {
            let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
            let ar = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            if let Ok(list) = api.list(&Default::default()).await {
                return list.items;
            }
        }
        Vec::new()
    }

    /// The Deployment's `spec.replicas`.
    pub async fn replicas(client: &kube::Client, ns: &str, name: &str) -> Result<i32, HarnessError> {
        let d = Api::<Deployment>::namespaced(client.clone(), ns)
            .get(name)
            .await?;
        Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
    }
}

pub mod adapter;
