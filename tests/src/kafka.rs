//! Kafka for the end-to-end tests and the demo: a small admin client that creates topics, produces,
//! commits and reads offsets ([`KafkaAdmin`]), and a Kafka-aware TCP relay that can be cut to
//! simulate a broker outage ([`KafkaRelay`]).
//!
//! Both speak the protocol through ebb's own connection ([`ebb_scalers::kafka_client::wire`]) and
//! the `kafka-protocol` crate, and both assume a single-broker cluster (the test environment's
//! Tansu): every request goes to the one broker, which leads every partition and coordinates every
//! group.
//!
//! Records are produced one per request (one record per batch): Tansu's memory build answers
//! ListOffsets(latest) correctly only then. Offsets are committed as a standalone (simple) group:
//! OffsetCommit with generation -1 and an empty member id, so no consumer has to join the group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use ebb_scalers::kafka_client::plan::{group_id, topic_name};
use ebb_scalers::kafka_client::wire::{ConnectOptions, Connection, WireCounters, WireError};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FindCoordinatorResponse, ListOffsetsRequest, MetadataResponse,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, ResponseHeader,
    create_topics_request::CreatableTopic,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The connection failed (it is reopened on the next call).
    #[error("kafka {addr}: {source}")]
    Wire {
        /// The broker address.
        addr: String,
        /// The error.
        source: WireError,
    },
    /// The broker answered with an error code.
    #[error("kafka: {0}")]
    Broker(String),
}

fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e} ({code})"))
}

/// A topic name that no other run uses: `prefix-` and 8 random hex digits.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A small admin/producer/committer on one connection to a single-broker cluster.
pub struct KafkaAdmin {
    addr: String,
    conn: Option<Connection>,
}

