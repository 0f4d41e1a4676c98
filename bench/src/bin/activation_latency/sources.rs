//! The sources the activation benchmark publishes to, one per object: which scalers are measured
//! ([`Kind`]), how each object's source is created, and how one message is published to it.
//! For `external-push` the "source" is a test external scaler process per object
//! (`ebb-external-scaler`, which serves one value and one activity), and publishing is making it
//! active with a value of 1, which it pushes on ebb's open `StreamIsActive` stream at once.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream;
use ebb_tests::external_scaler::ExternalScalerProcess;
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, wait_for};
use kube::Client;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ConnectionProperties};
use serde_json::{Value, json};

/// The scalers measured, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Kafka,
    Rabbitmq,
    RabbitmqManagement,
    NatsJetStream,
    AwsSqsQueue,
    MetricsApi,
    Redis,
    ExternalPush,
}

pub(crate) const KINDS: &[Kind] = &[
    Kind::Kafka,
    Kind::Rabbitmq,
    Kind::RabbitmqManagement,
    Kind::NatsJetStream,
    Kind::AwsSqsQueue,
    Kind::MetricsApi,
    Kind::Redis,
    Kind::ExternalPush,
];

impl Kind {
    /// The name in results and `EBB_BENCH_SCALERS`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Rabbitmq => "rabbitmq",
            Kind::RabbitmqManagement => "rabbitmq-management",
            Kind::NatsJetStream => "nats-jetstream",
            Kind::AwsSqsQueue => "aws-sqs-queue",
            Kind::MetricsApi => "metrics-api",
            Kind::Redis => "redis",
            Kind::ExternalPush => "external-push",
        }
    }

    /// Prefix of the Kubernetes object names.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Rabbitmq => "rabbit",
            Kind::RabbitmqManagement => "rabbit-http",
            Kind::NatsJetStream => "nats",
            Kind::AwsSqsQueue => "sqs",
            Kind::MetricsApi => "mapi",
            Kind::Redis => "redis",
            Kind::ExternalPush => "ext-push",
        }
    }

    /// Whether ebb's scaler pushes activity changes (else the loop waits for its next poll).
    pub(crate) fn pushes(self) -> bool {
        matches!(self, Kind::Kafka | Kind::Redis | Kind::ExternalPush)
    }

    /// What a pushing scaler's activation waits for, for the result file when it misses the target.
    pub(crate) fn push_path(self) -> &'static str {
        match self {
            Kind::Redis => {
                "the watcher's round period (0.5 s + the round itself) plus the scale loop's poll and the /scale write"
            }
            Kind::ExternalPush => {
                "the server's push on the open stream plus the scale loop's poll (GetMetricSpec, GetMetrics) and the /scale write"
            }
            _ => {
                "the cluster client's round period (1 s tick + the round itself) plus the scale loop's poll and the /scale write"
            }
        }
    }

    /// How the trigger reads its source, for the result file.
    pub(crate) fn route(self) -> &'static str {
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
            Kind::Redis => {
                "list length (listLength 5), one list per object on one server: one shared connection, and a watcher round (every 0.5 s) reads every list in one pipeline and pushes activity changes"
            }
            Kind::ExternalPush => {
                "external scaler over gRPC (targetSize 5), one test server process (ebb-external-scaler) per object; the server pushes its activity on ebb's StreamIsActive stream, which makes the scale loop poll at once"
            }
        }
    }
}

/// Publishes one message to one object's source.
pub(crate) enum Publisher {
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
    Redis {
        address: String,
        key: String,
    },
    /// A test external scaler process (`None` once killed).
    ExternalPush {
        server: tokio::sync::Mutex<Option<ExternalScalerProcess>>,
    },
}

