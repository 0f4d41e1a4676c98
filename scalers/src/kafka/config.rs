//! The kafka trigger's typed configuration: [`KafkaConfig`], converted once from the parsed
//! parameters (`TryFrom<&ParsedParams>`), every problem reported at once. Nothing else in the
//! folder reads a parameter by name; the defaults are the declaration's ([`super::PARAMS`]).

use std::fmt;

use super::lag::{CapPolicy, LagPolicy, OffsetResetPolicy};
use super::plan::Watch;
use super::sasl::Mechanism;
use super::wire::SaslCredentials;
use crate::params::{ConfigErrors, ParsedParams};

/// One kafka trigger's settings: the cluster it reads and what it reads there.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// The cluster (bootstrap servers, TLS, SASL): triggers with equal ones share a client.
    pub cluster: ClusterConfig,
    /// Group, topic, partitions, thresholds and lag policies.
    pub trigger: TriggerSpec,
}

/// What makes two triggers share a cluster client. `Debug` shows no key and no password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `bootstrapServers`, each `host:port`; sorted, without duplicates.
    pub bootstrap: Vec<String>,
    /// `tls: enable` settings; `None` for `tls: disable`.
    pub tls: Option<TlsSettings>,
    /// `sasl` mechanism with `username` and `password`; `None` for `sasl: none`.
    pub sasl: Option<SaslCredentials>,
}

/// `tls: enable` settings (PEM text from the TriggerAuthentication). `Debug` shows which parts
/// are given, never their text.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ca`: the certificates to trust (PEM); `None` trusts the system's roots.
    pub ca: Option<String>,
    /// `cert`: the client certificate chain (PEM).
    pub cert: Option<String>,
    /// `key`: the client key (PEM). Secret.
    pub key: Option<String>,
    /// `keyPassword`: the client key's password. Secret.
    pub key_password: Option<String>,
    /// `unsafeSsl`: accept any server certificate.
    pub unsafe_ssl: bool,
}

/// One kafka trigger's settings besides its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// Group, topic and partitions read.
    pub watch: Watch,
    /// `lagThreshold`.
    pub lag_threshold: i64,
    /// `activationLagThreshold`.
    pub activation_lag_threshold: i64,
    /// How partition lag is read.
    pub lag_policy: LagPolicy,
    /// How the replica count is capped.
    pub cap_policy: CapPolicy,
}

/// Every problem found while converting a trigger's parameters into a [`KafkaConfig`].
pub type KafkaConfigError = ConfigErrors<ConfigProblem>;

/// One problem with one parameter. Never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The parameter has no value (not given, or empty).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// A `bootstrapServers` entry without a valid port.
    #[error("bootstrapServers entry {0:?} is not host:port")]
    NotHostPort(String),
    /// `partitionLimitation` does not parse.
    #[error("partitionLimitation: {0}")]
    PartitionLimitation(#[source] PartitionLimitationError),
    /// `lagThreshold` is zero or negative.
    #[error("lagThreshold must be greater than 0")]
    LagThreshold,
    /// An enum parameter holds a value the declaration does not list.
    #[error("{param} has the unexpected value {value:?}")]
    Unexpected {
        /// The parameter.
        param: &'static str,
        /// Its value (enum parameters are never secret).
        value: String,
    },
    /// A SASL mechanism ebb does not implement.
    #[error("sasl {0} is not supported yet (ebb supports none, plaintext, scram_sha256, scram_sha512)")]
    UnsupportedSasl(String),
    /// `sasl` is set but a credential is missing.
    #[error("sasl needs {0} (in the TriggerAuthentication)")]
    SaslNeeds(&'static str),
}

impl ConfigProblem {
    /// The parameter the problem is about.
    pub fn param(&self) -> &'static str {
        match self {
            Self::Missing(p) | Self::SaslNeeds(p) => p,
            Self::Unexpected { param, .. } => param,
            Self::NotHostPort(_) => "bootstrapServers",
            Self::PartitionLimitation(_) => "partitionLimitation",
            Self::LagThreshold => "lagThreshold",
            Self::UnsupportedSasl(_) => "sasl",
        }
    }
}

/// Why a `partitionLimitation` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionLimitationError {
    /// An entry is neither a partition id nor a range.
    #[error("{0:?} is not a partition id or a range like 5-9")]
    NotAnId(String),
    /// A range is reversed, negative or too long.
    #[error("{0:?} is not a valid range")]
    BadRange(String),
    /// Nothing listed.
    #[error("must list at least one partition")]
    Empty,
}

