//! `ebb operator` against the real API server and kube-controller-manager, with a metrics-api
//! source served by the test. Each test has its own namespace, operator process and Lease.

use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, TestNamespace, install_crds, wait_for};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

struct Setup {
    env: TestEnv,
    ns: TestNamespace,
    source: MetricSource,
    operator: Option<OperatorProcess>,
}

async fn setup(prefix: &str, depth: i64) -> Setup {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace(prefix).await.unwrap();
    let source = MetricSource::start(depth).await;
    let operator = OperatorProcess::start(&env, &ns.name, "op-a", &[]).await.unwrap();
    Setup {
        env,
        ns,
        source,
        operator: Some(operator),
    }
}

impl Setup {
    fn client(&self) -> Client {
        self.env.client.clone()
    }
    fn so_api(&self) -> Api<ScaledObject> {
        Api::namespaced(self.client(), &self.ns.name)
    }
    async fn create_so(&self, name: &str, target: &str, spec_extra: Value, annotations: Value) {
        let mut spec = json!({
            "scaleTargetRef": {"name": target},
            "pollingInterval": 1,
            "cooldownPeriod": 3,
            "triggers": [{"type": "metrics-api", "metadata": {
                "url": self.source.url, "valueLocation": "queue.depth", "targetValue": "5", "activationTargetValue": "0"}}]
        });
        for (k, v) in spec_extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec,
        }))
        .unwrap();
        self.so_api().create(&PostParams::default(), &so).await.unwrap();
    }
    async fn replicas(&self, name: &str) -> i32 {
        replicas(&self.client(), &self.ns.name, name).await.unwrap()
    }
    async fn wait_replicas(&self, name: &str, want: i32, within: Duration) -> Duration {
        let start = Instant::now();
        let client = self.client();
        let ns = self.ns.name.clone();
        wait_for(&format!("{name} at {want} replicas"), within, || {
            let client = client.clone();
            let ns = ns.clone();
            async move { (replicas(&client, &ns, name).await.ok()? == want).then_some(()) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        start.elapsed()
    }
    async fn condition(&self, so: &str, type_: &str) -> Option<(String, String, String)> {
        let so = self.so_api().get(so).await.ok()?;
        let c = so.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((
            c.status,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        ))
    }
    async fn wait_condition(
        &self,
        so: &str,
        type_: &str,
        status: &str,
        within: Duration,
    ) -> (String, String, String) {
        wait_for(&format!("{so} {type_}={status}"), within, || async {
            self.condition(so, type_).await.filter(|c| c.0 == status)
        })
        .await
        .unwrap()
    }
    async fn hpa(&self, name: &str) -> Option<DynamicObject> {
        for version in ["v2", "v2beta2"] {
            let gvk = GroupVersionKind::gvk("autoscaling", version, "HorizontalPodAutoscaler");
            let ar = ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers");
            let api: Api<DynamicObject> = Api::namespaced_with(self.client(), &self.ns.name, &ar);
            match api.get_opt(name).await {
                Ok(Some(found)) => return Some(found),
                Ok(None) => continue,
                Err(_) => continue,
            }
        }
        None
    }
    /// `autoscaling/v2` when the cluster serves it, else `autoscaling/v2beta2`.
    async fn hpa_api_version(&self) -> String {
        match self.client().list_api_group_resources("autoscaling/v2").await {
            Ok(_) => "autoscaling/v2".into(),
            Err(_) => "autoscaling/v2beta2".into(),
        }
    }
    async fn finish(mut self) {
        if let Some(op) = self.operator.take() {
            op.terminate().await;
        }
        self.ns.delete().await.unwrap();
    }
}

#[tokio::test]
async fn activation_within_2s_hpa_and_back_to_zero_after_cooldown() {
    let s = setup("e2e-activate", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so("worker", "worker", json!({}), json!({})).await;
    s.wait_condition("worker", "Ready", "True", Duration::from_secs(20))
        .await;
    // The HPA exists with ebb's settings.
    let hpa = s.hpa("ebb-hpa-worker").await.expect("HPA created");
    assert_eq!(hpa.data["spec"]["minReplicas"], 1);
    assert_eq!(hpa.data["spec"]["maxReplicas"], 100);
    let metric = &hpa.data["spec"]["metrics"][0]["external"];
    assert_eq!(metric["metric"]["name"], "s0-metrics-api-queue-depth");
    assert_eq!(
        metric["metric"]["selector"]["matchLabels"]["scaledobject.ebb.dev/name"],
        "worker"
    );
    assert_eq!(
        hpa.metadata.owner_references.as_ref().unwrap()[0].kind,
        "ScaledObject"
    );
    let status = s.so_api().get("worker").await.unwrap().status.unwrap();
    assert_eq!(status.hpa_name.as_deref(), Some("ebb-hpa-worker"));
    assert_eq!(status.external_metric_names, ["s0-metrics-api-queue-depth"]);
    assert_eq!(status.original_replica_count, Some(0));
    // Inactive source: stays at 0.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.replicas("worker").await, 0);
    // Active source: 0 → 1 within 2 s.
    s.source.set_depth(7);
    let took = s.wait_replicas("worker", 1, Duration::from_secs(10)).await;
    eprintln!("activation took {took:?}");
    assert!(took < Duration::from_secs(2), "activation took {took:?}");
    s.wait_condition("worker", "Active", "True", Duration::from_secs(5))
        .await;
    // Inactive again: still 1 during the 3 s cooldown, then 0.
    s.source.set_depth(0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.replicas("worker").await,
        1,
        "scaled in before the cooldown ran out"
    );
    s.wait_replicas("worker", 0, Duration::from_secs(10)).await;
    // Active=False was already written when the cooldown began (reason ScalerCooldown); the
    // write that ends it (reason ScalerNotActive) follows the scale-in, so wait for that one.
    wait_for(
        "Active=False after the cooldown",
        Duration::from_secs(5),
        || async {
            s.condition("worker", "Active")
                .await
                .filter(|c| c.0 == "False" && c.1 == "ScalerNotActive")
        },
    )
    .await
    .unwrap();
    // Steady state: no status writes while nothing changes.
    let before = s.so_api().get("worker").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = s.so_api().get("worker").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version,
        "status written in steady state:\nbefore {}\nafter  {}",
        serde_json::to_string(&before.status).unwrap(),
        serde_json::to_string(&after.status).unwrap()
    );
    // Someone edits the HPA by hand: ebb puts it back.
    let gvk_version = hpa.types.as_ref().unwrap().api_version.clone();
    let (group, version) = gvk_version.split_once('/').unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    );
    let hpa_api: Api<DynamicObject> = Api::namespaced_with(s.client(), &s.ns.name, &ar);
    hpa_api
        .patch(
            "ebb-hpa-worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicas": 42}})),
        )
        .await
        .unwrap();
    wait_for("HPA restored", Duration::from_secs(10), || async {
        (s.hpa("ebb-hpa-worker").await?.data["spec"]["maxReplicas"] == 100).then_some(())
    })
    .await
    .unwrap();
    s.finish().await;
}

