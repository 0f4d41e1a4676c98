//! ebb installed the way users install it: its image (`tests/env/images.sh`, loaded into the test
//! node), `helm install` of `charts/ebb` with the shipped defaults (two replicas, operator-managed
//! certificates), running under the chart's own ServiceAccount and RBAC.
//!
//! Nothing on this path is `system:masters`: helm runs as a ServiceAccount bound to `cluster-admin`
//! (as a platform team's installer would), ebb's pods use the chart's ServiceAccount through the
//! `kubernetes` Service, the HPA controller reads metrics as its own ServiceAccount through the
//! APIService and the chart's Service, and the test reads metrics as a ServiceAccount bound only
//! to the chart's external-metrics reader role. The admin client only observes.
//!
//! One test walks the life of a release (each step needs the one before): install; the real HPA
//! scales real Kafka consumers 1→N; a standby answers metric reads with the leader's values over
//! verified TLS; a new serving certificate in the Secret is served without a restart; the leader
//! pod is deleted and the other replica takes over within the lease
//! duration; `helm upgrade` rolls out; `helm uninstall` leaves nothing but the CRDs.
//!
//! The external-metrics APIService is cluster-wide: this binary is in nextest's `apiservice` test
//! group and takes the APIService file lock, like the other tests that register it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::adapter::{self as apiservice, APISERVICE};
use ebb_tests::helm::{Tool, chart_dir};
use ebb_tests::identity::Identity;
use ebb_tests::kafka::{KafkaAdmin, TansuBroker};
use ebb_tests::metrics_api::{metric_path, prometheus_sample, read_metric, replica_client};
use ebb_tests::pods::{self, KAFKA_CONSUMER_IMAGE};
use ebb_tests::{TestEnv, TestNamespace, install_crds, objects, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use serde_json::{Value, json};

/// The release name (not `ebb`: the other tests' fixed names start with `ebb-`).
const RELEASE: &str = "ebb-e2e";
/// The chart's default `leaseDuration`, which the failover bound is measured against.
const LEASE: Duration = Duration::from_secs(15);
/// Partitions of the consumers' topic (and so the most consumers that have work).
const PARTITIONS: i32 = 4;
/// Messages in the "parked" topic that nobody consumes.
const PARKED_LAG: i64 = 7;
/// What ebb serves for it: not the lag but the value from which the HPA computes exactly the
/// desired replicas (`scalers/src/kafka/lag.rs`): desired = ceil(7 / 100) = 1, served as
/// (1 − 0.05) · 100.
const PARKED_VALUE: i64 = 95;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_scales_consumers_fails_over_upgrades_and_uninstalls_cleanly() {
    let env = TestEnv::load().await.unwrap();
    pods::require_node(&env).unwrap();
    let _lock = apiservice::lock().await;
    apiservice::wait_until_free(&env.client).await;
    let release_ns = env.namespace("ebb-chart").await.unwrap();
    let work_ns = env.namespace("chart-work").await.unwrap();
    let mut r = Release::install(&env, &release_ns, &work_ns).await;

    let gateway = env.var("EBB_NODE_GATEWAY").unwrap().to_string();
    let mut broker = TansuBroker::start_on(Path::new(env.var("EBB_TANSU_BIN").unwrap()), &gateway)
        .await
        .unwrap();
    let w = Workloads::create(&r, &broker.addr).await;

    scale_consumers_one_to_n(&r, &w).await;
    standby_answers_with_the_leaders_values(&r, &w).await;
    serving_certificate_rotates_without_restart(&r, &w).await;
    leader_loss(&mut r, &w).await;
    upgrade_rolls_out(&r, &w).await;
    uninstall_leaves_only_the_crds(&r).await;

    broker.stop().await;
    r.reader.delete(&env.client).await;
    r.installer.delete(&env.client).await;
    work_ns.delete().await.unwrap();
    release_ns.delete().await.unwrap();
}

/// An installed release and the identities that act on it.
struct Release {
    admin: Client,
    ns: String,
    work_ns: String,
    installer: Identity,
    reader: Identity,
    helm: Tool,
}

impl Release {
    /// `helm install` as the installer; waits until both replicas are Ready and the APIService
    /// is Available.
    async fn install(env: &TestEnv, release_ns: &TestNamespace, work_ns: &TestNamespace) -> Release {
        let admin = env.client.clone();
        let ns = release_ns.name.clone();
        // The CRDs exist already (other tests install them): adopt them into the release, as a
        // user who installed them by hand would (see charts/ebb/README.md).
        install_crds(&admin).await.unwrap();
        adopt_crds(&admin, &ns).await;
        // Another test's APIService is a leftover here (we hold its lock): the chart owns it now.
        let _ = Api::<APIService>::all(admin.clone())
            .delete(APISERVICE, &DeleteParams::default())
            .await;
        let installer = Identity::service_account(env, &work_ns.name, "installer", Some("cluster-admin"))
            .await
            .unwrap();
        let helm = Tool::helm(env, &installer.kubeconfig).unwrap();
        let started = Instant::now();
        let chart = chart_dir().display().to_string();
        helm.run(&[
            "install",
            RELEASE,
            &chart,
            "--namespace",
            &ns,
            "--wait",
            "--timeout",
            "240s",
            "--set",
            "image.repository=ebb.test/ebb",
            "--set",
            "image.tag=dev",
            "--set",
            "image.pullPolicy=Never",
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let r = Release {
            reader: Identity::service_account(
                env,
                &work_ns.name,
                "metrics-reader",
                Some(&format!("{RELEASE}-external-metrics-reader")),
            )
            .await
            .unwrap(),
            admin,
            ns,
            work_ns: work_ns.name.clone(),
            installer,
            helm,
        };
        let available = apiservice::wait_available(&r.admin, Duration::from_secs(120)).await;
        if let Err(e) = available {
            panic!("{e}; {}", r.describe().await);
        }
        r.wait_ready_pods(2, Duration::from_secs(120)).await;
        eprintln!(
            "installed, 2 replicas Ready, APIService Available after {:?}",
            started.elapsed()
        );
        // What the user's path runs as: the chart's ServiceAccount, no cluster-admin binding.
        for pod in r.pods().await {
            let sa = pod.spec.and_then(|s| s.service_account_name).unwrap_or_default();
            assert!(
                sa.starts_with(RELEASE),
                "ebb runs as the chart's ServiceAccount, not {sa:?}"
            );
        }
        r
    }

    fn selector() -> String {
        format!("app.kubernetes.io/instance={RELEASE}")
    }

    /// ebb's pods (not terminating).
    async fn pods(&self) -> Vec<Pod> {
        let list = pods::list(&self.admin, &self.ns, &Self::selector())
            .await
            .unwrap_or_default();
        list.into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    async fn wait_ready_pods(&self, n: usize, within: Duration) {
        let ready = wait_for(&format!("{n} ebb pods Ready"), within, || async {
            let pods = self.pods().await;
            (pods.len() == n && pods.iter().all(pods::is_ready)).then_some(())
        })
        .await;
        if let Err(e) = ready {
            panic!("{e}; {}", self.describe().await);
        }
    }

    /// The Lease holder's pod name.
    async fn leader(&self) -> Option<String> {
        let lease = Api::<Lease>::namespaced(self.admin.clone(), &self.ns)
            .get(RELEASE)
            .await
            .ok()?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Pods, their readiness and the last lines of their logs (for failure messages).
    async fn describe(&self) -> String {
        let mut out = Vec::new();
        for p in pods::list(&self.admin, &self.ns, &Self::selector())
            .await
            .unwrap_or_default()
        {
            let name = p.metadata.name.clone().unwrap_or_default();
            let log = pods::log(&self.admin, &self.ns, &name).await.unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push(format!(
                "{name} {} ready={} {}\n  {}",
                pods::phase(&p),
                pods::is_ready(&p),
                pods::waiting_reason(&p).unwrap_or_default(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            ));
        }
        format!("leader {:?}; pods:\n{}", self.leader().await, out.join("\n"))
    }

    /// The value of `metric` for ScaledObject `so`, read through the API server as the reader.
    async fn metric_via_apiserver(&self, so: &str, metric: &str) -> Result<i64, String> {
        let path = metric_path(&self.work_ns, so, metric);
        read_metric(&self.reader.client, &path).await
    }
}

/// Labels and annotations that make Helm adopt an existing object into the release.
async fn adopt_crds(admin: &Client, ns: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in ebb_crds::generate::all_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let patch = json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": ns}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

/// The queue consumers and the objects that scale them, in the work namespace.
struct Workloads {
    admin_kafka: String,
    /// ScaledObject `consumer`: real consumers, minReplicaCount 1.
    consumer_metric: String,
    /// ScaledObject `parked`: a fixed lag of [`PARKED_LAG`], replicas that never run.
    parked_metric: String,
}

impl Workloads {
    async fn create(r: &Release, bootstrap: &str) -> Workloads {
        let mut admin = KafkaAdmin::connect(bootstrap).await.unwrap();
        for (topic, partitions) in [("work", PARTITIONS), ("parked", 1), ("wake", 1)] {
            admin.create_topic(topic, partitions).await.unwrap();
        }
        // Groups with a commit at 0: their lag counts every message (without a commit KEDA's
        // `latest` policy counts 1).
        admin.commit("g-parked", "parked", &[(0, 0)]).await.unwrap();
        admin.commit("g-wake", "wake", &[(0, 0)]).await.unwrap();
        admin.produce("parked", 1, PARKED_LAG as usize).await.unwrap();
        let ns = &r.work_ns;
        let consumer: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "consumer"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "consumer"}},
              "template": {"metadata": {"labels": {"app": "consumer"}}, "spec": {
                "terminationGracePeriodSeconds": 10,
                "containers": [{"name": "consumer", "image": KAFKA_CONSUMER_IMAGE, "imagePullPolicy": "Never",
                  "env": [{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": bootstrap},
                          {"name": "KAFKA_TOPIC", "value": "work"}, {"name": "KAFKA_GROUP", "value": "g-work"},
                          {"name": "PROCESS_DELAY_MS", "value": "200"}]}]}}}
        }))
        .unwrap();
        Api::<Deployment>::namespaced(r.admin.clone(), ns)
            .create(&PostParams::default(), &consumer)
            .await
            .unwrap();
        objects::deployment(&r.admin, ns, "parked", 0).await.unwrap();
        objects::deployment(&r.admin, ns, "wake", 0).await.unwrap();
        let kafka = |group: &str, topic: &str, threshold: &str| {
            json!([{"type": "kafka", "metadata": {"bootstrapServers": bootstrap, "consumerGroup": group,
                "topic": topic, "lagThreshold": threshold}}])
        };
        create_so(
            r,
            "consumer",
            json!({"minReplicaCount": 1, "maxReplicaCount": PARTITIONS,
            "triggers": kafka("g-work", "work", "10")}),
        )
        .await;
        create_so(
            r,
            "parked",
            json!({"minReplicaCount": 0, "maxReplicaCount": 1,
            "triggers": kafka("g-parked", "parked", "100")}),
        )
        .await;
        create_so(
            r,
            "wake",
            json!({"minReplicaCount": 0, "maxReplicaCount": 1, "cooldownPeriod": 300,
            "triggers": kafka("g-wake", "wake", "5")}),
        )
        .await;
        Workloads {
            admin_kafka: bootstrap.to_string(),
            consumer_metric: hpa_metric(r, "consumer").await,
            parked_metric: hpa_metric(r, "parked").await,
        }
    }
}

async fn create_so(r: &Release, name: &str, spec: Value) {
    let mut spec = spec;
    spec["scaleTargetRef"] = json!({"name": name});
    spec["pollingInterval"] = json!(1);
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name}, "spec": spec}))
    .unwrap();
    let api: Api<ScaledObject> = Api::namespaced(r.admin.clone(), &r.work_ns);
    api.create(&PostParams::default(), &so).await.unwrap();
    let ready = wait_for(
        &format!("ScaledObject {name} Ready"),
        Duration::from_secs(60),
        || async {
            let so = api.get(name).await.ok()?;
            let ok = so
                .status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ok.then_some(())
        },
    )
    .await;
    if let Err(e) = ready {
        panic!("{e}; {}", r.describe().await);
    }
}

