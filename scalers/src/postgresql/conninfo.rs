//! The PostgreSQL server a trigger reads ([`PgTarget`]), from a libpq connection string (both
//! forms: `host=h port=5432 user=u` and `postgresql://u:p@h:5432/db?sslmode=require`) or from
//! the trigger's separate `host`/`port`/`userName`/… parameters. Pure.
//!
//! Keys ebb acts on: `host`, `port`, `user`, `password`, `dbname`, `sslmode`, `application_name`,
//! `connect_timeout`, `options`. Client-side keys without meaning here (keep-alives,
//! `target_session_attrs`, `gssencmode`, …) are accepted and ignored. Keys naming files in the
//! operator's container (`sslrootcert`, `sslcert`, `sslkey`, `passfile`, `service`, …) and
//! `hostaddr` are refused. Any other key is a server setting sent at connection start (as pgx
//! does), e.g. `search_path=app`. No error quotes a value (the password could be anywhere).

use std::fmt;
use std::time::Duration;

/// How TLS is used towards the server (`sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not verified (`allow`
    /// and `prefer`, libpq's default).
    Prefer,
    /// TLS required; the certificate is not verified.
    Require,
    /// TLS required; the certificate chain is verified (against `ca`, else the system's roots),
    /// not the name.
    VerifyCa,
    /// TLS required; the chain and the host name are verified.
    VerifyFull,
}

impl SslMode {
    /// The mode of an `sslmode` value, if it is one of libpq's six.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// The `sslmode` values libpq knows.
pub const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// One server to connect to, and how. Equal targets share a connection pool. `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PgTarget {
    /// The servers, tried in order: host and port.
    pub hosts: Vec<(String, u16)>,
    /// The role to log in as.
    pub user: String,
    /// Its password, if any.
    pub password: Option<String>,
    /// The database (the server's default is the user's name).
    pub dbname: Option<String>,
    /// TLS use.
    pub ssl: SslMode,
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: Option<String>,
    /// `connect_timeout`, if set (ebb caps the connect time anyway).
    pub connect_timeout: Option<Duration>,
    /// Server settings sent at connection start (`options` and unknown keys), as `-c k=v` text.
    pub options: Option<String>,
    /// PEM CA certificates that `verify-ca` and `verify-full` trust instead of the system's
    /// roots (the trigger's `ca` parameter).
    pub ca: Option<String>,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("endpoint", &self.endpoint())
            .field("user", &self.user)
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// `postgresql://host:port[,host:port]/db` for messages: no user, no password.
    pub fn endpoint(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(h, p)| match h.contains(':') {
                true => format!("[{h}]:{p}"),
                false => format!("{h}:{p}"),
            })
            .collect();
        format!(
            "postgresql://{}/{}",
            hosts.join(","),
            self.dbname.as_deref().unwrap_or("")
        )
    }
}

/// Why a connection string or the separate parameters give no [`PgTarget`]. Never quotes a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    /// The keyword/value text cannot be read (an unterminated quote, a key without `=`).
    #[error("the connection string is malformed near character {0}")]
    Malformed(usize),
    /// A URI that cannot be read.
    #[error("the connection URI is malformed: {0}")]
    BadUri(&'static str),
    /// A key naming a file or service of the operator's container.
    #[error("connection key {0} is not supported: ebb reads no files for a trigger")]
    FileKey(String),
    /// A key ebb does not support.
    #[error("connection key {0} is not supported")]
    Unsupported(String),
    /// A key that is not a setting name.
    #[error("connection key {0:?} is not a valid name")]
    BadKey(String),
    /// A value of the wrong form (the value is not shown).
    #[error("connection key {key} has an invalid value ({expected})")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// No host.
    #[error("the connection string names no host (Unix sockets cannot be used from the operator)")]
    NoHost,
    /// No user: libpq would use the operator's OS user, which means nothing to the database.
    #[error("the connection string names no user")]
    NoUser,
}

/// Keys libpq and pgx accept that have no meaning for ebb's client.
const IGNORED: &[&str] = &[
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
    "load_balance_hosts",
    "gssencmode",
    "gsslib",
    "krbsrvname",
    "sslcompression",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "channel_binding",
    "requirepeer",
    "require_auth",
    "replication",
];

