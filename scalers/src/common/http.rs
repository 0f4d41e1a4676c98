//! HTTP for the scalers that poll an HTTP API (metrics-api, the RabbitMQ management API, NATS
//! monitoring) and for the operator's leader forwarding: one pooled HTTP/1.1 client over rustls
//! ([`pooled_client`]), the JSON GET they all send ([`json_get`], [`send`]), the bounded body
//! reader of answers from servers a tenant may point at ([`read_body_bounded`]: capped, counted
//! against the in-flight [`ByteBudget`], stopped as soon as the cap is passed), its typed JSON
//! decoding ([`parse_json`]), and the bounded JSON body reader of trusted answers
//! ([`read_json_body`]).
//!
//! Errors are [`ScalerError`]s naming the endpoint as the caller shows it (credentials masked),
//! never quoting a header or a body.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Buf as _;
use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value as Json;

use crate::ScalerError;
use crate::common::budget::{ByteBudget, Reservation};
use crate::common::errors::{error_chain, source_chain};

/// A pooled client for `http://` and `https://` URLs sending bodiless requests (GETs).
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The `User-Agent` ebb sends: `ebb/<version>`.
pub const USER_AGENT: &str = concat!("ebb/", env!("CARGO_PKG_VERSION"));

/// Builds a pooled HTTP/1.1 client that speaks plain HTTP and HTTPS (with `tls`), with
/// `TCP_NODELAY`, idle connections kept for [`POOL_IDLE_TIMEOUT`], and each TCP connect bounded by
/// `connect_timeout` when given. Needs no async runtime until it sends.
pub fn pooled_client(tls: rustls::ClientConfig, connect_timeout: Option<Duration>) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https)
}

/// A GET of `uri` asking for JSON (`Accept: application/json`, `User-Agent: ebb/<version>`), with
/// `authorization` as its `Authorization` header when given. Errors name `shown`.
pub fn json_get(
    uri: &Uri,
    authorization: Option<&HeaderValue>,
    shown: &str,
) -> Result<Request<Empty<Bytes>>, ScalerError> {
    let mut request = Request::get(uri.clone())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
        .body(Empty::<Bytes>::new())
        .map_err(|e| ScalerError::InvalidConfig(format!("cannot build a request for {shown}: {e}")))?;
    if let Some(auth) = authorization {
        request.headers_mut().insert(header::AUTHORIZATION, auth.clone());
    }
    Ok(request)
}

/// Sends `request` and returns the response, whatever its status. A request that gets no response
/// is a [`ScalerError::Unreachable`] naming `shown` (`cannot connect: …` or `request failed: …`),
/// with `roots_problem` (see [`TlsSettings::roots_problem`](crate::common::tls::TlsSettings::roots_problem))
/// appended in parentheses when given.
pub async fn send(
    client: &HttpsClient,
    request: Request<Empty<Bytes>>,
    shown: &str,
    roots_problem: Option<&str>,
) -> Result<Response<Incoming>, ScalerError> {
    client.request(request).await.map_err(|e| {
        let mut message = if e.is_connect() {
            format!("cannot connect: {}", source_chain(&e))
        } else {
            format!("request failed: {}", error_chain(&e))
        };
        if let Some(problem) = roots_problem {
            message.push_str(&format!(" ({problem})"));
        }
        ScalerError::unreachable(shown, message)
    })
}

/// Reads an HTTP response body of at most `limit` bytes as JSON. A larger body, a failed read or
/// invalid JSON is a [`ScalerError::BadResponse`] naming `shown` (a masked URL), never quoting the
/// body.
pub async fn read_json_body<B>(body: B, limit: usize, shown: &str) -> Result<Json, ScalerError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            let message = if e.downcast_ref::<LengthLimitError>().is_some() {
                format!("response body is larger than {limit} bytes")
            } else {
                format!("reading the response body failed: {}", error_chain(&*e))
            };
            ScalerError::bad_response(shown, message)
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| ScalerError::bad_response(shown, format!("response is not valid JSON: {e}")))
}

