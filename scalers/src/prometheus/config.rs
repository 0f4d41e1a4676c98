//! The prometheus trigger's typed configuration, read once from its parsed parameters
//! ([`PrometheusConfig`]), with its authentication ([`Auth`]): KEDA's `authModes` `bearer`,
//! `basic`, `tls` and `custom`, each checked for the values it needs.
//!
//! [`PrometheusConfig::try_from`] reports every problem at once; the declaration's `check` runs
//! the same code and keeps the problems that do not come from values unavailable offline (an
//! unresolved authenticationRef), so `ebb validate` and the operator agree.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};

use super::pairs::{self, PairsProblem};
use super::request::{AddressProblem, MAX_QUERY, ServerAddress, parse_timeout};
use crate::common::tls::{ClientCert, TlsSettings, Trust};
use crate::params::{ConfigErrors, ParsedParams};

/// KEDA's authentication modes that ebb's prometheus trigger sends.
pub const AUTH_MODES: &[&str] = &["bearer", "basic", "tls", "custom"];

/// One reason parsed parameters make no [`PrometheusConfig`]. Never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter the configuration needs has no value.
    #[error("{0} has no value")]
    Missing(&'static str),
    /// A value that would come from the authenticationRef, not resolved here.
    #[error("{0} comes from an authenticationRef that is not resolved here")]
    Unresolved(&'static str),
    /// `serverAddress` cannot be used.
    #[error("serverAddress {0}")]
    Address(#[from] AddressProblem),
    /// `query` is too long.
    #[error("query is {0} bytes long; at most {MAX_QUERY} are allowed")]
    QueryTooLong(usize),
    /// `customHeaders` or `queryParameters` is not usable.
    #[error("{param} {problem}")]
    Pairs {
        /// The parameter.
        param: &'static str,
        /// What is wrong.
        problem: PairsProblem,
    },
    /// `timeout` is not usable.
    #[error("timeout {0}")]
    Timeout(String),
    /// An `authModes` entry ebb does not know or does not send for prometheus.
    #[error("authModes: {0:?} is not supported by the prometheus trigger (use bearer, basic, tls or custom)")]
    AuthMode(String),
    /// `bearer` and `basic` together.
    #[error("authModes: bearer and basic cannot be used together")]
    BearerAndBasic,
    /// A mode without the values it needs.
    #[error("authModes {mode} needs {needs} in the TriggerAuthentication")]
    AuthNeeds {
        /// The mode.
        mode: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// A credential that cannot be sent in a header.
    #[error("{0} cannot be sent in an HTTP header (control characters?)")]
    NotAHeaderValue(&'static str),
    /// `customAuthHeader` is not usable.
    #[error("customAuthHeader {0}")]
    CustomAuthHeader(PairsProblem),
    /// `customAuthHeader: Authorization` together with bearer or basic.
    #[error("customAuthHeader cannot be Authorization together with authModes bearer or basic")]
    CustomAuthConflict,
    /// `tls` with a plain-text address.
    #[error(
        "authModes tls needs an https:// serverAddress (ebb never sends a client certificate's request in plain text)"
    )]
    TlsNeedsHttps,
}

impl ConfigProblem {
    /// The parameter the problem is about, for `ebb validate`.
    pub fn param(&self) -> &'static str {
        match self {
            Self::Missing(p) | Self::Unresolved(p) | Self::NotAHeaderValue(p) => p,
            Self::Address(_) => "serverAddress",
            Self::QueryTooLong(_) => "query",
            Self::Pairs { param, .. } => param,
            Self::Timeout(_) => "timeout",
            Self::AuthMode(_) | Self::BearerAndBasic | Self::TlsNeedsHttps => "authModes",
            Self::AuthNeeds { needs, .. } => needs,
            Self::CustomAuthHeader(_) | Self::CustomAuthConflict => "customAuthHeader",
        }
    }

    /// Whether the problem only says a value is not available here (offline validation).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Missing(_) | Self::Unresolved(_))
    }
}

/// Every reason parsed parameters make no [`PrometheusConfig`], found at once.
pub type ConfigError = ConfigErrors<ConfigProblem>;

