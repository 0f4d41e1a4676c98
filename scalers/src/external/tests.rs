//! The external triggers' parse table (KEDA's cases and ebb's), the typed config and the build.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::common::tls::Trust;
use crate::params::tests_support::parse_with;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn parse_table() {
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        // KEDA's table: empty, well formed (TLS from metadata and auth), scalerAddress missing.
        (&[], &[], Some("scalerAddress")),
        (
            &[
                ("scalerAddress", "myservice"),
                ("test1", "7"),
                ("test2", "SAMPLE_CREDS"),
                ("enableTLS", "true"),
                ("insecureSkipVerify", "true"),
            ],
            &[("caCert", CA)],
            None,
        ),
        (
            &[("test1", "1"), ("test2", "SAMPLE_CREDS")],
            &[],
            Some("scalerAddress"),
        ),
        // ebb's own.
        (&[("scalerAddress", "s:9090"), ("unsafeSsl", "true")], &[], None),
        (
            &[("scalerAddress", "s:9090"), ("enableTLS", "yes")],
            &[],
            Some("enableTLS"),
        ),
        (
            &[("scalerAddress", "s:9090"), ("unsafeSsl", "1")],
            &[],
            Some("unsafeSsl"),
        ),
        (
            &[("scalerAddress", "unix:///run/s.sock")],
            &[],
            Some("scalerAddress"),
        ),
        (&[("scalerAddress", "s:0")], &[], Some("scalerAddress")),
        (
            &[("scalerAddress", "s:9090")],
            &[("tlsClientCert", CA)],
            Some("tlsClientCert, tlsClientKey"),
        ),
        (
            &[("scalerAddress", "s:9090")],
            &[("tlsClientKey", "k")],
            Some("tlsClientCert, tlsClientKey"),
        ),
        (
            &[("scalerAddress", "s:9090")],
            &[("tlsClientCert", CA), ("tlsClientKey", "k")],
            None,
        ),
    ];
    for decl in [&DECL, &PUSH_DECL] {
        for (meta, auth, error) in cases {
            let result = parse_with(decl, meta, auth);
            match (error, result) {
                (None, Ok(p)) => assert!(p.warnings.is_empty(), "{meta:?}: {:?}", p.warnings),
                (Some(param), Err(e)) => assert_eq!(e[0].param, *param, "{meta:?}: {e:?}"),
                (want, got) => panic!(
                    "{}: {meta:?}: want error {want:?}, got {got:?}",
                    decl.trigger_type
                ),
            }
        }
    }
}

#[test]
fn credentials_come_from_auth_only_and_the_key_is_secret() {
    let p = parse_with(&DECL, &[("scalerAddress", "s:1"), ("caCert", CA)], &[]).unwrap();
    assert_eq!(p.str("caCert"), None, "caCert in metadata is only passed through");
    assert_eq!(p.passed_metadata().0.get("caCert").map(String::as_str), Some(CA));
    let p = parse_with(
        &DECL,
        &[("scalerAddress", "s:1")],
        &[("tlsClientCert", CA), ("tlsClientKey", "hunter2")],
    )
    .unwrap();
    let json = p.redacted_json().to_string();
    assert!(!json.contains("hunter2"), "{json}");
}