/// An answer's body, read within its cap, holding its bytes' reservation of the in-flight budget
/// until dropped.
#[derive(Debug)]
pub struct BoundedBody {
    bytes: Bytes,
    _reservation: Reservation,
}

impl BoundedBody {
    /// The body.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// Reads a body of at most `limit` bytes, reserving them from `budget` first.
///
/// - A body announced larger than `limit` (`Content-Length`) is rejected before any byte is read.
/// - Otherwise `limit` bytes (or the announced length, when smaller) are reserved; when the
///   budget has not that much free, the read fails at once ([`ScalerError::Overloaded`]).
/// - Reading stops as soon as the bytes received pass the reservation: a body streamed without a
///   length is never buffered beyond its cap. The buffer grows with what arrives, never beyond
///   the reservation, which shrinks to the body's size once it is read.
///
/// Errors name `shown` (a masked URL) and never quote the body.
pub async fn read_body_bounded<B>(
    body: B,
    limit: usize,
    budget: &ByteBudget,
    shown: &str,
) -> Result<BoundedBody, ScalerError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let too_large = |read: Option<usize>| {
        let mut message = format!("response body is larger than {limit} bytes, the most ebb reads here");
        if let Some(read) = read {
            message.push_str(&format!(" (stopped reading after {read} bytes)"));
        }
        ScalerError::bad_response(shown, message)
    };
    let hint = body.size_hint();
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if hint.lower() > limit_u64 {
        return Err(too_large(None));
    }
    // The announced length when there is one (a body cannot outgrow it), else the cap.
    let reserve = match hint.upper() {
        Some(upper) if upper < limit_u64 => usize::try_from(upper).unwrap_or(limit),
        _ => limit,
    };
    let mut reservation = budget
        .try_reserve(reserve)
        .map_err(|e| ScalerError::overloaded(shown, e.to_string()))?;
    let mut body = std::pin::pin!(body);
    let mut buf: Vec<u8> = Vec::with_capacity(reserve.min(16 * 1024));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let e: Box<dyn StdError + Send + Sync> = e.into();
            ScalerError::bad_response(
                shown,
                format!("reading the response body failed: {}", error_chain(&*e)),
            )
        })?;
        let Ok(mut data) = frame.into_data() else { continue };
        let total = buf.len().saturating_add(data.remaining());
        if total > reserve {
            return Err(too_large(Some(total)));
        }
        if total > buf.capacity() {
            // Grow by doubling, never past the reservation.
            let target = buf.capacity().saturating_mul(2).max(total).min(reserve);
            buf.reserve_exact(target - buf.len());
        }
        let n = data.remaining();
        buf.extend_from_slice(&data.copy_to_bytes(n));
    }
    reservation.shrink_to(buf.len());
    Ok(BoundedBody {
        bytes: Bytes::from(buf),
        _reservation: reservation,
    })
}

/// Decodes a JSON body into `T` (typed: fields `T` does not name are skipped, not built). Errors
/// name `shown` and say where the JSON went wrong, never quoting the body.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], shown: &str) -> Result<T, ScalerError> {
    serde_json::from_slice(bytes).map_err(|e| ScalerError::bad_response(shown, json_problem(&e)))
}

