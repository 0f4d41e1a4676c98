//! `ebb-kafka-consumer`: a small, real Kafka consumer for the test cluster's pods.
//!
//! It joins a consumer group (librdkafka through `rdkafka`), and for each message sleeps
//! `PROCESS_DELAY_MS` (the time "spent" on it, so lag drains at a visible rate), then commits that
//! message synchronously (its offset + 1). It logs one line per message on stdout
//! (`consumed topic/partition@offset`), and a line on start, on each rebalance and on exit. On
//! SIGTERM or SIGINT it stops taking messages, finishes and commits the current one, leaves the
//! group and exits 0.
//!
//! Environment:
//! - `KAFKA_BOOTSTRAP_SERVERS` (required): `host:port[,host:port...]`
//! - `KAFKA_TOPIC` (required): the topic to consume
//! - `KAFKA_GROUP` (required): the consumer group
//! - `PROCESS_DELAY_MS` (default 100): milliseconds spent per message
//! - `KAFKA_CLIENT_ID` (default: `HOSTNAME`, i.e. the pod name)
//!
//! Exit codes: 0 after a signal, 1 when Kafka fails, 2 when the environment is missing or invalid.

use std::process::ExitCode;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::signal::unix::{SignalKind, signal};

/// Why the consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// A required variable is unset or empty.
    #[error("{0} is not set (required)")]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// librdkafka refused the configuration or failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[from] std::io::Error),
}

/// The configuration, from the environment.
struct Config {
    bootstrap: String,
    topic: String,
    group: String,
    delay: Duration,
    client_id: String,
}

impl Config {
    fn from_env() -> Result<Config, Error> {
        let bootstrap = required("KAFKA_BOOTSTRAP_SERVERS")?;
        let topic = required("KAFKA_TOPIC")?;
        let group = required("KAFKA_GROUP")?;
        let delay_ms = match optional("PROCESS_DELAY_MS")? {
            None => 100,
            Some(value) => value.trim().parse::<u64>().map_err(|_| Error::Invalid {
                name: "PROCESS_DELAY_MS",
                value,
                reason: "expected a whole number of milliseconds",
            })?,
        };
        let client_id = match optional("KAFKA_CLIENT_ID")? {
            Some(id) => id,
            None => optional("HOSTNAME")?.unwrap_or_else(|| "ebb-kafka-consumer".into()),
        };
        Ok(Config {
            bootstrap,
            topic,
            group,
            delay: Duration::from_millis(delay_ms),
            client_id,
        })
    }
}

/// The value of `name`; `None` when unset or empty.
fn optional(name: &'static str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(Error::Invalid {
            name,
            value: value.to_string_lossy().into_owned(),
            reason: "not valid UTF-8",
        }),
    }
}

/// The value of `name`; an error naming it when unset or empty.
fn required(name: &'static str) -> Result<String, Error> {
    optional(name)?.ok_or(Error::Missing(name))
}

/// Logs librdkafka's warnings and errors on stderr, and the group's rebalances on stdout.
struct Context {
    group: String,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        eprintln!("librdkafka {level:?} {facility}: {message}");
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        eprintln!("librdkafka error: {error}: {reason}");
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => println!("joined group {}: assigned {}", self.group, partitions(list)),
            Rebalance::Revoke(list) => println!("group {}: revoked {}", self.group, partitions(list)),
            Rebalance::Error(e) => eprintln!("group {}: rebalance failed: {e}", self.group),
        }
    }
}

/// `topic/0, topic/1` (or `nothing`).
fn partitions(list: &TopicPartitionList) -> String {
    let names: Vec<String> = list
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

/// Consumes until SIGTERM or SIGINT; returns the signal's name.
async fn run(config: &Config) -> Result<&'static str, Error> {
    // Installed first, so a signal that arrives while joining is not lost.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let consumer: StreamConsumer<Context> = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", &config.group)
        .set("client.id", &config.client_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(Context {
            group: config.group.clone(),
        })?;
    consumer.subscribe(&[&config.topic])?;
    println!(
        "starting: joining group {} as {} on {}, topic {}, {} ms per message",
        config.group,
        config.client_id,
        config.bootstrap,
        config.topic,
        config.delay.as_millis()
    );
    let name = loop {
        // `biased`: a signal that came while processing wins over the next message.
        let received = tokio::select! {
            biased;
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(e) => {
                eprintln!("consume error: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::time::sleep(config.delay).await;
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        // A commit refused during a rebalance is not fatal: the message is consumed again by
        // whoever owns the partition next.
        if let Err(e) = consumer.commit_message(&message, CommitMode::Sync) {
            eprintln!("commit of {topic}/{partition}@{offset} failed: {e}");
        }
        println!("consumed {topic}/{partition}@{offset}");
    };
    println!("{name}: leaving group {}", config.group);
    // Dropping the consumer closes it: revokes its partitions and leaves the group.
    drop(consumer);
    Ok(name)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ebb-kafka-consumer: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&config).await {
        Ok(name) => {
            println!("exiting after {name}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ebb-kafka-consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
