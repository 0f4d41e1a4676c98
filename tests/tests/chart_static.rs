//! Static checks of `charts/ebb`: `helm lint`, `helm template` over the values sets the chart
//! documents (each option checked on the parsed objects for what it promises), the least-privilege
//! and pod-security policy on the default render, and a server-side dry run of renders against the
//! test API server (which validates every object without creating it).
//!
//! Needs `helm` and `kubectl` from the test environment (`EBB_HELM`, `EBB_KUBECTL`); skipped with a
//! message when the env file does not name them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ebb_tests::TestEnv;
use ebb_tests::helm::{Tool, chart_dir};
use serde_json::{Value, json};

/// Release and namespace of the renders that do not say otherwise.
const RELEASE: &str = "ebb";
const NAMESPACE: &str = "ebb-system";
/// The APIService name, fixed by Kubernetes.
const APISERVICE: &str = "v1beta1.external.metrics.k8s.io";

/// The chart, rendered with the test environment's `helm`.
struct Chart {
    helm: Tool,
    kubectl: Tool,
}

/// `helm template` options besides the values.
#[derive(Default)]
struct RenderOptions<'a> {
    release: Option<&'a str>,
    namespace: Option<&'a str>,
    kube_version: Option<&'a str>,
}

impl Chart {
    /// The chart with the environment's tools, or `None` (after saying why) when `helm` is absent.
    async fn load() -> Option<(TestEnv, Chart)> {
        let env = TestEnv::load().await.unwrap();
        if env.var("EBB_HELM").is_err() {
            eprintln!(
                "SKIPPED: EBB_HELM is not in the test environment file (run `tests/env/testenv.sh up`, \
                 which installs helm and kubectl)"
            );
            return None;
        }
        let kubeconfig = PathBuf::from(env.var("EBB_KUBECONFIG").unwrap());
        let chart = Chart {
            helm: Tool::helm(&env, &kubeconfig).unwrap(),
            kubectl: Tool::kubectl(&env, &kubeconfig).unwrap(),
        };
        Some((env, chart))
    }

    /// `charts/ebb`, or `$EBB_CHART_DIR` (to check these checks against a modified copy).
    fn path() -> PathBuf {
        std::env::var_os("EBB_CHART_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(chart_dir)
    }

    fn dir() -> String {
        Self::path().display().to_string()
    }

    /// `helm template` with `values` (each passed as `--set-json key=<json>`), parsed.
    async fn render(&self, values: &[(&str, Value)]) -> Result<Rendered, String> {
        self.render_with(values, &RenderOptions::default()).await
    }

    async fn render_with(
        &self,
        values: &[(&str, Value)],
        opts: &RenderOptions<'_>,
    ) -> Result<Rendered, String> {
        let release = opts.release.unwrap_or(RELEASE);
        let namespace = opts.namespace.unwrap_or(NAMESPACE);
        let dir = Self::dir();
        let sets: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["template", release, &dir, "--namespace", namespace];
        if let Some(v) = opts.kube_version {
            args.extend(["--kube-version", v]);
        }
        for set in &sets {
            args.extend(["--set-json", set]);
        }
        let text = self.helm.run(&args).await.map_err(|e| e.to_string())?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| format!("helm template output is not YAML: {e}\n{text}"))?;
        Ok(Rendered {
            docs: docs.into_iter().filter(|d| d.is_object()).collect(),
            namespace: namespace.to_string(),
        })
    }

    /// The chart's `appVersion`.
    fn app_version() -> String {
        let text = std::fs::read_to_string(Chart::path().join("Chart.yaml")).unwrap();
        let chart: Value = serde_saphyr::from_str(&text).unwrap();
        chart["appVersion"].as_str().expect("appVersion").to_string()
    }
}

/// The objects of one render.
struct Rendered {
    docs: Vec<Value>,
    namespace: String,
}

