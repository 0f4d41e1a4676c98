//! The parameters both redis trigger types share (where the server is, credentials, database,
//! TLS), their checks, and the typed [`RedisServer`] built from them: the connection a trigger
//! needs, also the key under which triggers share one connection.

use std::fmt;

use super::query::Query;
use crate::ScalerError;
use crate::common::tls::{ClientCert, TlsSettings, Trust};
use crate::params::{AUTH, AUTH_ENV, META_AUTH_ENV, Param, ParamError, ParsedParams};

/// The longest key (list or stream) or consumer group name ebb accepts.
pub const MAX_NAME_BYTES: usize = 1024;

/// The connection parameters of both trigger types, in the order the reference pages list them.
pub const CONNECTION_PARAMS: [Param; 13] = [
    Param::string("address")
        .from(META_AUTH_ENV)
        .doc("The server as `host:port` (`[v6::addr]:port` for IPv6); wins over `host` and `port`."),
    Param::string("host")
        .from(META_AUTH_ENV)
        .doc("The server's host name or IP address, given with `port`, instead of `address`."),
    Param::int("port")
        .from(META_AUTH_ENV)
        .min(1.0)
        .doc("The server's port, given with `host`."),
    Param::string("username")
        .from(META_AUTH_ENV)
        .doc("The ACL user to authenticate as (Redis 6 or later), given with `password`."),
    Param::string("password")
        .from(AUTH_ENV)
        .secret()
        .doc("The password (of `username`, or of the default user); from a TriggerAuthentication or `passwordFromEnv`."),
    Param::int("databaseIndex")
        .default("0")
        .min(0.0)
        .doc("The logical database the keys are in (`SELECT`)."),
    Param::bool("enableTLS")
        .default("false")
        .doc("Connect over TLS (verifying the server's certificate unless `unsafeSsl`)."),
    Param::one_of("tls", &["enable", "disable"])
        .from(AUTH)
        .doc("TLS from the TriggerAuthentication: `enable` connects over TLS, as `enableTLS: true`."),
    Param::bool("unsafeSsl")
        .default("false")
        .doc("With TLS, accept any server certificate (the handshake is still checked)."),
    Param::string("ca")
        .from(AUTH)
        .doc("With TLS, a PEM bundle of the CA certificates to trust instead of the system's roots."),
    Param::string("cert")
        .from(AUTH)
        .doc("With TLS, a PEM client certificate chain, given with `key`."),
    Param::string("key")
        .from(AUTH)
        .secret()
        .doc("With TLS, the client certificate's unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)."),
    Param::string("keyPassword")
        .from(AUTH)
        .secret()
        .doc("The password of an encrypted `key`: not supported, a trigger that sets it fails."),
];

/// Joins two parameter arrays in a `const` context (the trigger's own parameters, then
/// [`CONNECTION_PARAMS`]).
pub const fn join<const A: usize, const B: usize, const N: usize>(
    a: [Param; A],
    b: [Param; B],
) -> [Param; N] {
    assert!(A > 0 && A + B == N, "join: N must be A + B");
    let mut out = [a[0]; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < A { a[i] } else { b[i - A] };
        i += 1;
    }
    out
}

/// The checks of [`CONNECTION_PARAMS`] beyond the declaration's rules, one sentence each.
pub const CONNECTION_CHECKS: [&str; 4] = [
    "`address` is one `host:port` with a port from 1 to 65535 (cluster and sentinel address lists are not supported).",
    "`port` is at most 65535.",
    "`enableTLS: true` and the TriggerAuthentication's `tls` cannot both be set; `cert` and `key` come together; `keyPassword` is not supported.",
    "Key and consumer group names are at most 1024 bytes.",
];

/// Where a trigger's server is, how to log in, which database and whether over TLS: one
/// connection per distinct value, shared by its triggers. Holds the password and key material:
/// `Debug` shows neither.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisServer {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user (`AUTH <user> <password>`), if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Logical database (`SELECT`).
    pub database: u32,
    /// TLS settings, when the connection uses TLS.
    pub tls: Option<TlsSettings>,
}

impl RedisServer {
    /// The endpoint as errors and logs show it: `redis://host:port/db` or `rediss://…`, never
    /// with credentials.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}/{}", self.port, self.database)
    }

    /// The server of a trigger's parsed parameters (already checked by [`check_connection`]).
    pub fn from_params(p: &ParsedParams) -> Result<Self, ScalerError> {
        let invalid = |m: String| ScalerError::InvalidConfig(format!("redis: {m}"));
        let (host, port) = match (p.str("address"), p.str("host"), p.int("port")) {
            (Some(address), _, _) => split_address(address).map_err(|e| invalid(format!("address: {e}")))?,
            (None, Some(host), Some(port)) => {
                let port = u16::try_from(port)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("port must be from 1 to 65535".into()))?;
                (
                    host.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                )
            }
            _ => return Err(invalid("address, or host and port, are required".into())),
        };
        let database = u32::try_from(p.int("databaseIndex").unwrap_or(0))
            .map_err(|_| invalid("databaseIndex must be from 0 to 4294967295".into()))?;
        Ok(Self {
            host,
            port,
            username: p.str("username").map(str::to_string),
            password: p.str("password").map(str::to_string),
            database,
            tls: tls_settings(p).map_err(|e| invalid(e.to_string()))?,
        })
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("endpoint", &self.endpoint())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6).
pub fn split_address(address: &str) -> Result<(String, u16), &'static str> {
    let address = address.trim();
    if address.contains("://") {
        return Err("must be host:port, without a scheme");
    }
    if address.contains(',') {
        return Err(
            "must be one host:port (address lists are for redis-cluster, which ebb does not support)",
        );
    }
    let (host, port) = address.rsplit_once(':').ok_or("must be host:port")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .ok_or("must be host:port ([v6::addr]:port for IPv6)")?,
        None if host.contains(':') => return Err("an IPv6 address must be in brackets: [v6::addr]:port"),
        None => host,
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err("must be host:port with a host name or IP address");
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("the port must be a number from 1 to 65535")?;
    Ok((host.to_string(), port))
}

