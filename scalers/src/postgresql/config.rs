//! The postgresql trigger's typed configuration, read once from its parsed parameters.

use super::conninfo::{self, ConnInfoError, PgTarget};
use crate::params::{ConfigErrors, ParsedParams};

/// Everything a postgresql trigger is configured with. `Debug` shows no password.
#[derive(Debug, Clone, PartialEq)]
pub struct PgConfig {
    /// The server, credentials and TLS mode.
    pub target: PgTarget,
    /// `query`.
    pub query: String,
    /// `targetQueryValue`.
    pub target_value: f64,
    /// `activationTargetQueryValue`: active when the value is strictly greater.
    pub activation: f64,
}

/// One reason parsed parameters make no [`PgConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter the configuration needs has no value (e.g. it is still unresolved).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// The connection string or the separate parameters name no usable server.
    #[error("{0}")]
    Connection(#[from] ConnInfoError),
}

/// Every reason parsed parameters make no [`PgConfig`], found at once.
pub type ConfigError = ConfigErrors<ConfigProblem>;

/// The target of the separate parameters (`host`, `port`, `userName`, `dbName`, `sslmode`,
/// `password`); [`ConnInfoError::NoHost`] and friends when one is missing.
pub fn target_from_parts(p: &ParsedParams) -> Result<PgTarget, ConnInfoError> {
    conninfo::from_parts(
        p.str("host").unwrap_or(""),
        p.str("port").unwrap_or(""),
        p.str("userName").unwrap_or(""),
        p.str("dbName").unwrap_or(""),
        p.str("sslmode").unwrap_or(""),
        p.str("password"),
    )
}

impl TryFrom<&ParsedParams> for PgConfig {
    type Error = ConfigError;

    fn try_from(p: &ParsedParams) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let query = need(&mut problems, "query", p.str("query").map(str::to_string));
        let target_value = need(&mut problems, "targetQueryValue", p.float("targetQueryValue"));
        let activation = p.float("activationTargetQueryValue").unwrap_or(0.0);
        let target = if p.is_unresolved("connection") {
            problems.push(ConfigProblem::Missing("connection"));
            None
        } else {
            let made = match p.str("connection") {
                Some(text) => conninfo::parse_connection_string(text),
                None => target_from_parts(p),
            };
            made.map(|target| PgTarget {
                ca: p.str("ca").map(str::to_string),
                ..target
            })
            .map_err(|e| problems.push(e.into()))
            .ok()
        };
        match (query, target_value, target) {
            (Some(query), Some(target_value), Some(target)) if problems.is_empty() => Ok(Self {
                target,
                query,
                target_value,
                activation,
            }),
            _ => Err(ConfigErrors {
                trigger_type: "postgresql",
                problems,
            }),
        }
    }
}

/// `value`, noting a [`ConfigProblem::Missing`] when there is none.
fn need<T>(problems: &mut Vec<ConfigProblem>, name: &'static str, value: Option<T>) -> Option<T> {
    crate::params::config_errors::need(problems, value, || ConfigProblem::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported() {
        let e = PgConfig::try_from(&ParsedParams::default()).unwrap_err();
        assert_eq!(
            e.problems,
            [
                ConfigProblem::Missing("query"),
                ConfigProblem::Missing("targetQueryValue"),
                ConfigProblem::Connection(ConnInfoError::NoHost),
            ]
        );
        assert!(
            e.to_string().starts_with("postgresql: query has no value; "),
            "{e}"
        );
    }
}