impl Rendered {
    fn of_kind<'s>(&'s self, kind: &str) -> impl Iterator<Item = &'s Value> {
        self.docs.iter().filter(move |d| d["kind"] == kind)
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).find(|d| d["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the render; it has: {:?}", self.summary()))
    }

    fn count(&self, kind: &str) -> usize {
        self.of_kind(kind).count()
    }

    /// `Kind name` of every object.
    fn summary(&self) -> Vec<String> {
        self.docs
            .iter()
            .map(|d| format!("{} {}", text(&d["kind"]), text(&d["metadata"]["name"])))
            .collect()
    }

    fn deployment(&self) -> &Value {
        let mut all = self.of_kind("Deployment");
        let d = all.next().expect("a Deployment");
        assert!(all.next().is_none(), "one Deployment");
        d
    }

    fn pod_spec(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        &self.pod_spec()["containers"][0]
    }

    fn args(&self) -> Vec<String> {
        strings(&self.container()["args"])
    }

    /// The value of `--flag=value` in the container's arguments.
    fn arg(&self, flag: &str) -> Option<String> {
        let prefix = format!("--{flag}=");
        self.args()
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
    }

    fn env_value(&self, name: &str) -> Option<String> {
        self.container()["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .map(|e| text(&e["value"]))
    }

    fn env_names(&self) -> Vec<String> {
        self.container()["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| text(&e["name"]))
            .collect()
    }

    /// Every rule of every Role and ClusterRole: (`Kind namespace/name`, rule).
    fn rules(&self) -> Vec<(String, &Value)> {
        let mut out = Vec::new();
        for role in self
            .docs
            .iter()
            .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        {
            let id = format!(
                "{} {}/{}",
                text(&role["kind"]),
                text(&role["metadata"]["namespace"]),
                text(&role["metadata"]["name"])
            );
            for rule in role["rules"].as_array().into_iter().flatten() {
                out.push((id.clone(), rule));
            }
        }
        out
    }

    /// The rules of one role that name `resource` in `group`.
    fn grants<'a>(&'a self, role_kind: &str, role: &str, group: &str, resource: &str) -> Vec<&'a Value> {
        self.get(role_kind, role)["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| has(&r["apiGroups"], group) && has(&r["resources"], resource))
            .collect()
    }

    /// The verbs `role` grants on `resource` in `group`, and the resourceNames they are limited to
    /// (empty: any name), one entry per rule.
    fn verbs(
        &self,
        role_kind: &str,
        role: &str,
        group: &str,
        resource: &str,
    ) -> Vec<(Vec<String>, Vec<String>)> {
        self.grants(role_kind, role, group, resource)
            .into_iter()
            .map(|r| (strings(&r["verbs"]), strings(&r["resourceNames"])))
            .collect()
    }

    /// Subjects of a (Cluster)RoleBinding as `namespace/name`.
    fn subjects(&self, kind: &str, name: &str) -> BTreeSet<String> {
        self.get(kind, name)["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{}/{}", text(&s["namespace"]), text(&s["name"])))
            .collect()
    }

    fn operator_subject(&self) -> String {
        format!(
            "{}/{}",
            self.namespace,
            text(&self.pod_spec()["serviceAccountName"])
        )
    }

    /// The documents as one JSON stream (what kubectl reads), CRDs first, without the kinds in `skip_groups`.
    fn manifest_without(&self, skip_groups: &[&str]) -> (String, Vec<String>) {
        let mut skipped = Vec::new();
        let mut kept: Vec<&Value> = Vec::new();
        for d in &self.docs {
            let api_version = text(&d["apiVersion"]);
            if skip_groups
                .iter()
                .any(|g| api_version.starts_with(&format!("{g}/")))
            {
                skipped.push(format!("{} {}", text(&d["kind"]), text(&d["metadata"]["name"])));
            } else {
                kept.push(d);
            }
        }
        kept.sort_by_key(|d| d["kind"] != "CustomResourceDefinition");
        let docs: Vec<String> = kept.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
        (docs.join("\n"), skipped)
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn has(list: &Value, item: &str) -> bool {
    list.as_array().into_iter().flatten().any(|v| v == item)
}

/// Numbers as f64, so that `0.0` in a file and `0` in a render compare equal.
fn normalise_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(normalise_numbers).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise_numbers(v))).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn helm_lint_passes_strict() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let dir = Chart::dir();
    for strict in [false, true] {
        let mut args = vec!["lint", dir.as_str()];
        if strict {
            args.push("--strict");
        }
        let out = chart.helm.run(&args).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(!out.contains("[WARNING]") && !out.contains("[ERROR]"), "{out}");
    }
}

/// The policy the default install must meet: verified TLS, least-privilege RBAC, a locked-down
/// pod, and what the operator needs to run (its own IP, the chart's image).
#[tokio::test]
async fn default_render_meets_the_policy() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart.render(&[]).await.unwrap();

    for d in &r.docs {
        assert!(
            d["spec"].get("insecureSkipTLSVerify").is_none(),
            "{} sets insecureSkipTLSVerify",
            text(&d["metadata"]["name"])
        );
    }
    for (role, rule) in r.rules() {
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        assert!(!groups.iter().any(|g| g == "*"), "{role}: apiGroups * in {rule}");
        assert!(
            !resources
                .iter()
                .any(|x| x.starts_with('*') && x.ends_with("/scale")),
            "{role}: */scale in {rule}"
        );
        assert!(!verbs.iter().any(|v| v == "*"), "{role}: verbs * in {rule}");
        if groups.iter().any(|g| g.is_empty()) && resources.iter().any(|x| x == "secrets" || x == "*") {
            assert!(
                !verbs.iter().any(|v| v == "list" || v == "watch"),
                "{role} lets the operator list or watch Secrets: {rule}"
            );
        }
    }

    let pod = r.pod_spec();
    let container = r.container();
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let env = r.env_names();
    assert_eq!(env[..3], ["POD_NAME", "POD_NAMESPACE", "RUST_LOG"], "{env:?}");
    // The leader's address comes from its Pod, never from the environment.
    assert!(!env.iter().any(|e| e == "POD_IP"), "{env:?}");
    let image = text(&container["image"]);
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
    assert_eq!(tag, Chart::app_version(), "image {image}");
    assert!(image.starts_with("ghcr.io/ebb-dev/ebb:"), "{image}");
}

