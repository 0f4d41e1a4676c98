//! Where a prometheus trigger's query goes: its `serverAddress` checked and prepared
//! ([`ServerAddress`]), the query URL built from it ([`ServerAddress::query_uri`]), and the
//! `timeout` parameter read ([`parse_timeout`]). Pure.
//!
//! The URL is `<serverAddress>/api/v1/query?query=<query>[&namespace=<namespace>][&<queryParameters>]`,
//! every key and value percent-encoded. ebb sends no `time`: the server evaluates the query at its
//! own current time, so a clock skew between the operator and the server cannot shift the result.
//! Messages show the endpoint as `<serverAddress>/api/v1/query` without the query string (which
//! may carry tenant parameters such as keys) and with any `user:password@` masked.

use std::time::Duration;

use hyper::Uri;

/// The longest `serverAddress`, in bytes.
pub const MAX_SERVER_ADDRESS: usize = 2048;

/// The longest `query`, in bytes (a GET's URL carries it; proxies commonly refuse URLs over 8 to
/// 16 KiB).
pub const MAX_QUERY: usize = 8 * 1024;

/// The longest `timeout` a trigger may set.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The path appended to `serverAddress`.
pub const QUERY_PATH: &str = "/api/v1/query";

/// Why a `serverAddress` cannot be used. Never quotes the address (it may hold credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    /// Longer than [`MAX_SERVER_ADDRESS`].
    #[error("is longer than {MAX_SERVER_ADDRESS} bytes")]
    TooLong,
    /// Not a URL.
    #[error("is not a valid URL ({0})")]
    NotAUrl(String),
    /// Not http or https.
    #[error("must be an http:// or https:// URL")]
    Scheme,
    /// Has a query string or a fragment.
    #[error("must not carry a query string or a fragment (give query parameters in queryParameters)")]
    QueryOrFragment,
}

/// A `serverAddress`: an http(s) URL without query or fragment, with a `user:password@` taken out
/// (as basic auth, which Go's client, and so KEDA, sends for it).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// The URL, without credentials, with no trailing `/` on its path.
    base: url::Url,
    /// `user` and `password` of a `user:password@`, percent-decoded.
    userinfo: Option<(String, String)>,
    /// `<base>/api/v1/query`, credentials masked, for messages.
    shown: String,
}

impl std::fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAddress")
            .field("endpoint", &self.shown)
            .field("userinfo", &self.userinfo.is_some())
            .finish()
    }
}

