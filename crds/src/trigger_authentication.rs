//! TriggerAuthentication and ClusterTriggerAuthentication: where trigger credentials come from.
// clippy reads the repeated `printcolumn(type_ = ..)` keys of the derive as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// TriggerAuthentication maps scaler parameters to Secrets, ConfigMaps, the target's env or a pod identity.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    doc = "TriggerAuthentication gives triggers in its namespace their credentials and other parameters from Secrets, ConfigMaps, the scale target's environment or a pod identity; a trigger names it in authenticationRef.",
    plural = "triggerauthentications",
    status = "TriggerAuthenticationStatus",
    singular = "triggerauthentication",
    shortname = "ebbta",
    category = "ebb",
    namespaced,
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    /// Identity of the pod to use for cloud credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<PodIdentity>,
    /// Parameters read from Secret keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_target_ref: Vec<AuthSecretTargetRef>,
    /// Parameters read from ConfigMap keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_map_target_ref: Vec<AuthConfigMapTargetRef>,
    /// Parameters read from the scale target's container environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<AuthEnvironment>,
}

/// ClusterTriggerAuthentication is a cluster-scoped TriggerAuthentication; its Secrets and ConfigMaps
/// live in the operator's namespace.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    doc = "ClusterTriggerAuthentication is a TriggerAuthentication any namespace's triggers may name (authenticationRef.kind: ClusterTriggerAuthentication); the Secrets and ConfigMaps it reads live in the operator's namespace.",
    plural = "clustertriggerauthentications",
    status = "TriggerAuthenticationStatus",
    singular = "clustertriggerauthentication",
    shortname = "ebbcta",
    category = "ebb",
    printcolumn(
        name = "PodIdentity",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretTargetRef[*].name"
    ),
    printcolumn(name = "Env", type_ = "string", json_path = ".spec.env[*].name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct ClusterTriggerAuthenticationSpec {
    /// Same fields as TriggerAuthentication.
    #[serde(flatten)]
    pub auth: TriggerAuthenticationSpec,
}

/// Observed state of a (Cluster)TriggerAuthentication: who uses it, as KEDA lists it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
pub struct TriggerAuthenticationStatus {
    /// The ScaledObjects that use it, comma-separated (`namespace/name` for a cluster one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledobjects: Option<String>,
    /// The ScaledJobs that use it, comma-separated (`namespace/name` for a cluster one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaledjobs: Option<String>,
}

/// Identity provider for cloud credentials.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentity {
    /// `none` or `aws`.
    pub provider: PodIdentityProvider,
    /// Role to assume (aws).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External ID for the role assumption (aws).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "externalID")]
    pub external_id: Option<String>,
    /// Whose identity: `keda` (the operator's, KEDA's name kept) or `workload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_owner: Option<IdentityOwner>,
}

/// Supported pod identity providers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PodIdentityProvider {
    /// No identity.
    None,
    /// AWS (IRSA or EKS Pod Identity) through the default credential chain.
    Aws,
}

/// Whose identity a pod identity stands for.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum IdentityOwner {
    /// The operator's own identity.
    Keda,
    /// The workload's service account.
    Workload,
}

/// A parameter read from a Secret key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSecretTargetRef {
    /// Scaler parameter to fill.
    #[schemars(length(min = 1))]
    pub parameter: String,
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A parameter read from a ConfigMap key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfigMapTargetRef {
    /// Scaler parameter to fill.
    #[schemars(length(min = 1))]
    pub parameter: String,
    /// ConfigMap name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the ConfigMap.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A parameter read from an environment variable of the scale target's container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthEnvironment {
    /// Scaler parameter to fill.
    #[schemars(length(min = 1))]
    pub parameter: String,
    /// Environment variable name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Container to read from; the envSourceContainerName or first container when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

impl ClusterTriggerAuthenticationSpec {
    /// The shared authentication fields.
    pub fn auth(&self) -> &TriggerAuthenticationSpec {
        &self.auth
    }
}