/// What the defaults promise: the operator's flags, the adapter wired to the operator-managed
/// certificates, leader election in the release namespace, HA objects, the CRDs kept.
#[tokio::test]
async fn default_render_wires_the_operator() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart.render(&[]).await.unwrap();
    let deployment = r.deployment();
    let name = text(&deployment["metadata"]["name"]);
    assert_eq!(name, RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = r.args();
    assert_eq!(args[0], "operator");
    assert_eq!(r.arg("health-addr").as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(r.arg("lease-name").as_deref(), Some(name.as_str()));
    assert_eq!(r.arg("lease-namespace").as_deref(), Some(NAMESPACE));
    assert_eq!(r.arg("lease-duration").as_deref(), Some("15"));
    assert_eq!(
        r.arg("log-level"),
        None,
        "the level is RUST_LOG, so `kubectl set env` changes it"
    );
    assert_eq!(r.env_value("RUST_LOG").as_deref(), Some("info,kube=warn"));
    assert_eq!(r.arg("log-format").as_deref(), Some("text"));
    assert_eq!(r.arg("owner-deployment").as_deref(), Some(name.as_str()));
    assert!(r.arg("kube-api-qps").is_some() && r.arg("kube-api-burst").is_some());
    assert_eq!(r.arg("namespace"), None, "every namespace by default");

    // The adapter: its Service, the certificate's names (first the one the API server and a
    // standby verify), the operator-managed Secret and APIService, no mounted certificate.
    assert_eq!(r.arg("metrics-adapter-addr").as_deref(), Some("0.0.0.0:6443"));
    let apiservice = r.get("APIService", APISERVICE);
    let svc = text(&apiservice["spec"]["service"]["name"]);
    assert_eq!(apiservice["spec"]["service"]["namespace"], NAMESPACE);
    assert_eq!(apiservice["spec"]["service"]["port"], 443);
    assert_eq!(apiservice["spec"]["groupPriorityMinimum"], 100);
    assert_eq!(apiservice["spec"]["versionPriority"], 100);
    assert!(
        apiservice["spec"].get("caBundle").is_none(),
        "the operator sets caBundle"
    );
    let service = r.get("Service", &svc);
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    let target = text(&service["spec"]["ports"][0]["targetPort"]);
    let port = r.container()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target.as_str())
        .unwrap_or_else(|| panic!("no container port {target}"));
    assert_eq!(port["containerPort"], 6443);
    let dns = r.arg("metrics-adapter-dns-names").unwrap();
    let names: Vec<&str> = dns.split(',').collect();
    assert_eq!(
        names,
        [
            format!("{svc}.{NAMESPACE}.svc"),
            format!("{svc}.{NAMESPACE}.svc.cluster.local"),
            format!("{svc}.{NAMESPACE}")
        ]
    );
    let cert_secret = r.arg("metrics-adapter-cert-secret").unwrap();
    assert_eq!(cert_secret, format!("{RELEASE}-certs"));
    assert_eq!(r.arg("metrics-adapter-apiservice").as_deref(), Some(APISERVICE));
    assert_eq!(r.arg("metrics-adapter-cert"), None);
    assert!(
        r.pod_spec().get("volumes").is_none(),
        "nothing mounted in mode operator"
    );
    for selector in [
        &service["spec"]["selector"],
        &deployment["spec"]["selector"]["matchLabels"],
    ] {
        assert_eq!(selector["app.kubernetes.io/instance"], RELEASE);
    }

    // The release-namespace Role: the Lease and the certificate Secret by name, create apart.
    let role = r
        .of_kind("Role")
        .find(|x| x["metadata"]["namespace"] == NAMESPACE)
        .map(|x| text(&x["metadata"]["name"]))
        .expect("a Role in the release namespace");
    let leases = r.verbs("Role", &role, "coordination.k8s.io", "leases");
    assert!(
        leases.contains(&(strings(&json!(["get", "update", "patch"])), vec![name.clone()])),
        "{leases:?}"
    );
    assert!(leases.contains(&(vec!["create".into()], vec![])), "{leases:?}");
    let secrets = r.verbs("Role", &role, "", "secrets");
    assert!(
        secrets.contains(&(strings(&json!(["get", "update", "patch"])), vec![cert_secret])),
        "{secrets:?}"
    );
    let own = r.verbs("Role", &role, "apps", "deployments");
    assert_eq!(own, [(vec!["get".to_string()], vec![name.clone()])]);
    let apiservices = r.verbs(
        "ClusterRole",
        &format!("{RELEASE}-apiservice"),
        "apiregistration.k8s.io",
        "apiservices",
    );
    assert_eq!(apiservices.len(), 1);
    assert_eq!(apiservices[0].1, [APISERVICE]);
    assert!(
        !apiservices[0].0.contains(&"create".to_string())
            && !apiservices[0].0.contains(&"delete".to_string())
    );

    // Cluster-wide reads and writes of the watched resources.
    let op = format!("{RELEASE}-operator");
    let scale = r.verbs("ClusterRole", &op, "apps", "deployments/scale");
    assert_eq!(scale, [(strings(&json!(["get", "update", "patch"])), vec![])]);
    assert_eq!(
        r.verbs("ClusterRole", &op, "", "secrets"),
        [(vec!["get".to_string()], vec![])]
    );
    assert_eq!(
        r.verbs("ClusterRole", &op, "", "configmaps"),
        [(vec!["get".to_string()], vec![])]
    );
    assert_eq!(
        r.verbs("ClusterRole", &op, "ebb.dev", "clustertriggerauthentications")
            .len(),
        1
    );
    // ScaledObjects generated from workloads' scaling annotations: created and deleted; without
    // the feature, neither.
    assert_eq!(
        r.verbs("ClusterRole", &op, "ebb.dev", "scaledobjects"),
        [(
            strings(&json!([
                "get", "list", "watch", "create", "update", "patch", "delete"
            ])),
            vec![]
        )]
    );
    assert_eq!(r.arg("workload-annotations"), None, "on by default");
    let without = chart
        .render(&[("workloadAnnotations.enabled", json!(false))])
        .await
        .unwrap();
    assert_eq!(
        without.verbs("ClusterRole", &op, "ebb.dev", "scaledobjects"),
        [(
            strings(&json!(["get", "list", "watch", "update", "patch"])),
            vec![]
        )]
    );
    assert_eq!(without.arg("workload-annotations").as_deref(), Some("false"));
    for group in ["events.k8s.io", ""] {
        assert_eq!(
            r.verbs("ClusterRole", &op, group, "events"),
            [(strings(&json!(["create", "patch"])), vec![])]
        );
    }
    assert!(
        r.subjects("ClusterRoleBinding", &op)
            .contains(&r.operator_subject())
    );

    // The HPA controller and the operator's own account (standbys forward) read external metrics.
    let reader = format!("{RELEASE}-external-metrics-reader");
    let readers: Vec<String> = r
        .of_kind("ClusterRoleBinding")
        .filter(|b| b["roleRef"]["name"] == reader.as_str())
        .flat_map(|b| r.subjects("ClusterRoleBinding", &text(&b["metadata"]["name"])))
        .collect();
    assert!(
        readers.contains(&"kube-system/horizontal-pod-autoscaler".to_string()),
        "{readers:?}"
    );
    assert!(readers.contains(&r.operator_subject()), "{readers:?}");
    let delegator = r
        .of_kind("ClusterRoleBinding")
        .find(|b| b["roleRef"]["name"] == "system:auth-delegator")
        .expect("auth-delegator binding");
    assert!(text(&delegator["metadata"]["name"]).starts_with(RELEASE));
    let auth_reader = r
        .of_kind("RoleBinding")
        .find(|b| b["roleRef"]["name"] == "extension-apiserver-authentication-reader")
        .expect("auth reader binding");
    assert_eq!(auth_reader["metadata"]["namespace"], "kube-system");

    // HA and observability defaults.
    let pdb = r
        .of_kind("PodDisruptionBudget")
        .next()
        .expect("a PDB with 2 replicas");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let readiness = &r.container()["readinessProbe"];
    assert!(
        readiness["periodSeconds"].as_i64().is_some_and(|p| p <= 3),
        "{readiness}"
    );
    assert_eq!(readiness["httpGet"]["path"], "/readyz");
    let metrics = r
        .of_kind("Service")
        .find(|s| s["spec"]["ports"][0]["targetPort"] == "http-health")
        .expect("a /metrics Service");
    assert_eq!(metrics["spec"]["ports"][0]["port"], 8080);
    assert_eq!(r.count("ServiceMonitor"), 0);
    assert_eq!(r.count("Issuer") + r.count("Certificate"), 0);
}