impl Publisher {
    /// Sends one message and waits until the source confirmed it.
    pub(crate) async fn publish(&self) -> anyhow::Result<()> {
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
            Publisher::Redis { address, key } => {
                let reply = redis_command(address, &["RPUSH", key, "job"]).await?;
                if !reply.starts_with(':') {
                    return Err(anyhow!("RPUSH {key}: {reply}"));
                }
            }
            Publisher::ExternalPush { server } => {
                let mut server = server.lock().await;
                let server = server
                    .as_mut()
                    .ok_or_else(|| anyhow!("external scaler stopped"))?;
                // The value first: the poll the push starts reads it.
                server.set_value(1.0).await?;
                server.set_active(true).await?;
            }
        }
        Ok(())
    }

    /// Waits until the source can tell ebb of a message at once, once its object is Ready: for
    /// `external-push`, until ebb has opened its `StreamIsActive` stream.
    pub(crate) async fn ready(&self) -> anyhow::Result<()> {
        let Publisher::ExternalPush { server } = self else {
            return Ok(());
        };
        wait_for(
            "ebb opened the StreamIsActive stream",
            Duration::from_secs(60),
            || async {
                let mut server = server.lock().await;
                let last = server.as_mut()?.last().await.ok()?;
                (last.streams > 0).then_some(())
            },
        )
        .await?;
        Ok(())
    }

    /// Removes the queue or stream (best effort).
    pub(crate) async fn cleanup(&self) {
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
            Publisher::Redis { address, key } => {
                let _ = redis_command(address, &["DEL", key]).await;
            }
            Publisher::ExternalPush { server } => {
                if let Some(server) = server.lock().await.take() {
                    server.kill().await;
                }
            }
            // Kafka topics stay (the harness has no DeleteTopics); sources stop with the process.
            Publisher::Kafka { .. } | Publisher::Metrics { .. } => {}
        }
    }
}

/// One object's trigger and the publisher of its source.
pub(crate) struct Source {
    pub(crate) trigger: Value,
    pub(crate) publisher: Publisher,
}

/// `host:port` of a URL like `http://guest:guest@127.0.0.1:15672`.
pub(crate) fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// `(status, body)` of a `GET` on RabbitMQ's management API at `http_url`
/// (`http://user:password@host:port`).
pub(crate) async fn management_get(http_url: &str, path: &str) -> Option<(u16, String)> {
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

pub(crate) async fn kafka_sources(env: &TestEnv, n: usize) -> anyhow::Result<Vec<Source>> {
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

pub(crate) async fn rabbit_sources(env: &TestEnv, n: usize, management: bool) -> anyhow::Result<Vec<Source>> {
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

pub(crate) async fn nats_sources(env: &TestEnv, n: usize) -> anyhow::Result<Vec<Source>> {
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
        ebb_tests::nats::stream_with_worker(&js, &name, &subject).await?;
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

pub(crate) async fn sqs_sources(
    env: &TestEnv,
    client_k8s: &Client,
    ns: &str,
    n: usize,
) -> anyhow::Result<Vec<Source>> {
    let endpoint = env.var("EBB_SQS_ENDPOINT")?.to_string();
    let region = env.var("EBB_AWS_REGION")?.to_string();
    let client = ebb_tests::sqs::client(&endpoint, &region);
    ebb_tests::sqs::create_credentials(client_k8s, ns).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let url = ebb_tests::sqs::create_queue(&client, &unique_name("ebb-bench")).await?;
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

pub(crate) async fn metrics_sources(n: usize) -> Vec<Source> {
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

/// One Redis command on a fresh connection to `address`: its first reply line (`:1`, `-ERR …`).
async fn redis_command(address: &str, args: &[&str]) -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let mut stream = tokio::io::BufStream::new(tokio::net::TcpStream::connect(address).await?);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut reply = String::new();
    stream.read_line(&mut reply).await?;
    Ok(reply.trim_end().to_string())
}

pub(crate) async fn redis_sources(env: &TestEnv, n: usize) -> anyhow::Result<Vec<Source>> {
    let address = env.var("EBB_REDIS_ADDRESS")?.to_string();
    let run = unique_name("ebb-bench-act");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{run}-{i}");
        // Leftovers of an interrupted run: none, the list is created by the first RPUSH.
        redis_command(&address, &["DEL", &key])
            .await
            .with_context(|| format!("connecting to Redis at {address}"))?;
        out.push(Source {
            trigger: json!({"type": "redis", "metadata": {
                "address": address, "listName": key, "listLength": "5"}}),
            publisher: Publisher::Redis {
                address: address.clone(),
                key,
            },
        });
    }
    Ok(out)
}

pub(crate) async fn external_push_sources(n: usize) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let server = ExternalScalerProcess::start().await.with_context(|| {
            format!(
                "starting {} (bench/run.sh builds it; or set EBB_EXTERNAL_SCALER_BIN)",
                ebb_tests::external_scaler::binary().display()
            )
        })?;
        // Inactive, value 0, until the publish.
        out.push(Source {
            trigger: json!({"type": "external-push", "metadata": {
                "scalerAddress": server.address, "targetSize": "5"}}),
            publisher: Publisher::ExternalPush {
                server: tokio::sync::Mutex::new(Some(server)),
            },
        });
    }
    Ok(out)
}