/// Why the TLS parameters cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsParamError {
    /// Both `enableTLS: true` and auth `tls`.
    #[error("enableTLS and the TriggerAuthentication's tls cannot both be set")]
    Both,
    /// `keyPassword` given.
    #[error("keyPassword (an encrypted key) is not supported; give key as an unencrypted PEM key")]
    EncryptedKey,
    /// Only one of `cert` and `key`.
    #[error("cert and key must be given together")]
    CertWithoutKey,
}

/// The TLS settings the parameters ask for (`None`: plain TCP).
fn tls_settings(p: &ParsedParams) -> Result<Option<TlsSettings>, TlsParamError> {
    let from_metadata = p.bool("enableTLS").unwrap_or(false);
    let from_auth = p.str("tls");
    if from_metadata && from_auth.is_some() {
        return Err(TlsParamError::Both);
    }
    if !(from_metadata || from_auth == Some("enable")) {
        return Ok(None);
    }
    if p.str("keyPassword").is_some() {
        return Err(TlsParamError::EncryptedKey);
    }
    let client_cert = match (p.str("cert"), p.str("key")) {
        (Some(cert), Some(key)) => Some(ClientCert {
            cert_pem: cert.to_string(),
            key_pem: key.to_string(),
        }),
        (None, None) => None,
        _ => return Err(TlsParamError::CertWithoutKey),
    };
    let trust = match (p.bool("unsafeSsl").unwrap_or(false), p.str("ca")) {
        (true, _) => Trust::AnyCertificate,
        (false, Some(ca)) => Trust::Only(ca.to_string()),
        (false, None) => Trust::System,
    };
    Ok(Some(TlsSettings {
        trust,
        client_cert,
        alpn: Vec::new(),
    }))
}

/// The checks of the connection parameters (see [`CONNECTION_CHECKS`]), for a declaration's
/// `check`.
pub fn check_connection(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if let Some(address) = p.str("address")
        && let Err(e) = split_address(address)
    {
        errors.push(ParamError::new("address", e));
    }
    if p.str("address").is_none()
        && let Some(port) = p.int("port")
        && port > i64::from(u16::MAX)
    {
        errors.push(ParamError::new("port", "must be from 1 to 65535"));
    }
    if p.int("databaseIndex").is_some_and(|d| d > i64::from(u32::MAX)) {
        errors.push(ParamError::new("databaseIndex", "too large"));
    }
    if let Err(e) = tls_settings(p) {
        let param = match e {
            TlsParamError::Both => "enableTLS, tls",
            TlsParamError::EncryptedKey => "keyPassword",
            TlsParamError::CertWithoutKey => "cert, key",
        };
        errors.push(ParamError::new(param, e.to_string()));
    }
    errors
}

/// An error when a name parameter is longer than [`MAX_NAME_BYTES`].
pub fn check_name(p: &ParsedParams, name: &str, errors: &mut Vec<ParamError>) {
    if p.str(name).is_some_and(|v| v.len() > MAX_NAME_BYTES) {
        errors.push(ParamError::new(
            name,
            format!("is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
}

/// One trigger's typed configuration: its server, what it reads there, and its thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisTriggerConfig {
    /// The server (the connection's key).
    pub server: RedisServer,
    /// What the trigger reads.
    pub query: Query,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_one_host_and_port() {
        assert_eq!(split_address("redis:6379"), Ok(("redis".into(), 6379)));
        assert_eq!(split_address(" 10.0.0.1:1 "), Ok(("10.0.0.1".into(), 1)));
        assert_eq!(split_address("[::1]:6380"), Ok(("::1".into(), 6380)));
        for bad in [
            "redis",
            "redis:",
            "redis:0",
            "redis:65536",
            "redis:port",
            ":6379",
            "::1:6379",
            "[::1:6379",
            "redis://redis:6379",
            "a:1,b:2",
            "u:p@redis:6379",
        ] {
            assert!(split_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn join_keeps_the_order() {
        const A: [Param; 1] = [Param::string("a")];
        const B: [Param; 2] = [Param::string("b"), Param::string("c")];
        const J: [Param; 3] = join(A, B);
        let names: Vec<&str> = J.iter().map(|p| p.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn endpoints_never_show_credentials() {
        let server = RedisServer {
            host: "::1".into(),
            port: 6379,
            username: Some("app".into()),
            password: Some("hunter2".into()),
            database: 3,
            tls: Some(TlsSettings::verifying(false)),
        };
        assert_eq!(server.endpoint(), "rediss://[::1]:6379/3");
        let debug = format!("{server:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
