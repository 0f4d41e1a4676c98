//! From a ScaledObject's triggers to parsed triggers: auth params and container env are resolved
//! through an [`inputs::ObjectSource`] (files for `ebb validate`, the cluster for the operator,
//! [`cluster_objects`]), then each trigger is parsed by its scaler declaration.

pub mod cluster_objects;
pub mod inputs;
