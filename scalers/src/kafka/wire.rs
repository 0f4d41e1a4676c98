//! One connection to one Kafka broker, over `kafka-protocol` messages: TCP (or TLS), ApiVersions
//! negotiation, SASL, and one request at a time with its correlation id checked.
//!
//! A [`Connection`] that returned an error must be dropped (its stream may be mid-frame); dropping
//! it closes the socket. [`WireCounters`] counts the requests sent per API key and the connections
//! open, for tests and metrics.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::frame::read_frame;
use super::sasl::{Mechanism, ScramClient, plain_message};
use crate::common::budget::ByteBudget;

pub use super::frame::MAX_FRAME_BYTES;

/// What went wrong on a connection. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Connecting or reading/writing failed.
    #[error("{0}")]
    Io(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The broker sent something that is not a valid answer.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker does not support a version ebb can speak.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// SASL authentication failed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The answer was not read: the process-wide in-flight byte budget is used up.
    #[error("{0}")]
    Overloaded(String),
}

/// SASL credentials of a connection. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SaslCredentials {
    /// Mechanism.
    pub mechanism: Mechanism,
    /// Username.
    pub username: String,
    /// Password (never shown).
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to open connections.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Bounds connecting (TCP, TLS, ApiVersions and SASL together) and each request.
    pub timeout: Duration,
    /// TLS client configuration, when `tls: enable`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL credentials, when `sasl` is not `none`.
    pub sasl: Option<SaslCredentials>,
    /// The client id sent with each request.
    pub client_id: String,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(|s| s.mechanism))
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Counters shared by every connection of a pool.
#[derive(Debug)]
pub struct WireCounters {
    requests: [AtomicU64; 128],
    open: AtomicUsize,
    opened: AtomicU64,
    failed_connects: AtomicU64,
}

impl Default for WireCounters {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            open: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            failed_connects: AtomicU64::new(0),
        }
    }
}