/// The HPA of ScaledObject `so` (autoscaling/v2beta2: both test control planes serve it).
async fn hpa(r: &Release, so: &str) -> Option<Value> {
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    let api: Api<DynamicObject> =
        Api::namespaced_with(r.admin.clone(), &r.work_ns, &ApiResource::from_gvk(&gvk));
    let list = api.list(&ListParams::default()).await.ok()?;
    list.items
        .into_iter()
        .map(|o| o.data)
        .find(|d| d["spec"]["scaleTargetRef"]["name"] == so)
}

/// The external metric name in the HPA of ScaledObject `so`.
async fn hpa_metric(r: &Release, so: &str) -> String {
    wait_for(&format!("the HPA of {so}"), Duration::from_secs(60), || async {
        let h = hpa(r, so).await?;
        h["spec"]["metrics"][0]["external"]["metric"]["name"]
            .as_str()
            .map(str::to_string)
    })
    .await
    .unwrap()
}

/// The real HPA controller reads the lag through the APIService and the chart's Service and adds
/// real consumers.
async fn scale_consumers_one_to_n(r: &Release, w: &Workloads) {
    let mut admin = KafkaAdmin::connect(&w.admin_kafka).await.unwrap();
    let produced = Instant::now();
    admin.produce("work", PARTITIONS, 400).await.unwrap();
    let scaled = wait_for(
        "the HPA scales the consumers to 2 or more",
        Duration::from_secs(90),
        || async {
            let n = pods::ready_count(&r.admin, &r.work_ns, "app=consumer")
                .await
                .ok()?;
            (n >= 2).then_some(n)
        },
    )
    .await;
    let n = match scaled {
        Ok(n) => n,
        Err(e) => panic!("{e}; HPA: {:?}; {}", hpa(r, "consumer").await, r.describe().await),
    };
    let h = hpa(r, "consumer").await.unwrap();
    let active = h["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "ScalingActive" && c["status"] == "True");
    assert!(active, "the HPA reads its metric (ScalingActive): {h}");
    let seen = h["status"]["currentMetrics"][0]["external"]["current"]["averageValue"]
        .as_str()
        .or(h["status"]["currentMetrics"][0]["external"]["current"]["value"].as_str())
        .map(str::to_string);
    eprintln!(
        "1 → {n} ready consumers after {:?} (HPA sees {seen:?} for {})",
        produced.elapsed(),
        w.consumer_metric
    );
    assert!(seen.is_some(), "the HPA's status carries the metric it read: {h}");
}

/// The chart's CA (PEM) and the name the aggregator verifies replicas for.
async fn trust(r: &Release) -> (Vec<u8>, String) {
    let secret = Api::<Secret>::namespaced(r.admin.clone(), &r.ns)
        .get(&format!("{RELEASE}-certs"))
        .await
        .unwrap();
    let ca = secret
        .data
        .unwrap_or_default()
        .get("ca.crt")
        .expect("ca.crt in the Secret")
        .0
        .clone();
    let service = Api::<APIService>::all(r.admin.clone())
        .get(APISERVICE)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.service)
        .expect("the APIService names a Service");
    (ca, format!("{}.{}.svc", service.name.unwrap_or_default(), r.ns))
}

