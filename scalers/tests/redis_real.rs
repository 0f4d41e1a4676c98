//! The redis and redis-streams scalers against the test environment's Redis (`EBB_REDIS_ADDRESS`,
//! Redis 7): list (and set, sorted set, hash) lengths, each stream mode, one connection and one
//! pipelined round for many triggers, the activity watcher, ACL users made at runtime, and the
//! errors (wrong type, wrong password, no permission, server unreachable), never a 0.
//!
//! Data is written with `redis-cli` (ebb_tests::redis), not with ebb's own client. Needs
//! `tests/env/testenv.sh up`; without it these tests fail, they never pass silently.

mod common;
use common::{testenv, unique, var};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ebb_scalers::redis::{Query, RedisClients, RedisScaler, RedisServer, RedisTriggerConfig};
use ebb_scalers::{Scaler, ScalerError, ScalerFactory, Thresholds, parse_trigger};
use ebb_tests::redis::RedisCli;

struct Redis {
    address: String,
    cli: RedisCli,
}

fn redis() -> Redis {
    let env = testenv();
    let address = var(&env, "EBB_REDIS_ADDRESS").to_string();
    let cli = RedisCli::new(&address, env.get("EBB_REDIS_SERVER_BIN").map(String::as_str));
    cli.run(&["PING"])
        .unwrap_or_else(|e| panic!("Redis at {address} does not answer: {e}; run `tests/env/testenv.sh up`"));
    Redis { address, cli }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn sample(
    factory: &ScalerFactory,
    ty: &str,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<ebb_scalers::TriggerSample, ScalerError> {
    let trigger = parse_trigger(0, ty, &map(meta), Some(&map(auth)), None).unwrap();
    factory.build(&trigger)?.sample().await
}

async fn value(factory: &ScalerFactory, ty: &str, meta: &[(&str, &str)]) -> f64 {
    sample(factory, ty, meta, &[])
        .await
        .unwrap_or_else(|e| panic!("{ty} {meta:?}: {e}"))
        .value
}

#[tokio::test]
async fn lists_sets_and_hashes_are_counted_a_missing_key_is_zero_a_string_is_an_error() {
    let r = redis();
    let f = ScalerFactory::default();
    let key = unique("ebb_list");
    let a = r.address.as_str();
    let read = |k: String| {
        let f = f.clone();
        let a = a.to_string();
        async move { value(&f, "redis", &[("address", a.as_str()), ("listName", k.as_str())]).await }
    };
    assert_eq!(read(key.clone()).await, 0.0, "a missing key is 0");
    r.cli.run(&["RPUSH", &key, "a", "b", "c"]).unwrap();
    assert_eq!(read(key.clone()).await, 3.0);
    let set = format!("{key}_set");
    r.cli.run(&["SADD", &set, "a", "b"]).unwrap();
    assert_eq!(read(set.clone()).await, 2.0);
    let zset = format!("{key}_zset");
    r.cli
        .run(&["ZADD", &zset, "1", "a", "2", "b", "3", "c", "4", "d"])
        .unwrap();
    assert_eq!(read(zset.clone()).await, 4.0);
    let hash = format!("{key}_hash");
    r.cli.run(&["HSET", &hash, "a", "1"]).unwrap();
    assert_eq!(read(hash.clone()).await, 1.0);

    let string = format!("{key}_string");
    r.cli.run(&["SET", &string, "x"]).unwrap();
    let e = sample(&f, "redis", &[("address", a), ("listName", string.as_str())], &[])
        .await
        .unwrap_err();
    assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");

    // Activation: above activationListLength.
    let meta = [
        ("address", a),
        ("listName", key.as_str()),
        ("activationListLength", "3"),
    ];
    assert!(
        !sample(&f, "redis", &meta, &[]).await.unwrap().active,
        "3 is not above 3"
    );
    r.cli.run(&["RPUSH", &key, "d"]).unwrap();
    assert!(sample(&f, "redis", &meta, &[]).await.unwrap().active);

    // Another database.
    let db = [("address", a), ("listName", key.as_str()), ("databaseIndex", "3")];
    assert_eq!(value(&f, "redis", &db).await, 0.0);
    r.cli.run_in(3, &["RPUSH", &key, "x", "y"]).unwrap();
    assert_eq!(value(&f, "redis", &db).await, 2.0);
    r.cli.run_in(3, &["DEL", &key]).unwrap();
    r.cli.run(&["DEL", &key, &set, &zset, &hash, &string]).unwrap();
}

#[tokio::test]
async fn each_stream_mode_reads_its_value() {
    let r = redis();
    let f = ScalerFactory::default();
    let stream = unique("ebb_stream");
    let a = r.address.as_str();
    let length = [("address", a), ("stream", stream.as_str())];
    let pending = [
        ("address", a),
        ("stream", stream.as_str()),
        ("consumerGroup", "workers"),
    ];
    let lag = [
        ("address", a),
        ("stream", stream.as_str()),
        ("consumerGroup", "workers"),
        ("lagCount", "2"),
    ];
    // A missing stream is 0 in every mode.
    for meta in [&length[..], &pending[..], &lag[..]] {
        assert_eq!(value(&f, "redis-streams", meta).await, 0.0, "{meta:?}");
    }
    for i in 0..10 {
        r.cli.run(&["XADD", &stream, "*", "n", &i.to_string()]).unwrap();
    }
    assert_eq!(value(&f, "redis-streams", &length).await, 10.0);
    // No group yet: pending is an error (a typo would otherwise read 0 for ever), the lag is
    // the stream's length.
    let e = sample(&f, "redis-streams", &pending, &[]).await.unwrap_err();
    assert!(e.to_string().contains("NOGROUP"), "{e}");
    assert_eq!(value(&f, "redis-streams", &lag).await, 10.0);

    r.cli.run(&["XGROUP", "CREATE", &stream, "workers", "0"]).unwrap();
    r.cli.run(&["XGROUP", "CREATE", &stream, "others", "$"]).unwrap();
    let read = r
        .cli
        .run(&[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "COUNT",
            "4",
            "STREAMS",
            &stream,
            ">",
        ])
        .unwrap();
    let first_id = read
        .lines()
        .find_map(|l| l.split('"').nth(1).filter(|id| id.contains('-')))
        .unwrap_or_else(|| panic!("no entry id in {read}"))
        .to_string();
    assert_eq!(value(&f, "redis-streams", &pending).await, 4.0);
    assert_eq!(value(&f, "redis-streams", &lag).await, 6.0);
    r.cli.run(&["XACK", &stream, "workers", &first_id]).unwrap();
    assert_eq!(value(&f, "redis-streams", &pending).await, 3.0);
    assert_eq!(
        value(&f, "redis-streams", &lag).await,
        6.0,
        "acks do not change the lag"
    );
    // The other group's lag is its own.
    let others = [
        ("address", a),
        ("stream", stream.as_str()),
        ("consumerGroup", "others"),
        ("lagCount", "2"),
    ];
    assert_eq!(value(&f, "redis-streams", &others).await, 0.0);
    // Activation on activationLagCount.
    let active = [
        ("address", a),
        ("stream", stream.as_str()),
        ("consumerGroup", "workers"),
        ("lagCount", "2"),
        ("activationLagCount", "6"),
    ];
    assert!(
        !sample(&f, "redis-streams", &active, &[]).await.unwrap().active,
        "6 is not above 6"
    );
    // A stream key holding a list is an error, never 0.
    let list = unique("ebb_not_a_stream");
    r.cli.run(&["RPUSH", &list, "a"]).unwrap();
    for mode in [
        &[][..],
        &[("consumerGroup", "g")][..],
        &[("consumerGroup", "g"), ("lagCount", "1")][..],
    ] {
        let mut meta = vec![("address", a), ("stream", list.as_str())];
        meta.extend_from_slice(mode);
        let e = sample(&f, "redis-streams", &meta, &[]).await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{mode:?}: {e}");
    }
    r.cli.run(&["DEL", &stream, &list]).unwrap();
}

fn server(address: &str, user: &str, password: &str) -> RedisServer {
    let meta = map(&[("address", address), ("listName", "x")]);
    let auth = map(&[("username", user), ("password", password)]);
    RedisServer::from_params(
        &parse_trigger(0, "redis", &meta, Some(&auth), None)
            .unwrap()
            .params,
    )
    .unwrap()
}

const THRESHOLDS: Thresholds = Thresholds {
    target: 5.0,
    activation: 0.0,
};

#[tokio::test]
async fn many_triggers_one_connection_one_round_and_the_watcher_pipelines_them_too() {
    let r = redis();
    let user = unique("ebb_pipeline");
    let password = unique("pw");
    r.cli.make_user(&user, &password, "~*", "+@all").unwrap();
    let clients = RedisClients::new(Duration::from_secs(3));
    let stream = unique("ebb_pipe_stream");
    let keys: Vec<String> = (0..6).map(|i| unique(&format!("ebb_pipe_{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        for n in 0..=i {
            r.cli.run(&["RPUSH", key, &n.to_string()]).unwrap();
        }
    }
    r.cli.run(&["XADD", &stream, "*", "a", "1"]).unwrap();
    let mut scalers: Vec<RedisScaler> = keys
        .iter()
        .map(|key| {
            let config = RedisTriggerConfig {
                server: server(&r.address, &user, &password),
                query: Query::ListLength { key: key.clone() },
            };
            RedisScaler::new(&clients, "redis", config, THRESHOLDS)
        })
        .collect();
    let streams = RedisTriggerConfig {
        server: server(&r.address, &user, &password),
        query: Query::Lag {
            stream: stream.clone(),
            group: "g".into(),
        },
    };
    scalers.push(RedisScaler::new(&clients, "redis-streams", streams, THRESHOLDS));
    assert_eq!(clients.connection_count(), 1);

    let values = futures::future::join_all(scalers.iter().map(|s| s.value())).await;
    let values: Vec<f64> = values.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0]);
    let stats = scalers[0].connection_stats();
    // The first read goes alone; the six queued behind it share the second round trip.
    assert!(stats.rounds <= 2, "{stats:?}");
    assert_eq!((stats.connects, stats.commands), (1, 8), "{stats:?}");
    assert_eq!(
        r.cli.connections_of(&user).unwrap(),
        1,
        "one connection on the server"
    );

    // The watcher: each round is one pipeline of all seven reads, on the same connection.
    let _changes: Vec<_> = scalers.iter().map(|s| s.activity_changes().unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let after = scalers[0].connection_stats();
    let rounds = after.rounds - stats.rounds;
    assert!((3..=6).contains(&rounds), "about one round per 0.5 s: {after:?}");
    assert_eq!(
        after.commands - stats.commands,
        rounds * 8,
        "every round reads every trigger"
    );
    assert_eq!((after.connects, r.cli.connections_of(&user).unwrap()), (1, 1));

    // The server closes the connection (as a restart or its idle timeout would): the next read
    // dials again within its round, no error.
    r.cli.run(&["CLIENT", "KILL", "USER", &user]).unwrap();
    assert_eq!(scalers[5].value().await.unwrap(), 6.0);
    assert_eq!(scalers[0].connection_stats().connects, 2);

    drop(scalers);
    r.cli.drop_user(&user).unwrap();
    let mut all: Vec<&str> = keys.iter().map(String::as_str).collect();
    all.insert(0, "DEL");
    all.push(&stream);
    r.cli.run(&all).unwrap();
}

#[tokio::test]
async fn a_list_going_non_empty_wakes_the_trigger_within_a_second() {
    let r = redis();
    let f = ScalerFactory::default();
    let key = unique("ebb_wake");
    let trigger = parse_trigger(
        0,
        "redis",
        &map(&[("address", &r.address), ("listName", &key)]),
        Some(&BTreeMap::new()),
        None,
    )
    .unwrap();
    let scaler = f.build(&trigger).unwrap();
    assert!(!scaler.sample().await.unwrap().active);
    let mut changes = scaler.activity_changes().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed = Instant::now();
    r.cli.run(&["LPUSH", &key, "job"]).unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("the watcher saw the item")
        .unwrap();
    let took = pushed.elapsed();
    assert!(*changes.borrow());
    assert!(took < Duration::from_secs(1), "{took:?}");
    r.cli.run(&["DEL", &key]).unwrap();
}

#[tokio::test]
async fn acl_users_wrong_passwords_missing_permissions_and_no_server_are_errors() {
    let r = redis();
    let f = ScalerFactory::default();
    let user = unique("ebb_acl");
    let password = unique("pw");
    let key = unique("ebb_acl_list");
    r.cli
        .make_user(&user, &password, &format!("~{key}"), "+@all")
        .unwrap();
    r.cli.run(&["RPUSH", &key, "a", "b"]).unwrap();
    let meta = [("address", r.address.as_str()), ("listName", key.as_str())];
    let good = [("username", user.as_str()), ("password", password.as_str())];
    assert_eq!(sample(&f, "redis", &meta, &good).await.unwrap().value, 2.0);

    let wrong = [("username", user.as_str()), ("password", "not-the-password")];
    let e = sample(&f, "redis", &meta, &wrong).await.unwrap_err();
    assert!(matches!(e, ScalerError::Unauthorized { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("not-the-password"), "{e:?}");

    // The user may not read other keys: NOPERM, an error.
    let other = [
        ("address", r.address.as_str()),
        ("listName", "ebb_somewhere_else"),
    ];
    let e = sample(&f, "redis", &other, &good).await.unwrap_err();
    assert!(matches!(e, ScalerError::Unauthorized { .. }), "{e}");

    // Nothing listens: an error, never 0.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let gone = [("address", closed.as_str()), ("listName", "x")];
    let e = sample(&f, "redis", &gone, &[]).await.unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    let e = sample(
        &f,
        "redis-streams",
        &[("address", closed.as_str()), ("stream", "s")],
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");

    r.cli.drop_user(&user).unwrap();
    r.cli.run(&["DEL", &key]).unwrap();
}

/// A private redis-server (`EBB_REDIS_SERVER_BIN`) with a plain port and a TLS port whose
/// certificate comes from a test CA; killed when dropped.
struct TlsRedis {
    child: std::process::Child,
    plain: String,
    tls: String,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    _dir: TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_redis(server_bin: &str) -> TlsRedis {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ebb redis test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "ebb redis test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &ca).unwrap(), key)
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);

    let dir = std::env::temp_dir().join(unique("ebb_redis_tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca_file) = (
        write("server.pem", &server.pem()),
        write("server.key", &server_key.serialize_pem()),
        write("ca.pem", &ca.pem()),
    );
    let (plain, tls) = (ebb_tests::free_port(), ebb_tests::free_port());
    let child = std::process::Command::new(server_bin)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &plain.to_string(),
            "--tls-port",
            &tls.to_string(),
        ])
        .args([
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_file,
        ])
        .args([
            "--tls-auth-clients",
            "optional",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", &dir.display().to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {server_bin}: {e}"));
    let started = TlsRedis {
        child,
        plain: format!("127.0.0.1:{plain}"),
        tls: format!("127.0.0.1:{tls}"),
        ca_pem: ca.pem(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
        _dir: TempDir(dir),
    };
    let cli = RedisCli::new(&started.plain, Some(server_bin));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli.run(&["PING"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "the private redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started
}

#[tokio::test]
async fn tls_with_the_servers_ca_a_client_certificate_or_unsafe_ssl() {
    let env = testenv();
    let server = tls_redis(var(&env, "EBB_REDIS_SERVER_BIN"));
    let cli = RedisCli::new(&server.plain, env.get("EBB_REDIS_SERVER_BIN").map(String::as_str));
    cli.run(&["RPUSH", "jobs", "a", "b", "c"]).unwrap();
    let f = ScalerFactory::default();
    let meta = [
        ("address", server.tls.as_str()),
        ("listName", "jobs"),
        ("enableTLS", "true"),
    ];
    let with_ca = [
        ("ca", server.ca_pem.as_str()),
        ("cert", server.client_cert_pem.as_str()),
        ("key", server.client_key_pem.as_str()),
    ];
    assert_eq!(sample(&f, "redis", &meta, &with_ca).await.unwrap().value, 3.0);
    let ca_only = [("ca", server.ca_pem.as_str())];
    assert_eq!(sample(&f, "redis", &meta, &ca_only).await.unwrap().value, 3.0);
    // The test CA is not among the system's roots: the handshake fails, an error.
    let e = sample(&f, "redis", &meta, &[]).await.unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    let unsafe_ssl = [
        ("address", server.tls.as_str()),
        ("listName", "jobs"),
        ("unsafeSsl", "true"),
    ];
    assert_eq!(
        sample(&f, "redis", &unsafe_ssl, &[("tls", "enable")])
            .await
            .unwrap()
            .value,
        3.0
    );
    // Plain text to the TLS port: an error, never 0.
    let plain = [("address", server.tls.as_str()), ("listName", "jobs")];
    let e = sample(&f, "redis", &plain, &[]).await.unwrap_err();
    assert!(!matches!(e, ScalerError::InvalidConfig(_)), "{e}");
}