/// CRDs are templates (so upgrades update them), equal to `ebb crds` output, labelled, kept on
/// uninstall; `crds.keep=false` drops the annotation and `crds.install=false` drops the CRDs.
#[tokio::test]
async fn crds_are_rendered_from_the_generated_files() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let files = Chart::path().join("files/crds");
    let mut expected = Vec::new();
    for entry in std::fs::read_dir(&files).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        expected.push(serde_saphyr::from_str::<Value>(&text).unwrap());
    }
    assert_eq!(expected.len(), 4, "four generated CRDs in {}", files.display());
    assert!(
        !Chart::path().join("crds").exists(),
        "charts/ebb/crds/ would make Helm install CRDs it never upgrades"
    );

    let r = chart.render(&[]).await.unwrap();
    assert_eq!(r.count("CustomResourceDefinition"), 4);
    for want in &expected {
        let name = text(&want["metadata"]["name"]);
        let got = r.get("CustomResourceDefinition", &name);
        assert_eq!(
            normalise_numbers(&got["spec"]),
            normalise_numbers(&want["spec"]),
            "{name} spec"
        );
        assert_eq!(got["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        let labels = &got["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/instance"], RELEASE);
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
        assert!(
            labels["helm.sh/chart"]
                .as_str()
                .is_some_and(|c| c.starts_with("ebb-"))
        );
    }

    let not_kept = chart.render(&[("crds.keep", json!(false))]).await.unwrap();
    for crd in not_kept.of_kind("CustomResourceDefinition") {
        assert!(
            crd["metadata"]["annotations"]
                .get("helm.sh/resource-policy")
                .is_none(),
            "{crd}"
        );
    }
    assert_eq!(not_kept.count("CustomResourceDefinition"), 4);
    let none = chart.render(&[("crds.install", json!(false))]).await.unwrap();
    assert_eq!(none.count("CustomResourceDefinition"), 0);
    assert_eq!(none.count("Deployment"), 1);
}

/// `watchNamespace` turns the watched-resource rights into a Role there; `rbac.secretNames`
/// limits Secret reads to those names, including the release namespace's (ClusterTriggerAuthentications).
#[tokio::test]
async fn watch_namespace_and_secret_names_narrow_the_rbac() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart
        .render(&[
            ("watchNamespace", json!("team-a")),
            ("rbac.secretNames", json!(["kafka-auth", "sqs-auth"])),
        ])
        .await
        .unwrap();
    assert_eq!(r.arg("namespace").as_deref(), Some("team-a"));
    let op = format!("{RELEASE}-operator");
    let watched = r
        .of_kind("Role")
        .find(|x| x["metadata"]["namespace"] == "team-a")
        .expect("a Role in the watched namespace");
    let watched_name = text(&watched["metadata"]["name"]);
    let binding = r
        .of_kind("RoleBinding")
        .find(|b| b["metadata"]["namespace"] == "team-a" && b["roleRef"]["name"] == watched_name.as_str())
        .expect("bound in the watched namespace");
    assert!(
        r.subjects("RoleBinding", &text(&binding["metadata"]["name"]))
            .contains(&r.operator_subject())
    );
    let names = strings(&json!(["kafka-auth", "sqs-auth"]));
    assert_eq!(
        r.verbs("Role", &watched_name, "", "secrets"),
        [(vec!["get".to_string()], names.clone())]
    );
    assert_eq!(
        r.verbs("Role", &watched_name, "apps", "statefulsets/scale").len(),
        1
    );
    assert_eq!(
        r.verbs("Role", &watched_name, "ebb.dev", "scaledobjects").len(),
        1
    );

    // Cluster-wide: ClusterTriggerAuthentications only (and their status: their users).
    let cluster_rules: Vec<String> = r
        .rules()
        .into_iter()
        .filter(|(role, _)| role.starts_with("ClusterRole /") && role.ends_with(&op))
        .flat_map(|(_, rule)| strings(&rule["resources"]))
        .collect();
    assert_eq!(
        cluster_rules,
        [
            "clustertriggerauthentications",
            "clustertriggerauthentications/status"
        ]
    );

    // The release namespace: its own Deployment, and the Secrets ClusterTriggerAuthentications name.
    let release_role = r
        .of_kind("Role")
        .find(|x| x["metadata"]["namespace"] == NAMESPACE)
        .map(|x| text(&x["metadata"]["name"]))
        .unwrap();
    assert_eq!(
        r.verbs("Role", &release_role, "apps", "deployments")[0].0,
        ["get"]
    );
    let secrets = r.verbs("Role", &release_role, "", "secrets");
    assert!(secrets.contains(&(vec!["get".to_string()], names)), "{secrets:?}");
    for (role, rule) in r.rules() {
        if has(&rule["resources"], "secrets") {
            assert!(
                !strings(&rule["resourceNames"]).is_empty() || strings(&rule["verbs"]) == ["create"],
                "{role}: {rule}"
            );
        }
    }
}

