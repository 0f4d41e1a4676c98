//! The JetStream API path (`natsServerURL`): one pooled async-nats connection per server URL +
//! credentials, and a consumer's lag read with `$JS.API.CONSUMER.INFO.<stream>.<consumer>`.
//!
//! The server routes the request to the consumer's leader, and the answer is about this one
//! consumer rather than the whole account. async-nats reconnects a pooled connection by itself; a
//! failed first connect leaves the pool entry empty, so the next poll tries again.
//!
//! Each trigger holds its connection's slot ([`NatsConnections::slot`]); the pool keeps only a
//! weak reference ([`WeakPool`]), so the connection closes with the last trigger using it: an
//! object deleted, or rebuilt after a credential rotation (a new key), leaves no connection behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::config::{NatsAuth, NatsServer};
use super::error_chain;
use super::jsz::ConsumerLag;
use crate::ScalerError;
use crate::common::pool::WeakPool;

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

/// A connection shared by the triggers of one server URL + credentials, made on first use.
pub(super) type ConnectionSlot = OnceCell<async_nats::Client>;

/// One NATS connection per server URL + credentials while a trigger uses it, made on first use;
/// `timeout` bounds a connect and each JetStream request.
pub(super) struct NatsConnections {
    timeout: Duration,
    pool: WeakPool<NatsKey, ConnectionSlot>,
}

impl NatsConnections {
    /// An empty pool (needs no async runtime).
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pool: WeakPool::new(),
        }
    }

    /// How many connections (server URL + credentials) are in use by a trigger.
    pub(super) fn len(&self) -> usize {
        self.pool.len()
    }

    /// The slot of `server`'s connection, for a trigger to hold while it lives.
    pub(super) fn slot(&self, server: &NatsServer) -> Arc<ConnectionSlot> {
        self.pool.get_or_insert_with(server.key(), OnceCell::new)
    }

    async fn client(
        &self,
        slot: &ConnectionSlot,
        server: &NatsServer,
    ) -> Result<async_nats::Client, ScalerError> {
        // A failed connect leaves the cell empty: the next poll tries again.
        slot.get_or_try_init(|| connect(server, self.timeout))
            .await
            .cloned()
    }

    /// The lag of `stream`/`consumer` from the JetStream API of `server`, over `slot`'s
    /// connection.
    pub(super) async fn consumer_lag(
        &self,
        slot: &ConnectionSlot,
        server: &NatsServer,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerLag, ScalerError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let timeout = self.timeout;
        let client = self.client(slot, server).await?;
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
    // async-nats reconnects by itself: its events say when (the URL carries no credentials).
    let url = server.url.clone();
    options = options.event_callback(move |event| {
        let url = url.clone();
        async move { tracing::info!(server = %url, %event, "NATS connection event") }
    });
    let connecting = options.connect(server.url.as_str());
    // The outer bound also covers DNS and the TLS handshake.
    let result = tokio::time::timeout(timeout.saturating_mul(2), connecting)
        .await
        .map_err(|_| ScalerError::timeout(&server.url, timeout.saturating_mul(2)))?;
    if result.is_ok() {
        tracing::info!(server = %server.url, "NATS connection opened");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server(password: &str) -> NatsServer {
        NatsServer {
            url: "nats://127.0.0.1:4222".into(),
            auth: NatsAuth::UserPassword("ebb".into(), password.into()),
        }
    }

    #[test]
    fn a_rotated_credentials_old_connection_goes_away() {
        let pool = NatsConnections::new(Duration::from_secs(1));
        let old = pool.slot(&server("before"));
        let shared = pool.slot(&server("before"));
        assert!(Arc::ptr_eq(&old, &shared), "one connection per URL + credentials");
        let watch_old = Arc::downgrade(&old);
        // The trigger is rebuilt with the rotated password, then the old scaler is dropped.
        let new = pool.slot(&server("after"));
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(pool.len(), 2);
        drop((old, shared));
        assert!(watch_old.upgrade().is_none(), "the old connection is dropped");
        assert_eq!(pool.len(), 1);
        let _again = pool.slot(&server("after"));
        assert_eq!(pool.pool.remembered(), 1, "the old key is forgotten");
        drop((new, _again));
        assert_eq!(pool.len(), 0, "no trigger, no connection");
    }
}