#[tokio::test]
async fn min_replica_count_never_reaches_zero() {
    let s = setup("e2e-min", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so(
        "worker",
        "worker",
        json!({"minReplicaCount": 2, "cooldownPeriod": 0}),
        json!({}),
    )
    .await;
    s.wait_replicas("worker", 2, Duration::from_secs(15)).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(s.replicas("worker").await, 2);
    }
    s.finish().await;
}

#[tokio::test]
async fn failing_source_with_fallback_scales_from_zero_to_fallback() {
    let s = setup("e2e-fallback", 0).await;
    s.source.set_failing(true);
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so(
        "worker",
        "worker",
        json!({"cooldownPeriod": 0, "fallback": {"failureThreshold": 2, "replicas": 3}}),
        json!({}),
    )
    .await;
    s.wait_replicas("worker", 3, Duration::from_secs(15)).await;
    let (_, reason, _) = s
        .wait_condition("worker", "Fallback", "True", Duration::from_secs(5))
        .await;
    assert_eq!(reason, "FallbackExists");
    // Errors never scale to zero: still 3 while failing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.replicas("worker").await, 3);
    let status = s.so_api().get("worker").await.unwrap().status.unwrap();
    assert_eq!(
        status.health["s0-metrics-api-queue-depth"].status,
        ebb_crds::HealthStatus::Failing
    );
    // Recovery with an idle source clears the fallback and, after the cooldown, scales to 0.
    s.source.set_failing(false);
    s.wait_condition("worker", "Fallback", "False", Duration::from_secs(10))
        .await;
    s.wait_replicas("worker", 0, Duration::from_secs(10)).await;
    s.finish().await;
}

