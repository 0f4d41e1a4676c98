//! One end-to-end test's cluster side when the HPA reads ebb's metrics: the environment, a fresh
//! namespace, an `ebb operator` serving external metrics through the API server's aggregation
//! layer, and the reads and writes the tests make on ScaledObjects, Deployments and HPAs. Shared
//! by the `*_e2e` binaries of the triggers (cron, external, prometheus, postgresql, the brokers,
//! scaling modifiers).
//!
//! The external-metrics APIService is cluster-wide, so an [`AdapterCase`] holds it alone while it
//! lives: a mutex serialises the tests of one binary (under `cargo test`), the file lock of
//! [`adapter::lock`] the test processes, and [`adapter::wait_until_free`] waits out processes that
//! take no lock (`tests/demo.sh`). nextest also runs these binaries in its `apiservice` test
//! group (`.config/nextest.toml`).
//!
//! A method without `try_` that cannot do its job panics with what it waited for and whose the
//! APIService is: these are test steps, and a failed step ends the test.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use crate::metrics_api::metric_path;
use crate::objects::{deployment, hpas, replicas};
use crate::operator::OperatorProcess;
use crate::{HarnessError, TestEnv, TestNamespace, adapter, install_crds, wait_for};

/// One test at a time in a test binary: the APIService points at one operator's adapter.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a ScaledObject's creation is retried while a CRD created moments ago answers 503,
/// and how long the ScaledObjects take to become listable.
const CRD_SERVED_WITHIN: Duration = Duration::from_secs(30);

/// `(status, reason, message)` of a ScaledObject condition.
pub type Condition = (String, String, String);

/// A namespace and an operator whose metrics adapter the external-metrics APIService points at.
pub struct AdapterCase {
    /// The environment (its admin client).
    pub env: TestEnv,
    /// The test's namespace.
    pub ns: TestNamespace,
    /// The operator's `/healthz` and `/metrics` address (`127.0.0.1:<port>`).
    pub health: String,
    /// The bound of every wait of the case (the HPA's sync, the triggers' sources).
    pub within: Duration,
    operator: OperatorProcess,
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _apiservice_lock: std::fs::File,
}

impl AdapterCase {
    /// Takes the APIService (see the module), installs the CRDs, creates a namespace named after
    /// `prefix`, starts an operator there with `--metrics-adapter-addr` and `operator_args`,
    /// registers its adapter, and waits until ScaledObjects can be listed. `within` bounds the
    /// case's waits.
    pub async fn start(prefix: &str, within: Duration, operator_args: &[&str]) -> AdapterCase {
        let serial = SERIAL.lock().await;
        let apiservice_lock = adapter::lock().await;
        let started = Instant::now();
        let env = TestEnv::load().await.unwrap_or_else(|e| panic!("{e}"));
        install_crds(&env.client)
            .await
            .unwrap_or_else(|e| panic!("install the CRDs: {e}"));
        let ns = env
            .namespace(prefix)
            .await
            .unwrap_or_else(|e| panic!("create a namespace: {e}"));
        adapter::wait_until_free(&env.client).await;
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let health = crate::leader::free_local_addr();
        let kubeconfig = PathBuf::from(env.var("EBB_KUBECONFIG").unwrap_or_else(|e| panic!("{e}")));
        let mut args = vec!["--metrics-adapter-addr", addr.as_str()];
        args.extend_from_slice(operator_args);
        let operator = OperatorProcess::start_with(&kubeconfig, &health, &ns.name, "op", &args)
            .await
            .unwrap_or_else(|e| panic!("start the operator: {e}"));
        adapter::register(&env.client, &ns.name, port)
            .await
            .unwrap_or_else(|e| panic!("register the adapter: {e}"));
        // The CRD's resources answer 503 for a moment after the CRD is (re)created.
        let so_api: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns.name);
        wait_for("ScaledObjects listable", CRD_SERVED_WITHIN, || async {
            so_api.list(&ListParams::default()).await.ok().map(|_| ())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[{}] setup (operator, APIService Available): {:?}",
            ns.name,
            started.elapsed()
        );
        AdapterCase {
            env,
            ns,
            health,
            within,
            operator,
            _serial: serial,
            _apiservice_lock: apiservice_lock,
        }
    }

