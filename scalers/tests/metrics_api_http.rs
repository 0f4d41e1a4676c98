//! The metrics-api scaler against a real HTTP server on 127.0.0.1 (a small hand-written HTTP/1.1
//! responder that counts requests and keeps connections alive).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_scalers::parse_trigger;
use ebb_scalers::{FactoryOptions, Scaler, ScalerError, ScalerFactory, TriggerSample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server answers for one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    hang: bool,
}

impl Reply {
    fn json(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
            hang: false,
        }
    }
    fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            ..Self::json(body)
        }
    }
    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    fn hang() -> Self {
        Self {
            hang: true,
            ..Self::json("")
        }
    }
}

type Routes = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(routes: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let routes: Routes = Arc::new(routes);
        let (h, r, hd, c) = (hits.clone(), routes.clone(), heads.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(sock, r.clone(), h.clone(), hd.clone()));
            }
        });
        Self {
            addr,
            hits,
            connections,
            heads,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    mut sock: TcpStream,
    routes: Routes,
    hits: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if buf.first() == Some(&0x16) {
                // A TLS ClientHello: this server speaks plain HTTP only, so hang up.
                return;
            }
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        hits.fetch_add(1, Ordering::SeqCst);
        heads.lock().unwrap().push(head.clone());
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let reply = routes(&path);
        if reply.hang {
            // Keep the connection open and never answer.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(reply.delay).await;
        let response = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            reply.status,
            reply.body.len(),
            reply.body
        );
        if sock.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn factory() -> ScalerFactory {
    ScalerFactory::new(FactoryOptions::default())
}

fn trigger(factory: &ScalerFactory, index: usize, meta: &[(&str, &str)]) -> Arc<dyn Scaler> {
    let meta: BTreeMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let parsed = parse_trigger(index, "metrics-api", &meta, Some(&BTreeMap::new()), None).unwrap();
    factory.build(&parsed).unwrap()
}

fn scaler(factory: &ScalerFactory, url: &str, location: &str, activation: &str) -> Arc<dyn Scaler> {
    trigger(
        factory,
        0,
        &[
            ("url", url),
            ("valueLocation", location),
            ("targetValue", "10"),
            ("activationTargetValue", activation),
        ],
    )
}

async fn sample(factory: &ScalerFactory, url: &str, location: &str) -> Result<TriggerSample, ScalerError> {
    scaler(factory, url, location, "0").sample().await
}

#[tokio::test]
async fn value_and_activity_around_the_activation_threshold() {
    // /v/<n> answers {"queue": {"depth": <n>}}.
    let server = TestServer::start(|path| {
        let n = path.trim_start_matches("/v/");
        Reply::json(format!(r#"{{"queue": {{"depth": {n}}}}}"#))
    })
    .await;
    let f = factory();
    let cases = [
        ("5", "5", 5.0, false), // equal is not active
        ("5.5", "5", 5.5, true),
        ("4", "5", 4.0, false),
        ("0", "0", 0.0, false),
        ("0.001", "0", 0.001, true),
        ("-3", "0", -3.0, false), // negative values are values
        ("-3", "-5", -3.0, true),
        ("-5", "-5", -5.0, false),
    ];
    for (value, activation, expected, active) in cases {
        let s = scaler(&f, &server.url(&format!("/v/{value}")), "queue.depth", activation);
        let got = s.sample().await.unwrap();
        assert_eq!(
            got,
            TriggerSample {
                value: expected,
                active
            },
            "value {value}, activation {activation}"
        );
        assert_eq!(s.trigger_type(), "metrics-api");
        assert_eq!(s.metric_target().target_value, 10.0);
    }
}

#[tokio::test]
async fn nested_paths_array_indices_and_numeric_strings() {
    let server = TestServer::start(|_| {
        Reply::json(
            r#"{"a": {"b": {"c": {"d": 2.5}}}, "items": [{"count": 1}, {"count": 7}],
                "s": "10", "f": " 1.5", "milli": "500m", "kilo": "2k", "kibi": "1Ki", "neg": "-4",
                "grid": [[1, 2], [3, [4, 42]]]}"#,
        )
    })
    .await;
    let f = factory();
    let url = server.url("/m");
    for (location, expected) in [
        ("a.b.c.d", 2.5),
        ("items.0.count", 1.0),
        ("items.1.count", 7.0),
        ("s", 10.0),
        ("f", 1.5),
        ("milli", 0.5),
        ("kilo", 2000.0),
        ("kibi", 1024.0),
        ("neg", -4.0),
        ("grid.1.1.1", 42.0),
    ] {
        let got = sample(&f, &url, location).await.unwrap();
        assert_eq!(got.value, expected, "{location}");
    }
}

fn assert_bad_response(result: Result<TriggerSample, ScalerError>, needles: &[&str]) -> ScalerError {
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    let text = err.to_string();
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    err
}

#[tokio::test]
async fn http_errors_and_bad_documents_are_bad_responses() {
    let server = TestServer::start(|path| match path {
        "/missing" => Reply::status(404, r#"{"error": "nope"}"#),
        "/boom" => Reply::status(500, "oops"),
        "/denied" => Reply::status(401, "{}"),
        "/forbidden" => Reply::status(403, "{}"),
        "/html" => Reply::json("<html>not json</html>"),
        "/empty" => Reply::json(""),
        _ => Reply::json(
            r#"{"queue": {"depth": 3}, "flag": true, "none": null, "obj": {}, "word": "abc", "nan": "NaN", "list": [1]}"#,
        ),
    })
    .await;
    let f = factory();
    let url = |p: &str| server.url(p);

    let e = assert_bad_response(
        sample(&f, &url("/missing"), "queue.depth").await,
        &["HTTP status 404 Not Found"],
    );
    assert!(e.to_string().contains(&url("/missing")), "{e}");
    assert_bad_response(sample(&f, &url("/boom"), "x").await, &["HTTP status 500"]);
    for p in ["/denied", "/forbidden"] {
        let e = sample(&f, &url(p), "x").await.unwrap_err();
        assert_eq!(e.kind(), "unauthorized", "{e}");
    }
    assert_bad_response(
        sample(&f, &url("/html"), "x").await,
        &["response is not valid JSON"],
    );
    assert_bad_response(
        sample(&f, &url("/empty"), "x").await,
        &["response is not valid JSON"],
    );

    let doc = url("/doc");
    assert_bad_response(
        sample(&f, &doc, "queue.size").await,
        &["valueLocation \"queue.size\"", "no key \"size\""],
    );
    assert_bad_response(sample(&f, &doc, "list.3").await, &["index 3 is out of range"]);
    assert_bad_response(sample(&f, &doc, "queue.depth.x").await, &["the number 3"]);
    for (location, found) in [
        ("flag", "a boolean"),
        ("none", "null"),
        ("obj", "an object"),
        ("word", "the string \"abc\""),
        ("nan", "the string \"NaN\""),
    ] {
        assert_bad_response(sample(&f, &doc, location).await, &[found, "not a number"]);
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let big = format!(r#"{{"v": 1, "pad": "{}"}}"#, "x".repeat(9 * 1024 * 1024));
    let server = TestServer::start(move |_| Reply::json(big.clone())).await;
    assert_bad_response(
        sample(&factory(), &server.url("/big"), "v").await,
        &["larger than"],
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = TestServer::start(|_| Reply::hang()).await;
    let f = ScalerFactory::new(FactoryOptions {
        http_timeout: Duration::from_millis(300),
    });
    let started = Instant::now();
    let err = sample(&f, &server.url("/slow"), "v").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, ScalerError::Timeout { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(err.kind(), "timeout");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(err.to_string().contains("within 300ms"), "{err}");
}

async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test]
async fn an_unreachable_port_is_unreachable() {
    let port = closed_port().await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let err = sample(&factory(), &url, "v").await.unwrap_err();
    assert_eq!(err.kind(), "unreachable", "{err}");
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn credentials_in_the_url_never_appear_in_errors() {
    let server = TestServer::start(|path| match path {
        "/ok" => Reply::json(r#"{"v": 2}"#),
        "/missing" => Reply::status(404, "{}"),
        "/hang" => Reply::hang(),
        _ => Reply::json("not json"),
    })
    .await;
    let f = ScalerFactory::new(FactoryOptions {
        http_timeout: Duration::from_millis(300),
    });
    let with_creds = |addr: String, path: &str| format!("http://admin:s3cr%40t@{addr}{path}");
    let addr = server.addr.to_string();

    // The credentials go out as basic auth, decoded.
    let ok = sample(&f, &with_creds(addr.clone(), "/ok"), "v").await.unwrap();
    assert_eq!(ok.value, 2.0);
    let head = server.heads.lock().unwrap().last().cloned().unwrap();
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Basic YWRtaW46czNjckB0")),
        "{head}"
    );
    assert!(
        !head.contains("s3cr"),
        "credentials leaked into the request line: {head}"
    );

    let closed = format!("127.0.0.1:{}", closed_port().await);
    let errors = [
        sample(&f, &with_creds(addr.clone(), "/missing"), "v").await,
        sample(&f, &with_creds(addr.clone(), "/hang"), "v").await,
        sample(&f, &with_creds(addr.clone(), "/junk"), "v").await,
        sample(&f, &with_creds(addr.clone(), "/ok"), "nope").await,
        sample(&f, &with_creds(closed, "/x"), "v").await,
    ];
    let kinds: Vec<&str> = errors.iter().map(|e| e.as_ref().unwrap_err().kind()).collect();
    assert_eq!(
        kinds,
        [
            "bad_response",
            "timeout",
            "bad_response",
            "bad_response",
            "unreachable"
        ]
    );
    for e in errors {
        let e = e.unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(
                !text.contains("admin") && !text.contains("s3cr"),
                "credentials leaked: {text}"
            );
            assert!(text.contains("<redacted>@"), "{text}");
        }
    }
}

#[tokio::test]
async fn concurrent_samples_of_one_url_make_one_request() {
    let server =
        TestServer::start(|_| Reply::json(r#"{"queue": {"depth": 9}}"#).delayed(Duration::from_millis(400)))
            .await;
    let f = factory();
    let url = server.url("/shared");
    // 40 triggers (as from 40 ScaledObjects) on the same URL, plus one trigger sampled 10 times.
    let mut scalers: Vec<Arc<dyn Scaler>> = (0..40)
        .map(|i| {
            trigger(
                &f,
                i,
                &[
                    ("url", &url),
                    ("valueLocation", "queue.depth"),
                    ("targetValue", "3"),
                    ("activationTargetValue", "8"),
                ],
            )
        })
        .collect();
    let one = scalers[0].clone();
    scalers.extend(std::iter::repeat_n(one, 10));
    let mut tasks = tokio::task::JoinSet::new();
    for s in scalers {
        tasks.spawn(async move { s.sample().await });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.len(), 50);
    for r in results {
        assert_eq!(
            r.unwrap(),
            TriggerSample {
                value: 9.0,
                active: true
            }
        );
    }
    assert_eq!(server.hits(), 1, "concurrent samples must share one request");

    // Nothing is cached once the request is over.
    sample(&f, &url, "queue.depth").await.unwrap();
    assert_eq!(server.hits(), 2);

    // Different URLs are different requests, even concurrently.
    let (url_a, url_b) = (server.url("/a"), server.url("/b"));
    let (a, b) = tokio::join!(
        sample(&f, &url_a, "queue.depth"),
        sample(&f, &url_b, "queue.depth")
    );
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn concurrent_errors_are_shared_too() {
    let server = TestServer::start(|_| Reply::status(503, "{}").delayed(Duration::from_millis(300))).await;
    let f = factory();
    let url = server.url("/down");
    let (a, b, c) = tokio::join!(
        sample(&f, &url, "v"),
        sample(&f, &url, "v"),
        sample(&f, &url, "other")
    );
    for r in [a, b, c] {
        assert_eq!(r.unwrap_err().kind(), "bad_response");
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_cleanly() {
    let server = TestServer::start(|_| Reply::json(r#"{"v": 1}"#)).await;
    let f = ScalerFactory::new(FactoryOptions {
        http_timeout: Duration::from_secs(2),
    });
    let url = format!("https://{}/v", server.addr);
    for unsafe_ssl in ["false", "true"] {
        let s = trigger(
            &f,
            0,
            &[
                ("url", &url),
                ("valueLocation", "v"),
                ("targetValue", "1"),
                ("unsafeSsl", unsafe_ssl),
            ],
        );
        let err = s.sample().await.unwrap_err();
        assert_eq!(err.kind(), "unreachable", "unsafeSsl={unsafe_ssl}: {err}");
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }
}

#[tokio::test]
async fn connections_are_reused() {
    let server = TestServer::start(|_| Reply::json(r#"{"v": 1}"#)).await;
    let f = factory();
    let s = scaler(&f, &server.url("/v"), "v", "0");
    for _ in 0..5 {
        s.sample().await.unwrap();
    }
    assert_eq!(server.hits(), 5);
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection serves them all"
    );
}

#[tokio::test]
async fn a_cancelled_caller_does_not_strand_the_others() {
    let server = TestServer::start(|_| Reply::json(r#"{"v": 4}"#).delayed(Duration::from_millis(300))).await;
    let f = factory();
    let url = server.url("/v");
    let (leader, follower) = (scaler(&f, &url, "v", "0"), scaler(&f, &url, "v", "0"));
    // The first caller gives up (as an operator-side deadline would) while the second waits.
    let (gave_up, waited) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(50), leader.sample()),
        follower.sample()
    );
    assert!(gave_up.is_err());
    assert_eq!(waited.unwrap().value, 4.0);
    // The waiting caller took the request over: a second request, and nothing left in flight.
    assert_eq!(server.hits(), 2);
    assert_eq!(leader.sample().await.unwrap().value, 4.0);
    assert_eq!(server.hits(), 3);
}
