//! The `redis-streams` trigger: a stream's length, its consumer group's pending entries, or the
//! group's lag, chosen as KEDA chooses ([`StreamMode::of`]):
//! - no `consumerGroup`: the stream's length (`XLEN`), target `streamLength`;
//! - `consumerGroup` and a `lagCount` above 0: the group's lag (entries not yet delivered to
//!   it), target `lagCount`;
//! - `consumerGroup` alone: its pending entries (delivered, not acknowledged), target
//!   `pendingEntriesCount`.
//!
//! In every mode the trigger is active when the value is above `activationLagCount`.

use std::sync::Arc;

use super::config::{CONNECTION_CHECKS, CONNECTION_PARAMS, check_connection, check_name, join};
use super::{
    COMMON_DIFFERENCES, CONNECTION_RULES, Query, RedisScaler, RedisServer, RedisTriggerConfig, clients,
};
use crate::params::{DeclDocs, META, Param, ParamError, ParsedParams, ScalerDecl, Thresholds};
use crate::registry::ParsedTrigger;
use crate::{Scaler, ScalerError, ScalerFactory};

/// What a redis-streams trigger measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// The stream's length (`XLEN`).
    Length,
    /// The consumer group's pending entries (`XPENDING`).
    Pending,
    /// The consumer group's lag (`XINFO GROUPS`).
    Lag,
}

impl StreamMode {
    /// The mode the parameters select (KEDA's rule: `consumerGroup` picks pending entries,
    /// unless `lagCount` is above 0, which picks the lag).
    pub fn of(p: &ParsedParams) -> Self {
        match (p.str("consumerGroup"), p.int("lagCount").unwrap_or(0)) {
            (None, _) => StreamMode::Length,
            (Some(_), lag) if lag > 0 => StreamMode::Lag,
            (Some(_), _) => StreamMode::Pending,
        }
    }

    /// The parameter holding this mode's target.
    pub fn target_param(self) -> &'static str {
        match self {
            StreamMode::Length => "streamLength",
            StreamMode::Pending => "pendingEntriesCount",
            StreamMode::Lag => "lagCount",
        }
    }
}

/// The redis-streams trigger's own parameters.
const STREAM_PARAMS: [Param; 6] = [
    Param::string("stream")
        .required()
        .from(META)
        .doc("The stream's key; a missing stream is 0."),
    Param::string("consumerGroup")
        .from(META)
        .doc("The consumer group: with it the trigger measures the group's pending entries, or its lag with `lagCount`; without it, the stream's length."),
    Param::int("pendingEntriesCount")
        .default("5")
        .above(0.0)
        .doc("Target pending entries per replica (with `consumerGroup` and no `lagCount`)."),
    Param::int("streamLength")
        .default("5")
        .above(0.0)
        .doc("Target stream length per replica (without `consumerGroup`)."),
    Param::int("lagCount")
        .min(0.0)
        .doc("Target lag per replica; above 0 (with `consumerGroup`) it selects the lag mode (Redis 7 or later)."),
    Param::int("activationLagCount")
        .default("0")
        .doc("The trigger is active (scales up from zero) when the measured value, in any mode, is above this."),
];

/// Every parameter of the redis-streams trigger.
pub static STREAMS_PARAMS: [Param; 19] = join(STREAM_PARAMS, CONNECTION_PARAMS);

/// The redis-streams trigger's declaration.
pub static STREAMS_DECL: ScalerDecl = ScalerDecl {
    trigger_type: "redis-streams",
    params: &STREAMS_PARAMS,
    rules: &CONNECTION_RULES,
    check,
    metric_detail: |p| format!("redis-streams-{}", p.str("stream").unwrap_or("stream")),
    thresholds,
    warnings,
    docs: DeclDocs {
        summary: "Scales on a Redis stream: its length, a consumer group's pending entries, or the group's lag.",
        checks: &[
            "Without `consumerGroup` the value is the stream's length (target `streamLength`); with it, the group's pending entries (target `pendingEntriesCount`), or its lag when `lagCount` is above 0 (target `lagCount`).",
            CONNECTION_CHECKS[0],
            CONNECTION_CHECKS[1],
            CONNECTION_CHECKS[2],
            CONNECTION_CHECKS[3],
        ],
        example_metadata: &[
            ("address", "redis.default.svc:6379"),
            ("stream", "orders"),
            ("consumerGroup", "workers"),
            ("lagCount", "10"),
        ],
        example_auth: &[("username", "ebb"), ("password", "from-a-secret")],
        keda_differences: &STREAMS_DIFFERENCES,
    },
};

/// Where redis-streams differs from KEDA: the common differences, then its own.
const STREAMS_DIFFERENCES: [&str; 9] = [
    COMMON_DIFFERENCES[0],
    COMMON_DIFFERENCES[1],
    COMMON_DIFFERENCES[2],
    COMMON_DIFFERENCES[3],
    COMMON_DIFFERENCES[4],
    COMMON_DIFFERENCES[5],
    "Pending entries of a stream that does not exist yet are 0 (KEDA fails with NOGROUP); a missing consumer group on an existing stream is still an error.",
    "When Redis cannot tell a group's lag (entries deleted past its position), the stream's length is used as an upper bound; KEDA reads it as 0 and may scale to zero with a backlog.",
    "Redis 7 is detected from `XINFO GROUPS` itself (a `lag` field) instead of an extra `INFO` call per poll.",
];

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = check_connection(p);
    check_name(p, "stream", &mut errors);
    check_name(p, "consumerGroup", &mut errors);
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float(StreamMode::of(p).target_param()).unwrap_or(5.0),
        activation: p.float("activationLagCount").unwrap_or(0.0),
    }
}

/// Targets given for another mode than the one selected: KEDA ignores them, ebb says so.
fn warnings(p: &ParsedParams) -> Vec<String> {
    let mode = StreamMode::of(p);
    ["streamLength", "pendingEntriesCount", "lagCount"]
        .into_iter()
        .filter(|name| p.is_set(name) && *name != mode.target_param())
        .filter(|name| !(*name == "lagCount" && p.int("lagCount") == Some(0)))
        .map(|name| {
            format!(
                "{name} is ignored: the trigger measures the {} (target {})",
                match mode {
                    StreamMode::Length => "stream's length, as no consumerGroup is set",
                    StreamMode::Pending => "consumer group's pending entries",
                    StreamMode::Lag => "consumer group's lag",
                },
                mode.target_param()
            )
        })
        .collect()
}

/// Builds a redis-streams scaler on the factory's shared connection to its server (the same
/// connections as the redis triggers).
pub fn build_streams(
    factory: &ScalerFactory,
    trigger: &ParsedTrigger,
) -> Result<Arc<dyn Scaler>, ScalerError> {
    let p = &trigger.params;
    let stream = p
        .str("stream")
        .ok_or_else(|| ScalerError::InvalidConfig("redis-streams: stream is required".into()))?
        .to_string();
    let group = p.str("consumerGroup").map(str::to_string);
    let query = match (StreamMode::of(p), group) {
        (StreamMode::Pending, Some(group)) => Query::Pending { stream, group },
        (StreamMode::Lag, Some(group)) => Query::Lag { stream, group },
        _ => Query::StreamLength { stream },
    };
    let config = RedisTriggerConfig {
        server: RedisServer::from_params(p)?,
        query,
    };
    Ok(Arc::new(RedisScaler::new(
        &clients(factory),
        "redis-streams",
        config,
        trigger.thresholds,
    )))
}
