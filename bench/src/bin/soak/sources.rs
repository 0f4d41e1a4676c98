//! What the soak puts on each broker and how it reads it back: per broker an idle source (its
//! object stays at 0) and a steady backlog of [`BACKLOG`] messages against a target of
//! [`TARGET`] per replica (its object stays at [`N`] through the HPA). Every source survives a
//! restart of its broker (a Kafka topic with committed offsets in Tansu's SQLite, durable
//! RabbitMQ queues with persistent messages, NATS streams on JetStream's file store) except SQS:
//! moto keeps its queues in memory, so after each moto start the soak creates both queues again
//! (same names, hence the same URLs) and puts the backlog back, standing in for a real SQS that
//! keeps its state.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream;
use ebb_tests::TestEnv;
use ebb_tests::kafka::{KafkaAdmin, unique_name};
use kube::Client;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ConnectionProperties};
use serde_json::{Value, json};

use crate::brokers::Broker;

/// Replicas of the objects with a backlog.
pub(crate) const N: i32 = 3;
/// Messages in each backlog (SQS puts it back in one SendMessageBatch, at most 10).
pub(crate) const BACKLOG: u64 = 9;
/// The per-replica target of every trigger: `BACKLOG / TARGET = N`.
pub(crate) const TARGET: u64 = 3;
/// Partitions of the Kafka backlog's topic (the Kafka scaler caps replicas at the partitions).
const KAFKA_PARTITIONS: i32 = 3;
/// How long one read of a backlog may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The sources on every broker.
pub(crate) struct Sources {
    kafka_bootstrap: String,
    /// `(topic, group)` idle and with the backlog.
    kafka: [(String, String); 2],
    amqp_url: String,
    rabbit: [String; 2],
    nats_url: String,
    nats_monitoring: String,
    nats: [String; 2],
    sqs: aws_sdk_sqs::Client,
    sqs_endpoint: String,
    region: String,
    /// `(name, url)` idle and with the backlog.
    sqs_queues: [(String, String); 2],
    /// Whether the backlog was sent in the current attempt at [`Sources::recreate_sqs`].
    sqs_filled: bool,
}

/// Index of the idle source and of the backlog in the pairs above.
const IDLE: usize = 0;
const LOADED: usize = 1;

