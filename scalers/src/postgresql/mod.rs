//! The `postgresql` trigger: the number a SQL query returns.
//!
//! This file is the declaration ([`DECL`]); [`conninfo`] reads connection strings and the
//! separate parameters into a [`PgTarget`], [`config`] makes the trigger's [`PgConfig`],
//! [`value`] reads the query's value as a number, [`connect`] dials one connection (TCP, read
//! cap, rustls), [`pool`] keeps the shared connection pools and runs the query, and [`scaler`] is
//! the [`Scaler`](crate::Scaler).

pub mod config;
pub mod connect;
pub mod conninfo;
pub mod pool;
pub mod scaler;
pub mod value;

pub use config::PgConfig;
pub use conninfo::{ConnInfoError, PgTarget, SslMode};
pub use pool::{PgPool, PgPools, PgSettings};
pub use scaler::PgScaler;

use crate::params::{
    AUTH, AUTH_ENV, DeclDocs, Param, ParamError, ParsedParams, ScalerDecl, Source, Thresholds,
};

/// Sources: auth params, then metadata (KEDA's order for the separate connection parameters).
const AUTH_META: &[Source] = &[Source::AuthParams, Source::Metadata];

/// The separate connection parameters, needed when `connection` is not given.
const PARTS: &[&str] = &["host", "port", "userName", "dbName", "sslmode"];

/// Every parameter of the postgresql trigger.
pub static PARAMS: &[Param] = &[
    Param::string("query")
        .required()
        .doc("The SQL query: one statement returning one row with one numeric column (the first row is used)."),
    Param::float("targetQueryValue")
        .required()
        .above(0.0)
        .doc("Target value per replica."),
    Param::float("activationTargetQueryValue")
        .default("0")
        .doc("The trigger is active (scales up from zero) when the value is above this."),
    Param::string("connection")
        .from(AUTH_ENV)
        .secret()
        .doc("A libpq connection string (`host=… user=… password=…` or `postgresql://user:password@host:5432/db?sslmode=require`), from the authentication or the target's env through `connectionFromEnv`; when given, the separate parameters are ignored."),
    Param::string("host")
        .from(AUTH_META)
        .doc("The server's host name (several comma-separated ones are tried in order); with `port`, `userName`, `dbName` and `sslmode`, instead of `connection`."),
    Param::string("port")
        .from(AUTH_META)
        .doc("The server's port (or one per host, comma-separated)."),
    Param::string("userName")
        .from(AUTH_META)
        .doc("The role to log in as."),
    Param::string("dbName")
        .from(AUTH_META)
        .doc("The database."),
    Param::one_of("sslmode", conninfo::SSL_MODES)
        .from(AUTH_META)
        .doc("TLS use: `disable`; `allow` and `prefer` (TLS when offered, unverified); `require` (unverified); `verify-ca` (chain checked against the system's roots); `verify-full` (chain and host name)."),
    Param::string("password")
        .from(AUTH_ENV)
        .secret()
        .doc("The role's password, from the authentication or the target's env through `passwordFromEnv`."),
    Param::string("ca")
        .from(AUTH)
        .doc("PEM CA certificates that `verify-ca` and `verify-full` trust instead of the system's roots (an ebb addition: KEDA reads `sslrootcert` files)."),
];