/// Keys that name files or services in the operator's container: refused.
const FILE_KEYS: &[&str] = &[
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "passfile",
    "service",
    "servicefile",
    "hostaddr",
];

/// The pieces of a target as given, before checks and defaults.
#[derive(Default)]
struct Raw {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
    options: Vec<String>,
}

impl Raw {
    fn set(&mut self, key: &str, value: String) -> Result<(), ConnInfoError> {
        match key {
            "host" => self.host = Some(value),
            "port" => self.port = Some(value),
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "sslmode" => self.sslmode = Some(value),
            "application_name" => self.application_name = Some(value),
            "connect_timeout" => self.connect_timeout = Some(value),
            "options" => self.options.push(value),
            k if IGNORED.contains(&k) => {}
            k if FILE_KEYS.contains(&k) => return Err(ConnInfoError::FileKey(k.to_string())),
            k if is_setting_name(k) => self.options.push(format!("-c {k}={}", escape_option(&value))),
            k => return Err(ConnInfoError::BadKey(shorten(k))),
        }
        Ok(())
    }
}

/// A server setting's name: letters, digits, `_` and `.` (custom settings are `ext.name`).
fn is_setting_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 63
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A key for a message: at most 40 characters.
fn shorten(k: &str) -> String {
    k.chars().take(40).collect()
}

/// Escapes a value for the startup `options` text (spaces and backslashes take a backslash).
fn escape_option(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses a connection string in either libpq form.
pub fn parse_connection_string(text: &str) -> Result<PgTarget, ConnInfoError> {
    let trimmed = text.trim();
    let raw = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        parse_uri(trimmed)?
    } else {
        parse_keywords(trimmed)?
    };
    finish(raw)
}

/// The trigger's separate parameters (KEDA's `host`, `port`, `userName`, `dbName`, `sslmode`,
/// `password`) as a target.
pub fn from_parts(
    host: &str,
    port: &str,
    user: &str,
    dbname: &str,
    sslmode: &str,
    password: Option<&str>,
) -> Result<PgTarget, ConnInfoError> {
    finish(Raw {
        host: Some(host.to_string()),
        port: Some(port.to_string()),
        user: Some(user.to_string()),
        dbname: Some(dbname.to_string()),
        sslmode: Some(sslmode.to_string()),
        password: password.map(str::to_string),
        ..Raw::default()
    })
}

fn parse_keywords(text: &str) -> Result<Raw, ConnInfoError> {
    let mut raw = Raw::default();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            return Ok(raw);
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if key.is_empty() || i >= chars.len() || chars[i] != '=' {
            return Err(ConnInfoError::Malformed(start));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(ConnInfoError::Malformed(start)),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let next = chars.get(i + 1).ok_or(ConnInfoError::Malformed(start))?;
                        value.push(*next);
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
        }
        raw.set(&key, value)?;
    }
}

fn decode(part: &str) -> Result<String, ConnInfoError> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ConnInfoError::BadUri("a part is not UTF-8 once percent-decoded"))
}

fn parse_uri(text: &str) -> Result<Raw, ConnInfoError> {
    let mut raw = Raw::default();
    let rest = text.split_once("://").map(|(_, r)| r).unwrap_or(text);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                raw.user = Some(decode(user)?);
            }
            if let Some(p) = password {
                raw.password = Some(decode(p)?);
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for spec in hosts.split(',') {
            let (host, port) = split_host_port(spec)?;
            names.push(decode(host)?);
            ports.push(port.unwrap_or("").to_string());
        }
        raw.host = Some(names.join(","));
        if ports.iter().any(|p| !p.is_empty()) {
            raw.port = Some(ports.join(","));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        raw.dbname = Some(decode(db)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or(ConnInfoError::BadUri("a query parameter has no ="))?;
        raw.set(&decode(k)?, decode(v)?)?;
    }
    Ok(raw)
}

/// `host[:port]` or `[v6]:port`.
fn split_host_port(spec: &str) -> Result<(&str, Option<&str>), ConnInfoError> {
    if let Some(inner) = spec.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or(ConnInfoError::BadUri("an IPv6 host has no closing ]"))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(ConnInfoError::BadUri("text after an IPv6 host")),
        };
    }
    Ok(match spec.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (spec, None),
    })
}

