//! The `redis` (list length) and `redis-streams` (stream length, pending entries or consumer
//! group lag) triggers, KEDA's keys and maths, on one shared connection per server.
//!
//! Both types share everything but their parameters and query, so they live in one folder with
//! two declarations ([`DECL`], [`STREAMS_DECL`]) and two registry lines: a `redis` and a
//! `redis-streams` trigger on the same server, user, database and TLS settings share one
//! connection and one pipeline per round.
//!
//! # Where things are
//!
//! - `config`: the connection parameters both types share, their checks, and the typed
//!   [`RedisServer`] (the connection's key).
//! - `streams`: the `redis-streams` declaration and its mode (which of `consumerGroup` and
//!   `lagCount` are set picks XLEN, XPENDING or the group's lag).
//! - `query`: what a trigger reads: its commands and its value from their replies (pure).
//! - `resp`: the wire protocol (RESP2), with every reply bounded (pure).
//! - `connection`: the shared connection and its pipelined rounds.
//! - `scaler`: [`RedisScaler`], [`RedisClients`] and the activity watcher's round.
//!
//! ebb speaks RESP itself rather than through a client library: a reply's size, an array's
//! length and the nesting are bounded before anything is allocated (a Redis client library
//! reads whatever a server sends), a round is exactly one write of every waiting command and
//! one read of their replies, and TLS uses the workspace's rustls on ring.
//!
//! Cluster and sentinel (`redis-cluster`, `redis-sentinel`, `redis-cluster-streams`,
//! `redis-sentinel-streams`) are not supported.

mod config;
mod connection;
mod query;
mod resp;
mod scaler;
mod streams;

pub use config::{MAX_NAME_BYTES, RedisServer, RedisTriggerConfig, split_address};
pub use connection::ConnectionStats;
pub use query::{Query, QueryError};
pub use scaler::{RedisClients, RedisScaler};
pub use streams::{STREAMS_DECL, StreamMode, build_streams};

use std::sync::Arc;

use crate::params::{DeclDocs, META, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds};
use crate::registry::ParsedTrigger;
use crate::{Scaler, ScalerError, ScalerFactory};
use config::{CONNECTION_CHECKS, CONNECTION_PARAMS, check_connection, check_name, join};

/// The rules both types share: where the server is, and a user only with a password.
const CONNECTION_RULES: [Rule; 3] = [
    Rule::AnyOf(&["address", "host"]),
    Rule::Together(&["host", "port"]),
    Rule::Requires("username", "password"),
];

/// The redis trigger's own parameters.
const LIST_PARAMS: [Param; 3] = [
    Param::string("listName")
        .required()
        .from(META)
        .doc("The key whose length is measured: a list (`LLEN`), or a set, sorted set or hash (their member count); a missing key is 0."),
    Param::int("listLength")
        .default("5")
        .above(0.0)
        .doc("Target length per replica."),
    Param::int("activationListLength")
        .default("0")
        .doc("The trigger is active (scales up from zero) when the length is above this."),
];

/// Every parameter of the redis trigger.
pub static PARAMS: [Param; 16] = join(LIST_PARAMS, CONNECTION_PARAMS);

/// The redis trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "redis",
    params: &PARAMS,
    rules: &CONNECTION_RULES,
    check,
    metric_detail: |p| format!("redis-{}", p.str("listName").unwrap_or("list")),
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "Scales on the length of a Redis list (or the size of a set, sorted set or hash).",
        checks: &CONNECTION_CHECKS,
        example_metadata: &[
            ("address", "redis.default.svc:6379"),
            ("listName", "jobs"),
            ("listLength", "10"),
        ],
        example_auth: &[("password", "from-a-secret")],
        keda_differences: &COMMON_DIFFERENCES,
    },
};

/// Where both redis types differ from KEDA.
pub(crate) const COMMON_DIFFERENCES: [&str; 6] = [
    "Only a single server: `redis-cluster` and `redis-sentinel` (and their `-streams` types) are not supported, and `address` is one `host:port` where KEDA takes the first of a comma-separated list.",
    "Triggers on the same server, user, database and TLS settings share one connection, and their reads go out together in one pipelined round trip.",
    "A watcher reads every trigger of a server every half second in one pipeline, so an object at zero activates within about a second of its first item instead of at its next poll.",
    "`password` is read from the TriggerAuthentication or `passwordFromEnv` only, never from plain metadata, and `username` needs `password`.",
    "Targets (`listLength`, `pendingEntriesCount`, `streamLength`) must be greater than 0, and `port` a number from 1 to 65535; KEDA accepts 0 and any text at parse time.",
    "`keyPassword` (an encrypted client key) is not supported; give an unencrypted PEM key.",
];

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = check_connection(p);
    check_name(p, "listName", &mut errors);
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("listLength").unwrap_or(5.0),
        activation: p.float("activationListLength").unwrap_or(0.0),
    }
}

/// The factory's shared redis connections (both trigger types use the same ones).
fn clients(factory: &ScalerFactory) -> Arc<RedisClients> {
    factory.shared(|o| RedisClients::new(o.http_timeout))
}

/// Builds a redis (list) scaler on the factory's shared connection to its server.
pub fn build(factory: &ScalerFactory, trigger: &ParsedTrigger) -> Result<Arc<dyn Scaler>, ScalerError> {
    let p = &trigger.params;
    let key = p
        .str("listName")
        .ok_or_else(|| ScalerError::InvalidConfig("redis: listName is required".into()))?;
    let config = RedisTriggerConfig {
        server: RedisServer::from_params(p)?,
        query: Query::ListLength { key: key.to_string() },
    };
    Ok(Arc::new(RedisScaler::new(
        &clients(factory),
        "redis",
        config,
        trigger.thresholds,
    )))
}

#[cfg(test)]
mod tests;
