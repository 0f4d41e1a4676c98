//! The external and external-push scalers against a real external scaler: the tests crate's
//! `ebb-external-scaler` process (gRPC on 127.0.0.1, built from the same proto with only the
//! generated server stubs), whose value and activity each test sets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_scalers::{FactoryOptions, Scaler, ScalerFactory, parse_trigger};
use ebb_tests::external_scaler::ExternalScalerProcess;
use tokio::sync::watch;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A scaler of `ty` for the object `orders` in `shop`, on its own factory (timeout 2 s).
fn scaler_with(ty: &str, meta: &[(&str, &str)], env: &[(&str, &str)]) -> Arc<dyn Scaler> {
    let factory = ScalerFactory::new(FactoryOptions {
        http_timeout: Duration::from_secs(2),
    });
    let mut trigger = parse_trigger(0, ty, &map(meta), Some(&BTreeMap::new()), Some(&map(env)))
        .unwrap_or_else(|e| panic!("{e}"));
    trigger.context.namespace = Some("shop".into());
    trigger.context.object_name = Some("orders".into());
    factory.build(&trigger).unwrap()
}

fn scaler(ty: &str, address: &str) -> Arc<dyn Scaler> {
    scaler_with(ty, &[("scalerAddress", address)], &[])
}

/// Waits until `rx` holds `want`; how long that took (panics after `within`).
async fn flips_to(rx: &mut watch::Receiver<bool>, want: bool, within: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(within, rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("activity not {want} within {within:?}"))
        .expect("channel open");
    start.elapsed()
}

#[tokio::test]
async fn value_target_activity_and_the_object_reach_the_server() {
    let mut server = ExternalScalerProcess::start().await.unwrap();
    server.set_value(12.0).await.unwrap();
    let s = scaler_with(
        "external",
        &[
            ("scalerAddress", &server.address),
            ("targetSize", "4"),
            ("metricName", "pending"),
            ("tokenFromEnv", "TOKEN"),
        ],
        &[("TOKEN", "from-the-container")],
    );
    let sample = s.sample().await.unwrap();
    assert_eq!(
        sample.value, 3.0,
        "12 against the server's target 4, served against 1"
    );
    assert!(!sample.active);
    assert_eq!(s.metric_target().target_value, 1.0);
    server.set_active(true).await.unwrap();
    server.set_value(2.0).await.unwrap();
    let sample = s.sample().await.unwrap();
    assert!(sample.active, "IsActive, not the value, decides");
    assert_eq!(sample.value, 0.5);
    let last = server.last().await.unwrap();
    assert_eq!((last.name.as_str(), last.namespace.as_str()), ("orders", "shop"));
    assert_eq!(
        last.metadata,
        map(&[
            ("metricName", "pending"),
            ("scalerAddress", &server.address),
            ("targetSize", "4"),
            ("tokenFromEnv", "from-the-container"),
        ]),
        "every key passed, FromEnv resolved"
    );
    // The target from the server (no targetSize in the metadata) follows it.
    let plain = scaler("external", &server.address);
    server.set_target(0.5).await.unwrap();
    assert_eq!(plain.sample().await.unwrap().value, 4.0);
    server.set_target(0.0).await.unwrap();
    let e = plain.sample().await.unwrap_err();
    assert_eq!(e.kind(), "bad_response", "a target of 0 is an error: {e}");
}

#[tokio::test]
async fn failures_are_errors_never_zero() {
    // Nothing listens there.
    let port = ebb_tests::free_port();
    let s = scaler("external", &format!("127.0.0.1:{port}"));
    let e = s.sample().await.unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");

    let mut server = ExternalScalerProcess::start().await.unwrap();
    let s = scaler("external", &server.address);
    s.sample().await.unwrap();
    for (code, kind) in [(7, "unauthorized"), (5, "bad_response"), (14, "unreachable")] {
        server.fail_with(code).await.unwrap();
        let e = s.sample().await.unwrap_err();
        assert_eq!(e.kind(), kind, "gRPC code {code}: {e}");
    }
    server.fail_with(0).await.unwrap();
    s.sample().await.unwrap();
    // The server goes away: the next samples fail, and recover when it is back on its port.
    let port = server.port();
    server.kill().await;
    let e = s.sample().await.unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");
    let mut server = ExternalScalerProcess::start_on(port).await.unwrap();
    server.set_value(7.0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.sample().await {
            Ok(sample) => break assert_eq!(sample.value, 7.0 / 5.0),
            Err(e) if Instant::now() > deadline => panic!("no recovery: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn pushes_wake_at_once_and_streams_reconnect() {
    let mut server = ExternalScalerProcess::start().await.unwrap();
    let polled = scaler("external", &server.address);
    assert!(polled.activity_changes().is_none(), "external polls only");
    let s = scaler("external-push", &server.address);
    let mut rx = s.activity_changes().expect("external-push streams");
    // Let the stream open (its first message, inactive, flips nothing).
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.last().await.unwrap().streams == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("stream opened");
    let mut latencies = Vec::new();
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await; // past the flip spacing
        server.set_active(true).await.unwrap();
        latencies.push(flips_to(&mut rx, true, Duration::from_secs(2)).await);
        assert!(s.sample().await.unwrap().active, "round {round}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.set_active(false).await.unwrap();
        flips_to(&mut rx, false, Duration::from_secs(2)).await;
    }
    latencies.sort();
    eprintln!("push → channel latencies: {latencies:?}");
    assert!(latencies[4] < Duration::from_millis(500), "{latencies:?}");

    // Killed mid-stream, started again on the same port: the stream comes back by itself.
    let port = server.port();
    server.kill().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut server = ExternalScalerProcess::start_on(port).await.unwrap();
    server.set_active(true).await.unwrap();
    let took = flips_to(&mut rx, true, Duration::from_secs(10)).await;
    eprintln!("reconnected and pushed within {took:?}");
    assert!(server.last().await.unwrap().streams >= 1);
    // The stream ends with its trigger.
    drop(s);
    let mut rx_closed = rx;
    tokio::time::timeout(Duration::from_secs(2), async {
        while rx_closed.changed().await.is_ok() {}
    })
    .await
    .expect("the channel closes when the trigger is dropped");
}
