//! ebb's operator and command-line tool, grouped by concern:
//!
//! - [`cli`]: the offline subcommands (`ebb validate`).
//! - [`compile`]: a ScaledObject's triggers, resolved (auth params, container env) and parsed —
//!   the same path for `ebb validate` (files) and the operator (cluster).
//! - [`generate`]: ScaledObjects generated from scaling annotations on Deployments and
//!   StatefulSets (checked like `ebb validate`, owned by the workload).
//! - [`reconcile`]: one pass per ScaledObject change: validity, conflicts, the owned HPA,
//!   finalizer, starting the object's scale loop.
//! - [`scale`]: the per-object scale loop, its pure decisions and the `/scale` reads and writes.
//! - [`status`]: the status a user sees, composed purely and written only on change.
//! - [`cache`]: watch-fed caches on one generic index (HPAs, workloads' replicas, which object
//!   points at which target).
//! - [`adapter`]: the glue to the embedded metrics adapter (poll cache, provider, leader forwarding).
//! - [`infra`]: the Kubernetes client's limits and request counting, metrics and health endpoints.
//! - [`context`]: the state the reconciler, the scale loops and the adapter share.
//! - [`run`]: `ebb operator`, the wiring of all of the above under leader election.

pub mod adapter;
pub mod cache;
pub mod cli;
pub mod compile;
pub mod context;
pub mod generate;
pub mod infra;
pub mod reasons;
pub mod reconcile;
pub mod run;
pub mod scale;
pub mod status;
