//! One fault test's cluster side: the environment, a fresh namespace, a metrics-api source the
//! test controls, and the reads and writes the fault tests make on ScaledObjects, their
//! Deployments and HPAs. Shared by `faults_leader` and `faults_control_plane`.
//!
//! A fixture method that cannot do its job panics with what it waited for: these are test
//! steps, and a failed step ends the test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::objects::{hpas, replicas};
use crate::operator::OperatorProcess;
use crate::source::MetricSource;
use crate::{HarnessError, TestEnv, TestNamespace, install_crds, wait_for};

/// A test's environment, namespace and metrics-api source.
pub struct Fixture {
    /// The environment (its admin client).
    pub env: TestEnv,
    /// The test's namespace.
    pub ns: TestNamespace,
    /// The metrics-api source that [`Fixture::create_so`] triggers on.
    pub source: MetricSource,
}

impl Fixture {
    /// Loads the environment, installs the CRDs, creates a namespace named after `prefix` and
    /// starts a metrics-api source reporting `depth`.
    pub async fn start(prefix: &str, depth: i64) -> Result<Fixture, HarnessError> {
        let env = TestEnv::load().await?;
        install_crds(&env.client).await?;
        let ns = env.namespace(prefix).await?;
        let source = MetricSource::start(depth).await;
        Ok(Fixture { env, ns, source })
    }

    /// The admin client.
    pub fn client(&self) -> Client {
        self.env.client.clone()
    }

    /// The admin kubeconfig, which the operators use.
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.env.var("EBB_KUBECONFIG").unwrap_or_default())
    }

    /// ScaledObjects in the test's namespace.
    pub fn so_api(&self) -> Api<ScaledObject> {
        Api::namespaced(self.client(), &self.ns.name)
    }

    /// The log of the operator `identity` started in this namespace.
    pub fn log(&self, identity: &str) -> PathBuf {
        OperatorProcess::log_path(&self.ns.name, identity)
    }

    /// Creates the ScaledObject `name` on the Deployment `name`, triggered by the fixture's source
    /// (target 5, active above 0, polled every second, cooldown 0), with `spec_extra` merged into
    /// its spec.
    pub async fn create_so(&self, name: &str, spec_extra: Value, annotations: Value) {
        let mut spec = json!({
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 0,
            "triggers": [{"type": "metrics-api", "metadata": {
                "url": self.source.url, "valueLocation": "queue.depth", "targetValue": "5", "activationTargetValue": "0"}}]
        });
        if let Some(extra) = spec_extra.as_object() {
            for (k, v) in extra {
                spec[k] = v.clone();
            }
        }
        self.create_so_spec(name, spec, annotations).await;
    }

    /// Creates the ScaledObject `name` with exactly `spec` (retried while a CRD created moments
    /// ago still answers 503).
    pub async fn create_so_spec(&self, name: &str, spec: Value, annotations: Value) {
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("ScaledObject {name}: {e}"));
        let api = self.so_api();
        wait_for(
            &format!("ScaledObject {name} created"),
            Duration::from_secs(30),
            || async { api.create(&PostParams::default(), &so).await.ok().map(|_| ()) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Merges `annotations` into the ScaledObject's.
    pub async fn annotate(&self, name: &str, annotations: Value) {
        self.so_api()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .unwrap_or_else(|e| panic!("annotate {name}: {e}"));
    }

    /// The Deployment's `spec.replicas`.
    pub async fn replicas(&self, name: &str) -> i32 {
        replicas(&self.client(), &self.ns.name, name)
            .await
            .unwrap_or_else(|e| panic!("replicas of {name}: {e}"))
    }

    /// Waits until `name` has `want` replicas; how long that took from `since`.
    pub async fn wait_replicas(&self, name: &str, want: i32, since: Instant, within: Duration) -> Duration {
        let client = self.client();
        let ns = self.ns.name.clone();
        wait_for(&format!("{name} at {want} replicas"), within, || {
            let client = client.clone();
            let ns = ns.clone();
            async move { (replicas(&client, &ns, name).await.ok()? == want).then_some(()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        since.elapsed()
    }

    /// The ScaledObject's condition `type_`: `(status, reason)`.
    pub async fn condition(&self, so: &str, type_: &str) -> Option<(String, String)> {
        let so = self.so_api().get(so).await.ok()?;
        let c = so.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((c.status, c.reason.unwrap_or_default()))
    }

    /// Waits until the condition `type_` has `status`; returns its reason.
    pub async fn wait_condition(&self, so: &str, type_: &str, status: &str, within: Duration) -> String {
        wait_for(&format!("{so} {type_}={status}"), within, || async {
            self.condition(so, type_).await.filter(|c| c.0 == status)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .1
    }

    /// Every HPA in the namespace ([`crate::objects::hpas`]).
    pub async fn hpas(&self) -> Vec<DynamicObject> {
        hpas(&self.client(), &self.ns.name).await
    }

    /// Whether the HPA `name` exists.
    pub async fn has_hpa(&self, name: &str) -> bool {
        self.hpas()
            .await
            .iter()
            .any(|h| h.metadata.name.as_deref() == Some(name))
    }

    /// Stops `operators` (SIGTERM) and deletes the namespace.
    pub async fn finish(self, operators: Vec<OperatorProcess>) {
        for op in operators {
            op.terminate().await;
        }
        self.ns
            .delete()
            .await
            .unwrap_or_else(|e| panic!("delete the namespace: {e}"));
    }
}
