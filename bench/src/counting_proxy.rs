//! A counting Kafka proxy: a TCP relay in front of one broker that counts every request passing
//! through it, by client id and API key, so a benchmark can tell how many requests reach the
//! broker whatever the client reports about itself.
//!
//! It parses the Kafka framing (a 4-byte big-endian size, then the request header: API key, API
//! version, correlation id, client id) and relays frames unchanged, except Metadata and
//! FindCoordinator answers: their advertised broker addresses are rewritten to the proxy's own,
//! otherwise a client would dial the broker directly after its first Metadata answer and bypass
//! the count. Like the test harness' relay it assumes a single-broker cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FindCoordinatorResponse, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable as _, Encodable as _, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The largest frame relayed (as ebb's own client).
const MAX_FRAME: usize = ebb_scalers::kafka::wire::MAX_FRAME_BYTES;

/// What one client id sent through the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Requests by API key (`ApiKey as i16`).
    pub requests: BTreeMap<i16, u64>,
    /// Bytes of the requests (frames, size prefix included).
    pub request_bytes: u64,
    /// Bytes of the answers (frames, size prefix included).
    pub response_bytes: u64,
    /// Connections whose first request carried this client id.
    pub connections: u64,
}

impl ClientCounts {
    /// Requests of every API key together.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Requests with this API key.
    pub fn of(&self, key: ApiKey) -> u64 {
        self.requests.get(&(key as i16)).copied().unwrap_or(0)
    }

    /// What was counted after `earlier` (a snapshot of the same counters taken before).
    pub fn since(&self, earlier: &ClientCounts) -> ClientCounts {
        ClientCounts {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (*k, v - earlier.requests.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
            request_bytes: self.request_bytes - earlier.request_bytes,
            response_bytes: self.response_bytes - earlier.response_bytes,
            connections: self.connections - earlier.connections,
        }
    }
}

/// The name of an API key (`ListOffsets`), or `api-<n>` for a key `kafka-protocol` does not know.
pub fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| format!("api-{key}"), |k| format!("{k:?}"))
}

/// One request as the proxy saw it pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEvent {
    /// When its frame was read.
    pub at: Instant,
    /// Its API key.
    pub api_key: i16,
}

/// Splits requests (in time order) into bursts separated by at least `gap` of silence: the
/// rounds of a client that sends its requests together and then waits for its next tick.
pub fn bursts(events: &[RequestEvent], gap: Duration) -> Vec<Vec<RequestEvent>> {
    let mut out: Vec<Vec<RequestEvent>> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some(burst)
                if burst
                    .last()
                    .is_some_and(|l| e.at.saturating_duration_since(l.at) < gap) =>
            {
                burst.push(e.clone())
            }
            _ => out.push(vec![e.clone()]),
        }
    }
    out
}

#[derive(Default)]
struct Counters {
    clients: Mutex<HashMap<String, ClientCounts>>,
    events: Mutex<HashMap<String, Vec<RequestEvent>>>,
    accepted: AtomicU64,
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ClientCounts>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The proxy. Dropping it closes the listener and every relayed connection.
pub struct CountingProxy {
    addr: String,
    counters: Arc<Counters>,
    _tasks: JoinSet<()>,
}

impl CountingProxy {
    /// Starts relaying from an ephemeral loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let mut tasks = JoinSet::new();
        let (upstream, host, port) = (
            upstream.to_string(),
            local.ip().to_string(),
            i32::from(local.port()),
        );
        let c = counters.clone();
        tasks.spawn(async move {
            // Dropped with the accept task: aborts every relayed connection.
            let mut pipes = JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = inbound.set_nodelay(true);
                pipes.spawn(relay(inbound, upstream.clone(), host.clone(), port, c.clone()));
                while pipes.try_join_next().is_some() {}
            }
        });
        Ok(CountingProxy {
            addr: local.to_string(),
            counters,
            _tasks: tasks,
        })
    }

    /// `127.0.0.1:<port>`: give this as `bootstrapServers`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// The counts of one client id so far (zero if it sent nothing).
    pub fn client(&self, client_id: &str) -> ClientCounts {
        self.counters.lock().get(client_id).cloned().unwrap_or_default()
    }

    /// Every request of one client id so far, in the order they passed.
    pub fn events(&self, client_id: &str) -> Vec<RequestEvent> {
        self.counters
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The counts of every client id so far.
    pub fn all(&self) -> BTreeMap<String, ClientCounts> {
        self.counters
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The fields of a request header the proxy needs: API key, API version, correlation id and
/// client id (`None` when null). The client id is a non-compact nullable string in every header
/// version (1 and 2), so no version table is needed.
pub fn request_header(frame: &[u8]) -> Option<(i16, i16, i32, Option<String>)> {
    let key = i16::from_be_bytes(frame.get(0..2)?.try_into().ok()?);
    let version = i16::from_be_bytes(frame.get(2..4)?.try_into().ok()?);
    let correlation = i32::from_be_bytes(frame.get(4..8)?.try_into().ok()?);
    let len = i16::from_be_bytes(frame.get(8..10)?.try_into().ok()?);
    let client = match usize::try_from(len) {
        Err(_) => None, // -1: null
        Ok(n) => Some(String::from_utf8_lossy(frame.get(10..10 + n)?).into_owned()),
    };
    Some((key, version, correlation, client))
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let size = r.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other(format!("bad frame size {size}")))?;
    let mut frame = vec![0u8; size];
    r.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    let size = i32::try_from(frame.len()).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(frame.len() + 4);
    buf.extend_from_slice(&size.to_be_bytes());
    buf.extend_from_slice(frame);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Relays one connection frame by frame, counting requests and rewriting broker addresses.
async fn relay(inbound: TcpStream, upstream: String, host: String, port: i32, counters: Arc<Counters>) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut broker_read, mut broker_write) = outbound.into_split();
    // Correlation id → (API key, version); and the connection's client id, once known.
    let pending: Mutex<HashMap<i32, (i16, i16)>> = Mutex::new(HashMap::new());
    let client: Mutex<Option<String>> = Mutex::new(None);
    let requests = async {
        loop {
            let frame = read_frame(&mut client_read).await?;
            if let Some((key, version, correlation, id)) = request_header(&frame) {
                let id = id.unwrap_or_default();
                let first = {
                    let mut known = client.lock().unwrap_or_else(|p| p.into_inner());
                    let first = known.is_none();
                    known.get_or_insert_with(|| id.clone());
                    first
                };
                {
                    let at = Instant::now();
                    let mut clients = counters.lock();
                    counters
                        .events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id.clone())
                        .or_default()
                        .push(RequestEvent { at, api_key: key });
                    let c = clients.entry(id).or_default();
                    *c.requests.entry(key).or_default() += 1;
                    c.request_bytes += frame.len() as u64 + 4;
                    if first {
                        c.connections += 1;
                    }
                }
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(correlation, (key, version));
            }
            write_frame(&mut broker_write, &frame).await?;
        }
    };
    let responses = async {
        loop {
            let frame = read_frame(&mut broker_read).await?;
            let asked = (frame.len() >= 4)
                .then(|| i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
                .and_then(|c| pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&c));
            if let Some(id) = client.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                counters.lock().entry(id).or_default().response_bytes += frame.len() as u64 + 4;
            }
            let frame = match asked {
                Some((key, version)) => rewrite_addresses(&frame, key, version, &host, port).unwrap_or(frame),
                None => frame,
            };
            write_frame(&mut client_write, &frame).await?;
        }
    };
    let _: std::io::Result<()> = tokio::select! {
        r = requests => r,
        r = responses => r,
    };
}

