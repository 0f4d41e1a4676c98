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
    AUTH, DeclDocs, META, META_AUTH, META_ENV, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds,
};

/// Every parameter of the kafka trigger.
pub static PARAMS: &[Param] = &[
    Param::list("bootstrapServers")
        .required()
        .from(META_ENV)
        .doc("The brokers to start from, as comma-separated host:port entries."),
    Param::string("consumerGroup")
        .required()
        .from(META_ENV)
        .doc("The consumer group whose lag is measured."),
    Param::string("topic")
        .from(META_ENV)
        .doc("The topic whose lag counts; without it, every topic the group has committed offsets for."),
    Param::string("partitionLimitation").doc(
        "Only these partitions of `topic` count: ids and ranges such as `1,2,5-9` (ignored without `topic`).",
    ),
    Param::int("lagThreshold")
        .default("10")
        .above(0.0)
        .doc("Target lag per replica: the trigger asks for ceil(total lag / lagThreshold) replicas, at most one per partition unless `allowIdleConsumers`."),
    Param::int("activationLagThreshold")
        .default("0")
        .min(0.0)
        .doc("The trigger is active (scales up from zero) when the total lag, persistent lag included, is above this."),
    Param::one_of("offsetResetPolicy", &["latest", "earliest"])
        .default("latest")
        .doc("How a partition without a committed offset counts: `latest` as a lag of 1, `earliest` as its whole log (the log-end offset)."),
    Param::bool("allowIdleConsumers")
        .default("false")
        .doc("Lift the cap of one replica per partition, so replicas may outnumber partitions."),
    Param::bool("excludePersistentLag")
        .default("false")
        .doc("A partition whose committed offset has not moved since the previous poll counts 0 for the metric (it still counts for activation)."),
    Param::bool("scaleToZeroOnInvalidOffset")
        .default("false")
        .doc("A partition without a committed offset counts 0, whatever `offsetResetPolicy` says."),
    Param::bool("limitToPartitionsWithLag")
        .default("false")
        .doc("Cap the replicas at the number of partitions that have lag instead of all partitions."),
    Param::bool("ensureEvenDistributionOfPartitions")
        .default("false")
        .doc("Round the replica count up to a divisor of the partition count, so every replica gets as many partitions."),
    // Accepted for KEDA compatibility: ebb always fetches metadata of the watched topics only;
    // `false` still needs a topic, as in KEDA.
    Param::bool("fullMetadata")
        .default("true")
        .doc("Accepted for KEDA compatibility: ebb always fetches the metadata of the watched topics only."),
    Param::string("version")
        .doc("Accepted for KEDA compatibility and checked (`X.Y.Z`, or `0.X.Y.Z` before 1.0); ebb negotiates protocol versions with the brokers."),
    Param::one_of("tls", &["enable", "disable"])
        .default("disable")
        .from(META_AUTH)
        .doc("`enable` connects to the brokers over TLS."),
    Param::bool("unsafeSsl")
        .default("false")
        .from(META)
        .doc("With TLS, accept any broker certificate without verifying it."),
    Param::string("ca")
        .from(AUTH)
        .doc("With TLS, the PEM certificates to trust instead of the system's roots."),
    Param::string("cert")
        .from(AUTH)
        .doc("With TLS, the client certificate chain (PEM), given with `key`."),
    Param::string("key")
        .from(AUTH)
        .secret()
        .doc("With TLS, the client certificate's private key (PEM, unencrypted)."),
    Param::string("keyPassword")
        .from(AUTH)
        .secret()
        .doc("The password of an encrypted `key`: not supported yet, a trigger that sets it fails."),
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
    .from(META_AUTH)
    .doc("SASL authentication: `plaintext` (PLAIN), `scram_sha256` or `scram_sha512` with `username` and `password`; `oauthbearer` and `gssapi` are not supported yet."),
    Param::string("username").from(AUTH).doc("The SASL user name."),
    Param::string("password").from(AUTH).secret().doc("The SASL password."),
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
    docs: DeclDocs {
        summary: "Scales on a Kafka consumer group's lag: how far its committed offsets trail the end of the log.",
        checks: &[
            "`sasl: plaintext`, `scram_sha256` and `scram_sha512` need `username` and `password` (from the TriggerAuthentication).",
            "`sasl: oauthbearer` and `gssapi` are refused: not supported yet.",
            "`partitionLimitation` must list partition ids or ranges such as `1,2,5-9`, with or without `topic`.",
            "`fullMetadata: false` needs `topic`.",
            "`version`, when given, must read as a Kafka version: `X.Y.Z`, or `0.X.Y.Z` before 1.0.",
        ],
        example_metadata: &[
            (
                "bootstrapServers",
                "kafka-0.kafka.svc:9092,kafka-1.kafka.svc:9092",
            ),
            ("consumerGroup", "orders-workers"),
            ("topic", "orders"),
            ("lagThreshold", "50"),
            ("activationLagThreshold", "5"),
        ],
        example_auth: &[
            ("sasl", "scram_sha512"),
            ("username", "orders-workers"),
            ("password", "from-a-secret"),
        ],
        keda_differences: &[
            "The replica count is capped exactly: ebb computes min(ceil(lag / lagThreshold), partitions) and reports a value the HPA turns into that count, where KEDA's value can ask for one replica more than the partitions (KEDA #4483).",
            "ebb speaks the Kafka protocol itself: one client per cluster reads every group's offsets in one batched round every half second, so the broker load grows with brokers, not ScaledObjects, and a group at zero activates within about a second.",
            "`sasl: oauthbearer` and `gssapi`, encrypted client keys (`keyPassword`), and KEDA's MSK IAM, OAuth and Kerberos parameters (`saslTokenProvider`, `oauthTokenEndpointUri`, `keytab`, ...) are not supported yet.",
            "`fullMetadata` and `version` change nothing: ebb fetches only the watched topics' metadata and negotiates protocol versions with the brokers.",
        ],
    },
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
