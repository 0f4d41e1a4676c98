//! Scenario 1: activation latency — from the first message published to a Deployment at 0
//! replicas reading 1 on `/scale`, for every scaler ebb has (kafka, rabbitmq over AMQP, rabbitmq
//! over the management API, nats-jetstream, aws-sqs-queue, metrics-api), at the ScaledObject
//! defaults (pollingInterval 30 s, minReplicaCount 0, nothing set but the target and the
//! trigger). Target: p99 under 1 s.
//!
//! The real operator (the release `ebb` binary, `EBB_BIN`; by default the `ebb` next to this
//! binary) runs against the test environment (`tests/env/testenv.sh up`). For each scaler, N
//! Deployments at 0 and N ScaledObjects are created, each on its own queue / topic / stream / URL,
//! so each sample has its own scale loop; once all are Ready, one message is published to each
//! source at a moment drawn uniformly at random within its own N-th of one polling interval
//! (stratified, strata shuffled over the objects), so the samples cover every phase of the poll
//! tick. t0 is taken just before the publish request is sent (conservative: the publish round
//! trip counts), t1 when a watch on the namespace's Deployments first shows `spec.replicas` ≥ 1.
//!
//! Poll-only scalers only see the message at their next `pollingInterval` tick, so they are
//! expected to miss the target; kafka's cluster client makes one batched round per second and
//! pushes activity changes to the scale loop.
//!
//! `EBB_BENCH_SAMPLES` (default 30) sets N, `EBB_BENCH_SCALERS` (comma-separated names) picks the
//! scalers, `EBB_BENCH_SEED` fixes the schedule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::{self, consumer, stream};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use ebb_bench::{quantile_ms, write_result};
use ebb_crds::{ScaledObject, TriggerAuthentication};
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use ebb_tests::objects::deployment;
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, install_crds, wait_for};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ConnectionProperties};
use serde_json::{Value, json};

/// The default `pollingInterval`: the publishes are spread over one.
const POLLING_INTERVAL: Duration = Duration::from_secs(30);
/// The target: p99 below this.
const TARGET: Duration = Duration::from_secs(1);
/// How long a sample may take before it counts as never activated.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);

/// The scalers measured, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kafka,
    Rabbitmq,
    RabbitmqManagement,
    NatsJetStream,
    AwsSqsQueue,
    MetricsApi,
}

const KINDS: &[Kind] = &[
    Kind::Kafka,
    Kind::Rabbitmq,
    Kind::RabbitmqManagement,
    Kind::NatsJetStream,
    Kind::AwsSqsQueue,
    Kind::MetricsApi,
];

impl Kind {
    /// The name in results and `EBB_BENCH_SCALERS`.
    fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Rabbitmq => "rabbitmq",
            Kind::RabbitmqManagement => "rabbitmq-management",
            Kind::NatsJetStream => "nats-jetstream",
            Kind::AwsSqsQueue => "aws-sqs-queue",
            Kind::MetricsApi => "metrics-api",
        }
    }

    /// Prefix of the Kubernetes object names.
    fn short(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Rabbitmq => "rabbit",
            Kind::RabbitmqManagement => "rabbit-http",
            Kind::NatsJetStream => "nats",
            Kind::AwsSqsQueue => "sqs",
            Kind::MetricsApi => "mapi",
        }
    }

    /// Whether ebb's scaler pushes activity changes (else the loop waits for its next poll).
    fn pushes(self) -> bool {
        self == Kind::Kafka
    }

    /// How the trigger reads its source, for the result file.
    fn route(self) -> &'static str {
        match self {
            Kind::Kafka => {
                "consumer-group lag (lagThreshold 5), one 1-partition topic and group per object; the cluster client's round (every 0.5 s) pushes activity changes"
            }
            Kind::Rabbitmq => "AMQP passive queue.declare (mode QueueLength, value 5), one queue per object",
            Kind::RabbitmqManagement => {
                "management HTTP API (protocol http, mode QueueLength, value 5), one queue per object; RabbitMQ refreshes its statistics every 5 s"
            }
            Kind::NatsJetStream => {
                "monitoring endpoint /jsz (lagThreshold 5), one stream + durable consumer per object"
            }
            Kind::AwsSqsQueue => "GetQueueAttributes on moto (queueLength 5), one queue per object",
            Kind::MetricsApi => "HTTP GET of a JSON value (targetValue 5), one local source per object",
        }
    }
}

