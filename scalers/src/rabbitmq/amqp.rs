//! AMQP 0-9-1 connections (lapin): one pooled connection per identity (URL, vhost, credentials,
//! TLS settings) with a small cache of idle channels, the bounded dial, and the sorting of lapin
//! errors into [`ScalerError`] kinds.
//!
//! The connection is dialled by whichever needs it first: a sample, or the connection's activity
//! watcher (its first round, so that cold activation does not wait for a poll). A connection
//! that failed (broker restart, network error, missed heartbeats) is dropped and dialled again
//! by the next sample or watcher round (the watcher backs off after failures); a sample returns
//! its error, the watcher's failed dial flips nothing. The connection closes when the last
//! trigger that uses it is dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::protocol::AMQPErrorKind;
use lapin::tcp::RustlsConnector;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo, SASLMechanism};
use lapin::{AsyncTcpStream, Channel, Connection, ConnectionProperties};

use super::address::BrokerAddress;
use super::clients::{RabbitMqClients, lock};
use super::errors::scrub;
use super::tls::TlsSettings;
use super::watch::QueueWatcher;
use crate::ScalerError;
use crate::common::errors::error_chain;

/// How many idle channels one pooled AMQP connection keeps for reuse.
pub const MAX_IDLE_CHANNELS: usize = 4;

/// The `connection_name` shown in RabbitMQ's management UI for ebb's AMQP connections.
const CONNECTION_NAME: &str = "ebb-scaler";

/// Identity of a pooled AMQP connection: the full URI (credentials included) and the TLS
/// settings. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct AmqpKey {
    uri: String,
    tls: Option<TlsSettings>,
}

/// One pooled AMQP connection identity: the connection, once dialled, the lock that makes
/// concurrent samplers dial once, and the connection's activity watcher.
pub(super) struct AmqpSlot {
    current: Mutex<Option<Arc<PooledConnection>>>,
    dialing: tokio::sync::Mutex<()>,
    /// The triggers whose queues the connection's watcher reads.
    pub(super) watch: Arc<QueueWatcher>,
    /// What the watcher dials with (the URI holds the credentials; never printed).
    pub(super) dial: Mutex<Option<(AMQPUri, Option<Arc<rustls::ClientConfig>>)>>,
}

impl AmqpSlot {
    /// An empty slot (nothing dialled) whose watcher makes a round every `watch_tick` (zero:
    /// never).
    pub(super) fn new(watch_tick: Duration) -> Self {
        Self {
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            watch: QueueWatcher::new(watch_tick),
            dial: Mutex::new(None),
        }
    }

    /// The connection if it is open; a failed one is dropped (closed) here.
    pub(super) fn live(&self) -> Option<Arc<PooledConnection>> {
        let mut current = lock(&self.current);
        match current.as_ref() {
            Some(pooled) if pooled.connection.status().connected() => Some(pooled.clone()),
            Some(_) => {
                tracing::info!("AMQP connection lost: dialling again at its next use");
                let dead = current.take();
                drop(current);
                drop(dead);
                None
            }
            None => None,
        }
    }

    /// Drops `pooled` if it is still the slot's connection (so the next sample dials again).
    pub(super) fn discard(&self, pooled: &Arc<PooledConnection>) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, pooled)) {
            tracing::info!("AMQP connection failed: dropped, dialling again at its next use");
            let dead = current.take();
            drop(current);
            drop(dead);
        }
    }
}

/// A dialled connection and its idle channels.
pub(super) struct PooledConnection {
    connection: Connection,
    idle_channels: Mutex<Vec<Channel>>,
}

impl PooledConnection {
    /// An open idle channel, or a new one.
    pub(super) async fn channel(&self) -> lapin::Result<Channel> {
        loop {
            let idle = lock(&self.idle_channels).pop();
            match idle {
                Some(channel) if channel.status().connected() => return Ok(channel),
                Some(_closed) => continue,
                None => return self.connection.create_channel().await,
            }
        }
    }