/// Parses `partitionLimitation` ("1,2,5-9") into a sorted list of partition ids.
pub fn parse_partition_limitation(text: &str) -> Result<Vec<i32>, PartitionLimitationError> {
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || PartitionLimitationError::NotAnId(part.to_string());
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: i32 = lo.trim().parse().map_err(|_| bad())?;
                let hi: i32 = hi.trim().parse().map_err(|_| bad())?;
                if lo < 0 || hi < lo || hi - lo > 100_000 {
                    return Err(PartitionLimitationError::BadRange(part.to_string()));
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
        return Err(PartitionLimitationError::Empty);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Why a `version` is not a Kafka version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kafka version (like 2.8.1, or 0.10.2.0 before 1.0)")]
pub struct KafkaVersionError(pub String);

/// Checks `version` the way KEDA's client library reads it: `X.Y.Z` from 1.0 on, `0.X.Y.Z`
/// before, every part decimal digits. Returns the numeric parts. ebb negotiates versions with
/// the broker (ApiVersions), so the value is only checked, never used.
pub fn parse_kafka_version(text: &str) -> Result<Vec<u32>, KafkaVersionError> {
    let bad = || KafkaVersionError(text.to_string());
    let parts: Vec<&str> = text.split('.').collect();
    let expected = if text.starts_with('0') { 4 } else { 3 };
    if text.len() < 5 || parts.len() != expected {
        return Err(bad());
    }
    parts
        .iter()
        .map(|p| match !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            true => p.parse::<u32>().map_err(|_| bad()),
            false => Err(bad()),
        })
        .collect()
}

/// Reads parameters by name, noting each missing one: the only place the folder does so.
struct Reader<'a> {
    params: &'a ParsedParams,
    problems: Vec<ConfigProblem>,
}

impl<'a> Reader<'a> {
    fn problem(&mut self, problem: ConfigProblem) {
        self.problems.push(problem);
    }

    /// A string that may be absent (empty counts as absent).
    fn optional(&self, name: &'static str) -> Option<&'a str> {
        self.params.str(name).filter(|s| !s.is_empty())
    }

    /// A string that may be absent, as given (empty included).
    fn raw(&self, name: &'static str) -> Option<&'a str> {
        self.params.str(name)
    }

    /// A string every valid trigger has (required, or with a declared default).
    fn string(&mut self, name: &'static str) -> Option<&'a str> {
        let value = self.optional(name);
        if value.is_none() {
            self.problem(ConfigProblem::Missing(name));
        }
        value
    }

    fn int(&mut self, name: &'static str) -> Option<i64> {
        let value = self.params.int(name);
        if value.is_none() {
            self.problem(ConfigProblem::Missing(name));
        }
        value
    }

    fn flag(&mut self, name: &'static str) -> bool {
        let value = self.params.bool(name);
        if value.is_none() {
            self.problem(ConfigProblem::Missing(name));
        }
        value.unwrap_or_default()
    }

    fn list(&mut self, name: &'static str) -> &'a [String] {
        let value = self.params.list(name).filter(|l| !l.is_empty());
        if value.is_none() {
            self.problem(ConfigProblem::Missing(name));
        }
        value.unwrap_or_default()
    }

    fn unexpected(&mut self, param: &'static str, value: &str) {
        self.problem(ConfigProblem::Unexpected {
            param,
            value: value.to_string(),
        });
    }

    fn cluster(&mut self) -> ClusterConfig {
        let mut bootstrap = self.list("bootstrapServers").to_vec();
        for server in &bootstrap {
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                self.problem(ConfigProblem::NotHostPort(server.clone()));
            }
        }
        bootstrap.sort();
        bootstrap.dedup();
        let tls = match self.string("tls") {
            Some("enable") => Some(TlsSettings {
                ca: self.raw("ca").map(str::to_string),
                cert: self.raw("cert").map(str::to_string),
                key: self.raw("key").map(str::to_string),
                key_password: self.raw("keyPassword").map(str::to_string),
                unsafe_ssl: self.flag("unsafeSsl"),
            }),
            Some("disable") | None => None,
            Some(other) => {
                self.unexpected("tls", other);
                None
            }
        };
        let mechanism = match self.string("sasl") {
            Some("none") | None => None,
            Some("plaintext") => Some(Mechanism::Plain),
            Some("scram_sha256") => Some(Mechanism::ScramSha256),
            Some("scram_sha512") => Some(Mechanism::ScramSha512),
            Some(other) => {
                self.problem(ConfigProblem::UnsupportedSasl(other.to_string()));
                None
            }
        };
        let sasl = mechanism.and_then(|mechanism| {
            let mut credential = |name: &'static str| {
                let value = self.raw(name);
                if value.is_none() {
                    self.problem(ConfigProblem::SaslNeeds(name));
                }
                value
            };
            let username = credential("username");
            let password = credential("password");
            Some(SaslCredentials {
                mechanism,
                username: username?.to_string(),
                password: password?.to_string(),
            })
        });
        ClusterConfig { bootstrap, tls, sasl }
    }

    fn trigger(&mut self) -> TriggerSpec {
        let group = self.string("consumerGroup").unwrap_or_default().to_string();
        let topic = self.optional("topic").map(str::to_string);
        // Without a topic partitionLimitation is ignored (as in KEDA; the declaration warns).
        let partitions = match self.raw("partitionLimitation") {
            Some(text) if topic.is_some() => match parse_partition_limitation(text) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    self.problem(ConfigProblem::PartitionLimitation(e));
                    None
                }
            },
            _ => None,
        };
        let lag_threshold = self.int("lagThreshold");
        if lag_threshold.is_some_and(|t| t <= 0) {
            self.problem(ConfigProblem::LagThreshold);
        }
        let lag_threshold = lag_threshold.unwrap_or_default();
        let activation_lag_threshold = self.int("activationLagThreshold").unwrap_or_default();
        let offset_reset = match self.string("offsetResetPolicy") {
            Some("earliest") => OffsetResetPolicy::Earliest,
            Some("latest") | None => OffsetResetPolicy::Latest,
            Some(other) => {
                self.unexpected("offsetResetPolicy", other);
                OffsetResetPolicy::Latest
            }
        };
        TriggerSpec {
            watch: Watch {
                group,
                topic,
                partitions,
            },
            lag_threshold,
            activation_lag_threshold,
            lag_policy: LagPolicy {
                offset_reset,
                scale_to_zero_on_invalid_offset: self.flag("scaleToZeroOnInvalidOffset"),
                exclude_persistent_lag: self.flag("excludePersistentLag"),
            },
            cap_policy: CapPolicy {
                allow_idle_consumers: self.flag("allowIdleConsumers"),
                limit_to_partitions_with_lag: self.flag("limitToPartitionsWithLag"),
                ensure_even_distribution: self.flag("ensureEvenDistributionOfPartitions"),
            },
        }
    }
}

