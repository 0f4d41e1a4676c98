//! The operator's rights exactly as the chart renders them (`helm template`), created in the test
//! cluster and bound to a ServiceAccount, so that end-to-end tests run the operator the way users
//! do and a right a feature needs but the chart lacks fails the test.

use std::path::PathBuf;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::Value;

use crate::TestEnv;
use crate::helm::{Tool, chart_dir};
use crate::identity::Identity;
use crate::kafka::unique_name;

/// The operator's rights as the chart renders them, bound to the ServiceAccount `operator` of the
/// test's namespace (the release namespace, where the Lease lives).
pub struct ChartRbac {
    /// The ServiceAccount `operator` of the release namespace, holding the rights.
    pub identity: Identity,
    /// The Lease the chart's Role lets the operator write.
    pub lease_name: String,
    /// Objects outside the test's namespace, deleted at the end: (kind, namespace, name).
    outside: Vec<(String, Option<String>, String)>,
}

impl ChartRbac {
    /// `helm template` with a unique release named after `prefix` in `ns` and the values `sets`
    /// (`key=json`), then every ClusterRole, ClusterRoleBinding, Role and RoleBinding of the output
    /// created as rendered.
    pub async fn install(env: &TestEnv, ns: &str, prefix: &str, sets: &[&str]) -> ChartRbac {
        let admin_kubeconfig = PathBuf::from(env.var("EBB_KUBECONFIG").unwrap());
        let helm = Tool::helm(env, &admin_kubeconfig).unwrap();
        let release = unique_name(prefix);
        let dir = chart_dir().display().to_string();
        let mut args = vec![
            "template",
            &release,
            &dir,
            "--namespace",
            ns,
            "--set-json",
            "serviceAccount.create=false",
            "--set-json",
            "serviceAccount.name=\"operator\"",
            "--set-json",
            "crds.install=false",
        ];
        for set in sets {
            args.extend(["--set-json", set]);
        }
        let text = helm.run(&args).await.unwrap_or_else(|e| panic!("{e}"));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("helm template output is not YAML: {e}\n{text}"));
        let mut outside = Vec::new();
        let mut lease_name = None;
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
            let client = env.client.clone();
            let params = PostParams::default();
            match kind.as_str() {
                "ClusterRole" => {
                    let role: ClusterRole = serde_json::from_value(doc).unwrap();
                    Api::<ClusterRole>::all(client)
                        .create(&params, &role)
                        .await
                        .unwrap();
                }
                "ClusterRoleBinding" => {
                    let b: ClusterRoleBinding = serde_json::from_value(doc).unwrap();
                    Api::<ClusterRoleBinding>::all(client)
                        .create(&params, &b)
                        .await
                        .unwrap();
                }
                "Role" => {
                    let role: Role = serde_json::from_value(doc).unwrap();
                    let lease = role.rules.iter().flatten().find(|r| {
                        r.resources.iter().flatten().any(|x| x == "leases") && r.resource_names.is_some()
                    });
                    if let Some(names) = lease.and_then(|r| r.resource_names.clone()) {
                        lease_name = names.into_iter().next();
                    }
                    let at = namespace.clone().unwrap_or_else(|| ns.to_string());
                    Api::<Role>::namespaced(client, &at)
                        .create(&params, &role)
                        .await
                        .unwrap();
                }
                "RoleBinding" => {
                    let b: RoleBinding = serde_json::from_value(doc).unwrap();
                    let at = namespace.clone().unwrap_or_else(|| ns.to_string());
                    Api::<RoleBinding>::namespaced(client, &at)
                        .create(&params, &b)
                        .await
                        .unwrap();
                }
                _ => continue,
            }
            if namespace.as_deref() != Some(ns) {
                outside.push((kind, namespace, name));
            }
        }
        let identity = Identity::service_account(env, ns, "operator", None)
            .await
            .unwrap();
        ChartRbac {
            identity,
            lease_name: lease_name.expect("the chart's Role names the leader Lease"),
            outside,
        }
    }

    /// Deletes what [`ChartRbac::install`] created outside the test's namespace.
    pub async fn delete(self, admin: &Client) {
        let dp = DeleteParams::default();
        for (kind, namespace, name) in &self.outside {
            let c = admin.clone();
            let ns = namespace.as_deref().unwrap_or_default();
            let _ = match kind.as_str() {
                "ClusterRole" => Api::<ClusterRole>::all(c).delete(name, &dp).await.map(|_| ()),
                "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(c)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
                "Role" => Api::<Role>::namespaced(c, ns).delete(name, &dp).await.map(|_| ()),
                _ => Api::<RoleBinding>::namespaced(c, ns)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
            };
        }
        self.identity.delete(admin).await;
    }
}
