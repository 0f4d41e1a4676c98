//! Parse tables of both redis trigger types, KEDA's error cases among them
//! (`redis_scaler_test.go`, `redis_streams_scaler_test.go`), and the typed configuration they
//! give.

use std::collections::BTreeMap;

use super::*;
use crate::params::{TriggerInput, parse};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// KEDA's resolved environment of its tests, with values that are valid here.
fn env() -> BTreeMap<String, String> {
    map(&[
        ("REDIS_HOST", "myredis"),
        ("REDIS_PORT", "6379"),
        ("REDIS_SERVER", "myredis:6379"),
        ("REDIS_USERNAME", "app"),
        ("REDIS_PASSWORD", "hunter2"),
    ])
}

fn parse_with(
    decl: &ScalerDecl,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<ParsedParams, Vec<ParamError>> {
    let (m, a, e) = (map(meta), map(auth), env());
    parse(
        decl,
        &TriggerInput {
            metadata: &m,
            auth_params: Some(&a),
            resolved_env: Some(&e),
        },
    )
}

fn server(decl: &ScalerDecl, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> RedisServer {
    let p = parse_with(decl, meta, auth).unwrap_or_else(|e| panic!("{meta:?}: {e:?}"));
    RedisServer::from_params(&p).unwrap()
}

#[test]
fn list_parse_table() {
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        // nothing passed
        (&[], &[], Some("listName")),
        // properly formed, address and password from the environment
        (
            &[
                ("listName", "l"),
                ("listLength", "10"),
                ("addressFromEnv", "REDIS_SERVER"),
                ("passwordFromEnv", "REDIS_PASSWORD"),
            ],
            &[],
            None,
        ),
        // host and port from the environment
        (
            &[
                ("listName", "l"),
                ("hostFromEnv", "REDIS_HOST"),
                ("portFromEnv", "REDIS_PORT"),
            ],
            &[],
            None,
        ),
        // address wins over host and port
        (
            &[
                ("listName", "l"),
                ("addressFromEnv", "REDIS_SERVER"),
                ("host", "other"),
                ("port", "1"),
            ],
            &[],
            None,
        ),
        // host without port
        (
            &[("listName", "l"), ("hostFromEnv", "REDIS_HOST")],
            &[],
            Some("host, port"),
        ),
        // empty address
        (&[("listName", "l"), ("address", "")], &[], Some("address, host")),
        // bad listLength, bad activationListLength
        (
            &[("listName", "l"), ("listLength", "AA"), ("address", "r:6379")],
            &[],
            Some("listLength"),
        ),
        (
            &[
                ("listName", "l"),
                ("activationListLength", "AA"),
                ("address", "r:6379"),
            ],
            &[],
            Some("activationListLength"),
        ),
        // the address's variable is not set in the container
        (
            &[("listName", "l"), ("addressFromEnv", "REDIS_WRONG")],
            &[],
            Some("address"),
        ),
        (
            &[("listName", "l"), ("addressFromEnv", "REDIS_WRONG")],
            &[("password", "p")],
            Some("address"),
        ),
        // address, or host and port, from the TriggerAuthentication
        (&[("listName", "l")], &[("address", "localhost:6379")], None),
        (
            &[("listName", "l")],
            &[("host", "localhost"), ("port", "6379")],
            None,
        ),
        (&[("listName", "l")], &[("host", "localhost")], Some("host, port")),
        // TLS from the TriggerAuthentication, with CA and/or client certificate
        (
            &[("listName", "l")],
            &[
                ("address", "r:6379"),
                ("tls", "enable"),
                ("ca", "c"),
                ("cert", "c"),
                ("key", "k"),
            ],
            None,
        ),
        (
            &[("listName", "l")],
            &[("address", "r:6379"), ("tls", "enable"), ("ca", "c")],
            None,
        ),
        (
            &[("listName", "l"), ("enableTLS", "true")],
            &[("address", "r:6379")],
            None,
        ),
        // TLS in both places
        (
            &[("listName", "l"), ("enableTLS", "true")],
            &[("address", "r:6379"), ("tls", "disable")],
            Some("enableTLS, tls"),
        ),
        // ebb: an encrypted key, a certificate without key
        (
            &[("listName", "l")],
            &[
                ("address", "r:6379"),
                ("tls", "enable"),
                ("cert", "c"),
                ("key", "k"),
                ("keyPassword", "x"),
            ],
            Some("keyPassword"),
        ),
        (
            &[("listName", "l")],
            &[("address", "r:6379"), ("tls", "enable"), ("cert", "c")],
            Some("cert, key"),
        ),
        // ebb: targets above 0, ports and addresses checked, names bounded
        (
            &[("listName", "l"), ("listLength", "0"), ("address", "r:6379")],
            &[],
            Some("listLength"),
        ),
        (
            &[("listName", "l"), ("host", "r"), ("port", "REDIS_PORT")],
            &[],
            Some("port"),
        ),
        (
            &[("listName", "l"), ("host", "r"), ("port", "70000")],
            &[],
            Some("port"),
        ),
        (
            &[("listName", "l"), ("address", "r:6379,s:6379")],
            &[],
            Some("address"),
        ),
        (
            &[("listName", "l"), ("address", "redis://r:6379")],
            &[],
            Some("address"),
        ),
        (
            &[("listName", "l"), ("address", "r:6379"), ("databaseIndex", "-1")],
            &[],
            Some("databaseIndex"),
        ),
        (
            &[("listName", &"x".repeat(1025)), ("address", "r:6379")],
            &[],
            Some("listName"),
        ),
        // ebb: a user needs a password
        (
            &[("listName", "l"), ("address", "r:6379"), ("username", "app")],
            &[],
            Some("username"),
        ),
    ];
    for (meta, auth, error) in cases {
        let result = parse_with(&DECL, meta, auth);
        match (error, result) {
            (None, Ok(p)) => {
                RedisServer::from_params(&p).unwrap_or_else(|e| panic!("{meta:?} {auth:?}: {e}"));
            }
            (Some(param), Err(errors)) => {
                assert_eq!(errors[0].param, *param, "{meta:?} {auth:?}: {errors:?}")
            }
            (expected, got) => panic!("{meta:?} {auth:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn list_defaults_metric_name_and_server() {
    let meta = [("listName", "My.List"), ("addressFromEnv", "REDIS_SERVER")];
    let t = crate::parse_trigger(1, "redis", &map(&meta), Some(&BTreeMap::new()), Some(&env())).unwrap();
    assert_eq!(t.metric_name, "s1-redis-my-list");
    assert_eq!((t.thresholds.target, t.thresholds.activation), (5.0, 0.0));
    let s = server(&DECL, &meta, &[("username", "app"), ("password", "hunter2")]);
    assert_eq!((s.host.as_str(), s.port, s.database), ("myredis", 6379, 0));
    assert_eq!(
        (s.username.as_deref(), s.password.as_deref()),
        (Some("app"), Some("hunter2"))
    );
    assert!(s.tls.is_none());
    let json = t.params.redacted_json().to_string();
    assert!(!json.contains("hunter2"));

    let tls = server(
        &DECL,
        &[
            ("listName", "l"),
            ("host", "::1"),
            ("port", "6380"),
            ("databaseIndex", "3"),
            ("unsafeSsl", "true"),
        ],
        &[("tls", "enable")],
    );
    assert_eq!(tls.endpoint(), "rediss://[::1]:6380/3");
    assert_eq!(tls.tls.unwrap().trust, crate::common::tls::Trust::AnyCertificate);
    let ca = server(
        &DECL,
        &[("listName", "l"), ("address", "r:1")],
        &[("tls", "enable"), ("ca", "PEM")],
    );
    assert_eq!(
        ca.tls.unwrap().trust,
        crate::common::tls::Trust::Only("PEM".into())
    );
    // `tls: disable` is plain TCP.
    let plain = server(
        &DECL,
        &[("listName", "l"), ("address", "r:1")],
        &[("tls", "disable")],
    );
    assert!(plain.tls.is_none());
}

#[test]
fn a_secret_never_shows_in_errors() {
    let errors = parse_with(
        &DECL,
        &[("listName", "l"), ("address", "r:1"), ("enableTLS", "true")],
        &[
            ("tls", "enable"),
            ("key", "SECRETKEY"),
            ("keyPassword", "hunter2"),
            ("password", "hunter2"),
        ],
    )
    .unwrap_err();
    let text = format!("{errors:?}");
    assert!(!text.contains("hunter2") && !text.contains("SECRETKEY"), "{text}");
}

#[test]
fn streams_parse_table_and_modes() {
    let base = [("address", "myredis:6379"), ("stream", "my-stream")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };
    // KEDA's valid rows: pending with credentials from the environment, lag with activation.
    let pending = parse_with(
        &STREAMS_DECL,
        &[
            ("stream", "s"),
            ("consumerGroup", "g"),
            ("pendingEntriesCount", "15"),
            ("hostFromEnv", "REDIS_HOST"),
            ("portFromEnv", "REDIS_PORT"),
            ("usernameFromEnv", "REDIS_USERNAME"),
            ("passwordFromEnv", "REDIS_PASSWORD"),
            ("databaseIndex", "0"),
            ("enableTLS", "false"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(StreamMode::of(&pending), StreamMode::Pending);
    assert_eq!((STREAMS_DECL.thresholds)(&pending).target, 15.0);
    let s = RedisServer::from_params(&pending).unwrap();
    assert_eq!(
        (s.username.as_deref(), s.password.as_deref()),
        (Some("app"), Some("hunter2"))
    );

    let lag = parse_with(
        &STREAMS_DECL,
        &with(&[
            ("consumerGroup", "g"),
            ("lagCount", "5"),
            ("activationLagCount", "3"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(StreamMode::of(&lag), StreamMode::Lag);
    let t = (STREAMS_DECL.thresholds)(&lag);
    assert_eq!((t.target, t.activation), (5.0, 3.0));
    assert!((STREAMS_DECL.warnings)(&lag).is_empty());

    let length = parse_with(&STREAMS_DECL, &with(&[("streamLength", "7")]), &[]).unwrap();
    assert_eq!(StreamMode::of(&length), StreamMode::Length);
    assert_eq!((STREAMS_DECL.thresholds)(&length).target, 7.0);
    // Defaults: 5 in every mode.
    let group = parse_with(
        &STREAMS_DECL,
        &with(&[("consumerGroup", "g"), ("lagCount", "0")]),
        &[],
    )
    .unwrap();
    assert_eq!(
        StreamMode::of(&group),
        StreamMode::Pending,
        "lagCount 0 is pending entries, as KEDA"
    );
    assert_eq!((STREAMS_DECL.thresholds)(&group).target, 5.0);
    assert!((STREAMS_DECL.warnings)(&group).is_empty());
    // A target for another mode is ignored, with a warning.
    let ignored = parse_with(
        &STREAMS_DECL,
        &with(&[("pendingEntriesCount", "3"), ("lagCount", "4")]),
        &[],
    )
    .unwrap();
    let warnings = (STREAMS_DECL.warnings)(&ignored);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("pendingEntriesCount is ignored: the trigger measures the stream's length")
    );

    // KEDA's invalid rows.
    let invalid: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("stream", "s"),
                ("pendingEntriesCount", "5"),
                ("lagCount", "5"),
                ("consumerGroup", "g"),
            ],
            "address, host",
        ),
        (
            &[("stream", "s"), ("consumerGroup", "g"), ("host", "REDIS_HOST")],
            "host, port",
        ),
        (
            &[("stream", "s"), ("consumerGroup", "g"), ("port", "6379")],
            "address, host",
        ),
        (
            &[
                ("pendingEntriesCount", "5"),
                ("consumerGroup", "g"),
                ("address", "r:6379"),
            ],
            "stream",
        ),
        (
            &[
                ("stream", "s"),
                ("consumerGroup", "g"),
                ("lagCount", "junk"),
                ("address", "r:6379"),
            ],
            "lagCount",
        ),
        (
            &[
                ("stream", "s"),
                ("consumerGroup", "g"),
                ("pendingEntriesCount", "junk"),
                ("address", "r:6379"),
            ],
            "pendingEntriesCount",
        ),
        (
            &[("stream", "s"), ("streamLength", "junk"), ("address", "r:6379")],
            "streamLength",
        ),
        (
            &[
                ("stream", "s"),
                ("consumerGroup", "g"),
                ("databaseIndex", "junk"),
                ("address", "r:6379"),
            ],
            "databaseIndex",
        ),
        (
            &[
                ("stream", "s"),
                ("consumerGroup", "g"),
                ("enableTLS", "no"),
                ("address", "r:6379"),
            ],
            "enableTLS",
        ),
        // ebb's own
        (
            &[
                ("stream", "s"),
                ("consumerGroup", "g"),
                ("lagCount", "-1"),
                ("address", "r:6379"),
            ],
            "lagCount",
        ),
        (
            &[("stream", "s"), ("streamLength", "0"), ("address", "r:6379")],
            "streamLength",
        ),
        (
            &[
                ("stream", "s"),
                ("consumerGroup", &"g".repeat(1025)),
                ("address", "r:6379"),
            ],
            "consumerGroup",
        ),
    ];
    for (meta, param) in invalid {
        let errors = parse_with(&STREAMS_DECL, meta, &[]).unwrap_err();
        assert_eq!(errors[0].param, *param, "{meta:?}: {errors:?}");
    }
}

#[test]
fn streams_metric_name_and_queries() {
    let meta = map(&[
        ("address", "r:6379"),
        ("stream", "my-stream"),
        ("consumerGroup", "g"),
    ]);
    let t = crate::parse_trigger(0, "redis-streams", &meta, Some(&BTreeMap::new()), None).unwrap();
    assert_eq!(t.metric_name, "s0-redis-streams-my-stream");
    let factory = ScalerFactory::default();
    let s = factory.build(&t).unwrap();
    assert_eq!(s.trigger_type(), "redis-streams");
    assert_eq!(s.metric_target().target_value, 5.0);
    let list = crate::parse_trigger(
        0,
        "redis",
        &map(&[("address", "r:6379"), ("listName", "l")]),
        Some(&BTreeMap::new()),
        None,
    )
    .unwrap();
    let l = factory.build(&list).unwrap();
    assert_eq!(l.trigger_type(), "redis");
    let shared = factory.shared(|o| RedisClients::new(o.http_timeout));
    assert_eq!(
        shared.connection_count(),
        1,
        "both types share the server's connection"
    );
}