/// splitmix64: a small, seedable generator for the schedule (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When each of `n` objects gets its message, relative to the start: object `i` in stratum
/// `perm[i]` of `spread / n`, at a uniformly random moment within it.
fn schedule(n: usize, spread: Duration, rng: &mut Rng) -> Vec<Duration> {
    let mut strata: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        strata.swap(i, j);
    }
    let width = spread.as_secs_f64() / n.max(1) as f64;
    strata
        .into_iter()
        .map(|k| Duration::from_secs_f64((k as f64 + rng.unit()) * width))
        .collect()
}

/// Publishes one message to one object's source.
enum Publisher {
    Kafka {
        admin: tokio::sync::Mutex<KafkaAdmin>,
        topic: String,
    },
    Rabbit {
        channel: Channel,
        queue: String,
    },
    Nats {
        js: jetstream::Context,
        stream: String,
        subject: String,
    },
    Sqs {
        client: aws_sdk_sqs::Client,
        url: String,
    },
    Metrics {
        source: MetricSource,
    },
}

impl Publisher {
    /// Sends one message and waits until the source confirmed it.
    async fn publish(&self) -> anyhow::Result<()> {
        match self {
            Publisher::Kafka { admin, topic } => admin.lock().await.produce_one(topic, 0, "job").await?,
            Publisher::Rabbit { channel, queue } => {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        b"job",
                        BasicProperties::default(),
                    )
                    .await?
                    .await?;
                if !confirm.is_ack() {
                    return Err(anyhow!("publish to {queue} not confirmed"));
                }
            }
            Publisher::Nats { js, subject, .. } => {
                js.publish(format!("{subject}.job"), "job".into()).await?.await?;
            }
            Publisher::Sqs { client, url } => {
                client
                    .send_message()
                    .queue_url(url)
                    .message_body("job")
                    .send()
                    .await
                    .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
            }
            Publisher::Metrics { source } => source.set_depth(1),
        }
        Ok(())
    }

    /// Removes the queue or stream (best effort).
    async fn cleanup(&self) {
        match self {
            Publisher::Rabbit { channel, queue } => {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            Publisher::Nats { js, stream, .. } => {
                let _ = js.delete_stream(stream).await;
            }
            Publisher::Sqs { client, url } => {
                let _ = client.delete_queue().queue_url(url).send().await;
            }
            // Kafka topics stay (the harness has no DeleteTopics); sources stop with the process.
            Publisher::Kafka { .. } | Publisher::Metrics { .. } => {}
        }
    }
}

/// One object's trigger and the publisher of its source.
struct Source {
    trigger: Value,
    publisher: Publisher,
}

/// `host:port` of a URL like `http://guest:guest@127.0.0.1:15672`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// `(status, body)` of a `GET` on RabbitMQ's management API at `http_url`
/// (`http://user:password@host:port`).
async fn management_get(http_url: &str, path: &str) -> Option<(u16, String)> {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = authority(http_url);
    let userinfo = http_url.split_once("://")?.1.rsplit_once('@')?.0;
    let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
    let mut stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.into_owned()))
}

