//! Declarative trigger parameters and the one parser driven by them.
//!
//! A scaler lists its parameters as [`Param`] values in a [`ScalerDecl`] (`decl.rs`); [`parse()`]
//! (`parser.rs`) reads each from the allowed [`Source`]s in order, applies defaults, converts types,
//! enforces bounds and [`Rule`]s, and reports every problem with the parameter's name. The result is
//! a [`ParsedParams`] (`values.rs`). Secret parameters never show their value in an error or in
//! [`ParsedParams`]' redacted view, and URL parameters that may carry `user:password@` are shown
//! with it masked ([`mask_userinfo`]).

mod decl;
mod parser;
mod values;

pub mod config_errors;

pub use config_errors::ConfigErrors;
pub use decl::{
    AUTH, AUTH_ENV, DeclDocs, MAX_PASSED_BYTES, MAX_PASSED_KEYS, META, META_AUTH, META_AUTH_ENV, META_ENV,
    Param, ParamType, Rule, ScalerDecl, Source, Thresholds, no_warnings,
};
pub use parser::{ParamError, TriggerInput, TriggerParseError, parse};
pub use values::{Origin, ParamValue, Parsed, ParsedParams, PassedMetadata, mask_userinfo};

/// Helpers for the scalers' table-driven tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use std::collections::BTreeMap;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Parses metadata only.
    pub fn parse_meta(decl: &ScalerDecl, meta: &[(&str, &str)]) -> Result<ParsedParams, Vec<ParamError>> {
        parse_with(decl, meta, &[])
    }

    /// Parses metadata plus auth params.
    pub fn parse_with(
        decl: &ScalerDecl,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<ParsedParams, Vec<ParamError>> {
        let (m, a) = (map(meta), map(auth));
        parse(
            decl,
            &TriggerInput {
                metadata: &m,
                auth_params: Some(&a),
                resolved_env: None,
            },
        )
    }
}
