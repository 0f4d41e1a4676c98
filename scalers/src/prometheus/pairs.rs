//! The `key=value,key=value` parameters of the prometheus trigger (`customHeaders`,
//! `queryParameters`), read as KEDA reads its map parameters, and checked as what they become:
//! HTTP header fields and URL query parameters of a request ebb sends for a tenant.
//!
//! Everything here is pure and bounded: at most [`MAX_PAIRS`] pairs and [`MAX_PAIRS_TEXT`] bytes
//! of text per parameter, header names that are HTTP tokens of at most [`MAX_HEADER_NAME`] bytes,
//! values of visible ASCII of at most [`MAX_HEADER_VALUE`] bytes, and never a header that carries
//! credentials or changes the request's framing or destination ([`RESERVED_HEADERS`]).

use hyper::header::{HeaderName, HeaderValue};

/// The most pairs one parameter may hold.
pub const MAX_PAIRS: usize = 32;

/// The longest text one parameter may be, in bytes.
pub const MAX_PAIRS_TEXT: usize = 8 * 1024;

/// The longest header name, in bytes.
pub const MAX_HEADER_NAME: usize = 128;

/// The longest header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 4 * 1024;

/// Headers a tenant's `customHeaders` (or `customAuthHeader`) may never set: credentials and
/// destination (set by ebb from the authentication and `serverAddress` only), and the fields that
/// frame the request or the connection.
pub const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Query parameters ebb sets itself, which `queryParameters` may not give.
pub const RESERVED_QUERY_PARAMETERS: &[&str] = &["query", "time"];

/// What is wrong with a `key=value,…` parameter. Never quotes a value (a header value may be a
/// token); names are quoted, cut to a few dozen characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairsProblem {
    /// Longer than [`MAX_PAIRS_TEXT`].
    #[error("is {0} bytes long; at most {MAX_PAIRS_TEXT} are allowed")]
    TooLong(usize),
    /// More than [`MAX_PAIRS`] pairs.
    #[error("has {0} entries; at most {MAX_PAIRS} are allowed")]
    TooMany(usize),
    /// An entry without `=` (entry number, from 1).
    #[error("entry {0} is not of the form key=value")]
    NotAPair(usize),
    /// An entry with an empty key (entry number, from 1).
    #[error("entry {0} has an empty key")]
    EmptyKey(usize),
    /// The same key twice.
    #[error("{0:?} is given twice")]
    Duplicate(String),
    /// Not an HTTP header name.
    #[error(
        "{0:?} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only, at most {MAX_HEADER_NAME} bytes)"
    )]
    BadHeaderName(String),
    /// A header value with characters a header cannot carry.
    #[error(
        "the value of {0:?} is not a valid HTTP header value (visible ASCII and spaces only, at most {MAX_HEADER_VALUE} bytes)"
    )]
    BadHeaderValue(String),
    /// A header ebb sets itself.
    #[error(
        "{0:?} cannot be set here: ebb sets it itself (credentials go in the TriggerAuthentication, through authModes)"
    )]
    ReservedHeader(String),
    /// A query parameter ebb sets itself.
    #[error("{0:?} cannot be set here: ebb sets it itself")]
    ReservedParameter(String),
}

/// A name, cut to 40 characters, for messages.
fn shown_name(name: &str) -> String {
    let mut out: String = name.chars().take(40).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out
}

/// Splits `a=1,b=2` into pairs as KEDA does (entries split at `,`, each trimmed, key and value
/// trimmed), except that a value may itself hold `=` (the entry is split at its first `=`) and a
/// key may not repeat. A blank text is no pairs.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, PairsProblem> {
    if text.len() > MAX_PAIRS_TEXT {
        return Err(PairsProblem::TooLong(text.len()));
    }
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = text.split(',').collect();
    if entries.len() > MAX_PAIRS {
        return Err(PairsProblem::TooMany(entries.len()));
    }
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Some((key, value)) = entry.trim().split_once('=') else {
            return Err(PairsProblem::NotAPair(i + 1));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(PairsProblem::EmptyKey(i + 1));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(PairsProblem::Duplicate(shown_name(key)));
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// One header a tenant asked for, checked: a valid, unreserved name and a valid value.
pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), PairsProblem> {
    if name.len() > MAX_HEADER_NAME {
        return Err(PairsProblem::BadHeaderName(shown_name(name)));
    }
    let parsed =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| PairsProblem::BadHeaderName(shown_name(name)))?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(PairsProblem::ReservedHeader(shown_name(name)));
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(PairsProblem::BadHeaderValue(shown_name(name)));
    }
    let value = HeaderValue::from_str(value).map_err(|_| PairsProblem::BadHeaderValue(shown_name(name)))?;
    Ok((parsed, value))
}