/// cert-manager issues the serving certificate for the adapter's DNS names into the Secret the
/// pod mounts, and injects its CA into the APIService.
#[tokio::test]
async fn cert_manager_mode_issues_and_mounts_the_certificate() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart
        .render(&[("metricsAdapter.certificates.mode", json!("certManager"))])
        .await
        .unwrap();
    let certificate = r
        .of_kind("Certificate")
        .find(|c| c["spec"]["isCA"] != true)
        .expect("a serving Certificate");
    let dns = r.arg("metrics-adapter-dns-names").unwrap();
    assert_eq!(strings(&certificate["spec"]["dnsNames"]).join(","), dns);
    let secret = text(&certificate["spec"]["secretName"]);
    assert_eq!(secret, format!("{RELEASE}-certs"));
    assert_mounts_certificates(&r, &secret);
    let inject =
        &r.get("APIService", APISERVICE)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
    assert_eq!(
        text(inject),
        format!("{NAMESPACE}/{}", text(&certificate["metadata"]["name"]))
    );
    // The chart's chain: self-signed root → CA certificate → CA Issuer → serving certificate.
    let issuer = text(&certificate["spec"]["issuerRef"]["name"]);
    let ca_issuer = r.get("Issuer", &issuer);
    let ca_secret = text(&ca_issuer["spec"]["ca"]["secretName"]);
    let ca = r
        .of_kind("Certificate")
        .find(|c| c["spec"]["isCA"] == true)
        .expect("a CA Certificate");
    assert_eq!(text(&ca["spec"]["secretName"]), ca_secret);
    assert!(r.get("Issuer", &text(&ca["spec"]["issuerRef"]["name"]))["spec"]["selfSigned"].is_object());
    assert_operator_manages_no_certificates(&r);

    // With the user's issuer, no chain of the chart's own.
    let own = chart
        .render(&[
            ("metricsAdapter.certificates.mode", json!("certManager")),
            (
                "metricsAdapter.certificates.certManager.issuer",
                json!({"kind": "ClusterIssuer", "name": "corp-ca"}),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(own.count("Issuer"), 0);
    let certs: Vec<&Value> = own.of_kind("Certificate").collect();
    assert_eq!(certs.len(), 1);
    assert_eq!(
        certs[0]["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

/// The user's Secret is mounted and `caBundle` goes into the APIService; without a caBundle the
/// render fails and says what is missing.
#[tokio::test]
async fn secret_mode_uses_the_users_secret_and_requires_a_ca_bundle() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let bundle = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
    let r = chart
        .render(&[
            ("metricsAdapter.certificates.mode", json!("secret")),
            ("metricsAdapter.certificates.secretName", json!("my-adapter-tls")),
            ("metricsAdapter.certificates.caBundle", json!(bundle)),
        ])
        .await
        .unwrap();
    assert_mounts_certificates(&r, "my-adapter-tls");
    let spec = &r.get("APIService", APISERVICE)["spec"];
    assert_eq!(spec["caBundle"], bundle);
    assert!(spec.get("insecureSkipTLSVerify").is_none());
    assert_eq!(r.count("Certificate"), 0);
    assert_operator_manages_no_certificates(&r);

    let missing = chart
        .render(&[
            ("metricsAdapter.certificates.mode", json!("secret")),
            ("metricsAdapter.certificates.secretName", json!("my-adapter-tls")),
        ])
        .await;
    let error = missing.err().expect("mode secret without caBundle must fail");
    assert!(
        error.contains("metricsAdapter.certificates.caBundle is required with mode secret"),
        "{error}"
    );
}

fn assert_mounts_certificates(r: &Rendered, secret: &str) {
    assert_eq!(r.arg("metrics-adapter-cert").as_deref(), Some("/certs/tls.crt"));
    assert_eq!(r.arg("metrics-adapter-key").as_deref(), Some("/certs/tls.key"));
    assert_eq!(r.arg("metrics-adapter-ca").as_deref(), Some("/certs/ca.crt"));
    let volumes = &r.pod_spec()["volumes"];
    let volume = volumes
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["secret"]["secretName"] == secret)
        .unwrap_or_else(|| panic!("no volume of Secret {secret}: {volumes}"));
    let mount = r.container()["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == volume["name"])
        .expect("the certificate volume is mounted");
    assert_eq!(mount["mountPath"], "/certs");
    assert_eq!(mount["readOnly"], true);
}

/// Modes other than `operator`: no Secret or APIService writes, no operator-managed flags.
fn assert_operator_manages_no_certificates(r: &Rendered) {
    assert_eq!(r.arg("metrics-adapter-cert-secret"), None);
    assert_eq!(r.arg("metrics-adapter-apiservice"), None);
    for (role, rule) in r.rules() {
        let verbs = strings(&rule["verbs"]);
        assert!(
            !has(&rule["resources"], "apiservices"),
            "{role} touches APIServices: {rule}"
        );
        if has(&rule["resources"], "secrets") {
            assert_eq!(verbs, ["get"], "{role}: {rule}");
        }
    }
}

/// One replica: no PodDisruptionBudget (it would block every drain).
#[tokio::test]
async fn single_replica_has_no_disruption_budget() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart.render(&[("replicas", json!(1))]).await.unwrap();
    assert_eq!(r.deployment()["spec"]["replicas"], 1);
    assert_eq!(r.count("PodDisruptionBudget"), 0);
    let two = chart.render(&[("replicas", json!(3))]).await.unwrap();
    assert_eq!(two.count("PodDisruptionBudget"), 1);
}

/// The PodDisruptionBudget API follows the cluster: policy/v1beta1 before 1.21.
#[tokio::test]
async fn disruption_budget_api_follows_the_kubernetes_version() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    for (version, api) in [("1.20.2", "policy/v1beta1"), ("1.29.0", "policy/v1")] {
        let opts = RenderOptions {
            kube_version: Some(version),
            ..Default::default()
        };
        let r = chart.render_with(&[], &opts).await.unwrap();
        let pdb = r.of_kind("PodDisruptionBudget").next().unwrap();
        assert_eq!(pdb["apiVersion"], api, "Kubernetes {version}");
    }
}

#[tokio::test]
async fn service_monitor_scrapes_the_metrics_service() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart
        .render(&[
            ("serviceMonitor.enabled", json!(true)),
            ("serviceMonitor.labels", json!({"release": "prometheus"})),
            ("serviceMonitor.interval", json!("15s")),
        ])
        .await
        .unwrap();
    let monitor = r.of_kind("ServiceMonitor").next().expect("a ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["path"], "/metrics");
    let service = r
        .of_kind("Service")
        .find(|s| s["spec"]["ports"][0]["name"] == endpoint["port"])
        .expect("the ServiceMonitor's port is a Service's");
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (k, v) in selector {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the selector matches the Service ({k})"
        );
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http-health");
}

#[tokio::test]
async fn per_object_metrics_are_on_unless_turned_off() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let on = chart.render(&[]).await.unwrap();
    assert_eq!(
        on.arg("per-object-metrics"),
        None,
        "on by default (the flag's default)"
    );
    let off = chart
        .render(&[("metricsService.perObject", json!(false))])
        .await
        .unwrap();
    assert_eq!(off.arg("per-object-metrics").as_deref(), Some("false"));
}

#[tokio::test]
async fn dashboards_ship_the_grafana_dashboard_for_the_sidecar() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let off = chart.render(&[]).await.unwrap();
    assert_eq!(off.count("ConfigMap"), 0, "{:?}", off.summary());
    let r = chart
        .render(&[
            ("dashboards.enabled", json!(true)),
            ("dashboards.namespace", json!("monitoring")),
            ("dashboards.annotations", json!({"grafana_folder": "ebb"})),
        ])
        .await
        .unwrap();
    let cm = r.of_kind("ConfigMap").next().expect("a dashboard ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "ebb");
    let shipped: Value =
        serde_json::from_str(text(&cm["data"]["ebb.json"]).as_str()).expect("dashboard JSON");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(Chart::path().join("dashboards/ebb.json")).unwrap())
            .unwrap();
    assert_eq!(
        shipped, file,
        "the ConfigMap carries the chart's dashboard unchanged"
    );
    assert_eq!(shipped["uid"], "ebb-overview");
}