async fn kafka_sources(env: &TestEnv, n: usize) -> anyhow::Result<Vec<Source>> {
    let bootstrap = env.var("EBB_KAFKA_BOOTSTRAP")?.to_string();
    let mut admin = KafkaAdmin::connect(&bootstrap).await?;
    let run = unique_name("ebb-bench-act");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (topic, group) = (format!("{run}-{i}"), format!("{run}-{i}-g"));
        admin.create_topic(&topic, 1).await?;
        admin.commit(&group, &topic, &[(0, 0)]).await?;
        out.push(Source {
            trigger: json!({"type": "kafka", "metadata": {
                "bootstrapServers": bootstrap, "consumerGroup": group, "topic": topic, "lagThreshold": "5"}}),
            publisher: Publisher::Kafka {
                admin: tokio::sync::Mutex::new(KafkaAdmin::connect(&bootstrap).await?),
                topic,
            },
        });
    }
    Ok(out)
}

async fn rabbit_sources(env: &TestEnv, n: usize, management: bool) -> anyhow::Result<Vec<Source>> {
    let amqp_url = env.var("EBB_RABBITMQ_AMQP_URL")?.to_string();
    let http_url = env.var("EBB_RABBITMQ_HTTP_URL")?.to_string();
    let connection = lapin::Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", authority(&amqp_url)))?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    // The connection must outlive the phase; leaking one per phase is fine for a benchmark.
    std::mem::forget(connection);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let queue = unique_name("ebb-bench");
        let mut args = FieldTable::default();
        // Leftovers of an interrupted run vanish by themselves.
        args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
            .await?;
        let trigger = if management {
            json!({"type": "rabbitmq", "metadata": {
                "host": http_url, "protocol": "http", "mode": "QueueLength", "value": "5", "queueName": queue}})
        } else {
            json!({"type": "rabbitmq", "metadata": {
                "host": amqp_url, "mode": "QueueLength", "value": "5", "queueName": queue}})
        };
        out.push(Source {
            trigger,
            publisher: Publisher::Rabbit {
                channel: channel.clone(),
                queue,
            },
        });
    }
    if management {
        // The management API has a queue's counts only after its first statistics round.
        for s in &out {
            let Publisher::Rabbit { queue, .. } = &s.publisher else {
                continue;
            };
            let path = format!("/api/queues/%2F/{queue}");
            wait_for(
                "the management API counts the queue",
                Duration::from_secs(60),
                || async {
                    let (status, body) = management_get(&http_url, &path).await?;
                    (status == 200 && body.contains("\"messages\":")).then_some(())
                },
            )
            .await?;
        }
    }
    Ok(out)
}

async fn nats_sources(env: &TestEnv, n: usize) -> anyhow::Result<Vec<Source>> {
    let url = env.var("EBB_NATS_URL")?;
    let monitoring = env.var("EBB_NATS_MONITORING")?.to_string();
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let js = jetstream::new(client);
    let run = unique_name("EBB_BENCH").replace('-', "_").to_uppercase();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{run}_{i}");
        let subject = name.to_lowercase();
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{subject}.>")],
                max_age: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create stream {name}: {e}"))?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("worker".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("create consumer on {name}: {e}"))?;
        out.push(Source {
            trigger: json!({"type": "nats-jetstream", "metadata": {
                "natsServerMonitoringEndpoint": monitoring, "account": "$G",
                "stream": name, "consumer": "worker", "lagThreshold": "5"}}),
            publisher: Publisher::Nats {
                js: js.clone(),
                stream: name,
                subject,
            },
        });
    }
    Ok(out)
}

/// moto accepts any credentials, as long as requests are SigV4-signed.
const SQS_KEY: &str = "test";