#[tokio::test]
async fn failing_source_without_fallback_never_scales_to_zero() {
    let s = setup("e2e-noscaledown", 5).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so("worker", "worker", json!({"cooldownPeriod": 1}), json!({}))
        .await;
    s.wait_replicas("worker", 1, Duration::from_secs(15)).await;
    s.source.set_failing(true);
    let (_, reason, message) = s
        .wait_condition("worker", "Ready", "False", Duration::from_secs(10))
        .await;
    assert_eq!(reason, "TriggerError");
    assert!(message.contains("500"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.replicas("worker").await, 1, "an error scaled the target in");
    s.finish().await;
}

#[tokio::test]
async fn paused_replicas_hold_the_target_and_unpause_restores_scaling() {
    let s = setup("e2e-pause", 5).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so(
        "worker",
        "worker",
        json!({}),
        json!({"autoscaling.ebb.dev/paused-replicas": "4"}),
    )
    .await;
    s.wait_replicas("worker", 4, Duration::from_secs(15)).await;
    let (_, _, message) = s
        .wait_condition("worker", "Paused", "True", Duration::from_secs(5))
        .await;
    assert!(message.contains('4'), "{message}");
    assert!(s.hpa("ebb-hpa-worker").await.is_none(), "no HPA while paused");
    assert_eq!(
        s.so_api()
            .get("worker")
            .await
            .unwrap()
            .status
            .unwrap()
            .paused_replica_count,
        Some(4)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.replicas("worker").await, 4);
    // Unpause: the condition clears, the HPA comes back.
    s.so_api()
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"autoscaling.ebb.dev/paused-replicas": null}}}),
            ),
        )
        .await
        .unwrap();
    s.wait_condition("worker", "Paused", "False", Duration::from_secs(10))
        .await;
    wait_for("HPA back", Duration::from_secs(10), || async {
        s.hpa("ebb-hpa-worker").await.map(|_| ())
    })
    .await
    .unwrap();
    s.finish().await;
}

