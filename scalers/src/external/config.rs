//! The external triggers' typed configuration, read once from the parsed parameters: where the
//! server is ([`ScalerAddress`]), how to dial it ([`TlsSettings`] or plain text), and the metadata
//! passed on to it.

use std::collections::BTreeMap;
use std::fmt;

use crate::common::tls::{ClientCert, TlsSettings, Trust};
use crate::params::{ConfigErrors, ParsedParams};

/// The longest `scalerAddress` accepted.
pub const MAX_ADDRESS_LEN: usize = 512;

/// A server's `host:port`, as `scalerAddress` names it (gRPC's `dns:///` prefix allowed; a missing
/// port is 443, as gRPC's own default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScalerAddress {
    /// The host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

/// Why a `scalerAddress` names no server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty, or only a scheme.
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("is longer than {MAX_ADDRESS_LEN} characters")]
    TooLong,
    /// A gRPC name scheme other than `dns:` (e.g. `unix:`).
    #[error("uses scheme {0:?}; ebb dials `host:port` or `dns:///host:port`")]
    Scheme(String),
    /// The port is not a number from 1 to 65535.
    #[error("has port {0:?}, not a number from 1 to 65535")]
    Port(String),
    /// The host holds characters no host name or address has.
    #[error("has host {0:?}, which is not a host name or IP address")]
    Host(String),
}

impl ScalerAddress {
    /// Reads `host:port`, `[v6]:port`, `host` (port 443) or any of them after `dns:///`.
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        let raw = raw.trim();
        if raw.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        let rest = match raw.split_once(':') {
            Some(("dns", rest)) => rest.trim_start_matches('/'),
            Some((scheme, rest)) if rest.starts_with("//") || scheme.eq_ignore_ascii_case("unix") => {
                return Err(AddressError::Scheme(scheme.to_string()));
            }
            _ => raw,
        };
        if rest.is_empty() {
            return Err(AddressError::Empty);
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| AddressError::Host(rest.to_string()))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(AddressError::Host(rest.to_string())),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AddressError::Port(p.to_string()))?,
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !host_ok {
            return Err(AddressError::Host(host.to_string()));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port`, an IPv6 host in brackets (what errors and logs show).
    pub fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Display for ScalerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

/// Everything an external trigger is configured with. `Debug` shows neither PEM text nor the
/// passed metadata's values.
#[derive(Clone, PartialEq)]
pub struct ExternalConfig {
    /// The server.
    pub address: ScalerAddress,
    /// TLS settings when the server is dialled over TLS (`enableTLS`, `caCert` or a client
    /// certificate), `None` for plain text.
    pub tls: Option<TlsSettings>,
    /// KEDA's `scalerMetadata`: the trigger's metadata as passed to the server.
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for ExternalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalConfig")
            .field("address", &self.address.authority())
            .field("tls", &self.tls)
            .field("metadata_keys", &self.metadata.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One reason parsed parameters make no [`ExternalConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter the configuration needs has no value (e.g. it is still unresolved).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// `scalerAddress` names no server.
    #[error("scalerAddress {0}")]
    Address(#[source] AddressError),
}

/// Every reason parsed parameters make no [`ExternalConfig`], found at once.
pub type ConfigError = ConfigErrors<ConfigProblem>;

impl TryFrom<&ParsedParams> for ExternalConfig {
    type Error = ConfigError;

    fn try_from(p: &ParsedParams) -> Result<Self, Self::Error> {
        let mut problems = Vec::new();
        let address = match p.str("scalerAddress") {
            None => {
                problems.push(ConfigProblem::Missing("scalerAddress"));
                None
            }
            Some(raw) => ScalerAddress::parse(raw)
                .map_err(|e| problems.push(ConfigProblem::Address(e)))
                .ok(),
        };
        ConfigErrors::check("external", problems)?;
        let client_cert = match (p.str("tlsClientCert"), p.str("tlsClientKey")) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert_pem: cert.to_string(),
                key_pem: key.to_string(),
            }),
            _ => None,
        };
        let ca = p.str("caCert");
        // As KEDA: TLS when asked for, or when a CA or a client certificate is given.
        let tls_wanted = p.bool("enableTLS").unwrap_or(false) || ca.is_some() || client_cert.is_some();
        let tls = tls_wanted.then(|| TlsSettings {
            trust: match (p.bool("unsafeSsl").unwrap_or(false), ca) {
                (true, _) => Trust::AnyCertificate,
                (false, Some(ca)) => Trust::SystemAnd(ca.to_string()),
                (false, None) => Trust::System,
            },
            client_cert,
            alpn: vec![b"h2".to_vec()],
        });
        Ok(Self {
            address: address.unwrap_or_else(|| ScalerAddress {
                host: String::new(),
                port: 0,
            }),
            tls,
            metadata: p.passed_metadata().0.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ok = |raw: &str, host: &str, port: u16| {
            assert_eq!(
                ScalerAddress::parse(raw),
                Ok(ScalerAddress {
                    host: host.into(),
                    port
                }),
                "{raw}"
            )
        };
        ok("scaler.keda.svc:9090", "scaler.keda.svc", 9090);
        ok(" 127.0.0.1:6000 ", "127.0.0.1", 6000);
        ok("dns:///scaler:9090", "scaler", 9090);
        ok("dns:scaler:9090", "scaler", 9090);
        ok("[::1]:7000", "::1", 7000);
        ok("scaler", "scaler", 443);
        ok("[fe80::1]", "fe80::1", 443);
        assert_eq!(
            ScalerAddress::parse("[::1]:7000").unwrap().authority(),
            "[::1]:7000"
        );
        let err = |raw: &str| ScalerAddress::parse(raw).unwrap_err();
        assert_eq!(err("unix:///tmp/s.sock"), AddressError::Scheme("unix".into()));
        assert_eq!(err("http://h:1"), AddressError::Scheme("http".into()));
        assert_eq!(err("h:0"), AddressError::Port("0".into()));
        assert_eq!(err("h:99999"), AddressError::Port("99999".into()));
        assert_eq!(err("h:x"), AddressError::Port("x".into()));
        assert_eq!(err("dns:///"), AddressError::Empty);
        assert_eq!(err("a b:1"), AddressError::Host("a b".into()));
        assert_eq!(err("[::1:1"), AddressError::Host("[::1:1".into()));
        assert_eq!(err(&"h".repeat(600)), AddressError::TooLong);
    }
}
