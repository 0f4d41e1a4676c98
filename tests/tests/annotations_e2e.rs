//! Scaling declared with annotations on a Deployment or StatefulSet, end to end: `ebb operator`
//! against the real API server and kube-controller-manager (HPA, garbage collector) and the test
//! environment's Tansu broker. The operator turns a workload's annotations into the ScaledObject
//! `<name>-deployment` / `<name>-statefulset` it owns; these tests check what users see: replica
//! counts on the workload's spec, the generated object and its HPA, and the Events.
//!
//! The operator runs as a ServiceAccount with exactly the RBAC the chart renders (`helm
//! template`): its ClusterRoles, Roles and bindings are created under a unique release name and
//! bound to that account, so a right the feature needs and the chart lacks fails here.
//!
//! Only the lag test registers the cluster-wide external-metrics APIService (the HPA reads the
//! lag through ebb's adapter); `.config/nextest.toml` puts it in the `apiservice` group. The other
//! tests run their operator without the adapter. Pods stay Pending (no node needed).
//!
//! Each test's steps run under `catch_unwind`, so a failed step still stops the operator and
//! removes the namespace, the cluster-wide RBAC objects and the APIService before the test fails:
//! the environment is shared, and a dangling APIService would block namespace deletion for all.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_crds::annotated::{GENERATED_FROM, GENERATED_LABEL, SCALED_OBJECT, TRIGGER};
use ebb_tests::chart_rbac::ChartRbac;
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, TestNamespace, install_crds, wait_for};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const PARTITIONS: i32 = 6;
const KAFKA: &str = "kafka.autoscaling.ebb.dev/";
const ANN: &str = "autoscaling.ebb.dev/";

/// How a test's operator runs.
#[derive(Default)]
struct Options {
    /// Serve the metrics adapter and register it (the HPA then reads the lag).
    adapter: bool,
    /// Start the operator with `--workload-annotations=false` (and the chart's RBAC for that).
    disabled: bool,
}

/// One test's namespace, operator (under the chart's RBAC) and Kafka topic.
struct Setup {
    env: TestEnv,
    ns: TestNamespace,
    rbac: Option<ChartRbac>,
    operator: Option<OperatorProcess>,
    adapter: bool,
    bootstrap: String,
    admin: KafkaAdmin,
    topic: String,
    group: String,
}

impl Setup {
    /// A namespace, the chart's RBAC, an operator running as its ServiceAccount, and a 6-partition
    /// topic whose group committed offset 0 everywhere (no lag).
    async fn start(prefix: &str, options: Options) -> Setup {
        let env = TestEnv::load().await.unwrap();
        install_crds(&env.client).await.unwrap();
        let ns = env.namespace(prefix).await.unwrap();
        let enabled = format!("workloadAnnotations.enabled={}", !options.disabled);
        let rbac = ChartRbac::install(&env, &ns.name, "ebb-ann", &[&enabled]).await;
        let mut extra: Vec<String> = vec!["--lease-name".into(), rbac.lease_name.clone()];
        let mut port = None;
        if options.adapter {
            let p = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            extra.extend(["--metrics-adapter-addr".into(), format!("127.0.0.1:{p}")]);
            port = Some(p);
        }
        if options.disabled {
            extra.push("--workload-annotations=false".into());
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let operator =
            OperatorProcess::start_with(&rbac.identity.kubeconfig, "127.0.0.1:0", &ns.name, "op", &extra)
                .await
                .unwrap();
        if let Some(port) = port {
            ebb_tests::adapter::register(&env.client, &ns.name, port)
                .await
                .unwrap();
        }
        let bootstrap = env.var("EBB_KAFKA_BOOTSTRAP").unwrap().to_string();
        let mut admin = KafkaAdmin::connect(&bootstrap).await.unwrap();
        let topic = unique_name("orders");
        let group = unique_name("workers");
        admin.create_topic(&topic, PARTITIONS).await.unwrap();
        let zeros: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        admin.commit(&group, &topic, &zeros).await.unwrap();
        Setup {
            env,
            ns,
            rbac: Some(rbac),
            operator: Some(operator),
            adapter: options.adapter,
            bootstrap,
            admin,
            topic,
            group,
        }
    }

    fn client(&self) -> Client {
        self.env.client.clone()
    }

    fn so_api(&self) -> Api<ScaledObject> {
        Api::namespaced(self.client(), &self.ns.name)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client(), &self.ns.name)
    }

