//! Writes the `kafka_response` seed corpus: realistic responses of every type ebb reads, at every
//! version, encoded with `kafka-protocol`'s own encoders in the target's input format (type byte,
//! version byte, response header, body). Run: `cargo run -p ebb-fuzz-harness --bin kafka-seeds --
//! fuzz/seeds/kafka_response`.

use bytes::{Bytes, BytesMut};
use ebb_fuzz_harness::kafka_response::RESPONSES;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, FindCoordinatorResponse, GroupId, ListOffsetsResponse, MetadataResponse,
    OffsetFetchResponse, ResponseHeader, SaslAuthenticateResponse, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Message, StrBytes};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

/// One seed: type byte, version byte (offset from the type's lowest version), header, body.
fn seed<M: Encodable + HeaderVersion + Message>(index: u8, version: i16, body: &M) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    let correlation = 7 + i32::from(version);
    ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut buf, M::header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    let offset = u8::try_from(version - M::VERSIONS.min).ok()?;
    let mut out = vec![index, offset];
    out.extend_from_slice(&buf);
    Some(out)
}

fn api_versions(v: i16) -> ApiVersionsResponse {
    let keys = [
        (0, 0, 11),
        (1, 0, 17),
        (2, 1, 9),
        (3, 0, 13),
        (8, 2, 9),
        (9, 1, 9),
        (10, 0, 6),
        (17, 0, 1),
        (18, 0, 4),
        (36, 0, 2),
    ];
    ApiVersionsResponse::default()
        .with_api_keys(
            keys.iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
        .with_throttle_time_ms(if v >= 1 { 5 } else { 0 })
}

fn metadata(v: i16) -> MetadataResponse {
    let broker = |id: i32| {
        let b = MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(s(&format!("kafka-{id}.kafka.svc")))
            .with_port(9092);
        if v >= 1 {
            b.with_rack(Some(s("eu-west-1a")))
        } else {
            b
        }
    };
    let partition = |i: i32| {
        let replicas = vec![BrokerId(i % 3), BrokerId((i + 1) % 3), BrokerId((i + 2) % 3)];
        let p = MetadataResponsePartition::default()
            .with_partition_index(i)
            .with_leader_id(BrokerId(i % 3))
            .with_replica_nodes(replicas.clone())
            .with_isr_nodes(replicas);
        if v >= 7 { p.with_leader_epoch(3) } else { p }
    };
    let topic_of = |name: &str, n: i32, error: i16| {
        let t = MetadataResponseTopic::default()
            .with_name(Some(topic(name)))
            .with_error_code(error)
            .with_partitions(if error == 0 {
                (0..n).map(partition).collect()
            } else {
                Vec::new()
            });
        if v >= 8 {
            t.with_topic_authorized_operations(-2147483648)
        } else {
            t
        }
    };
    let mut m = MetadataResponse::default()
        .with_brokers((0..3).map(broker).collect())
        .with_topics(vec![
            topic_of("orders", 3, 0),
            topic_of("payments", 2, 0),
            topic_of("missing", 0, 3),
        ]);
    if v >= 1 {
        m = m.with_controller_id(BrokerId(1));
    }
    if v >= 2 {
        m = m.with_cluster_id(Some(s("kRxdvAfdQCmQQmJR2zyCNA")));
    }
    if v >= 3 {
        m = m.with_throttle_time_ms(0);
    }
    m
}

fn list_offsets(v: i16) -> ListOffsetsResponse {
    let part = |i: i32, offset: i64| {
        let p = ListOffsetsPartitionResponse::default()
            .with_partition_index(i)
            .with_timestamp(-1)
            .with_offset(offset);
        if v >= 4 { p.with_leader_epoch(3) } else { p }
    };
    ListOffsetsResponse::default().with_topics(vec![
        ListOffsetsTopicResponse::default()
            .with_name(topic("orders"))
            .with_partitions(vec![part(0, 1200), part(1, 980), part(2, 0)]),
        ListOffsetsTopicResponse::default()
            .with_name(topic("payments"))
            .with_partitions(vec![
                part(0, 77),
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(1)
                    .with_error_code(6),
            ]),
    ])
}

fn offset_fetch(v: i16) -> OffsetFetchResponse {
    if v >= 8 {
        let part = |i: i32, offset: i64| {
            OffsetFetchResponsePartitions::default()
                .with_partition_index(i)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(3)
                .with_metadata(Some(s("")))
        };
        let topics = vec![
            OffsetFetchResponseTopics::default()
                .with_name(topic("orders"))
                .with_partitions(vec![part(0, 1100), part(1, 980), part(2, -1)]),
        ];
        return OffsetFetchResponse::default().with_groups(vec![
            OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(s("orders")))
                .with_topics(topics),
            OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(s("idle")))
                .with_error_code(16),
        ]);
    }
    let part = |i: i32, offset: i64| {
        let p = OffsetFetchResponsePartition::default()
            .with_partition_index(i)
            .with_committed_offset(offset)
            .with_metadata(Some(s("")));
        if v >= 5 {
            p.with_committed_leader_epoch(3)
        } else {
            p
        }
    };
    let r = OffsetFetchResponse::default().with_topics(vec![
        OffsetFetchResponseTopic::default()
            .with_name(topic("orders"))
            .with_partitions(vec![part(0, 1100), part(1, 980), part(2, -1)]),
    ]);
    if v >= 3 { r.with_throttle_time_ms(0) } else { r }
}