/// A client that talks to one ebb pod's adapter directly, verifying its certificate against the
/// chart's CA for `server_name` (default: the metrics Service's DNS name).
async fn pod_adapter_client(r: &Release, pod: &Pod, token: &str, server_name: Option<&str>) -> Client {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    let (ca, service_name) = trust(r).await;
    replica_client(&ip, 6443, &ca, server_name.unwrap_or(&service_name), token)
}

/// The standby answers a metric read with the leader's value (it forwards with its own token,
/// which the leader authorises under the chart's RBAC), over TLS verified against the chart's CA;
/// a caller without the reader role is refused by either replica.
async fn standby_answers_with_the_leaders_values(r: &Release, w: &Workloads) {
    let leader = r.leader().await.expect("a leader");
    let pods = r.pods().await;
    let standby = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() != Some(leader.as_str()))
        .expect("a standby pod");
    let leading = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(leader.as_str()))
        .expect("the leader's pod");
    let path = metric_path(&r.work_ns, "parked", &w.parked_metric);
    let via_standby = read_metric(
        &pod_adapter_client(r, standby, &r.reader.token, None).await,
        &path,
    )
    .await;
    let via_leader = read_metric(
        &pod_adapter_client(r, leading, &r.reader.token, None).await,
        &path,
    )
    .await;
    assert_eq!(
        via_standby, via_leader,
        "the standby answers with the leader's value"
    );
    assert_eq!(via_leader, Ok(PARKED_VALUE));
    assert_eq!(
        r.metric_via_apiserver("parked", &w.parked_metric).await,
        Ok(PARKED_VALUE)
    );

    // The HPA controller's reads come through the Service, so they reach the standby too, which
    // forwards them to the leader.
    let standby_ip = standby
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    let forwarded = wait_for(
        "the standby forwards HPA reads",
        Duration::from_secs(30),
        || async {
            let series = r#"ebb_metric_requests_total{answered_by="forwarded",result="ok"}"#;
            prometheus_sample(&format!("{standby_ip}:8080"), series)
                .await
                .filter(|n| *n > 0.0)
        },
    )
    .await;
    if let Err(e) = forwarded {
        panic!("{e}; {}", r.describe().await);
    }

    let env = TestEnv::load().await.unwrap();
    let stranger = Identity::service_account(&env, &r.work_ns, "stranger", None)
        .await
        .unwrap();
    let refused = read_metric(
        &pod_adapter_client(r, standby, &stranger.token, None).await,
        &path,
    )
    .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("403") || e.contains("Forbidden") || e.contains("forbidden")),
        "a caller without the reader role is refused: {refused:?}"
    );
    stranger.delete(&r.admin).await;
    eprintln!(
        "standby {} answered {PARKED_VALUE} like leader {leader}",
        standby.metadata.name.as_deref().unwrap_or("?")
    );
}

