//! ebb's Kubernetes API (group `ebb.dev`, version `v1alpha1`).
//!
//! This crate owns the wire types and nothing else that talks to a cluster:
//! - [`ScaledObject`]: what to scale and on which triggers (KEDA's spec shape, KEDA's defaults);
//! - [`ScaledJob`]: batch work run as Jobs, created on the same triggers (KEDA's ScaledJob);
//! - [`TriggerAuthentication`] / [`ClusterTriggerAuthentication`]: where trigger credentials come from;
//! - [`validation`]: the cross-field rules, shared by the CRD's CEL rules, `ebb validate` and the operator;
//! - [`generate`]: the CRD YAML, generated from these types (`ebb crds`).

pub mod annotated;
pub mod annotations;
pub mod conditions;
pub mod formula;
pub mod generate;
pub mod scaled_job;
pub mod scaled_object;
pub mod schema_check;
pub mod trigger_authentication;
pub mod validation;

pub use scaled_job::{
    JobScalingStrategy, MultipleScalersCalculation, PropagationPolicy, Rollout, RolloutStrategy, ScaledJob,
    ScaledJobSpec, ScaledJobStatus, ScalingStrategy,
};
pub use scaled_object::{
    Advanced, AuthenticationRef, AuthenticationRefKind, Fallback, FallbackBehavior, HealthStatus,
    HorizontalPodAutoscalerConfig, MetricHealth, MetricType, ScaleTargetRef, ScaledObject, ScaledObjectSpec,
    ScaledObjectStatus, ScalingModifiers, Trigger, TriggerMetricType,
};
pub use trigger_authentication::{
    AuthConfigMapTargetRef, AuthEnvironment, AuthSecretTargetRef, ClusterTriggerAuthentication,
    ClusterTriggerAuthenticationSpec, IdentityOwner, PodIdentity, PodIdentityProvider, TriggerAuthentication,
    TriggerAuthenticationSpec, TriggerAuthenticationStatus,
};

/// The API group of every ebb resource.
pub const GROUP: &str = "ebb.dev";
/// The API version served by this crate.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of ebb objects.
pub const API_VERSION: &str = "ebb.dev/v1alpha1";
/// `apiVersion` of KEDA objects, accepted by `ebb validate` so KEDA manifests can be checked before migrating.
pub const KEDA_API_VERSION: &str = "keda.sh/v1alpha1";
