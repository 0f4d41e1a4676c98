//! The JetStream API path (`natsServerURL`): one pooled async-nats connection per server URL +
//! credentials, and a consumer's lag read with `$JS.API.CONSUMER.INFO.<stream>.<consumer>`.
//!
//! The server routes the request to the consumer's leader, and the answer is about this one
//! consumer rather than the whole account. async-nats reconnects a pooled connection by itself; a
//! failed first connect leaves the pool entry empty, so the next poll tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::config::{NatsAuth, NatsServer};
use super::jsz::ConsumerLag;
use super::{error_chain, lock};
use crate::ScalerError;

impl NatsServer {
    /// The pool key: the URL and a digest of the credentials (never the credentials).
    pub(super) fn key(&self) -> NatsKey {
        let credentials = match &self.auth {
            NatsAuth::None => None,
            NatsAuth::UserPassword(user, password) => Some(digest(&["user-password", user, password])),
            NatsAuth::Token(token) => Some(digest(&["token", token])),
        };
        (self.url.clone(), credentials)
    }
}

/// Pool key of a NATS connection: the URL without credentials and a SHA-256 digest of them.
type NatsKey = (String, Option<[u8; 32]>);

/// SHA-256 over length-prefixed parts.
fn digest(parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// One NATS connection per server URL + credentials, made on first use; `timeout` bounds a
/// connect and each JetStream request.
pub(super) struct NatsConnections {
    timeout: Duration,
    pool: Mutex<HashMap<NatsKey, Arc<OnceCell<async_nats::Client>>>>,
}

impl NatsConnections {
    /// An empty pool (needs no async runtime).
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// How many connections (server URL + credentials) are pooled.
    pub(super) fn len(&self) -> usize {
        lock(&self.pool).len()
    }

    async fn client(&self, server: &NatsServer) -> Result<async_nats::Client, ScalerError> {
        let cell = lock(&self.pool).entry(server.key()).or_default().clone();
        // A failed connect leaves the cell empty: the next poll tries again.
        cell.get_or_try_init(|| connect(server, self.timeout))
            .await
            .cloned()
    }

    /// The lag of `stream`/`consumer` from the JetStream API of `server`.
    pub(super) async fn consumer_lag(
        &self,
        server: &NatsServer,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerLag, ScalerError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let timeout = self.timeout;
        let client = self.client(server).await?;
        let mut context = async_nats::jetstream::new(client);
        context.set_timeout(timeout);
        let handle = context
            .get_stream_no_info(stream)
            .await
            .map_err(|e| ScalerError::InvalidConfig(format!("nats-jetstream: stream {stream:?}: {e}")))?;
        let asked = handle.consumer_info(consumer);
        let info = match tokio::time::timeout(timeout.saturating_mul(2), asked).await {
            Err(_) => return Err(ScalerError::timeout(&server.url, timeout.saturating_mul(2))),
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                let what = format!("consumer {consumer:?} of stream {stream:?}");
                return Err(match e.kind() {
                    Kind::NotFound => {
                        ScalerError::bad_response(&server.url, format!("{what}: consumer not found"))
                    }
                    Kind::StreamNotFound => {
                        ScalerError::bad_response(&server.url, format!("{what}: stream not found"))
                    }
                    Kind::TimedOut => ScalerError::timeout(&server.url, timeout),
                    Kind::InvalidName => ScalerError::InvalidConfig(format!("nats-jetstream: {what}: {e}")),
                    Kind::NoResponders => ScalerError::bad_response(
                        &server.url,
                        format!("{what}: no responders (is JetStream enabled for this account?)"),
                    ),
                    Kind::Request => {
                        ScalerError::unreachable(&server.url, format!("{what}: {}", error_chain(&e)))
                    }
                    _ => ScalerError::bad_response(&server.url, format!("{what}: {}", error_chain(&e))),
                });
            }
        };
        Ok(ConsumerLag {
            num_pending: info.num_pending,
            num_ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
        })
    }
}

async fn connect(server: &NatsServer, timeout: Duration) -> Result<async_nats::Client, ScalerError> {
    use async_nats::ConnectErrorKind as Kind;
    let mut options = async_nats::ConnectOptions::new()
        .name(concat!("ebb/", env!("CARGO_PKG_VERSION")))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout));
    options = match &server.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword(user, password) => options.user_and_password(user.clone(), password.clone()),
        NatsAuth::Token(token) => options.token(token.clone()),
    };
    let connecting = options.connect(server.url.as_str());
    // The outer bound also covers DNS and the TLS handshake.
    let result = tokio::time::timeout(timeout.saturating_mul(2), connecting)
        .await
        .map_err(|_| ScalerError::timeout(&server.url, timeout.saturating_mul(2)))?;
    result.map_err(|e| {
        let message = format!("cannot connect: {}", error_chain(&e));
        match e.kind() {
            Kind::AuthorizationViolation | Kind::Authentication => {
                ScalerError::unauthorized(&server.url, message)
            }
            Kind::TimedOut => ScalerError::timeout(&server.url, timeout),
            Kind::ServerParse => ScalerError::InvalidConfig(format!("nats-jetstream: {message}")),
            _ => ScalerError::unreachable(&server.url, message),
        }
    })
}
