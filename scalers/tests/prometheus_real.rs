//! The prometheus scaler against the test environment's real Prometheus (`EBB_PROMETHEUS_URL`),
//! which scrapes a `/metrics` endpoint the test serves ([`ScrapeTarget`]), so the value moves:
//! the value read is the value served, and follows it; the server's "no series" is 0 (or an
//! error without `ignoreNullValues`); a query Prometheus rejects, a range vector, several
//! series and an unreachable server are errors, never 0.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_scalers::{Scaler, ScalerError, ScalerFactory, TriggerSample, parse_trigger};
use ebb_tests::prometheus::ScrapeTarget;

struct Env {
    url: String,
    targets: String,
}

fn env() -> Env {
    let vars = common::testenv();
    Env {
        url: common::var(&vars, "EBB_PROMETHEUS_URL").to_string(),
        targets: common::var(&vars, "EBB_PROMETHEUS_TARGETS_DIR").to_string(),
    }
}

/// A prometheus scaler for `query` on `server`, with `extra` metadata.
fn scaler(factory: &ScalerFactory, server: &str, query: &str, extra: &[(&str, &str)]) -> Arc<dyn Scaler> {
    let mut meta: BTreeMap<String, String> = [
        ("serverAddress", server),
        ("query", query),
        ("threshold", "5"),
        ("activationThreshold", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let trigger = parse_trigger(0, "prometheus", &meta, Some(&BTreeMap::new()), None).unwrap();
    factory.build(&trigger).unwrap()
}

/// Samples until the value is `want` (Prometheus has scraped it), or fails after 30 s.
async fn wait_sample(scaler: &dyn Scaler, want: f64) -> TriggerSample {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = scaler.sample().await;
        match &last {
            Ok(sample) if sample.value == want => return *sample,
            _ if Instant::now() > deadline => panic!("never read {want}; last: {last:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn the_value_is_the_scraped_value_and_follows_it() {
    let env = env();
    let target = ScrapeTarget::start(Path::new(&env.targets), 7.0).await.unwrap();
    let started = Instant::now();
    target.wait_scraped(&env.url, 7.0).await.unwrap();
    eprintln!("first scrape visible after {:?}", started.elapsed());
    let factory = ScalerFactory::default();
    let s = scaler(&factory, &env.url, &target.query(), &[]);
    assert_eq!(s.metric_target().target_value, 5.0);
    assert_eq!(
        s.sample().await.unwrap(),
        TriggerSample {
            value: 7.0,
            active: true
        }
    );

    target.set(42.5);
    let moved = Instant::now();
    assert_eq!(
        wait_sample(&*s, 42.5).await,
        TriggerSample {
            value: 42.5,
            active: true
        }
    );
    eprintln!("42.5 read {:?} after it was served", moved.elapsed());
    // At or below activationThreshold (1): inactive, still the value.
    target.set(1.0);
    assert_eq!(
        wait_sample(&*s, 1.0).await,
        TriggerSample {
            value: 1.0,
            active: false
        }
    );
    // An aggregation of the series reads the same; a scalar too.
    let sum = scaler(&factory, &env.url, &format!("sum({})", target.query()), &[]);
    assert_eq!(sum.sample().await.unwrap().value, 1.0);
    let scalar = scaler(&factory, &env.url, &format!("scalar({})", target.query()), &[]);
    assert_eq!(scalar.sample().await.unwrap().value, 1.0);
    assert!(target.scrapes() >= 3, "scraped {} times", target.scrapes());
}

#[tokio::test]
async fn no_series_is_zero_only_with_ignore_null_values() {
    let env = env();
    let factory = ScalerFactory::default();
    let absent = format!(r#"ebb_test_backlog{{ebb_test="{}"}}"#, common::unique("absent"));
    let lenient = scaler(&factory, &env.url, &absent, &[]);
    assert_eq!(
        lenient.sample().await.unwrap(),
        TriggerSample {
            value: 0.0,
            active: false
        }
    );
    let strict = scaler(&factory, &env.url, &absent, &[("ignoreNullValues", "false")]);
    let e = strict.sample().await.unwrap_err();
    assert!(
        matches!(e, ScalerError::BadResponse { .. }) && e.to_string().contains("no series"),
        "{e}"
    );
    // NaN (0/0) follows the same rule, as in KEDA.
    let nan = scaler(&factory, &env.url, "vector(0/0)", &[]);
    assert_eq!(nan.sample().await.unwrap().value, 0.0);
    let nan = scaler(
        &factory,
        &env.url,
        "vector(0/0)",
        &[("ignoreNullValues", "false")],
    );
    assert!(nan.sample().await.unwrap_err().to_string().contains("NaN"));
}

#[tokio::test]
async fn query_mistakes_are_errors_never_zero() {
    let env = env();
    let factory = ScalerFactory::default();
    let cases = [
        // Prometheus answers 400 bad_data with its parse error.
        ("sum(up", "HTTP status 400 Bad Request: bad_data:"),
        ("up[1m]", "range vector"),
        (
            r#"label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")"#,
            "returned 2 series",
        ),
        (r#""text""#, "of type \"string\""),
    ];
    for (query, want) in cases {
        // ignoreNullValues (the default) never turns these into 0.
        let e = scaler(&factory, &env.url, query, &[]).sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{query}: {e}");
        assert!(e.to_string().contains(want), "{query}: {e}");
        assert!(
            e.to_string().contains(&format!("{}/api/v1/query:", env.url)),
            "{e}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_zero() {
    let factory = ScalerFactory::default();
    // A port nothing listens on (bound, then closed).
    let closed = format!("http://127.0.0.1:{}", ebb_tests::free_port());
    let s = scaler(&factory, &closed, "up", &[]);
    let e = s.sample().await.unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    // A server that accepts and never answers: the trigger's timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let s = scaler(&factory, &url, "up", &[("timeout", "500ms")]);
    let started = Instant::now();
    let e = s.sample().await.unwrap_err();
    assert!(matches!(e, ScalerError::Timeout { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// The password of the private Prometheus's `ebb` user, and its bcrypt hash (cost 4) for
/// `basic_auth_users`.
const PASSWORD: &str = "ebb-test-password";
const PASSWORD_BCRYPT: &str = "$2b$04$3g0zjiyPhLvhDJ3nN5YFtuTWj.nv/Gk/rUO01N7tlhT7wMMETCyPy";

/// A CA, a server certificate for 127.0.0.1 and a client certificate, PEM: `(ca, server cert,
/// server key, client cert, client key)`.
fn pki() -> (String, String, String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ebb prometheus test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, usage| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "ebb test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
    (ca.pem(), server, server_key, client, client_key)
}

/// A scaler with `auth` as its TriggerAuthentication's parameters.
fn scaler_with_auth(
    factory: &ScalerFactory,
    server: &str,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Arc<dyn Scaler> {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut all = map(&[
        ("serverAddress", server),
        ("query", "vector(3)"),
        ("threshold", "1"),
    ]);
    all.extend(map(meta));
    let trigger = parse_trigger(0, "prometheus", &all, Some(&map(auth)), None).unwrap();
    factory.build(&trigger).unwrap()
}

/// A Prometheus of the test's own requiring a client certificate from the test CA and basic
/// auth (Prometheus has no bearer tokens; those are checked against a local server in the unit
/// tests): `authModes: tls,basic` with `ca`, `cert`, `key`, `username`, `password` reads the
/// value; a wrong password is Unauthorized; no client certificate or an untrusted server is an
/// error, never 0.
#[tokio::test]
async fn tls_client_certificates_and_basic_auth_reach_a_secured_prometheus() {
    use ebb_tests::prometheus::PrivatePrometheus;
    let (ca, server_cert, server_key, client_cert, client_key) = pki();
    let web = format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n\
         basic_auth_users:\n  ebb: '{PASSWORD_BCRYPT}'\n"
    );
    let prometheus = PrivatePrometheus::start(
        &web,
        &[
            ("ca.pem", &ca),
            ("server.pem", &server_cert),
            ("server-key.pem", &server_key),
        ],
    )
    .await
    .unwrap();
    let url = format!("https://{}", prometheus.addr);
    let factory = ScalerFactory::default();
    let full: &[(&str, &str)] = &[
        ("ca", &ca),
        ("cert", &client_cert),
        ("key", &client_key),
        ("username", "ebb"),
        ("password", PASSWORD),
    ];
    let tls_basic = [("authModes", "tls,basic")];
    let s = scaler_with_auth(&factory, &url, &tls_basic, full);
    assert_eq!(
        s.sample().await.unwrap(),
        TriggerSample {
            value: 3.0,
            active: true
        }
    );

    // A wrong password: the server's 401, named as such, the password nowhere.
    let mut wrong = full.to_vec();
    wrong[4] = ("password", "not-the-password");
    let e = scaler_with_auth(&factory, &url, &tls_basic, &wrong)
        .sample()
        .await
        .unwrap_err();
    assert!(matches!(e, ScalerError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");

    // No client certificate: the server ends the handshake.
    let e = scaler_with_auth(
        &factory,
        &url,
        &[("authModes", "basic")],
        &[full[0], full[3], full[4]],
    )
    .sample()
    .await
    .unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");

    // The server's certificate is not trusted without `ca`, unless unsafeSsl (which ebb applies
    // with tls too; KEDA ignores it then).
    let e = scaler_with_auth(&factory, &url, &tls_basic, &full[1..])
        .sample()
        .await
        .unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let unsafe_ssl = [("authModes", "tls,basic"), ("unsafeSsl", "true")];
    let s = scaler_with_auth(&factory, &url, &unsafe_ssl, &full[1..]);
    assert_eq!(s.sample().await.unwrap().value, 3.0);
}