impl WireCounters {
    /// Requests sent with this API key so far.
    pub fn requests(&self, key: ApiKey) -> u64 {
        self.requests
            .get(key as i16 as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections opened so far (successfully, SASL included).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connection attempts that failed so far.
    pub fn failed_connects(&self) -> u64 {
        self.failed_connects.load(Ordering::Relaxed)
    }

    fn count_request(&self, key: i16) {
        if let Some(c) = usize::try_from(key).ok().and_then(|k| self.requests.get(k)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Decrements the open-connection count when the connection goes away.
struct OpenGuard(Arc<WireCounters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One open, negotiated (and authenticated) connection to a broker.
pub struct Connection {
    addr: String,
    io: Box<dyn Io>,
    timeout: Duration,
    client_id: StrBytes,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
    counters: Arc<WireCounters>,
    /// What response frames in flight may hold, shared with every other scaler.
    budget: ByteBudget,
    _open: OpenGuard,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("apis", &self.versions.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), negotiates versions and authenticates, all within
    /// `options.timeout`.
    pub async fn connect(
        addr: &str,
        options: &ConnectOptions,
        counters: Arc<WireCounters>,
    ) -> Result<Connection, WireError> {
        let result = tokio::time::timeout(
            options.timeout,
            Self::connect_inner(addr, options, counters.clone()),
        )
        .await
        .unwrap_or(Err(WireError::Timeout(options.timeout)));
        if result.is_err() {
            counters.failed_connects.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn connect_inner(
        addr: &str,
        options: &ConnectOptions,
        counters: Arc<WireCounters>,
    ) -> Result<Connection, WireError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| WireError::Io(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &options.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = super::tls::server_name(addr).map_err(|e| WireError::Tls(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| WireError::Tls(e.to_string()))?;
                Box::new(tls)
            }
        };
        counters.open.fetch_add(1, Ordering::Relaxed);
        let mut conn = Connection {
            addr: addr.to_string(),
            io,
            timeout: options.timeout,
            client_id: StrBytes::from_string(options.client_id.clone()),
            correlation: 0,
            versions: HashMap::new(),
            _open: OpenGuard(counters.clone()),
            counters: counters.clone(),
            budget: ByteBudget::global().clone(),
        };
        conn.negotiate_versions().await?;
        if let Some(sasl) = &options.sasl {
            conn.authenticate(sasl).await?;
        }
        counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// The broker address (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `R` both sides speak, at least `min` (ebb's own lower bound).
    pub fn version<R: Request>(&self, min: i16) -> Option<i16> {
        let (broker_min, broker_max) = *self.versions.get(&R::KEY)?;
        let ours = R::VERSIONS;
        let high = broker_max.min(ours.max);
        (high >= broker_min.max(ours.min).max(min)).then_some(high)
    }

    /// Like [`Connection::version`], as an error naming the API when there is none.
    pub fn require_version<R: Request>(&self, min: i16) -> Result<i16, WireError> {
        self.version::<R>(min).ok_or_else(|| {
            let name =
                ApiKey::try_from(R::KEY).map_or_else(|_| format!("API {}", R::KEY), |k| format!("{k:?}"));
            WireError::Unsupported(format!(
                "the broker at {} does not offer {name} v{min} or later",
                self.addr
            ))
        })
    }

    async fn negotiate_versions(&mut self) -> Result<(), WireError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("ebb"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        // v3 first; a broker that does not know it answers UNSUPPORTED_VERSION in v0 form.
        let response = match self.send_raw::<ApiVersionsRequest>(&request, 3).await {
            Ok(r) if r.error_code == 0 => r,
            Ok(r) if r.error_code == 35 => self.send_raw::<ApiVersionsRequest>(&request, 0).await?,
            Ok(r) => {
                return Err(WireError::Protocol(format!(
                    "ApiVersions answered error {}",
                    r.error_code
                )));
            }
            Err(WireError::Protocol(_)) => self.send_raw::<ApiVersionsRequest>(&request, 0).await?,
            Err(e) => return Err(e),
        };
        if response.error_code != 0 {
            return Err(WireError::Protocol(format!(
                "ApiVersions answered error {}",
                response.error_code
            )));
        }
        self.versions = api_ranges(&response);
        Ok(())
    }

    async fn authenticate(&mut self, sasl: &SaslCredentials) -> Result<(), WireError> {
        let handshake_version = self.require_version::<SaslHandshakeRequest>(1)?;
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
        let answer = self.request(&handshake, handshake_version).await?;
        if answer.error_code != 0 {
            let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(WireError::Auth(format!(
                "the broker does not accept SASL {} ({}; it offers {})",
                sasl.mechanism.name(),
                kafka_protocol::ResponseError::try_from_code(answer.error_code)
                    .map_or_else(String::new, |e| e.to_string()),
                offered.join(", ")
            )));
        }
        let version = self.require_version::<SaslAuthenticateRequest>(0)?;
        match sasl.mechanism {
            Mechanism::Plain => {
                self.sasl_round(plain_message(&sasl.username, &sasl.password), version)
                    .await?;
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let mut scram = ScramClient::new(sasl.mechanism, &sasl.username, &sasl.password)
                    .map_err(|e| WireError::Auth(e.to_string()))?;
                let server_first = self.sasl_round(scram.client_first(), version).await?;
                let client_final = scram
                    .client_final(&server_first)
                    .map_err(|e| WireError::Auth(e.to_string()))?;
                let server_final = self.sasl_round(client_final, version).await?;
                scram
                    .verify_server_final(&server_final)
                    .map_err(|e| WireError::Auth(e.to_string()))?;
            }
        }
        Ok(())
    }

    async fn sasl_round(&mut self, bytes: Vec<u8>, version: i16) -> Result<Bytes, WireError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
        let answer = self.request(&request, version).await?;
        if answer.error_code != 0 {
            let message = answer
                .error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(|| format!("error code {}", answer.error_code));
            return Err(WireError::Auth(message));
        }
        Ok(answer.auth_bytes)
    }

    /// Sends one request at `version` and reads its answer, within the connection's timeout.
    /// After an error, drop the connection.
    pub async fn request<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, WireError> {
        self.send_raw(request, version).await
    }

    async fn send_raw<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, WireError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(request, version))
            .await
            .unwrap_or(Err(WireError::Timeout(timeout)))
    }

    async fn exchange<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, WireError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(protocol_error("cannot encode the request header"))?;
        request
            .encode(&mut buf, version)
            .map_err(protocol_error("cannot encode the request"))?;
        let size =
            i32::try_from(buf.len() - 4).map_err(|_| WireError::Protocol("request too large".into()))?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let io_error = |e: std::io::Error| WireError::Io(e.to_string());
        self.io.write_all(&buf).await.map_err(io_error)?;
        self.io.flush().await.map_err(io_error)?;
        self.counters.count_request(R::KEY);

        // Reserved from the byte budget until the response is decoded.
        let read = read_frame(&mut self.io, MAX_FRAME_BYTES, &self.budget).await?;
        decode_response::<R>(read.bytes.clone(), version, correlation)
    }
}

/// Decodes one response frame (the bytes after its size prefix) answering an `R` request sent at
/// `version` with `correlation`: the response header, its correlation id, then the body. What
/// every request does with its answer; public so the fuzz harness can drive it.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation: i32,
) -> Result<R::Response, WireError> {
    let response_header = ResponseHeader::decode(
        &mut frame,
        <R::Response as HeaderVersion>::header_version(version),
    )
    .map_err(protocol_error("cannot decode the response header"))?;
    if response_header.correlation_id != correlation {
        return Err(WireError::Protocol(format!(
            "answer {} to request {correlation}",
            response_header.correlation_id
        )));
    }
    R::Response::decode(&mut frame, version).map_err(protocol_error("cannot decode the response"))
}

fn protocol_error<E: fmt::Display>(what: &'static str) -> impl Fn(E) -> WireError {
    move |e| WireError::Protocol(format!("{what}: {e}"))
}

fn api_ranges(response: &ApiVersionsResponse) -> HashMap<i16, (i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect()
}

#[cfg(test)]
mod tests {
    //! The connection against an in-process fake broker that speaks ApiVersions and SASL (PLAIN
    //! and SCRAM, server side written from RFC 5802), so the whole handshake flow is exercised
    //! (Tansu's memory build cannot enable SASL with users).

    use super::*;
    use base64::Engine as _;
    use kafka_protocol::messages::{
        ApiVersionsResponse, MetadataRequest, MetadataResponse, ResponseHeader, SaslAuthenticateResponse,
        SaslHandshakeResponse, api_versions_response::ApiVersion,
    };
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use ring::{digest, hmac, pbkdf2};
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    const SALT: &[u8] = b"fake-broker-salt";
    const ITERATIONS: u32 = 4096;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Server-side SCRAM state of one connection.
    #[derive(Default)]
    struct ServerScram {
        client_first_bare: String,
        server_first: String,
        nonce: String,
    }

    fn algs(mechanism: &str) -> (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm) {
        if mechanism == "SCRAM-SHA-512" {
            (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512)
        } else {
            (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256)
        }
    }

    /// Answers one SaslAuthenticate step: Ok(bytes) or Err(message).
    fn server_step(
        mechanism: &str,
        scram: &mut ServerScram,
        users: &HashMap<String, String>,
        input: &[u8],
    ) -> Result<Vec<u8>, String> {
        if mechanism == "PLAIN" {
            let parts: Vec<&[u8]> = input.split(|b| *b == 0).collect();
            let [_, user, pass] = parts.as_slice() else {
                return Err("bad PLAIN".into());
            };
            let user = std::str::from_utf8(user).map_err(|_| "utf8")?;
            return match users.get(user) {
                Some(p) if p.as_bytes() == *pass => Ok(Vec::new()),
                _ => Err("Authentication failed: Invalid username or password".into()),
            };
        }
        let text = std::str::from_utf8(input).map_err(|_| "utf8")?;
        if let Some(bare) = text.strip_prefix("n,,") {
            let cnonce = bare
                .split(',')
                .find_map(|a| a.strip_prefix("r="))
                .ok_or("no nonce")?;
            scram.client_first_bare = bare.to_string();
            scram.nonce = format!("{cnonce}srvpart");
            scram.server_first = format!("r={},s={},i={ITERATIONS}", scram.nonce, b64(SALT));
            return Ok(scram.server_first.clone().into_bytes());
        }
        let (without_proof, proof) = text.split_once(",p=").ok_or("no proof")?;
        if !without_proof.contains(&format!("r={}", scram.nonce)) {
            return Err("nonce mismatch".into());
        }
        let user = scram
            .client_first_bare
            .split(',')
            .find_map(|a| a.strip_prefix("n="))
            .ok_or("no user")?
            .replace("=2C", ",")
            .replace("=3D", "=");
        let password = users.get(&user).ok_or("unknown user")?;
        let (kdf, mac, hash) = algs(mechanism);
        let mut salted = vec![0u8; hash.output_len()];
        let iterations = std::num::NonZeroU32::new(ITERATIONS).ok_or("iterations")?;
        pbkdf2::derive(kdf, iterations, SALT, password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        let auth_message = format!(
            "{},{},{without_proof}",
            scram.client_first_bare, scram.server_first
        );
        let signature = hmac::sign(&hmac::Key::new(mac, stored_key.as_ref()), auth_message.as_bytes());
        let expected: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        if b64(&expected) != proof {
            return Err("Authentication failed: Invalid username or password".into());
        }
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature = hmac::sign(&hmac::Key::new(mac, server_key.as_ref()), auth_message.as_bytes());
        Ok(format!("v={}", b64(server_signature.as_ref())).into_bytes())
    }

    async fn respond<R: Encodable + HeaderVersion>(
        stream: &mut TcpStream,
        correlation: i32,
        version: i16,
        body: &R,
    ) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation)
            .encode(&mut buf, R::header_version(version))
            .map_err(std::io::Error::other)?;
        body.encode(&mut buf, version).map_err(std::io::Error::other)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&buf).await
    }

    /// Serves one connection: ApiVersions, SaslHandshake, SaslAuthenticate, and (once
    /// authenticated) Metadata with no topics.
    async fn serve(mut stream: TcpStream, mechanisms: Vec<&'static str>, users: HashMap<String, String>) {
        let mut mechanism = String::new();
        let mut scram = ServerScram::default();
        let mut authenticated = false;
        loop {
            let Ok(size) = stream.read_i32().await else { return };
            let mut frame = vec![0u8; size as usize];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let mut frame = Bytes::from(frame);
            let Ok(header) = decode_request_header_from_buffer(&mut frame) else {
                return;
            };
            let (id, v) = (header.correlation_id, header.request_api_version);
            let sent = match ApiKey::try_from(header.request_api_key) {
                Ok(ApiKey::ApiVersions) => {
                    let keys = [(18, 0, 3), (17, 0, 1), (36, 0, 2), (3, 1, 12)]
                        .into_iter()
                        .map(|(k, min, max)| {
                            ApiVersion::default()
                                .with_api_key(k)
                                .with_min_version(min)
                                .with_max_version(max)
                        })
                        .collect();
                    respond(
                        &mut stream,
                        id,
                        v,
                        &ApiVersionsResponse::default().with_api_keys(keys),
                    )
                    .await
                }
                Ok(ApiKey::SaslHandshake) => {
                    let Ok(r) = SaslHandshakeRequest::decode(&mut frame, v) else {
                        return;
                    };
                    mechanism = r.mechanism.as_str().to_string();
                    let code = if mechanisms.contains(&mechanism.as_str()) {
                        0
                    } else {
                        33
                    };
                    let offered = mechanisms.iter().map(|m| StrBytes::from_static_str(m)).collect();
                    let answer = SaslHandshakeResponse::default()
                        .with_error_code(code)
                        .with_mechanisms(offered);
                    respond(&mut stream, id, v, &answer).await
                }
                Ok(ApiKey::SaslAuthenticate) => {
                    let Ok(r) = SaslAuthenticateRequest::decode(&mut frame, v) else {
                        return;
                    };
                    let answer = match server_step(&mechanism, &mut scram, &users, &r.auth_bytes) {
                        Ok(bytes) => {
                            authenticated = mechanism == "PLAIN" || bytes.starts_with(b"v=");
                            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes))
                        }
                        Err(message) => SaslAuthenticateResponse::default()
                            .with_error_code(58)
                            .with_error_message(Some(StrBytes::from_string(message))),
                    };
                    respond(&mut stream, id, v, &answer).await
                }
                Ok(ApiKey::Metadata) if authenticated => {
                    let Ok(_) = MetadataRequest::decode(&mut frame, v) else {
                        return;
                    };
                    respond(&mut stream, id, v, &MetadataResponse::default()).await
                }
                _ => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }

    async fn fake_broker(mechanisms: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let users = HashMap::from([
            ("alice".to_string(), "s3cret".to_string()),
            ("b,o=b".to_string(), "pw".to_string()),
        ]);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, mechanisms.clone(), users.clone()));
            }
        });
        addr
    }

    fn options(mechanism: Mechanism, username: &str, password: &str) -> ConnectOptions {
        ConnectOptions {
            timeout: Duration::from_secs(5),
            tls: None,
            sasl: Some(SaslCredentials {
                mechanism,
                username: username.into(),
                password: password.into(),
            }),
            client_id: "test".into(),
        }
    }

    #[test]
    fn an_array_length_beyond_the_frame_is_an_error_not_an_allocation() {
        // Found by `cargo fuzz run kafka_response`: Metadata v0 whose broker array announces
        // i32::MAX entries in a 8-byte frame. Unpatched kafka-protocol reserved that many
        // brokers up front and the process aborted.
        let mut frame = 7i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&i32::MAX.to_be_bytes());
        let e = decode_response::<MetadataRequest>(Bytes::from(frame), 0, 7).unwrap_err();
        assert!(matches!(e, WireError::Protocol(_)), "{e}");
        // The same as a compact array (v12: flexible header, throttle time, then a varint of
        // u32::MAX).
        let mut frame = 7i32.to_be_bytes().to_vec();
        frame.push(0);
        frame.extend_from_slice(&0i32.to_be_bytes());
        frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let e = decode_response::<MetadataRequest>(Bytes::from(frame), 12, 7).unwrap_err();
        assert!(matches!(e, WireError::Protocol(_)), "{e}");
        // A whole response still decodes.
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut frame, MetadataResponse::header_version(12))
            .unwrap();
        let brokers = vec![Default::default(); 3];
        MetadataResponse::default()
            .with_brokers(brokers)
            .encode(&mut frame, 12)
            .unwrap();
        let decoded = decode_response::<MetadataRequest>(frame.freeze(), 12, 7).unwrap();
        assert_eq!(decoded.brokers.len(), 3);
        let e = decode_response::<MetadataRequest>(Bytes::from_static(&[0, 0, 0, 8]), 0, 7).unwrap_err();
        assert!(e.to_string().contains("answer 8 to request 7"), "{e}");
    }

    #[tokio::test]
    async fn sasl_plain_and_scram_against_a_fake_broker() {
        let addr = fake_broker(vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]).await;
        let counters = Arc::new(WireCounters::default());
        for (mechanism, user, password) in [
            (Mechanism::Plain, "alice", "s3cret"),
            (Mechanism::ScramSha256, "alice", "s3cret"),
            (Mechanism::ScramSha512, "alice", "s3cret"),
            (Mechanism::ScramSha512, "b,o=b", "pw"),
        ] {
            let mut conn = Connection::connect(&addr, &options(mechanism, user, password), counters.clone())
                .await
                .unwrap_or_else(|e| panic!("{mechanism:?} {user}: {e}"));
            let v = conn.require_version::<MetadataRequest>(1).unwrap();
            conn.request(&MetadataRequest::default(), v).await.unwrap();
        }
        assert_eq!(counters.open_connections(), 0, "every connection closed on drop");
        assert_eq!(counters.connections_opened(), 4);
        assert_eq!(counters.requests(ApiKey::SaslAuthenticate), 1 + 2 + 2 + 2);

        for (mechanism, password) in [
            (Mechanism::Plain, "wrong"),
            (Mechanism::ScramSha256, "wrong"),
            (Mechanism::ScramSha512, "hunter2"),
        ] {
            let e = Connection::connect(&addr, &options(mechanism, "alice", password), counters.clone())
                .await
                .unwrap_err();
            assert!(
                matches!(&e, WireError::Auth(m) if m.contains("Invalid username or password")),
                "{e}"
            );
            assert!(!e.to_string().contains(password), "{e}");
        }
        assert_eq!(counters.open_connections(), 0);
        assert_eq!(counters.failed_connects(), 3);

        let plain_only = fake_broker(vec!["PLAIN"]).await;
        let e = Connection::connect(
            &plain_only,
            &options(Mechanism::ScramSha256, "alice", "s3cret"),
            counters.clone(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("it offers PLAIN"), "{e}");
    }

    #[tokio::test]
    async fn connect_errors_are_bounded_and_counted() {
        let counters = Arc::new(WireCounters::default());
        let options = ConnectOptions {
            timeout: Duration::from_millis(300),
            tls: None,
            sasl: None,
            client_id: "test".into(),
        };
        let e = Connection::connect("127.0.0.1:1", &options, counters.clone())
            .await
            .unwrap_err();
        assert!(matches!(e, WireError::Io(_)), "{e}");
        // A listener that never answers: the handshake times out.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let start = std::time::Instant::now();
        let e = Connection::connect(&addr, &options, counters.clone())
            .await
            .unwrap_err();
        assert_eq!(e, WireError::Timeout(Duration::from_millis(300)));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(counters.open_connections(), 0);
        assert_eq!(counters.failed_connects(), 2);
        drop(silent);
    }
}
