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
    /// Deletes the namespace (without waiting for finalization).
    pub async fn delete(self) -> Result<(), HarnessError> {
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
                    let mut next = crd.clone();
                    next.metadata.resource_version = existing.metadata.resource_version;
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
