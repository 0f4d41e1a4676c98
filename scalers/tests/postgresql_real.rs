//! The postgresql scaler against the test environment's PostgreSQL: the value and its changes,
//! NULL, no rows, non-numeric values, the statement timeout, a huge result, writes refused, an
//! unreachable server, a wrong password (never echoed), and one pool shared by two triggers.
//!
//! Needs `tests/env/testenv.sh up` (its env file: `$EBB_TESTENV_FILE` or
//! `~/.cache/ebb-testenv/run/env`); without it these tests fail, they never pass silently.

mod common;
use common::{testenv, unique, var};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_scalers::postgresql::{PgConfig, PgPools, PgScaler, PgSettings};
use ebb_scalers::{Scaler, ScalerError, ScalerFactory, parse_trigger};
use ebb_tests::postgres::PgServer;

fn server() -> PgServer {
    let env = testenv();
    PgServer::from_lookup(|key| Some(var(&env, key).to_string())).unwrap_or_else(|e| panic!("{e}"))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A trigger on `query` through the registry, the connection string from the authentication.
fn trigger(factory: &ScalerFactory, connection: &str, query: &str) -> Arc<dyn Scaler> {
    let meta = map(&[
        ("query", query),
        ("targetQueryValue", "5"),
        ("activationTargetQueryValue", "2"),
    ]);
    let auth = map(&[("connection", connection)]);
    let parsed = parse_trigger(0, "postgresql", &meta, Some(&auth), Some(&BTreeMap::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    factory.build(&parsed).unwrap_or_else(|e| panic!("{e}"))
}

/// A scaler on pools with `settings` (short timeouts for the tests that wait for them).
fn scaler_with(pools: &PgPools, connection: &str, query: &str) -> PgScaler {
    let meta = map(&[("query", query), ("targetQueryValue", "5")]);
    let auth = map(&[("connection", connection)]);
    let parsed = parse_trigger(0, "postgresql", &meta, Some(&auth), Some(&BTreeMap::new())).unwrap();
    let config = PgConfig::try_from(&parsed.params).unwrap();
    PgScaler::new(pools, config, parsed.thresholds)
}

fn superuser(pg: &PgServer, extra: &str) -> String {
    pg.connection_string(&pg.user, &pg.password, &format!("sslmode=disable {extra}"))
}

#[tokio::test]
async fn the_value_follows_the_table_and_bad_answers_are_errors() {
    let pg = server();
    let table = unique("ebb_jobs");
    let admin = pg.table_with_rows(&table, 7).await.unwrap();
    let factory = ScalerFactory::default();
    let conn = superuser(&pg, "");
    let count = trigger(&factory, &conn, &format!("SELECT count(*) FROM {table}"));
    assert_eq!(count.metric_target().target_value, 5.0);
    let s = count.sample().await.unwrap();
    assert_eq!((s.value, s.active), (7.0, true));
    admin
        .batch_execute(&format!("INSERT INTO {table} SELECT generate_series(1, 5)"))
        .await
        .unwrap();
    assert_eq!(count.sample().await.unwrap().value, 12.0);
    admin
        .batch_execute(&format!("DELETE FROM {table} WHERE n > 1"))
        .await
        .unwrap();
    let s = count.sample().await.unwrap();
    assert_eq!(
        (s.value, s.active),
        (2.0, false),
        "2 is not above the activation 2"
    );

    // Numeric, float, integer and text holding a number are read as numbers.
    for (query, want) in [
        ("SELECT 12.5::numeric", 12.5),
        ("SELECT -0.25::float8", -0.25),
        ("SELECT 3::int2", 3.0),
        ("SELECT '42'::text", 42.0),
        ("SELECT 123456789012::bigint", 123_456_789_012.0),
    ] {
        let got = trigger(&factory, &conn, query).sample().await;
        assert_eq!(got.map(|s| s.value), Ok(want), "{query}");
    }

    // NULL, no rows, text, a boolean, two columns and a SQL error: errors, never 0.
    let cases = [
        ("SELECT NULL::int".to_string(), "NULL"),
        (format!("SELECT n FROM {table} WHERE false"), "no rows"),
        ("SELECT 'twelve'".to_string(), "not a number"),
        ("SELECT 'NaN'::float8".to_string(), "not finite"),
        ("SELECT true".to_string(), "type bool"),
        ("SELECT 1, 2".to_string(), "2 columns"),
        ("SELECT count(*) FROM ebb_no_such_table".to_string(), "42P01"),
    ];
    for (query, expected) in cases {
        let e = trigger(&factory, &conn, &query).sample().await.unwrap_err();
        assert_eq!(e.kind(), "bad_response", "{query}: {e}");
        assert!(e.to_string().contains(expected), "{query}: {e}");
    }
    // After all those errors the pool still answers.
    assert_eq!(count.sample().await.unwrap().value, 2.0);
}

#[tokio::test]
async fn the_statement_timeout_ends_a_slow_query_and_the_pool_recovers() {
    let pg = server();
    let pools = PgPools::new(PgSettings {
        statement_timeout: Duration::from_secs(1),
        ..PgSettings::default()
    });
    let conn = superuser(&pg, "");
    let slow = scaler_with(&pools, &conn, "SELECT 1 FROM pg_sleep(10)");
    let started = Instant::now();
    let e = slow.sample().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ScalerError::Timeout { .. }), "{e}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let fast = scaler_with(&pools, &conn, "SELECT 4");
    assert_eq!(fast.sample().await.unwrap().value, 4.0);
}

#[tokio::test]
async fn results_are_bounded_and_writes_refused() {
    let pg = server();
    let factory = ScalerFactory::default();
    let conn = superuser(&pg, "");
    // Fifty million rows: only the first is fetched.
    let started = Instant::now();
    let many = trigger(&factory, &conn, "SELECT generate_series(1, 50000000)");
    assert_eq!(many.sample().await.unwrap().value, 1.0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A 2 MB value is more than a connection reads for one query.
    let huge = trigger(&factory, &conn, "SELECT repeat('9', 2000000)");
    let e = huge.sample().await.unwrap_err();
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
    assert_eq!(
        trigger(&factory, &conn, "SELECT 6").sample().await.unwrap().value,
        6.0
    );

    // The transaction is read-only: a query that writes fails and changes nothing.
    let table = unique("ebb_ro");
    let admin = pg.table_with_rows(&table, 3).await.unwrap();
    let writer = trigger(
        &factory,
        &conn,
        &format!("WITH gone AS (DELETE FROM {table} RETURNING 1) SELECT count(*) FROM gone"),
    );
    let e = writer.sample().await.unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let left: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 3);
    // A setting the query makes does not outlive its poll (sequential polls of one target reuse
    // one connection).
    let default: i64 = admin
        .query_one("SELECT pg_size_bytes(current_setting('work_mem'))", &[])
        .await
        .unwrap()
        .get(0);
    let setter = trigger(
        &factory,
        &conn,
        "SELECT pg_size_bytes(set_config('work_mem', '77MB', false))",
    );
    assert_eq!(setter.sample().await.unwrap().value, 77.0 * 1024.0 * 1024.0);
    let shown = trigger(
        &factory,
        &conn,
        "SELECT pg_size_bytes(current_setting('work_mem'))",
    );
    assert_eq!(shown.sample().await.unwrap().value, default as f64);
}

#[tokio::test]
async fn unreachable_servers_wrong_passwords_and_tls_refusals_are_errors() {
    let pg = server();
    let factory = ScalerFactory::default();
    let port = ebb_tests::free_port();
    let e = trigger(
        &factory,
        &format!("host=127.0.0.1 port={port} user=u password=p sslmode=disable"),
        "SELECT 1",
    )
    .sample()
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");

    let role = unique("ebb_reader");
    let secret = format!("right-{}", unique("pw"));
    pg.role(&role, &secret).await.unwrap();
    let good = pg.connection_string(&role, &secret, "sslmode=disable");
    assert_eq!(
        trigger(&factory, &good, "SELECT 9").sample().await.unwrap().value,
        9.0
    );
    let wrong_secret = format!("wrong-{}", unique("pw"));
    let bad = pg.connection_string(&role, &wrong_secret, "sslmode=disable");
    let e = trigger(&factory, &bad, "SELECT 9").sample().await.unwrap_err();
    assert_eq!(e.kind(), "unauthorized", "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(&wrong_secret) && !text.contains(&secret), "{text}");
    }

    // The test server speaks no TLS: `require` is an error, `prefer` falls back to plain.
    let require = pg.connection_string(&role, &secret, "sslmode=require");
    let e = trigger(&factory, &require, "SELECT 9")
        .sample()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");
    let prefer = pg.connection_string(&role, &secret, "sslmode=prefer");
    assert_eq!(
        trigger(&factory, &prefer, "SELECT 9")
            .sample()
            .await
            .unwrap()
            .value,
        9.0
    );
}

#[tokio::test]
async fn triggers_of_one_target_share_one_small_pool() {
    let pg = server();
    let admin = pg.admin().await.unwrap();
    let app = unique("ebb_pool");
    let factory = ScalerFactory::default();
    let conn = superuser(&pg, &format!("application_name={app}"));
    let a = trigger(&factory, &conn, "SELECT 1");
    let b = trigger(&factory, &conn, "SELECT 2");
    let connections = || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert_eq!(connections().await, 0, "no connection before the first poll");
    for _ in 0..3 {
        assert_eq!(a.sample().await.unwrap().value, 1.0);
        assert_eq!(b.sample().await.unwrap().value, 2.0);
    }
    assert_eq!(
        connections().await,
        1,
        "sequential polls of both triggers use one connection"
    );
    // Six slow polls at once: at most two connections.
    let slow: Vec<_> = (0..6)
        .map(|_| trigger(&factory, &conn, "SELECT 3 FROM pg_sleep(0.3)"))
        .collect();
    let results = futures::future::join_all(slow.iter().map(|s| s.sample())).await;
    assert!(
        results.iter().all(|r| r.as_ref().map(|s| s.value) == Ok(3.0)),
        "{results:?}"
    );
    assert_eq!(connections().await, 2);
    // The pool goes with its last trigger.
    drop((a, b, slow));
    let _other = trigger(&factory, &superuser(&pg, ""), "SELECT 1");
    for _ in 0..50 {
        if connections().await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the pool's connections outlived its triggers");
}

/// A private PostgreSQL with TLS (a CA and a certificate for `localhost` only), run as the
/// `postgres` user from the Debian binaries the test environment installs; killed on drop.
struct TlsServer {
    port: u16,
    ca_pem: String,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl TlsServer {
    fn start() -> TlsServer {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use std::process::Command;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL from Debian (tests/env/testenv.sh install)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("postgres").exists())
            .max()
            .expect("a PostgreSQL version under /usr/lib/postgresql");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(unique("ebb-pg-tls"));
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        let as_postgres = |args: &[&str]| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        };
        let run = |c: &mut Command| {
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
        run(Command::new("chmod").arg("600").arg(dir.join("server.key")));
        let data = dir.join("data");
        run(&mut as_postgres(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "tls",
            "--auth=trust",
            "--no-sync",
        ]));
        let port = ebb_tests::free_port();
        let child = as_postgres(&[
            bin.join("postgres").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-k",
            dir.join("run").to_str().unwrap(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "ssl=on",
            "-c",
            &format!("ssl_cert_file={}", dir.join("server.crt").display()),
            "-c",
            &format!("ssl_key_file={}", dir.join("server.key").display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("postgres.log")).unwrap())
        .spawn()
        .unwrap();
        TlsServer {
            port,
            ca_pem: ca.pem(),
            dir,
            child,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        // runuser's child is the postmaster: stop it by its pid file (SIGINT, a fast shutdown
        // that ends open sessions: the test's runtime is not polling its connections while
        // this runs), then runuser.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            && let Some(pid) = pid.lines().next()
        {
            let _ = std::process::Command::new("kill")
                .args(["-INT", pid.trim()])
                .status();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn ssl_modes_against_a_tls_server() {
    let server = TlsServer::start();
    let factory = ScalerFactory::default();
    let uses_tls = "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let conn = |host: &str, mode: &str| {
        format!(
            "host={host} port={} user=tls dbname=postgres sslmode={mode}",
            server.port
        )
    };
    let with_ca = |connection: String, ca: &str| {
        let meta = map(&[("query", uses_tls), ("targetQueryValue", "1")]);
        let auth = map(&[("connection", &connection), ("ca", ca)]);
        let parsed = parse_trigger(0, "postgresql", &meta, Some(&auth), Some(&BTreeMap::new())).unwrap();
        factory.build(&parsed).unwrap()
    };
    let require = trigger(&factory, &conn("127.0.0.1", "require"), uses_tls);
    let started = Instant::now();
    let first = loop {
        match require.sample().await {
            Ok(s) => break s,
            Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("server not up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(first.value, 1.0, "require uses TLS (unverified)");
    let prefer = trigger(&factory, &conn("127.0.0.1", "prefer"), uses_tls);
    assert_eq!(
        prefer.sample().await.unwrap().value,
        1.0,
        "prefer uses TLS when offered"
    );
    let disable = trigger(&factory, &conn("127.0.0.1", "disable"), uses_tls);
    assert_eq!(disable.sample().await.unwrap().value, 0.0);

    // verify-full: the chain and the name; the test CA is not among the system's roots.
    let full = with_ca(conn("localhost", "verify-full"), &server.ca_pem);
    assert_eq!(full.sample().await.unwrap().value, 1.0);
    let e = trigger(&factory, &conn("localhost", "verify-full"), uses_tls)
        .sample()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");
    let e = with_ca(conn("127.0.0.1", "verify-full"), &server.ca_pem)
        .sample()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // verify-ca: the chain only.
    let ca_only = with_ca(conn("127.0.0.1", "verify-ca"), &server.ca_pem);
    assert_eq!(ca_only.sample().await.unwrap().value, 1.0);
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap()
        .cert
        .pem();
    let e = with_ca(conn("127.0.0.1", "verify-ca"), &other_ca)
        .sample()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");
}