/// The postgresql trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "postgresql",
    params: PARAMS,
    rules: &[],
    check,
    metric_detail: |_| "postgresql".to_string(),
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "Scales on the number a SQL query returns from a PostgreSQL database.",
        checks: &[
            "Without `connection`, `host`, `port`, `userName`, `dbName` and `sslmode` are all required.",
            "`connection` must be a libpq connection string naming a host and a user; keys naming files (`sslrootcert`, `sslcert`, `sslkey`, `passfile`, `service`) and `hostaddr` are refused.",
            "`port` is a port number (or one per host).",
            "`ca` must hold at least one PEM certificate.",
        ],
        example_metadata: &[
            ("query", "SELECT count(*) FROM jobs WHERE state = 'queued'"),
            ("targetQueryValue", "20"),
            ("activationTargetQueryValue", "0"),
            ("host", "orders-db.shop.svc"),
            ("port", "5432"),
            ("userName", "scaler"),
            ("dbName", "orders"),
            ("sslmode", "require"),
        ],
        example_auth: &[("password", "from-a-secret")],
        keda_differences: &[
            "The query runs in a read-only transaction that ebb rolls back, with `SET LOCAL statement_timeout` (10 s) and a client-side deadline on the whole poll (17 s: connect, query, round trips): a query that writes (or calls a function that writes, e.g. `nextval`) fails instead of changing the database from the autoscaler, and no setting it makes outlives the poll.",
            "At most one row is fetched (a portal with a row limit): the first row is used, as in KEDA, and the server never sends the rest; every connection reads at most 1 MiB per query, so an oversized value is an error.",
            "NULL, no rows, more or less than one column, a non-numeric or non-finite value are errors (KEDA: errors too, except NaN); an error is never a value of 0.",
            "One pool of at most 2 connections per server, user, password, database and TLS mode, shared by every trigger naming the same; connections are made on first use and made again after an error.",
            "`sslmode` `require` and `prefer`/`allow` do not verify the certificate (as libpq without a root file; `allow` tries TLS first, like `prefer`); `verify-ca` and `verify-full` verify against the authentication's `ca` or the system's roots, since ebb reads no `sslrootcert` file.",
            "`port` must be a number when the trigger is checked (KEDA fails when connecting); the separate parameters are passed as they are, never spliced into a connection string.",
            "`podIdentity` `azure-workload` (Azure AD tokens as the password) is not supported.",
        ],
    },
};

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("targetQueryValue").unwrap_or(1.0),
        activation: p.float("activationTargetQueryValue").unwrap_or(0.0),
    }
}

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if let Some(ca) = p.str("ca")
        && let Err(e) = connect::ca_roots(ca)
    {
        errors.push(ParamError::new("ca", e));
    }
    errors.extend(check_target(p));
    errors
}

/// The connection string, or the separate parameters, name a usable target.
fn check_target(p: &ParsedParams) -> Vec<ParamError> {
    if p.is_unresolved("connection") {
        return Vec::new();
    }
    if let Some(text) = p.str("connection") {
        return match conninfo::parse_connection_string(text) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ParamError::new("connection", e.to_string())],
        };
    }
    let mut errors = Vec::new();
    for name in PARTS {
        if p.str(name).is_none() && !p.is_unresolved(name) {
            errors.push(ParamError::new(
                *name,
                "is required when no connection is given (set it in metadata or the authentication, or give connection / connectionFromEnv)",
            ));
        }
    }
    if errors.is_empty()
        && let Err(e) = config::target_from_parts(p)
    {
        let param = match &e {
            ConnInfoError::BadValue { key: "port", .. } => "port",
            ConnInfoError::NoHost => "host",
            ConnInfoError::NoUser => "userName",
            _ => "host",
        };
        errors.push(ParamError::new(param, e.to_string()));
    }
    errors
}