/// How requests authenticate: headers and TLS settings. `Debug` shows which parts are set only.
#[derive(Clone, Default, PartialEq)]
pub struct Auth {
    /// The `Authorization` header (bearer, basic, a `user:password@` in `serverAddress`, or a
    /// custom header named Authorization), marked sensitive.
    pub authorization: Option<HeaderValue>,
    /// The custom authentication header (`custom`), its value marked sensitive.
    pub custom: Option<(HeaderName, HeaderValue)>,
    /// Server trust (`unsafeSsl`, `ca`) and the client certificate (`tls`).
    pub tls: TlsSettings,
    /// Every credential, to redact from server-written text shown in errors.
    pub secrets: Vec<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("authorization", &self.authorization.is_some())
            .field("custom", &self.custom.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Everything a prometheus trigger is configured with. `Debug` never shows a credential.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Where the query goes.
    pub server: ServerAddress,
    /// The PromQL query.
    pub query: String,
    /// `namespace`, sent as the `namespace` query parameter (Thanos Querier, prom-label-proxy).
    pub namespace: Option<String>,
    /// `queryParameters`, in order.
    pub query_parameters: Vec<(String, String)>,
    /// `customHeaders`, in order.
    pub custom_headers: Vec<(HeaderName, HeaderValue)>,
    /// Read "no series", NaN and ±Inf as 0 instead of failing.
    pub ignore_null_values: bool,
    /// `timeout`; `None` uses the operator's HTTP timeout.
    pub timeout: Option<Duration>,
    /// The authentication.
    pub auth: Auth,
}

/// A value of an auth parameter: given, unresolved here, or absent.
fn auth_value<'a>(p: &'a ParsedParams, name: &'static str) -> Result<Option<&'a str>, ConfigProblem> {
    if p.is_unresolved(name) {
        return Err(ConfigProblem::Unresolved(name));
    }
    Ok(p.str(name).map(str::trim).filter(|v| !v.is_empty()))
}

/// A sensitive header value made from a credential.
fn secret_header(text: &str, param: &'static str) -> Result<HeaderValue, ConfigProblem> {
    let mut value = HeaderValue::from_str(text).map_err(|_| ConfigProblem::NotAHeaderValue(param))?;
    value.set_sensitive(true);
    Ok(value)
}

fn basic(user: &str, password: &str) -> Result<HeaderValue, ConfigProblem> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    secret_header(&format!("Basic {token}"), "username")
}

/// The authentication of parameters `p` for `server` (see the module's documentation).
fn auth(p: &ParsedParams, server: Option<&ServerAddress>, problems: &mut Vec<ConfigProblem>) -> Option<Auth> {
    let modes: Vec<String> = match p.list("authModes").or_else(|| p.list("authMode")) {
        Some(list) => list.iter().map(|m| m.to_ascii_lowercase()).collect(),
        None if p.is_unresolved("authModes") || p.is_unresolved("authMode") => {
            problems.push(ConfigProblem::Unresolved("authModes"));
            return None;
        }
        None => Vec::new(),
    };
    let before = problems.len();
    for mode in &modes {
        if !AUTH_MODES.contains(&mode.as_str()) {
            problems.push(ConfigProblem::AuthMode(mode.clone()));
        }
    }
    let on = |mode: &str| modes.iter().any(|m| m == mode);
    if on("bearer") && on("basic") {
        problems.push(ConfigProblem::BearerAndBasic);
    }
    let mut get = |name: &'static str| auth_value(p, name).map_err(|e| problems.push(e)).ok().flatten();
    let mut out = Auth::default();
    let need = |problems: &mut Vec<ConfigProblem>, mode, needs| {
        problems.push(ConfigProblem::AuthNeeds { mode, needs });
    };
    // Read every value first: an unresolved one is reported once, by `get`.
    let token = get("bearerToken").or(get("token"));
    let (username, password) = (get("username"), get("password"));
    let (ca, cert, key) = (get("ca"), get("cert"), get("key"));
    let (custom_header, custom_value) = (get("customAuthHeader"), get("customAuthValue"));
    if on("bearer") {
        match token {
            Some(token) => {
                out.secrets.push(token.to_string());
                out.authorization = secret_header(&format!("Bearer {token}"), "bearerToken")
                    .map_err(|e| problems.push(e))
                    .ok();
            }
            None if !p.is_unresolved("bearerToken") => need(problems, "bearer", "bearerToken"),
            None => {}
        }
    }
    if on("basic") {
        match username {
            Some(user) => {
                let password = password.unwrap_or_default();
                out.secrets.push(password.to_string());
                out.authorization = basic(user, password).map_err(|e| problems.push(e)).ok();
            }
            None if !p.is_unresolved("username") => need(problems, "basic", "username"),
            None => {}
        }
    }
    if !on("bearer")
        && !on("basic")
        && let Some((user, password)) = server.and_then(ServerAddress::userinfo)
    {
        out.secrets.push(password.to_string());
        out.authorization = basic(user, password).map_err(|e| problems.push(e)).ok();
    }
    if on("custom") {
        match (custom_header, custom_value) {
            (Some(name), Some(value)) => {
                out.secrets.push(value.to_string());
                let value = secret_header(value, "customAuthValue")
                    .map_err(|e| problems.push(e))
                    .ok();
                if name.eq_ignore_ascii_case("authorization") {
                    if on("bearer") || on("basic") {
                        problems.push(ConfigProblem::CustomAuthConflict);
                    } else {
                        out.authorization = value;
                    }
                } else {
                    match pairs::header(name, "") {
                        Ok((name, _)) => out.custom = value.map(|v| (name, v)),
                        Err(e) => problems.push(ConfigProblem::CustomAuthHeader(e)),
                    }
                }
            }
            _ if p.is_unresolved("customAuthHeader") => {}
            _ => need(problems, "custom", "customAuthHeader and customAuthValue"),
        }
    }
    let unsafe_ssl = p.bool("unsafeSsl").unwrap_or(false);
    out.tls.trust = match (unsafe_ssl, ca) {
        (true, _) => Trust::AnyCertificate,
        (false, Some(ca)) => Trust::SystemAnd(ca.to_string()),
        (false, None) => Trust::System,
    };
    if on("tls") {
        if server.is_some_and(|s| !s.is_https()) {
            problems.push(ConfigProblem::TlsNeedsHttps);
        }
        match (cert, key) {
            (Some(cert), Some(key)) => {
                out.tls.client_cert = Some(ClientCert {
                    cert_pem: cert.to_string(),
                    key_pem: key.to_string(),
                });
            }
            _ if p.is_unresolved("cert") => {}
            _ => need(problems, "tls", "cert and key"),
        }
    }
    out.secrets.retain(|s| !s.is_empty());
    (problems.len() == before).then_some(out)
}

