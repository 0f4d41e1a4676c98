//! Two ebb installs in one cluster, one external-metrics APIService: the chart's chaining
//! (`metricsAdapter.chain.enabled`) with the real helm, the real aggregator and the real HPA
//! controller, ebb running from its image on the test node.
//!
//! Release A watches namespace A and holds the APIService. Release B, installed second with
//! `chain.enabled` and watching namespace B, records A's Service and CA at install (helm
//! `lookup`), takes the APIService over and forwards every metric request it does not own (namespace
//! A's) to A as the caller, through front-proxy headers over a client certificate issued by the
//! cluster's front-proxy CA (the Secret a user would provide). Each team's HPA scales on its own
//! Kafka lag through the one APIService (same ScaledObject name in both namespaces). With A
//! scaled to zero, team A's metrics fail (503) and team B's are served. `helm upgrade` of B keeps
//! the record and switches B to asking A as its own ServiceAccount. `helm uninstall` of B runs the pre-delete hook (`ebb apiservice restore`): the APIService points at
//! A's Service with A's CA again and team A's HPA keeps getting metrics.
//!
//! This binary is in nextest's `apiservice` test group and takes the APIService file lock.

use std::path::Path;
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_tests::adapter::{self as apiservice, APISERVICE};
use ebb_tests::helm::{Tool, chart_dir};
use ebb_tests::identity::Identity;
use ebb_tests::kafka::{KafkaAdmin, TansuBroker};
use ebb_tests::metrics_api::{metric_path, read_metric};
use ebb_tests::pods;
use ebb_tests::{TestEnv, install_crds, objects, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use serde_json::{Value, json};

const RELEASE_A: &str = "ebb-chain-a";
const RELEASE_B: &str = "ebb-chain-b";
/// Team A's lag and threshold: its HPA wants ceil(30 / 10) = 3 replicas.
const LAG_A: usize = 30;
const DESIRED_A: i64 = 3;
/// Team B's: ceil(20 / 10) = 2.
const LAG_B: usize = 20;
const DESIRED_B: i64 = 2;
const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installs_share_the_apiservice_and_uninstalling_the_second_restores_the_first() {
    let env = TestEnv::load().await.unwrap();
    pods::require_node(&env).unwrap();
    let _lock = apiservice::lock().await;
    apiservice::wait_until_free(&env.client).await;
    let admin = env.client.clone();
    let ns_a = env.namespace("chain-a").await.unwrap();
    let ns_b = env.namespace("chain-b").await.unwrap();
    install_crds(&admin).await.unwrap();
    let _ = Api::<APIService>::all(admin.clone())
        .delete(APISERVICE, &DeleteParams::default())
        .await;
    let installer = Identity::service_account(&env, &ns_a.name, "installer", Some("cluster-admin"))
        .await
        .unwrap();
    let helm = Tool::helm(&env, &installer.kubeconfig).unwrap();
    let gateway = env.var("EBB_NODE_GATEWAY").unwrap().to_string();
    let mut broker = TansuBroker::start_on(Path::new(env.var("EBB_TANSU_BIN").unwrap()), &gateway)
        .await
        .unwrap();

    // Release A: an ordinary install holding the APIService.
    let started = Instant::now();
    install(&helm, RELEASE_A, &ns_a.name, &[]).await;
    if let Err(e) = apiservice::wait_available(&admin, Duration::from_secs(120)).await {
        panic!("{e}; {}", describe(&admin, &ns_a.name, RELEASE_A).await);
    }
    assert_eq!(
        points_at(&admin).await,
        (ns_a.name.clone(), format!("{RELEASE_A}-metrics-adapter"))
    );
    eprintln!("A installed and serving after {:?}", started.elapsed());

    // Release B: chained, with a front-proxy client certificate from the cluster's CA.
    front_proxy_secret(&env, &admin, &ns_b.name).await;
    let started = Instant::now();
    install(
        &helm,
        RELEASE_B,
        &ns_b.name,
        &[
            "metricsAdapter.chain.enabled=true",
            "metricsAdapter.delegate.clientCertSecret=front-proxy-client",
        ],
    )
    .await;
    let record = Api::<ConfigMap>::namespaced(admin.clone(), &ns_b.name)
        .get(&format!("{RELEASE_B}-chain"))
        .await
        .expect("the chain record ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(
        record.get("service").map(String::as_str),
        Some(format!("{}/{RELEASE_A}-metrics-adapter:443", ns_a.name).as_str()),
        "B recorded A's Service: {record:?}"
    );
    assert_eq!(
        record.get("caBundle").map(|s| s.trim().to_owned()),
        Some(ca_of(&admin, &ns_a.name, RELEASE_A).await.trim().to_owned()),
        "and A's CA"
    );
    let own_b = (ns_b.name.clone(), format!("{RELEASE_B}-metrics-adapter"));
    wait_for("the APIService points at B", Duration::from_secs(60), || async {
        (points_at(&admin).await == own_b).then_some(())
    })
    .await
    .unwrap();
    if let Err(e) = apiservice::wait_available(&admin, Duration::from_secs(120)).await {
        panic!("{e}; {}", describe(&admin, &ns_b.name, RELEASE_B).await);
    }
    eprintln!(
        "B installed, APIService taken over and Available after {:?}",
        started.elapsed()
    );

    // Each team's HPA scales on its own source through the one APIService.
    let mut kafka = KafkaAdmin::connect(&broker.addr).await.unwrap();
    for (ns, topic, lag) in [(&ns_a.name, "orders-a", LAG_A), (&ns_b.name, "orders-b", LAG_B)] {
        kafka.create_topic(topic, PARTITIONS).await.unwrap();
        let group = format!("g-{topic}");
        let zero: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        kafka.commit(&group, topic, &zero).await.unwrap();
        kafka.produce(topic, PARTITIONS, lag).await.unwrap();
        objects::deployment(&admin, ns, "work", 1).await.unwrap();
        create_so(&admin, ns, &broker.addr, &group, topic).await;
    }
    let reader_role = format!("{RELEASE_B}-external-metrics-reader");
    let reader = Identity::service_account(&env, &ns_b.name, "metrics-reader", Some(&reader_role))
        .await
        .unwrap();
    let desired_a = wait_desired(&admin, &ns_a.name, DESIRED_A).await;
    let desired_b = wait_desired(&admin, &ns_b.name, DESIRED_B).await;
    eprintln!("HPAs: team A {desired_a}, team B {desired_b}");
    let metric_a = hpa_metric(&admin, &ns_a.name).await;
    let metric_b = hpa_metric(&admin, &ns_b.name).await;
    let a = read_metric(&reader.client, &metric_path(&ns_a.name, "work", &metric_a)).await;
    let b = read_metric(&reader.client, &metric_path(&ns_b.name, "work", &metric_b)).await;
    eprintln!("through the APIService (B in front): A {a:?}, B {b:?}");
    assert!(
        a.is_ok() && b.is_ok(),
        "both teams' metrics are served: {a:?} {b:?}"
    );
    // A metric neither owns: B hands it to A, which answers 404.
    let none = read_metric(&reader.client, &metric_path(&ns_b.name, "nobody", "s0-nothing")).await;
    assert!(
        none.as_ref()
            .is_err_and(|e| e.contains("404") || e.contains("not served")),
        "{none:?}"
    );
    let discovery = reader
        .client
        .request_text(
            http::Request::get("/apis/external.metrics.k8s.io/v1beta1")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(discovery.contains("externalmetrics"), "{discovery}");

    // A down: its team's metrics fail with 503 through B, B's own are unaffected.
    let t0 = Instant::now();
    scale_operator(&admin, &ns_a.name, RELEASE_A, 0).await;
    eprintln!("[{:?}] A scaled to 0", t0.elapsed());
    let path_a = metric_path(&ns_a.name, "work", &metric_a);
    let path_b = metric_path(&ns_b.name, "work", &metric_b);
    // kubectl, not a kube client: kube's client retries 503s for minutes.
    let kubectl = Tool::kubectl(&env, &reader.kubeconfig).unwrap();
    let (down, took) = wait_for(
        "A's metrics fail while A is down",
        Duration::from_secs(60),
        || async {
            let asked = Instant::now();
            let read = kubectl.run(&["get", "--raw", &path_a]).await;
            read.err().map(|e| (e.to_string(), asked.elapsed()))
        },
    )
    .await
    .unwrap();
    assert!(down.contains("ServiceUnavailable"), "{down}");
    assert!(
        took < Duration::from_secs(10),
        "a 503 within the delegate's bound: {took:?}"
    );
    let b_meanwhile = read_metric(&reader.client, &path_b).await;
    eprintln!(
        "[{:?}] A down: A's metric read failed in {took:?} ({down}); B's metric {b_meanwhile:?}",
        t0.elapsed()
    );
    assert!(b_meanwhile.is_ok(), "{b_meanwhile:?}");
    scale_operator(&admin, &ns_a.name, RELEASE_A, 1).await;
    eprintln!("[{:?}] A back to 1 Ready replica", t0.elapsed());
    wait_for("A serves again through B", Duration::from_secs(90), || async {
        read_metric(&reader.client, &path_a).await.ok()
    })
    .await
    .unwrap();

    eprintln!("[{:?}] A serves again through B", t0.elapsed());
    // An upgrade keeps the record (the APIService points at B by then) and may change how B
    // asks A: now as B's ServiceAccount (no client certificate).
    helm.run(&[
        "upgrade",
        RELEASE_B,
        &chart_dir().display().to_string(),
        "--namespace",
        &ns_b.name,
        "--reuse-values",
        "--set",
        "metricsAdapter.delegate.clientCertSecret=",
        "--wait",
        "--timeout",
        "180s",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let kept = Api::<ConfigMap>::namespaced(admin.clone(), &ns_b.name)
        .get(&format!("{RELEASE_B}-chain"))
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert_eq!(kept, record, "the upgrade kept what the install recorded");
    assert_eq!(points_at(&admin).await, own_b);
    let as_b = wait_for(
        "A's metric through B as B's ServiceAccount",
        Duration::from_secs(90),
        || async { read_metric(&reader.client, &path_a).await.ok() },
    )
    .await
    .unwrap();
    eprintln!(
        "[{:?}] after the upgrade (B asks A as its ServiceAccount): A's metric {as_b}",
        t0.elapsed()
    );

    // Uninstall B: the hook gives the APIService back to A.
    let started = Instant::now();
    helm.run(&[
        "uninstall",
        RELEASE_B,
        "--namespace",
        &ns_b.name,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let restored = Api::<APIService>::all(admin.clone())
        .get(APISERVICE)
        .await
        .unwrap();
    let spec = restored.spec.clone().unwrap();
    let service = spec.service.clone().unwrap();
    assert_eq!(
        (service.namespace.as_deref(), service.name.as_deref()),
        (
            Some(ns_a.name.as_str()),
            Some(format!("{RELEASE_A}-metrics-adapter").as_str())
        ),
        "{restored:?}"
    );
    let ca = String::from_utf8(spec.ca_bundle.unwrap().0).unwrap();
    assert_eq!(ca.trim(), ca_of(&admin, &ns_a.name, RELEASE_A).await.trim());
    apiservice::wait_available(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!(
        "B uninstalled, APIService restored to A after {:?}",
        started.elapsed()
    );
    let reader_a = Identity::service_account(
        &env,
        &ns_a.name,
        "metrics-reader",
        Some(&format!("{RELEASE_A}-external-metrics-reader")),
    )
    .await
    .unwrap();
    let again = wait_for("team A's metric through A", Duration::from_secs(60), || async {
        read_metric(&reader_a.client, &metric_path(&ns_a.name, "work", &metric_a))
            .await
            .ok()
    })
    .await
    .unwrap();
    kafka.produce("orders-a", PARTITIONS, 10).await.unwrap();
    let grown = wait_desired(&admin, &ns_a.name, DESIRED_A + 1).await;
    eprintln!("after the restore: A's metric {again}, A's HPA follows new lag to {grown}");

    helm.run(&[
        "uninstall",
        RELEASE_A,
        "--namespace",
        &ns_a.name,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    broker.stop().await;
    reader.delete(&admin).await;
    reader_a.delete(&admin).await;
    installer.delete(&admin).await;
    ns_b.delete().await.unwrap();
    ns_a.delete().await.unwrap();
}

/// `helm install` of the repository's chart from the node's image, one replica for A (B keeps
/// the default two, so standbys delegate too), watching its own namespace.
async fn install(helm: &Tool, release: &str, ns: &str, extra: &[&str]) {
    let chart = chart_dir().display().to_string();
    let watch = format!("watchNamespace={ns}");
    let replicas = if release == RELEASE_A {
        "replicas=1"
    } else {
        "replicas=2"
    };
    // The image's tag: `dev` (tests/env/images.sh), or another build imported under its own tag.
    let tag = format!(
        "image.tag={}",
        std::env::var("EBB_E2E_IMAGE_TAG").unwrap_or_else(|_| "dev".to_owned())
    );
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "240s",
        "--set",
        "image.repository=ebb.test/ebb",
        "--set",
        &tag,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "crds.install=false",
        "--set",
        &watch,
        "--set",
        replicas,
    ];
    for value in extra {
        args.extend(["--set", value]);
    }
    helm.run(&args).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Scales a release's operator Deployment to `replicas` and waits for that many Ready pods.
async fn scale_operator(admin: &Client, ns: &str, release: &str, replicas: i32) {
    let patch = json!({"spec": {"replicas": replicas}});
    Api::<Deployment>::namespaced(admin.clone(), ns)
        .patch(release, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let selector = format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=operator");
    let want = usize::try_from(replicas).unwrap_or(0);
    wait_for(
        &format!("{want} pods of {release}"),
        Duration::from_secs(90),
        || async {
            let pods = pods::list(admin, ns, &selector).await.ok()?;
            let live: Vec<_> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == want && live.iter().all(|p| pods::is_ready(p))).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Where the APIService points: (namespace, name).
async fn points_at(admin: &Client) -> (String, String) {
    let a = Api::<APIService>::all(admin.clone())
        .get(APISERVICE)
        .await
        .unwrap();
    let s = a.spec.and_then(|s| s.service).unwrap_or_default();
    (s.namespace.unwrap_or_default(), s.name.unwrap_or_default())
}

/// A release's CA (PEM), from its operator-managed Secret.
async fn ca_of(admin: &Client, ns: &str, release: &str) -> String {
    let secret = Api::<Secret>::namespaced(admin.clone(), ns)
        .get(&format!("{release}-certs"))
        .await
        .unwrap();
    let data = secret.data.unwrap_or_default();
    String::from_utf8(data.get("ca.crt").expect("ca.crt").0.clone()).unwrap()
}

/// A client certificate issued by the test cluster's front-proxy CA with the CN the API server
/// allows (`front-proxy-client`), as Secret `front-proxy-client` in `ns`.
async fn front_proxy_secret(env: &TestEnv, admin: &Client, ns: &str) {
    let pki = Path::new(env.var("EBB_PKI_DIR").unwrap());
    let dir = std::env::temp_dir().join(ebb_tests::kafka::unique_name("ebb-fp"));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, csr, crt, ext) = (
        dir.join("k.pem"),
        dir.join("r.csr"),
        dir.join("c.pem"),
        dir.join("ext"),
    );
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    let openssl = |args: Vec<&std::ffi::OsStr>| {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    openssl(vec![
        os("req"),
        os("-new"),
        os("-newkey"),
        os("ec"),
        os("-pkeyopt"),
        os("ec_paramgen_curve:P-256"),
        os("-nodes"),
        os("-subj"),
        os("/CN=front-proxy-client"),
        os("-keyout"),
        key.as_os_str(),
        os("-out"),
        csr.as_os_str(),
    ]);
    let ca = pki.join("front-proxy-ca.crt");
    let ca_key = pki.join("front-proxy-ca.key");
    openssl(vec![
        os("x509"),
        os("-req"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("1"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        crt.as_os_str(),
    ]);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "front-proxy-client"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": std::fs::read_to_string(&crt).unwrap(),
                       "tls.key": std::fs::read_to_string(&key).unwrap()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// ScaledObject `work` in `ns` on the lag of `group` on `topic` (threshold 10).
async fn create_so(admin: &Client, ns: &str, bootstrap: &str, group: &str, topic: &str) {
    let so: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "work"},
        "spec": {"scaleTargetRef": {"name": "work"}, "pollingInterval": 1,
                 "minReplicaCount": 1, "maxReplicaCount": PARTITIONS,
                 "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": bootstrap,
                     "consumerGroup": group, "topic": topic, "lagThreshold": "10"}}]}
    }))
    .unwrap();
    Api::<ScaledObject>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &so)
        .await
        .unwrap();
}

/// The HPA in `ns` (autoscaling/v2beta2: both test control planes serve it).
async fn hpa(admin: &Client, ns: &str) -> Option<Value> {
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &ApiResource::from_gvk(&gvk));
    let list = api.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().next().map(|o| o.data)
}

/// The external metric name in the HPA of `ns`.
async fn hpa_metric(admin: &Client, ns: &str) -> String {
    wait_for(&format!("the HPA in {ns}"), Duration::from_secs(60), || async {
        hpa(admin, ns).await?["spec"]["metrics"][0]["external"]["metric"]["name"]
            .as_str()
            .map(str::to_string)
    })
    .await
    .unwrap()
}

/// Waits until the HPA in `ns` reads its metric and wants `desired` replicas; returns what its
/// status shows.
async fn wait_desired(admin: &Client, ns: &str, desired: i64) -> String {
    let seen = wait_for(
        &format!("the HPA in {ns} wants {desired} replicas"),
        Duration::from_secs(120),
        || async {
            let h = hpa(admin, ns).await?;
            let current = &h["status"]["currentMetrics"][0]["external"]["current"];
            let value = current["averageValue"].as_str().or(current["value"].as_str())?;
            (h["status"]["desiredReplicas"].as_i64() == Some(desired))
                .then(|| format!("desired {desired}, current metric {value}"))
        },
    )
    .await;
    match seen {
        Ok(seen) => seen,
        Err(e) => panic!("{e}; HPA: {:?}", hpa(admin, ns).await),
    }
}

/// ebb's pods and their last log lines, for failure messages.
async fn describe(admin: &Client, ns: &str, release: &str) -> String {
    let mut out = Vec::new();
    let selector = format!("app.kubernetes.io/instance={release}");
    for p in pods::list(admin, ns, &selector).await.unwrap_or_default() {
        let name = p.metadata.name.clone().unwrap_or_default();
        let log = pods::log(admin, ns, &name).await.unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        out.push(format!(
            "{name} ready={}\n  {}",
            pods::is_ready(&p),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        ));
    }
    out.join("\n")
}