    /// The short form on the test's topic: kafka, lag threshold 5, 0..=10 replicas, polled every
    /// 2 s, cooldown 3 s.
    fn short_form(&self) -> Value {
        json!({
            TRIGGER: "kafka",
            format!("{ANN}min-replicas"): "0",
            format!("{ANN}max-replicas"): "10",
            format!("{ANN}polling-interval"): "2",
            format!("{ANN}cooldown-period"): "3",
            format!("{KAFKA}bootstrapServers"): self.bootstrap,
            format!("{KAFKA}consumerGroup"): self.group,
            format!("{KAFKA}topic"): self.topic,
            format!("{KAFKA}lagThreshold"): "5",
        })
    }

    /// Merges `annotations` into the Deployment's (a `null` value removes the key).
    async fn annotate(&self, name: &str, annotations: Value) {
        self.deployments()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .unwrap_or_else(|e| panic!("annotate Deployment {name}: {e}"));
    }

    async fn replicas(&self, name: &str) -> i32 {
        replicas(&self.client(), &self.ns.name, name).await.unwrap()
    }

    async fn wait_replicas(&self, name: &str, want: i32, within: Duration) -> Duration {
        let start = Instant::now();
        let client = self.client();
        let ns = self.ns.name.clone();
        let reached = wait_for(&format!("{name} at {want} replicas"), within, || {
            let client = client.clone();
            let ns = ns.clone();
            async move { (replicas(&client, &ns, name).await.ok()? == want).then_some(()) }
        })
        .await;
        if let Err(e) = reached {
            panic!(
                "{e}: at {} replicas; events: {}",
                self.replicas(name).await,
                self.describe_events().await
            );
        }
        start.elapsed()
    }

    /// Waits until the ScaledObject `name` exists; returns it.
    async fn wait_so(&self, name: &str, within: Duration) -> ScaledObject {
        let api = self.so_api();
        let found = wait_for(&format!("ScaledObject {name}"), within, || async {
            api.get_opt(name).await.ok().flatten()
        })
        .await;
        match found {
            Ok(so) => so,
            Err(e) => panic!("{e}; events: {}", self.describe_events().await),
        }
    }

    /// Waits until the ScaledObject `name` is gone.
    async fn wait_so_gone(&self, name: &str, within: Duration) -> Duration {
        let start = Instant::now();
        let api = self.so_api();
        let gone = wait_for(&format!("ScaledObject {name} gone"), within, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
        if let Err(e) = gone {
            panic!("{e}; events: {}", self.describe_events().await);
        }
        start.elapsed()
    }

    /// Names of the ScaledObjects in the namespace.
    async fn so_names(&self) -> Vec<String> {
        self.so_api()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|so| so.metadata.name)
            .collect()
    }

