//! The `kafka` trigger: consumer-group lag with KEDA's parameters and semantics, at a broker cost
//! that grows with the number of brokers, not with the number of ScaledObjects.
//!
//! # Protocol route
//!
//! librdkafka (the `rdkafka` crate) reads committed offsets through a consumer bound to one group
//! (or the admin `ListConsumerGroupOffsets`, one group per call), so serving many groups means a
//! client, threads and buffers per group: KEDA's 35 GiB case (#7453) had one client per
//! ScaledObject. ebb speaks the protocol itself with the pure-Rust `kafka-protocol` crate over
//! tokio TCP (TLS through tokio-rustls with ring): ApiVersions negotiation, SASL PLAIN and
//! SCRAM-SHA-256/512 ([`sasl`]), one connection per broker, one request at a time per connection
//! with its correlation id checked, and a connection dropped (closed) after any error, reopened on
//! the next use ([`wire`]). DescribeGroups is never used (Tansu answers it wrongly).
//!
//! # One client per cluster, one batched round per tick
//!
//! [`KafkaClusters`] (one per [`crate::ScalerFactory`]) keeps one client per cluster
//! identity: the bootstrap set, TLS settings and SASL credentials, keyed by a SHA-256 of them
//! (never shown). Every trigger naming that cluster registers its watch (group, topic, partitions)
//! when built and unregisters when its scaler is dropped. A round reads, for all of them at once
//! ([`plan`]): Metadata of the watched topics only when the set changes, after an error, or once a
//! minute; FindCoordinator only for groups without a known coordinator; then one ListOffsets per
//! partition-leader broker for the union of watched partitions and one OffsetFetch per group
//! coordinator with every group it coordinates (v8+, else one per group). At 1,000 ScaledObjects
//! over 10 topics × 10 partitions on 3 brokers that is at most 6 requests per round, where KEDA
//! sends 2 + brokers per ScaledObject per poll.
//!
//! # Cold activation within a tick
//!
//! Each cluster client runs one [`crate::common::activity::ActivityWatcher`] task: one round
//! every half second (by default) for the whole cluster, whatever the number of triggers, kept as
//! a snapshot. [`crate::Scaler::sample`] reads the snapshot (making a round only when it is older
//! than two ticks or predates the trigger; the task then skips its own round if that one is less
//! than half a tick old), so the operator's polls add no broker load. After each round the client
//! recomputes every trigger's activity (lag including persistent lag > `activationLagThreshold`)
//! and flips the trigger's [`crate::Scaler::activity_changes`] channel when it changed: the
//! operator's scale loop then polls at once, so a ScaledObject at zero notices its first message
//! about one tick after it is written, at a fleet-wide cost of (leaders + coordinators) requests
//! per tick. The task stops and closes the connections when the cluster has no trigger left;
//! after failed rounds it backs off (up to 5 s). The channel handed out is synchronised with the
//! last sample: a flip that happened after the snapshot the operator last saw still wakes it.
//!
//! # Semantics
//!
//! See [`lag`]: KEDA's per-partition rules, and the replica cap computed explicitly, reported as a
//! value the HPA maps back to exactly the desired count (no replica beyond the partition count).
//!
//! # The folder
//!
//! This file declares the trigger's parameters (KEDA's names and defaults). [`config`] turns the
//! parsed parameters into a typed [`KafkaConfig`] once; [`scaler`] is one trigger, [`pool`] the
//! cluster clients shared by triggers, `cluster` one cluster's client (its watcher, snapshot and
//! rounds). [`plan`] and [`lag`] are pure; [`wire`], [`sasl`] and [`tls`] speak the protocol.

pub mod config;
pub mod frame;
pub mod lag;
pub mod plan;
pub mod pool;
pub mod sasl;
pub mod scaler;
pub mod tls;
pub mod wire;

mod cluster;

pub use config::{
    ClusterConfig, ConfigProblem, KafkaConfig, KafkaConfigError, KafkaVersionError, PartitionLimitationError,
    TlsSettings, TriggerSpec, parse_kafka_version, parse_partition_limitation,
};
pub use pool::{KafkaClusters, KafkaOptions, KafkaStats};
pub use scaler::{KafkaSample, KafkaScaler};

