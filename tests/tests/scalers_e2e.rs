//! The rabbitmq, nats-jetstream, aws-sqs-queue, redis and redis-streams triggers end to end: real brokers, the operator
//! with its embedded metrics adapter behind the real API server's aggregation layer, and the real
//! kube-controller-manager's HPA. ebb does 0↔1, the HPA 1↔N.
//!
//! For each scaler:
//! - `*_scales_zero_to_n_and_back`: messages published → the Deployment goes 0 → 1 (ebb) → N
//!   (HPA, `ceil(count / target)`); everything consumed → back to 0 after the cooldown.
//! - `*_outage_falls_back_and_recovers`: the scaler reaches the broker through a TCP relay run by
//!   the test (the brokers are shared by tests running in parallel, so they are never stopped).
//!   Cutting the relay (listener and open connections closed) fails the trigger: the fallback
//!   count applies, the `Fallback` condition turns True, and the target never goes to 0 even with
//!   the queue emptied behind ebb's back. Restored on the same port, the fallback clears and the
//!   count follows the queue again.
//!
//! The external-metrics APIService is cluster-wide: nextest runs this binary one test at a time
//! (`.config/nextest.toml`), [`AdapterCase`] serialises the tests under `cargo test`, and its file
//! lock plus a wait for the APIService to be free keep separate test processes (and
//! `tests/demo.sh`) from taking it over from each other. A test that fails because someone took it
//! over anyway says so.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use ebb_crds::HealthStatus;
use ebb_tests::adapter_case::{AdapterCase, Condition};
use ebb_tests::rabbitmq::TestQueue;
use ebb_tests::redis::RedisCli;
use ebb_tests::{HarnessError, TestEnv, wait_for};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Generous bound for anything that involves the HPA (2 s sync) or RabbitMQ's statistics lag.
const WITHIN: Duration = Duration::from_secs(60);

/// Messages per replica (`value`, `lagThreshold`, `queueLength`).
const TARGET: usize = 5;

/// The target name: the Deployment and the ScaledObject.
const WORKER: &str = "worker";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `host:port` of a URL like `http://guest:guest@127.0.0.1:15672`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

// ---------------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------------

/// A queue (or stream) of one broker, made for one test.
trait Broker: Sized {
    /// Namespace prefix.
    const NAME: &'static str;
    /// Creates the queue, empty.
    async fn create(env: &TestEnv) -> Self;
    /// `host:port` the scaler talks to when nothing stands in between.
    fn upstream(&self) -> String;
    /// The trigger, reaching the broker at `addr` (`host:port`).
    fn trigger(&self, addr: &str) -> Value;
    /// Objects the trigger needs in the namespace (credentials).
    async fn prerequisites(&self, _client: &Client, _ns: &str) {}
    /// Publishes `n` messages, each confirmed by the broker.
    async fn publish(&self, n: usize);
    /// Consumes (and acknowledges or deletes) `n` messages.
    async fn consume(&self, n: usize);
    /// Removes the queue.
    async fn delete(self);
}

/// A RabbitMQ queue, counted by the trigger through the management API (`protocol: http`,
/// `mode: QueueLength`), which also counts unacknowledged messages.
struct Rabbit {
    queue: TestQueue,
    /// `http://guest:guest@127.0.0.1:15672`
    http_url: String,
}

impl Broker for Rabbit {
    const NAME: &'static str = "e2e-rabbitmq";

    async fn create(env: &TestEnv) -> Self {
        let queue = TestQueue::create(env, "ebb-e2e").await;
        let http_url = env.var("EBB_RABBITMQ_HTTP_URL").unwrap().to_string();
        // The management API has a queue's counts only after its first statistics round: until
        // then the trigger fails (RabbitMQ omits `messages`), and a fallback would apply.
        let path = format!("/api/queues/%2F/{}", queue.name);
        wait_for("the management API counts the queue", WITHIN, || async {
            let (status, body) = management_get(&http_url, &path).await?;
            (status == 200 && body.contains("\"messages\":")).then_some(())
        })
        .await
        .unwrap();
        Rabbit { queue, http_url }
    }