/// Builds a postgresql scaler on the factory's shared pools (see [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    let pools = factory.shared(|_| PgPools::new(PgSettings::default()));
    let config = PgConfig::try_from(&trigger.params)?;
    Ok(std::sync::Arc::new(PgScaler::new(
        &pools,
        config,
        trigger.thresholds,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TriggerInput;
    use std::collections::BTreeMap;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<ParsedParams, Vec<ParamError>> {
        let (m, a, e) = (map(meta), map(auth), map(env));
        crate::params::parse(
            &DECL,
            &TriggerInput {
                metadata: &m,
                auth_params: Some(&a),
                resolved_env: Some(&e),
            },
        )
    }

    const Q: (&str, &str) = ("query", "SELECT 1");
    const T: (&str, &str) = ("targetQueryValue", "12");

    #[test]
    fn kedas_accepted_shapes() {
        // connectionFromEnv.
        let p = parse(
            &[Q, T, ("connectionFromEnv", "PG_CONN")],
            &[],
            &[("PG_CONN", "postgresql://app:pw@db:5432/orders")],
        )
        .unwrap();
        let c = PgConfig::try_from(&p).unwrap();
        assert_eq!(c.target.user, "app");
        assert_eq!((c.target_value, c.activation), (12.0, 0.0));
        // connection from the authentication.
        let p = parse(&[Q, T], &[("connection", "host=db user=app")], &[]).unwrap();
        assert_eq!(PgConfig::try_from(&p).unwrap().target.hosts[0].0, "db");
        // Separate parameters from metadata, password from the env.
        let meta = [
            Q,
            T,
            ("activationTargetQueryValue", "3"),
            ("host", "test_host"),
            ("port", "5432"),
            ("userName", "test_username"),
            ("passwordFromEnv", "PG_PASSWORD"),
            ("dbName", "test_dbname"),
            ("sslmode", "require"),
        ];
        let p = parse(&meta, &[], &[("PG_PASSWORD", "pass")]).unwrap();
        let c = PgConfig::try_from(&p).unwrap();
        assert_eq!(c.target.password.as_deref(), Some("pass"));
        assert_eq!(c.target.ssl, SslMode::Require);
        assert_eq!(c.activation, 3.0);
        // Separate parameters from the authentication (auth params win over metadata).
        let auth = [
            ("host", "auth_host"),
            ("port", "5432"),
            ("userName", "u"),
            ("password", "pw"),
            ("dbName", "d"),
            ("sslmode", "disable"),
        ];
        let p = parse(&[Q, T, ("host", "meta_host")], &auth, &[]).unwrap();
        let c = PgConfig::try_from(&p).unwrap();
        assert_eq!(c.target.hosts, [("auth_host".to_string(), 5432)]);
        assert_eq!(c.target.ssl, SslMode::Disable);
        assert_eq!(c.query, "SELECT 1");
    }

    #[test]
    fn table_of_invalid_triggers() {
        let parts = [
            ("host", "h"),
            ("port", "5432"),
            ("userName", "u"),
            ("dbName", "d"),
            ("sslmode", "disable"),
        ];
        let with =
            |extra: &[(&'static str, &'static str)], drop: &str| -> Vec<(&'static str, &'static str)> {
                let mut v: Vec<_> = [Q, T]
                    .into_iter()
                    .chain(parts)
                    .filter(|(k, _)| *k != drop)
                    .collect();
                v.extend_from_slice(extra);
                v
            };
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "query"),
            (with(&[], "query"), "query"),
            (with(&[], "targetQueryValue"), "targetQueryValue"),
            (with(&[("targetQueryValue", "0")], ""), "targetQueryValue"),
            (with(&[("targetQueryValue", "x")], ""), "targetQueryValue"),
            (
                with(&[("activationTargetQueryValue", "x")], ""),
                "activationTargetQueryValue",
            ),
            (with(&[], "host"), "host"),
            (with(&[], "port"), "port"),
            (with(&[], "userName"), "userName"),
            (with(&[], "dbName"), "dbName"),
            (with(&[], "sslmode"), "sslmode"),
            (with(&[("sslmode", "required")], ""), "sslmode"),
            (with(&[("port", "test_port")], ""), "port"),
            (with(&[("host", "/var/run/postgresql")], ""), "host"),
        ];
        for (meta, param) in &cases {
            let errors = parse(meta, &[], &[]).unwrap_err();
            assert!(errors.iter().any(|e| e.param == *param), "{meta:?}: {errors:?}");
        }
        // A bad connection string names `connection` and never quotes it.
        let errors = parse(&[Q, T], &[("connection", "host=h user=u password='hunter2")], &[]).unwrap_err();
        assert_eq!(errors[0].param, "connection");
        assert!(!format!("{errors:?}").contains("hunter2"));
        // A `ca` that is not PEM.
        let errors = parse(
            &[Q, T],
            &[
                ("connection", "host=h user=u sslmode=verify-full"),
                ("ca", "not pem"),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(errors[0].param, "ca", "{errors:?}");
        // `connection` in plain metadata is not read (KEDA reads it from auth or env only).
        let errors = parse(&[Q, T, ("connection", "host=h user=u")], &[], &[]).unwrap_err();
        assert!(errors.iter().any(|e| e.param == "host"), "{errors:?}");
    }

    #[test]
    fn unresolved_sources_are_not_errors_offline() {
        let (m, a) = (map(&[Q, T, ("connectionFromEnv", "PG_CONN")]), BTreeMap::new());
        let p = crate::params::parse(
            &DECL,
            &TriggerInput {
                metadata: &m,
                auth_params: Some(&a),
                resolved_env: None,
            },
        )
        .unwrap();
        assert!(p.is_unresolved("connection"));
        assert!(PgConfig::try_from(&p).is_err(), "no config without the value");
    }

    #[test]
    fn secrets_stay_hidden() {
        let p = parse(
            &[Q, T],
            &[("connection", "postgresql://app:hunter2@db/orders")],
            &[],
        )
        .unwrap();
        let json = p.redacted_json().to_string();
        assert!(!json.contains("hunter2"), "{json}");
        let c = PgConfig::try_from(&p).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(
            crate::metric_name::metric_name(1, &(DECL.metric_detail)(&p)),
            "s1-postgresql"
        );
    }
}