    async fn wait_ready(&self, so: &str, within: Duration) {
        let api = self.so_api();
        let ready = wait_for(&format!("{so} Ready=True"), within, || async {
            let status = api.get(so).await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
        if let Err(e) = ready {
            let status = api.get(so).await.ok().and_then(|o| o.status);
            panic!(
                "{e}; status: {status:?}; events: {}",
                self.describe_events().await
            );
        }
    }

    /// The HPA `name` (autoscaling/v2, else v2beta2).
    async fn hpa(&self, name: &str) -> Option<DynamicObject> {
        for version in ["v2", "v2beta2"] {
            let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
            let ar = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
            let api: Api<DynamicObject> = Api::namespaced_with(self.client(), &self.ns.name, &ar);
            if let Ok(Some(found)) = api.get_opt(name).await {
                return Some(found);
            }
        }
        None
    }

    /// Every events.k8s.io/v1 Event of the namespace.
    async fn events(&self) -> Vec<Event> {
        Api::<Event>::namespaced(self.client(), &self.ns.name)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Waits for an Event `reason` about `kind/name` whose note holds every one of `note_has`.
    async fn wait_event(
        &self,
        reason: &str,
        kind: &str,
        name: &str,
        note_has: &[&str],
        within: Duration,
    ) -> Event {
        let found = wait_for(
            &format!("Event {reason} on {kind}/{name} with {note_has:?}"),
            within,
            || async {
                self.events().await.into_iter().find(|e| {
                    let about = e.regarding.as_ref();
                    e.reason.as_deref() == Some(reason)
                        && about.and_then(|r| r.kind.as_deref()) == Some(kind)
                        && about.and_then(|r| r.name.as_deref()) == Some(name)
                        && note_has
                            .iter()
                            .all(|s| e.note.as_deref().unwrap_or_default().contains(s))
                })
            },
        )
        .await;
        match found {
            Ok(e) => e,
            Err(e) => panic!("{e}; events: {}", self.describe_events().await),
        }
    }

    /// One line per Event (for failure messages).
    async fn describe_events(&self) -> String {
        let lines: Vec<String> = self
            .events()
            .await
            .iter()
            .map(|e| {
                let about = e.regarding.as_ref();
                format!(
                    "{} {} {}/{}{}: {}",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    about.and_then(|r| r.kind.as_deref()).unwrap_or("?"),
                    about.and_then(|r| r.name.as_deref()).unwrap_or("?"),
                    e.series
                        .as_ref()
                        .map(|s| format!(" (seen {} times)", s.count))
                        .unwrap_or_default(),
                    e.note.as_deref().unwrap_or_default()
                )
            })
            // The scheduler's complaints about the Pending pods say nothing here.
            .filter(|line| !line.contains("FailedScheduling"))
            .collect();
        format!("[{}] (operator log: {})", lines.join("; "), self.log().display())
    }

    fn log(&self) -> PathBuf {
        OperatorProcess::log_path(&self.ns.name, "op")
    }

    /// Stops the operator and removes what the test created (the APIService too), also after a
    /// failed step; then fails the test with that step's panic, if any.
    async fn finish(mut self, outcome: Result<(), Box<dyn std::any::Any + Send>>) {
        if self.adapter {
            ebb_tests::adapter::unregister(&self.env.client).await;
        }
        if let Some(op) = self.operator.take() {
            op.terminate().await;
        }
        if let Some(rbac) = self.rbac.take() {
            rbac.delete(&self.env.client).await;
        }
        self.ns.delete().await.unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The ScaledObject's metadata and spec as JSON.
fn as_json(so: &ScaledObject) -> Value {
    serde_json::to_value(so).unwrap()
}

/// Asserts that `so` is the object generated for `kind/name`: label, source annotation, and the
/// workload (uid `uid`) as its controlling owner.
fn assert_generated(so: &ScaledObject, kind: &str, name: &str, uid: &str) {
    let labels = so.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(GENERATED_LABEL).map(String::as_str),
        Some("true"),
        "{labels:?}"
    );
    let annotations = so.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(GENERATED_FROM).cloned(),
        Some(format!("{kind}/{name}")),
        "{annotations:?}"
    );
    let owners = so.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].api_version, "apps/v1");
    assert_eq!(owners[0].kind, kind);
    assert_eq!(owners[0].name, name);
    assert_eq!(owners[0].uid, uid);
    assert_eq!(owners[0].controller, Some(true));
    let spec = &as_json(so)["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], name);
    let target_kind = spec["scaleTargetRef"]["kind"].as_str().unwrap_or("Deployment");
    assert_eq!(target_kind, kind);
}

/// The HPA's first metric target (`spec.metrics[0].external.target`).
fn metric_target(hpa: &DynamicObject) -> Value {
    hpa.data["spec"]["metrics"][0]["external"]["target"].clone()
}

/// Annotations that remove every key of `annotations` in a merge patch.
fn removal(annotations: &Value) -> Value {
    let keys: BTreeMap<String, Value> = annotations
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), Value::Null))
        .collect();
    serde_json::to_value(keys).unwrap()
}