#[test]
fn typed_config() {
    let config = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
        ExternalConfig::try_from(&parse_with(&DECL, meta, auth).unwrap()).unwrap()
    };
    let plain = config(
        &[("scalerAddress", "dns:///scaler.ns:9090"), ("queue", "orders")],
        &[],
    );
    assert_eq!(plain.address.authority(), "scaler.ns:9090");
    assert_eq!(plain.tls, None, "plain text unless TLS is asked for");
    let passed: BTreeMap<&str, &str> = plain
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        passed,
        BTreeMap::from([("queue", "orders"), ("scalerAddress", "dns:///scaler.ns:9090")]),
        "every key is passed, the declared ones too, as KEDA does"
    );
    // unsafeSsl alone does not turn TLS on (as KEDA).
    assert_eq!(
        config(&[("scalerAddress", "s:1"), ("unsafeSsl", "true")], &[]).tls,
        None
    );
    let tls = config(&[("scalerAddress", "s:1"), ("enableTLS", "true")], &[])
        .tls
        .unwrap();
    assert_eq!(tls.trust, Trust::System);
    assert_eq!(tls.alpn, [b"h2".to_vec()]);
    let tls = config(&[("scalerAddress", "s:1")], &[("caCert", CA)])
        .tls
        .unwrap();
    assert_eq!(tls.trust, Trust::SystemAnd(CA.into()), "a CA implies TLS");
    let tls = config(
        &[("scalerAddress", "s:1"), ("unsafeSsl", "true")],
        &[("tlsClientCert", CA), ("tlsClientKey", "k")],
    )
    .tls
    .unwrap();
    assert_eq!(tls.trust, Trust::AnyCertificate);
    assert!(tls.client_cert.is_some(), "a client certificate implies TLS");
    let debug = format!(
        "{:?}",
        config(&[("scalerAddress", "s:1"), ("token", "hunter2")], &[])
    );
    assert!(!debug.contains("hunter2") && debug.contains("token"), "{debug}");
}

#[test]
fn metric_names_and_thresholds() {
    let meta: BTreeMap<String, String> = [("scalerAddress", "Queue-Scaler.shop:9090")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let t = crate::parse_trigger(2, "external-push", &meta, Some(&BTreeMap::new()), None).unwrap();
    assert_eq!(t.metric_name, "s2-external-push-queue-scaler-shop");
    assert_eq!(t.thresholds.target, 1.0);
    let t = crate::parse_trigger(0, "external", &meta, Some(&BTreeMap::new()), None).unwrap();
    assert_eq!(t.metric_name, "s0-external-queue-scaler-shop");
}

#[test]
fn triggers_on_one_server_share_its_channel() {
    let factory = crate::ScalerFactory::default();
    let build = |ty: &str, meta: &[(&str, &str)], auth: &[(&str, &str)]| {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut t = crate::parse_trigger(0, ty, &map(meta), Some(&map(auth)), None).unwrap();
        t.context.object_name = Some("orders".into());
        factory.build(&t)
    };
    let a = build("external", &[("scalerAddress", "s:9090"), ("queue", "a")], &[]).unwrap();
    let b = build(
        "external-push",
        &[("scalerAddress", "s:9090"), ("queue", "b")],
        &[],
    )
    .unwrap();
    let c = build(
        "external",
        &[("scalerAddress", "s:9090"), ("enableTLS", "true")],
        &[],
    )
    .unwrap();
    let clients = clients(&factory);
    assert_eq!(clients.server_count(), 2, "one per address and TLS settings");
    assert_eq!(b.trigger_type(), "external-push");
    assert!(a.activity_changes().is_none() && b.activity_changes().is_some());
    drop((a, b, c));
    assert_eq!(clients.server_count(), 0, "a server goes with its last trigger");
    let e = build(
        "external",
        &[("scalerAddress", "s:9090")],
        &[("caCert", "not pem")],
    )
    .err();
    assert_eq!(e.map(|e| e.kind()), Some("invalid_config"));
}

proptest! {
    // Arbitrary metadata (passed through) and addresses never panic the parser or the config.
    #[test]
    fn arbitrary_metadata_never_panics(
        address in ".{0,40}",
        meta in prop::collection::btree_map("[a-zA-Z]{1,24}", ".{0,40}", 0..12),
    ) {
        let mut meta = meta;
        meta.insert("scalerAddress".into(), address);
        let parsed = crate::params::parse(&DECL, &crate::params::TriggerInput {
            metadata: &meta,
            auth_params: Some(&BTreeMap::new()),
            resolved_env: Some(&BTreeMap::new()),
        });
        if let Ok(p) = parsed {
            let config = ExternalConfig::try_from(&p);
            prop_assert!(config.is_ok());
            prop_assert!(p.warnings.is_empty());
        }
    }
}