fn parse_port(p: &str) -> Result<u16, ConnInfoError> {
    match p.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConnInfoError::BadValue {
            key: "port",
            expected: "a port number from 1 to 65535",
        }),
    }
}

fn finish(raw: Raw) -> Result<PgTarget, ConnInfoError> {
    let names: Vec<&str> = raw
        .host
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if names.is_empty() || names.iter().any(|h| h.starts_with('/')) {
        return Err(ConnInfoError::NoHost);
    }
    let ports: Vec<u16> = match raw.port.as_deref().map(str::trim) {
        None | Some("") => vec![5432],
        Some(list) => list
            .split(',')
            .map(|p| match p.trim() {
                "" => Ok(5432),
                p => parse_port(p),
            })
            .collect::<Result<_, _>>()?,
    };
    let hosts: Vec<(String, u16)> = match (names.len(), ports.len()) {
        (_, 1) => names.iter().map(|h| (h.to_string(), ports[0])).collect(),
        (n, m) if n == m => names.iter().map(|h| h.to_string()).zip(ports).collect(),
        _ => {
            return Err(ConnInfoError::BadValue {
                key: "port",
                expected: "one port, or one per host",
            });
        }
    };
    let user = raw.user.filter(|u| !u.is_empty()).ok_or(ConnInfoError::NoUser)?;
    let ssl = match raw.sslmode.as_deref() {
        None | Some("") => SslMode::Prefer,
        Some(m) => SslMode::parse(m).ok_or(ConnInfoError::BadValue {
            key: "sslmode",
            expected: "disable, allow, prefer, require, verify-ca or verify-full",
        })?,
    };
    let connect_timeout = match raw.connect_timeout.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => match t.parse::<u64>() {
            // libpq: zero or negative means no timeout; ebb's own cap then applies.
            Ok(0) => None,
            Ok(s) => Some(Duration::from_secs(s.max(2))),
            Err(_) => {
                return Err(ConnInfoError::BadValue {
                    key: "connect_timeout",
                    expected: "whole seconds",
                });
            }
        },
    };
    let options = (!raw.options.is_empty()).then(|| raw.options.join(" "));
    Ok(PgTarget {
        hosts,
        user,
        password: raw.password.filter(|p| !p.is_empty()),
        dbname: raw.dbname.filter(|d| !d.is_empty()),
        ssl,
        application_name: raw.application_name.filter(|a| !a.is_empty()),
        connect_timeout,
        options,
        ca: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Any text, in either form, parses or fails without a panic, and errors never quote it.
        #[test]
        fn arbitrary_connection_strings_never_panic(
            text in ".{0,80}",
            uri in "postgres(ql)?://[a-z:@%\\[\\],./?=&0-9]{0,60}",
        ) {
            for t in [&text, &uri] {
                if let Err(e) = parse_connection_string(t) {
                    let shown = e.to_string();
                    prop_assert!(t.len() < 8 || !shown.contains(t.as_str()), "{shown}");
                }
            }
        }
    }

    #[test]
    fn keyword_form_with_quotes_and_escapes() {
        let t = parse_connection_string(
            "host=db.shop port = 6432 user='app user' password='it\\'s s\\\\ecret' dbname=orders sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(t.hosts, [("db.shop".to_string(), 6432)]);
        assert_eq!(t.user, "app user");
        assert_eq!(t.password.as_deref(), Some("it's s\\ecret"));
        assert_eq!(t.dbname.as_deref(), Some("orders"));
        assert_eq!(t.ssl, SslMode::VerifyFull);
        assert_eq!(t.endpoint(), "postgresql://db.shop:6432/orders");
        let debug = format!("{t:?}");
        assert!(!debug.contains("ecret"), "{debug}");
    }

    #[test]
    fn uri_form() {
        let t = parse_connection_string(
            "postgresql://app:p%40ss%3Aword@h1:5433,[::1]:5434/orders?sslmode=require&application_name=ebb&search_path=app",
        )
        .unwrap();
        assert_eq!(t.hosts, [("h1".to_string(), 5433), ("::1".to_string(), 5434)]);
        assert_eq!(
            (t.user.as_str(), t.password.as_deref()),
            ("app", Some("p@ss:word"))
        );
        assert_eq!(t.ssl, SslMode::Require);
        assert_eq!(t.application_name.as_deref(), Some("ebb"));
        assert_eq!(t.options.as_deref(), Some("-c search_path=app"));
        assert_eq!(t.endpoint(), "postgresql://h1:5433,[::1]:5434/orders");
        let t = parse_connection_string("postgres://u@localhost").unwrap();
        assert_eq!((t.hosts[0].1, t.ssl, t.dbname), (5432, SslMode::Prefer, None));
    }

    #[test]
    fn kedas_separate_parameters_escape_nothing_into_other_keys() {
        // KEDA escapes these into a keyword string; ebb never builds one, so a tab or `x=y` in
        // a value stays in that value.
        let t = from_parts(
            "db.example",
            "5432",
            "user\tsslmode=disable",
            "testdb",
            "require",
            Some("secret\nhost=attacker"),
        )
        .unwrap();
        assert_eq!(t.user, "user\tsslmode=disable");
        assert_eq!(t.hosts, [("db.example".to_string(), 5432)]);
        assert_eq!(t.ssl, SslMode::Require);
        assert_eq!(t.password.as_deref(), Some("secret\nhost=attacker"));
        let t = from_parts("host1,host2", "1234", "user", "testDb", "allow", None).unwrap();
        assert_eq!(
            t.hosts,
            [("host1".to_string(), 1234), ("host2".to_string(), 1234)]
        );
        assert_eq!(t.ssl, SslMode::Prefer);
    }

    #[test]
    fn refusals_never_quote_values() {
        let cases: &[(&str, ConnInfoError)] = &[
            (
                "host=h user=u password='unterminated",
                ConnInfoError::Malformed(14),
            ),
            (
                "host=h user=u sslrootcert=/etc/ca.pem",
                ConnInfoError::FileKey("sslrootcert".into()),
            ),
            ("host=/var/run/postgresql user=u", ConnInfoError::NoHost),
            ("postgresql://localhost:5432", ConnInfoError::NoUser),
            ("user=u", ConnInfoError::NoHost),
            (
                "host=h user=u port=hunter2",
                ConnInfoError::BadValue {
                    key: "port",
                    expected: "a port number from 1 to 65535",
                },
            ),
            (
                "host=h user=u sslmode=required",
                ConnInfoError::BadValue {
                    key: "sslmode",
                    expected: "disable, allow, prefer, require, verify-ca or verify-full",
                },
            ),
            ("host=h user=u bad-key=1", ConnInfoError::BadKey("bad-key".into())),
            (
                "host=a,b,c port=1,2 user=u",
                ConnInfoError::BadValue {
                    key: "port",
                    expected: "one port, or one per host",
                },
            ),
            (
                "postgresql://u:%FF@h/db",
                ConnInfoError::BadUri("a part is not UTF-8 once percent-decoded"),
            ),
        ];
        for (text, want) in cases {
            let got = parse_connection_string(text).unwrap_err();
            assert_eq!(&got, want, "{text}");
            assert!(!got.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn ignored_and_runtime_keys() {
        let t = parse_connection_string(
            "host=h user=u keepalives=1 target_session_attrs=any options='-c work_mem=4MB' statement_timeout='1 s' connect_timeout=0",
        )
        .unwrap();
        assert_eq!(
            t.options.as_deref(),
            Some("-c work_mem=4MB -c statement_timeout=1\\ s")
        );
        assert_eq!(t.connect_timeout, None);
        let t = parse_connection_string("host=h user=u connect_timeout=1").unwrap();
        assert_eq!(t.connect_timeout, Some(Duration::from_secs(2)), "libpq's minimum");
    }
}
