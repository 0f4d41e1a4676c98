//! Identities other than the harness' admin: a ServiceAccount bound to a ClusterRole, with a
//! short-lived token (TokenRequest), a client and a kubeconfig file that act as it. Tests of what
//! users run (the chart) act through these, never as `system:masters`.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::{HarnessError, TestEnv};

/// A ServiceAccount's credentials.
pub struct Identity {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub user: String,
    /// Its bearer token (valid for an hour).
    pub token: String,
    /// A kubeconfig file for the API server on loopback with that token.
    pub kubeconfig: PathBuf,
    /// A client that acts as it.
    pub client: Client,
    binding: Option<String>,
}

impl Identity {
    /// Creates ServiceAccount `namespace/name`, binds it cluster-wide to `cluster_role` (when
    /// given) and issues a token for it.
    pub async fn service_account(
        env: &TestEnv,
        namespace: &str,
        name: &str,
        cluster_role: Option<&str>,
    ) -> Result<Identity, HarnessError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), namespace);
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("service account json");
        accounts.create(&PostParams::default(), &sa).await?;
        let binding = match cluster_role {
            None => None,
            Some(role) => {
                let binding_name = format!("{namespace}-{name}");
                let b: ClusterRoleBinding = serde_json::from_value(json!({
                    "metadata": {"name": binding_name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
                }))
                .expect("binding json");
                Api::<ClusterRoleBinding>::all(env.client.clone())
                    .create(&PostParams::default(), &b)
                    .await?;
                Some(binding_name)
            }
        };
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
                .expect("token request json");
        let issued: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await?;
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        let ca = std::fs::read_to_string(format!("{}/ca.crt", env.var("EBB_PKI_DIR")?))
            .map_err(|e| HarnessError::Kubeconfig(format!("reading the test CA: {e}")))?;
        let server = env.var("EBB_KUBE_API_URL")?;
        let text = serde_json::to_string(&json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": server,
                "certificate-authority-data": base64_encode(ca.as_bytes())}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
            "current-context": "test"
        }))
        .expect("kubeconfig json");
        let kubeconfig = std::env::temp_dir().join(format!("ebb-{namespace}-{name}.kubeconfig"));
        write_private(&kubeconfig, &text)?;
        let parsed = Kubeconfig::from_yaml(&text).map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
        Ok(Identity {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            token,
            kubeconfig,
            client: Client::try_from(config)?,
            binding,
        })
    }

    /// Removes the cluster-wide binding and the kubeconfig file (the ServiceAccount goes with
    /// its namespace).
    pub async fn delete(self, admin: &Client) {
        if let Some(b) = &self.binding {
            let _ = Api::<ClusterRoleBinding>::all(admin.clone())
                .delete(b, &DeleteParams::default())
                .await;
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// Writes a file only its owner may read (it holds a token).
fn write_private(path: &std::path::Path, text: &str) -> Result<(), HarnessError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| HarnessError::Kubeconfig(format!("writing {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

/// Standard base64 (kubeconfig `*-data` fields).
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