#[tokio::test]
async fn delete_restores_the_original_replica_count_and_removes_the_hpa() {
    let s = setup("e2e-restore", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 2).await.unwrap();
    s.create_so(
        "worker",
        "worker",
        json!({"cooldownPeriod": 0, "advanced": {"restoreToOriginalReplicaCount": true}}),
        json!({}),
    )
    .await;
    s.wait_replicas("worker", 0, Duration::from_secs(15)).await;
    assert!(s.hpa("ebb-hpa-worker").await.is_some());
    s.so_api()
        .delete("worker", &DeleteParams::default())
        .await
        .unwrap();
    s.wait_replicas("worker", 2, Duration::from_secs(15)).await;
    wait_for("ScaledObject gone", Duration::from_secs(10), || async {
        s.so_api().get_opt("worker").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    wait_for("HPA gone", Duration::from_secs(10), || async {
        s.hpa("ebb-hpa-worker").await.is_none().then_some(())
    })
    .await
    .unwrap();
    s.finish().await;
}

/// Without restoreToOriginalReplicaCount ebb puts no finalizer on the object: deleting it never
/// waits for ebb, the garbage collector removes the HPA (owner reference), and the object's loop
/// stops, so a later message does not scale the target any more.
#[tokio::test]
async fn delete_without_restore_needs_no_finalizer_and_stops_scaling() {
    let s = setup("e2e-nofin", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so("worker", "worker", json!({}), json!({})).await;
    s.wait_condition("worker", "Ready", "True", Duration::from_secs(15))
        .await;
    assert!(s.hpa("ebb-hpa-worker").await.is_some());
    let so = s.so_api().get("worker").await.unwrap();
    assert!(so.metadata.finalizers.unwrap_or_default().is_empty());
    // Turning restore on adds the finalizer; turning it off removes it again.
    let restore = |on: bool| json!({"spec": {"advanced": {"restoreToOriginalReplicaCount": on}}});
    for on in [true, false] {
        s.so_api()
            .patch("worker", &PatchParams::default(), &Patch::Merge(restore(on)))
            .await
            .unwrap();
        wait_for(
            &format!("finalizer present = {on}"),
            Duration::from_secs(10),
            || async {
                let so = s.so_api().get("worker").await.ok()?;
                (so.metadata
                    .finalizers
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f == "ebb.dev/finalizer")
                    == on)
                    .then_some(())
            },
        )
        .await
        .unwrap();
    }
    s.so_api()
        .delete("worker", &DeleteParams::default())
        .await
        .unwrap();
    // Gone at once: nothing waits for ebb.
    assert!(s.so_api().get_opt("worker").await.unwrap().is_none());
    wait_for("HPA collected", Duration::from_secs(30), || async {
        s.hpa("ebb-hpa-worker").await.is_none().then_some(())
    })
    .await
    .unwrap();
    // The loop polled every second; activity now must not scale the target.
    s.source.set_depth(10);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s.replicas("worker").await, 0);
    s.finish().await;
}

#[tokio::test]
async fn a_second_scaled_object_on_the_same_target_is_not_ready() {
    let s = setup("e2e-conflict", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so("first", "worker", json!({}), json!({})).await;
    s.wait_condition("first", "Ready", "True", Duration::from_secs(15))
        .await;
    s.create_so("second", "worker", json!({}), json!({})).await;
    let (_, reason, message) = s
        .wait_condition("second", "Ready", "False", Duration::from_secs(15))
        .await;
    assert_eq!(reason, "TargetConflict");
    assert!(message.contains("first"), "{message}");
    assert!(s.hpa("ebb-hpa-second").await.is_none());
    s.finish().await;
}

#[tokio::test]
async fn an_invalid_scaled_object_is_not_ready_and_scales_nothing() {
    let s = setup("e2e-invalid", 5).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    // min > max passes a server without CEL; the operator enforces the rule itself.
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "pollingInterval": 1,
                 "triggers": [{"type": "metrics-api", "metadata": {"url": s.source.url, "valueLocation": "queue.depth", "targetValue": "0"}}]}
    }))
    .unwrap();
    s.so_api().create(&PostParams::default(), &so).await.unwrap();
    let (_, reason, message) = s
        .wait_condition("worker", "Ready", "False", Duration::from_secs(15))
        .await;
    assert_eq!(reason, "ScaledObjectCheckFailed");
    assert!(message.contains("targetValue"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.replicas("worker").await, 0);
    assert!(s.hpa("ebb-hpa-worker").await.is_none());
    s.finish().await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let mut s = setup("e2e-failover", 0).await;
    // Short leases keep the test short; the mechanism is the same at the default 15 s.
    s.operator.take().unwrap().kill().await;
    let leader = OperatorProcess::start(&s.env, &s.ns.name, "op-leader", &["--lease-duration", "4"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let standby = OperatorProcess::start(&s.env, &s.ns.name, "op-standby", &["--lease-duration", "4"])
        .await
        .unwrap();
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so("worker", "worker", json!({}), json!({})).await;
    s.wait_condition("worker", "Ready", "True", Duration::from_secs(15))
        .await;
    leader.kill().await;
    let killed = Instant::now();
    s.source.set_depth(3);
    s.wait_replicas("worker", 1, Duration::from_secs(20)).await;
    eprintln!(
        "standby activated the target {:?} after the leader died",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(4 + 4),
        "took {:?}",
        killed.elapsed()
    );
    s.operator = Some(standby);
    s.finish().await;
}

#[tokio::test]
async fn a_foreign_hpa_blocks_until_ownership_is_transferred() {
    let s = setup("e2e-foreign-hpa", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 1).await.unwrap();
    // A plain HPA someone created before ebb.
    let hpa_version = if s.hpa_api_version().await == "autoscaling/v2" {
        "v2"
    } else {
        "v2beta2"
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling", hpa_version, "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    );
    let hpa_api: Api<DynamicObject> = Api::namespaced_with(s.client(), &s.ns.name, &ar);
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("autoscaling/{hpa_version}"), "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "legacy-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
                 "minReplicas": 1, "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
    }))
    .unwrap();
    hpa_api.create(&PostParams::default(), &foreign).await.unwrap();
    s.create_so("worker", "worker", json!({}), json!({})).await;
    let (_, reason, message) = s
        .wait_condition("worker", "Ready", "False", Duration::from_secs(15))
        .await;
    assert_eq!(reason, "TargetConflict");
    assert!(message.contains("legacy-hpa"), "{message}");
    // Adopt it: ebb takes the HPA over under its existing name.
    s.so_api()
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"scaledobject.ebb.dev/transfer-hpa-ownership": "true"}}}),
            ),
        )
        .await
        .unwrap();
    s.wait_condition("worker", "Ready", "True", Duration::from_secs(15))
        .await;
    wait_for("legacy-hpa adopted", Duration::from_secs(10), || async {
        let h = s.hpa("legacy-hpa").await?;
        let owned = h
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "ScaledObject");
        (owned && h.data["spec"]["metrics"][0]["type"] == "External").then_some(())
    })
    .await
    .unwrap();
    // The status names the adopted HPA (written after the HPA itself: wait for it).
    let named = wait_for("status.hpaName = legacy-hpa", Duration::from_secs(10), || async {
        let status = s.so_api().get("worker").await.ok()?.status?;
        (status.hpa_name.as_deref() == Some("legacy-hpa")).then_some(())
    })
    .await;
    assert!(
        named.is_ok(),
        "{:?}",
        s.so_api()
            .get("worker")
            .await
            .ok()
            .and_then(|o| o.status)
            .map(|st| st.hpa_name)
    );
    // The adopted HPA is the only one: an HPA ebb made for the object before the foreign one
    // reached its cache is deleted.
    wait_for("no second HPA on the worker", Duration::from_secs(10), || async {
        s.hpa("ebb-hpa-worker").await.is_none().then_some(())
    })
    .await
    .unwrap();
    s.finish().await;
}