/// A name only the rotated serving certificate holds.
const ROTATED_NAME: &str = "rotated.ebb.test";

/// The serving certificate in the Secret is replaced by another one from the same CA (as a
/// renewal does): every replica serves it within a refresh interval, without a restart, and the
/// API server keeps reading metrics.
async fn serving_certificate_rotates_without_restart(r: &Release, w: &Workloads) {
    let secrets: Api<Secret> = Api::namespaced(r.admin.clone(), &r.ns);
    let name = format!("{RELEASE}-certs");
    let mut secret = secrets.get(&name).await.unwrap();
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| {
        String::from_utf8(
            data.get(k)
                .unwrap_or_else(|| panic!("{k} in the Secret"))
                .0
                .clone(),
        )
        .unwrap()
    };
    let ca_key = rcgen::KeyPair::from_pem(&text("ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&text("ca.crt"), ca_key).unwrap();
    // The names the operator asks for (its --metrics-adapter-dns-names), plus one of our own.
    let pods = r.pods().await;
    let args = pods[0].spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default();
    let mut names: Vec<String> = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-adapter-dns-names="))
        .expect("the chart passes the DNS names")
        .split(',')
        .map(str::to_string)
        .collect();
    names.push(ROTATED_NAME.to_string());
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let year = 1970
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 31_557_600;
    let year = i32::try_from(year).unwrap();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let mut data = data;
    data.insert("tls.crt".into(), k8s_openapi::ByteString(cert.pem().into_bytes()));
    data.insert(
        "tls.key".into(),
        k8s_openapi::ByteString(key.serialize_pem().into_bytes()),
    );
    secret.data = Some(data);
    secrets
        .replace(&name, &PostParams::default(), &secret)
        .await
        .unwrap();
    let replaced = Instant::now();

    let before: Vec<(String, i32)> = pods.iter().map(restarts).collect();
    for pod in &pods {
        let client = pod_adapter_client(r, pod, &r.reader.token, Some(ROTATED_NAME)).await;
        let path = metric_path(&r.work_ns, "parked", &w.parked_metric);
        let served = wait_for(
            "the rotated certificate served",
            Duration::from_secs(75),
            || async { read_metric(&client, &path).await.ok() },
        )
        .await;
        if let Err(e) = served {
            panic!("{e} by {:?}; {}", pod.metadata.name, r.describe().await);
        }
    }
    let after: Vec<(String, i32)> = r.pods().await.iter().map(restarts).collect();
    assert_eq!(before, after, "same pods, no restart");
    assert_eq!(
        r.metric_via_apiserver("parked", &w.parked_metric).await,
        Ok(PARKED_VALUE)
    );
    eprintln!(
        "rotated serving certificate served by both replicas after {:?}",
        replaced.elapsed()
    );
}

/// A pod's name and its container's restart count.
fn restarts(p: &Pod) -> (String, i32) {
    let count = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count);
    (p.metadata.name.clone().unwrap_or_default(), count)
}

/// Reads a metric through the API server every 250 ms until stopped; records each failure.
struct Reader {
    outcomes: Arc<Mutex<Vec<(Instant, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn start(client: Client, path: String) -> Reader {
        let outcomes: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
        let record = outcomes.clone();
        let task = tokio::spawn(async move {
            loop {
                let ok = read_metric(&client, &path).await.is_ok();
                record.lock().unwrap().push((Instant::now(), ok));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Reader { outcomes, task }
    }

    /// Stops; returns the longest run of failed reads (first failure to next success) and the
    /// number of reads.
    fn stop(self) -> (Duration, usize) {
        self.task.abort();
        let outcomes = self.outcomes.lock().unwrap();
        let mut longest = Duration::ZERO;
        let mut failing_since: Option<Instant> = None;
        for (at, ok) in outcomes.iter() {
            match (ok, failing_since) {
                (false, None) => failing_since = Some(*at),
                (true, Some(since)) => {
                    longest = longest.max(at.duration_since(since));
                    failing_since = None;
                }
                _ => {}
            }
        }
        if let (Some(since), Some((last, _))) = (failing_since, outcomes.last()) {
            longest = longest.max(last.duration_since(since));
        }
        (longest, outcomes.len())
    }
}

/// The leader's pod is deleted: the other replica leads, a ScaledObject at zero still activates
/// within the lease duration, and metric reads fail for no longer than that.
async fn leader_loss(r: &mut Release, w: &Workloads) {
    let old = r.leader().await.expect("a leader");
    let standby = r
        .pods()
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .find(|n| *n != old)
        .expect("a standby");
    let reader = Reader::start(
        r.reader.client.clone(),
        metric_path(&r.work_ns, "parked", &w.parked_metric),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deleted = Instant::now();
    Api::<Pod>::namespaced(r.admin.clone(), &r.ns)
        .delete(&old, &DeleteParams::default())
        .await
        .unwrap();
    // The old leader releases the Lease when it gets SIGTERM; the standby takes it at once (not
    // the replacement pod, and not a lease duration later).
    let new = wait_for("a new leader", LEASE, || async {
        r.leader().await.filter(|l| *l != old)
    })
    .await;
    let led_after = deleted.elapsed();
    let new = match new {
        Ok(new) => new,
        Err(e) => panic!("{e}; {}", r.describe().await),
    };
    assert_eq!(new, standby, "the standby leads");
    // Work for an object at zero arrives once the old leader is gone: the new one activates it.
    let mut admin = KafkaAdmin::connect(&w.admin_kafka).await.unwrap();
    admin.produce("wake", 1, 3).await.unwrap();
    let activated = wait_for("`wake` activated to 1", Duration::from_secs(60), || async {
        (objects::replicas(&r.admin, &r.work_ns, "wake").await.ok()? == 1).then_some(())
    })
    .await;
    let activated_after = deleted.elapsed();
    if let Err(e) = activated {
        panic!("{e}; {}", r.describe().await);
    }
    // The replacement pod comes up as the new standby.
    r.wait_ready_pods(2, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (longest_failure, reads) = reader.stop();
    eprintln!(
        "leader {old} deleted: standby {new} leads after {led_after:?}, `wake` 0 → 1 after {activated_after:?}; \
         longest metric-read failure {longest_failure:?} over {reads} reads"
    );
    assert!(
        activated_after <= LEASE,
        "activation within the lease duration: {activated_after:?}"
    );
    assert!(
        longest_failure < LEASE,
        "metric reads failed for {longest_failure:?}"
    );
    assert_eq!(
        r.metric_via_apiserver("parked", &w.parked_metric).await,
        Ok(PARKED_VALUE)
    );
}

/// `helm upgrade` with a changed value rolls the Deployment out; the new pods carry it and serve.
async fn upgrade_rolls_out(r: &Release, w: &Workloads) {
    let deployments: Api<Deployment> = Api::namespaced(r.admin.clone(), &r.ns);
    let before = deployments
        .list(&ListParams::default().labels(&Release::selector()))
        .await
        .unwrap();
    let name = before.items[0].metadata.name.clone().unwrap();
    let generation = before.items[0].metadata.generation.unwrap_or(0);
    let chart = chart_dir().display().to_string();
    let started = Instant::now();
    r.helm
        .run(&[
            "upgrade",
            RELEASE,
            &chart,
            "--namespace",
            &r.ns,
            "--reuse-values",
            "--wait",
            "--timeout",
            "240s",
            "--set",
            "logging.level=debug,kube=info",
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = deployments.get(&name).await.unwrap();
    assert!(
        after.metadata.generation.unwrap_or(0) > generation,
        "the upgrade changed the pod template"
    );
    r.wait_ready_pods(2, Duration::from_secs(120)).await;
    let rolled = wait_for(
        "every pod runs the new template",
        Duration::from_secs(120),
        || async {
            let pods = r.pods().await;
            let all = pods.len() == 2
                && pods.iter().all(|p| {
                    p.spec.as_ref().is_some_and(|s| {
                        s.containers[0].env.iter().flatten().any(|e| {
                            e.name == "RUST_LOG" && e.value.as_deref().is_some_and(|v| v.starts_with("debug"))
                        })
                    })
                });
            all.then_some(())
        },
    )
    .await;
    if let Err(e) = rolled {
        panic!("{e}; {}", r.describe().await);
    }
    let served = wait_for(
        "the metric served after the upgrade",
        Duration::from_secs(60),
        || async {
            (r.metric_via_apiserver("parked", &w.parked_metric).await == Ok(PARKED_VALUE)).then_some(())
        },
    )
    .await;
    assert!(served.is_ok(), "{}", r.describe().await);
    eprintln!("upgrade rolled out in {:?}", started.elapsed());
}

/// `helm uninstall` removes every object of the release, and what the operator created in its
/// namespace (Lease, certificate Secret) through their owner; the CRDs stay.
async fn uninstall_leaves_only_the_crds(r: &Release) {
    r.helm
        .run(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &r.ns,
            "--wait",
            "--timeout",
            "120s",
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Pods terminate (grace period) and the garbage collector follows owner references: wait.
    let started = Instant::now();
    let left = wait_for(
        "nothing of the release left",
        Duration::from_secs(150),
        || async { leftovers(r).await.is_empty().then_some(()) },
    )
    .await;
    if left.is_err() {
        panic!("left after uninstall: {:?}", leftovers(r).await);
    }
    eprintln!("uninstalled: nothing left after {:?}", started.elapsed());
    let crds: Api<CustomResourceDefinition> = Api::all(r.admin.clone());
    for crd in ebb_crds::generate::all_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        assert!(crds.get_opt(&name).await.unwrap().is_some(), "CRD {name} is kept");
    }
}

/// Objects of the release (or created by its operator) that still exist.
async fn leftovers(r: &Release) -> Vec<String> {
    let mut left = Vec::new();
    let namespaced: &[(&str, &str, &str)] = &[
        ("apps", "v1", "Deployment"),
        ("", "v1", "Pod"),
        ("", "v1", "Service"),
        ("", "v1", "ServiceAccount"),
        ("", "v1", "Secret"),
        ("", "v1", "ConfigMap"),
        ("coordination.k8s.io", "v1", "Lease"),
        ("policy", "v1beta1", "PodDisruptionBudget"),
        ("rbac.authorization.k8s.io", "v1", "Role"),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
    ];
    for (group, version, kind) in namespaced {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(r.admin.clone(), &r.ns, &ar);
        for o in api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = o.metadata.name.clone().unwrap_or_default();
            // What every namespace has.
            let built_in = (*kind == "ServiceAccount" && name == "default")
                || (*kind == "ConfigMap" && name == "kube-root-ca.crt")
                || (*kind == "Secret" && o.data["type"] == "kubernetes.io/service-account-token");
            if !built_in {
                left.push(format!("{kind} {}/{name}", r.ns));
            }
        }
    }
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
        let api: Api<DynamicObject> = Api::all_with(r.admin.clone(), &ar);
        for o in api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = o.metadata.name.unwrap_or_default();
            if name.starts_with(RELEASE) && !name.starts_with(&r.work_ns) {
                left.push(format!("{kind} {name}"));
            }
        }
    }
    let kube_system = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(r.admin.clone(), "kube-system", &kube_system);
    for o in api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = o.metadata.name.unwrap_or_default();
        if name.starts_with(RELEASE) {
            left.push(format!("RoleBinding kube-system/{name}"));
        }
    }
    if Api::<APIService>::all(r.admin.clone())
        .get_opt(APISERVICE)
        .await
        .ok()
        .flatten()
        .is_some()
    {
        left.push(format!("APIService {APISERVICE}"));
    }
    left
}
