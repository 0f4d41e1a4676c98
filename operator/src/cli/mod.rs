//! The subcommands besides `ebb operator` (all offline but `ebb status`): `ebb migrate` ([`migrate`]: KEDA's objects rewritten as ebb's), `ebb validate` ([`validate`]; ScaledJobs in [`scaled_job`]; the
//! per-trigger findings of both kinds in [`trigger_report`]; looking triggers' references up among
//! the objects of its input, [`bundle`]; annotated workloads checked as the ScaledObject they
//! generate, [`annotated`], which the operator's generator shares); `ebb explain` ([`explain`]) and the
//! per-type reference pages ([`scaler_docs`]); `ebb status` ([`status`] and [`status_text`], pure, and its
//! cluster side [`status_io`]). `ebb simulate` ([`simulate`]: a
//! series of source values replayed through the operator's decisions and a model of the HPA). `ebb crds` prints what `ebb_crds` generates and needs
//! no module of its own.

pub mod annotated;
pub mod bundle;
pub mod explain;
#[cfg(test)]
mod explain_tests;
pub mod migrate;
pub mod operator_args;
pub mod scaled_job;
pub mod scaler_docs;
pub mod simulate;
pub mod status;
pub mod status_io;
#[cfg(test)]
mod status_tests;
pub mod status_text;
pub mod trigger_report;
pub mod validate;