impl TryFrom<&ParsedParams> for KafkaConfig {
    type Error = KafkaConfigError;

    /// Converts the parsed parameters (defaults already applied by the parser), reporting every
    /// problem at once.
    fn try_from(params: &ParsedParams) -> Result<Self, Self::Error> {
        let mut reader = Reader {
            params,
            problems: Vec::new(),
        };
        let cluster = reader.cluster();
        let trigger = reader.trigger();
        if reader.problems.is_empty() {
            Ok(KafkaConfig { cluster, trigger })
        } else {
            Err(KafkaConfigError {
                trigger_type: "kafka",
                problems: reader.problems,
            })
        }
    }
}

impl ClusterConfig {
    /// SHA-256 over every field, length-prefixed: the key of the cluster client pool (never
    /// shown).
    pub(crate) fn key(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        for b in &self.bootstrap {
            field(b.as_bytes());
        }
        field(b"|tls");
        if let Some(t) = &self.tls {
            for part in [&t.ca, &t.cert, &t.key, &t.key_password] {
                match part {
                    Some(v) => field(v.as_bytes()),
                    None => field(b"\0none"),
                }
            }
            field(if t.unsafe_ssl { b"unsafe" } else { b"safe" });
        }
        field(b"|sasl");
        if let Some(s) = &self.sasl {
            field(s.mechanism.name().as_bytes());
            field(s.username.as_bytes());
            field(s.password.as_bytes());
        }
        let digest = ctx.finish();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("bootstrap", &self.bootstrap)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = |part: &Option<String>| if part.is_some() { "<given>" } else { "<none>" };
        let secret = |part: &Option<String>| if part.is_some() { "<redacted>" } else { "<none>" };
        f.debug_struct("TlsSettings")
            .field("ca", &given(&self.ca))
            .field("cert", &given(&self.cert))
            .field("key", &secret(&self.key))
            .field("key_password", &secret(&self.key_password))
            .field("unsafe_ssl", &self.unsafe_ssl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScalerError;
    use crate::params::tests_support::parse_with;

    fn params(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ParsedParams {
        parse_with(&crate::kafka::DECL, meta, auth).unwrap()
    }

    const BASE: [(&str, &str); 3] = [
        ("bootstrapServers", "b:9092, a:9092, b:9092"),
        ("consumerGroup", "g"),
        ("topic", "orders"),
    ];

    #[test]
    fn spec_from_params() {
        let mut meta = BASE.to_vec();
        meta.extend([
            ("partitionLimitation", "3,1-2"),
            ("lagThreshold", "7"),
            ("activationLagThreshold", "4"),
            ("offsetResetPolicy", "earliest"),
            ("excludePersistentLag", "true"),
            ("limitToPartitionsWithLag", "true"),
        ]);
        let config = KafkaConfig::try_from(&params(&meta, &[])).unwrap();
        let spec = &config.trigger;
        assert_eq!(spec.watch.partitions, Some(vec![1, 2, 3]));
        assert_eq!((spec.lag_threshold, spec.activation_lag_threshold), (7, 4));
        assert_eq!(spec.lag_policy.offset_reset, OffsetResetPolicy::Earliest);
        assert!(spec.lag_policy.exclude_persistent_lag && spec.cap_policy.limit_to_partitions_with_lag);
        assert_eq!(
            config.cluster.bootstrap,
            ["a:9092", "b:9092"],
            "sorted, without duplicates"
        );
    }

    #[test]
    fn declared_defaults_apply() {
        let config = KafkaConfig::try_from(&params(&BASE[..2], &[])).unwrap();
        let spec = &config.trigger;
        assert_eq!(spec.watch.group, "g");
        assert_eq!(spec.watch.topic, None);
        assert_eq!(spec.watch.partitions, None);
        assert_eq!((spec.lag_threshold, spec.activation_lag_threshold), (10, 0));
        assert_eq!(
            spec.lag_policy,
            LagPolicy {
                offset_reset: OffsetResetPolicy::Latest,
                scale_to_zero_on_invalid_offset: false,
                exclude_persistent_lag: false,
            }
        );
        assert_eq!(
            spec.cap_policy,
            CapPolicy {
                allow_idle_consumers: false,
                limit_to_partitions_with_lag: false,
                ensure_even_distribution: false,
            }
        );
        assert_eq!((config.cluster.tls, config.cluster.sasl), (None, None));

        let tls = KafkaConfig::try_from(&params(&BASE, &[("tls", "enable"), ("ca", "PEM")]))
            .unwrap()
            .cluster
            .tls
            .unwrap();
        assert_eq!(
            (tls.ca.as_deref(), tls.cert, tls.unsafe_ssl),
            (Some("PEM"), None, false)
        );
    }

    #[test]
    fn bad_configs_are_invalid_config() {
        let mut meta = BASE.to_vec();
        meta[0] = ("bootstrapServers", "no-port");
        let e = ScalerError::from(KafkaConfig::try_from(&params(&meta, &[])).unwrap_err());
        assert!(
            matches!(&e, ScalerError::InvalidConfig(m) if m.contains("no-port")),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        // Values that come from an unresolved authenticationRef or env pass the declaration's
        // checks but cannot build a client: the conversion names every one of them.
        let meta: std::collections::BTreeMap<String, String> = [
            ("bootstrapServers", "no-port, a:9092, :1"),
            ("consumerGroupFromEnv", "GROUP"),
            ("sasl", "plaintext"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = crate::params::parse(
            &crate::kafka::DECL,
            &crate::params::TriggerInput {
                metadata: &meta,
                auth_params: None,
                resolved_env: None,
            },
        )
        .unwrap();
        let e = KafkaConfig::try_from(&p).unwrap_err();
        assert_eq!(
            e.problems,
            [
                ConfigProblem::NotHostPort("no-port".into()),
                ConfigProblem::NotHostPort(":1".into()),
                ConfigProblem::Missing("tls"),
                ConfigProblem::SaslNeeds("username"),
                ConfigProblem::SaslNeeds("password"),
                ConfigProblem::Missing("consumerGroup"),
            ]
        );
        let params: Vec<&str> = e.problems.iter().map(ConfigProblem::param).collect();
        assert_eq!(
            params,
            [
                "bootstrapServers",
                "bootstrapServers",
                "tls",
                "username",
                "password",
                "consumerGroup"
            ]
        );
        let text = ScalerError::from(e).to_string();
        assert!(
            text.contains("kafka: ") && text.contains("\"no-port\" is not host:port; "),
            "{text}"
        );
    }

    #[test]
    fn secrets_are_absent_from_debug_and_errors() {
        let auth = [
            ("sasl", "scram_sha256"),
            ("username", "svc"),
            ("password", "pw-s3cret"),
            ("tls", "enable"),
            ("cert", "CERT"),
            ("key", "KEY-s3cret"),
        ];
        let config = KafkaConfig::try_from(&params(&BASE, &auth)).unwrap();
        assert_eq!(
            config.cluster.tls.as_ref().and_then(|t| t.key.as_deref()),
            Some("KEY-s3cret")
        );
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("svc") && text.contains("a:9092"), "{text}");
    }

    #[test]
    fn partition_limitation_errors_keep_their_kind() {
        assert_eq!(
            parse_partition_limitation("7-5"),
            Err(PartitionLimitationError::BadRange("7-5".into()))
        );
        assert_eq!(
            parse_partition_limitation("1,x"),
            Err(PartitionLimitationError::NotAnId("x".into()))
        );
        assert_eq!(
            parse_partition_limitation(""),
            Err(PartitionLimitationError::Empty)
        );
        let err = ConfigProblem::PartitionLimitation(PartitionLimitationError::NotAnId("x".into()));
        assert_eq!(err.param(), "partitionLimitation");
        assert!(std::error::Error::source(&err).is_some());
    }

    fn rejected(meta: &[(&str, &str)]) -> Vec<crate::params::ParamError> {
        parse_with(&crate::kafka::DECL, meta, &[]).expect_err("KEDA rejects this")
    }

    #[test]
    fn partition_limitation_without_topic_is_accepted_ignored_and_warned_about() {
        let mut meta = BASE[..2].to_vec();
        meta.push(("partitionLimitation", "1,2"));
        let parsed = params(&meta, &[]);
        let warnings = (crate::kafka::DECL.warnings)(&parsed);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("partitionLimitation: ignored without topic"));
        let config = KafkaConfig::try_from(&parsed).unwrap();
        assert_eq!(config.trigger.watch.partitions, None);
        // With a topic it counts and nothing is said.
        meta.push(("topic", "orders"));
        let parsed = params(&meta, &[]);
        assert!((crate::kafka::DECL.warnings)(&parsed).is_empty());
        // A malformed one is rejected with or without a topic, as in KEDA.
        let errors = rejected(&[BASE[0], BASE[1], ("partitionLimitation", "x")]);
        assert_eq!(errors[0].param, "partitionLimitation");
    }

    #[test]
    fn limit_to_partitions_with_lag_excludes_even_distribution() {
        let mut meta = BASE.to_vec();
        meta.extend([
            ("limitToPartitionsWithLag", "true"),
            ("ensureEvenDistributionOfPartitions", "true"),
        ]);
        let errors = rejected(&meta);
        assert_eq!(
            errors[0].param,
            "limitToPartitionsWithLag, ensureEvenDistributionOfPartitions"
        );
        assert!(errors[0].problem.contains("cannot be set together"));
        // Either alone is fine.
        meta.pop();
        params(&meta, &[]);
    }

    #[test]
    fn full_metadata_false_needs_a_topic() {
        let errors = rejected(&[BASE[0], BASE[1], ("fullMetadata", "false")]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].param, "fullMetadata");
        assert!(errors[0].problem.contains("topic"), "{}", errors[0].problem);
        let mut meta = BASE.to_vec();
        meta.push(("fullMetadata", "false"));
        params(&meta, &[]);
        params(&[BASE[0], BASE[1], ("fullMetadata", "true")], &[]);
    }

    #[test]
    fn version_must_be_a_kafka_version() {
        for good in ["1.0.0", "2.8.1", "3.7.0", "0.10.2.0", "0.8.2.2"] {
            assert!(parse_kafka_version(good).is_ok(), "{good}");
            let mut meta = BASE.to_vec();
            meta.push(("version", good));
            params(&meta, &[]);
        }
        for bad in [
            "1.2.3.4",
            "0.10.2",
            "2.8",
            "2.8.x",
            "v2.8.1",
            "2..8",
            "",
            "1.0.0 ",
            "2.8.1-rc1",
        ] {
            assert_eq!(
                parse_kafka_version(bad),
                Err(KafkaVersionError(bad.to_string())),
                "{bad}"
            );
        }
        let mut meta = BASE.to_vec();
        meta.push(("version", "1.2.3.4"));
        let errors = rejected(&meta);
        assert_eq!(errors[0].param, "version");
        assert!(errors[0].problem.contains("\"1.2.3.4\" is not a Kafka version"));
    }
}