    /// Keeps an open channel for reuse (up to [`MAX_IDLE_CHANNELS`]); others are closed on drop.
    pub(super) fn give_back(&self, channel: Channel) {
        if channel.status().connected() {
            let mut idle = lock(&self.idle_channels);
            if idle.len() < MAX_IDLE_CHANNELS {
                idle.push(channel);
            }
        }
    }
}

/// What a scaler needs to dial its AMQP connection.
pub(super) struct AmqpTarget {
    /// The URI to dial (holds the credentials; never printed).
    pub(super) uri: AMQPUri,
    /// TLS configuration for amqps.
    pub(super) tls: Option<(Arc<rustls::ClientConfig>, TlsSettings)>,
    /// Secrets to scrub from broker and library messages.
    secrets: Vec<String>,
    /// The pooled connection this target shares.
    pub(super) slot: Arc<AmqpSlot>,
}

impl AmqpTarget {
    /// The target for `address` with these TLS settings: the URI to dial (SASL EXTERNAL when a
    /// client certificate is given without a username) and the pooled connection slot shared by
    /// every trigger with the same identity.
    pub(super) fn new(
        clients: &RabbitMqClients,
        address: &BrokerAddress,
        tls: &TlsSettings,
    ) -> Result<Self, ScalerError> {
        let external = tls.client_auth.is_some() && address.username.is_none();
        let userinfo = match (&address.username, &address.password) {
            (None, None) => AMQPUserInfo::default(),
            (user, password) => AMQPUserInfo {
                username: user.clone().unwrap_or_default(),
                password: password.clone().unwrap_or_default(),
            },
        };
        let uri = AMQPUri {
            scheme: if address.is_tls() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo,
                host: address.host.clone(),
                port: address.port,
            },
            vhost: address.vhost.clone(),
            query: AMQPQueryString {
                auth_mechanism: external.then_some(SASLMechanism::External),
                ..AMQPQueryString::default()
            },
        };
        let tls_config = if address.is_tls() {
            Some((clients.tls_config(tls)?, tls.clone()))
        } else {
            None
        };
        let key = AmqpKey {
            uri: format!(
                "{}|{}|{}|{}|{}|{}|{external}",
                uri.scheme,
                uri.authority.userinfo.username,
                uri.authority.userinfo.password,
                uri.authority.host,
                uri.authority.port,
                uri.vhost
            ),
            tls: tls_config.as_ref().map(|(_, s)| s.clone()),
        };
        let secrets = address
            .password
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect();
        Ok(Self {
            uri,
            tls: tls_config,
            secrets,
            slot: clients.amqp_slot(key),
        })
    }
}

/// Why one AMQP step failed, sorted for the [`ScalerError`] kinds.
pub(super) fn amqp_error(target: &AmqpTarget, shown: &str, step: &str, e: &lapin::Error) -> ScalerError {
    let mut message = scrub(&format!("{step}: {}", error_chain(e)), &target.secrets);
    match e.kind() {
        // 403 ACCESS_REFUSED: wrong credentials, or no permission on the vhost or queue.
        lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 403 => {
            ScalerError::unauthorized(shown, message)
        }
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::RuntimeShutdownError(_) => {
            if let Some((_, settings)) = &target.tls
                && let Some(problem) = settings.roots_problem()
            {
                message.push_str(&format!(" ({problem})"));
            }
            ScalerError::unreachable(shown, message)
        }
        _ => ScalerError::bad_response(shown, message),
    }
}

/// Whether an error means the connection itself is gone (not just the channel).
pub(super) fn connection_failed(e: &lapin::Error, pooled: &PooledConnection) -> bool {
    if !pooled.connection.status().connected() {
        return true;
    }
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => matches!(amqp.kind(), AMQPErrorKind::Hard(_)),
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::RuntimeShutdownError(_)
        | lapin::ErrorKind::ParsingError(_)
        | lapin::ErrorKind::SerialisationError(_) => true,
        _ => false,
    }
}