async fn sqs_sources(env: &TestEnv, client_k8s: &Client, ns: &str, n: usize) -> anyhow::Result<Vec<Source>> {
    let endpoint = env.var("EBB_SQS_ENDPOINT")?.to_string();
    let region = env.var("EBB_AWS_REGION")?.to_string();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new(SQS_KEY, SQS_KEY, None, None, "bench"))
        .http_client(http)
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sqs-credentials"},
        "stringData": {"awsAccessKeyID": SQS_KEY, "awsSecretAccessKey": SQS_KEY}
    }))?;
    Api::<Secret>::namespaced(client_k8s.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let auth: TriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "sqs-credentials"},
        "spec": {"secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": "sqs-credentials", "key": "awsAccessKeyID"},
            {"parameter": "awsSecretAccessKey", "name": "sqs-credentials", "key": "awsSecretAccessKey"}]}
    }))?;
    Api::<TriggerAuthentication>::namespaced(client_k8s.clone(), ns)
        .create(&PostParams::default(), &auth)
        .await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let url = client
            .create_queue()
            .queue_name(unique_name("ebb-bench"))
            .send()
            .await
            .map_err(|e| anyhow!("create queue: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?
            .queue_url()
            .ok_or_else(|| anyhow!("create queue: no URL"))?
            .to_string();
        out.push(Source {
            trigger: json!({"type": "aws-sqs-queue",
                "metadata": {"queueURL": url, "awsRegion": region, "awsEndpoint": endpoint, "queueLength": "5"},
                "authenticationRef": {"name": "sqs-credentials"}}),
            publisher: Publisher::Sqs {
                client: client.clone(),
                url,
            },
        });
    }
    Ok(out)
}

async fn metrics_sources(n: usize) -> Vec<Source> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let source = MetricSource::start(0).await;
        out.push(Source {
            trigger: json!({"type": "metrics-api", "metadata": {
                "url": source.url, "valueLocation": "queue.depth", "targetValue": "5", "activationTargetValue": "0"}}),
            publisher: Publisher::Metrics { source },
        });
    }
    out
}

/// What the Deployment watch saw of one Deployment.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    replicas: i32,
    first_up: Option<Instant>,
}

type SeenMap = Arc<Mutex<HashMap<String, Seen>>>;

fn seen_lock(seen: &SeenMap) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches the namespace's Deployments; records when each first reads ≥ 1 replica.
fn watch_deployments(client: &Client, ns: &str, seen: SeenMap) -> tokio::task::JoinHandle<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let Ok(d) = event else { continue };
            let Some(name) = d.metadata.name else { continue };
            // `spec.replicas` is omitted while 0 on /scale; ours always set it.
            let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
            let mut seen = seen_lock(&seen);
            let entry = seen.entry(name).or_default();
            entry.replicas = replicas;
            if replicas >= 1 && entry.first_up.is_none() {
                entry.first_up = Some(now);
            }
        }
    })
}

/// A condition's `(status, message)` on a ScaledObject.
fn condition(so: &ScaledObject, type_: &str) -> Option<(String, String)> {
    let c = so.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.message.clone().unwrap_or_default()))
}

/// Latency figures of sorted samples, in milliseconds.
fn figures(sorted: &[Duration]) -> Value {
    let mean = if sorted.is_empty() {
        f64::NAN
    } else {
        sorted.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / sorted.len() as f64
    };
    let r = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "count": sorted.len(),
        "min_ms": r(quantile_ms(sorted, 0.0)), "p50_ms": r(quantile_ms(sorted, 0.5)),
        "p90_ms": r(quantile_ms(sorted, 0.9)), "p99_ms": r(quantile_ms(sorted, 0.99)),
        "max_ms": r(quantile_ms(sorted, 1.0)), "mean_ms": r(mean),
    })
}

/// The trigger as written, with credentials in URLs masked, for the result file.
fn shown_trigger(trigger: &Value) -> Value {
    let mut t = trigger.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        for v in meta.values_mut() {
            if let Some(s) = v.as_str() {
                *v = json!(ebb_scalers::params::mask_userinfo(s));
            }
        }
    }
    t
}

struct Bench {
    env: TestEnv,
    ns: String,
    seen: SeenMap,
    samples: usize,
    rng: Rng,
}

impl Bench {
    fn client(&self) -> Client {
        self.env.client.clone()
    }