    fn upstream(&self) -> String {
        authority(&self.http_url)
    }

    fn trigger(&self, addr: &str) -> Value {
        // Same scheme and credentials as the management URL, another authority.
        let host = self.http_url.replacen(&self.upstream(), addr, 1);
        json!({"type": "rabbitmq", "metadata": {
            "host": host, "protocol": "http", "mode": "QueueLength",
            "value": TARGET.to_string(), "queueName": self.queue.name}})
    }

    async fn publish(&self, n: usize) {
        self.queue.publish(n).await;
    }

    async fn consume(&self, n: usize) {
        self.queue.consume(n).await;
    }

    async fn delete(self) {
        self.queue.delete().await;
    }
}

/// `(status, body)` of a `GET` on RabbitMQ's management API at `http_url`
/// (`http://user:password@host:port`).
async fn management_get(http_url: &str, path: &str) -> Option<(u16, String)> {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = authority(http_url);
    let userinfo = http_url.split_once("://")?.1.rsplit_once('@')?.0;
    let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
    let mut stream = TcpStream::connect(&authority).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Basic {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.into_owned()))
}

/// A JetStream stream with a durable pull consumer (explicit ack), read by the trigger through
/// the monitoring endpoint (`/jsz`).
struct Nats {
    js: jetstream::Context,
    stream: String,
    subject: String,
    consumer: consumer::PullConsumer,
    monitoring: String,
}

impl Broker for Nats {
    const NAME: &'static str = "e2e-nats";

    async fn create(env: &TestEnv) -> Self {
        let url = env.var("EBB_NATS_URL").unwrap();
        let client = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to NATS at {url}: {e}"));
        let js = jetstream::new(client);
        let stream_name = unique("EBB_E2E").replace('-', "_").to_uppercase();
        let subject = stream_name.to_lowercase();
        let consumer = ebb_tests::nats::stream_with_worker(&js, &stream_name, &subject)
            .await
            .unwrap();
        Nats {
            js,
            stream: stream_name,
            subject,
            consumer,
            monitoring: env.var("EBB_NATS_MONITORING").unwrap().to_string(),
        }
    }

    fn upstream(&self) -> String {
        self.monitoring.clone()
    }

    fn trigger(&self, addr: &str) -> Value {
        json!({"type": "nats-jetstream", "metadata": {
            "natsServerMonitoringEndpoint": addr, "account": "$G",
            "stream": self.stream, "consumer": "worker", "lagThreshold": TARGET.to_string()}})
    }