/// What is wrong with a JSON document, without quoting it (serde's messages may quote values).
pub fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "does not have the expected shape",
        Category::Eof => "is not valid JSON (it ends early)",
    };
    format!("response {what} (line {}, column {})", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn json_bodies_are_bounded() {
        let body = |text: &'static str| Full::new(Bytes::from_static(text.as_bytes()));
        let doc = read_json_body(body(r#"{"a": [1, 2]}"#), 64, "http://h/")
            .await
            .unwrap();
        assert_eq!(doc["a"][1], 2);
        let e = read_json_body(body(r#"{"a": "0123456789"}"#), 8, "http://h/")
            .await
            .unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(e.to_string().contains("larger than 8 bytes"), "{e}");
        let e = read_json_body(body("secret-token not json"), 64, "http://<redacted>@h/")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON") && !e.contains("secret-token"), "{e}");
    }

    /// A body without a length that yields 64 KiB frames forever, counting the bytes pulled.
    fn endless_body(
        pulled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible> {
        use std::sync::atomic::Ordering;
        let frames = futures::stream::repeat_with(move || {
            pulled.fetch_add(65536, Ordering::SeqCst);
            Ok(hyper::body::Frame::data(Bytes::from(vec![b' '; 65536])))
        });
        http_body_util::StreamBody::new(frames)
    }

    #[tokio::test]
    async fn bounded_reads_stop_at_the_cap_and_hold_the_budget_while_kept() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let budget = ByteBudget::new(4 * 1024 * 1024);
        let pulled = Arc::new(AtomicUsize::new(0));
        let e = read_body_bounded(endless_body(pulled.clone()), 1024 * 1024, &budget, "http://h/")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
        assert!(
            pulled.load(Ordering::SeqCst) <= 1024 * 1024 + 65536,
            "pulled {}",
            pulled.load(Ordering::SeqCst)
        );
        assert_eq!(budget.free(), budget.total());

        // An announced length over the cap is refused before a byte is read.
        let big = Full::new(Bytes::from(vec![b'1'; 2048]));
        let e = read_body_bounded(big, 1024, &budget, "http://h/")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
        assert!(!e.to_string().contains("stopped reading"), "{e}");

        // A body read is held against the budget (its size only) until dropped.
        let body = read_body_bounded(
            Full::new(Bytes::from_static(b"[1,2]")),
            1024,
            &budget,
            "http://h/",
        )
        .await
        .unwrap();
        assert_eq!(&body.bytes()[..], b"[1,2]");
        assert_eq!(budget.free(), budget.total() - 5);
        drop(body);
        assert_eq!(budget.free(), budget.total());
    }

    #[test]
    fn typed_json_errors_never_quote_the_body() {
        #[derive(serde::Deserialize, Debug)]
        struct S {
            #[allow(dead_code)]
            n: f64,
        }
        let e = parse_json::<S>(br#"{"n": "secret-token"}"#, "http://h/").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("expected shape") && !text.contains("secret-token"),
            "{text}"
        );
        let e = parse_json::<S>(b"secret-token", "http://h/").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn json_get_carries_accept_agent_and_auth() {
        let uri: Uri = "http://127.0.0.1:1/q".parse().unwrap();
        let mut auth = HeaderValue::from_static("Bearer t");
        auth.set_sensitive(true);
        let r = json_get(&uri, Some(&auth), "http://127.0.0.1:1/q").unwrap();
        assert_eq!(r.headers()[header::ACCEPT], "application/json");
        assert!(
            r.headers()[header::USER_AGENT]
                .to_str()
                .unwrap()
                .starts_with("ebb/")
        );
        assert!(r.headers()[header::AUTHORIZATION].is_sensitive());
        assert!(
            json_get(&uri, None, "x")
                .unwrap()
                .headers()
                .get(header::AUTHORIZATION)
                .is_none()
        );
    }

    #[tokio::test]
    async fn refused_connections_are_unreachable_with_the_roots_note() {
        let tls = crate::common::tls::TlsSettings::verifying(true)
            .client_config()
            .unwrap();
        let client = pooled_client(tls, Some(Duration::from_secs(1)));
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let uri: Uri = "http://127.0.0.1:9/q".parse().unwrap();
        let request = json_get(&uri, None, "http://127.0.0.1:9/q").unwrap();
        let e = send(&client, request, "http://127.0.0.1:9/q", Some("no roots"))
            .await
            .unwrap_err();
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("cannot connect") && text.ends_with("(no roots)"),
            "{text}"
        );
    }
}
