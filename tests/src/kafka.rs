//! Kafka for the end-to-end tests and the demo: a small admin client that creates topics, produces,
//! commits and reads offsets ([`KafkaAdmin`]), and a private broker process a test can stop and
//! start again to simulate a broker outage ([`TansuBroker`]).
//!
//! The clients speak the protocol through ebb's own connection ([`ebb_scalers::kafka::wire`])
//! and the `kafka-protocol` crate, and assume a single-broker cluster (the test environment's Tansu):
//! every request goes to the one broker, which leads every partition and coordinates every group.
//!
//! Records are produced with ordinary batching: all the records of one call for one partition go in
//! one record batch (the SQLite build of Tansu answers ListOffsets(latest) exactly for batches of any
//! size). Offsets are committed as a standalone (simple) group: OffsetCommit with generation -1 and
//! an empty member id, so no consumer has to join the group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ebb_scalers::kafka::plan::{group_id, topic_name};
use ebb_scalers::kafka::wire::{ConnectOptions, Connection, WireCounters, WireError};
use kafka_protocol::messages::{
    CreateTopicsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    create_topics_request::CreatableTopic,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::process::{Child, Command};

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
        self.produce_batches(topic, vec![(partition, vec![value.to_string()])])
            .await
    }

    /// Produces `values` to `topic`/`partition` as one record batch (offsets `end..end + len`).
    pub async fn produce_batch(
        &mut self,
        topic: &str,
        partition: i32,
        values: &[String],
    ) -> Result<(), KafkaError> {
        self.produce_batches(topic, vec![(partition, values.to_vec())])
            .await
    }

    /// Produces `n` records (`message 0`, `message 1`, ...) spread round-robin over partitions
    /// `0..partitions`, in one request: one record batch per partition.
    pub async fn produce(&mut self, topic: &str, partitions: i32, n: usize) -> Result<(), KafkaError> {
        let partitions = partitions.max(1);
        let mut batches: Vec<(i32, Vec<String>)> = (0..partitions).map(|p| (p, Vec::new())).collect();
        for i in 0..n {
            batches[i % partitions as usize].1.push(format!("message {i}"));
        }
        batches.retain(|(_, values)| !values.is_empty());
        if batches.is_empty() {
            return Ok(());
        }
        self.produce_batches(topic, batches).await
    }

    /// One Produce request (acks all) holding one record batch per `(partition, values)`.
    async fn produce_batches(
        &mut self,
        topic: &str,
        batches: Vec<(i32, Vec<String>)>,
    ) -> Result<(), KafkaError> {
        let mut partition_data = Vec::with_capacity(batches.len());
        for (partition, values) in &batches {
            let batch = encode_batch(values)?;
            partition_data.push(
                PartitionProduceData::default()
                    .with_index(*partition)
                    .with_records(Some(batch)),
            );
        }
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(partition_data),
            ]);
        let response = self.request(&request, 3, i16::MAX).await?;
        let mut answered = 0;
        for t in &response.responses {
            for p in &t.partition_responses {
                answered += 1;
                if p.error_code != 0 {
                    return Err(KafkaError::Broker(format!(
                        "Produce {topic}/{}: {}",
                        p.index,
                        error_name(p.error_code)
                    )));
                }
            }
        }
        if answered != batches.len() {
            return Err(KafkaError::Broker(format!(
                "Produce {topic}: {answered} partition answers for {} batches",
                batches.len()
            )));
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

/// A private Tansu broker (SQLite storage) for one test, on a free port with its own data
/// dir, so the test can stop it (a real broker outage) while the shared broker keeps serving every
/// other test. Starting it again on the same port and data dir keeps its topics, records and
/// committed offsets. The process is killed and the data dir removed when this is dropped (the dir
/// is kept, with the broker's log, when the test panics).
pub struct TansuBroker {
    /// `<ip>:<port>`: the bootstrap and advertised address.
    pub addr: String,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl TansuBroker {
    /// Starts `bin` (the test environment's `EBB_TANSU_BIN`) on a free loopback port with a fresh
    /// data dir under the system temp dir, and waits until it answers ApiVersions.
    pub async fn start(bin: &Path) -> Result<TansuBroker, KafkaError> {
        Self::start_on(bin, "127.0.0.1").await
    }

    /// Like [`TansuBroker::start`], on a free port of `ip`, which it also advertises: on the test
    /// node's bridge gateway (`10.244.0.1`) both pods and host processes reach it.
    pub async fn start_on(bin: &Path, ip: &str) -> Result<TansuBroker, KafkaError> {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| KafkaError::Broker(format!("no free port on {ip}: {e}")))?
            .port();
        let dir = std::env::temp_dir().join(unique_name("ebb-tansu"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| KafkaError::Broker(format!("cannot create {}: {e}", dir.display())))?;
        let mut broker = TansuBroker {
            addr: format!("{ip}:{port}"),
            bin: bin.to_path_buf(),
            dir,
            child: None,
        };
        broker.resume().await?;
        Ok(broker)
    }

    /// The data dir (the SQLite database `tansu.db` and the broker's log `tansu.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the broker process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the broker: SIGTERM, SIGKILL after 10 s; returns once the process is gone (its port
    /// refuses connections from then on). Tansu stops its storage at once on SIGTERM (requests
    /// fail from then on), and exits after draining open connections: ~5 s while a client stays
    /// connected.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Starts the broker again on the same port and data dir (after [`TansuBroker::stop`]) and
    /// waits until it answers ApiVersions; does nothing while it runs.
    pub async fn resume(&mut self) -> Result<(), KafkaError> {
        if self.is_running() {
            return Ok(());
        }
        let log_path = self.dir.join("tansu.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| KafkaError::Broker(format!("cannot open {}: {e}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(|e| KafkaError::Broker(format!("{}: {e}", log_path.display())))?;
        let url = format!("tcp://{}", self.addr);
        // The SQLite path is relative to the cwd (an absolute sqlite:///path does not work).
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| KafkaError::Broker(format!("cannot start {}: {e}", self.bin.display())))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if !self.is_running() {
                return Err(KafkaError::Broker(format!(
                    "tansu on {} exited at start; its log:\n{}",
                    self.addr,
                    log_tail(&log_path)
                )));
            }
            match KafkaAdmin::connect(&self.addr).await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(KafkaError::Broker(format!(
                        "tansu on {} not ready after 30 s ({e}); its log:\n{}",
                        self.addr,
                        log_tail(&log_path)
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "private tansu broker {}: data dir and log kept in {}",
                self.addr,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last 20 lines of a log file (empty when it cannot be read).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `values` as one record batch (format v2, uncompressed, no producer id), offsets `0..len`
/// relative to the batch (the broker assigns the base offset).
fn encode_batch(values: &[String]) -> Result<Bytes, KafkaError> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence` changes: counting the
            // sequence along with the offset keeps every record in one batch, whose base sequence
            // stays -1 (no idempotent producer).
            sequence: i as i32 - 1,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| KafkaError::Broker(format!("cannot encode a record batch: {e}")))?;
    Ok(batch.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn a_batch_of_ten_values_encodes_as_one_record_batch() {
        let values: Vec<String> = (0..10).map(|i| format!("message {i}")).collect();
        let mut bytes = encode_batch(&values).unwrap();
        let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
        assert_eq!(info.len(), 1, "{info:?}");
        assert_eq!(info[0].record_count, 10);
        assert_eq!(
            (info[0].min_offset, info[0].base_sequence, info[0].producer_id),
            (0, -1, -1)
        );
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        let decoded: Vec<String> = set
            .records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(decoded, values);
        assert_eq!(set.records[9].offset, 9);
    }
}
