//! The rabbitmq scaler against the real RabbitMQ (with management) of the test environment.
//!
//! Start it with `tests/env/testenv.sh up`; the addresses come from the env file it writes
//! (`$EBB_TESTENV_FILE`, else `~/.cache/ebb-testenv/run/env`). Without that file every test here
//! fails (never passes silently). Each test uses its own queues (random names, `x-expires` so that
//! leftovers of a failed run vanish by themselves) and leaves the shared broker running.

mod common;
use common::unique;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_scalers::parse_trigger;
use ebb_scalers::rabbitmq::Protocol;
use ebb_scalers::rabbitmq::{RabbitMqClients, RabbitMqConfig, RabbitMqScaler};
use ebb_scalers::{Scaler, ScalerError, ScalerFactory, TriggerSample};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long management API statistics may take to converge (collect_statistics_interval is 1 s;
/// a busy machine is slower).
const CONVERGE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The test environment
// ---------------------------------------------------------------------------------------------

struct TestEnv {
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`
    amqp_url: String,
    /// `http://guest:guest@127.0.0.1:15672`
    http_url: String,
}

fn test_env() -> TestEnv {
    let vars = common::testenv();
    let get = |key: &str| common::var(&vars, key).to_string();
    TestEnv {
        amqp_url: get("EBB_RABBITMQ_AMQP_URL"),
        http_url: get("EBB_RABBITMQ_HTTP_URL"),
    }
}

// ---------------------------------------------------------------------------------------------
// AMQP helpers (lapin directly)
// ---------------------------------------------------------------------------------------------

async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to the test broker: {e}; is `tests/env/testenv.sh up` running?")
        })
}

/// Declares a non-durable queue that the broker deletes 2 minutes after its last use.
async fn declare(channel: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(120_000));
    channel
        .queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
}

/// Publishes `n` messages to `queue`, each confirmed by the broker (without confirms the count
/// races the publishes).
async fn publish(channel: &Channel, queue: &str, n: usize) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("message {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            confirm.is_ack(),
            "publish {i} to {queue} not confirmed: {confirm:?}"
        );
    }
}

