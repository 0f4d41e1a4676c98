//! The offline subcommands: `ebb validate` ([`validate`], looking triggers' references up among
//! the objects of its input, [`bundle`]; annotated workloads checked as the ScaledObject they
//! generate, [`annotated`], which the operator's generator shares). `ebb crds` prints what `ebb_crds` generates and needs
//! no module of its own.

pub mod annotated;
pub mod bundle;
pub mod validate;