async fn uid_of_deployment(s: &Setup, name: &str) -> String {
    s.deployments().get(name).await.unwrap().metadata.uid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_form_scales_on_lag_follows_edits_and_goes_with_its_annotations() {
    let mut s = Setup::start(
        "e2e-ann-lag",
        Options {
            adapter: true,
            ..Default::default()
        },
    )
    .await;
    let outcome = AssertUnwindSafe(lag_and_edits(&mut s)).catch_unwind().await;
    s.finish(outcome).await;
}

async fn lag_and_edits(s: &mut Setup) {
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    let uid = uid_of_deployment(s, "worker").await;
    let declared = s.short_form();
    let annotated = Instant::now();
    s.annotate("worker", declared.clone()).await;

    // The generated object, owned by the Deployment, and its HPA.
    let so = s.wait_so("worker-deployment", Duration::from_secs(15)).await;
    eprintln!(
        "annotations → ScaledObject worker-deployment in {:?}",
        annotated.elapsed()
    );
    assert_generated(&so, "Deployment", "worker", &uid);
    let spec = &as_json(&so)["spec"];
    assert_eq!(spec["minReplicaCount"], 0);
    assert_eq!(spec["maxReplicaCount"], 10);
    assert_eq!(spec["pollingInterval"], 2);
    assert_eq!(spec["cooldownPeriod"], 3);
    assert_eq!(spec["triggers"].as_array().map(Vec::len), Some(1));
    assert_eq!(spec["triggers"][0]["type"], "kafka");
    assert_eq!(spec["triggers"][0]["metadata"]["topic"], s.topic.as_str());
    assert_eq!(spec["triggers"][0]["metadata"]["lagThreshold"], "5");
    let generated = s
        .wait_event(
            "ScaledObjectGenerated",
            "Deployment",
            "worker",
            &["worker-deployment"],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(generated.type_.as_deref(), Some("Normal"));
    s.wait_ready("worker-deployment", Duration::from_secs(30)).await;
    let hpa = wait_for("HPA ebb-hpa-worker-deployment", Duration::from_secs(15), || {
        s.hpa("ebb-hpa-worker-deployment")
    })
    .await
    .unwrap();
    assert_eq!(hpa.data["spec"]["maxReplicas"], 10);
    assert_eq!(
        metric_target(&hpa)["averageValue"],
        "5",
        "{}",
        metric_target(&hpa)
    );
    assert_eq!(s.replicas("worker").await, 0);

    // Lag 3: 0 → 1 (ebb).
    let produced = Instant::now();
    s.admin.produce(&s.topic, PARTITIONS, 3).await.unwrap();
    s.wait_replicas("worker", 1, Duration::from_secs(15)).await;
    eprintln!("lag 3 → 1 replica in {:?}", produced.elapsed());
    // Lag 103: ceil(103/5) = 21, capped at the 6 partitions (the HPA, through ebb's adapter).
    let produced = Instant::now();
    s.admin.produce(&s.topic, PARTITIONS, 100).await.unwrap();
    s.wait_replicas("worker", PARTITIONS, Duration::from_secs(90))
        .await;
    eprintln!("lag 103 → {PARTITIONS} replicas in {:?}", produced.elapsed());
    // Everything consumed: back to 0 after the 3 s cooldown.
    let committed = Instant::now();
    s.admin
        .commit_to_end(&s.group, &s.topic, PARTITIONS)
        .await
        .unwrap();
    s.wait_replicas("worker", 0, Duration::from_secs(60)).await;
    eprintln!("lag 0 → 0 replicas in {:?}", committed.elapsed());

    // Editing the threshold updates the object and the HPA's target.
    let edited = Instant::now();
    s.annotate("worker", json!({format!("{KAFKA}lagThreshold"): "50"}))
        .await;
    let target = wait_for("HPA target 50", Duration::from_secs(20), || async {
        let hpa = s.hpa("ebb-hpa-worker-deployment").await?;
        let target = metric_target(&hpa);
        (target["averageValue"] == "50").then_some(target)
    })
    .await;
    let target = match target {
        Ok(t) => t,
        Err(e) => panic!(
            "{e}: HPA target {:?}; events: {}",
            s.hpa("ebb-hpa-worker-deployment")
                .await
                .map(|h| metric_target(&h)),
            s.describe_events().await
        ),
    };
    eprintln!(
        "lagThreshold 5 → 50: HPA target {target} after {:?}",
        edited.elapsed()
    );
    assert_eq!(target["type"], "AverageValue");
    let now = s.so_api().get("worker-deployment").await.unwrap();
    assert_eq!(
        as_json(&now)["spec"]["triggers"][0]["metadata"]["lagThreshold"],
        "50"
    );
    assert_eq!(now.metadata.uid, so.metadata.uid, "replaced instead of updated");
    let updated = s
        .wait_event(
            "ScaledObjectUpdated",
            "Deployment",
            "worker",
            &[],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(updated.type_.as_deref(), Some("Normal"));

    // Lag 120 at threshold 50: ceil(120/50) = 3 replicas.
    s.admin.produce(&s.topic, PARTITIONS, 120).await.unwrap();
    s.wait_replicas("worker", 3, Duration::from_secs(90)).await;

    // Removing the annotations removes the object and (garbage collector) its HPA; the
    // Deployment keeps its 3 replicas although the lag is still there.
    let removed = Instant::now();
    s.annotate("worker", removal(&declared)).await;
    s.wait_so_gone("worker-deployment", Duration::from_secs(20)).await;
    let so_gone = removed.elapsed();
    wait_for("HPA gone", Duration::from_secs(30), || async {
        s.hpa("ebb-hpa-worker-deployment").await.is_none().then_some(())
    })
    .await
    .unwrap();
    eprintln!(
        "annotations removed → ScaledObject gone in {so_gone:?}, HPA gone in {:?}",
        removed.elapsed()
    );
    let event = s
        .wait_event(
            "ScaledObjectRemoved",
            "Deployment",
            "worker",
            &[],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s.replicas("worker").await, 3);
    assert!(s.so_names().await.is_empty(), "{:?}", s.so_names().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_scaled_object_wins_over_the_annotations() {
    let s = Setup::start("e2e-ann-conflict", Options::default()).await;
    let outcome = AssertUnwindSafe(conflict(&s)).catch_unwind().await;
    s.finish(outcome).await;
}

async fn conflict(s: &Setup) {
    let manual = |target: &str| -> ScaledObject {
        serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": format!("{target}-by-hand")},
            "spec": {"scaleTargetRef": {"name": target}, "pollingInterval": 2,
                     "triggers": [{"type": "kafka", "metadata": {
                         "bootstrapServers": s.bootstrap, "consumerGroup": s.group, "topic": s.topic,
                         "lagThreshold": "7"}}]}
        }))
        .unwrap()
    };

    // The generated object exists first; a hand-written one appears: the generated one goes.
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.annotate("worker", s.short_form()).await;
    s.wait_so("worker-deployment", Duration::from_secs(15)).await;
    s.so_api()
        .create(&PostParams::default(), &manual("worker"))
        .await
        .unwrap();
    let took = s.wait_so_gone("worker-deployment", Duration::from_secs(15)).await;
    eprintln!("hand-written ScaledObject → generated one deleted in {took:?}");
    let ignored = s
        .wait_event(
            "ScalingAnnotationsIgnored",
            "Deployment",
            "worker",
            &["worker-by-hand"],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(ignored.type_.as_deref(), Some("Warning"));
    // The hand-written one is left as written, and the generated one stays away (also when the
    // annotations change meanwhile).
    s.annotate("worker", json!({format!("{ANN}max-replicas"): "4"}))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.so_names().await, ["worker-by-hand"]);
    let by_hand = s.so_api().get("worker-by-hand").await.unwrap();
    assert!(
        !by_hand.labels().contains_key(GENERATED_LABEL),
        "{:?}",
        by_hand.labels()
    );
    assert_eq!(
        by_hand.metadata.generation,
        Some(1),
        "the hand-written spec was changed"
    );
    assert_eq!(
        as_json(&by_hand)["spec"]["triggers"][0]["metadata"]["lagThreshold"],
        "7"
    );

    // A hand-written object first: the generated one is never created.
    deployment(&s.client(), &s.ns.name, "other", 0).await.unwrap();
    s.so_api()
        .create(&PostParams::default(), &manual("other"))
        .await
        .unwrap();
    // (Ready: the operator has seen it before the annotations arrive.)
    s.wait_ready("other-by-hand", Duration::from_secs(30)).await;
    s.annotate("other", s.short_form()).await;
    s.wait_event(
        "ScalingAnnotationsIgnored",
        "Deployment",
        "other",
        &["other-by-hand"],
        Duration::from_secs(15),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut names = s.so_names().await;
    names.sort();
    assert_eq!(names, ["other-by-hand", "worker-by-hand"]);
    let generated: Vec<Event> = s
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ScaledObjectGenerated")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("other")
        })
        .collect();
    assert!(generated.is_empty(), "generated for other: {generated:?}");

    // The hand-written one deleted: the annotations apply again.
    let deleted = Instant::now();
    s.so_api()
        .delete("worker-by-hand", &DeleteParams::default())
        .await
        .unwrap();
    let so = s.wait_so("worker-deployment", Duration::from_secs(20)).await;
    eprintln!(
        "hand-written ScaledObject deleted → generated one back in {:?}",
        deleted.elapsed()
    );
    let uid = uid_of_deployment(s, "worker").await;
    assert_generated(&so, "Deployment", "worker", &uid);
    assert_eq!(so.spec.max_replica_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_annotations_are_reported_and_touch_nothing() {
    let s = Setup::start("e2e-ann-invalid", Options::default()).await;
    let outcome = AssertUnwindSafe(invalid(&s)).catch_unwind().await;
    s.finish(outcome).await;
}

async fn invalid(s: &Setup) {
    deployment(&s.client(), &s.ns.name, "worker", 2).await.unwrap();
    let mut declared = s.short_form();
    declared[format!("{ANN}max-replicas")] = json!("lots");
    s.annotate("worker", declared).await;

    // A field the annotations cannot hold.
    let invalid = s
        .wait_event(
            "ScalingAnnotationsInvalid",
            "Deployment",
            "worker",
            &["autoscaling.ebb.dev/max-replicas", "lots"],
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(invalid.type_.as_deref(), Some("Warning"));
    eprintln!("invalid: {}", invalid.note.as_deref().unwrap_or_default());
    // A trigger parameter the kafka trigger rejects.
    s.annotate(
        "worker",
        json!({format!("{ANN}max-replicas"): "4", format!("{KAFKA}lagThreshold"): "many"}),
    )
    .await;
    let invalid = s
        .wait_event(
            "ScalingAnnotationsInvalid",
            "Deployment",
            "worker",
            &["kafka.autoscaling.ebb.dev/lagThreshold"],
            Duration::from_secs(15),
        )
        .await;
    eprintln!("invalid: {}", invalid.note.as_deref().unwrap_or_default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.so_names().await.is_empty(), "{:?}", s.so_names().await);
    assert_eq!(s.replicas("worker").await, 2);

    // Fixed: the object is generated.
    s.annotate("worker", json!({format!("{KAFKA}lagThreshold"): "5"}))
        .await;
    let so = s.wait_so("worker-deployment", Duration::from_secs(15)).await;
    assert_eq!(so.spec.max_replica_count, 4);

    // Broken again: the object generated before is kept as it was.
    s.wait_ready("worker-deployment", Duration::from_secs(30)).await;
    let before = s.so_api().get("worker-deployment").await.unwrap();
    s.annotate("worker", json!({format!("{ANN}max-replicas"): "several"}))
        .await;
    s.wait_event(
        "ScalingAnnotationsInvalid",
        "Deployment",
        "worker",
        &["autoscaling.ebb.dev/max-replicas", "several"],
        Duration::from_secs(15),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = s.so_api().get("worker-deployment").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(as_json(&after)["spec"], as_json(&before)["spec"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_of_the_generated_object_is_reverted() {
    let s = Setup::start("e2e-ann-revert", Options::default()).await;
    let outcome = AssertUnwindSafe(revert(&s)).catch_unwind().await;
    s.finish(outcome).await;
}

async fn revert(s: &Setup) {
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.annotate("worker", s.short_form()).await;
    let so = s.wait_so("worker-deployment", Duration::from_secs(15)).await;
    assert_eq!(so.spec.max_replica_count, 10);

    let edited = Instant::now();
    s.so_api()
        .patch(
            "worker-deployment",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicaCount": 99}})),
        )
        .await
        .unwrap();
    let reverted = wait_for("maxReplicaCount back at 10", Duration::from_secs(10), || async {
        let so = s.so_api().get("worker-deployment").await.ok()?;
        (so.spec.max_replica_count == 10).then_some(())
    })
    .await;
    if let Err(e) = reverted {
        panic!("{e}; events: {}", s.describe_events().await);
    }
    eprintln!("hand edit reverted in {:?}", edited.elapsed());
    let event = s
        .wait_event(
            "GeneratedObjectReverted",
            "ScaledObject",
            "worker-deployment",
            &[],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    eprintln!("reverted: {}", event.note.as_deref().unwrap_or_default());
    // Still the same object, still at 10 a little later (no fight with a stale cache).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = s.so_api().get("worker-deployment").await.unwrap();
    assert_eq!(now.metadata.uid, so.metadata.uid);
    assert_eq!(now.spec.max_replica_count, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_with_the_full_form_gets_two_triggers() {
    let s = Setup::start("e2e-ann-sts", Options::default()).await;
    let outcome = AssertUnwindSafe(statefulset_full_form(&s)).catch_unwind().await;
    s.finish(outcome).await;
}

async fn statefulset_full_form(s: &Setup) {
    let source = MetricSource::start(0).await;
    ebb_tests::objects::statefulset(&s.client(), &s.ns.name, "store", 0)
        .await
        .unwrap();
    let full = format!(
        "minReplicaCount: 0\n\
         maxReplicaCount: 4\n\
         pollingInterval: 1\n\
         cooldownPeriod: 2\n\
         triggers:\n\
         - type: kafka\n\
        \x20 metadata:\n\
        \x20   bootstrapServers: {}\n\
        \x20   consumerGroup: {}\n\
        \x20   topic: {}\n\
        \x20   lagThreshold: \"5\"\n\
         - type: metrics-api\n\
        \x20 metadata:\n\
        \x20   url: {}\n\
        \x20   valueLocation: queue.depth\n\
        \x20   targetValue: \"5\"\n\
        \x20   activationTargetValue: \"0\"\n",
        s.bootstrap, s.group, s.topic, source.url
    );
    let sts: Api<StatefulSet> = Api::namespaced(s.client(), &s.ns.name);
    sts.patch(
        "store",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {SCALED_OBJECT: full}}})),
    )
    .await
    .unwrap();
    let so = s.wait_so("store-statefulset", Duration::from_secs(15)).await;
    let uid = sts.get("store").await.unwrap().metadata.uid.unwrap();
    assert_generated(&so, "StatefulSet", "store", &uid);
    let spec = &as_json(&so)["spec"];
    assert_eq!(spec["maxReplicaCount"], 4);
    let types: Vec<&str> = spec["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert_eq!(types, ["kafka", "metrics-api"]);
    s.wait_event(
        "ScaledObjectGenerated",
        "StatefulSet",
        "store",
        &[],
        Duration::from_secs(10),
    )
    .await;
    s.wait_ready("store-statefulset", Duration::from_secs(30)).await;
    let hpa = wait_for("HPA ebb-hpa-store-statefulset", Duration::from_secs(15), || {
        s.hpa("ebb-hpa-store-statefulset")
    })
    .await
    .unwrap();
    assert_eq!(hpa.data["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(hpa.data["spec"]["metrics"].as_array().map(Vec::len), Some(2));

    // The second trigger alone activates the StatefulSet: 0 → 1.
    let sts_replicas = || async {
        let got = sts.get("store").await.ok()?;
        got.spec.and_then(|sp| sp.replicas)
    };
    assert_eq!(sts_replicas().await, Some(0));
    source.set_depth(3);
    wait_for("store at 1 replica", Duration::from_secs(15), || async {
        (sts_replicas().await == Some(1)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_annotations_false_generates_nothing() {
    let s = Setup::start(
        "e2e-ann-off",
        Options {
            disabled: true,
            ..Default::default()
        },
    )
    .await;
    let outcome = AssertUnwindSafe(disabled(&s)).catch_unwind().await;
    s.finish(outcome).await;
}

async fn disabled(s: &Setup) {
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.annotate("worker", s.short_form()).await;
    // The operator works: a hand-written ScaledObject created after the annotations gets Ready.
    deployment(&s.client(), &s.ns.name, "control", 0).await.unwrap();
    let control: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "control"},
        "spec": {"scaleTargetRef": {"name": "control"},
                 "triggers": [{"type": "kafka", "metadata": {
                     "bootstrapServers": s.bootstrap, "consumerGroup": s.group, "topic": s.topic}}]}
    }))
    .unwrap();
    s.so_api().create(&PostParams::default(), &control).await.unwrap();
    s.wait_ready("control", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.so_names().await, ["control"]);
    let about_worker: Vec<String> = s
        .events()
        .await
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("worker"))
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(about_worker.is_empty(), "{about_worker:?}");
}