#[tokio::test]
async fn aggregated_roles_extend_view_edit_and_admin() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let off = chart.render(&[]).await.unwrap();
    let aggregated = |r: &Rendered, label: &str| -> Vec<Value> {
        r.of_kind("ClusterRole")
            .filter(|c| c["metadata"]["labels"][label] == "true")
            .cloned()
            .collect()
    };
    let label = "rbac.authorization.k8s.io/aggregate-to-view";
    assert!(aggregated(&off, label).is_empty());
    let r = chart
        .render(&[("rbac.aggregateToDefaultRoles", json!(true))])
        .await
        .unwrap();
    let view = aggregated(&r, label);
    assert_eq!(view.len(), 1);
    let verbs: BTreeSet<String> = view[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| strings(&rule["verbs"]))
        .collect();
    assert_eq!(verbs, ["get", "list", "watch"].map(String::from).into());
    for resource in [
        "scaledobjects",
        "scaledjobs",
        "scaledjobs/status",
        "triggerauthentications",
    ] {
        assert!(has(&view[0]["rules"][0]["resources"], resource), "{resource}");
    }
    for label in [
        "rbac.authorization.k8s.io/aggregate-to-edit",
        "rbac.authorization.k8s.io/aggregate-to-admin",
    ] {
        let roles = aggregated(&r, label);
        assert_eq!(roles.len(), 1, "{label}");
        let rule = &roles[0]["rules"][0];
        for resource in ["scaledobjects", "scaledjobs", "triggerauthentications"] {
            assert!(has(&rule["resources"], resource), "{label}: {rule}");
        }
        for verb in ["create", "update", "patch", "delete"] {
            assert!(has(&rule["verbs"], verb), "{label}: {rule}");
        }
    }
}