/// Dials a new connection. The TCP connect and TLS handshake run on lapin's IO thread; each is
/// bounded by `timeout` so that an unreachable broker does not leave a thread behind.
async fn dial(
    uri: &AMQPUri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    let host = uri.authority.host.clone();
    let port = uri.authority.port;
    let tls = tls.map(|config| RustlsConnector::from(config.clone()));
    let properties = ConnectionProperties::default().with_connection_name(CONNECTION_NAME.into());
    let connect = async move |_uri: AMQPUri, runtime| {
        let timed_out = |what: &str| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} timed out after {timeout:?}"),
            )
        };
        let addresses: Vec<SocketAddr> =
            tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| timed_out("resolving the host"))??
                .collect();
        let stream = tokio::time::timeout(timeout, AsyncTcpStream::connect(&runtime, addresses))
            .await
            .map_err(|_| timed_out("connecting"))??;
        match &tls {
            Some(connector) => Ok(
                tokio::time::timeout(timeout, stream.into_rustls(connector, &host))
                    .await
                    .map_err(|_| timed_out("the TLS handshake"))??,
            ),
            None => Ok(stream),
        }
    };
    Connection::connector(uri.clone(), runtime, connect, properties).await
}

/// The slot's open connection, dialled first if there is none (one dial at a time per slot).
pub(super) async fn slot_connection(
    slot: &AmqpSlot,
    uri: &AMQPUri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> lapin::Result<Arc<PooledConnection>> {
    if let Some(pooled) = slot.live() {
        return Ok(pooled);
    }
    let _dialing = slot.dialing.lock().await;
    // Another sampler may have dialled while this one waited.
    if let Some(pooled) = slot.live() {
        return Ok(pooled);
    }
    // Host, port and vhost only: the URI's userinfo is the credential.
    let (host, port, vhost) = (&uri.authority.host, uri.authority.port, &uri.vhost);
    let connection = match dial(uri, tls, timeout).await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::debug!(%host, port, %vhost, error = %e, "AMQP dial failed");
            return Err(e);
        }
    };
    tracing::info!(%host, port, %vhost, tls = tls.is_some(), "AMQP connection opened");
    let pooled = Arc::new(PooledConnection {
        connection,
        idle_channels: Mutex::new(Vec::new()),
    });
    *lock(&slot.current) = Some(pooled.clone());
    Ok(pooled)
}

/// Whether the broker answered 404 NOT_FOUND (no such queue or vhost).
pub(super) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn amqp_errors_are_scrubbed_and_sorted() {
        let target = AmqpTarget {
            uri: AMQPUri::default(),
            tls: None,
            secrets: vec!["hunter2".into()],
            slot: Arc::new(AmqpSlot::new(crate::rabbitmq::WATCH_TICK)),
        };
        let shown = "amqp://<redacted>@h:5672/%2F";
        let io: lapin::Error = io::Error::other("refused for guest:hunter2").into();
        let e = amqp_error(&target, shown, "cannot connect", &io);
        assert_eq!(e.kind(), "unreachable");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("hunter2") && text.contains("<redacted>"), "{text}");

        let refused: lapin::Error = lapin::ErrorKind::ProtocolError(
            lapin::protocol::AMQPError::from_id(403, "ACCESS_REFUSED - Login was refused".into()).unwrap(),
        )
        .into();
        assert_eq!(amqp_error(&target, shown, "x", &refused).kind(), "unauthorized");
        let missing: lapin::Error = lapin::ErrorKind::ProtocolError(
            lapin::protocol::AMQPError::from_id(404, "NOT_FOUND - no queue 'q'".into()).unwrap(),
        )
        .into();
        assert!(is_not_found(&missing));
        assert_eq!(amqp_error(&target, shown, "x", &missing).kind(), "bad_response");
        assert_eq!(
            scrub("a hunter2 b hunter2", &["hunter2".into(), String::new()]),
            "a <redacted> b <redacted>"
        );
    }
}
