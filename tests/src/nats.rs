//! NATS JetStream on the test environment: a stream with one durable pull consumer, the shape
//! every NATS test and benchmark scales on.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// The durable consumer's name on every test stream.
pub const CONSUMER: &str = "worker";

/// Why the stream or its consumer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The stream could not be created.
    #[error("create stream {stream}")]
    CreateStream {
        /// The stream's name.
        stream: String,
        /// The server's or client's error.
        source: jetstream::context::CreateStreamError,
    },
    /// The durable consumer could not be created.
    #[error("create consumer worker on {stream}")]
    CreateConsumer {
        /// The stream's name.
        stream: String,
        /// The server's or client's error.
        source: jetstream::stream::ConsumerError,
    },
}

/// Creates stream `name` on subjects `<subject>.>` (messages older than ten minutes age out, so a
/// failed run's leftovers go away) with the durable pull consumer [`CONSUMER`] (explicit acks).
pub async fn stream_with_worker(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
) -> Result<consumer::PullConsumer, NatsError> {
    let stream = js
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{subject}.>")],
            max_age: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map_err(|source| NatsError::CreateStream {
            stream: name.to_string(),
            source,
        })?;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .map_err(|source| NatsError::CreateConsumer {
            stream: name.to_string(),
            source,
        })
}