use crate::params::{
    AUTH, META, META_AUTH, META_ENV, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds,
};

/// Every parameter of the kafka trigger.
pub static PARAMS: &[Param] = &[
    Param::list("bootstrapServers").required().from(META_ENV),
    Param::string("consumerGroup").required().from(META_ENV),
    Param::string("topic").from(META_ENV),
    Param::string("partitionLimitation"),
    Param::int("lagThreshold").default("10").above(0.0),
    Param::int("activationLagThreshold").default("0").min(0.0),
    Param::one_of("offsetResetPolicy", &["latest", "earliest"]).default("latest"),
    Param::bool("allowIdleConsumers").default("false"),
    Param::bool("excludePersistentLag").default("false"),
    Param::bool("scaleToZeroOnInvalidOffset").default("false"),
    Param::bool("limitToPartitionsWithLag").default("false"),
    Param::bool("ensureEvenDistributionOfPartitions").default("false"),
    // Accepted for KEDA compatibility: ebb always fetches metadata of the watched topics only;
    // `false` still needs a topic, as in KEDA.
    Param::bool("fullMetadata").default("true"),
    Param::string("version"),
    Param::one_of("tls", &["enable", "disable"])
        .default("disable")
        .from(META_AUTH),
    Param::bool("unsafeSsl").default("false").from(META),
    Param::string("ca").from(AUTH),
    Param::string("cert").from(AUTH),
    Param::string("key").from(AUTH).secret(),
    Param::string("keyPassword").from(AUTH).secret(),
    Param::one_of(
        "sasl",
        &[
            "none",
            "plaintext",
            "scram_sha256",
            "scram_sha512",
            "oauthbearer",
            "gssapi",
        ],
    )
    .default("none")
    .from(META_AUTH),
    Param::string("username").from(AUTH),
    Param::string("password").from(AUTH).secret(),
];

/// The kafka trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "kafka",
    params: PARAMS,
    rules: &[
        Rule::Exclusive(&["allowIdleConsumers", "limitToPartitionsWithLag"]),
        Rule::Requires("limitToPartitionsWithLag", "topic"),
        Rule::Exclusive(&["limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions"]),
        Rule::Requires("ensureEvenDistributionOfPartitions", "topic"),
        Rule::Together(&["cert", "key"]),
        Rule::Requires("keyPassword", "key"),
    ],
    check,
    metric_detail,
    thresholds,
    warnings,
};

/// `partitionLimitation` without `topic` is accepted and ignored, as KEDA does; said so.
fn warnings(p: &ParsedParams) -> Vec<String> {
    match p.is_set("partitionLimitation") && p.get("topic").is_none() {
        true => vec![
            "partitionLimitation: ignored without topic (every partition of the group's topics counts)"
                .to_string(),
        ],
        false => Vec::new(),
    }
}

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    match p.str("sasl") {
        Some("oauthbearer" | "gssapi") => errors.push(ParamError::new(
            "sasl",
            "ebb supports none, plaintext, scram_sha256 and scram_sha512; oauthbearer and gssapi are not supported yet",
        )),
        Some("plaintext" | "scram_sha256" | "scram_sha512") => {
            for needed in ["username", "password"] {
                if p.get(needed).is_none() {
                    errors.push(ParamError::new(needed, "is required when sasl is set (in the TriggerAuthentication)"));
                }
            }
        }
        _ => {}
    }
    // Parsed even without a topic (then ignored): KEDA rejects a malformed one either way.
    if let Some(limitation) = p.str("partitionLimitation")
        && let Err(problem) = parse_partition_limitation(limitation)
    {
        errors.push(ParamError::new("partitionLimitation", problem.to_string()));
    }
    if p.bool("fullMetadata") == Some(false) && p.get("topic").is_none() {
        errors.push(ParamError::new("fullMetadata", "false needs topic to be set"));
    }
    if let Some(version) = p.str("version").filter(|v| !v.is_empty())
        && let Err(problem) = parse_kafka_version(version)
    {
        errors.push(ParamError::new("version", problem.to_string()));
    }
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: declared_number(p, "lagThreshold"),
        activation: declared_number(p, "activationLagThreshold"),
    }
}