impl ServerAddress {
    /// Checks and prepares `text`.
    pub fn parse(text: &str) -> Result<Self, AddressProblem> {
        if text.len() > MAX_SERVER_ADDRESS {
            return Err(AddressProblem::TooLong);
        }
        let mut url = url::Url::parse(text.trim()).map_err(|e| AddressProblem::NotAUrl(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(AddressProblem::Scheme);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(AddressProblem::QueryOrFragment);
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let userinfo = (!url.username().is_empty() || url.password().is_some()).then(|| {
            (
                decode(url.username()),
                url.password().map(decode).unwrap_or_default(),
            )
        });
        // Neither fails for an http(s) URL, which always has a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        let bare = format!("{}{QUERY_PATH}", url.as_str().trim_end_matches('/'));
        let shown = match (&userinfo, bare.split_once("://")) {
            (Some(_), Some((scheme, rest))) => format!("{scheme}://<redacted>@{rest}"),
            _ => bare,
        };
        Ok(Self {
            base: url,
            userinfo,
            shown,
        })
    }

    /// `<serverAddress>/api/v1/query`, credentials masked: the endpoint errors name.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `scheme://host:port`: the part of the address a connection is made to.
    pub fn origin(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    /// Whether the address is `https://`.
    pub fn is_https(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// The `user:password@` of the address, if it had one.
    pub fn userinfo(&self) -> Option<(&str, &str)> {
        self.userinfo.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The query's request URI: `<serverAddress>/api/v1/query?query=…`, then `namespace` when
    /// given, then `parameters` in order, every key and value percent-encoded.
    pub fn query_uri(
        &self,
        query: &str,
        namespace: Option<&str>,
        parameters: &[(String, String)],
    ) -> Result<Uri, String> {
        let mut url = self.base.clone();
        let path = format!("{}{QUERY_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("query", query);
            if let Some(namespace) = namespace {
                pairs.append_pair("namespace", namespace);
            }
            for (key, value) in parameters {
                pairs.append_pair(key, value);
            }
        }
        url.as_str().parse::<Uri>().map_err(|e| e.to_string())
    }
}

/// `timeout` as KEDA reads a duration: a Go duration (`1.5s`, `500ms`, `1m30s`) or else a whole
/// number of milliseconds. Zero means "the operator's default" (`None`), as in KEDA; negative
/// values and values above [`MAX_TIMEOUT`] are errors.
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    let duration = match go_duration(text) {
        Some(d) => d,
        None => match text.parse::<i64>() {
            Ok(ms) if ms >= 0 => Duration::from_millis(ms.unsigned_abs()),
            Ok(_) => return Err("must not be negative".to_string()),
            Err(_) => {
                return Err(
                    "must be a duration (e.g. 5s or 1500ms) or a whole number of milliseconds".to_string(),
                );
            }
        },
    };
    if duration > MAX_TIMEOUT {
        return Err(format!("must be at most {}s", MAX_TIMEOUT.as_secs()));
    }
    Ok((!duration.is_zero()).then_some(duration))
}

/// A Go duration string (`300ms`, `1.5h`, `2h45m`): numbers with units ns, us (µs), ms, s, m, h;
/// `0` alone. `None` for anything else, including negative durations and bare numbers.
fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos_per_unit;
    }
    // Anything this large is rejected by the caller's bound anyway.
    Some(Duration::from_nanos(total.min(u64::MAX as f64) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_url_is_built_and_encoded() {
        let s = ServerAddress::parse("http://prometheus.monitoring:9090").unwrap();
        let uri = s
            .query_uri(
                r#"sum(rate(http_requests_total{job="api"}[2m]))"#,
                Some("team a"),
                &[("dedup".into(), "true&x=1".into())],
            )
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "http://prometheus.monitoring:9090/api/v1/query?query=sum%28rate%28http_requests_total%7Bjob%3D%22api%22%7D%5B2m%5D%29%29&namespace=team+a&dedup=true%26x%3D1"
        );
        assert_eq!(s.shown(), "http://prometheus.monitoring:9090/api/v1/query");
        assert_eq!(s.origin(), "http://prometheus.monitoring:9090");
        // A path prefix (a Thanos or a managed endpoint) is kept; a trailing / is not doubled.
        let s = ServerAddress::parse("https://h.example/v1/projects/p/prometheus/").unwrap();
        assert_eq!(
            s.query_uri("up", None, &[]).unwrap().to_string(),
            "https://h.example/v1/projects/p/prometheus/api/v1/query?query=up"
        );
        assert!(s.is_https() && s.userinfo().is_none());
        assert_eq!(s.origin(), "https://h.example");
    }

    #[test]
    fn credentials_in_the_address_are_taken_out_and_masked() {
        let s = ServerAddress::parse("http://ad%40min:s3cr%3At@127.0.0.1:9090/prom").unwrap();
        assert_eq!(s.userinfo(), Some(("ad@min", "s3cr:t")));
        assert_eq!(s.shown(), "http://<redacted>@127.0.0.1:9090/prom/api/v1/query");
        let uri = s.query_uri("up", None, &[]).unwrap().to_string();
        assert!(!uri.contains("s3cr") && !uri.contains("admin"), "{uri}");
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
    }

    #[test]
    fn bad_addresses_are_refused_without_quoting_them() {
        let cases = [
            ("ftp://u:secret@h/x", AddressProblem::Scheme),
            ("http://h:9090/?x=1", AddressProblem::QueryOrFragment),
            ("http://h:9090/#f", AddressProblem::QueryOrFragment),
        ];
        for (text, want) in cases {
            assert_eq!(ServerAddress::parse(text), Err(want), "{text}");
        }
        let e = ServerAddress::parse("u:secret@h:9090").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(ServerAddress::parse("not a url").is_err());
        let long = format!("http://h/{}", "a".repeat(MAX_SERVER_ADDRESS));
        assert_eq!(ServerAddress::parse(&long), Err(AddressProblem::TooLong));
    }

    /// KEDA's timeout cases: `1000` is valid, `-1` and `a` are not.
    #[test]
    fn timeouts_read_as_keda_reads_durations() {
        let ms = |n| Ok(Some(Duration::from_millis(n)));
        assert_eq!(parse_timeout("1000"), ms(1000));
        assert_eq!(parse_timeout("1500ms"), ms(1500));
        assert_eq!(parse_timeout("2s"), ms(2000));
        assert_eq!(parse_timeout("1.5s"), ms(1500));
        assert_eq!(parse_timeout("1m"), ms(60_000));
        assert_eq!(parse_timeout("0"), Ok(None));
        assert_eq!(parse_timeout("0s"), Ok(None));
        for bad in ["-1", "a", "-1s", "1x", "", "s", "1..5s", "1.5"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
        assert!(parse_timeout("61s").is_err());
        assert!(parse_timeout("1h").is_err());
        assert!(parse_timeout("99999999999999999999h").is_err());
    }
}
