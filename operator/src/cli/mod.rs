//! The offline subcommands: `ebb validate` ([`validate`], looking triggers' references up among
//! the objects of its input, [`bundle`]). `ebb crds` prints what `ebb_crds` generates and needs
//! no module of its own.

pub mod bundle;
pub mod validate;
