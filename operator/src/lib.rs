//! ebb's operator and command-line tool.
//!
//! - [`bundle_check`]: `ebb validate`, the offline checks of ScaledObject and TriggerAuthentication
//!   manifests — the same checks the operator runs before it acts on an object.

pub mod bundle_check;
pub mod decision;
pub mod hpa;
pub mod status;
pub mod telemetry;
pub mod client_limits;