impl Sources {
    /// Creates every source (the backlogs filled) and the SQS credentials' Secret and
    /// TriggerAuthentication in `ns`.
    pub(crate) async fn create(env: &TestEnv, client: &Client, ns: &str) -> anyhow::Result<Self> {
        let run = unique_name("ebb-soak");
        let kafka_bootstrap = env.var("EBB_KAFKA_BOOTSTRAP")?.to_string();
        let kafka = [
            (format!("{run}-idle"), format!("{run}-idle-g")),
            (format!("{run}-backlog"), format!("{run}-backlog-g")),
        ];
        let mut admin = KafkaAdmin::connect(&kafka_bootstrap).await?;
        admin.create_topic(&kafka[IDLE].0, 1).await?;
        admin.commit(&kafka[IDLE].1, &kafka[IDLE].0, &[(0, 0)]).await?;
        admin.create_topic(&kafka[LOADED].0, KAFKA_PARTITIONS).await?;
        let zero: Vec<(i32, i64)> = (0..KAFKA_PARTITIONS).map(|p| (p, 0)).collect();
        admin.commit(&kafka[LOADED].1, &kafka[LOADED].0, &zero).await?;
        admin
            .produce(&kafka[LOADED].0, KAFKA_PARTITIONS, BACKLOG as usize)
            .await?;

        let amqp_url = env.var("EBB_RABBITMQ_AMQP_URL")?.to_string();
        let rabbit = [format!("{run}-idle"), format!("{run}-backlog")];
        let conn = lapin::Connection::connect(&amqp_url, ConnectionProperties::default())
            .await
            .context("connect to RabbitMQ")?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for q in &rabbit {
            channel
                .queue_declare(q.as_str().into(), durable, FieldTable::default())
                .await?;
        }
        for _ in 0..BACKLOG {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    rabbit[LOADED].as_str().into(),
                    BasicPublishOptions::default(),
                    b"job",
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            anyhow::ensure!(confirm.is_ack(), "publish to {} not confirmed", rabbit[LOADED]);
        }
        let _ = conn.close(200, "done".into()).await;

        let nats_url = env.var("EBB_NATS_URL")?.to_string();
        let nats_monitoring = env.var("EBB_NATS_MONITORING")?.to_string();
        let stem = run.replace('-', "_").to_uppercase();
        let nats = [format!("{stem}_IDLE"), format!("{stem}_BACKLOG")];
        let js = jetstream::new(async_nats::connect(&nats_url).await?);
        for name in &nats {
            // Not the harness' stream_with_worker: its 10-minute max_age empties the backlog
            // at the end of a 10-minute soak (seen in the first full run). `cleanup` deletes
            // these streams.
            let stream = js
                .create_stream(jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}.>", name.to_lowercase())],
                    max_age: Duration::from_secs(3600),
                    ..Default::default()
                })
                .await?;
            stream
                .create_consumer(jetstream::consumer::pull::Config {
                    durable_name: Some(ebb_tests::nats::CONSUMER.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await?;
        }
        let subject = format!("{}.job", nats[LOADED].to_lowercase());
        for _ in 0..BACKLOG {
            js.publish(subject.clone(), "job".into()).await?.await?;
        }

        let sqs_endpoint = env.var("EBB_SQS_ENDPOINT")?.to_string();
        let region = env.var("EBB_AWS_REGION")?.to_string();
        let sqs = ebb_tests::sqs::client(&sqs_endpoint, &region);
        let names = [format!("{run}-idle"), format!("{run}-backlog")];
        let mut sources = Sources {
            kafka_bootstrap,
            kafka,
            amqp_url,
            rabbit,
            nats_url,
            nats_monitoring,
            nats,
            sqs,
            sqs_endpoint,
            region,
            sqs_queues: names.map(|n| (n, String::new())),
            sqs_filled: false,
        };
        sources.recreate_sqs().await?;
        ebb_tests::sqs::create_credentials(client, ns).await?;
        Ok(sources)
    }

    /// Creates both SQS queues (again) and puts the backlog in the loaded one in one request
    /// right after creating it: moto forgets everything at a restart, and the moments the queue
    /// is empty or missing are an outage the soak adds. A queue that still has messages (a
    /// retry after a failure) is not filled again; CreateQueue with an existing name answers its
    /// URL.
    pub(crate) async fn recreate_sqs(&mut self) -> anyhow::Result<()> {
        let (name, _) = &self.sqs_queues[LOADED];
        let url = ebb_tests::sqs::create_queue(&self.sqs, name).await?;
        self.sqs_queues[LOADED].1 = url.clone();
        if !self.sqs_filled || self.backlog(Broker::Sqs, true).await? == 0 {
            let entries = (0..BACKLOG)
                .map(|i| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body("job")
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.sqs
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
            self.sqs_filled = true;
        }
        let (name, _) = &self.sqs_queues[IDLE];
        self.sqs_queues[IDLE].1 = ebb_tests::sqs::create_queue(&self.sqs, name).await?;
        // The next moto start forgets it all again.
        self.sqs_filled = false;
        Ok(())
    }

    /// The trigger of `broker`'s idle source (`loaded: false`) or of its backlog.
    pub(crate) fn trigger(&self, broker: Broker, loaded: bool) -> Value {
        let i = usize::from(loaded);
        let target = TARGET.to_string();
        match broker {
            Broker::Kafka => json!({"type": "kafka", "metadata": {
                "bootstrapServers": self.kafka_bootstrap, "topic": self.kafka[i].0,
                "consumerGroup": self.kafka[i].1, "lagThreshold": target}}),
            Broker::Rabbitmq => json!({"type": "rabbitmq", "metadata": {
                "host": self.amqp_url, "queueName": self.rabbit[i], "mode": "QueueLength", "value": target}}),
            Broker::Nats => json!({"type": "nats-jetstream", "metadata": {
                "natsServerMonitoringEndpoint": self.nats_monitoring, "account": "$G",
                "stream": self.nats[i], "consumer": ebb_tests::nats::CONSUMER, "lagThreshold": target}}),
            Broker::Sqs => json!({"type": "aws-sqs-queue",
                "metadata": {"queueURL": self.sqs_queues[i].1, "awsRegion": self.region,
                             "awsEndpoint": self.sqs_endpoint, "queueLength": target},
                "authenticationRef": {"name": "sqs-credentials"}}),
        }
    }

    /// The messages waiting in `broker`'s backlog (`loaded`) or idle source, read now on a
    /// connection of its own: Kafka's lag, RabbitMQ's queue length (a passive declare),
    /// JetStream's pending count for the consumer, SQS's visible + in-flight messages.
    pub(crate) async fn backlog(&self, broker: Broker, loaded: bool) -> anyhow::Result<u64> {
        let read = self.read_backlog(broker, usize::from(loaded));
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| anyhow!("no answer within {READ_TIMEOUT:?}"))?
    }

    async fn read_backlog(&self, broker: Broker, i: usize) -> anyhow::Result<u64> {
        Ok(match broker {
            Broker::Kafka => {
                let (topic, group) = &self.kafka[i];
                let partitions = if i == LOADED { KAFKA_PARTITIONS } else { 1 };
                let mut admin = KafkaAdmin::connect(&self.kafka_bootstrap).await?;
                let lag = admin.lag(group, topic, partitions).await?;
                lag.iter().map(|l| *l as u64).sum()
            }
            Broker::Rabbitmq => {
                let conn =
                    lapin::Connection::connect(&self.amqp_url, ConnectionProperties::default()).await?;
                let channel = conn.create_channel().await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    durable: true,
                    ..Default::default()
                };
                let q = channel
                    .queue_declare(self.rabbit[i].as_str().into(), passive, FieldTable::default())
                    .await;
                let _ = conn.close(200, "done".into()).await;
                u64::from(q?.message_count())
            }
            Broker::Nats => {
                let client = async_nats::connect(&self.nats_url).await?;
                let js = jetstream::new(client);
                let stream = js.get_stream(&self.nats[i]).await?;
                let info = stream.consumer_info(ebb_tests::nats::CONSUMER).await?;
                info.num_pending + info.num_ack_pending as u64
            }
            Broker::Sqs => {
                use aws_sdk_sqs::types::QueueAttributeName as A;
                let out = self
                    .sqs
                    .get_queue_attributes()
                    .queue_url(&self.sqs_queues[i].1)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await
                    .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
                let attrs = out.attributes();
                let n = |a: A| -> u64 {
                    attrs
                        .and_then(|m| m.get(&a))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
            }
        })
    }

    /// Removes the queues and streams (best effort; Kafka topics stay, the harness cannot
    /// delete them).
    pub(crate) async fn cleanup(&self) {
        if let Ok(conn) = lapin::Connection::connect(&self.amqp_url, ConnectionProperties::default()).await {
            if let Ok(channel) = conn.create_channel().await {
                for q in &self.rabbit {
                    let _ = channel
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "done".into()).await;
        }
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let js = jetstream::new(client);
            for s in &self.nats {
                let _ = js.delete_stream(s).await;
            }
        }
        for (_, url) in &self.sqs_queues {
            let _ = self.sqs.delete_queue().queue_url(url).send().await;
        }
    }
}
