//! The `kafka` trigger: consumer-group lag (KEDA's parameters and defaults).

pub mod lag;
pub mod plan;
pub mod sasl;
pub mod scaler;
pub mod tls;
pub mod wire;

mod cluster;

pub use scaler::{KafkaClusters, KafkaOptions, KafkaSample, KafkaScaler, KafkaStats, TriggerSpec};

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
    // Accepted for KEDA compatibility: ebb always fetches metadata of the watched topics only.
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
        Rule::Requires("ensureEvenDistributionOfPartitions", "topic"),
        Rule::Requires("partitionLimitation", "topic"),
        Rule::Together(&["cert", "key"]),
        Rule::Requires("keyPassword", "key"),
    ],
    check,
    metric_detail,
    thresholds,
    warnings: crate::params::no_warnings,
};

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
    if let Some(limitation) = p.str("partitionLimitation")
        && let Err(problem) = parse_partition_limitation(limitation)
    {
        errors.push(ParamError::new("partitionLimitation", problem));
    }
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("lagThreshold").unwrap_or(1.0),
        activation: p.float("activationLagThreshold").unwrap_or(0.0),
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    match p.str("topic") {
        Some(topic) => format!("kafka-{topic}"),
        None => format!("kafka-{}-topics", p.str("consumerGroup").unwrap_or("group")),
    }
}

/// Parses `partitionLimitation` ("1,2,5-9") into a sorted list of partition ids.
pub fn parse_partition_limitation(text: &str) -> Result<Vec<i32>, String> {
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("{part:?} is not a partition id or a range like 5-9");
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: i32 = lo.trim().parse().map_err(|_| bad())?;
                let hi: i32 = hi.trim().parse().map_err(|_| bad())?;
                if lo < 0 || hi < lo || hi - lo > 100_000 {
                    return Err(format!("{part:?} is not a valid range"));
                }
                ids.extend(lo..=hi);
            }
            None => {
                let id: i32 = part.parse().map_err(|_| bad())?;
                if id < 0 {
                    return Err(bad());
                }
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Err("must list at least one partition".to_string());
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
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
        &trigger.params,
        trigger.thresholds,
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