fn find_coordinator(v: i16) -> FindCoordinatorResponse {
    if v >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(vec![
            Coordinator::default()
                .with_key(s("orders"))
                .with_node_id(BrokerId(2))
                .with_host(s("kafka-2.kafka.svc"))
                .with_port(9092),
            Coordinator::default()
                .with_key(s("gone"))
                .with_node_id(BrokerId(-1))
                .with_error_code(15)
                .with_error_message(Some(s("The coordinator is not available."))),
        ]);
    }
    let r = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(2))
        .with_host(s("kafka-2.kafka.svc"))
        .with_port(9092);
    if v >= 1 {
        r.with_throttle_time_ms(0).with_error_message(None)
    } else {
        r
    }
}

fn main() -> std::io::Result<()> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds/kafka_response".into()),
    );
    std::fs::create_dir_all(&out)?;
    let mut seeds: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for v in 0..=4 {
        seeds.push((format!("api-versions-v{v}"), seed(0, v, &api_versions(v))));
    }
    seeds.push((
        "api-versions-unsupported-v0".into(),
        seed(0, 0, &ApiVersionsResponse::default().with_error_code(35)),
    ));
    for v in 0..=1 {
        let mechs = vec![s("PLAIN"), s("SCRAM-SHA-256"), s("SCRAM-SHA-512")];
        seeds.push((
            format!("sasl-handshake-v{v}"),
            seed(
                1,
                v,
                &SaslHandshakeResponse::default().with_mechanisms(mechs.clone()),
            ),
        ));
        seeds.push((
            format!("sasl-handshake-refused-v{v}"),
            seed(
                1,
                v,
                &SaslHandshakeResponse::default()
                    .with_error_code(33)
                    .with_mechanisms(mechs),
            ),
        ));
    }
    for v in 0..=2 {
        let first =
            Bytes::from_static(b"r=fyko+d2lbbFgONRv9qkxdawLsrvpart,s=ZmFrZS1icm9rZXItc2FsdA==,i=4096");
        seeds.push((
            format!("sasl-authenticate-v{v}"),
            seed(2, v, &SaslAuthenticateResponse::default().with_auth_bytes(first)),
        ));
        seeds.push((
            format!("sasl-authenticate-failed-v{v}"),
            seed(
                2,
                v,
                &SaslAuthenticateResponse::default()
                    .with_error_code(58)
                    .with_error_message(Some(s("Authentication failed: Invalid username or password"))),
            ),
        ));
    }
    for v in 0..=6 {
        seeds.push((format!("find-coordinator-v{v}"), seed(3, v, &find_coordinator(v))));
    }
    for v in 0..=13 {
        seeds.push((format!("metadata-v{v}"), seed(4, v, &metadata(v))));
    }
    for v in 1..=10 {
        seeds.push((format!("list-offsets-v{v}"), seed(5, v, &list_offsets(v))));
    }
    for v in 1..=10 {
        seeds.push((format!("offset-fetch-v{v}"), seed(6, v, &offset_fetch(v))));
    }
    let mut written = 0;
    for (name, bytes) in seeds {
        match bytes {
            Some(bytes) => {
                std::fs::write(out.join(format!("{name}.bin")), bytes)?;
                written += 1;
            }
            None => eprintln!("{name}: does not encode at that version, skipped"),
        }
    }
    eprintln!(
        "{written} seeds for {} response types in {}",
        RESPONSES.len(),
        out.display()
    );
    Ok(())
}