async fn delete(channel: &Channel, queue: &str) {
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

// ---------------------------------------------------------------------------------------------
// Management API helper (a plain HTTP/1.1 request over a TCP stream)
// ---------------------------------------------------------------------------------------------

/// `(status, body)` of a management API request to `http://guest:guest@127.0.0.1:15672`-style
/// `base`.
async fn management(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let url = url::Url::parse(base).unwrap();
    let authority = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(80));
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        url.username(),
        url.password().unwrap_or_default()
    ));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Basic {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scalers
// ---------------------------------------------------------------------------------------------

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn scaler(clients: &Arc<RabbitMqClients>, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> RabbitMqScaler {
    let trigger =
        parse_trigger(0, "rabbitmq", &map(meta), Some(&map(auth)), None).unwrap_or_else(|e| panic!("{e}"));
    let config = RabbitMqConfig::try_from(&trigger.params).unwrap();
    RabbitMqScaler::new(clients.clone(), config, trigger.thresholds).unwrap()
}

fn clients() -> Arc<RabbitMqClients> {
    Arc::new(RabbitMqClients::new(Duration::from_secs(5)))
}

/// Samples until `done` holds for the sample (errors are retried), or fails after [`CONVERGE`]
/// with the last result.
async fn sample_until(
    scaler: &dyn Scaler,
    what: &str,
    done: impl Fn(&TriggerSample) -> bool,
) -> TriggerSample {
    let start = Instant::now();
    loop {
        let result = scaler.sample().await;
        if let Ok(sample) = &result
            && done(sample)
        {
            eprintln!("{what}: {sample:?} after {:?}", start.elapsed());
            return *sample;
        }
        if start.elapsed() > CONVERGE {
            panic!("{what}: no convergence within {CONVERGE:?}; last: {result:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn assert_no_secret(e: &ScalerError, secret: &str) {
    let text = format!("{e} | {e:?}");
    assert!(!text.contains(secret), "the error shows the secret: {text}");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_counts_ready_messages_only() {
    let env = test_env();
    let queue = unique("ebb-amqp");
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, &queue).await;
    publish(&channel, &queue, 25).await;

    // Through the factory, as the operator builds it.
    let factory = ScalerFactory::default();
    let meta = map(&[
        ("host", &env.amqp_url),
        ("queueName", &queue),
        ("activationValue", "24"),
    ]);
    let trigger = parse_trigger(0, "rabbitmq", &meta, Some(&BTreeMap::new()), None).unwrap();
    let built = factory.build(&trigger).unwrap();
    assert_eq!(built.trigger_type(), "rabbitmq");
    let started = Instant::now();
    let sample = built.sample().await.unwrap();
    eprintln!("first AMQP sample (dial + declare): {:?}", started.elapsed());
    assert_eq!(
        sample,
        TriggerSample {
            value: 25.0,
            active: true
        }
    );
    let started = Instant::now();
    built.sample().await.unwrap();
    eprintln!(
        "second AMQP sample (pooled connection and channel): {:?}",
        started.elapsed()
    );

    // Hold 3 messages unacknowledged: AMQP's count drops to the ready ones (22), and an
    // activationValue of 22 makes the trigger inactive although 25 messages are not done.
    let consumer = conn.create_channel().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let message = consumer
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a message");
        held.push(message);
    }
    let sample = built.sample().await.unwrap();
    assert_eq!(sample.value, 22.0, "AMQP counts ready messages only");
    let quiet = {
        let c = clients();
        scaler(
            &c,
            &[
                ("host", &env.amqp_url),
                ("queueName", &queue),
                ("activationValue", "22"),
            ],
            &[],
        )
    };
    assert_eq!(quiet.protocol(), Protocol::Amqp);
    assert_eq!(
        quiet.sample().await.unwrap(),
        TriggerSample {
            value: 22.0,
            active: false
        }
    );

    for message in held {
        message.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(built.sample().await.unwrap().value, 22.0);
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_counts_unacked_messages() {
    let env = test_env();
    let queue = unique("ebb-http");
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, &queue).await;
    publish(&channel, &queue, 25).await;
    // Take 8, ack 5, hold 3 unacked: messages = 20, ready = 17.
    let consumer = conn.create_channel().await.unwrap();
    let mut held = Vec::new();
    for i in 0..8 {
        let message = consumer
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a message");
        if i < 5 {
            message.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            held.push(message);
        }
    }

    let c = clients();
    let host = format!("{}/", env.http_url);
    let all = scaler(&c, &[("host", &host), ("queueName", &queue)], &[]);
    let ready = scaler(
        &c,
        &[
            ("host", &host),
            ("queueName", &queue),
            ("excludeUnacknowledged", "true"),
        ],
        &[],
    );
    assert_eq!(all.protocol(), Protocol::Http);
    let sample = sample_until(&all, "messages (ready + unacked)", |s| s.value == 20.0).await;
    assert!(sample.active);
    let sample = sample_until(&ready, "messages_ready", |s| s.value == 17.0).await;
    assert!(sample.active);
    let started = Instant::now();
    let stats = all.queue_stats().await.unwrap();
    eprintln!("one management API sample: {:?}", started.elapsed());
    assert_eq!((stats.messages, stats.messages_ready), (20.0, 17.0));
    // Both triggers share one HTTP client.
    assert_eq!(c.http_client_count(), 1);

    // Credentials from the auth params instead of the URL, and the vhost given by vhostName.
    let bare = url::Url::parse(&env.http_url).unwrap();
    let bare_host = format!(
        "http://{}:{}/ignored-vhost",
        bare.host_str().unwrap(),
        bare.port().unwrap()
    );
    let by_params = scaler(
        &c,
        &[("host", &bare_host), ("queueName", &queue), ("vhostName", "/")],
        &[
            ("username", bare.username()),
            ("password", bare.password().unwrap()),
        ],
    );
    sample_until(&by_params, "credentials from auth params", |s| s.value == 20.0).await;

    // Rates: publish while the scalers watch; MessageRate becomes positive.
    let rate = scaler(
        &c,
        &[
            ("host", &host),
            ("queueName", &queue),
            ("mode", "MessageRate"),
            ("value", "10"),
        ],
        &[],
    );
    let publisher = {
        let channel = conn.create_channel().await.unwrap();
        let queue = queue.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                publish(&channel, &queue, 5).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let sample = sample_until(&rate, "publish rate", |s| s.value > 0.0).await;
    assert!(sample.active);
    publisher.abort();

    for message in held {
        message.ack(BasicAckOptions::default()).await.unwrap();
    }
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_aggregates_several_queues() {
    let env = test_env();
    let prefix = unique("ebb-rx");
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    let counts = [("a", 3), ("b", 5), ("c", 1)];
    for (name, n) in counts {
        let queue = format!("{prefix}-{name}");
        declare(&channel, &queue).await;
        publish(&channel, &queue, n).await;
    }
    let c = clients();
    let host = format!("{}/%2F", env.http_url);
    let regex = format!("^{prefix}-");
    let with = |operation: &str, page_size: &str| {
        scaler(
            &c,
            &[
                ("host", &host),
                ("queueName", &regex),
                ("useRegex", "true"),
                ("operation", operation),
                ("pageSize", page_size),
            ],
            &[],
        )
    };
    sample_until(&with("sum", "100"), "sum", |s| s.value == 9.0).await;
    sample_until(&with("max", "100"), "max", |s| s.value == 5.0).await;
    sample_until(&with("avg", "100"), "avg", |s| s.value == 3.0).await;

    // More matches than one page: an error, as in KEDA.
    let paged = with("sum", "1");
    let e = paged.sample().await.unwrap_err();
    eprintln!("pageSize 1: {e}");
    assert_eq!(e.kind(), "bad_response");
    assert!(e.to_string().contains("pageSize"), "{e}");

    for (name, _) in counts {
        delete(&channel, &format!("{prefix}-{name}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_error_without_the_password() {
    let env = test_env();
    let secret = unique("wrong-pa55");
    let c = clients();

    let amqp = url::Url::parse(&env.amqp_url).unwrap();
    let amqp_host = format!(
        "amqp://guest:{secret}@{}:{}/%2f",
        amqp.host_str().unwrap(),
        amqp.port().unwrap()
    );
    let s = scaler(&c, &[("host", &amqp_host), ("queueName", "any")], &[]);
    let e = s.sample().await.unwrap_err();
    eprintln!("AMQP, wrong password: {e}");
    assert_no_secret(&e, &secret);
    assert_eq!(e.kind(), "unauthorized", "{e}");
    assert_eq!(c.amqp_connection_count(), 0);

    let http = url::Url::parse(&env.http_url).unwrap();
    let http_host = format!("http://{}:{}/", http.host_str().unwrap(), http.port().unwrap());
    let s = scaler(
        &c,
        &[("host", &http_host), ("queueName", "any")],
        &[("username", "guest"), ("password", &secret)],
    );
    let e = s.sample().await.unwrap_err();
    eprintln!("HTTP, wrong password: {e}");
    assert_no_secret(&e, &secret);
    assert_eq!(e.kind(), "unauthorized", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_queue_is_an_error_and_the_connection_stays() {
    let env = test_env();
    let queue = unique("ebb-present");
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, &queue).await;
    publish(&channel, &queue, 2).await;

    let c = clients();
    let missing = scaler(
        &c,
        &[("host", &env.amqp_url), ("queueName", &unique("ebb-absent"))],
        &[],
    );
    let present = scaler(&c, &[("host", &env.amqp_url), ("queueName", &queue)], &[]);
    let e = missing.sample().await.unwrap_err();
    eprintln!("AMQP, missing queue: {e}");
    assert_eq!(e.kind(), "bad_response");
    assert!(e.to_string().contains("not found"), "{e}");
    assert_no_secret(&e, "guest:guest");
    // The broker closed the channel, not the connection.
    assert_eq!(present.sample().await.unwrap().value, 2.0);
    assert_eq!(c.amqp_connection_count(), 1);
    assert!(missing.sample().await.is_err());
    assert_eq!(present.sample().await.unwrap().value, 2.0);

    let http = scaler(
        &c,
        &[
            ("host", &format!("{}/", env.http_url)),
            ("queueName", "ebb-no-such-queue"),
        ],
        &[],
    );
    let e = http.sample().await.unwrap_err();
    eprintln!("HTTP, missing queue: {e}");
    assert_eq!(e.kind(), "bad_response");
    assert!(e.to_string().contains("not found"), "{e}");
    assert_no_secret(&e, "guest:guest");
    delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_port_is_an_error() {
    let _env = test_env();
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let c = clients();
    for host in [
        format!("amqp://guest:s3cret-pw@127.0.0.1:{port}/%2f"),
        format!("http://guest:s3cret-pw@127.0.0.1:{port}/"),
    ] {
        let s = scaler(&c, &[("host", &host), ("queueName", "q")], &[]);
        let started = Instant::now();
        let e = s.sample().await.unwrap_err();
        eprintln!(
            "unreachable {}: {e} (after {:?})",
            s.endpoint(),
            started.elapsed()
        );
        assert_eq!(e.kind(), "unreachable", "{e}");
        assert_no_secret(&e, "s3cret-pw");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
    assert_eq!(c.amqp_connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_on_one_host_share_one_connection() {
    let env = test_env();
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    let queues = [unique("ebb-share"), unique("ebb-share"), unique("ebb-share")];
    for (i, q) in queues.iter().enumerate() {
        declare(&channel, q).await;
        publish(&channel, q, i + 1).await;
    }
    let c = clients();
    let same_host: Vec<RabbitMqScaler> = queues
        .iter()
        .map(|q| scaler(&c, &[("host", &env.amqp_url), ("queueName", q)], &[]))
        .collect();
    // The same broker under another name is another connection identity.
    let other_name = env.amqp_url.replace("127.0.0.1", "localhost");
    let other = scaler(&c, &[("host", &other_name), ("queueName", &queues[0])], &[]);
    // Each identity's watcher dials its one connection without waiting for a sample.
    wait_for_connections(&c, 2).await;

    for round in 0..5 {
        let results = join_all(same_host.iter().map(|s| s.sample()).collect()).await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.as_ref().unwrap().value, (i + 1) as f64, "round {round}");
        }
    }
    assert_eq!(
        c.amqp_connection_count(),
        2,
        "the samples use their watcher's connection"
    );
    assert_eq!(other.sample().await.unwrap().value, 1.0);
    assert_eq!(c.amqp_connection_count(), 2);
    drop(other);
    assert_eq!(
        c.amqp_connection_count(),
        1,
        "a connection closes with its last trigger"
    );
    for q in &queues {
        delete(&channel, q).await;
    }
}

/// Waits until `c` has `n` AMQP connections open (fails after 5 s with the count seen).
async fn wait_for_connections(c: &RabbitMqClients, n: usize) {
    let start = Instant::now();
    while c.amqp_connection_count() != n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} AMQP connections, expected {n}",
            c.amqp_connection_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls every future at once on this task and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_vhost_and_redial_after_the_broker_drops_the_connection() {
    let env = test_env();
    // A vhost of our own, with a `/` in its name to exercise the escaping.
    let vhost = unique("ebb/vh");
    let escaped = vhost.replace('/', "%2F");
    let (status, body) = management(&env.http_url, "PUT", &format!("/api/vhosts/{escaped}"), None).await;
    assert!(matches!(status, 201 | 204), "create vhost: {status} {body}");
    let (status, body) = management(
        &env.http_url,
        "PUT",
        &format!("/api/permissions/{escaped}/guest"),
        Some(r#"{"configure":".*","write":".*","read":".*"}"#),
    )
    .await;
    assert!(matches!(status, 201 | 204), "permissions: {status} {body}");

    let result = redial_in_vhost(&env, &vhost, &escaped).await;
    let (status, _) = management(&env.http_url, "DELETE", &format!("/api/vhosts/{escaped}"), None).await;
    assert!(matches!(status, 204 | 404), "delete vhost: {status}");
    result.unwrap_or_else(|e| panic!("{e}"));
}

async fn redial_in_vhost(env: &TestEnv, vhost: &str, escaped: &str) -> Result<(), String> {
    let amqp = url::Url::parse(&env.amqp_url).unwrap();
    let base = format!(
        "amqp://guest:guest@{}:{}",
        amqp.host_str().unwrap(),
        amqp.port().unwrap()
    );
    let conn = connect(&format!("{base}/{escaped}")).await;
    let channel = conn.create_channel().await.unwrap();
    let queue = unique("ebb-vq");
    declare(&channel, &queue).await;
    publish(&channel, &queue, 4).await;

    let c = clients();
    let by_path = scaler(
        &c,
        &[("host", &format!("{base}/{escaped}")), ("queueName", &queue)],
        &[],
    );
    let by_name = scaler(
        &c,
        &[
            ("host", &format!("{base}/")),
            ("queueName", &queue),
            ("vhostName", vhost),
        ],
        &[],
    );
    let over_http = scaler(
        &c,
        &[
            ("host", &format!("{}/{escaped}", env.http_url)),
            ("queueName", &queue),
        ],
        &[],
    );
    if by_path.vhost() != vhost || by_name.vhost() != vhost || over_http.vhost() != vhost {
        return Err(format!(
            "vhost parsed wrong: {by_path:?} {by_name:?} {over_http:?}"
        ));
    }
    for s in [&by_path, &by_name] {
        let sample = s.sample().await.map_err(|e| e.to_string())?;
        if sample.value != 4.0 {
            return Err(format!("{s:?}: {sample:?}"));
        }
    }
    if c.amqp_connection_count() != 1 {
        return Err(format!("{} connections for one vhost", c.amqp_connection_count()));
    }
    sample_until(&over_http, "http in own vhost", |s| s.value == 4.0).await;

    // Close our pooled connection from the broker side (as a broker restart would), found by
    // its vhost and name in the management API. The test's own connection has another name.
    let name = ebb_connection(env, escaped, None).await?;
    let path = format!("/api/connections/{}", utf8_escape(&name));
    let (status, body) = management(&env.http_url, "DELETE", &path, None).await;
    if status != 204 {
        return Err(format!("closing {name}: {status} {body}"));
    }
    let start = Instant::now();
    let mut errors = Vec::new();
    loop {
        match by_path.sample().await {
            Ok(sample) if sample.value == 4.0 => break,
            Ok(other) => return Err(format!("after the redial: {other:?}")),
            Err(e) => {
                if e.to_string().contains("guest:guest") {
                    return Err(format!("error shows credentials: {e}"));
                }
                errors.push(e.to_string());
            }
        }
        if start.elapsed() > CONVERGE {
            return Err(format!("no recovery within {CONVERGE:?}: {errors:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "recovered {:?} after the broker closed the connection; errors on the way: {errors:?}",
        start.elapsed()
    );
    if errors.len() > 1 {
        return Err(format!(
            "more than one failed sample before the redial: {errors:?}"
        ));
    }
    if c.amqp_connection_count() != 1 {
        return Err(format!(
            "{} connections after the redial",
            c.amqp_connection_count()
        ));
    }
    // The broker sees a new connection: the old one was not resurrected.
    let new_name = ebb_connection(env, escaped, Some(&name)).await?;
    eprintln!("connection {name} closed by the broker, redialled as {new_name}");
    delete(&channel, &queue).await;
    Ok(())
}

/// The name of ebb's AMQP connection in vhost `escaped`, other than `not`, as the management API
/// lists it (polled: the listing follows the statistics interval).
async fn ebb_connection(env: &TestEnv, escaped: &str, not: Option<&str>) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let path = format!("/api/vhosts/{escaped}/connections");
        let (_, body) = management(&env.http_url, "GET", &path, None).await;
        let list: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        let found = list.as_array().into_iter().flatten().find_map(|c| {
            let ours = c
                .pointer("/client_properties/connection_name")
                .and_then(Json::as_str)
                == Some("ebb-scaler");
            let name = c.get("name").and_then(Json::as_str)?;
            (ours && Some(name) != not).then(|| name.to_string())
        });
        if let Some(name) = found {
            return Ok(name);
        }
        if start.elapsed() > CONVERGE {
            return Err(format!(
                "ebb's connection never showed in the management API: {body}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn utf8_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// TLS: a TLS-terminating proxy in front of the broker, with certificates made here
// ---------------------------------------------------------------------------------------------

/// A test CA, a server certificate for 127.0.0.1 / localhost and a client certificate, as PEM.
struct TestPki {
    ca_pem: String,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ebb test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "ebb test");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert, key)
    };
    let (server, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
    TestPki {
        ca_pem: ca.pem(),
        server_chain: vec![server.der().clone()],
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// Accepts TLS on 127.0.0.1 (requiring a client certificate from the test CA when
/// `client_auth`) and forwards the plain bytes to `upstream`. Stops when dropped.
struct TlsProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_proxy(pki: &TestPki, client_auth: bool, upstream: String) -> TlsProxy {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let config = builder.with_single_cert(pki.server_chain.clone(), key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            connections.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsProxy { port, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_a_client_certificate_or_unsafe_ssl() {
    let env = test_env();
    let queue = unique("ebb-tls");
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    declare(&channel, &queue).await;
    publish(&channel, &queue, 3).await;

    let amqp = url::Url::parse(&env.amqp_url).unwrap();
    let http = url::Url::parse(&env.http_url).unwrap();
    let amqp_upstream = format!("{}:{}", amqp.host_str().unwrap(), amqp.port().unwrap());
    let http_upstream = format!("{}:{}", http.host_str().unwrap(), http.port().unwrap());
    let pki = test_pki();
    let amqps = tls_proxy(&pki, false, amqp_upstream.clone()).await;
    let amqps_mtls = tls_proxy(&pki, true, amqp_upstream).await;
    let https = tls_proxy(&pki, false, http_upstream.clone()).await;
    let https_mtls = tls_proxy(&pki, true, http_upstream).await;

    let c = clients();
    let amqps_host = |port: u16| format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let https_host = |port: u16| format!("https://guest:guest@127.0.0.1:{port}/");
    let ca = [("tls", "enable"), ("ca", pki.ca_pem.as_str())];
    let mtls = [
        ("tls", "enable"),
        ("ca", pki.ca_pem.as_str()),
        ("cert", pki.client_cert_pem.as_str()),
        ("key", pki.client_key_pem.as_str()),
    ];

    // Verified against the given CA, with and without a client certificate.
    for (what, host, auth) in [
        ("amqps + ca", amqps_host(amqps.port), &ca[..]),
        ("amqps + client cert", amqps_host(amqps_mtls.port), &mtls[..]),
        ("https + ca", https_host(https.port), &ca[..]),
        ("https + client cert", https_host(https_mtls.port), &mtls[..]),
    ] {
        let s = scaler(&c, &[("host", &host), ("queueName", &queue)], auth);
        sample_until(&s, what, |s| s.value == 3.0).await;
    }
    // unsafeSsl: any certificate.
    for (what, host) in [
        ("amqps + unsafeSsl", amqps_host(amqps.port)),
        ("https + unsafeSsl", https_host(https.port)),
    ] {
        let s = scaler(
            &c,
            &[("host", &host), ("queueName", &queue), ("unsafeSsl", "true")],
            &[],
        );
        sample_until(&s, what, |s| s.value == 3.0).await;
    }
    // The system roots do not know the test CA; a server that wants a client certificate
    // refuses a client without one.
    for (what, host, auth) in [
        ("amqps, unknown CA", amqps_host(amqps.port), &[][..]),
        ("https, unknown CA", https_host(https.port), &[][..]),
        ("amqps, no client cert", amqps_host(amqps_mtls.port), &ca[..]),
        ("https, no client cert", https_host(https_mtls.port), &ca[..]),
    ] {
        let s = scaler(&c, &[("host", &host), ("queueName", &queue)], auth);
        let e = s.sample().await.unwrap_err();
        eprintln!("{what}: {e}");
        assert_eq!(e.kind(), "unreachable", "{what}: {e}");
        assert_no_secret(&e, "guest:guest");
    }
    delete(&channel, &queue).await;
}

// ---------------------------------------------------------------------------------------------
// Cold activation (activity pushed by the per-connection and per-vhost watchers)
// ---------------------------------------------------------------------------------------------

fn build(factory: &ScalerFactory, meta: &[(&str, &str)]) -> Arc<dyn Scaler> {
    let trigger = parse_trigger(0, "rabbitmq", &map(meta), Some(&BTreeMap::new()), None)
        .unwrap_or_else(|e| panic!("{e}"));
    factory.build(&trigger).unwrap()
}

/// Publishes one message to an empty queue watched through `host` and waits for the scaler's
/// activity channel to flip to true within `bound`.
async fn cold_activation(host: &str, bound: Duration) -> Duration {
    let env = test_env();
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    let queue = unique("ebb-cold");
    declare(&channel, &queue).await;
    let factory = ScalerFactory::default();
    let scaler = build(&factory, &[("host", host), ("queueName", &queue)]);
    // The first poll (dials over AMQP; management statistics may take a moment to exist).
    sample_until(&*scaler, "empty queue", |s| !s.active).await;
    let mut changes = scaler.activity_changes().expect("rabbitmq pushes activity");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!changes.has_changed().unwrap(), "nothing published yet");

    let started = Instant::now();
    publish(&channel, &queue, 1).await;
    tokio::time::timeout(bound, changes.changed())
        .await
        .unwrap_or_else(|_| panic!("activity did not flip within {bound:?} ({host:?})"))
        .unwrap();
    let measured = started.elapsed();
    assert!(*changes.borrow_and_update(), "flipped to active");
    // The push never claims what the poll does not confirm.
    assert!(scaler.sample().await.unwrap().active);
    delete(&channel, &queue).await;
    measured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_cold_activation_within_two_seconds() {
    let env = test_env();
    let took = cold_activation(&env.amqp_url, Duration::from_secs(2)).await;
    println!("rabbitmq AMQP cold activation (published → activity_changes fired): {took:?}");
}

/// The first activation after an operator start: the scaler is registered (built, its channel
/// handed out) but has never sampled, as for a scale loop whose first tick is still spread over
/// the polling interval. The AMQP watcher dials the shared connection itself and flips the
/// channel within two seconds of the publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_watcher_wakes_a_trigger_that_never_sampled() {
    let env = test_env();
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    let queue = unique("ebb-first");
    declare(&channel, &queue).await;
    let c = clients();
    let s = scaler(&c, &[("host", &env.amqp_url), ("queueName", &queue)], &[]);
    let mut changes = s.activity_changes().expect("rabbitmq pushes activity");
    // The watcher reads the empty queue over the one connection it dialled; nothing flips.
    wait_for_connections(&c, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!changes.has_changed().unwrap(), "nothing published yet");
    assert!(c.watcher_stats().requests > 0, "the watcher reads the queue");

    let started = Instant::now();
    publish(&channel, &queue, 1).await;
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .unwrap_or_else(|_| panic!("no flip within 2 s of the publish without a sample"))
        .unwrap();
    println!(
        "rabbitmq AMQP first activation, no sample before (published → flip): {:?}",
        started.elapsed()
    );
    assert!(*changes.borrow_and_update());
    // The poll confirms it over the same connection.
    assert!(s.sample().await.unwrap().active);
    assert_eq!(
        c.amqp_connection_count(),
        1,
        "one connection for watcher and sample"
    );
    drop(s);
    assert_eq!(c.amqp_connection_count(), 0, "closed with its last trigger");
    delete(&channel, &queue).await;
}

/// After a failover the new leader's triggers find messages already waiting: the watcher flips
/// the channel from its first rounds, before any sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_watcher_reports_a_waiting_message_before_any_sample() {
    let env = test_env();
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    let queue = unique("ebb-waiting");
    declare(&channel, &queue).await;
    publish(&channel, &queue, 2).await;
    let c = clients();
    let started = Instant::now();
    let s = scaler(&c, &[("host", &env.amqp_url), ("queueName", &queue)], &[]);
    let mut changes = s.activity_changes().expect("rabbitmq pushes activity");
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .unwrap_or_else(|_| panic!("a waiting message not reported within 2 s without a sample"))
        .unwrap();
    assert!(*changes.borrow_and_update());
    println!(
        "rabbitmq AMQP waiting message reported after {:?}",
        started.elapsed()
    );
    delete(&channel, &queue).await;
}

/// A watcher that cannot dial (wrong password) flips nothing, opens nothing, and backs off
/// instead of dialling every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_watcher_that_cannot_dial_backs_off_and_flips_nothing() {
    let env = test_env();
    let amqp = url::Url::parse(&env.amqp_url).unwrap();
    let host = format!(
        "amqp://guest:{}@{}:{}/%2f",
        unique("wrong"),
        amqp.host_str().unwrap(),
        amqp.port().unwrap()
    );
    let c = clients();
    let s = scaler(&c, &[("host", &host), ("queueName", "any")], &[]);
    let changes = s.activity_changes().expect("rabbitmq pushes activity");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // Rounds start at 0, 1, 3 s (the pause doubles after each failure), not every 0.5 s.
    let rounds = c.watcher_stats().rounds;
    assert!((2..=4).contains(&rounds), "{rounds} dial attempts in 3.5 s");
    assert!(!changes.has_changed().unwrap(), "a failed dial flips nothing");
    assert_eq!(c.amqp_connection_count(), 0);
    assert_eq!(c.watcher_stats().requests, 0, "no declare without a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_cold_activation_within_ten_seconds() {
    let env = test_env();
    let took = cold_activation(&env.http_url, Duration::from_secs(10)).await;
    println!("rabbitmq management cold activation (published → activity_changes fired): {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watcher_per_connection_and_vhost_stopped_with_the_scalers() {
    let env = test_env();
    let conn = connect(&env.amqp_url).await;
    let channel = conn.create_channel().await.unwrap();
    let queues = [unique("ebb-w"), unique("ebb-w"), unique("ebb-w")];
    for q in &queues {
        declare(&channel, q).await;
    }
    let c = clients();
    let mut scalers = Vec::new();
    for i in 0..30 {
        let q = queues[i % 3].as_str();
        scalers.push(scaler(&c, &[("host", &env.amqp_url), ("queueName", q)], &[]));
        scalers.push(scaler(&c, &[("host", &env.http_url), ("queueName", q)], &[]));
    }
    // A regex trigger is left to the polls.
    let regex = scaler(
        &c,
        &[
            ("host", &env.http_url),
            ("queueName", "^ebb-w.*"),
            ("useRegex", "true"),
        ],
        &[],
    );
    assert!(regex.activity_changes().is_none());
    // Both watchers run from the start; the AMQP one dials its connection itself.
    wait_for_connections(&c, 1).await;
    let stats = c.watcher_stats();
    assert_eq!(
        (
            stats.amqp_watchers,
            stats.http_watchers,
            stats.triggers,
            stats.running
        ),
        (1, 1, 60, 2)
    );
    let before = stats.requests;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let made = c.watcher_stats().requests - before;
    // Per tick: 3 passive declares (one per queue) + 1 listing, whatever the 60 triggers.
    let ticks = (3.5 / ebb_scalers::rabbitmq::WATCH_TICK.as_secs_f64()) as u64;
    assert!(
        ((ticks - 2) * 4..=(ticks + 1) * 4).contains(&made),
        "{made} requests in 3.5 s ({ticks} ticks)"
    );
    assert_eq!(
        c.amqp_connection_count(),
        1,
        "the watcher uses the shared connection"
    );

    drop(scalers);
    drop(regex);
    assert_eq!(
        c.amqp_connection_count(),
        0,
        "the connection closes with its last trigger"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = c.watcher_stats();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        c.watcher_stats(),
        stopped,
        "no more requests once the scalers are gone"
    );
    assert_eq!(
        (
            stopped.amqp_watchers,
            stopped.http_watchers,
            stopped.triggers,
            stopped.running
        ),
        (0, 0, 0, 0)
    );
    for q in &queues {
        delete(&channel, q).await;
    }
}