/// A number parameter with a declared default: the parser always gives it a value; the
/// declaration's default stands in only for parameters built by hand.
fn declared_number(p: &ParsedParams, name: &str) -> f64 {
    p.float(name)
        .or_else(|| DECL.param(name)?.default?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn metric_detail(p: &ParsedParams) -> String {
    match p.str("topic") {
        Some(topic) => format!("kafka-{topic}"),
        None => format!("kafka-{}-topics", p.str("consumerGroup").unwrap_or("group")),
    }
}

/// Builds a kafka scaler, registered with its cluster in the factory's shared cluster clients
/// (see [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    let clusters = factory.shared(|o| {
        KafkaClusters::new(KafkaOptions {
            request_timeout: o.http_timeout,
            ..Default::default()
        })
    });
    Ok(std::sync::Arc::new(KafkaScaler::new(
        KafkaClusters::clone(&clusters),
        KafkaConfig::try_from(&trigger.params)?,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::{parse_meta, parse_with};

    #[test]
    fn keda_defaults() {
        let p = parse_meta(
            &DECL,
            &[("bootstrapServers", "a:9092, b:9092"), ("consumerGroup", "g")],
        )
        .unwrap();
        assert_eq!(p.list("bootstrapServers").unwrap(), ["a:9092", "b:9092"]);
        assert_eq!(p.int("lagThreshold"), Some(10));
        assert_eq!(p.int("activationLagThreshold"), Some(0));
        assert_eq!(p.str("offsetResetPolicy"), Some("latest"));
        assert_eq!(p.str("sasl"), Some("none"));
        assert_eq!((DECL.metric_detail)(&p), "kafka-g-topics");
    }

    #[test]
    fn table_of_invalid_metadata() {
        let base = [("bootstrapServers", "a:9092"), ("consumerGroup", "g")];
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("lagThreshold", "0")], "lagThreshold"),
            (&[("lagThreshold", "ten")], "lagThreshold"),
            (&[("activationLagThreshold", "-1")], "activationLagThreshold"),
            (&[("offsetResetPolicy", "middle")], "offsetResetPolicy"),
            (
                &[
                    ("allowIdleConsumers", "true"),
                    ("limitToPartitionsWithLag", "true"),
                    ("topic", "t"),
                ],
                "allowIdleConsumers, limitToPartitionsWithLag",
            ),
            (
                &[("limitToPartitionsWithLag", "true")],
                "limitToPartitionsWithLag",
            ),
            (
                &[("topic", "t"), ("partitionLimitation", "1,x")],
                "partitionLimitation",
            ),
            (&[("sasl", "gssapi")], "sasl"),
            (&[("sasl", "plaintext")], "username"),
        ];
        for (extra, param) in cases {
            let mut meta: Vec<(&str, &str)> = base.to_vec();
            meta.extend_from_slice(extra);
            let errors = parse_meta(&DECL, &meta).expect_err(param);
            assert_eq!(errors[0].param, *param, "{extra:?}: {errors:?}");
        }
        let errors = parse_meta(&DECL, &[]).unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn sasl_credentials_come_from_auth_and_stay_hidden() {
        let p = parse_with(
            &DECL,
            &[
                ("bootstrapServers", "a:9092"),
                ("consumerGroup", "g"),
                ("topic", "orders"),
            ],
            &[
                ("sasl", "scram_sha512"),
                ("username", "svc"),
                ("password", "s3cret-pw"),
            ],
        )
        .unwrap();
        assert_eq!(p.str("password"), Some("s3cret-pw"));
        assert!(!p.redacted_json().to_string().contains("s3cret-pw"));
        assert_eq!((DECL.metric_detail)(&p), "kafka-orders");
    }

    #[test]
    fn partition_limitation_ranges() {
        assert_eq!(parse_partition_limitation("1,2,5-7").unwrap(), [1, 2, 5, 6, 7]);
        assert_eq!(parse_partition_limitation(" 3 , 1 ").unwrap(), [1, 3]);
        assert!(parse_partition_limitation("7-5").is_err());
        assert!(parse_partition_limitation("").is_err());
    }
}