/// `rbac.scaleTargets` grants a named kind's `/scale` and reads of the kind, never a wildcard.
#[tokio::test]
async fn scale_targets_grant_named_scale_subresources() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let r = chart
        .render(&[(
            "rbac.scaleTargets",
            json!([{"apiGroup": "argoproj.io", "resources": ["rollouts"]}]),
        )])
        .await
        .unwrap();
    let op = format!("{RELEASE}-operator");
    assert_eq!(
        r.verbs("ClusterRole", &op, "argoproj.io", "rollouts/scale"),
        [(strings(&json!(["get", "update", "patch"])), vec![])]
    );
    assert_eq!(
        r.verbs("ClusterRole", &op, "argoproj.io", "rollouts"),
        [(strings(&json!(["get", "list", "watch"])), vec![])]
    );
    assert_eq!(
        r.verbs("ClusterRole", &op, "apps", "deployments/scale").len(),
        1,
        "defaults stay"
    );
    let wildcard = chart
        .render(&[(
            "rbac.scaleTargets",
            json!([{"apiGroup": "*", "resources": ["rollouts"]}]),
        )])
        .await;
    assert!(wildcard.is_err_and(|e| e.contains("rbac.scaleTargets")));
}

/// Two releases collide only on the APIService (one per cluster) and the CRDs.
#[tokio::test]
async fn cluster_scoped_names_are_prefixed_per_release() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let mut names = Vec::new();
    for release in ["first", "second"] {
        let opts = RenderOptions {
            release: Some(release),
            ..Default::default()
        };
        let r = chart.render_with(&[], &opts).await.unwrap();
        let cluster_scoped: BTreeSet<String> = r
            .docs
            .iter()
            .filter(|d| {
                d["metadata"].get("namespace").is_none() || d["metadata"]["namespace"] == "kube-system"
            })
            .map(|d| format!("{} {}", text(&d["kind"]), text(&d["metadata"]["name"])))
            .collect();
        for name in &cluster_scoped {
            let shared = name.starts_with("CustomResourceDefinition ") || name.starts_with("APIService ");
            assert!(
                shared || name.contains(&format!(" {release}-ebb-")),
                "{name} is not prefixed"
            );
        }
        names.push(cluster_scoped);
    }
    let common: Vec<&String> = names[0].intersection(&names[1]).collect();
    assert!(
        common
            .iter()
            .all(|n| n.starts_with("CustomResourceDefinition ") || *n == &format!("APIService {APISERVICE}")),
        "{common:?}"
    );
    let overridden = chart
        .render(&[("fullnameOverride", json!("scaler"))])
        .await
        .unwrap();
    assert_eq!(overridden.deployment()["metadata"]["name"], "scaler");
    assert_eq!(overridden.arg("lease-name").as_deref(), Some("scaler"));
    assert!(overridden.find("ClusterRole", "scaler-operator").is_some());
}

/// The API server accepts the renders (server-side dry run: validated, admitted, not stored).
/// Kinds it does not serve (cert-manager's, the ServiceMonitor) are left out.
#[tokio::test]
async fn api_server_accepts_the_renders() {
    let Some((env, chart)) = Chart::load().await else {
        return;
    };
    let kube_version = env.var("EBB_KUBE_VERSION").unwrap().to_string();
    let release_ns = env.namespace("chart-dry").await.unwrap();
    let watched_ns = env.namespace("chart-watched").await.unwrap();
    let sets: [Vec<(&str, Value)>; 3] = [
        vec![],
        vec![
            ("watchNamespace", json!(watched_ns.name)),
            ("rbac.secretNames", json!(["kafka-auth"])),
            ("rbac.aggregateToDefaultRoles", json!(true)),
            (
                "rbac.scaleTargets",
                json!([{"apiGroup": "argoproj.io", "resources": ["rollouts"]}]),
            ),
            // Every optional pod field, so that their indentation is checked too.
            ("extraArgs", json!(["--concurrency=32"])),
            ("env", json!([{"name": "RUST_BACKTRACE", "value": "1"}])),
            ("podAnnotations", json!({"example.com/a": "b"})),
            ("podLabels", json!({"team": "platform"})),
            ("imagePullSecrets", json!([{"name": "regcred"}])),
            ("nodeSelector", json!({"kubernetes.io/os": "linux"})),
            ("tolerations", json!([{"key": "dedicated", "operator": "Exists"}])),
            (
                "affinity",
                json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                      "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "ebb"}}}}]}}),
            ),
            (
                "topologySpreadConstraints",
                json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "ebb"}}}]),
            ),
            ("priorityClassName", json!("system-cluster-critical")),
            ("serviceAccount.annotations", json!({"example.com/role": "ebb"})),
            (
                "metricsService.annotations",
                json!({"prometheus.io/scrape": "true"}),
            ),
            ("logging.format", json!("json")),
        ],
        vec![
            ("metricsAdapter.certificates.mode", json!("certManager")),
            ("serviceMonitor.enabled", json!(true)),
            ("replicas", json!(1)),
        ],
    ];
    let mut failures = Vec::new();
    for (i, values) in sets.iter().enumerate() {
        let opts = RenderOptions {
            release: Some("chart-dry"),
            namespace: Some(&release_ns.name),
            kube_version: Some(&kube_version),
        };
        let r = chart.render_with(values, &opts).await.unwrap();
        let (manifest, skipped) = r.manifest_without(&["cert-manager.io", "monitoring.coreos.com"]);
        let path = std::env::temp_dir().join(format!("ebb-chart-dry-{}-{i}.yaml", release_ns.name));
        std::fs::write(&path, manifest).unwrap();
        let applied = chart
            .kubectl
            .run(&["apply", "--dry-run=server", "-f", &path.display().to_string()])
            .await;
        let _ = std::fs::remove_file(&path);
        match applied {
            Ok(out) => {
                let accepted = out.lines().filter(|l| l.ends_with("(server dry run)")).count();
                eprintln!("values set {i}: {accepted} objects accepted; left out {skipped:?}");
                if accepted != r.docs.len() - skipped.len() {
                    failures.push(format!(
                        "values set {i}: {accepted} of {} accepted:\n{out}",
                        r.docs.len()
                    ));
                }
            }
            Err(e) => failures.push(format!("values set {i} ({values:?}): {e}")),
        }
    }
    watched_ns.delete().await.unwrap();
    release_ns.delete().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// metricsAdapter.delegate: the operator's flags and files for the delegate, `get` on its one
