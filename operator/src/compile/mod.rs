//! From a ScaledObject's triggers to compiled triggers, the one path for `ebb validate` and the
//! reconciler ([`triggers::compile`]): auth params and container env are resolved through an
//! [`inputs::ObjectSource`] (files for `ebb validate`, the cluster for the operator,
//! [`cluster_objects`]), then each trigger is parsed by its scaler declaration into typed
//! parameters, its metric name, thresholds and warnings. An aws pod identity adds the role to
//! assume ([`pod_identity`]).

pub mod cluster_objects;
pub mod inputs;
pub mod pod_identity;
pub mod triggers;
