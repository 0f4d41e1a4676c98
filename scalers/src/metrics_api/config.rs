//! The metrics-api trigger's typed configuration, read once from its parsed parameters.

use std::fmt;

use crate::params::{ConfigErrors, ParsedParams, mask_userinfo};

/// How the fetched document is read (`format`); only JSON is supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON document.
    Json,
}

/// Everything a metrics-api trigger is configured with. `Debug` masks the URL's credentials.
#[derive(Clone, PartialEq)]
pub struct MetricsApiConfig {
    /// The URL polled; may carry `user:password@` (sent as basic auth, never shown).
    pub url: String,
    /// Dotted path to the value in the document, e.g. `queue.depth`.
    pub value_location: String,
    /// The HPA target value.
    pub target_value: f64,
    /// Active when the value is strictly greater than this.
    pub activation_target_value: f64,
    /// The document format.
    pub format: Format,
    /// Skip certificate verification.
    pub unsafe_ssl: bool,
}

impl fmt::Debug for MetricsApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsApiConfig")
            .field("url", &mask_userinfo(&self.url))
            .field("value_location", &self.value_location)
            .field("target_value", &self.target_value)
            .field("activation_target_value", &self.activation_target_value)
            .field("format", &self.format)
            .field("unsafe_ssl", &self.unsafe_ssl)
            .finish()
    }
}

/// One reason parsed parameters make no [`MetricsApiConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter the configuration needs has no value (e.g. it is still unresolved).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// `format` names a format ebb cannot read.
    #[error("format {0:?} is not supported (only json)")]
    UnsupportedFormat(String),
}

/// Every reason parsed parameters make no [`MetricsApiConfig`], found at once.
pub type ConfigError = ConfigErrors<ConfigProblem>;

impl TryFrom<&ParsedParams> for MetricsApiConfig {
    type Error = ConfigError;

    fn try_from(p: &ParsedParams) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let url = need(&mut problems, "url", p.str("url"));
        let value_location = need(&mut problems, "valueLocation", p.str("valueLocation"));
        let target_value = need(&mut problems, "targetValue", p.float("targetValue"));
        let activation_target_value = need(
            &mut problems,
            "activationTargetValue",
            p.float("activationTargetValue"),
        );
        let format = need(&mut problems, "format", p.str("format"));
        let unsafe_ssl = need(&mut problems, "unsafeSsl", p.bool("unsafeSsl"));
        let format = match format {
            Some("json") => Some(Format::Json),
            Some(other) => {
                problems.push(ConfigProblem::UnsupportedFormat(other.to_string()));
                None
            }
            None => None,
        };
        match (
            url,
            value_location,
            target_value,
            activation_target_value,
            format,
            unsafe_ssl,
        ) {
            (
                Some(url),
                Some(value_location),
                Some(target_value),
                Some(activation_target_value),
                Some(format),
                Some(unsafe_ssl),
            ) if problems.is_empty() => Ok(Self {
                url: url.to_string(),
                value_location: value_location.to_string(),
                target_value,
                activation_target_value,
                format,
                unsafe_ssl,
            }),
            _ => Err(ConfigErrors {
                trigger_type: "metrics-api",
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
    use crate::metrics_api::DECL;
    use crate::params::tests_support::parse_meta;

    #[test]
    fn declared_defaults_reach_the_config() {
        let p = parse_meta(
            &DECL,
            &[
                ("url", "http://user:hunter2@127.0.0.1:8080/q"),
                ("valueLocation", "queue.depth"),
                ("targetValue", "5"),
            ],
        )
        .unwrap();
        let c = MetricsApiConfig::try_from(&p).unwrap();
        assert_eq!(c.url, "http://user:hunter2@127.0.0.1:8080/q");
        assert_eq!(c.value_location, "queue.depth");
        assert_eq!(c.target_value, 5.0);
        assert_eq!(c.activation_target_value, 0.0);
        assert_eq!(c.format, Format::Json);
        assert!(!c.unsafe_ssl);
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("user"), "{debug}");

        let p = parse_meta(
            &DECL,
            &[
                ("url", "https://h/m"),
                ("valueLocation", "v"),
                ("targetValue", "2.5"),
                ("activationTargetValue", "1"),
                ("unsafeSsl", "true"),
            ],
        )
        .unwrap();
        let c = MetricsApiConfig::try_from(&p).unwrap();
        assert_eq!((c.activation_target_value, c.unsafe_ssl), (1.0, true));
    }

    #[test]
    fn every_missing_parameter_is_reported() {
        let e = MetricsApiConfig::try_from(&ParsedParams::default()).unwrap_err();
        assert_eq!(
            e.problems,
            [
                ConfigProblem::Missing("url"),
                ConfigProblem::Missing("valueLocation"),
                ConfigProblem::Missing("targetValue"),
                ConfigProblem::Missing("activationTargetValue"),
                ConfigProblem::Missing("format"),
                ConfigProblem::Missing("unsafeSsl"),
            ]
        );
        assert!(
            e.to_string()
                .starts_with("metrics-api: url has no value; valueLocation"),
            "{e}"
        );
    }
}
