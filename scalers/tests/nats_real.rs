//! The nats-jetstream scaler against the test environment's nats-server (single node, JetStream
//! on): the consumer's lag read through the monitoring endpoint (`/jsz`, KEDA's way) and through
//! the JetStream API (`natsServerURL`), after a partial fetch and partial acks.
//!
//! Needs `tests/env/testenv.sh up` (its env file: `$EBB_TESTENV_FILE` or
//! `~/.cache/ebb-testenv/run/env`); without it these tests fail, they never pass silently.

mod common;
use common::{testenv, unique, var};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use ebb_scalers::metrics_api::MetricsApiClient;
use ebb_scalers::nats_jetstream::{NatsJetStreamClients, NatsJetStreamConfig, NatsJetStreamScaler};
use ebb_scalers::parse_trigger;
use ebb_scalers::{Scaler, ScalerError, ScalerFactory, TriggerSample};
use futures::StreamExt;

/// A stream with a durable pull consumer `worker` (explicit ack): 20 published, 5 fetched,
/// 3 of those acked (double ack: the server confirmed each). Lag = 15 pending + 2 unacked.
struct Backlog {
    js: jetstream::Context,
    stream: String,
}

impl Backlog {
    async fn make(nats_url: &str) -> Self {
        let client = async_nats::connect(nats_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}; run `tests/env/testenv.sh up`"));
        let js = jetstream::new(client);
        let name = unique("EBB_ORDERS");
        let subject = name.to_lowercase();
        let consumer = ebb_tests::nats::stream_with_worker(&js, &name, &subject)
            .await
            .unwrap();
        for i in 0..20 {
            js.publish(format!("{subject}.{i}"), format!("order {i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut batch = consumer.fetch().max_messages(5).messages().await.unwrap();
        let mut fetched = Vec::new();
        while let Some(message) = batch.next().await {
            fetched.push(message.unwrap());
        }
        assert_eq!(fetched.len(), 5);
        for message in &fetched[..3] {
            message.double_ack().await.unwrap();
        }
        let info = js
            .get_stream(&name)
            .await
            .unwrap()
            .consumer_info("worker")
            .await
            .unwrap();
        assert_eq!(
            (info.num_pending, info.num_ack_pending),
            (15, 2),
            "the server's own view"
        );
        Self { js, stream: name }
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

fn build(
    factory: &ScalerFactory,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<Arc<dyn Scaler>, ScalerError> {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (meta, auth) = (map(meta), map(auth));
    let trigger = parse_trigger(0, "nats-jetstream", &meta, Some(&auth), None).unwrap();
    factory.build(&trigger)
}

#[tokio::test]
async fn lag_is_pending_plus_unacked_through_both_paths() {
    let env = testenv();
    let (nats_url, monitoring) = (var(&env, "EBB_NATS_URL"), var(&env, "EBB_NATS_MONITORING"));
    let backlog = Backlog::make(nats_url).await;
    let factory = ScalerFactory::default();
    let stream = backlog.stream.as_str();

    let via_jsz = build(
        &factory,
        &[
            ("natsServerMonitoringEndpoint", monitoring),
            ("account", "$G"),
            ("stream", stream),
            ("consumer", "worker"),
        ],
        &[],
    )
    .unwrap();
    // natsServerURL from the TriggerAuthentication, as a credentialed URL would be.
    let via_api = build(
        &factory,
        &[("stream", stream), ("consumer", "worker")],
        &[("natsServerURL", nats_url)],
    )
    .unwrap();
    for scaler in [&via_jsz, &via_api] {
        let sample = scaler.sample().await.unwrap();
        assert_eq!(sample.value, 17.0, "num_pending 15 + num_ack_pending 2");
        assert!(sample.active);
        assert_eq!(
            scaler.metric_target().target_value,
            10.0,
            "KEDA's default lagThreshold"
        );
    }

    // Activity at the boundary: active only when the lag is strictly above the threshold.
    for (threshold, active) in [("16", true), ("17", false), ("18", false)] {
        let jsz = build(
            &factory,
            &[
                ("natsServerMonitoringEndpoint", monitoring),
                ("accountID", "$G"),
                ("stream", stream),
                ("consumer", "worker"),
                ("activationLagThreshold", threshold),
            ],
            &[],
        )
        .unwrap();
        let api = build(
            &factory,
            &[
                ("natsServerURL", nats_url),
                ("stream", stream),
                ("consumer", "worker"),
                ("activationLagThreshold", threshold),
            ],
            &[],
        )
        .unwrap();
        for scaler in [jsz, api] {
            assert_eq!(
                scaler.sample().await.unwrap(),
                TriggerSample { value: 17.0, active },
                "activationLagThreshold {threshold}"
            );
        }
    }
    backlog.delete().await;
}

#[tokio::test]
async fn missing_consumers_and_streams_are_errors_on_both_paths() {
    let env = testenv();
    let (nats_url, monitoring) = (var(&env, "EBB_NATS_URL"), var(&env, "EBB_NATS_MONITORING"));
    let backlog = Backlog::make(nats_url).await;
    let factory = ScalerFactory::default();
    let stream = backlog.stream.as_str();
    let missing_stream = unique("EBB_NOPE");
    for (stream, consumer) in [(stream, "nobody"), (missing_stream.as_str(), "worker")] {
        let jsz = build(
            &factory,
            &[
                ("natsServerMonitoringEndpoint", monitoring),
                ("account", "$G"),
                ("stream", stream),
                ("consumer", consumer),
            ],
            &[],
        )
        .unwrap();
        let e = jsz.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!("no consumer {consumer:?}")),
            "{e}"
        );

        let api = build(
            &factory,
            &[
                ("natsServerURL", nats_url),
                ("stream", stream),
                ("consumer", consumer),
            ],
            &[],
        )
        .unwrap();
        let e = api.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(e.to_string().contains("not found"), "{e}");
    }
    // A wrong account finds nothing through /jsz.
    let jsz = build(
        &factory,
        &[
            ("natsServerMonitoringEndpoint", monitoring),
            ("account", "NOT_AN_ACCOUNT"),
            ("stream", stream),
            ("consumer", "worker"),
        ],
        &[],
    )
    .unwrap();
    assert!(jsz.sample().await.is_err());
    backlog.delete().await;
}

#[tokio::test]
async fn one_connection_per_server_and_credentials() {
    let env = testenv();
    let nats_url = var(&env, "EBB_NATS_URL");
    let backlog = Backlog::make(nats_url).await;
    let http = Arc::new(MetricsApiClient::new(Duration::from_secs(3)).unwrap());
    let clients = Arc::new(NatsJetStreamClients::new(http, Duration::from_secs(3)));
    let scaler = |url: &str| {
        let meta: BTreeMap<String, String> = [
            ("natsServerURL", url),
            ("stream", &backlog.stream),
            ("consumer", "worker"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let t = parse_trigger(0, "nats-jetstream", &meta, Some(&BTreeMap::new()), None).unwrap();
        NatsJetStreamScaler::new(clients.clone(), NatsJetStreamConfig::try_from(&t.params).unwrap())
    };
    let (a, b) = (scaler(nats_url), scaler(nats_url));
    assert_eq!(a.sample().await.unwrap().value, 17.0);
    assert_eq!(b.sample().await.unwrap().value, 17.0);
    assert_eq!(
        clients.connection_count(),
        1,
        "same URL and credentials: one connection"
    );

    // Other credentials, another connection. This server has no auth configured, so it accepts
    // any user; the point is the pool key and that the password never shows.
    let with_user = nats_url.replacen("nats://", "nats://ebb:hunter2@", 1);
    let c = scaler(&with_user);
    let outcome = c.sample().await;
    assert_eq!(clients.connection_count(), 2);
    if let Err(e) = &outcome {
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");
    }
    assert!(!format!("{c:?}").contains("hunter2"));
    backlog.delete().await;
}

#[tokio::test]
async fn unreachable_servers_are_errors_without_credentials() {
    let _env = testenv();
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let factory = ScalerFactory::default();
    let endpoint = format!("127.0.0.1:{port}");
    let jsz = build(
        &factory,
        &[
            ("natsServerMonitoringEndpoint", &endpoint),
            ("account", "$G"),
            ("stream", "S"),
            ("consumer", "c"),
        ],
        &[],
    )
    .unwrap();
    let e = jsz.sample().await.unwrap_err();
    assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");

    let url = format!("nats://ebb:hunter2@127.0.0.1:{port}");
    let api = build(
        &factory,
        &[("stream", "S"), ("consumer", "c")],
        &[("natsServerURL", &url)],
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = api.sample().await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        matches!(e, ScalerError::Unreachable { .. } | ScalerError::Timeout { .. }),
        "{text}"
    );
    assert!(!text.contains("hunter2") && !text.contains("ebb:"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
}

/// An empty stream with a durable pull consumer `worker`, and the subject to publish to.
async fn empty_stream(nats_url: &str) -> (jetstream::Context, String, String) {
    let client = async_nats::connect(nats_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {nats_url}: {e}; run `tests/env/testenv.sh up`"));
    let js = jetstream::new(client);
    let name = unique("EBB_COLD");
    let subject = name.to_lowercase();
    ebb_tests::nats::stream_with_worker(&js, &name, &subject)
        .await
        .unwrap();
    (js, name, format!("{subject}.x"))
}

#[tokio::test]
async fn cold_activation_through_activity_changes_within_two_seconds() {
    let env = testenv();
    let (nats_url, monitoring) = (var(&env, "EBB_NATS_URL"), var(&env, "EBB_NATS_MONITORING"));
    let (js, stream, subject) = empty_stream(nats_url).await;
    let factory = ScalerFactory::default();
    let scaler = build(
        &factory,
        &[
            ("natsServerMonitoringEndpoint", monitoring),
            ("account", "$G"),
            ("stream", &stream),
            ("consumer", "worker"),
        ],
        &[],
    )
    .unwrap();
    assert!(!scaler.sample().await.unwrap().active, "empty: inactive");
    let mut changes = scaler
        .activity_changes()
        .expect("monitoring triggers push activity");
    // A watcher round or two with nothing: no flip.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!changes.has_changed().unwrap(), "nothing published yet");

    let started = std::time::Instant::now();
    js.publish(subject, "one".into()).await.unwrap().await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("activity flipped within 2 s")
        .unwrap();
    let measured = started.elapsed();
    assert!(*changes.borrow_and_update(), "flipped to active");
    println!("nats cold activation (published → activity_changes fired): {measured:?}");
    // The push never claims what the poll does not confirm.
    assert!(scaler.sample().await.unwrap().active);

    // The JetStream API path stays poll-only.
    let api = build(
        &factory,
        &[("stream", &stream), ("consumer", "worker")],
        &[("natsServerURL", nats_url)],
    )
    .unwrap();
    assert!(api.activity_changes().is_none());
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn dropping_the_scalers_stops_the_watcher() {
    let env = testenv();
    let (nats_url, monitoring) = (var(&env, "EBB_NATS_URL"), var(&env, "EBB_NATS_MONITORING"));
    let (js, stream, _) = empty_stream(nats_url).await;
    let http = Arc::new(MetricsApiClient::new(Duration::from_secs(3)).unwrap());
    let clients = Arc::new(NatsJetStreamClients::new(http, Duration::from_secs(3)));
    let scaler = || {
        let meta: BTreeMap<String, String> = [
            ("natsServerMonitoringEndpoint", monitoring),
            ("account", "$G"),
            ("stream", stream.as_str()),
            ("consumer", "worker"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let t = parse_trigger(0, "nats-jetstream", &meta, Some(&BTreeMap::new()), None).unwrap();
        NatsJetStreamScaler::new(clients.clone(), NatsJetStreamConfig::try_from(&t.params).unwrap())
    };
    let scalers: Vec<NatsJetStreamScaler> = (0..20).map(|_| scaler()).collect();
    let stats = clients.watcher_stats();
    assert_eq!((stats.watchers, stats.triggers, stats.running), (1, 20, 1));
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let stats = clients.watcher_stats();
    let ticks = (3.2 / ebb_scalers::nats_jetstream::WATCH_TICK.as_secs_f64()) as u64;
    assert!(
        (ticks.saturating_sub(2)..=ticks + 1).contains(&stats.requests),
        "one /jsz per tick for 20 triggers on one endpoint ({ticks} ticks): {stats:?}"
    );
    drop(scalers);
    assert_eq!(clients.watcher_stats().watchers, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = clients.watcher_stats();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        clients.watcher_stats(),
        stopped,
        "no more rounds once the scalers are gone"
    );
    assert_eq!((stopped.watchers, stopped.triggers, stopped.running), (0, 0, 0));
    let _ = js.delete_stream(&stream).await;
}