impl KafkaAdmin {
    /// Connects to the broker at `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<KafkaAdmin, KafkaError> {
        let mut admin = KafkaAdmin {
            addr: addr.to_string(),
            conn: None,
        };
        admin.connection().await?;
        Ok(admin)
    }

    async fn connection(&mut self) -> Result<&mut Connection, KafkaError> {
        if self.conn.is_none() {
            let options = ConnectOptions {
                timeout: Duration::from_secs(10),
                tls: None,
                sasl: None,
                client_id: "ebb-tests".into(),
            };
            let conn = Connection::connect(&self.addr, &options, Arc::new(WireCounters::default()))
                .await
                .map_err(|source| KafkaError::Wire {
                    addr: self.addr.clone(),
                    source,
                })?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connection just opened"))
    }

    /// Sends `request` at the highest version both sides speak within `min..=max`. A connection
    /// that failed is dropped (reopened on the next call).
    async fn request<R: Request>(
        &mut self,
        request: &R,
        min: i16,
        max: i16,
    ) -> Result<R::Response, KafkaError> {
        let addr = self.addr.clone();
        let conn = self.connection().await?;
        let version = conn
            .require_version::<R>(min)
            .map_err(|source| KafkaError::Wire {
                addr: addr.clone(),
                source,
            })?
            .min(max);
        match conn.request(request, version).await {
            Ok(response) => Ok(response),
            Err(source) => {
                self.conn = None;
                Err(KafkaError::Wire { addr, source })
            }
        }
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    pub async fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ]);
        let response = self.request(&request, 1, i16::MAX).await?;
        for t in &response.topics {
            if t.error_code != 0 {
                return Err(KafkaError::Broker(format!(
                    "CreateTopics {topic}: {}",
                    error_name(t.error_code)
                )));
            }
        }
        Ok(())
    }

    /// Produces one record (`value`) to `topic`/`partition`, in a batch of its own.
    pub async fn produce_one(&mut self, topic: &str, partition: i32, value: &str) -> Result<(), KafkaError> {
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
        };
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| KafkaError::Broker(format!("cannot encode a record: {e}")))?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch.freeze())),
                    ]),
            ]);
        let response = self.request(&request, 3, i16::MAX).await?;
        for t in &response.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    return Err(KafkaError::Broker(format!(
                        "Produce {topic}/{partition}: {}",
                        error_name(p.error_code)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Produces `n` records spread round-robin over partitions `0..partitions`, one record per
    /// request.
    pub async fn produce(&mut self, topic: &str, partitions: i32, n: usize) -> Result<(), KafkaError> {
        for i in 0..n {
            let partition = (i % partitions.max(1) as usize) as i32;
            self.produce_one(topic, partition, &format!("message {i}"))
                .await?;
        }
        Ok(())
    }

    /// The log-end offsets of partitions `0..partitions` (ListOffsets, latest).
    pub async fn end_offsets(&mut self, topic: &str, partitions: i32) -> Result<Vec<i64>, KafkaError> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_isolation_level(0)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        (0..partitions)
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    ),
            ]);
        let response = self.request(&request, 1, i16::MAX).await?;
        let mut ends = vec![None; partitions.max(0) as usize];
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(KafkaError::Broker(format!(
                        "ListOffsets {topic}/{}: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    )));
                }
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| ends.get_mut(i))
                {
                    *slot = Some(p.offset);
                }
            }
        }
        ends.into_iter()
            .enumerate()
            .map(|(p, e)| {
                e.ok_or_else(|| KafkaError::Broker(format!("ListOffsets: no answer for {topic}/{p}")))
            })
            .collect()
    }

    /// The offsets `group` committed for partitions `0..partitions` (`None`: no commit).
    pub async fn committed(
        &mut self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<Option<i64>>, KafkaError> {
        // v1..=7: one group per request, the answer's topics at the top level.
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes((0..partitions).collect()),
            ]));
        let response = self.request(&request, 1, 7).await?;
        if response.error_code != 0 {
            return Err(KafkaError::Broker(format!(
                "OffsetFetch {group}: {}",
                error_name(response.error_code)
            )));
        }
        let mut out = vec![None; partitions.max(0) as usize];
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(KafkaError::Broker(format!(
                        "OffsetFetch {group} {topic}/{}: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    )));
                }
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| out.get_mut(i))
                {
                    *slot = (p.committed_offset >= 0).then_some(p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Commits `offsets` (partition, offset) of `topic` for `group`, as a standalone group
    /// (generation -1, no member).
    pub async fn commit(
        &mut self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<(), KafkaError> {
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                                    .with_committed_leader_epoch(-1)
                            })
                            .collect(),
                    ),
            ]);
        let response = self.request(&request, 2, 8).await?;
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(KafkaError::Broker(format!(
                        "OffsetCommit {group} {topic}/{}: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Commits `group` up to the log end of every partition (`0..partitions`); returns the offsets
    /// committed.
    pub async fn commit_to_end(
        &mut self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<i64>, KafkaError> {
        let ends = self.end_offsets(topic, partitions).await?;
        let offsets: Vec<(i32, i64)> = ends.iter().enumerate().map(|(p, e)| (p as i32, *e)).collect();
        self.commit(group, topic, &offsets).await?;
        Ok(ends)
    }

    /// Per-partition lag of `group`: log end minus committed offset (a partition without a commit
    /// counts from 0).
    pub async fn lag(&mut self, group: &str, topic: &str, partitions: i32) -> Result<Vec<i64>, KafkaError> {
        let ends = self.end_offsets(topic, partitions).await?;
        let committed = self.committed(group, topic, partitions).await?;
        Ok(ends
            .iter()
            .zip(&committed)
            .map(|(end, c)| (end - c.unwrap_or(0)).max(0))
            .collect())
    }
}

/// A Kafka-aware TCP relay in front of a single broker, which can be cut (listener closed, every
/// relayed connection closed) and restored on the same port: a broker outage for whoever talks
/// through it, while the broker keeps serving everybody else.
///
/// A Kafka client dials the addresses brokers advertise, not only its bootstrap servers, so a
/// plain relay would be bypassed after the first Metadata answer. This one rewrites the broker
/// addresses in Metadata and FindCoordinator answers to its own, so every connection of a client
/// bootstrapped through it keeps going through it.
pub struct KafkaRelay {
    /// `127.0.0.1:<port>`: give this as `bootstrapServers`.
    pub addr: String,
    upstream: String,
    tasks: Option<JoinSet<()>>,
}

impl KafkaRelay {
    /// Starts relaying from an ephemeral loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<KafkaRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let mut relay = KafkaRelay {
            addr,
            upstream: upstream.to_string(),
            tasks: None,
        };
        relay.serve(listener);
        Ok(relay)
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let (host, port) = self
            .addr
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.parse::<i32>().unwrap_or(0)))
            .unwrap_or_default();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Dropping this set (when the accept task is aborted) aborts every relayed connection.
            let mut pipes = JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                pipes.spawn(relay_connection(inbound, upstream.clone(), host.clone(), port));
                while pipes.try_join_next().is_some() {}
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every relayed connection: connecting to [`KafkaRelay::addr`] is
    /// refused from now on.
    pub async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) -> std::io::Result<()> {
        if self.tasks.is_none() {
            let listener = TcpListener::bind(&self.addr).await?;
            self.serve(listener);
        }
        Ok(())
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let size = r.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= ebb_scalers::kafka_client::wire::MAX_FRAME_BYTES)
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

/// Relays one client connection frame by frame, rewriting broker addresses in Metadata and
/// FindCoordinator answers to `host:port`.
async fn relay_connection(inbound: TcpStream, upstream: String, host: String, port: i32) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut broker_read, mut broker_write) = outbound.into_split();
    // Correlation id → (API key, version) of the requests awaiting an answer.
    let pending: Mutex<HashMap<i32, (i16, i16)>> = Mutex::new(HashMap::new());
    let requests = async {
        loop {
            let frame = read_frame(&mut client_read).await?;
            if frame.len() >= 8 {
                let key = i16::from_be_bytes([frame[0], frame[1]]);
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
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
fn rewrite_addresses(frame: &[u8], key: i16, version: i16, host: &str, port: i32) -> Option<Vec<u8>> {
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
    match api {
        ApiKey::Metadata => {
            let mut body = MetadataResponse::decode(&mut buf, version).ok()?;
            for b in &mut body.brokers {
                b.host = host.clone();
                b.port = port;
            }
            body.encode(&mut out, version).ok()?;
        }
        _ => {
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
    }
    out.put_slice(&buf);
    Some(out.to_vec())
}