    /// Measures one scaler; the section of the result file, and its p99 (ms) if every sample
    /// activated.
    async fn measure(&mut self, kind: Kind) -> anyhow::Result<(Value, Option<f64>)> {
        let n = self.samples;
        let client = self.client();
        let ns = self.ns.clone();
        eprintln!("[{}] preparing {n} sources", kind.name());
        let sources = match kind {
            Kind::Kafka => kafka_sources(&self.env, n).await?,
            Kind::Rabbitmq => rabbit_sources(&self.env, n, false).await?,
            Kind::RabbitmqManagement => rabbit_sources(&self.env, n, true).await?,
            Kind::NatsJetStream => nats_sources(&self.env, n).await?,
            Kind::AwsSqsQueue => sqs_sources(&self.env, &client, &ns, n).await?,
            Kind::MetricsApi => metrics_sources(n).await,
        };
        let names: Vec<String> = (0..n).map(|i| format!("{}-{i}", kind.short())).collect();
        let so_api: Api<ScaledObject> = Api::namespaced(client.clone(), &ns);
        for (name, source) in names.iter().zip(&sources) {
            deployment(&client, &ns, name, 0).await?;
            let so: ScaledObject = serde_json::from_value(json!({
                "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name},
                "spec": {"scaleTargetRef": {"name": name}, "triggers": [source.trigger]}}))?;
            // A CRD created moments ago may answer 503 for a little while.
            wait_for("ScaledObject created", Duration::from_secs(30), || async {
                so_api.create(&PostParams::default(), &so).await.ok().map(|_| ())
            })
            .await?;
        }
        let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
        let ready = wait_for(
            "every ScaledObject Ready at 0",
            Duration::from_secs(120),
            || async {
                let list = so_api.list(&ListParams::default()).await.ok()?;
                let ready = list
                    .items
                    .iter()
                    .filter(|so| wanted.contains(so.metadata.name.as_deref().unwrap_or("")))
                    .filter(|so| condition(so, "Ready").is_some_and(|(s, _)| s == "True"))
                    .count();
                let seen = seen_lock(&self.seen);
                let at_zero = names
                    .iter()
                    .filter(|n| seen.get(*n).is_some_and(|s| s.replicas == 0))
                    .count();
                (ready == n && at_zero == n).then_some(())
            },
        )
        .await;
        if let Err(e) = ready {
            let list = so_api.list(&ListParams::default()).await?;
            let problem = list
                .items
                .iter()
                .filter(|so| wanted.contains(so.metadata.name.as_deref().unwrap_or("")))
                .find_map(|so| condition(so, "Ready").filter(|(s, _)| s != "True"))
                .map(|(s, m)| format!("Ready={s}: {m}"))
                .unwrap_or_default();
            return Err(anyhow!("{e} ({problem})"));
        }

        eprintln!(
            "[{}] all Ready at 0; publishing over {} s",
            kind.name(),
            POLLING_INTERVAL.as_secs()
        );
        let offsets = schedule(n, POLLING_INTERVAL, &mut self.rng);
        let start = tokio::time::Instant::now();
        let sources: Vec<Arc<Source>> = sources.into_iter().map(Arc::new).collect();
        let publishes = sources.iter().zip(&offsets).map(|(source, offset)| {
            let source = source.clone();
            let at = start + *offset;
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let t0 = Instant::now();
                let result = source.publisher.publish().await;
                (t0, t0.elapsed(), result.map_err(|e| e.to_string()))
            })
        });
        let published: Vec<_> = futures::future::join_all(publishes)
            .await
            .into_iter()
            .map(|r| {
                r.map_err(|e| e.to_string())
                    .and_then(|(t0, took, r)| r.map(|()| (t0, took)))
            })
            .collect();
        let deadline = Instant::now() + GIVE_UP_AFTER;
        while Instant::now() < deadline {
            let pending = {
                let seen = seen_lock(&self.seen);
                names
                    .iter()
                    .zip(&published)
                    .filter(|(n, p)| p.is_ok() && seen.get(*n).is_none_or(|s| s.first_up.is_none()))
                    .count()
            };
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let seen = seen_lock(&self.seen).clone();
        let mut latencies = Vec::new();
        let mut publish_times = Vec::new();
        let (mut never, mut early, mut failed) = (0usize, 0usize, Vec::new());
        for (name, p) in names.iter().zip(&published) {
            match p {
                Err(e) => failed.push(e.clone()),
                Ok((t0, took)) => {
                    publish_times.push(*took);
                    match seen.get(name).and_then(|s| s.first_up) {
                        None => never += 1,
                        Some(t1) if t1 < *t0 => early += 1,
                        Some(t1) => latencies.push(t1 - *t0),
                    }
                }
            }
        }
        latencies.sort();
        publish_times.sort();
        let p99 = quantile_ms(&latencies, 0.99);
        let complete = never == 0 && early == 0 && failed.is_empty() && !latencies.is_empty();
        let met = complete && p99 < TARGET.as_secs_f64() * 1000.0;
        let limited_by = if met {
            Value::Null
        } else if !complete {
            json!(format!(
                "{never} samples never activated within {} s, {early} activated before their message, {} publishes failed{}",
                GIVE_UP_AFTER.as_secs(),
                failed.len(),
                failed
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ))
        } else if !kind.pushes() {
            json!(format!(
                "poll-only scaler: activation waits for the next pollingInterval tick (default {} s){}",
                POLLING_INTERVAL.as_secs(),
                if kind == Kind::RabbitmqManagement {
                    ", plus RabbitMQ's statistics refresh (5 s)"
                } else {
                    ""
                }
            ))
        } else {
            json!(
                "the cluster client's round period (1 s tick + the round itself) plus the scale loop's poll and the /scale write"
            )
        };
        let mut section = figures(&latencies);
        section["samples"] = json!(n);
        section["never_activated"] = json!(never);
        section["activated_before_publish"] = json!(early);
        section["publish_failures"] = json!(failed.len());
        section["publish_ms"] = json!({
            "p50": (quantile_ms(&publish_times, 0.5) * 10.0).round() / 10.0,
            "max": (quantile_ms(&publish_times, 1.0) * 10.0).round() / 10.0});
        section["route"] = json!(kind.route());
        section["trigger_example"] = shown_trigger(&sources[0].trigger);
        section["pushes_activity"] = json!(kind.pushes());
        section["target_met"] = json!(met);
        section["limited_by"] = limited_by;
        eprintln!(
            "[{}] p50 {:.0} ms, p99 {:.0} ms, {} of {n} activated",
            kind.name(),
            quantile_ms(&latencies, 0.5),
            p99,
            latencies.len()
        );

        // Quiet the phase down: its ScaledObjects go (the operator drops their loops and
        // clients), then their sources.
        for name in &names {
            let _ = so_api.delete(name, &DeleteParams::default()).await;
        }
        let _ = wait_for(
            "the phase's ScaledObjects gone",
            Duration::from_secs(60),
            || async {
                let list = so_api.list(&ListParams::default()).await.ok()?;
                (!list
                    .items
                    .iter()
                    .any(|so| wanted.contains(so.metadata.name.as_deref().unwrap_or(""))))
                .then_some(())
            },
        )
        .await;
        for s in &sources {
            s.publisher.cleanup().await;
        }
        Ok((section, complete.then_some(p99)))
    }
}

