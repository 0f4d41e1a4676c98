//! HTTP for the scalers that poll an HTTP API (metrics-api, the RabbitMQ management API, NATS
//! monitoring) and for the operator's leader forwarding: one pooled HTTP/1.1 client over rustls
//! ([`pooled_client`]), the JSON GET they all send ([`json_get`], [`send`]), and one bounded JSON
//! body reader ([`read_json_body`]).
//!
//! Errors are [`ScalerError`]s naming the endpoint as the caller shows it (credentials masked),
//! never quoting a header or a body.

use std::error::Error as StdError;
use std::time::Duration;

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
