//! The offline subcommands: `ebb validate` ([`validate`]). `ebb crds` prints what `ebb_crds`
//! generates and needs no module of its own.

pub mod validate;
