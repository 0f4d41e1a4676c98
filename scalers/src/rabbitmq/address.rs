//! Broker addresses: the `host` URL parsed into scheme, host, port, vhost, path prefix and
//! credentials, and the management API URLs built from it.
//!
//! `host` is `amqp[s]://[user:password@]host[:port]/<vhost>` or
//! `http[s]://[user:password@]host[:port][/<path prefix>]/<vhost>`. The vhost is the last path
//! segment, percent-decoded (`%2F` is `/`); an empty one means the default vhost `/`. Vhost and
//! queue names are escaped as single path segments. Credentials never appear in errors or in
//! `Debug` output: addresses are shown with `user:password@` masked.

use std::fmt;

use base64::Engine as _;
use hyper::header::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::watch::LISTING_COLUMNS;
use crate::ScalerError;
use crate::params::mask_userinfo;

/// Every byte but the RFC 3986 unreserved ones is escaped in a path segment or query value, so a
/// vhost or queue name can never add a segment (`/`), a query (`?`) or a fragment (`#`).
pub(super) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a `host` cannot be used. Never shows the credentials: an unparsable URL is not quoted,
/// others are shown with `user:password@` masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not a URL at all.
    #[error("host: not a valid URL ({0})")]
    NotAUrl(#[source] url::ParseError),
    /// Not one of the four schemes (not quoted: `user:pass@host` parses with `user` as the scheme).
    #[error("host: must be an amqp://, amqps://, http:// or https:// URL")]
    Scheme,
    /// No host name.
    #[error("host: {0} has no host name")]
    NoHostName(String),
    /// A query or a fragment, which would change the requests.
    #[error("host: {0} must not have a query or fragment")]
    QueryOrFragment(String),
    /// The vhost does not fit in an AMQP short string.
    #[error("host: the vhost of {0} is longer than 255 bytes")]
    VhostTooLong(String),
}

/// A parsed `host`: where the broker is, which vhost, and the credentials to use.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Lower-case scheme: amqp, amqps, http or https.
    pub(super) scheme: String,
    /// Host name or IP address (IPv6 without brackets).
    pub(super) host: String,
    /// The port (the scheme's default when the URL has none).
    pub(super) port: u16,
    /// The vhost, decoded (`/` for the default one).
    pub(super) vhost: String,
    /// HTTP only: the path before the vhost segment, as written (escaped), no trailing `/`.
    pub(super) path_prefix: String,
    /// Decoded credentials from the URL or the `username` / `password` params.
    pub(super) username: Option<String>,
    /// Decoded password (never printed).
    pub(super) password: Option<String>,
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerAddress")
            .field("url", &self.shown())
            .field("vhost", &self.vhost)
            .field("credentials", &self.has_credentials())
            .finish()
    }
}

impl BrokerAddress {
    /// Parses `host` and applies `vhostName` and the `username` / `password` params. Errors never
    /// show the credentials.
    pub(super) fn parse(
        host: &str,
        vhost_name: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, AddressError> {
        // An unparsable URL is not quoted: without a parse the credentials cannot be located.
        let url = url::Url::parse(host.trim()).map_err(AddressError::NotAUrl)?;
        let scheme = url.scheme().to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "amqp" => 5672,
            "amqps" => 5671,
            "http" => 80,
            "https" => 443,
            // Not quoted: `user:pass@host` parses with `user` as the scheme.
            _ => return Err(AddressError::Scheme),
        };
        let host_name = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(AddressError::NoHostName(mask_userinfo(host))),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(AddressError::QueryOrFragment(mask_userinfo(url.as_str())));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let path = url.path();
        let (prefix, vhost_segment) = if scheme.starts_with("http") {
            match path.rfind('/') {
                Some(i) => (path[..i].to_string(), &path[i + 1..]),
                None => (String::new(), path),
            }
        } else {
            // AMQP: the whole path is the vhost (RFC-style `amqp://host/vhost`).
            (String::new(), path.strip_prefix('/').unwrap_or(path))
        };
        let vhost = match vhost_name {
            Some(name) => name.to_string(),
            None => decode(vhost_segment),
        };
        let vhost = if vhost.is_empty() { "/".to_string() } else { vhost };
        let (url_user, url_password) = (url.username(), url.password());
        let (username, password) = match (username, password) {
            (Some(u), p) => (Some(u.to_string()), p.map(str::to_string)),
            (None, Some(p)) => (
                (!url_user.is_empty()).then(|| decode(url_user)),
                Some(p.to_string()),
            ),
            (None, None) => (
                (!url_user.is_empty()).then(|| decode(url_user)),
                url_password.map(decode),
            ),
        };
        let address = Self {
            port: url.port().unwrap_or(default_port),
            scheme,
            host: host_name,
            vhost,
            path_prefix: prefix,
            username,
            password,
        };
        if address.vhost.len() > 255 {
            return Err(AddressError::VhostTooLong(address.shown()));
        }
        Ok(address)
    }