    async fn publish(&self, n: usize) {
        for i in 0..n {
            self.js
                .publish(format!("{}.{i}", self.subject), format!("job {i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    async fn consume(&self, n: usize) {
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while done < n {
            assert!(
                Instant::now() < deadline,
                "fetched {done} of {n} from {}",
                self.stream
            );
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(n - done)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            while let Some(message) = batch.next().await {
                // Double ack: the server confirmed it, so the lag has dropped when this returns.
                message.unwrap().double_ack().await.unwrap();
                done += 1;
            }
        }
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// An SQS queue on moto; the trigger's static credentials come from a TriggerAuthentication
/// backed by a Secret.
struct Sqs {
    client: aws_sdk_sqs::Client,
    url: String,
    endpoint: String,
    region: String,
}

impl Broker for Sqs {
    const NAME: &'static str = "e2e-sqs";

    async fn create(env: &TestEnv) -> Self {
        let endpoint = env.var("EBB_SQS_ENDPOINT").unwrap().to_string();
        let region = env.var("EBB_AWS_REGION").unwrap().to_string();
        let client = ebb_tests::sqs::client(&endpoint, &region);
        let url = ebb_tests::sqs::create_queue(&client, &unique("ebb-e2e"))
            .await
            .unwrap_or_else(|e| panic!("moto at {endpoint}: {e}"));
        Sqs {
            client,
            url,
            endpoint,
            region,
        }
    }

    fn upstream(&self) -> String {
        authority(&self.endpoint)
    }

    fn trigger(&self, addr: &str) -> Value {
        json!({"type": "aws-sqs-queue",
               "metadata": {"queueURL": self.url, "awsRegion": self.region,
                            "awsEndpoint": format!("http://{addr}"), "queueLength": TARGET.to_string()},
               "authenticationRef": {"name": "sqs-credentials"}})
    }

    async fn prerequisites(&self, client: &Client, ns: &str) {
        ebb_tests::sqs::create_credentials(client, ns).await.unwrap();
    }

    async fn publish(&self, n: usize) {
        for i in 0..n {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(format!("job {i}"))
                .send()
                .await
                .unwrap();
        }
    }

    async fn consume(&self, n: usize) {
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while done < n {
            assert!(Instant::now() < deadline, "received {done} of {n}");
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages((n - done).min(10) as i32)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for message in out.messages() {
                self.client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                done += 1;
            }
        }
    }

    async fn delete(self) {
        let _ = self.client.delete_queue().queue_url(&self.url).send().await;
    }
}

/// A Redis list (`redis`) or stream (`redis-streams`, the consumer group's lag), filled and
/// drained with `redis-cli`.
struct Redis<const STREAM: bool> {
    cli: RedisCli,
    address: String,
    key: String,
}

/// The consumer group of the stream case.
const REDIS_GROUP: &str = "workers";

impl<const STREAM: bool> Redis<STREAM> {
    /// Runs `redis-cli` off the test's (single) runtime thread.
    async fn cli(&self, args: Vec<String>) -> String {
        let cli = self.cli.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args).unwrap()
        })
        .await
        .unwrap()
    }
}

impl<const STREAM: bool> Broker for Redis<STREAM> {
    const NAME: &'static str = if STREAM { "e2e-redis-streams" } else { "e2e-redis" };

    async fn create(env: &TestEnv) -> Self {
        let address = env.var("EBB_REDIS_ADDRESS").unwrap().to_string();
        let cli = RedisCli::new(&address, env.var("EBB_REDIS_SERVER_BIN").ok());
        let redis = Redis {
            cli,
            address,
            key: unique("ebb-e2e"),
        };
        if STREAM {
            let key = redis.key.clone();
            let create = ["XGROUP", "CREATE", &key, REDIS_GROUP, "$", "MKSTREAM"];
            redis.cli(create.map(String::from).to_vec()).await;
        }
        redis
    }

    fn upstream(&self) -> String {
        self.address.clone()
    }

    fn trigger(&self, addr: &str) -> Value {
        if STREAM {
            json!({"type": "redis-streams", "metadata": {
                "address": addr, "stream": self.key, "consumerGroup": REDIS_GROUP,
                "lagCount": TARGET.to_string()}})
        } else {
            json!({"type": "redis", "metadata": {
                "address": addr, "listName": self.key, "listLength": TARGET.to_string()}})
        }
    }

    async fn publish(&self, n: usize) {
        if STREAM {
            for i in 0..n {
                let add = ["XADD", &self.key, "*", "job", &i.to_string()];
                self.cli(add.map(String::from).to_vec()).await;
            }
        } else {
            let mut push = vec!["RPUSH".to_string(), self.key.clone()];
            push.extend((0..n).map(|i| format!("job {i}")));
            self.cli(push).await;
        }
    }

    async fn consume(&self, n: usize) {
        let n = n.to_string();
        let args: Vec<&str> = if STREAM {
            // Delivered to the group: its lag goes down by n.
            vec![
                "XREADGROUP",
                "GROUP",
                REDIS_GROUP,
                "c",
                "COUNT",
                &n,
                "STREAMS",
                &self.key,
                ">",
            ]
        } else {
            vec!["LPOP", &self.key, &n]
        };
        self.cli(args.into_iter().map(String::from).collect()).await;
    }

    async fn delete(self) {
        self.cli(vec!["DEL".into(), self.key.clone()]).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The relay: a broker outage without stopping the shared broker
// ---------------------------------------------------------------------------------------------

/// A TCP relay on a fixed loopback port in front of `upstream`.
struct Relay {
    port: u16,
    upstream: String,
    accepted: Arc<AtomicU64>,
    running: Option<RelayRun>,
}

struct RelayRun {
    acceptor: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut relay = Relay {
            port: listener.local_addr().unwrap().port(),
            upstream,
            accepted: Arc::default(),
            running: None,
        };
        relay.serve(listener);
        relay
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn serve(&mut self, listener: TcpListener) {
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (upstream, accepted, tracked) =
            (self.upstream.clone(), self.accepted.clone(), connections.clone());
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut tracked = tracked.lock().unwrap();
                tracked.retain(|t| !t.is_finished());
                tracked.push(task);
            }
        });
        self.running = Some(RelayRun {
            acceptor,
            connections,
        });
    }

    /// The outage: the port stops accepting and every open connection is closed. Returns once
    /// the listener and all connections are gone.
    async fn cut(&mut self) {
        let run = self.running.take().expect("relay running");
        run.acceptor.abort();
        let _ = run.acceptor.await;
        let open = std::mem::take(&mut *run.connections.lock().unwrap());
        for task in open {
            task.abort();
            let _ = task.await;
        }
    }

    /// The broker is back, on the same port.
    async fn restore(&mut self) {
        assert!(self.running.is_none(), "relay already running");
        let addr = self.addr();
        let listener = wait_for("relay port bindable again", Duration::from_secs(10), || async {
            TcpListener::bind(&addr).await.ok()
        })
        .await
        .unwrap();
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(run) = self.running.take() {
            run.acceptor.abort();
            for task in run.connections.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One test's cluster side
// ---------------------------------------------------------------------------------------------

/// Every `spec.replicas` the Deployment had, in order, with when it was seen (a watch, so short
/// visits such as ebb's 0 → 1 before the HPA takes over are not missed).
#[derive(Clone)]
struct History {
    seen: Arc<Mutex<Vec<(Duration, i32)>>>,
}

impl History {
    fn watch(client: &Client, ns: &str) -> (History, JoinHandle<()>) {
        let history = History { seen: Arc::default() };
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={WORKER}"));
        let seen = history.seen.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().applied_objects().boxed();
            while let Some(event) = events.next().await {
                let Ok(d) = event else { continue };
                // Omitted while 0 on /scale; a Deployment's default is 1, but ours always sets it.
                let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
                let mut seen = seen.lock().unwrap();
                if seen.last().map(|(_, r)| *r) != Some(replicas) {
                    seen.push((start.elapsed(), replicas));
                }
            }
        });
        (history, task)
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The replica counts seen from position `from` on.
    fn since(&self, from: usize) -> Vec<i32> {
        self.seen.lock().unwrap()[from..]
            .iter()
            .map(|(_, r)| *r)
            .collect()
    }

    fn render(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(t, r)| format!("{r}@{:.1}s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

/// An [`AdapterCase`] whose worker Deployment (at 0 to begin with) has its replica counts
/// recorded.
struct Case {
    cluster: AdapterCase,
    history: History,
    watch: JoinHandle<()>,
}

impl Deref for Case {
    type Target = AdapterCase;

    fn deref(&self) -> &AdapterCase {
        &self.cluster
    }
}

impl Case {
    /// A namespace, an operator serving the external metrics through the aggregator, and a
    /// Deployment at 0 whose replica counts are recorded.
    async fn start(prefix: &str) -> Case {
        let cluster = AdapterCase::start(prefix, WITHIN, &[]).await;
        cluster.deployment(WORKER, 0).await;
        let (history, watch) = History::watch(&cluster.client(), &cluster.ns.name);
        Case {
            cluster,
            history,
            watch,
        }
    }

    /// What went on, for a failure message: the replica counts seen and whether another process
    /// took the APIService over (the HPA then reads nothing from this test's operator).
    async fn diagnose(&self) -> String {
        format!(
            "replicas seen: {}; the APIService is {}",
            self.history.render(),
            self.apiservice_owner().await
        )
    }

    async fn create_so(&self, trigger: Value, fallback: Option<Value>) {
        let mut spec = json!({
            "scaleTargetRef": {"name": WORKER}, "pollingInterval": 1, "cooldownPeriod": 2,
            "maxReplicaCount": 10, "triggers": [trigger]});
        if let Some(f) = fallback {
            spec["fallback"] = f;
        }
        self.create(WORKER, spec).await;
    }

    async fn replicas(&self) -> i32 {
        self.cluster.replicas(WORKER).await
    }

    /// Waits until the Deployment has `want` replicas; returns how long that took.
    async fn wait_replicas(&self, want: i32) -> Duration {
        let result = self.cluster.try_wait_replicas(WORKER, want).await;
        self.or_diagnose(result).await
    }

    /// Waits until the history holds `want` at or after position `from`.
    async fn wait_seen(&self, want: i32, from: usize) -> Duration {
        let start = Instant::now();
        let result = wait_for(&format!("{WORKER} seen at {want}"), WITHIN, || async {
            self.history.since(from).contains(&want).then_some(())
        })
        .await;
        self.or_diagnose(result).await;
        start.elapsed()
    }

    /// The value, or a panic that says what went on.
    async fn or_diagnose<T>(&self, result: Result<T, HarnessError>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => panic!("{e}; {}", self.diagnose().await),
        }
    }

    /// `(status, reason, message)` of a ScaledObject condition.
    async fn condition(&self, type_: &str) -> Option<Condition> {
        self.cluster.condition(WORKER, type_).await
    }

    async fn wait_condition(&self, type_: &str, status: &str) -> Condition {
        let found = self.try_wait_condition(WORKER, type_, status).await;
        if found.is_err() {
            eprintln!("last {type_}: {:?}", self.condition(type_).await);
        }
        self.or_diagnose(found).await
    }

    /// The trigger's external metric name, from the status.
    async fn metric_name(&self) -> String {
        wait_for("externalMetricNames in the status", WITHIN, || async {
            let so = self.so_api().get(WORKER).await.ok()?;
            so.status?.external_metric_names.first().cloned()
        })
        .await
        .unwrap()
    }

    /// Waits until `metric` reads `want` as the HPA reads it: through the API server's
    /// aggregation layer.
    async fn wait_metric(&self, metric: &str, want: usize) -> Duration {
        let result = self.try_wait_metric(WORKER, metric, &want.to_string()).await;
        self.or_diagnose(result).await
    }

    /// `ebb_trigger_value` of the object's trigger reading `metric`, from the operator's
    /// `/metrics`.
    async fn exported_value(&self, metric: &str) -> Option<f64> {
        let scrape = async {
            let mut stream = tokio::net::TcpStream::connect(&self.health).await.ok()?;
            let request = format!("GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.health);
            tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
                .await
                .ok()?;
            let mut body = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut body)
                .await
                .ok()?;
            Some(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(5), scrape)
            .await
            .ok()??;
        let labels = format!(
            r#"{{namespace="{}",scaledObject="{WORKER}",trigger_index="0","#,
            self.ns.name
        );
        let metric = format!(r#",metric="{metric}"}} "#);
        body.lines()
            .filter_map(|l| l.strip_prefix("ebb_trigger_value"))
            .find(|l| l.starts_with(&labels) && l.contains(&metric))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    async fn finish(self) {
        eprintln!("[{}] replicas seen: {}", self.ns.name, self.history.render());
        self.watch.abort();
        // While the operator still runs: it removes its finalizer (and the HPA), else the
        // namespace would stay Terminating.
        self.cluster.finish().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------------

/// Messages for 4 replicas: `ceil(18 / 5)`.
const BACKLOG: usize = 18;

fn ceil_div(n: usize, d: usize) -> i32 {
    n.div_ceil(d) as i32
}

/// 0 → 1 (ebb) → N (HPA) → 0 (HPA to 1, ebb to 0 after the cooldown).
async fn zero_to_n_and_back<B: Broker>() {
    let case = Case::start(B::NAME).await;
    let broker = B::create(&case.env).await;
    broker.prerequisites(&case.client(), &case.ns.name).await;
    case.create_so(broker.trigger(&broker.upstream()), None).await;
    case.wait_condition("Ready", "True").await;
    let metric = case.metric_name().await;
    // Idle: the metric reads 0 and nothing scales.
    case.wait_metric(&metric, 0).await;
    assert_eq!(case.replicas().await, 0);
    let (_, reason, _) = case.wait_condition("Active", "False").await;
    eprintln!("[{}] idle, Active=False ({reason})", case.ns.name);

    let n = ceil_div(BACKLOG, TARGET);
    let from = case.history.len();
    let published = Instant::now();
    broker.publish(BACKLOG).await;
    eprintln!(
        "[{}] published {BACKLOG} in {:?}",
        case.ns.name,
        published.elapsed()
    );
    let to_one = case.wait_seen(1, from).await;
    case.wait_replicas(n).await;
    eprintln!(
        "[{}] 0 → 1 (ebb) after {to_one:?}, → {n} (HPA) after {:?}",
        case.ns.name,
        published.elapsed()
    );
    case.wait_metric(&metric, BACKLOG).await;
    // The operator's per-object series says what the HPA reads: the broker's backlog.
    let exported = wait_for("ebb_trigger_value = the backlog", WITHIN, || async {
        case.exported_value(&metric)
            .await
            .filter(|v| *v == BACKLOG as f64)
    })
    .await;
    if exported.is_err() {
        eprintln!("last ebb_trigger_value: {:?}", case.exported_value(&metric).await);
    }
    case.or_diagnose(exported).await;
    let way_up = case.history.since(from);
    assert_eq!(way_up.first(), Some(&1), "ebb activates to 1: {way_up:?}");
    assert!(
        way_up.windows(2).all(|w| w[0] <= w[1]) && way_up.last() == Some(&n),
        "scale-up went straight up to {n}: {way_up:?}"
    );
    case.wait_condition("Active", "True").await;

    let consumed = Instant::now();
    broker.consume(BACKLOG).await;
    let took = consumed.elapsed();
    case.wait_replicas(0).await;
    // The history is fed by a watch, which may lag the read that saw 0.
    case.wait_seen(0, from).await;
    eprintln!(
        "[{}] consumed {BACKLOG} in {took:?}; back to 0 after {:?}",
        case.ns.name,
        consumed.elapsed()
    );
    let way_down = case.history.since(from);
    assert!(
        way_down.contains(&1) && way_down.last() == Some(&0),
        "{way_down:?}"
    );
    broker.delete().await;
    case.finish().await;
}

/// The broker unreachable mid-test: errors and the fallback, never 0; then normal scaling again.
async fn outage_falls_back_and_recovers<B: Broker>() {
    let case = Case::start(&format!("{}-outage", B::NAME)).await;
    let broker = B::create(&case.env).await;
    broker.prerequisites(&case.client(), &case.ns.name).await;
    let mut relay = Relay::start(broker.upstream()).await;
    let from = case.history.len();
    case.create_so(
        broker.trigger(&relay.addr()),
        Some(json!({"failureThreshold": 2, "replicas": 2})),
    )
    .await;
    case.wait_condition("Ready", "True").await;
    let metric = case.metric_name().await;
    case.wait_metric(&metric, 0).await;
    assert_eq!(case.replicas().await, 0);

    // Up to N through the relay.
    let n = ceil_div(BACKLOG, TARGET);
    let start = Instant::now();
    broker.publish(BACKLOG).await;
    case.wait_replicas(n).await;
    eprintln!(
        "[{}] {BACKLOG} published → {n} replicas in {:?}",
        case.ns.name,
        start.elapsed()
    );
    assert!(
        relay.accepted() > 0,
        "the scaler reaches the broker through the relay"
    );

    let way_up: Vec<i32> = case
        .history
        .since(from)
        .into_iter()
        .skip_while(|r| *r == 0)
        .collect();
    assert!(
        way_up.first() == Some(&1) && way_up.windows(2).all(|w| w[0] <= w[1]),
        "0 → 1 → {n} with the broker up (no fallback): {way_up:?}"
    );

    // The outage.
    let outage_from = case.history.len();
    let cut = Instant::now();
    relay.cut().await;
    let (_, reason, message) = case.wait_condition("Fallback", "True").await;
    assert_eq!(reason, "FallbackExists", "{message}");
    case.wait_replicas(2).await;
    eprintln!(
        "[{}] relay cut → Fallback=True and 2 replicas in {:?}",
        case.ns.name,
        cut.elapsed()
    );
    let status = case.so_api().get(WORKER).await.unwrap().status.unwrap();
    assert_eq!(status.health[&metric].status, HealthStatus::Failing, "{status:?}");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    let ready_message = ready.message.clone().unwrap_or_default();
    assert_ne!(ready.status, "True", "{ready:?}");
    assert!(
        !ready_message.contains("guest:guest") && !ready_message.contains(SQS_SECRET_MARKER),
        "credentials in the status: {ready_message}"
    );
    // Behind ebb's back the queue shrinks to 13 (→ 3 replicas once visible again), and idles
    // through several cooldowns (2 s) at 1 poll/s: the fallback holds 2, never 0.
    let remaining = BACKLOG - 5;
    broker.consume(BACKLOG - remaining).await;
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(6) {
        let (replicas, fallback) = (case.replicas().await, case.condition("Fallback").await);
        if replicas != 2 || fallback.as_ref().map(|c| c.0.as_str()) != Some("True") {
            panic!(
                "during the outage: {replicas} replicas, Fallback {fallback:?}; {}",
                case.diagnose().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The broker is back: the fallback clears and the count follows the queue (13 → 3).
    let accepted_before = relay.accepted();
    let restored = Instant::now();
    relay.restore().await;
    case.wait_condition("Fallback", "False").await;
    let clear = restored.elapsed();
    let want = ceil_div(remaining, TARGET);
    case.wait_replicas(want).await;
    eprintln!(
        "[{}] relay restored → Fallback=False in {clear:?}, {want} replicas in {:?}",
        case.ns.name,
        restored.elapsed()
    );
    assert!(
        relay.accepted() > accepted_before,
        "reconnected through the relay"
    );
    case.wait_metric(&metric, remaining).await;
    let status = case.so_api().get(WORKER).await.unwrap().status.unwrap();
    assert_eq!(status.health[&metric].status, HealthStatus::Happy);
    let during = case.history.since(outage_from);
    assert!(
        !during.contains(&0),
        "scaled to zero during or after the outage: {during:?}"
    );

    // And all the way down again.
    let consumed = Instant::now();
    broker.consume(remaining).await;
    case.wait_replicas(0).await;
    eprintln!(
        "[{}] consumed the rest → 0 in {:?}",
        case.ns.name,
        consumed.elapsed()
    );
    drop(relay);
    broker.delete().await;
    case.finish().await;
}

/// A string that would only be in the status if the SQS secret leaked (the test secret itself,
/// `test`, is too common a word to look for).
const SQS_SECRET_MARKER: &str = "awsSecretAccessKey=";

#[tokio::test]
async fn rabbitmq_scales_zero_to_n_and_back() {
    zero_to_n_and_back::<Rabbit>().await;
}

#[tokio::test]
async fn nats_jetstream_scales_zero_to_n_and_back() {
    zero_to_n_and_back::<Nats>().await;
}

#[tokio::test]
async fn aws_sqs_scales_zero_to_n_and_back() {
    zero_to_n_and_back::<Sqs>().await;
}

#[tokio::test]
async fn rabbitmq_outage_falls_back_and_recovers() {
    outage_falls_back_and_recovers::<Rabbit>().await;
}

#[tokio::test]
async fn nats_jetstream_outage_falls_back_and_recovers() {
    outage_falls_back_and_recovers::<Nats>().await;
}

#[tokio::test]
async fn aws_sqs_outage_falls_back_and_recovers() {
    outage_falls_back_and_recovers::<Sqs>().await;
}

#[tokio::test]
async fn redis_scales_zero_to_n_and_back() {
    zero_to_n_and_back::<Redis<false>>().await;
}

#[tokio::test]
async fn redis_streams_scales_zero_to_n_and_back() {
    zero_to_n_and_back::<Redis<true>>().await;
}

#[tokio::test]
async fn redis_outage_falls_back_and_recovers() {
    outage_falls_back_and_recovers::<Redis<false>>().await;
}
