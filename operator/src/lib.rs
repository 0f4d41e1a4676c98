//! ebb's operator and command-line tool.
//!
//! - [`bundle_check`]: `ebb validate`, the offline checks of ScaledObject and TriggerAuthentication
//!   manifests — the same checks the operator runs before it acts on an object.

pub mod api_requests;
pub mod bundle_check;
pub mod client_limits;
pub mod cluster_objects;
pub mod controller;
pub mod decision;
pub mod hpa;
pub mod hpa_cache;
pub mod leader_forward;
pub mod metric_cache;
pub mod metrics_provider;
pub mod run;
pub mod scale_loop;
pub mod status;
pub mod target_index;
pub mod targets;
pub mod telemetry;
pub mod trigger_inputs;