    /// Whether a username or a password is known.
    pub(super) fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }

    /// Whether the scheme is amqps or https.
    pub(super) fn is_tls(&self) -> bool {
        self.scheme == "amqps" || self.scheme == "https"
    }

    /// `host:port`, with IPv6 addresses in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address for messages: credentials masked, vhost escaped.
    pub(super) fn shown(&self) -> String {
        let credentials = if self.has_credentials() { "<redacted>@" } else { "" };
        let vhost = utf8_percent_encode(&self.vhost, COMPONENT);
        format!(
            "{}://{credentials}{}{}/{vhost}",
            self.scheme,
            self.authority(),
            self.path_prefix
        )
    }

    /// The management API URL of one queue.
    pub(super) fn queue_url(&self, queue: &str) -> String {
        format!(
            "{}://{}{}/api/queues/{}/{}",
            self.scheme,
            self.authority(),
            self.path_prefix,
            encode_segment(&self.vhost),
            encode_segment(queue)
        )
    }

    /// The management API URL listing the vhost's queues with the columns the watcher needs.
    pub(super) fn listing_url(&self) -> String {
        format!(
            "{}://{}{}/api/queues/{}?columns={LISTING_COLUMNS}",
            self.scheme,
            self.authority(),
            self.path_prefix,
            encode_segment(&self.vhost),
        )
    }

    /// The management API URL listing the queues whose names match `regex` (KEDA's query).
    pub(super) fn regex_url(&self, regex: &str, page_size: i64) -> String {
        format!(
            "{}://{}{}/api/queues/{}?page=1&use_regex=true&pagination=false&name={}&page_size={page_size}",
            self.scheme,
            self.authority(),
            self.path_prefix,
            encode_segment(&self.vhost),
            utf8_percent_encode(regex, COMPONENT)
        )
    }

    /// Basic auth from the credentials, if any, marked sensitive.
    pub(super) fn basic_auth(&self) -> Result<Option<HeaderValue>, ScalerError> {
        if !self.has_credentials() {
            return Ok(None);
        }
        let user = self.username.as_deref().unwrap_or_default();
        let password = self.password.as_deref().unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
            ScalerError::InvalidConfig("rabbitmq: the credentials cannot be sent as basic auth".into())
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Escapes a vhost or queue name as one path segment; `.` and `..` are escaped too, so that no
/// server resolves them as dot-segments.
fn encode_segment(s: &str) -> String {
    match s {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => utf8_percent_encode(s, COMPONENT).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rabbitmq::{ConfigProblem, RabbitMqConfigError};

    fn address(host: &str) -> BrokerAddress {
        BrokerAddress::parse(host, None, None, None).unwrap()
    }

    #[test]
    fn amqp_vhost_and_credentials_from_the_url() {
        let a = address("amqp://u:p@h:5672/vh");
        assert_eq!((a.host.as_str(), a.port, a.vhost.as_str()), ("h", 5672, "vh"));
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(a.shown(), "amqp://<redacted>@h:5672/vh");

        let cases = [
            ("amqp://h:5672", "/", 5672),
            ("amqp://h:5672/", "/", 5672),
            ("amqp://h/%2f", "/", 5672),
            ("amqp://h/%2F", "/", 5672),
            ("amqp://h/my%20vhost", "my vhost", 5672),
            ("amqps://h", "/", 5671),
            ("AMQPS://h:1234/x", "x", 1234),
        ];
        for (host, vhost, port) in cases {
            let a = address(host);
            assert_eq!((a.vhost.as_str(), a.port), (vhost, port), "{host}");
            assert!(a.username.is_none() && a.password.is_none(), "{host}");
        }
        let a = address("amqp://ad%40min:p%3Ass@h/");
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("ad@min"), Some("p:ss"))
        );
        assert_eq!(address("amqp://h:5672/").shown(), "amqp://h:5672/%2F");
    }

    #[test]
    fn http_vhost_and_path_prefix() {
        let cases = [
            (
                "http://h:15672/path/prefix/vh",
                "vh",
                "/path/prefix",
                "http://h:15672/path/prefix/api/queues/vh/q",
            ),
            ("http://h:15672/", "/", "", "http://h:15672/api/queues/%2F/q"),
            ("http://h:15672", "/", "", "http://h:15672/api/queues/%2F/q"),
            ("http://h:15672/%2F", "/", "", "http://h:15672/api/queues/%2F/q"),
            (
                "http://h/prefix/",
                "/",
                "/prefix",
                "http://h:80/prefix/api/queues/%2F/q",
            ),
            (
                "https://h/my%20vh",
                "my vh",
                "",
                "https://h:443/api/queues/my%20vh/q",
            ),
            (
                "http://[::1]:15672/vh",
                "vh",
                "",
                "http://[::1]:15672/api/queues/vh/q",
            ),
        ];
        for (host, vhost, prefix, url) in cases {
            let a = address(host);
            assert_eq!(a.vhost, vhost, "{host}");
            assert_eq!(a.path_prefix, prefix, "{host}");
            assert_eq!(a.queue_url("q"), url, "{host}");
        }
    }

    #[test]
    fn vhost_name_overrides_and_names_are_escaped() {
        let a = BrokerAddress::parse("http://h:15672/ignored", Some("team/a"), None, None).unwrap();
        assert_eq!(a.vhost, "team/a");
        assert_eq!(
            a.queue_url("orders new/1"),
            "http://h:15672/api/queues/team%2Fa/orders%20new%2F1"
        );
        assert_eq!(a.queue_url(".."), "http://h:15672/api/queues/team%2Fa/%2E%2E");
        assert_eq!(
            a.queue_url("q?x#y"),
            "http://h:15672/api/queues/team%2Fa/q%3Fx%23y"
        );
        let a = BrokerAddress::parse("amqp://h/vh", Some("/"), None, None).unwrap();
        assert_eq!(a.vhost, "/");
        assert_eq!(
            address("http://h:15672/").regex_url("^scale-.*$", 50),
            "http://h:15672/api/queues/%2F?page=1&use_regex=true&pagination=false&name=%5Escale-.%2A%24&page_size=50"
        );
    }

    #[test]
    fn credential_params_override_the_url() {
        let a = BrokerAddress::parse("http://a:b@h/", None, Some("u"), Some("p")).unwrap();
        assert_eq!(
            (a.username.as_deref(), a.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let auth = a.basic_auth().unwrap().unwrap();
        assert!(auth.is_sensitive());
        let expected = base64::engine::general_purpose::STANDARD.encode("u:p");
        assert_eq!(auth.to_str().unwrap(), format!("Basic {expected}"));
        assert!(address("http://h/").basic_auth().unwrap().is_none());
    }

    #[test]
    fn bad_hosts_never_show_credentials() {
        for bad in [
            "ftp://u:secret@h/x",
            "u:secret@h/x",
            "amqp://u:secret@/x",
            "http://u:secret@h/vh?x=1",
            "http://u:pa/secret@h/",
            "not a url secret",
        ] {
            let e = BrokerAddress::parse(bad, None, None, None).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains("secret"), "{text}");
            let e = ScalerError::from(RabbitMqConfigError::from(ConfigProblem::from(e)));
            assert_eq!(e.kind(), "invalid_config");
        }
        let a = address("amqp://user:secret@h/vh");
        assert!(!format!("{a:?}").contains("secret"));
    }
}