    /// The admin client.
    pub fn client(&self) -> Client {
        self.env.client.clone()
    }

    /// ScaledObjects in the test's namespace.
    pub fn so_api(&self) -> Api<ScaledObject> {
        Api::namespaced(self.client(), &self.ns.name)
    }

    /// Creates the Deployment `name` at `replicas`, its pods never scheduled
    /// ([`crate::objects::deployment`]).
    pub async fn deployment(&self, name: &str, replicas: i32) {
        deployment(&self.env.client, &self.ns.name, name, replicas)
            .await
            .unwrap_or_else(|e| panic!("create the Deployment {name}: {e}"));
    }

    /// Creates the ScaledObject `name` with `spec`, retried while the server is not ready for it
    /// (a CRD created moments ago answers 503); a refusal (400, 403, 409, 422) fails at once.
    pub async fn create(&self, name: &str, spec: Value) {
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap_or_else(|e| panic!("ScaledObject {name}: {e}"));
        let api = self.so_api();
        let last = Mutex::new(String::new());
        let created = wait_for(
            &format!("ScaledObject {name} created"),
            CRD_SERVED_WITHIN,
            || async {
                match api.create(&PostParams::default(), &so).await {
                    Ok(_) => Some(Ok(())),
                    Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 409 | 422) => Some(Err(e)),
                    Err(e) => {
                        *last.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                        None
                    }
                }
            },
        )
        .await;
        match created {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("ScaledObject {name} refused: {e}"),
            Err(e) => panic!(
                "{e}; last error: {}",
                last.lock().unwrap_or_else(|p| p.into_inner())
            ),
        }
    }

    /// The Deployment's `spec.replicas`.
    pub async fn replicas(&self, name: &str) -> i32 {
        replicas(&self.env.client, &self.ns.name, name)
            .await
            .unwrap_or_else(|e| panic!("replicas of {name}: {e}"))
    }

    /// Waits (up to [`AdapterCase::within`]) until the Deployment `name` has `want` replicas;
    /// how long that took.
    pub async fn try_wait_replicas(&self, name: &str, want: i32) -> Result<Duration, HarnessError> {
        let start = Instant::now();
        let (client, ns) = (&self.env.client, self.ns.name.as_str());
        wait_for(
            &format!("{name} at {want} replicas"),
            self.within,
            || async move { (replicas(client, ns, name).await.ok()? == want).then_some(()) },
        )
        .await?;
        Ok(start.elapsed())
    }

    /// [`AdapterCase::try_wait_replicas`], or a panic that says whose the APIService is.
    pub async fn wait_replicas(&self, name: &str, want: i32) -> Duration {
        let result = self.try_wait_replicas(name, want).await;
        self.or_diagnose(result).await
    }

    /// The ScaledObject `so`'s condition `type_`.
    pub async fn condition(&self, so: &str, type_: &str) -> Option<Condition> {
        let so = self.so_api().get(so).await.ok()?;
        let c = so.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((
            c.status,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        ))
    }

    /// Waits (up to [`AdapterCase::within`]) until the condition `type_` of `so` has `status`.
    pub async fn try_wait_condition(
        &self,
        so: &str,
        type_: &str,
        status: &str,
    ) -> Result<Condition, HarnessError> {
        wait_for(&format!("{so} {type_}={status}"), self.within, || async {
            self.condition(so, type_).await.filter(|c| c.0 == status)
        })
        .await
    }

    /// [`AdapterCase::try_wait_condition`], or a panic with the object's status and whose the
    /// APIService is.
    pub async fn wait_condition(&self, so: &str, type_: &str, status: &str) -> Condition {
        match self.try_wait_condition(so, type_, status).await {
            Ok(c) => c,
            Err(e) => panic!(
                "{e}; {}; the APIService is {}",
                self.status_text(so).await,
                self.apiservice_owner().await
            ),
        }
    }

    /// The ScaledObject `so`'s status, or why there is none, for a failure message.
    pub async fn status_text(&self, so: &str) -> String {
        match self.so_api().get(so).await {
            Ok(so) => format!("status: {:?}", so.status),
            Err(e) => format!("no ScaledObject: {e}"),
        }
    }

    /// Whose the external-metrics APIService is, for a failure message: another process may
    /// have registered it over this test's, and the HPA then reads nothing from this operator.
    pub async fn apiservice_owner(&self) -> String {
        match adapter::owner(&self.env.client).await {
            Some((ns, _)) if ns == self.ns.name => "this test's".to_string(),
            Some((ns, port)) => {
                format!("ANOTHER PROCESS'S (namespace {ns}, port {port}: it was registered over this test's)")
            }
            None => "nobody's (deleted)".to_string(),
        }
    }

    /// The value of `result`, or a panic with its error and whose the APIService is.
    pub async fn or_diagnose<T>(&self, result: Result<T, HarnessError>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => panic!("{e}; the APIService is {}", self.apiservice_owner().await),
        }
    }

    /// Every HPA in the namespace ([`crate::objects::hpas`]).
    pub async fn hpas(&self) -> Vec<DynamicObject> {
        hpas(&self.env.client, &self.ns.name).await
    }

    /// The HPA whose `scaleTargetRef` is `target` (the one ebb owns for the ScaledObject on it).
    pub async fn hpa(&self, target: &str) -> Option<DynamicObject> {
        self.hpas()
            .await
            .into_iter()
            .find(|h| h.data["spec"]["scaleTargetRef"]["name"] == target)
    }

    /// The value of `metric` of the ScaledObject `so` as the HPA reads it: through the API
    /// server's aggregation layer. `None` when it answers no value.
    pub async fn metric_value(&self, so: &str, metric: &str) -> Option<String> {
        let path = metric_path(&self.ns.name, so, metric);
        let request = http::Request::get(&path).body(Vec::new()).ok()?;
        let body = self.env.client.request_text(request).await.ok()?;
        let list: Value = serde_json::from_str(&body).ok()?;
        list["items"][0]["value"].as_str().map(str::to_string)
    }

    /// Waits (up to [`AdapterCase::within`]) until `metric` of `so` reads `want` through the
    /// aggregator; how long that took. The error names the last value read.
    pub async fn try_wait_metric(
        &self,
        so: &str,
        metric: &str,
        want: &str,
    ) -> Result<Duration, HarnessError> {
        let start = Instant::now();
        let what = format!("{metric} = {want} through the aggregator");
        let found = wait_for(&what, self.within, || async {
            self.metric_value(so, metric).await.filter(|v| v == want)
        })
        .await;
        match found {
            Ok(_) => Ok(start.elapsed()),
            Err(_) => {
                let last = self.metric_value(so, metric).await;
                Err(HarnessError::Timeout(format!("{what}; last: {last:?}")))
            }
        }
    }

    /// [`AdapterCase::try_wait_metric`], or a panic that says whose the APIService is.
    pub async fn wait_metric(&self, so: &str, metric: &str, want: &str) -> Duration {
        let result = self.try_wait_metric(so, metric, want).await;
        self.or_diagnose(result).await
    }

    /// Deletes every ScaledObject while the operator still runs (it removes its finalizers and
    /// HPAs) and waits until they are gone, then unregisters the APIService, stops the operator
    /// (SIGTERM) and deletes the namespace.
    pub async fn finish(self) {
        let so_api = self.so_api();
        let list = so_api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list the ScaledObjects: {e}"));
        for so in list.items {
            let name = so.metadata.name.unwrap_or_default();
            so_api
                .delete(&name, &Default::default())
                .await
                .unwrap_or_else(|e| panic!("delete the ScaledObject {name}: {e}"));
        }
        wait_for("the ScaledObjects finalized", self.within, || async {
            let list = so_api.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        adapter::unregister(&self.env.client).await;
        self.operator.terminate().await;
        self.ns
            .delete()
            .await
            .unwrap_or_else(|e| panic!("delete the namespace: {e}"));
    }
}