/// `customHeaders`: the pairs as header fields, each checked by [`header`], no name twice
/// (names compared case-insensitively, as HTTP does).
pub fn custom_headers(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, PairsProblem> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (name, value) in parse_pairs(text)? {
        let (name, value) = header(&name, &value)?;
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(PairsProblem::Duplicate(name.as_str().to_string()));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

/// `queryParameters`: the pairs, none of them one ebb sets itself ([`RESERVED_QUERY_PARAMETERS`],
/// and `namespace` when `namespace_set`). Keys and values are sent percent-encoded.
pub fn query_parameters(text: &str, namespace_set: bool) -> Result<Vec<(String, String)>, PairsProblem> {
    let pairs = parse_pairs(text)?;
    for (key, _) in &pairs {
        if RESERVED_QUERY_PARAMETERS.contains(&key.as_str()) || (namespace_set && key == "namespace") {
            return Err(PairsProblem::ReservedParameter(shown_name(key)));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Result<Vec<(String, String)>, PairsProblem> {
        parse_pairs(text)
    }

    #[test]
    fn pairs_are_read_as_keda_reads_maps() {
        let p = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            pairs("key1=value1,key2=value2").unwrap(),
            [p("key1", "value1"), p("key2", "value2")]
        );
        assert_eq!(
            pairs(" a = 1 , b= two words ").unwrap(),
            [p("a", "1"), p("b", "two words")]
        );
        assert_eq!(pairs("k=").unwrap(), [p("k", "")]);
        assert_eq!(pairs("token=YWJj==").unwrap(), [p("token", "YWJj==")]);
        assert_eq!(pairs("  ").unwrap(), []);
        // KEDA's error case: an entry without a value.
        assert_eq!(pairs("key1=value1,key2"), Err(PairsProblem::NotAPair(2)));
        assert_eq!(pairs("a=1,"), Err(PairsProblem::NotAPair(2)));
        assert_eq!(pairs("=1"), Err(PairsProblem::EmptyKey(1)));
        assert_eq!(pairs("a=1,a=2"), Err(PairsProblem::Duplicate("a".into())));
    }

    #[test]
    fn pairs_are_bounded() {
        let many = (0..=MAX_PAIRS)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(pairs(&many), Err(PairsProblem::TooMany(MAX_PAIRS + 1)));
        let long = format!("k={}", "v".repeat(MAX_PAIRS_TEXT));
        assert_eq!(pairs(&long), Err(PairsProblem::TooLong(MAX_PAIRS_TEXT + 2)));
        let just = (0..MAX_PAIRS)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(pairs(&just).unwrap().len(), MAX_PAIRS);
    }

    #[test]
    fn headers_are_tokens_and_never_credentials_or_framing() {
        let h = custom_headers("X-Client-Id=cid, X-Tenant-Id = tid,X-Organization-Token=oid").unwrap();
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-client-id", "x-tenant-id", "x-organization-token"]);
        assert_eq!(h[1].1, "tid");
        for reserved in [
            "Authorization=Bearer x",
            "HOST=evil.example",
            "content-length=0",
            "Transfer-Encoding=chunked",
            "Connection=close",
            "proxy-authorization=Basic x",
        ] {
            assert!(
                matches!(custom_headers(reserved), Err(PairsProblem::ReservedHeader(_))),
                "{reserved}"
            );
        }
        for bad in ["X A=1", "X:A=1", "X(A)=1", "Ünï=1"] {
            assert!(
                matches!(custom_headers(bad), Err(PairsProblem::BadHeaderName(_))),
                "{bad}"
            );
        }
        let long_name = format!("{}=1", "x".repeat(MAX_HEADER_NAME + 1));
        assert!(matches!(
            custom_headers(&long_name),
            Err(PairsProblem::BadHeaderName(_))
        ));
        // A value cannot smuggle a second header line, nor be unbounded; it is never quoted.
        for bad in ["X-A=a\r\nHost: evil", "X-A=a\nb", "X-A=sécret\u{7f}"] {
            let e = custom_headers(bad).unwrap_err();
            assert!(matches!(e, PairsProblem::BadHeaderValue(_)), "{bad}: {e}");
            assert!(!e.to_string().contains("evil") && !e.to_string().contains("sécret"));
        }
        assert_eq!(
            custom_headers("X-A=1,x-a=2"),
            Err(PairsProblem::Duplicate("x-a".into()))
        );
        assert_eq!(custom_headers("").unwrap(), []);
    }

    #[test]
    fn query_parameters_cannot_replace_the_query() {
        let q = query_parameters("first=foo, second=bar baz", false).unwrap();
        assert_eq!(q[1], ("second".to_string(), "bar baz".to_string()));
        for reserved in ["query=up", "time=0"] {
            assert!(matches!(
                query_parameters(reserved, false),
                Err(PairsProblem::ReservedParameter(_))
            ));
        }
        assert!(query_parameters("namespace=a", false).is_ok());
        assert!(matches!(
            query_parameters("namespace=a", true),
            Err(PairsProblem::ReservedParameter(_))
        ));
    }

    proptest::proptest! {
        // Any text: pairs or an error, no panic; what is accepted is within the bounds and
        // never a reserved header.
        #[test]
        fn arbitrary_pairs_never_panic(
            raw in ".{0,300}",
            entries in proptest::collection::vec(("[!-~]{0,12}", "[ -~\r\n]{0,12}"), 0..40),
            structured: bool,
        ) {
            let text = match structured {
                false => raw,
                true => entries.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            };
            if let Ok(headers) = custom_headers(&text) {
                proptest::prop_assert!(headers.len() <= MAX_PAIRS);
                for (name, _) in &headers {
                    proptest::prop_assert!(!RESERVED_HEADERS.contains(&name.as_str()));
                }
            }
            let _ = query_parameters(&text, true);
        }
    }
}