#[tokio::test]
async fn transitions_are_recorded_as_events() {
    let s = setup("e2e-events", 0).await;
    deployment(&s.client(), &s.ns.name, "worker", 0).await.unwrap();
    s.create_so("worker", "worker", json!({"cooldownPeriod": 1}), json!({}))
        .await;
    s.wait_condition("worker", "Ready", "True", Duration::from_secs(15))
        .await;
    s.source.set_depth(3);
    s.wait_replicas("worker", 1, Duration::from_secs(10)).await;
    s.source.set_depth(0);
    s.wait_replicas("worker", 0, Duration::from_secs(10)).await;
    s.source.set_failing(true);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(s.client(), &s.ns.name);
    let reasons = wait_for("events", Duration::from_secs(15), || async {
        let list = events.list(&Default::default()).await.ok()?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        ["Activated", "ScaledToZero", "TriggerFailing"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(reasons)
    })
    .await
    .unwrap();
    let list = events.list(&Default::default()).await.unwrap();
    let activated = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Activated"))
        .unwrap();
    assert_eq!(
        activated.regarding.as_ref().unwrap().name.as_deref(),
        Some("worker")
    );
    assert!(
        activated.note.as_deref().unwrap_or("").contains("from 0 to 1"),
        "{reasons:?}"
    );
    s.finish().await;
}