/// Service in its namespace, and nothing taken over (no hook APIService, no restore Job): only
/// `chain.enabled` with a previous adapter found at install does that (the real-helm path is
/// `tests/tests/adapter_chain_e2e.rs`; `helm template` has no cluster to look up).
#[tokio::test]
async fn a_delegate_is_wired_and_nothing_is_taken_over_without_a_previous_adapter() {
    let Some((_env, chart)) = Chart::load().await else {
        return;
    };
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(pem);
    let r = chart
        .render(&[
            (
                "metricsAdapter.delegate.service",
                json!("keda/keda-operator-metrics-apiserver:443"),
            ),
            ("metricsAdapter.delegate.caBundle", json!(bundle)),
        ])
        .await
        .unwrap();
    assert_eq!(
        r.arg("metrics-adapter-delegate").as_deref(),
        Some("keda/keda-operator-metrics-apiserver:443")
    );
    assert_eq!(
        r.arg("metrics-adapter-delegate-ca").as_deref(),
        Some("/chain/delegate-ca.crt")
    );
    assert_eq!(
        r.arg("metrics-adapter-delegate-client-cert"),
        None,
        "no certificate: ebb's ServiceAccount"
    );
    let record = r.get("ConfigMap", &format!("{RELEASE}-chain"));
    assert_eq!(record["data"]["delegate-ca.crt"], pem);
    assert_eq!(
        record["data"]["service"], "",
        "nothing recorded: nothing to restore"
    );
    let role = r.get("Role", &format!("{RELEASE}-delegate"));
    assert_eq!(role["metadata"]["namespace"], "keda");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["services"],
                "resourceNames": ["keda-operator-metrics-apiserver"], "verbs": ["get"]}])
    );
    let binding = r.get("RoleBinding", &format!("{RELEASE}-delegate"));
    let subject = &binding["subjects"][0];
    assert_eq!(
        format!("{}/{}", text(&subject["namespace"]), text(&subject["name"])),
        r.operator_subject()
    );
    assert!(r.find("Job", &format!("{RELEASE}-chain-restore")).is_none());
    let apiservice = r.get("APIService", APISERVICE);
    assert!(
        apiservice["metadata"]["annotations"]["helm.sh/hook"].is_null(),
        "{apiservice}"
    );

    // With a front-proxy client certificate: mounted, and passed.
    let r = chart
        .render(&[
            (
                "metricsAdapter.delegate.service",
                json!("keda/keda-operator-metrics-apiserver"),
            ),
            ("metricsAdapter.delegate.caBundle", json!(bundle)),
            (
                "metricsAdapter.delegate.clientCertSecret",
                json!("ebb-front-proxy"),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(
        r.arg("metrics-adapter-delegate-client-cert").as_deref(),
        Some("/chain-client/tls.crt")
    );
    let volumes = r.pod_spec()["volumes"].to_string();
    assert!(
        volumes.contains("ebb-front-proxy") && volumes.contains(&format!("{RELEASE}-chain")),
        "{volumes}"
    );

    // A delegate needs a CA (or a recorded insecureSkipTLSVerify).
    let error = chart
        .render(&[(
            "metricsAdapter.delegate.service",
            json!("keda/keda-operator-metrics-apiserver"),
        )])
        .await
        .err()
        .expect("a delegate without a CA must fail");
    assert!(
        error.contains("metricsAdapter.delegate.caBundle is required"),
        "{error}"
    );
    let error = chart
        .render(&[("metricsAdapter.delegate.service", json!("not a service"))])
        .await
        .err()
        .expect("the schema checks the Service's form");
    assert!(error.contains("delegate"), "{error}");

    // chain.enabled with nobody holding the APIService: an ordinary install plus an empty record.
    let r = chart
        .render(&[("metricsAdapter.chain.enabled", json!(true))])
        .await
        .unwrap();
    assert_eq!(r.arg("metrics-adapter-delegate"), None);
    assert_eq!(
        r.get("ConfigMap", &format!("{RELEASE}-chain"))["data"]["service"],
        ""
    );
    assert!(r.find("Job", &format!("{RELEASE}-chain-restore")).is_none());
}