/// The answer with every advertised broker address replaced by `host:port`, for Metadata and
/// FindCoordinator answers; `None` for other APIs (or an answer that does not decode).
pub fn rewrite_addresses(frame: &[u8], key: i16, version: i16, host: &str, port: i32) -> Option<Vec<u8>> {
    let api = ApiKey::try_from(key).ok()?;
    if !matches!(api, ApiKey::Metadata | ApiKey::FindCoordinator) {
        return None;
    }
    let header_version = api.response_header_version(version);
    let mut buf = Bytes::copy_from_slice(frame);
    let header = ResponseHeader::decode(&mut buf, header_version).ok()?;
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version).ok()?;
    let host = StrBytes::from_string(host.to_string());
    if api == ApiKey::Metadata {
        let mut body = MetadataResponse::decode(&mut buf, version).ok()?;
        for b in &mut body.brokers {
            b.host = host.clone();
            b.port = port;
        }
        body.encode(&mut out, version).ok()?;
    } else {
        let mut body = FindCoordinatorResponse::decode(&mut buf, version).ok()?;
        if body.error_code == 0 && version < 4 {
            body.host = host.clone();
            body.port = port;
        }
        for c in &mut body.coordinators {
            if c.error_code == 0 {
                c.host = host.clone();
                c.port = port;
            }
        }
        body.encode(&mut out, version).ok()?;
    }
    out.put_slice(&buf);
    Some(out.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;

    #[test]
    fn request_headers_are_read_with_and_without_client_id() {
        let mut frame = vec![0, 2, 0, 7, 0, 0, 0, 42, 0, 3];
        frame.extend_from_slice(b"ebb");
        frame.extend_from_slice(&[1, 2, 3]);
        assert_eq!(request_header(&frame), Some((2, 7, 42, Some("ebb".into()))));
        assert_eq!(
            request_header(&[0, 9, 0, 1, 0, 0, 0, 1, 0xff, 0xff]),
            Some((9, 1, 1, None))
        );
        assert_eq!(request_header(&[0, 9, 0, 1]), None);
    }

    #[test]
    fn bursts_split_at_silences() {
        let t = Instant::now();
        let e = |ms: u64| RequestEvent {
            at: t + Duration::from_millis(ms),
            api_key: 1,
        };
        let events = [e(0), e(5), e(1000), e(1010), e(1290), e(2000)];
        let sizes: Vec<usize> = bursts(&events, Duration::from_millis(300))
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [2, 3, 1]);
        assert!(bursts(&[], Duration::from_millis(300)).is_empty());
    }

    #[test]
    fn metadata_answers_advertise_the_proxy() {
        let version = 9;
        let header_version = ApiKey::Metadata.response_header_version(version);
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut frame, header_version)
            .unwrap();
        MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("broker.internal"))
                    .with_port(9092),
            ])
            .encode(&mut frame, version)
            .unwrap();
        let out = rewrite_addresses(&frame, ApiKey::Metadata as i16, version, "127.0.0.1", 4242).unwrap();
        let mut buf = Bytes::from(out);
        assert_eq!(
            ResponseHeader::decode(&mut buf, header_version)
                .unwrap()
                .correlation_id,
            5
        );
        let body = MetadataResponse::decode(&mut buf, version).unwrap();
        assert_eq!(body.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(body.brokers[0].port, 4242);
        assert_eq!(rewrite_addresses(&frame, ApiKey::Produce as i16, 9, "h", 1), None);
    }
}