impl TryFrom<&ParsedParams> for PrometheusConfig {
    type Error = ConfigError;

    fn try_from(p: &ParsedParams) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut need = |name: &'static str, value: Option<&str>| {
            crate::params::config_errors::need(&mut problems, value.map(str::to_string), || {
                ConfigProblem::Missing(name)
            })
        };
        let server = need("serverAddress", p.str("serverAddress"));
        let query = need("query", p.str("query"));
        let ignore_null_values = p.bool("ignoreNullValues");
        if ignore_null_values.is_none() {
            problems.push(ConfigProblem::Missing("ignoreNullValues"));
        }
        let server = server.and_then(|s| ServerAddress::parse(&s).map_err(|e| problems.push(e.into())).ok());
        if let Some(q) = &query
            && q.len() > MAX_QUERY
        {
            problems.push(ConfigProblem::QueryTooLong(q.len()));
        }
        let namespace = p.str("namespace").map(str::trim).filter(|n| !n.is_empty());
        let pairs_problem = |param| move |problem| ConfigProblem::Pairs { param, problem };
        let custom_headers = pairs::custom_headers(p.str("customHeaders").unwrap_or_default())
            .map_err(pairs_problem("customHeaders"))
            .map_err(|e| problems.push(e))
            .ok();
        let query_parameters =
            pairs::query_parameters(p.str("queryParameters").unwrap_or_default(), namespace.is_some())
                .map_err(pairs_problem("queryParameters"))
                .map_err(|e| problems.push(e))
                .ok();
        let timeout = match p.str("timeout") {
            None => Some(None),
            Some(text) => parse_timeout(text)
                .map_err(|e| problems.push(ConfigProblem::Timeout(e)))
                .ok(),
        };
        let auth = auth(p, server.as_ref(), &mut problems);
        match (
            server,
            query,
            ignore_null_values,
            custom_headers,
            query_parameters,
            timeout,
            auth,
        ) {
            (
                Some(server),
                Some(query),
                Some(ignore_null_values),
                Some(custom_headers),
                Some(query_parameters),
                Some(timeout),
                Some(auth),
            ) if problems.is_empty() => Ok(Self {
                server,
                query,
                namespace: namespace.map(str::to_string),
                query_parameters,
                custom_headers,
                ignore_null_values,
                timeout,
                auth,
            }),
            _ => Err(ConfigErrors {
                trigger_type: "prometheus",
                problems,
            }),
        }
    }
}