/// Runs this binary again with `EBB_BIN` pointing at the `ebb` next to it, when unset (the
/// harness' default path is the one of test binaries).
fn ensure_ebb_bin() -> anyhow::Result<Option<i32>> {
    if std::env::var_os("EBB_BIN").is_some() {
        return Ok(None);
    }
    let exe = std::env::current_exe()?;
    let ebb = exe.with_file_name("ebb");
    if !ebb.exists() {
        return Err(anyhow!(
            "{} not found: run `cargo build --release --bin ebb` first, or set EBB_BIN",
            ebb.display()
        ));
    }
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("EBB_BIN", ebb)
        .status()?;
    Ok(Some(status.code().unwrap_or(1)))
}

fn main() -> anyhow::Result<()> {
    if let Some(code) = ensure_ebb_bin()? {
        std::process::exit(code);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let samples = std::env::var("EBB_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30usize)
        .max(1);
    let kinds: Vec<Kind> = match std::env::var("EBB_BENCH_SCALERS") {
        Ok(list) if !list.trim().is_empty() => {
            let mut kinds = Vec::new();
            for name in list.split(',').map(str::trim) {
                let kind = KINDS.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
                    let known: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
                    anyhow!("unknown scaler {name:?} (known: {})", known.join(", "))
                })?;
                kinds.push(kind);
            }
            kinds
        }
        _ => KINDS.to_vec(),
    };
    let seed = std::env::var("EBB_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        });

    let env = TestEnv::load().await?;
    install_crds(&env.client).await?;
    let ns = env.namespace("bench-activation").await?;
    let operator = OperatorProcess::start(&env, &ns.name, "bench", &[]).await?;
    let seen: SeenMap = Arc::default();
    let watch = watch_deployments(&env.client, &ns.name, seen.clone());
    let mut bench = Bench {
        ns: ns.name.clone(),
        env,
        seen,
        samples,
        rng: Rng(seed),
    };

    let mut sections = BTreeMap::new();
    let mut line = Vec::new();
    let mut all_met = true;
    let mut misses = Vec::new();
    for kind in kinds {
        match bench.measure(kind).await {
            Ok((section, p99)) => {
                let met = section["target_met"].as_bool().unwrap_or(false);
                all_met &= met;
                if let Some(why) = section["limited_by"].as_str() {
                    misses.push(format!("{}: {why}", kind.name()));
                }
                line.push(match p99 {
                    Some(p99) => format!(
                        "{} {:.1} s {}",
                        kind.name(),
                        p99 / 1000.0,
                        if met { "✓" } else { "✗" }
                    ),
                    None => format!("{} incomplete ✗", kind.name()),
                });
                sections.insert(kind.name().to_string(), section);
            }
            Err(e) => {
                all_met = false;
                eprintln!("[{}] failed: {e:#}", kind.name());
                misses.push(format!("{}: not measured: {e}", kind.name()));
                line.push(format!("{} not measured ✗", kind.name()));
                sections.insert(
                    kind.name().to_string(),
                    json!({"error": e.to_string(), "target_met": false}),
                );
            }
        }
    }

    watch.abort();
    let _ = operator.terminate().await;
    ns.delete().await?;

    let summary = format!(
        "activation latency p99 ({samples} samples each, default pollingInterval 30 s; target < 1 s): {}",
        line.join(", ")
    );
    let result = json!({
        "parameters": {
            "samples_per_scaler": samples,
            "scaledobject_settings": "defaults: pollingInterval 30 s, cooldownPeriod 300 s, minReplicaCount 0 (only scaleTargetRef and the trigger set)",
            "one_object_per_sample": "each sample has its own Deployment, ScaledObject and queue/topic/stream/URL",
            "schedule": format!("each object's message at a uniformly random moment within its own 1/{samples} of {} s (stratified, strata shuffled)", POLLING_INTERVAL.as_secs()),
            "t0": "just before the publish request is sent (the publish round trip counts)",
            "t1": "first Deployment watch event with spec.replicas >= 1",
            "operator": "the release ebb binary, one process watching the bench namespace",
            "give_up_after_seconds": GIVE_UP_AFTER.as_secs(),
            "seed": seed,
        },
        "figures": sections,
        "target": {"p99_ms_below": TARGET.as_millis() as u64, "per": "scaler"},
        "target_met": all_met,
        "limited_by": if misses.is_empty() { Value::Null } else { json!(misses.join("; ")) },
    });
    write_result("activation-latency", result, &summary)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_puts_one_sample_in_each_stratum() {
        let mut rng = Rng(7);
        let offsets = schedule(30, Duration::from_secs(30), &mut rng);
        let mut strata: Vec<u64> = offsets.iter().map(|d| d.as_secs()).collect();
        strata.sort_unstable();
        assert_eq!(strata, (0..30).collect::<Vec<u64>>());
    }
}
